// Same contract as matmul.wgsl, shaped for CPU drivers (lavapipe): one invocation per output
// row and 8 tokens, looping over K alone: no workgroup memory, no barriers.
#include "common.wgsl"
#include "weights.wgsl"
#include "matmul_common.wgsl"

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    let t0 = gid.y * TT;
    if (o >= G * N || t0 >= dims.{{COUNT}}) {
        return;
    }
    let n_t = min(TT, dims.{{COUNT}} - t0);
    let xb = X_BASE + (o / N) * X_GROUP + t0 * X_ROW;
    let wrow = o * K4;
    var acc: array<f32, 8>;
    for (var k = 0u; k < K4; k++) {
        let wv = w4(wrow + k);
        for (var t = 0u; t < n_t; t++) {
            acc[t] += dot(wv, x[xb + t * X_ROW + k]);
        }
    }
    for (var t = 0u; t < n_t; t++) {
        finish(o, t0 + t, acc[t]);
    }
}
