// The sum over a head's channels in a four-lane kernel (QUAD_LANES = 4 N invocations, a channel's four
// holding its value alike): each channel counted once (li % 4 = 0). The name head_reduce.wgsl gives the
// one-lane kernels' sum, which the included group norm and outputs call.

var<workgroup> red: array<f32, QUAD_LANES>;

fn head_sum(v: f32, li: u32) -> f32 {
    let once = select(0.0, v, li % 4u == 0u);
#if SGQ
    let part = subgroupAdd(once);
    if (li % {{SGQ}}u == 0u) {
        red[li / {{SGQ}}u] = part;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var q = 0u; q < QUAD_LANES / {{SGQ}}u; q++) {
        total += red[q];
    }
    workgroupBarrier();
    return total;
#else
    red[li] = once;
    workgroupBarrier();
    for (var s = QUAD_LANES / 2u; s > 0u; s >>= 1u) {
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
