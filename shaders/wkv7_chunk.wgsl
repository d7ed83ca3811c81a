// RWKV-7 time mixing for long steps, chunked form of the state recurrence: it replaces wkv7_scan (between
// wkv7_pre and wkv7_post, reading and writing what the scan does). Per head, row i of the state (lane i):
//   e_t = S_{t-1} z_t,  S_t = S_{t-1} diag(w_t) + e_t b_t^T + v_t k_t^T,  y_t = S_t r_t
// with z = -kk, b = kk * a (wkv7_state.wgsl's delta rule). Cut each row's tokens into chunks of L (the last
// one may be shorter) and unroll the recurrence inside a chunk from its start state S0, with D_t[j] =
// prod_{u<=t} w_u[j] from the chunk's start (D_{-1} = 1):
//   e_t = S0 (D_{t-1} z_t) + sum_{u<t} (e_u Gz[t, u] + v_u Kz[t, u])
//   y_t = S0 (D_t r_t)     + sum_{u<=t} (e_u Br[t, u] + v_u Kr[t, u])
//   S_end = S0 diag(D_last) + sum_u (e_u (b_u D_last / D_u)^T + v_u (k_u D_last / D_u)^T)
//   Gz[t, u] = (b_u D_{t-1} / D_u) . z_t,  Kz the same with k_u;  Br[t, u] = (b_u D_t / D_u) . r_t,  Kr with k_u
// The four L x L matrices are the same for every state row: the workgroup computes them once a chunk, all
// pairs at once; what stays sequential is e's forward substitution, L^2 / 2 scalar multiply-adds a lane,
// and the walk over the row's chunks (len / L steps, not len; 4 barriers a chunk instead of one a token).
// One workgroup per (head, row), as the scan: this form removes the scan's per-token chain (a barrier and
// 5 x 16 vec4 workgroup reads per token, each token's arithmetic waiting on the last one's update) but adds
// no workgroups. A lane's work a token: 2 N multiply-adds for its dots with D_{t-1} z_t and D_t r_t, 2 N for
// the rank-one updates of the chunk's end state, ~2 L for the triangle, against the scan's 5 N, but
// independent across t (ILP instead of a chain); plus the pairs, ~L^2 / 2 x N channels x 2 exps and 6
// multiplies shared by the workgroup (~16 exps and ~48 multiplies a lane a token at L = 16).
// Why not a form parallel across chunks too (the chunk's transition in WY form, a scan over chunks, then
// the outputs, as wkv6_chunk_*): its scan over chunks still costs 2 N^2 L a chunk (S0 times the chunk's
// transition, against the token scan's 5 N^2 L), and it needs an [N, N] state and [L, N] vectors per chunk
// in scratch; this one needs none.
// It is the next step if a GPU shows this pass still bound by its heads x rows workgroups.
// Decays: v7's w = exp(-e^-0.5 sigmoid(.)) lies in (0.545, 1), so log w never meets 0; still, every product
// of decays is taken as exp of a difference of cumulative log sums over exactly its range (ratios D_t / D_u
// with u <= t, never above 1), so nothing overflows or divides by a small product.
// L = CHUNK_LEN (wkv7_chunk.py): workgroup memory 5 L (N + 4) + 4 L^2 floats (+ wkv7_state.wgsl's 1.25 KiB)
// = 26.5 KiB at 16, within lavapipe's 32 KiB (hence at most 16); tokens past a short chunk's end are held
// as w = 1 and r = k = z = b = v = 0, which leave e, S and the stored y as they are.
#include "common.wgsl"

@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(2) var<storage, read> rkv: array<f32>;  // [4, T_MAX, C]: r, k, v, w (wkv7_pre)
@group(0) @binding(9) var<storage, read> ext: array<f32>;  // [3, T_MAX, C]: kk, kk * a, g
@group(0) @binding(10) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> out: array<f32>;  // [T_MAX, C] y

const BUFFERS: u32 = 1u;  // wkv7_state.wgsl's token buffers (unused here)
const L: u32 = {{CHUNK_LEN}}u;

#include "wkv7_common.wgsl"
#include "wkv7_state.wgsl"

// [t][j]: rows of 16 vec4 padded to 17, so lanes reading different rows t, u at once hit different banks.
// Loaded raw, then (after the pairs) decayed in place: z -> D_{t-1} z, r -> D_t r, b, k -> b, k D_last / D_t.
var<workgroup> ch_z: array<array<vec4<f32>, 17>, L>;
var<workgroup> ch_r: array<array<vec4<f32>, 17>, L>;
var<workgroup> ch_b: array<array<vec4<f32>, 17>, L>;
var<workgroup> ch_k: array<array<vec4<f32>, 17>, L>;
var<workgroup> ch_cum: array<array<vec4<f32>, 17>, L>;  // log D_t; row L - 1 then D_last itself
var<workgroup> ch_gz: array<array<f32, L>, L>;  // [t][u], u < t
var<workgroup> ch_kz: array<array<f32, L>, L>;
var<workgroup> ch_br: array<array<f32, L>, L>;  // [t][u], u <= t
var<workgroup> ch_kr: array<array<f32, L>, L>;
var<workgroup> row_len: u32;

// The pair p of the lower triangle with its diagonal, numbered row after row: (t, u), p = t (t + 1) / 2 + u.
fn pair(p: u32) -> vec2<u32> {
    var t = u32((sqrt(8.0 * f32(p) + 1.0) - 1.0) * 0.5);  // then corrected for the float's rounding
    if (t * (t + 1u) / 2u > p) {
        t -= 1u;
    }
    if ((t + 1u) * (t + 2u) / 2u <= p) {
        t += 1u;
    }
    return vec2<u32>(t, p - t * (t + 1u) / 2u);
}

