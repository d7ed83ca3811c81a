// RWKV-7 time mixing for long steps, part 1 of 3 (wkv7_pre, wkv7_scan, wkv7_post; wkv7.wgsl does all
// three per token for short steps): each token's inputs to the recurrence (wkv7_inputs.wgsl), for every
// token at once. One workgroup per (head h, token t); invocation i owns channel c = h N + i.
// Writes the decay into rkv's fourth group, k and v in place, and kk, kk * a and g to `ext`.
#include "common.wgsl"

@group(0) @binding(2) var<storage, read_write> rkv: array<f32>;  // [4, T_MAX, C]: r, k, v, (w); then hidden
@group(0) @binding(3) var<storage, read> lora2: array<f32>;  // [C, L2]: per channel w2, a2, (v2,) g2 columns
@group(0) @binding(6) var<storage, read_write> v_first: array<f32>;  // [T_MAX, C] layer 0's v
@group(0) @binding(7) var<storage, read> params: array<f32>;  // [6, C]: k_k, k_a, r_k, w0, a0, v0
@group(0) @binding(9) var<storage, read_write> ext: array<f32>;  // [3, T_MAX, C]: kk, kk * a, g

#include "head_reduce.wgsl"
#include "wkv7_common.wgsl"
#include "wkv7_inputs.wgsl"

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let c = wg.x * N + i;
    let t = wg.y;
    let tc = t * C + c;
    let x = token_inputs(t, c, i);
#if MIX_V
    rkv[2u * TC + tc] = x.v;
#endif
    rkv[TC + tc] = x.k;
    rkv[3u * TC + tc] = x.w;
    ext[tc] = x.kk;
    ext[TC + tc] = x.b;
    ext[2u * TC + tc] = x.g;
}
