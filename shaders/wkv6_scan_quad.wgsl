// RWKV-5/6 time mixing for long steps, part 2 of 3 (wkv6_scan.wgsl's job), with a head's state columns split
// over four workgroups and four invocations a column: workgroup (4h + q, row b) updates columns 16q .. 16q + 15
// of head h, invocation li column 16q + li / 4, its rows i of 16p .. 16p + 15 (p = li % 4), y_j summed over the
// four (quad_sum.wgsl). Columns do not read each other (S_ij = k_i v_j + w_i S_ij, y_j = sum_i r_i S_ij), so
// the quarters need nothing of each other: the scan runs on 4x the workgroups, each token a quarter of the
// multiply-adds in a lane. (wkv_ops.wkv6_lanes picks it: AI00_WKV6_LANES=4.)
#include "common.wgsl"

#include "wkv6_scan_bindings.wgsl"

const BUFFERS: u32 = 2u;  // token n's r, k, w in buffer n & 1
const QUAD_LANES: u32 = 64u;

#include "wkv6_common.wgsl"
#include "wkv6_state.wgsl"
#include "quad_sum.wgsl"
#if DECAY_LORA
#else
#include "wkv6_decay.wgsl"
#endif

struct Shared {
    r: f32,
    k: f32,
    w: f32,
}

// channel tc's part of the token's shared vectors (invocation li loads channel li of the head)
fn shared_inputs(tc: u32) -> Shared {
#if DECAY_LORA
    return Shared(rkv[tc], rkv[TC + tc], ext[tc]);
#else
    return Shared(rkv[tc], rkv[TC + tc], 0.0);
#endif
}

var<workgroup> row_len: u32;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x / 4u;
    let j = (wg.x % 4u) * 16u + li / 4u;  // this invocation's state column (value channel) in the head
    let i0 = 4u * (li % 4u);
    let row = rows[wg.y];
    if (li == 0u) {
        row_len = row.len;
    }
    let len = workgroupUniformLoad(&row_len);
    let c_load = h * N + li;
    let c = h * N + j;
    let at = state_column(row.slot, h, j);
    var s: array<vec4<f32>, 4>;
#unroll I 4
    s[{{I}}] = load4(at + (i0 + {{I}}u) * 4u * N);
#end
#if DECAY_LORA
#else
    let w = decay_w(row.start, c_load);  // constant: both buffers once
    share_w(0u, li, w);
    share_w(1u, li, w);
#endif
    var next = shared_inputs(row.start * C + c_load);
    var next_v = rkv[2u * TC + row.start * C + c];
    for (var n = 0u; n < len; n++) {
        let b = n & 1u;
        let cur = next;
        let v = next_v;
        share_rk(b, li, cur.r, cur.k);
#if DECAY_LORA
        share_w(b, li, cur.w);
#endif
        workgroupBarrier();
        if (n + 1u < len) {
            next = shared_inputs((row.start + n + 1u) * C + c_load);
            next_v = rkv[2u * TC + (row.start + n + 1u) * C + c];
        }
        var y4 = vec4<f32>(0.0);
#unroll I 4
        y4 += sh_r[b][i0 + {{I}}u] * s[{{I}}];
        s[{{I}}] = update(s[{{I}}], sh_w[b][i0 + {{I}}u], sh_k[b][i0 + {{I}}u] * v);
#end
        let y = quad_sum(y4.x + y4.y + y4.z + y4.w, li);
        if (li % 4u == 0u) {
            out[(row.start + n) * C + c] = y;
        }
    }
#unroll I 4
    store4(at + (i0 + {{I}}u) * 4u * N, s[{{I}}]);
#end
}
