// RWKV-7's per-token inputs to the recurrence for channel c (lane i of its head), none of which depends
// on the state: the second stages of the w, a, v-mix and g LoRAs (dot products with the token's hidden
// layer, which the projection dispatch wrote after r, k, v in rkv), the decay w, kk normalised over the
// head, k's in-context replacement and the mix of v with layer 0's. wkv7.wgsl computes them token by
// token, wkv7_pre.wgsl for all tokens at once. The includer binds rkv, lora2, v_first and params and
// includes head_reduce.wgsl and wkv7_common.wgsl.

// hidden[j .. j + 4) as one vector (the hidden layer is read by every lane alike)
fn hidden4(j: u32) -> vec4<f32> {
    return vec4<f32>(rkv[j], rkv[j + 1u], rkv[j + 2u], rkv[j + 3u]);
}

// hidden[o .. o + n) . lora2[c, o .. o + n)
fn lora_dot(hb: u32, c: u32, o: u32, n: u32) -> f32 {
#if LORA4
    // With every LoRA width a multiple of 4 (LORA4), a lane's row comes as vec4: a quarter of the loads,
    // into two sums, so that no load waits on an add; one float at a time into one sum (the #else) is a
    // chain of n adds, each behind its load, where a decode step has only heads x rows workgroups.
    let l4 = (c * L2 + o) / 4u;
    let n4 = n / 4u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var q = 0u;
    for (; q + 1u < n4; q += 2u) {
        acc0 += lora2[l4 + q] * hidden4(hb + o + 4u * q);
        acc1 += lora2[l4 + q + 1u] * hidden4(hb + o + 4u * q + 4u);
    }
    if (q < n4) {
        acc0 += lora2[l4 + q] * hidden4(hb + o + 4u * q);
    }
    let acc = acc0 + acc1;
    return acc.x + acc.y + acc.z + acc.w;
#else
    let lb = c * L2;
    var acc = 0.0;
    for (var j = o; j < o + n; j++) {
        acc += rkv[hb + j] * lora2[lb + j];
    }
    return acc;
#endif
}

// the four LoRA second stages of one token and channel, before their biases
struct LoraDots {
    w: f32,
    a: f32,
    v: f32,  // layer 0: unused
    g: f32,
}

fn lora_dots(t: u32, c: u32) -> LoraDots {
    let hb = LORA_BASE + t * LW;
    var v = 0.0;
#if MIX_V
    v = lora_dot(hb, c, {{OV}}u, {{DV}}u);
#endif
    return LoraDots(lora_dot(hb, c, 0u, {{DW}}u), lora_dot(hb, c, {{OA}}u, {{DA}}u), v, lora_dot(hb, c, {{OG}}u, {{DG}}u));
}

struct TokenInputs {
    w: f32,   // decay
    k: f32,   // key after the in-context replacement
    kk: f32,  // removal key k * k_k, normalised over the head
    b: f32,   // kk * a, what the removal writes back
    v: f32,   // value, mixed with layer 0's (layer 0: as projected, and kept in v_first)
    g: f32,   // output gate
}

// Token t's inputs for channel c, lane i (every lane of the head calls it: head sums inside).
fn token_inputs(t: u32, c: u32, i: u32) -> TokenInputs {
    return inputs_from(t, c, i, lora_dots(t, c));
}

// The same from the LoRA dots already taken (wkv7_pre takes them for several tokens at once).
fn inputs_from(t: u32, c: u32, i: u32, d: LoraDots) -> TokenInputs {
    let tc = t * C + c;
    let k_raw = rkv[TC + tc];
    var v = rkv[2u * TC + tc];
    let w_in = params[3u * C + c] + d.w;
    let a = sigmoid(params[4u * C + c] + d.a);
    let kk_raw = k_raw * params[c];
    let kk = kk_raw / max(sqrt(head_sum(kk_raw * kk_raw, i)), 1e-12);
    let k = k_raw * (1.0 + (a - 1.0) * params[C + c]);
#if MIX_V
    let v_gate = sigmoid(params[5u * C + c] + d.v);
    v = v + (v_first[tc] - v) * v_gate;
#else
    v_first[tc] = v;
#endif
    let w = exp(-0.606531 * sigmoid(w_in));  // 0.606531 = exp(-0.5)
    return TokenInputs(w, k, kk, kk * a, v, d.g);
}
