// RWKV-7's time-mix output for channel c (lane i of its head): y's group norm over the head, the bonus
// v * sum over the head of r * k * r_k, and the gate g. wkv7.wgsl applies it token by token,
// wkv7_post.wgsl for all tokens at once. The includer binds params and ln_x and includes
// head_reduce.wgsl, wkv_group_norm.wgsl and wkv7_common.wgsl.
fn time_mix_output(y: f32, r: f32, k: f32, v: f32, g: f32, c: u32, i: u32) -> f32 {
    var o = group_norm(y, c, i);
    o += head_sum(r * k * params[2u * C + c], i) * v;
    return o * g;
}
