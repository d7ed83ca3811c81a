// Workgroup-wide layer-norm statistics of one C-vector of `x` (bound by the includer).
const WG: u32 = 128u;
const C4: u32 = {{C4}}u;
const EPS: f32 = 1e-5;

var<workgroup> red: array<f32, 128>;

fn workgroup_sum(v: f32, li: u32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

// (mean, 1/sqrt(var + eps)) of x[base4 .. base4 + C4) with two passes for accuracy
fn ln_stats(base4: u32, li: u32) -> vec2<f32> {
    var s = 0.0;
    for (var i = li; i < C4; i += WG) {
        let v = x[base4 + i];
        s += v.x + v.y + v.z + v.w;
    }
    let mean = workgroup_sum(s, li) / f32(C4 * 4u);
    var q = 0.0;
    for (var i = li; i < C4; i += WG) {
        let d = x[base4 + i] - vec4<f32>(mean);
        q += dot(d, d);
    }
    let variance = workgroup_sum(q, li) / f32(C4 * 4u);
    return vec2<f32>(mean, inverseSqrt(variance + EPS));
}
