// RWKV-6 data-dependent token shift: out[p, t] = xx + delta * (maa[p] + m[perm(p), t])
// out order (r, k, v, g, w); the LoRA output m comes in the reference's order (w, k, v, r, g).
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> xx: array<vec4<f32>>;     // [T_MAX, C]
@group(0) @binding(2) var<storage, read> delta: array<vec4<f32>>;  // [T_MAX, C]
@group(0) @binding(3) var<storage, read> maa: array<vec4<f32>>;    // [5, C] in out order
@group(0) @binding(4) var<storage, read> m: array<vec4<f32>>;      // [5, T_MAX, C]
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;  // [5, T_MAX, C]

const C4: u32 = {{C4}}u;
const TC4: u32 = {{T_MAX}}u * {{C4}}u;
const PERM = array<u32, 5>(3u, 1u, 2u, 4u, 0u);

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if (i >= C4 || t >= dims.T) {
        return;
    }
    let ti = t * C4 + i;
    for (var p = 0u; p < 5u; p++) {
        out[p * TC4 + ti] = xx[ti] + delta[ti] * (maa[p * C4 + i] + m[PERM[p] * TC4 + ti]);
    }
}
