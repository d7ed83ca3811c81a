// Declarations, input and epilogue shared by the matmul kernels (see matmul.wgsl for the contract).
//
// Segments: one dispatch may compute several projections that read the same K-wide input, stacked
// as rows of one weight: segment s owns rows [SEG_END[s-1], SEG_END[s]), reads x group SEG_X[s]
// and writes y[SEG_Y[s] + t * SEG_YROW[s] + n] (n: row inside the segment) after activation SEG_ACT[s].
//
// LN input: instead of x itself, the input of token t is the token-shifted mix of group g
//   xx = LayerNorm(x[t]);  prev = first token of its row ? state.x_prev : LayerNorm(x[t-1])
//   in = xx + (prev - xx) * mu[g]
// with the layer norm's two sums recomputed by every workgroup for its own tokens (a reduction
// over C floats per token), which saves a dispatch and its full-GPU barrier.
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#if BIAS
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif
#if MUL
@group(0) @binding(5) var<storage, read> mul: array<f32>;
#endif
#if TOKENS
@group(0) @binding(7) var<storage, read> tokens: array<Token>;
#endif
#if LN
@group(0) @binding(8) var<storage, read> lnp: array<vec4<f32>>;  // [2 + groups, C]: weight, bias, mu[g]
@group(0) @binding(11) var<storage, read> state: array<vec4<f32>>;  // [slots, S] (x_prev at PREV)
#endif
#if LN_OUT
@group(0) @binding(9) var<storage, read_write> ln_out: array<vec4<f32>>;  // [T_MAX, C] xx
#endif
#if LN_DELTA
@group(0) @binding(10) var<storage, read_write> ln_delta: array<vec4<f32>>;  // [T_MAX, C] prev - xx
#endif
#if MIX_DELTA
@group(0) @binding(9) var<storage, read> mix_xx: array<f32>;  // [T_MAX, C]
@group(0) @binding(10) var<storage, read> mix_delta: array<f32>;  // [T_MAX, C]
#endif
#if STORE_PREV
@group(0) @binding(11) var<storage, read_write> prev_state: array<f32>;  // [slots, S]
@group(0) @binding(12) var<storage, read> rows_in: array<Row>;
@group(0) @binding(13) var<storage, read> prev_src: array<f32>;  // [T_MAX, PC] this layer's xx
#endif

const K4: u32 = {{K4}}u;
const NROWS: u32 = {{NROWS}}u;  // rows of this dispatch, all segments
const ROW0: u32 = {{ROW0}}u;  // first row of the bound weight slice inside the whole weight (bias index)
const NSEG: u32 = {{NSEG}}u;
const SEG_END = array<u32, {{NSEG}}>({{SEG_END}});
const SEG_X = array<u32, {{NSEG}}>({{SEG_X}});  // x base in vec4s, or (LN) the mix group
const SEG_Y = array<u32, {{NSEG}}>({{SEG_Y}});  // y base in f32s
const SEG_YROW = array<u32, {{NSEG}}>({{SEG_YROW}});
const SEG_ACT = array<u32, {{NSEG}}>({{SEG_ACT}});  // 0 none, 1 sigmoid, 2 tanh, 3 relu^2, 4 silu
const X_ROW: u32 = {{X_ROW}}u;  // x vec4s per token
const MUL_BASE: u32 = {{MUL_BASE}}u;
const TT: u32 = 8u;  // tokens per workgroup

fn seg_of(o: u32) -> u32 {
    var s = 0u;
    for (var i = 0u; i + 1u < NSEG; i++) {
        s += select(0u, 1u, o >= SEG_END[i]);
    }
    return s;
}

fn seg_start(s: u32) -> u32 {
    return select(0u, SEG_END[max(s, 1u) - 1u], s > 0u);
}

// x vec4 index of token t0's column 0 for row o (plain input)
fn x_base(o: u32, t0: u32) -> u32 {
    return SEG_X[seg_of(o)] + t0 * X_ROW;
}

fn activate(v: f32, act: u32) -> f32 {
    switch act {
        case 1u: {
            return sigmoid(v);
        }
        case 2u: {
            return tanh(v);
        }
        case 3u: {
            let r = max(v, 0.0);
            return r * r;
        }
        case 4u: {
            return v * sigmoid(v);
        }
        default: {
            return v;
        }
    }
}

