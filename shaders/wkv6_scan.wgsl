// RWKV-5/6 time mixing for long steps, part 2 of 3: the state recurrence alone, per (head h, row b),
// token after token:  y_j = sum_i r_i S_ij;  S_ij = k_i v_j + w_i S_ij  (y before the bonus
// v_j sum_i r_i u_i k_i and the group norm, which wkv6_post adds for every token at once).
// Invocation j owns state column j as 16 vec4 over i (registers). r, k and w go through workgroup
// memory, double-buffered so one barrier per token suffices; the next token's loads are issued before
// this token's arithmetic so their latency hides behind it. DECAY_LORA (v6): w per token from
// wkv6_pre; else (v5) exp(-exp(decay[c])) for every token.
#include "common.wgsl"

@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(2) var<storage, read> rkv: array<f32>;  // [4, T_MAX, C]: r, k, v, gate
#if DECAY_LORA
@group(0) @binding(9) var<storage, read> ext: array<f32>;  // [T_MAX, C] w (wkv6_pre)
#else
@group(0) @binding(3) var<storage, read> decay: array<f32>;  // [C]
#endif
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;  // [T_MAX, C] y

const N: u32 = 64u;
const C: u32 = {{C}}u;
const TC: u32 = {{T_MAX}}u * {{C}}u;
const S: u32 = {{S}}u;
const REC: u32 = {{REC}}u;

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

var<workgroup> sh_r: array<array<vec4<f32>, 16>, 2>;
var<workgroup> sh_k: array<array<vec4<f32>, 16>, 2>;
var<workgroup> sh_w: array<array<vec4<f32>, 16>, 2>;
var<workgroup> row_len: u32;

fn load4(at: u32) -> vec4<f32> {  // S[i .. i+4, j] sits N floats apart
    return vec4<f32>(state[at], state[at + N], state[at + 2u * N], state[at + 3u * N]);
}

fn store4(at: u32, v: vec4<f32>) {
    state[at] = v.x;
    state[at + N] = v.y;
    state[at + 2u * N] = v.z;
    state[at + 3u * N] = v.w;
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let row = rows[wg.y];
    if (j == 0u) {
        row_len = row.len;
    }
    let len = workgroupUniformLoad(&row_len);
    let c = h * N + j;
    let base = row.slot * S + REC + h * N * N + j;  // S[h, i, j] at base + i * N
    var s: array<vec4<f32>, 16>;
#unroll I 16
    s[{{I}}] = load4(base + {{I}}u * 4u * N);
#end
#if DECAY_LORA
#else
    let w = exp(-exp(decay[c]));  // constant: both halves once, read by every token
    sh_w[0][j / 4u][j % 4u] = w;
    sh_w[1][j / 4u][j % 4u] = w;
#endif
    var next = inputs(row.start * C + c);
    for (var n = 0u; n < len; n++) {
        let p = n & 1u;
        let tc = (row.start + n) * C + c;
        let cur = next;
        sh_r[p][j / 4u][j % 4u] = cur.r;
        sh_k[p][j / 4u][j % 4u] = cur.k;
#if DECAY_LORA
        sh_w[p][j / 4u][j % 4u] = cur.w;
#endif
        workgroupBarrier();
        if (n + 1u < len) {
            next = inputs(tc + C);
        }
        var y = 0.0;
#unroll I 16
        y += dot(sh_r[p][{{I}}], s[{{I}}]);
        s[{{I}}] = sh_k[p][{{I}}] * cur.v + sh_w[p][{{I}}] * s[{{I}}];
#end
        out[tc] = y;
    }
#unroll I 16
    store4(base + {{I}}u * 4u * N, s[{{I}}]);
#end
}
