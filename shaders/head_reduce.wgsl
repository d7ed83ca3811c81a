// Sum over the N lanes of one head's workgroup (N = workgroup size). With SG (the adapter's subgroup
// width, when it is fixed and divides N): subgroupAdd, then the N / SG partials through workgroup
// memory, two barriers; else a tree in workgroup memory, 2 + log2(N) barriers. Subgroups are taken
// to be runs of consecutive invocation indices, as matmul_vec.wgsl does (and the oracle tests check).
// QUAD (the four-lane recurrences, wkv7_quad and wkv6_quad): 4 N invocations, a channel's four holding its
// value alike, so each channel is counted once (li % 4 = 0).
#if QUAD
const SUM_LANES: u32 = 4u * {{N}}u;
#else
const SUM_LANES: u32 = {{N}}u;
#endif
var<workgroup> red: array<f32, SUM_LANES>;

fn head_sum(v: f32, li: u32) -> f32 {
#if QUAD
    let x = select(0.0, v, li % 4u == 0u);
#else
    let x = v;
#endif
#if SG
    let part = subgroupAdd(x);
    if (li % {{SG}}u == 0u) {
        red[li / {{SG}}u] = part;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var q = 0u; q < SUM_LANES / {{SG}}u; q++) {
        total += red[q];
    }
    workgroupBarrier();
    return total;
#else
    red[li] = x;
    workgroupBarrier();
    for (var s = SUM_LANES / 2u; s > 0u; s >>= 1u) {
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
