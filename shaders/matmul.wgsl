// y[t, o] = epilogue(sum_k in[t, k] * W[o, k])  for rows o < NROWS (all segments), t < count
// W is [NROWS, K] row-major (torch Linear layout); matmul_common.wgsl maps rows to segments
// (input group, output place, activation) and gives the LN input and the epilogue:
// + bias[o] (BIAS), activation, xx + delta * v (MIX_DELTA), * mul (MUL), y = or y += (ADD),
// the row's last token's x_prev into the state (STORE_PREV).
// This kernel: 4 output rows x 8 tokens per workgroup, 64 lanes per row striding over K eight weights
// at a time (one 16-byte load of fp16), so each weight is read once per 8 tokens; partial sums
// through workgroup memory (no subgroup size assumed: any GPU, and lavapipe for the tests).
#include "common.wgsl"
#include "weights8.wgsl"
#include "matmul_common.wgsl"

const LANES: u32 = 64u;
const ROWS: u32 = 4u;

var<workgroup> partial_a: array<vec4<f32>, 256>;  // per thread: tokens 0..3
var<workgroup> partial_b: array<vec4<f32>, 256>;  // tokens 4..7

fn input(xb: u32, j: u32, t: u32, g: u32, k: u32) -> vec4<f32> {
#if LN
    return ln_in(j, t, g, k);
#else
    return x[xb + (j - 1u) * X_ROW + k];
#endif
}

// 8 weights dotted with the input of token t (block index j) at vec4 columns k, k + 1
fn dot8(wv: W8, xb: u32, j: u32, t: u32, g: u32, k: u32) -> f32 {
    return dot(wv.lo, input(xb, j, t, g, k)) + dot(wv.hi, input(xb, j, t, g, k + 1u));
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let lane = li % LANES;
    let sub = li / LANES;
    let o = wg.x * ROWS + sub;
    let t0 = wg.y * TT;
    let count = dims.{{COUNT}};
    let n_t = min(TT, count - min(t0, count));
#if LN
    ln_prepare(li, t0, count);
    ln_write(li, t0, count, wg.x);
#endif

    var a = vec4<f32>(0.0);  // tokens 0..3 (vectors, not arrays: arrays spill on some drivers)
    var b = vec4<f32>(0.0);  // tokens 4..7
    if (o < NROWS) {
        let xb = x_base(o, t0);
        let g = SEG_X[seg_of(o)];
        let wrow = o * (K4 / 2u);
        for (var k8 = lane; k8 < K4 / 2u; k8 += LANES) {
            let wv = w8(wrow + k8);
            let k = 2u * k8;
            a.x += dot8(wv, xb, 1u, t0, g, k);
            if (n_t > 1u) {
                a.y += dot8(wv, xb, 2u, t0 + 1u, g, k);
                if (n_t > 2u) {
                    a.z += dot8(wv, xb, 3u, t0 + 2u, g, k);
                    a.w += dot8(wv, xb, 4u, t0 + 3u, g, k);
                    if (n_t > 4u) {
                        b.x += dot8(wv, xb, 5u, t0 + 4u, g, k);
                        b.y += dot8(wv, xb, 6u, t0 + 5u, g, k);
                        b.z += dot8(wv, xb, 7u, t0 + 6u, g, k);
                        b.w += dot8(wv, xb, 8u, t0 + 7u, g, k);
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
    if (o < NROWS && lane < n_t) {
        let row0 = sub * LANES;
        finish(o, t0 + lane, select(partial_b[row0][lane % 4u], partial_a[row0][lane % 4u], lane < 4u));
    }
}
