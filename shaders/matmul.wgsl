// y[g, t, n] = epilogue(sum_k x[g, t, k] * W[g*N + n, k])   for g < G, n < N, t < count
// W is [G*N, K] row-major (torch Linear layout). One workgroup: 4 output rows x 8 tokens,
// 64 lanes per row striding over K, so each weight is read once per 8 tokens.
// Epilogue: + bias[g*N+n] (BIAS), activation (ACT), * mul[y index] (MUL), y = or y += (ADD).
#include "common.wgsl"
#include "weights.wgsl"
#include "matmul_common.wgsl"


const LANES: u32 = 64u;
const ROWS: u32 = 4u;

var<workgroup> partial: array<f32, 2048>;  // [256 threads][TT]

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let lane = li % LANES;
    let sub = li / LANES;
    let o = wg.x * ROWS + sub;
    let t0 = wg.y * TT;
    let n_t = min(TT, dims.{{COUNT}} - min(t0, dims.{{COUNT}}));

    var acc: array<f32, 8>;
    if (o < G * N) {
        let xb = X_BASE + (o / N) * X_GROUP + t0 * X_ROW;
        let wrow = o * K4;
        for (var k = lane; k < K4; k += LANES) {
            let wv = w4(wrow + k);
            for (var t = 0u; t < TT; t++) {
                if (t < n_t) {
                    acc[t] += dot(wv, x[xb + t * X_ROW + k]);
                }
            }
        }
    }
    for (var t = 0u; t < TT; t++) {
        partial[li * TT + t] = acc[t];
    }
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            for (var t = 0u; t < TT; t++) {
                partial[li * TT + t] += partial[(li + s) * TT + t];
            }
        }
        workgroupBarrier();
    }
    // lane t writes token t0 + t
    if (o < G * N && lane < n_t) {
        finish(o, t0 + lane, partial[sub * LANES * TT + lane]);
    }
}
