// `w4(i)`: the i-th vec4 of the weight matrix bound as `w` ([rows, K] row-major), as f32.
// fp16 weights are read as packed u32 pairs and unpacked, so they need no shader-f16 feature.
// int8 / nf4 (backend/gpu/quant.py): codes packed in u32, one absmax per 64 weights of a row.
#if W_F16
@group(0) @binding(2) var<storage, read> w: array<vec2<u32>>;
fn w4(i: u32) -> vec4<f32> {
    let p = w[i];
    return vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y));
}
#else
#if W_INT8
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(6) var<storage, read> w_scale: array<f32>;
fn w4(i: u32) -> vec4<f32> {
    return unpack4x8snorm(w[i]) * w_scale[i / 16u];  // 16 vec4 per 64-weight block
}
#else
#if W_NF4
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(6) var<storage, read> w_scale: array<f32>;
#include "nf4.wgsl"
fn w4(i: u32) -> vec4<f32> {
    let q = w[i / 2u] >> (16u * (i % 2u));
    let v = vec4<f32>(NF4[q & 15u], NF4[(q >> 4u) & 15u], NF4[(q >> 8u) & 15u], NF4[(q >> 12u) & 15u]);
    return v * w_scale[i / 16u];
}
#else
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
fn w4(i: u32) -> vec4<f32> {
    return w[i];
}
#endif
#endif
#endif
