// RWKV-5/6 time mixing for one (head h, row b), token after token (wkv6_state.wgsl for S):
//   y_j = sum_i r_i (u_i k_i v_j + S_ij);   S_ij = k_i v_j + w_i S_ij,   w = exp(-exp(decay))
// then the output (wkv6_output.wgsl): group norm over the head and (GATE) the silu gate. For steps of
// up to 8 tokens (matmul.WKV_FUSED_MAX_TOKENS); longer ones run the split form (wkv6_pre, wkv6_scan,
// wkv6_post). Invocation j owns channel c = h N + j and state column j. DECAY_LORA (v6): the decay's LoRA second stage per token
// (wkv6_decay.wgsl), done here.
#include "common.wgsl"

#include "wkv6_bindings.wgsl"

const BUFFERS: u32 = 1u;  // one token's r, k, w in workgroup memory at a time

#include "head_reduce.wgsl"
#include "wkv6_common.wgsl"
#include "wkv6_decay.wgsl"
#include "wkv6_state.wgsl"
#include "wkv_group_norm.wgsl"
#include "wkv6_output.wgsl"

var<workgroup> sh_u: array<vec4<f32>, 16>;
var<workgroup> row_len: u32;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let row = rows[wg.y];
    if (j == 0u) {
        row_len = row.len;
    }
    let len = workgroupUniformLoad(&row_len);
    let c = h * N + j;
    let at = state_column(row.slot, h, j);
    var s: array<vec4<f32>, 16>;
    load_state(&s, at);
    sh_u[j / 4u][j % 4u] = u[c];
    for (var n = 0u; n < len; n++) {
        let t = row.start + n;
        let tc = t * C + c;
        share_rk(0u, j, rkv[tc], rkv[TC + tc]);
        share_w(0u, j, decay_w(t, c));
        let v = rkv[2u * TC + tc];
        workgroupBarrier();
        var y4 = vec4<f32>(0.0);  // a vector accumulator: 16 dependent multiply-adds, not 16 dots' 64
#unroll I 16
        {
            let kv = sh_k[0][{{I}}] * v;
            y4 += sh_r[0][{{I}}] * (sh_u[{{I}}] * kv + s[{{I}}]);
            s[{{I}}] = update(s[{{I}}], sh_w[0][{{I}}], kv);
        }
#end
        out[tc] = time_mix_output(y4.x + y4.y + y4.z + y4.w, tc, c, j);
    }
    store_state(at, &s);
}
