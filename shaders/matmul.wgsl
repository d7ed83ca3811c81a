// y[t, o] = epilogue(sum_k in[t, k] * W[o, k])  for rows o < NROWS (all segments), t < count
// W is [NROWS, K] row-major (torch Linear layout); matmul_common.wgsl maps rows to segments
// (input group, output place, activation) and gives the LN input and the epilogue:
// + bias[o] (BIAS), activation, xx + delta * v (MIX_DELTA), * mul (MUL), y = or y += (ADD),
// the row's last token's x_prev into the state (STORE_PREV).
// This kernel: 4 output rows x 8 tokens per workgroup of 64 lanes; each lane strides over K eight
// weights at a time for all 4 rows (one 16-byte load of fp16 per row), so each input element (the LN
// input included) is computed once for 4 rows and each weight read once per 8 tokens; partial sums
// through workgroup memory (no subgroup size assumed: any GPU, and lavapipe for the tests).
// The 4 rows of a workgroup lie in one segment (ops.py checks segment sizes are multiples of 4).
#include "common.wgsl"
#include "weights8.wgsl"
#include "matmul_common.wgsl"

const LANES: u32 = 64u;
const ROWS: u32 = 4u;

var<workgroup> partial: array<vec4<f32>, 512>;  // [lane][8]: rows 0..3 x tokens 0..3, then tokens 4..7

fn input(xb: u32, j: u32, t: u32, g: u32, k: u32) -> vec4<f32> {
#if LN
    return ln_in(j, t, g, k);
#else
    return x[xb + (j - 1u) * X_ROW + k];
#endif
}

// the four rows' eight weights at k8 dotted with one token's input (vec4 columns k, k + 1)
fn dot4x8(w0: W8, w1: W8, w2: W8, w3: W8, lo: vec4<f32>, hi: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(w0.lo, lo) + dot(w0.hi, hi), dot(w1.lo, lo) + dot(w1.hi, hi),
                     dot(w2.lo, lo) + dot(w2.hi, hi), dot(w3.lo, lo) + dot(w3.hi, hi));
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lane: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let o0 = wg.x * ROWS;
    let t0 = wg.y * TT;
    let count = dims.{{COUNT}};
    let n_t = min(TT, count - min(t0, count));
#if LN
    ln_prepare(lane, t0, count);
    ln_write(lane, t0, count, wg.x);
#endif
    // acc[j]: rows 0..3 of token j (vectors, not arrays: arrays spill on some drivers)
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    if (o0 < NROWS) {
        let xb = x_base(o0, t0);
        let g = SEG_X[seg_of(o0)];
        let k8n = K4 / 2u;
        let last = NROWS - 1u;  // rows past the end read the last row again; their sums are dropped
        let r0 = o0 * k8n;
        let r1 = min(o0 + 1u, last) * k8n;
        let r2 = min(o0 + 2u, last) * k8n;
        let r3 = min(o0 + 3u, last) * k8n;
        for (var k8 = lane; k8 < k8n; k8 += LANES) {
            let w0 = w8(r0 + k8);
            let w1 = w8(r1 + k8);
            let w2 = w8(r2 + k8);
            let w3 = w8(r3 + k8);
            let k = 2u * k8;
            a0 += dot4x8(w0, w1, w2, w3, input(xb, 1u, t0, g, k), input(xb, 1u, t0, g, k + 1u));
            if (n_t > 1u) {
                a1 += dot4x8(w0, w1, w2, w3, input(xb, 2u, t0 + 1u, g, k), input(xb, 2u, t0 + 1u, g, k + 1u));
                if (n_t > 2u) {
                    a2 += dot4x8(w0, w1, w2, w3, input(xb, 3u, t0 + 2u, g, k), input(xb, 3u, t0 + 2u, g, k + 1u));
                    if (n_t > 3u) {
                        a3 += dot4x8(w0, w1, w2, w3, input(xb, 4u, t0 + 3u, g, k), input(xb, 4u, t0 + 3u, g, k + 1u));
                        if (n_t > 4u) {
                            a4 += dot4x8(w0, w1, w2, w3, input(xb, 5u, t0 + 4u, g, k), input(xb, 5u, t0 + 4u, g, k + 1u));
                            a5 += dot4x8(w0, w1, w2, w3, input(xb, 6u, t0 + 5u, g, k), input(xb, 6u, t0 + 5u, g, k + 1u));
                            a6 += dot4x8(w0, w1, w2, w3, input(xb, 7u, t0 + 6u, g, k), input(xb, 7u, t0 + 6u, g, k + 1u));
                            a7 += dot4x8(w0, w1, w2, w3, input(xb, 8u, t0 + 7u, g, k), input(xb, 8u, t0 + 7u, g, k + 1u));
                        }
                    }
                }
            }
        }
    }
    let p = lane * 8u;
    partial[p] = a0;
    partial[p + 1u] = a1;
    partial[p + 2u] = a2;
    partial[p + 3u] = a3;
    partial[p + 4u] = a4;
    partial[p + 5u] = a5;
    partial[p + 6u] = a6;
    partial[p + 7u] = a7;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            let q = (lane + s) * 8u;
            for (var j = 0u; j < 8u; j++) {
                partial[p + j] += partial[q + j];
            }
        }
        workgroupBarrier();
    }
    // lane r * 8 + j writes row o0 + r, token t0 + j
    let r = lane / 8u;
    let j = lane % 8u;
    if (lane < 32u && o0 + r < NROWS && j < n_t) {
        finish(o0 + r, t0 + j, partial[j][r]);
    }
}
