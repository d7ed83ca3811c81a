// One workgroup per token t:
//   xx = LayerNorm(x[t]);  prev = first token of its row ? state.x_prev : LayerNorm(x[t-1])
//   out[g, t] = xx + (prev - xx) * mu[g]           (token shift; mu = maa, or 1 - time_mix)
//   ln_out[t] = xx (the next step's x_prev, stored by a later kernel);  DELTA: delta[t] = prev - xx
// (Where the next kernel can compute its input itself, matmul_common.wgsl's LN input replaces this.)
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> tokens: array<Token>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> lnp: array<vec4<f32>>;  // [2 + G, C]: weight, bias, mu[g]
@group(0) @binding(6) var<storage, read> state: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> ln_out: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> out: array<vec4<f32>>;  // [G, T_MAX, C]
#if DELTA
@group(0) @binding(9) var<storage, read_write> delta: array<vec4<f32>>;
#endif

#include "layer_norm.wgsl"

const G: u32 = {{G}}u;
const T_MAX: u32 = {{T_MAX}}u;
const S4: u32 = {{S4}}u;  // one slot's layer state, in vec4s
const PREV4: u32 = {{PREV4}}u;  // offset of this x_prev inside it

@compute @workgroup_size(128)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let t = wg.x;
    let tok = tokens[t];
    let first = (tok.flags & 1u) != 0u;
    let st = ln_stats(t * C4, li);
    // always computed (barriers need uniform control flow); unused for a row's first token
    let tp = max(t, 1u) - 1u;
    let pst = ln_stats(tp * C4, li);
    for (var i = li; i < C4; i += WG) {
        let xx = (x[t * C4 + i] - vec4<f32>(st.x)) * st.y * lnp[i] + lnp[C4 + i];
        var prev: vec4<f32>;
        if (first) {
            prev = state[tok.slot * S4 + PREV4 + i];
        } else {
            prev = (x[tp * C4 + i] - vec4<f32>(pst.x)) * pst.y * lnp[i] + lnp[C4 + i];
        }
        ln_out[t * C4 + i] = xx;
#if DELTA
        delta[t * C4 + i] = prev - xx;
#endif
        for (var g = 0u; g < G; g++) {
            out[(g * T_MAX + t) * C4 + i] = xx + (prev - xx) * lnp[(2u + g) * C4 + i];
        }
    }
}
