// RWKV-7 time mixing for long steps, part 2 of 3: the state recurrence alone (wkv7_state.wgsl), per
// (head h, row b), token after token; writes y before its group norm. Invocation i owns state row i.
// The token's vectors are double-buffered in workgroup memory so one barrier per token suffices; the
// next token's loads are issued before this token's arithmetic so their latency hides behind it.
#include "common.wgsl"

#include "wkv7_scan_bindings.wgsl"

const BUFFERS: u32 = 2u;  // token n's vectors in buffer n & 1

#include "wkv7_common.wgsl"
#include "wkv7_state.wgsl"

struct Inputs {
    r: f32,
    w: f32,
    k: f32,
    kk: f32,
    b: f32,
    v: f32,
}

fn inputs(tc: u32) -> Inputs {
    return Inputs(rkv[tc], rkv[3u * TC + tc], rkv[TC + tc], ext[tc], ext[TC + tc], rkv[2u * TC + tc]);
}

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
    var next = inputs(row.start * C + c);
    for (var n = 0u; n < len; n++) {
        let p = n & 1u;
        let cur = next;
        share_token(p, i, cur.r, cur.w, cur.k, cur.kk, cur.b);
        workgroupBarrier();
        if (n + 1u < len) {
            next = inputs((row.start + n + 1u) * C + c);
        }
        out[(row.start + n) * C + c] = delta_rule(&s, p, cur.v);
    }
    store_state(at, &s);
}
