// RWKV-5/6 time mixing for long steps, part 2 of 3: the state recurrence alone (wkv6_state.wgsl), per
// (head h, row b), token after token:  y_j = sum_i r_i S_ij;  S_ij = k_i v_j + w_i S_ij  (y before the
// bonus v_j sum_i r_i u_i k_i and the group norm, which wkv6_post adds for every token at once).
// Invocation j owns state column j. r, k and w are double-buffered in workgroup memory so one barrier
// per token suffices; the next token's loads are issued before this token's arithmetic so their
// latency hides behind it. DECAY_LORA (v6): w per token from wkv6_pre; else (v5) the same for every
// token (wkv6_decay.wgsl).
#include "common.wgsl"

#include "wkv6_scan_bindings.wgsl"

const BUFFERS: u32 = 2u;  // token n's r, k, w in buffer n & 1

#include "wkv6_common.wgsl"
#include "wkv6_state.wgsl"
#if DECAY_LORA
#else
#include "wkv6_decay.wgsl"
#endif

struct Inputs {
    r: f32,
    k: f32,
    w: f32,
    v: f32,
}

fn inputs(tc: u32) -> Inputs {
#if DECAY_LORA
    return Inputs(rkv[tc], rkv[TC + tc], ext[tc], rkv[2u * TC + tc]);
#else
    return Inputs(rkv[tc], rkv[TC + tc], 0.0, rkv[2u * TC + tc]);
#endif
}

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
#if DECAY_LORA
#else
    let w = decay_w(row.start, c);  // constant: both halves once, read by every token
    share_w(0u, j, w);
    share_w(1u, j, w);
#endif
    var next = inputs(row.start * C + c);
    for (var n = 0u; n < len; n++) {
        let p = n & 1u;
        let tc = (row.start + n) * C + c;
        let cur = next;
        share_rk(p, j, cur.r, cur.k);
#if DECAY_LORA
        share_w(p, j, cur.w);
#endif
        workgroupBarrier();
        if (n + 1u < len) {
            next = inputs(tc + C);
        }
        // y in two vec4 accumulators (even and odd I): 8 dependent multiply-adds, not 16 dots' 64
        var y0 = vec4<f32>(0.0);
        var y1 = vec4<f32>(0.0);
#unroll I 8
        y0 += sh_r[p][2u * {{I}}u] * s[2u * {{I}}u];
        y1 += sh_r[p][2u * {{I}}u + 1u] * s[2u * {{I}}u + 1u];
        s[2u * {{I}}u] = update(s[2u * {{I}}u], sh_w[p][2u * {{I}}u], sh_k[p][2u * {{I}}u] * cur.v);
        s[2u * {{I}}u + 1u] = update(s[2u * {{I}}u + 1u], sh_w[p][2u * {{I}}u + 1u], sh_k[p][2u * {{I}}u + 1u] * cur.v);
#end
        let y4 = y0 + y1;
        out[tc] = y4.x + y4.y + y4.z + y4.w;
    }
    store_state(at, &s);
}
