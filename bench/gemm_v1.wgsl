// Same contract as matmul.wgsl, for many tokens (prefill, batched decode): a 64-row x 64-token
// tile per workgroup, K in steps of 16 through workgroup memory, 4 x 4 outputs per invocation,
// so each weight is read once per 64 tokens. Tiles never straddle segments; no LN input.
#include "common.wgsl"
#include "weights.wgsl"
#include "matmul_common.wgsl"

const BM: u32 = 64u;  // output rows per tile
const BT: u32 = 64u;  // tokens per tile
const BK: u32 = 16u;

var<workgroup> w_tile: array<vec4<f32>, 256>;  // [BM][BK/4]
var<workgroup> x_tile: array<vec4<f32>, 256>;  // [BT][BK/4]

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let o0 = wg.x * BM;
    let t0 = wg.y * BT;
    let count = dims.{{COUNT}};
    let xb = x_base(min(o0, NROWS - 1u), 0u);
    // loader roles: row/token (li / 4) and vec4 column (li % 4) of the 64 x 16 tiles
    let lr = li / 4u;
    let lc = li % 4u;
    let w_row = min(o0 + lr, NROWS - 1u);
    let x_tok = min(t0 + lr, max(count, 1u) - 1u);
    // compute roles: 4 rows (ty + 16 i) x 4 tokens (tx + 16 j)
    let tx = li % 16u;
    let ty = li / 16u;
    // acc_i[j]: row ty + 16 i, token tx + 16 j (vectors, not arrays: arrays spill on some drivers)
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < K4; k0 += BK / 4u) {
        w_tile[li] = w4(w_row * K4 + k0 + lc);
        x_tile[li] = x[xb + x_tok * X_ROW + k0 + lc];
        workgroupBarrier();
        for (var kc = 0u; kc < BK / 4u; kc++) {
            let x0 = x_tile[tx * 4u + kc];
            let x1 = x_tile[(tx + 16u) * 4u + kc];
            let x2 = x_tile[(tx + 32u) * 4u + kc];
            let x3 = x_tile[(tx + 48u) * 4u + kc];
            let w0 = w_tile[ty * 4u + kc];
            let w1 = w_tile[(ty + 16u) * 4u + kc];
            let w2 = w_tile[(ty + 32u) * 4u + kc];
            let w3 = w_tile[(ty + 48u) * 4u + kc];
            acc0 += vec4<f32>(dot(w0, x0), dot(w0, x1), dot(w0, x2), dot(w0, x3));
            acc1 += vec4<f32>(dot(w1, x0), dot(w1, x1), dot(w1, x2), dot(w1, x3));
            acc2 += vec4<f32>(dot(w2, x0), dot(w2, x1), dot(w2, x2), dot(w2, x3));
            acc3 += vec4<f32>(dot(w3, x0), dot(w3, x1), dot(w3, x2), dot(w3, x3));
        }
        workgroupBarrier();
    }
    store4(o0 + ty, t0 + tx, count, acc0);
    store4(o0 + ty + 16u, t0 + tx, count, acc1);
    store4(o0 + ty + 32u, t0 + tx, count, acc2);
    store4(o0 + ty + 48u, t0 + tx, count, acc3);
}

// row o, tokens t, t + 16, t + 32, t + 48
fn store4(o: u32, t: u32, count: u32, acc: vec4<f32>) {
    if (o >= NROWS) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (t + 16u * j < count) {
            finish(o, t + 16u * j, acc[j]);
        }
    }
}
