// RWKV-6 time mixing for long steps, part 1 of 3 (wkv6_pre, wkv6_scan, wkv6_post; wkv6.wgsl does all
// three per token for short steps): the decay (wkv6_decay.wgsl) for every token at once.
// One workgroup per (64 channels, token t); each lane reads its channel's decay_w2 row.

@group(0) @binding(2) var<storage, read> rkv: array<f32>;    // [4, T_MAX, C]: r, k, v, gate; [T_MAX, LW] hidden
@group(0) @binding(3) var<storage, read> decay: array<f32>;  // [C]
@group(0) @binding(8) var<storage, read> decay_w2: array<f32>;  // [C, D]
@group(0) @binding(9) var<storage, read_write> ext: array<f32>;  // [T_MAX, C] w

#include "wkv6_common.wgsl"
#include "wkv6_decay.wgsl"

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let c = wg.x * N + i;
    let t = wg.y;
    ext[t * C + c] = decay_w(t, c);
}
