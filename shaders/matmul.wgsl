// y[g, t, n] = epilogue(sum_k x[g, t, k] * W[g*N + n, k])   for g < G, n < N, t < count
// W is [G*N, K] row-major (torch Linear layout). One workgroup: 4 output rows x 8 tokens,
// 64 lanes per row striding over K, so each weight is read once per 8 tokens.
// Epilogue: + bias[g*N+n] (BIAS), activation (ACT), * mul[y index] (MUL), y = or y += (ADD).
#include "common.wgsl"
#include "weights.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#if BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif
#if MUL
@group(0) @binding(5) var<storage, read> mul: array<f32>;
#endif

const K4: u32 = {{K4}}u;
const N: u32 = {{N}}u;
const G: u32 = {{G}}u;
const X_BASE: u32 = {{X_BASE}}u;  // all x offsets in vec4s
const X_GROUP: u32 = {{X_GROUP}}u;
const X_ROW: u32 = {{X_ROW}}u;
const Y_BASE: u32 = {{Y_BASE}}u;  // all y offsets in f32s
const Y_GROUP: u32 = {{Y_GROUP}}u;
const Y_ROW: u32 = {{Y_ROW}}u;
const TT: u32 = 8u;
const LANES: u32 = 64u;
const ROWS: u32 = 4u;

var<workgroup> partial: array<f32, 2048>;  // [256 threads][TT]

fn activate(v: f32) -> f32 {
#if ACT_SIGMOID
    return sigmoid(v);
#endif
#if ACT_TANH
    return tanh(v);
#endif
#if ACT_RELU_SQ
    let r = max(v, 0.0);
    return r * r;
#endif
#if ACT_SILU
    return v * sigmoid(v);
#endif
    return v;
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let lane = li % LANES;
    let sub = li / LANES;
    let o = wg.x * ROWS + sub;
    let t0 = wg.y * TT;
    let n_t = min(TT, dims.{{COUNT}} - min(t0, dims.{{COUNT}}));
    let g = o / N;
    let n = o % N;

    var acc: array<f32, 8>;
    if (o < G * N) {
        let xb = X_BASE + g * X_GROUP + t0 * X_ROW;
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
        var v = partial[sub * LANES * TT + lane];
#if BIAS
        v += bias[o];
#endif
        v = activate(v);
        let yi = Y_BASE + g * Y_GROUP + (t0 + lane) * Y_ROW + n;
#if MUL
        v *= mul[yi];
#endif
#if ADD
        y[yi] += v;
#else
        y[yi] = v;
#endif
    }
}