// writes one output: bias, activation, mix, multiply, store or accumulate; keeps the shift state
fn finish(o: u32, t: u32, acc: f32) {
    let s = seg_of(o);
    let n = o - seg_start(s);
    var v = acc;
#if BIAS
    v += bias[ROW0 + o];
#endif
    v = activate(v, SEG_ACT[s]);
#if MIX_DELTA
    v = mix_xx[t * {{MIX_C}}u + n] + mix_delta[t * {{MIX_C}}u + n] * v;
#endif
    let yi = SEG_Y[s] + t * SEG_YROW[s] + n;
#if MUL
    v *= mul[MUL_BASE + yi];
#endif
#if ADD
    y[yi] += v;
#else
    y[yi] = v;
#endif
#if STORE_PREV
    // row ROW0 + o is channel ROW0 + o (of PC): the row's last token's xx becomes its next x_prev
    let tok = tokens[t];
    let row = rows_in[tok.row];
    if (t + 1u == row.start + row.len) {
        prev_state[tok.slot * {{PS}}u + {{PREV}}u + ROW0 + o] = prev_src[t * {{PC}}u + ROW0 + o];
    }
#endif
}

#if LN
const LN_C4: u32 = K4;
const LN_S4: u32 = {{S4}}u;
const LN_PREV4: u32 = {{PREV4}}u;
// per workgroup: tokens t0 - 1 .. t0 + TT - 1 (index j = t - t0 + 1): mean and 1/std, first flag, slot
var<workgroup> ln_stat: array<vec2<f32>, 9>;
var<workgroup> ln_first: array<u32, 9>;
var<workgroup> ln_slot: array<u32, 9>;
var<workgroup> ln_red: array<f32, {{WGS}}>;

fn ln_sum(v: f32, li: u32) -> f32 {
    ln_red[li] = v;
    workgroupBarrier();
    for (var s = {{WGS}}u / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            ln_red[li] += ln_red[li + s];
        }
        workgroupBarrier();
    }
    let total = ln_red[0];
    workgroupBarrier();
    return total;
}

// fills ln_stat/ln_first/ln_slot for this workgroup's tokens; every invocation calls it (barriers)
fn ln_prepare(li: u32, t0: u32, count: u32) {
    let n_t = min(TT, count - min(t0, count));
    for (var j = 0u; j <= TT; j++) {
        // token t0 - 1 (j = 0) may be the shift partner of t0; the others are this block's tokens.
        // Decided by sizes alone, so the barriers inside stay in uniform control flow.
        let t = t0 + j - 1u;
        if ((j >= 1u && j <= n_t) || (j == 0u && t0 > 0u && n_t > 0u)) {
            var s = 0.0;
            for (var i = li; i < LN_C4; i += {{WGS}}u) {
                let v = x[t * LN_C4 + i];
                s += v.x + v.y + v.z + v.w;
            }
            let mean = ln_sum(s, li) / f32(LN_C4 * 4u);
            var q = 0.0;
            for (var i = li; i < LN_C4; i += {{WGS}}u) {
                let d = x[t * LN_C4 + i] - vec4<f32>(mean);
                q += dot(d, d);
            }
            let variance = ln_sum(q, li) / f32(LN_C4 * 4u);
            if (li == 0u) {
                ln_stat[j] = vec2<f32>(mean, inverseSqrt(variance + 1e-5));
                ln_first[j] = tokens[t].flags & 1u;
                ln_slot[j] = tokens[t].slot;
            }
        }
    }
    workgroupBarrier();
}

// the layer norm of token t0 + j - 1 at vec4 column k
fn ln_xx(j: u32, t: u32, k: u32) -> vec4<f32> {
    let st = ln_stat[j];
    return (x[t * LN_C4 + k] - vec4<f32>(st.x)) * st.y * lnp[k] + lnp[LN_C4 + k];
}

// the token-shift partner of token t (index j >= 1) at column k
fn ln_prev(j: u32, t: u32, k: u32) -> vec4<f32> {
    if (ln_first[j] != 0u) {
        return state[ln_slot[j] * LN_S4 + LN_PREV4 + k];
    }
    return ln_xx(j - 1u, t - 1u, k);
}

// the input of token t (index j >= 1) for mix group g at column k
fn ln_in(j: u32, t: u32, g: u32, k: u32) -> vec4<f32> {
    let xx = ln_xx(j, t, k);
    return xx + (ln_prev(j, t, k) - xx) * lnp[(2u + g) * LN_C4 + k];
}

// the first row block of each token block also writes xx (and prev - xx) for later kernels
fn ln_write(li: u32, t0: u32, count: u32, block: u32) {
#if LN_OUT
    if (block != 0u) {
        return;
    }
    let n_t = min(TT, count - min(t0, count));
    for (var j = 1u; j <= n_t; j++) {
        let t = t0 + j - 1u;
        for (var k = li; k < LN_C4; k += {{WGS}}u) {
            let xx = ln_xx(j, t, k);
            ln_out[t * LN_C4 + k] = xx;
#if LN_DELTA
            ln_delta[t * LN_C4 + k] = ln_prev(j, t, k) - xx;
#endif
        }
    }
#endif
}
#endif
