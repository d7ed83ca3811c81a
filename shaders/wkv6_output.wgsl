// RWKV-5/6's time-mix output for channel c (lane j of its head) at rkv offset tc: y's group norm over the
// head, then (GATE) the silu gate, rkv's fourth group. wkv6.wgsl applies it token by token,
// wkv6_post.wgsl for all tokens at once. The includer binds rkv and ln_x and includes head_reduce.wgsl,
// wkv_group_norm.wgsl and wkv6_common.wgsl.
fn time_mix_output(y: f32, tc: u32, c: u32, j: u32) -> f32 {
    var o = group_norm(y, c, j);
#if GATE
    o *= rkv[3u * TC + tc];
#endif
    return o;
}
