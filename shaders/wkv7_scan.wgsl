// RWKV-7 time mixing for long steps, part 2 of 3: the state recurrence alone, per (head h, row b),
// token after token:  S = S diag(w) + (S (-kk)) (kk*a)^T + v k^T;  y = S r  (y before its group norm).
// Invocation i owns state row i as 16 vec4 (registers). The per-token vectors go through workgroup
// memory, double-buffered so one barrier per token suffices; the next token's loads are issued
// before this token's arithmetic so their latency hides behind it.
#include "common.wgsl"

@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(2) var<storage, read> rkv: array<f32>;  // [4, T_MAX, C]: r, k, v, w (wkv7_pre)
@group(0) @binding(9) var<storage, read> ext: array<f32>;  // [3, T_MAX, C]: kk, kk * a, g
@group(0) @binding(10) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> out: array<f32>;  // [T_MAX, C] y

const N: u32 = 64u;
const C: u32 = {{C}}u;
const TC: u32 = {{T_MAX}}u * {{C}}u;
const S4: u32 = {{S}}u / 4u;
const REC4: u32 = {{REC}}u / 4u;

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

var<workgroup> sh_r: array<array<vec4<f32>, 16>, 2>;
var<workgroup> sh_w: array<array<vec4<f32>, 16>, 2>;
var<workgroup> sh_k: array<array<vec4<f32>, 16>, 2>;
var<workgroup> sh_kk: array<array<vec4<f32>, 16>, 2>;
var<workgroup> sh_b: array<array<vec4<f32>, 16>, 2>;
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
    let base = row.slot * S4 + REC4 + (h * N + i) * 16u;
    var s: array<vec4<f32>, 16>;
#unroll J 16
    s[{{J}}] = state[base + {{J}}u];
#end
    var next = inputs(row.start * C + c);
    for (var n = 0u; n < len; n++) {
        let p = n & 1u;
        let cur = next;
        sh_r[p][i / 4u][i % 4u] = cur.r;
        sh_w[p][i / 4u][i % 4u] = cur.w;
        sh_k[p][i / 4u][i % 4u] = cur.k;
        sh_kk[p][i / 4u][i % 4u] = cur.kk;
        sh_b[p][i / 4u][i % 4u] = cur.b;
        workgroupBarrier();
        if (n + 1u < len) {
            next = inputs((row.start + n + 1u) * C + c);
        }
        var sa = 0.0;
#unroll J 16
        sa -= dot(s[{{J}}], sh_kk[p][{{J}}]);
#end
        var y = 0.0;
#unroll J 16
        s[{{J}}] = s[{{J}}] * sh_w[p][{{J}}] + sa * sh_b[p][{{J}}] + cur.v * sh_k[p][{{J}}];
        y += dot(s[{{J}}], sh_r[p][{{J}}]);
#end
        out[(row.start + n) * C + c] = y;
    }
#unroll J 16
    state[base + {{J}}u] = s[{{J}}];
#end
}
