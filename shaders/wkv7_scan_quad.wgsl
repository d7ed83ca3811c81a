// RWKV-7 time mixing for long steps, part 2 of 3 (wkv7_scan.wgsl's job), with the head's state rows split over
// four workgroups and four invocations a row: workgroup (4h + q, row b) updates state rows 16q .. 16q + 15 of
// head h, invocation li row 16q + li / 4, its vec4s 4p .. 4p + 3 (p = li % 4; wkv7_quad_state.wgsl). The delta
// rule keeps rows apart (row i's update reads only row i and the token's vectors), so the quarters need
// nothing of each other: a 1,024-token prefill's scan, one token after another, runs on 4x the workgroups,
// each token a quarter of the multiply-adds in a lane. (wkv_ops.wkv7_lanes picks it: AI00_WKV7_LANES=4.)
#include "common.wgsl"

#include "wkv7_scan_bindings.wgsl"

const BUFFERS: u32 = 2u;  // token n's vectors in buffer n & 1
const QUAD_LANES: u32 = 64u;

#include "wkv7_common.wgsl"
#include "wkv7_state.wgsl"
#include "quad_sum.wgsl"
#include "wkv7_quad_state.wgsl"

struct Shared {
    r: f32,
    w: f32,
    k: f32,
    kk: f32,
    b: f32,
}

// channel c's part of the token's shared vectors (invocation li loads channel li of the head)
fn shared_inputs(tc: u32) -> Shared {
    return Shared(rkv[tc], rkv[3u * TC + tc], rkv[TC + tc], ext[tc], ext[TC + tc]);
}

var<workgroup> row_len: u32;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x / 4u;
    let i = (wg.x % 4u) * 16u + li / 4u;  // this invocation's state row (value channel) in the head
    let row = rows[wg.y];
    if (li == 0u) {
        row_len = row.len;
    }
    let len = workgroupUniformLoad(&row_len);
    let c_load = h * N + li;  // the channel whose vectors this invocation loads for the workgroup
    let c = h * N + i;
    let at = state_row(row.slot, c) + 4u * (li % 4u);
    var s: array<vec4<f32>, 4>;
#unroll J 4
    s[{{J}}] = state[at + {{J}}u];
#end
    var next = shared_inputs(row.start * C + c_load);
    var next_v = rkv[2u * TC + row.start * C + c];
    for (var n = 0u; n < len; n++) {
        let b = n & 1u;
        let cur = next;
        let v = next_v;
        share_token(b, li, cur.r, cur.w, cur.k, cur.kk, cur.b);
        workgroupBarrier();
        if (n + 1u < len) {
            next = shared_inputs((row.start + n + 1u) * C + c_load);
            next_v = rkv[2u * TC + (row.start + n + 1u) * C + c];
        }
        let y = delta_rule_quad(&s, b, v, li);
        if (li % 4u == 0u) {
            out[(row.start + n) * C + c] = y;
        }
    }
#unroll J 4
    state[at + {{J}}u] = s[{{J}}];
#end
}
