// RWKV-5/6 time mixing for short steps, as wkv6.wgsl, with four invocations per channel: invocation li owns
// channel c = h N + li / 4 (state column j = li / 4) and rows i of 16p .. 16p + 15 of that column (p = li % 4),
// with every 4th vec4 (float) from its p-th of v6's decay LoRA row; y_j and the decay dot are summed over the
// four (quad_sum.wgsl), the head sums count each channel once (head_reduce.wgsl with QUAD). A decode step has
// heads x rows workgroups: each lane runs a quarter of the 64-lane kernel's chain. (wkv_ops.wkv6_lanes picks
// it: AI00_WKV6_LANES=4; heads of 64.)
#include "common.wgsl"

#include "wkv6_bindings.wgsl"

const BUFFERS: u32 = 1u;
const QUAD_LANES: u32 = 4u * {{N}}u;

#include "wkv6_common.wgsl"
#include "wkv6_decay.wgsl"
#include "wkv6_state.wgsl"
#include "quad_sum.wgsl"
#include "head_reduce.wgsl"
#include "wkv_group_norm.wgsl"
#include "wkv6_output.wgsl"

var<workgroup> sh_u: array<vec4<f32>, 16>;
var<workgroup> row_len: u32;

// channel c's decay at token t (wkv6_decay.wgsl's decay_w), its LoRA dot taken in quarters and summed
fn decay_quad(t: u32, c: u32, li: u32) -> f32 {
    var wd = decay[c];
#if DECAY_LORA
    let hb = LORA_BASE + t * LW;
    let p = li % 4u;
    var part = 0.0;
#if LORA4
    var acc = vec4<f32>(0.0);
    for (var q = p; q < D / 4u; q += 4u) {
        acc += decay_w2[c * (D / 4u) + q] * hidden4(hb + 4u * q);
    }
    part = acc.x + acc.y + acc.z + acc.w;
#else
    for (var q = p; q < D; q += 4u) {
        part += rkv[hb + q] * decay_w2[c * D + q];
    }
#endif
    wd += quad_sum(part, li);
#endif
    return exp(-exp(wd));
}

@compute @workgroup_size(4 * {{N}})
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let row = rows[wg.y];
    if (li == 0u) {
        row_len = row.len;
    }
    let len = workgroupUniformLoad(&row_len);
    let j = li / 4u;
    let i0 = 4u * (li % 4u);  // this invocation's first vec4 of rows
    let c = h * N + j;
    let at = state_column(row.slot, h, j);
    var s: array<vec4<f32>, 4>;
#unroll I 4
    s[{{I}}] = load4(at + (i0 + {{I}}u) * 4u * N);
#end
    if (li % 4u == 0u) {
        sh_u[j / 4u][j % 4u] = u[c];
    }
    for (var n = 0u; n < len; n++) {
        let t = row.start + n;
        let tc = t * C + c;
        let w = decay_quad(t, c, li);
        if (li % 4u == 0u) {
            share_rk(0u, j, rkv[tc], rkv[TC + tc]);
            share_w(0u, j, w);
        }
        let v = rkv[2u * TC + tc];
        workgroupBarrier();
        var y4 = vec4<f32>(0.0);
#unroll I 4
        {
            let kv = sh_k[0][i0 + {{I}}u] * v;
            y4 += sh_r[0][i0 + {{I}}u] * (sh_u[i0 + {{I}}u] * kv + s[{{I}}]);
            s[{{I}}] = update(s[{{I}}], sh_w[0][i0 + {{I}}u], kv);
        }
#end
        let y = quad_sum(y4.x + y4.y + y4.z + y4.w, li);
        let o = time_mix_output(y, tc, c, li);
        if (li % 4u == 0u) {
            out[tc] = o;
        }
    }
#unroll I 4
    store4(at + (i0 + {{I}}u) * 4u * N, s[{{I}}]);
#end
}
