// Sum over the N lanes of one head's workgroup (N = workgroup size). With SG (the adapter's subgroup
// width, when it is fixed and divides N): subgroupAdd, then the N / SG partials through workgroup
// memory, two barriers; else a tree in workgroup memory, 2 + log2(N) barriers. Subgroups are taken
// to be runs of consecutive invocation indices, as matmul_vec.wgsl does (and the oracle tests check).
var<workgroup> red: array<f32, {{N}}>;

fn head_sum(v: f32, li: u32) -> f32 {
#if SG
    let part = subgroupAdd(v);
    if (li % {{SG}}u == 0u) {
        red[li / {{SG}}u] = part;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var q = 0u; q < {{N}}u / {{SG}}u; q++) {
        total += red[q];
    }
    workgroupBarrier();
    return total;
#else
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
#endif
}
