// `w8(i)`: the i-th group of 8 weights of the matrix bound as `w` ([rows, K] row-major) as two vec4,
// read with one 16-byte load for fp16, 8 bytes for int8, 4 for nf4 (K % 16 == 0, so rows align).
// Same storage as weights.wgsl (see there and backend/gpu/quant.py); one absmax per 64 weights.
struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

#if W_F16
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
fn w8(i: u32) -> W8 {
    let p = w[i];
    return W8(vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y)),
              vec4<f32>(unpack2x16float(p.z), unpack2x16float(p.w)));
}
#else
#if W_INT8
@group(0) @binding(2) var<storage, read> w: array<vec2<u32>>;
@group(0) @binding(6) var<storage, read> w_scale: array<f32>;
fn w8(i: u32) -> W8 {
    let p = w[i];
    let s = w_scale[i / 8u];  // 8 groups of 8 per 64-weight block
    return W8(unpack4x8snorm(p.x) * s, unpack4x8snorm(p.y) * s);
}
#else
#if W_NF4
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(6) var<storage, read> w_scale: array<f32>;
#include "nf4.wgsl"
fn w8(i: u32) -> W8 {
    let q = w[i];
    let s = w_scale[i / 8u];
    let lo = vec4<f32>(NF4[q & 15u], NF4[(q >> 4u) & 15u], NF4[(q >> 8u) & 15u], NF4[(q >> 12u) & 15u]);
    let hi = vec4<f32>(NF4[(q >> 16u) & 15u], NF4[(q >> 20u) & 15u], NF4[(q >> 24u) & 15u], NF4[q >> 28u]);
    return W8(lo * s, hi * s);
}
#else
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
fn w8(i: u32) -> W8 {
    return W8(w[2u * i], w[2u * i + 1u]);
}
#endif
#endif
#endif
