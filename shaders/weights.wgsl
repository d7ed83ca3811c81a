// `w4(i)`: the i-th vec4 of the weight matrix bound as `w`, as f32.
// fp16 weights are read as packed u32 pairs and unpacked, so they need no shader-f16 feature.
#if W_F16
@group(0) @binding(2) var<storage, read> w: array<vec2<u32>>;
fn w4(i: u32) -> vec4<f32> {
    let p = w[i];
    return vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y));
}
#else
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
fn w4(i: u32) -> vec4<f32> {
    return w[i];
}
#endif
