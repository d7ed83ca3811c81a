// RWKV-7 time mixing for long steps, part 1 of 3 (wkv7_pre, wkv7_scan, wkv7_post; wkv7.wgsl does all
// three per token for short steps): what does not depend on the state, for every token at once.
// One workgroup per (head h, token t); invocation i owns channel c = h N + i: the second stages of
// the w, a, v-mix and g LoRAs (a dot product with the token's hidden layer, which the projection
// dispatch wrote after r, k, v), kk and its norm over the head, k's in-context replacement, the v mix.
// Writes the decay into rkv's fourth group, k and v in place, and kk, kk * a and g to `ext`.
#include "common.wgsl"

@group(0) @binding(2) var<storage, read_write> rkv: array<f32>;  // [4, T_MAX, C]: r, k, v, (w); then hidden
@group(0) @binding(3) var<storage, read> lora2: array<f32>;  // [C, L2]: per channel w2, a2, (v2,) g2 columns
@group(0) @binding(6) var<storage, read_write> v_first: array<f32>;  // [T_MAX, C] layer 0's v
@group(0) @binding(7) var<storage, read> params: array<f32>;  // [6, C]: k_k, k_a, r_k, w0, a0, v0
@group(0) @binding(9) var<storage, read_write> ext: array<f32>;  // [3, T_MAX, C]: kk, kk * a, g

#include "head_reduce.wgsl"

const N: u32 = 64u;
const C: u32 = {{C}}u;
const TC: u32 = {{T_MAX}}u * {{C}}u;
const LORA_BASE: u32 = {{LORA_BASE}}u;
const LW: u32 = {{LW}}u;  // hidden floats per token in rkv
const L2: u32 = {{L2}}u;  // lora2 floats per channel

// hidden[o .. o + n) . lora2[c, o .. o + n)
fn lora_dot(hb: u32, c: u32, o: u32, n: u32) -> f32 {
    let lb = c * L2;
    var acc = 0.0;
    for (var j = o; j < o + n; j++) {
        acc += rkv[hb + j] * lora2[lb + j];
    }
    return acc;
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let c = wg.x * N + i;
    let t = wg.y;
    let tc = t * C + c;
    let hb = LORA_BASE + t * LW;
    let k_raw = rkv[TC + tc];
    var v = rkv[2u * TC + tc];
    let w_in = params[3u * C + c] + lora_dot(hb, c, 0u, {{DW}}u);
    let a = sigmoid(params[4u * C + c] + lora_dot(hb, c, {{OA}}u, {{DA}}u));
    let g = lora_dot(hb, c, {{OG}}u, {{DG}}u);
    let kk_raw = k_raw * params[c];
    let kk = kk_raw / max(sqrt(head_sum(kk_raw * kk_raw, i)), 1e-12);
#if MIX_V
    let v_gate = sigmoid(params[5u * C + c] + lora_dot(hb, c, {{OV}}u, {{DV}}u));
    v = v + (v_first[tc] - v) * v_gate;
    rkv[2u * TC + tc] = v;
#else
    v_first[tc] = v;
#endif
    rkv[TC + tc] = k_raw * (1.0 + (a - 1.0) * params[C + c]);
    rkv[3u * TC + tc] = exp(-0.606531 * sigmoid(w_in));  // 0.606531 = exp(-0.5)
    ext[tc] = kk;
    ext[TC + tc] = kk * a;
    ext[2u * TC + tc] = g;
}
