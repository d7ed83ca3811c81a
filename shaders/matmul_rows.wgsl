// Same contract as matmul.wgsl, shaped for CPU drivers (lavapipe): one invocation per output
// row and 8 tokens, looping over K alone: no workgroup memory and no barriers (but LN's sums).
#include "common.wgsl"
#include "weights.wgsl"
#include "matmul_common.wgsl"

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32, @builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(workgroup_id) wg: vec3<u32>) {
    let o = gid.x;
    let t0 = gid.y * TT;
    let count = dims.{{COUNT}};
#if LN
    ln_prepare(li, t0, count);
    ln_write(li, t0, count, wg.x);
#endif
    if (o >= NROWS || t0 >= count) {
        return;
    }
    let n_t = min(TT, count - t0);
    let wrow = o * K4;
    var acc: array<f32, 8>;
#if LN
    let g = SEG_X[seg_of(o)];
    for (var k = 0u; k < K4; k++) {
        let wv = w4(wrow + k);
        for (var t = 0u; t < n_t; t++) {
            acc[t] += dot(wv, ln_in(t + 1u, t0 + t, g, k));
        }
    }
#else
    let xb = x_base(o, t0);
    for (var k = 0u; k < K4; k++) {
        let wv = w4(wrow + k);
        for (var t = 0u; t < n_t; t++) {
            acc[t] += dot(wv, x[xb + t * X_ROW + k]);
        }
    }
#endif
    for (var t = 0u; t < n_t; t++) {
        finish(o, t0 + t, acc[t]);
    }
}
