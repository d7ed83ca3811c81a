// RWKV-5/6 time mixing for one (head h, row b). State S [N(key i), N(value j)] per head:
//   y_j = sum_i r_i (u_i k_i v_j + S_ij);   S_ij = k_i v_j + w_i S_ij,   w = exp(-exp(decay))
// then group norm over the head and (GATE) the silu gate.
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(2) var<storage, read> rkv: array<f32>;    // [3, T_MAX, C]: r, k, v
@group(0) @binding(3) var<storage, read> decay: array<f32>;  // DECAY_PER_TOKEN ? [T_MAX, C] : [C]
@group(0) @binding(4) var<storage, read> u: array<f32>;      // [C] bonus
@group(0) @binding(5) var<storage, read> ln_x: array<f32>;   // [2, C]: weight, bias
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;  // [T_MAX, C]
#if GATE
@group(0) @binding(8) var<storage, read> g_in: array<f32>;   // [T_MAX, C] silu gate
#endif

#include "head_reduce.wgsl"

const N: u32 = {{N}}u;
const C: u32 = {{C}}u;
const TC: u32 = {{T_MAX}}u * {{C}}u;
const S: u32 = {{S}}u;
const REC: u32 = {{REC}}u;

var<workgroup> sh_r: array<f32, {{N}}>;
var<workgroup> sh_k: array<f32, {{N}}>;
var<workgroup> sh_u: array<f32, {{N}}>;
var<workgroup> sh_w: array<f32, {{N}}>;
var<workgroup> row_len: u32;

@compute @workgroup_size({{N}})
fn main(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let row = rows[wg.y];
    if (j == 0u) {
        row_len = row.len;
    }
    let len = workgroupUniformLoad(&row_len);
    let c = h * N + j;
    let base = row.slot * S + REC + h * N * N + j;  // S[h, i, j] at base + i * N
    var s: array<f32, {{N}}>;
    for (var i = 0u; i < N; i++) {
        s[i] = state[base + i * N];
    }
    sh_u[j] = u[c];
    for (var n = 0u; n < len; n++) {
        let tc = (row.start + n) * C + c;
        sh_r[j] = rkv[tc];
        sh_k[j] = rkv[TC + tc];
#if DECAY_PER_TOKEN
        sh_w[j] = exp(-exp(decay[tc]));
#else
        sh_w[j] = exp(-exp(decay[c]));
#endif
        let v = rkv[2u * TC + tc];
        workgroupBarrier();
        var y = 0.0;
        for (var i = 0u; i < N; i++) {
            let kv = sh_k[i] * v;
            y += sh_r[i] * (sh_u[i] * kv + s[i]);
            s[i] = kv + sh_w[i] * s[i];
        }
        let mean = head_sum(y, j) / f32(N);
        let d = y - mean;
        let variance = head_sum(d * d, j) / f32(N);
        var o = d * inverseSqrt(variance + 64e-5) * ln_x[c] + ln_x[C + c];
#if GATE
        o *= g_in[tc];
#endif
        out[tc] = o;
    }
    for (var i = 0u; i < N; i++) {
        state[base + i * N] = s[i];
    }
}
