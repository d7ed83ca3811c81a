// RWKV-5/6 time mixing for long steps, part 3 of 3: for every token at once, the bonus
// v_j sum_i r_i u_i k_i, then the output (wkv6_output.wgsl: group norm over the head, (GATE) the silu
// gate). One workgroup per (head h, token t); invocation j owns channel c = h N + j; y (from
// wkv6_scan) is replaced in place by the time mix's output.

@group(0) @binding(2) var<storage, read> rkv: array<f32>;   // [4, T_MAX, C]: r, k, v, gate
@group(0) @binding(4) var<storage, read> u: array<f32>;     // [C] bonus
@group(0) @binding(5) var<storage, read> ln_x: array<f32>;  // [2, C]: weight, bias
@group(0) @binding(7) var<storage, read_write> out: array<f32>;  // [T_MAX, C]: y in, output out

#include "head_reduce.wgsl"
#include "wkv6_common.wgsl"
#include "wkv_group_norm.wgsl"
#include "wkv6_output.wgsl"

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let c = wg.x * N + j;
    let tc = wg.y * C + c;
    let y = out[tc] + head_sum(rkv[tc] * u[c] * rkv[TC + tc], j) * rkv[2u * TC + tc];
    out[tc] = time_mix_output(y, tc, c, j);
}