// Gz, Kz (u < t), Br, Kr of pair (t, u): 64-channel sums with the pairwise decays.
fn pair_sums(t: u32, u: u32) {
    var br = vec4<f32>(0.0);
    var kr = vec4<f32>(0.0);
#unroll J 16
    {
        let rd = ch_r[t][{{J}}] * exp(ch_cum[t][{{J}}] - ch_cum[u][{{J}}]);
        br += ch_b[u][{{J}}] * rd;
        kr += ch_k[u][{{J}}] * rd;
    }
#end
    ch_br[t][u] = br.x + br.y + br.z + br.w;
    ch_kr[t][u] = kr.x + kr.y + kr.z + kr.w;
    if (u < t) {
        var gz = vec4<f32>(0.0);
        var kz = vec4<f32>(0.0);
#unroll J 16
        {
            let zd = ch_z[t][{{J}}] * exp(ch_cum[t - 1u][{{J}}] - ch_cum[u][{{J}}]);
            gz += ch_b[u][{{J}}] * zd;
            kz += ch_k[u][{{J}}] * zd;
        }
#end
        ch_gz[t][u] = gz.x + gz.y + gz.z + gz.w;
        ch_kz[t][u] = kz.x + kz.y + kz.z + kz.w;
    }
}

// Lane j decays channel j of the chunk's vectors in place (only its own column: no barrier inside).
fn decay_vectors(j4: u32, jj: u32) {
    let last = ch_cum[L - 1u][j4][jj];
    var before = 0.0;  // log D_{t-1}
    for (var t = 0u; t < L; t++) {
        let cum = ch_cum[t][j4][jj];
        ch_z[t][j4][jj] *= exp(before);
        ch_r[t][j4][jj] *= exp(cum);
        ch_b[t][j4][jj] *= exp(last - cum);
        ch_k[t][j4][jj] *= exp(last - cum);
        before = cum;
    }
    ch_cum[L - 1u][j4][jj] = exp(last);
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let row = rows[wg.y];
    if (i == 0u) {
        row_len = row.len;
    }
    let len = workgroupUniformLoad(&row_len);
    let c = wg.x * N + i;
    let i4 = i / 4u;
    let ii = i % 4u;
    let at = state_row(row.slot, c);
    var s: array<vec4<f32>, 16>;  // row i of the state
    load_state(&s, at);
    var v: array<f32, L>;  // v_t[i]: lane i's value, its own row's
    var e: array<f32, L>;  // e_t[i]
    for (var first = 0u; first < len; first += L) {
        let n = min(L, len - first);
        // 1. lane i, as channel i, shares its r, k, z, b and log D_t (unrolled: every load issued at once)
        var cum = 0.0;
#unroll T CHUNK_LEN
        {
            var r = 0.0;
            var k = 0.0;
            var z = 0.0;
            var b = 0.0;
            v[{{T}}] = 0.0;
            if ({{T}}u < n) {
                let tc = (row.start + first + {{T}}u) * C + c;
                r = rkv[tc];
                k = rkv[TC + tc];
                v[{{T}}] = rkv[2u * TC + tc];
                cum += log(rkv[3u * TC + tc]);
                z = -ext[tc];
                b = ext[TC + tc];
            }
            ch_r[{{T}}][i4][ii] = r;
            ch_k[{{T}}][i4][ii] = k;
            ch_z[{{T}}][i4][ii] = z;
            ch_b[{{T}}][i4][ii] = b;
            ch_cum[{{T}}][i4][ii] = cum;
        }
#end
        workgroupBarrier();
        // 2. the matrices, pairs shared out over the lanes
        for (var p = i; p < L * (L + 1u) / 2u; p += 64u) {
            let tu = pair(p);
            pair_sums(tu.x, tu.y);
        }
        workgroupBarrier();
        // 3.
        decay_vectors(i4, ii);
        workgroupBarrier();
        // 4. lane i, as state row i: e and y token after token, then the row's state at the chunk's end
        for (var t = 0u; t < L; t++) {
            var e0 = vec4<f32>(0.0);
            var y0 = vec4<f32>(0.0);
#unroll J 16
            e0 += s[{{J}}] * ch_z[t][{{J}}];
            y0 += s[{{J}}] * ch_r[t][{{J}}];
#end
            var et = e0.x + e0.y + e0.z + e0.w;
            for (var u = 0u; u < t; u++) {
                et += e[u] * ch_gz[t][u] + v[u] * ch_kz[t][u];
            }
            e[t] = et;
            var yt = y0.x + y0.y + y0.z + y0.w;
            for (var u = 0u; u <= t; u++) {
                yt += e[u] * ch_br[t][u] + v[u] * ch_kr[t][u];
            }
            if (t < n) {
                out[(row.start + first + t) * C + c] = yt;
            }
        }
#unroll J 16
        s[{{J}}] *= ch_cum[L - 1u][{{J}}];
#end
        for (var u = 0u; u < L; u++) {
#unroll J 16
            s[{{J}}] += e[u] * ch_b[u][{{J}}] + v[u] * ch_k[u][{{J}}];
#end
        }
        workgroupBarrier();  // before the next chunk's vectors overwrite these
    }
    store_state(at, &s);
}
