// Sum over the N lanes of one head's workgroup (N = workgroup size).
var<workgroup> red: array<f32, {{N}}>;

fn head_sum(v: f32, li: u32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var s = {{N}}u / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}
