// The bindings of RWKV-5/6's scan (wkv6_scan.wgsl, wkv6_scan_quad.wgsl).
@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(2) var<storage, read> rkv: array<f32>;  // [4, T_MAX, C]: r, k, v, gate
#if DECAY_LORA
@group(0) @binding(9) var<storage, read> ext: array<f32>;  // [T_MAX, C] w (wkv6_pre)
#else
@group(0) @binding(3) var<storage, read> decay: array<f32>;  // [C]
#endif
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;  // [T_MAX, C] y
