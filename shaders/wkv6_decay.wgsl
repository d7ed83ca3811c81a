// RWKV-5/6's decay of channel c at token t, w = exp(-exp(decay)): v6 (DECAY_LORA) adds the decay LoRA's
// second stage, hidden[t] . decay_w2[c] (the hidden layer is what the projection dispatch wrote after
// r, k, v, gate in rkv); v5's is the same for every token. The includer binds rkv, decay and (v6)
// decay_w2 and includes wkv6_common.wgsl (wkv6_pre.wgsl includes it for hidden4).
fn decay_w(t: u32, c: u32) -> f32 {
    var wd = decay[c];
#if DECAY_LORA
    let hb = LORA_BASE + t * LW;
#if LORA4
    // D a multiple of 4: the row as vec4 into two sums (wkv7_inputs.wgsl's lora_dot says why)
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var q = 0u;
    for (; q + 1u < D / 4u; q += 2u) {
        acc0 += decay_w2[c * (D / 4u) + q] * hidden4(hb + 4u * q);
        acc1 += decay_w2[c * (D / 4u) + q + 1u] * hidden4(hb + 4u * q + 4u);
    }
    if (q < D / 4u) {
        acc0 += decay_w2[c * (D / 4u) + q] * hidden4(hb + 4u * q);
    }
    let acc = acc0 + acc1;
    wd += acc.x + acc.y + acc.z + acc.w;
#else
    for (var q = 0u; q < D; q++) {
        wd += rkv[hb + q] * decay_w2[c * D + q];
    }
#endif
#endif
    return exp(-exp(wd));
}

#if DECAY_LORA
// hidden[j .. j + 4) as one vector (every lane reads the same)
fn hidden4(j: u32) -> vec4<f32> {
    return vec4<f32>(rkv[j], rkv[j + 1u], rkv[j + 2u], rkv[j + 3u]);
}
#endif
