// RWKV-7 time mixing for one (head h, row b), token after token: each token's inputs
// (wkv7_inputs.wgsl), the generalised delta rule on the state (wkv7_state.wgsl), then the gated,
// group-normed output (wkv7_output.wgsl). For steps of up to 8 tokens (matmul.WKV_FUSED_MAX_TOKENS);
// longer ones run the same three parts as one kernel each (wkv7_pre, wkv7_scan, wkv7_post), so that
// only the state update goes token by token. Invocation i owns channel c = h N + i and state row i.
#include "common.wgsl"

#include "wkv7_bindings.wgsl"

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
