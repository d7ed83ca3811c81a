// The bindings of RWKV-5/6's one-kernel recurrence (wkv6.wgsl, wkv6_quad.wgsl).
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(2) var<storage, read> rkv: array<f32>;    // [4, T_MAX, C]: r, k, v, gate; [T_MAX, LW] hidden
@group(0) @binding(3) var<storage, read> decay: array<f32>;  // [C]
@group(0) @binding(4) var<storage, read> u: array<f32>;      // [C] bonus
@group(0) @binding(5) var<storage, read> ln_x: array<f32>;   // [2, C]: weight, bias
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;  // [T_MAX, C]
#if DECAY_LORA
#if LORA4
@group(0) @binding(8) var<storage, read> decay_w2: array<vec4<f32>>;  // [C, D / 4]
#else
@group(0) @binding(8) var<storage, read> decay_w2: array<f32>;  // [C, D]
#endif
#endif
