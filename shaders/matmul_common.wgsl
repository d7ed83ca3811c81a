// Declarations and epilogue shared by the matmul kernels (see matmul.wgsl for the contract).
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#if BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif
#if MUL
@group(0) @binding(5) var<storage, read> mul: array<f32>;
#endif

const K4: u32 = {{K4}}u;
const N: u32 = {{N}}u;
const G: u32 = {{G}}u;
const X_BASE: u32 = {{X_BASE}}u;  // all x offsets in vec4s
const X_GROUP: u32 = {{X_GROUP}}u;
const X_ROW: u32 = {{X_ROW}}u;
const Y_BASE: u32 = {{Y_BASE}}u;  // all y offsets in f32s
const Y_GROUP: u32 = {{Y_GROUP}}u;
const Y_ROW: u32 = {{Y_ROW}}u;
const TT: u32 = 8u;  // tokens per workgroup

fn activate(v: f32) -> f32 {
#if ACT_SIGMOID
    return sigmoid(v);
#endif
#if ACT_TANH
    return tanh(v);
#endif
#if ACT_RELU_SQ
    let r = max(v, 0.0);
    return r * r;
#endif
#if ACT_SILU
    return v * sigmoid(v);
#endif
    return v;
}


// writes one output: bias, activation, multiply, store or accumulate
fn finish(o: u32, t: u32, acc: f32) {
    let g = o / N;
    let n = o % N;
    var v = acc;
#if BIAS
    v += bias[o];
#endif
    v = activate(v);
    let yi = Y_BASE + g * Y_GROUP + t * Y_ROW + n;
#if MUL
    v *= mul[yi];
#endif
#if ADD
    y[yi] += v;
#else
    y[yi] = v;
#endif
}
