// Sums over the four invocations that share a channel or state row in the four-lane recurrences
// (wkv7_quad, wkv7_scan_quad, wkv6_quad, wkv6_scan_quad): invocations 4m .. 4m + 3, so a subgroup of 4 or
// more (SGQ, its width) adds them with two shuffles; else through workgroup memory. The includer sets
// QUAD_LANES, its workgroup size.

var<workgroup> quad_red: array<f32, QUAD_LANES>;  // quad_sum's partials where subgroups are not used

// v summed over the four invocations of li's group; the four get the same bits (a + b = b + a).
fn quad_sum(v: f32, li: u32) -> f32 {
#if SGQ
    let pair = v + subgroupShuffleXor(v, 1u);
    return pair + subgroupShuffleXor(pair, 2u);
#else
    quad_red[li] = v;
    workgroupBarrier();
    let q = li & ~3u;
    let total = (quad_red[q] + quad_red[q + 1u]) + (quad_red[q + 2u] + quad_red[q + 3u]);
    workgroupBarrier();
    return total;
#endif
}
