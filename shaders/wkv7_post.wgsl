// RWKV-7 time mixing for long steps, part 3 of 3: the output (wkv7_output.wgsl: group norm, bonus,
// gate) for every token at once. One workgroup per (head h, token t); invocation i owns channel
// c = h N + i; y (from wkv7_scan) is replaced in place by the time mix's output.
#include "common.wgsl"

@group(0) @binding(2) var<storage, read> rkv: array<f32>;  // [4, T_MAX, C]: r, k, v, w (wkv7_pre)
@group(0) @binding(7) var<storage, read> params: array<f32>;  // [6, C]: k_k, k_a, r_k, w0, a0, v0
@group(0) @binding(8) var<storage, read> ln_x: array<f32>;    // [2, C]: weight, bias
@group(0) @binding(9) var<storage, read> ext: array<f32>;     // [3, T_MAX, C]: kk, kk * a, g
@group(0) @binding(11) var<storage, read_write> out: array<f32>;  // [T_MAX, C]: y in, output out

#include "head_reduce.wgsl"
#include "wkv7_common.wgsl"
#include "wkv_group_norm.wgsl"
#include "wkv7_output.wgsl"

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let c = wg.x * N + i;
    let tc = wg.y * C + c;
    out[tc] = time_mix_output(out[tc], rkv[tc], rkv[TC + tc], rkv[2u * TC + tc], ext[2u * TC + tc], c, i);
}
