// RWKV-7 time mixing for one (head h, row b), token after token: each token's inputs
// (wkv7_inputs.wgsl), the generalised delta rule on the state (wkv7_state.wgsl), then the gated,
// group-normed output (wkv7_output.wgsl). For steps of up to 8 tokens (matmul.WKV_FUSED_MAX_TOKENS);
// longer ones run the same three parts as one kernel each (wkv7_pre, wkv7_scan, wkv7_post), so that
// only the state update goes token by token. Invocation i owns channel c = h N + i and state row i.
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(2) var<storage, read> rkv: array<f32>;    // [4, T_MAX, C]: r, k, v, -; then [T_MAX, LW] hidden
#if LORA4
@group(0) @binding(3) var<storage, read> lora2: array<vec4<f32>>;  // [C, L2 / 4]: as below, in vec4
#else
@group(0) @binding(3) var<storage, read> lora2: array<f32>;  // [C, L2]: per channel w2, a2, (v2,) g2 columns
#endif
@group(0) @binding(6) var<storage, read_write> v_first: array<f32>;  // [T_MAX, C] layer 0's v
@group(0) @binding(7) var<storage, read> params: array<f32>;  // [6, C]: k_k, k_a, r_k, w0, a0, v0
@group(0) @binding(8) var<storage, read> ln_x: array<f32>;    // [2, C]: weight, bias
@group(0) @binding(9) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read_write> out: array<f32>;  // [T_MAX, C]

const BUFFERS: u32 = 1u;  // one token's vectors in workgroup memory at a time

#include "head_reduce.wgsl"
#include "wkv7_common.wgsl"
#include "wkv7_inputs.wgsl"
#include "wkv7_state.wgsl"
#include "wkv_group_norm.wgsl"
#include "wkv7_output.wgsl"

var<workgroup> row_len: u32;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let row = rows[wg.y];
    if (i == 0u) {
        row_len = row.len;
    }
    let len = workgroupUniformLoad(&row_len);
    let c = h * N + i;
    let at = state_row(row.slot, c);
    var s: array<vec4<f32>, 16>;
    load_state(&s, at);
    for (var n = 0u; n < len; n++) {
        let t = row.start + n;
        let tc = t * C + c;
        let r = rkv[tc];
        let x = token_inputs(t, c, i);
        share_token(0u, i, r, x.w, x.k, x.kk, x.b);
        workgroupBarrier();
        let y = delta_rule(&s, 0u, x.v);
        out[tc] = time_mix_output(y, r, x.k, x.v, x.g, c, i);
    }
    store_state(at, &s);
}
