// The bindings of RWKV-7's scan (wkv7_scan.wgsl, wkv7_scan_quad.wgsl).
@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(2) var<storage, read> rkv: array<f32>;  // [4, T_MAX, C]: r, k, v, w (wkv7_pre)
@group(0) @binding(9) var<storage, read> ext: array<f32>;  // [3, T_MAX, C]: kk, kk * a, g
@group(0) @binding(10) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> out: array<f32>;  // [T_MAX, C] y
