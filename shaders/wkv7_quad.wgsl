// RWKV-7 time mixing for short steps, as wkv7.wgsl, with four invocations per channel: invocation li owns
// channel c = h N + li / 4 and a quarter of its work, p = li % 4: every 4th vec4 of its LoRA rows (from p) and
// state row c's vec4s 4p .. 4p + 3. Its dots (the LoRAs' second stages, S kk and S r) are summed over the
// four (quad_sum), and the head sums count each channel once (head_reduce.wgsl with QUAD). A decode step has
// heads x rows workgroups, 32 a 1.6B layer at batch 1: the 64-lane kernel leaves most of the GPU idle while
// each lane runs 288 LoRA and 2 x 64 state multiply-adds one after another; here each runs a quarter of them.
// (wkv_ops.wkv7_lanes picks it: AI00_WKV7_LANES=4.)
#include "common.wgsl"

#include "wkv7_bindings.wgsl"

const BUFFERS: u32 = 1u;
const QUAD_LANES: u32 = 4u * {{N}}u;

#include "wkv7_common.wgsl"
#include "wkv7_inputs.wgsl"
#include "wkv7_state.wgsl"
#include "quad_sum.wgsl"
#include "head_reduce.wgsl"
#include "wkv7_quad_state.wgsl"
#include "wkv_group_norm.wgsl"
#include "wkv7_output.wgsl"

var<workgroup> row_len: u32;

// invocation p's part of hidden[o .. o + n) . lora2[c, o .. o + n): every 4th vec4 (float) from its p-th
fn lora_part(hb: u32, c: u32, o: u32, n: u32, p: u32) -> f32 {
#if LORA4
    let l4 = (c * L2 + o) / 4u;
    var acc = vec4<f32>(0.0);
    for (var q = p; q < n / 4u; q += 4u) {
        acc += lora2[l4 + q] * hidden4(hb + o + 4u * q);
    }
    return acc.x + acc.y + acc.z + acc.w;
#else
    var acc = 0.0;
    for (var j = o + p; j < o + n; j += 4u) {
        acc += rkv[hb + j] * lora2[c * L2 + j];
    }
    return acc;
#endif
}

fn lora_dots_quad(t: u32, c: u32, li: u32) -> LoraDots {
    let hb = LORA_BASE + t * LW;
    let p = li % 4u;
    var v = 0.0;
#if MIX_V
    v = quad_sum(lora_part(hb, c, {{OV}}u, {{DV}}u, p), li);
#endif
    let w = quad_sum(lora_part(hb, c, 0u, {{DW}}u, p), li);
    let a = quad_sum(lora_part(hb, c, {{OA}}u, {{DA}}u, p), li);
    let g = quad_sum(lora_part(hb, c, {{OG}}u, {{DG}}u, p), li);
    return LoraDots(w, a, v, g);
}

@compute @workgroup_size(4 * {{N}})
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let row = rows[wg.y];
    if (li == 0u) {
        row_len = row.len;
    }
    let len = workgroupUniformLoad(&row_len);
    let i = li / 4u;
    let c = h * N + i;
    let at = state_row(row.slot, c) + 4u * (li % 4u);
    var s: array<vec4<f32>, 4>;
#unroll J 4
    s[{{J}}] = state[at + {{J}}u];
#end
    for (var n = 0u; n < len; n++) {
        let t = row.start + n;
        let tc = t * C + c;
        let r = rkv[tc];
        let x = inputs_from(t, c, li, lora_dots_quad(t, c, li));
        if (li % 4u == 0u) {
            share_token(0u, i, r, x.w, x.k, x.kk, x.b);
        }
        workgroupBarrier();
        let y = delta_rule_quad(&s, 0u, x.v, li);
        let o = time_mix_output(y, r, x.k, x.v, x.g, c, li);
        if (li % 4u == 0u) {
            out[tc] = o;
        }
    }
#unroll J 4
    state[at + {{J}}u] = s[{{J}}];
#end
}
