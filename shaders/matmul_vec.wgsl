// Same contract as matmul.wgsl (but LN input), for few tokens (decode): one 32-lane subgroup per output row,
// lanes striding over K eight weights (16 bytes of fp16) at a time, reduced with subgroupAdd:
// no workgroup memory and no barriers. Needs subgroups of exactly 32 invocations.
#include "common.wgsl"

#if W_F16
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;  // 8 halves per element
#else
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
#endif
#include "matmul_common.wgsl"

const LANES: u32 = 32u;
const ROWS: u32 = 8u;  // rows per workgroup of 256
const K8: u32 = K4 / 2u;

// 8 weights of row `wi` (as two vec4) dotted with the 8 inputs starting at x[xi]
fn dot8(lo: vec4<f32>, hi: vec4<f32>, xi: u32) -> f32 {
    return dot(lo, x[xi]) + dot(hi, x[xi + 1u]);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let lane = li % LANES;
    let o = wg.x * ROWS + li / LANES;
    let t0 = wg.y * TT;
    let n_t = min(TT, dims.{{COUNT}} - min(t0, dims.{{COUNT}}));
    let valid = o < NROWS;
    let oo = select(0u, o, valid);
    let xb = x_base(oo, t0);
    let wrow = oo * K8;
    var a = vec4<f32>(0.0);  // tokens 0..3
    var b = vec4<f32>(0.0);  // tokens 4..7
    for (var k = lane; k < K8; k += LANES) {
#if W_F16
        let p = w[wrow + k];
        let lo = vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y));
        let hi = vec4<f32>(unpack2x16float(p.z), unpack2x16float(p.w));
#else
        let lo = w[2u * (wrow + k)];
        let hi = w[2u * (wrow + k) + 1u];
#endif
        let xi = xb + 2u * k;
        a.x += dot8(lo, hi, xi);
        if (n_t > 1u) {
            a.y += dot8(lo, hi, xi + X_ROW);
            if (n_t > 2u) {
                a.z += dot8(lo, hi, xi + 2u * X_ROW);
                a.w += dot8(lo, hi, xi + 3u * X_ROW);
                if (n_t > 4u) {
                    b.x += dot8(lo, hi, xi + 4u * X_ROW);
                    b.y += dot8(lo, hi, xi + 5u * X_ROW);
                    b.z += dot8(lo, hi, xi + 6u * X_ROW);
                    b.w += dot8(lo, hi, xi + 7u * X_ROW);
                }
            }
        }
    }
    // tokens past n_t read rows of x beyond this step (stale but finite); their sums are discarded
    let sa = vec4<f32>(subgroupAdd(a.x), subgroupAdd(a.y), subgroupAdd(a.z), subgroupAdd(a.w));
    let sb = vec4<f32>(subgroupAdd(b.x), subgroupAdd(b.y), subgroupAdd(b.z), subgroupAdd(b.w));
    if (valid && lane < n_t) {
        finish(o, t0 + lane, select(sb[lane % 4u], sa[lane % 4u], lane < 4u));
    }
}
