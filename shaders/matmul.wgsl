// y[g, t, n] = epilogue(sum_k x[g, t, k] * W[g*N + n, k])   for g < G, n < N, t < count
// W is [G*N, K] row-major (torch Linear layout). One workgroup: 4 output rows x 8 tokens,
// 64 lanes per row striding over K, so each weight is read once per 8 tokens.
// Epilogue: + bias[g*N+n] (BIAS), activation (ACT), * mul[y index] (MUL), y = or y += (ADD).
#include "common.wgsl"
#include "weights.wgsl"
#include "matmul_common.wgsl"


const LANES: u32 = 64u;
const ROWS: u32 = 4u;

var<workgroup> partial_a: array<vec4<f32>, 256>;  // per thread: tokens 0..3
var<workgroup> partial_b: array<vec4<f32>, 256>;  // tokens 4..7

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let lane = li % LANES;
    let sub = li / LANES;
    let o = wg.x * ROWS + sub;
    let t0 = wg.y * TT;
    let n_t = min(TT, dims.{{COUNT}} - min(t0, dims.{{COUNT}}));

    var a = vec4<f32>(0.0);  // tokens 0..3 (vectors, not arrays: arrays spill on some drivers)
    var b = vec4<f32>(0.0);  // tokens 4..7
    if (o < G * N) {
        let xb = X_BASE + (o / N) * X_GROUP + t0 * X_ROW;
        let wrow = o * K4;
        for (var k = lane; k < K4; k += LANES) {
            let wv = w4(wrow + k);
            let xi = xb + k;
            a.x += dot(wv, x[xi]);
            if (n_t > 1u) {
                a.y += dot(wv, x[xi + X_ROW]);
                if (n_t > 2u) {
                    a.z += dot(wv, x[xi + 2u * X_ROW]);
                    a.w += dot(wv, x[xi + 3u * X_ROW]);
                    if (n_t > 4u) {
                        b.x += dot(wv, x[xi + 4u * X_ROW]);
                        b.y += dot(wv, x[xi + 5u * X_ROW]);
                        b.z += dot(wv, x[xi + 6u * X_ROW]);
                        b.w += dot(wv, x[xi + 7u * X_ROW]);
                    }
                }
            }
        }
    }
    partial_a[li] = a;
    partial_b[li] = b;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            partial_a[li] += partial_a[li + s];
            partial_b[li] += partial_b[li + s];
        }
        workgroupBarrier();
    }
    // lane t writes token t0 + t
    if (o < G * N && lane < n_t) {
        let row0 = sub * LANES;
        finish(o, t0 + lane, select(partial_b[row0][lane % 4u], partial_a[row0][lane % 4u], lane < 4u));
    }
}
