// The group norm RWKV-5, 6 and 7 apply to the recurrence's output y, a group being a head of N lanes
// (lane li, channel c), with ln_x's weight and bias; eps 64e-5 = 1e-5 * 8^2, as the reference models.
// The includer binds ln_x [2, C] and includes head_reduce.wgsl.
fn group_norm(y: f32, c: u32, li: u32) -> f32 {
    let mean = head_sum(y, li) / f32(N);
    let d = y - mean;
    let variance = head_sum(d * d, li) / f32(N);
    return d * inverseSqrt(variance + 64e-5) * ln_x[c] + ln_x[C + c];
}
