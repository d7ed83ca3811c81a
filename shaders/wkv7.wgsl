// RWKV-7 time mixing for one (head h, row b): runs the row's tokens through the
// generalised delta rule and writes the gated, group-normed output.
// State S [N(value i), N(key j)] per head:  S = S diag(w) + (S (-kk)) (kk*a)^T + v k^T;  y = S r
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(2) var<storage, read> rkv: array<f32>;    // [3, T_MAX, C]: r, k, v
@group(0) @binding(3) var<storage, read> w_in: array<f32>;   // [T_MAX, C] w0 + lora (pre-sigmoid)
@group(0) @binding(4) var<storage, read> a_in: array<f32>;   // [T_MAX, C] sigmoid(a0 + lora)
@group(0) @binding(5) var<storage, read> g_in: array<f32>;   // [T_MAX, C] output gate
@group(0) @binding(6) var<storage, read_write> v_first: array<f32>;  // [T_MAX, C] layer 0's v
@group(0) @binding(7) var<storage, read> params: array<f32>;  // [4, C]: k_k, k_a, r_k, (unused)
@group(0) @binding(8) var<storage, read> ln_x: array<f32>;    // [2, C]: weight, bias
@group(0) @binding(9) var<storage, read_write> state: array<f32>;
@group(0) @binding(10) var<storage, read_write> out: array<f32>;  // [T_MAX, C]
#if MIX_V
@group(0) @binding(11) var<storage, read> vg_in: array<f32>;  // [T_MAX, C] sigmoid(v0 + lora)
#endif

#include "head_reduce.wgsl"

const N: u32 = {{N}}u;
const C: u32 = {{C}}u;
const TC: u32 = {{T_MAX}}u * {{C}}u;
const S: u32 = {{S}}u;
const REC: u32 = {{REC}}u;

var<workgroup> sh_r: array<f32, {{N}}>;
var<workgroup> sh_w: array<f32, {{N}}>;
var<workgroup> sh_k: array<f32, {{N}}>;
var<workgroup> sh_kk: array<f32, {{N}}>;
var<workgroup> sh_b: array<f32, {{N}}>;
var<workgroup> row_len: u32;

@compute @workgroup_size({{N}})
fn main(@builtin(local_invocation_index) i: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x;
    let row = rows[wg.y];
    if (i == 0u) {
        row_len = row.len;
    }
    let len = workgroupUniformLoad(&row_len);
    let c = h * N + i;
    let base = row.slot * S + REC + (h * N + i) * N;
    var s: array<f32, {{N}}>;
    for (var j = 0u; j < N; j++) {
        s[j] = state[base + j];
    }
    for (var n = 0u; n < len; n++) {
        let tc = (row.start + n) * C + c;
        let r = rkv[tc];
        let k_raw = rkv[TC + tc];
        var v = rkv[2u * TC + tc];
        let a = a_in[tc];
        let kk_raw = k_raw * params[c];
        let kk = kk_raw / max(sqrt(head_sum(kk_raw * kk_raw, i)), 1e-12);
        let k = k_raw * (1.0 + (a - 1.0) * params[C + c]);
#if MIX_V
        v = v + (v_first[tc] - v) * vg_in[tc];
#else
        v_first[tc] = v;
#endif
        sh_r[i] = r;
        sh_w[i] = exp(-0.606531 * sigmoid(w_in[tc]));  // 0.606531 = exp(-0.5)
        sh_k[i] = k;
        sh_kk[i] = kk;
        sh_b[i] = kk * a;
        workgroupBarrier();
        var sa = 0.0;
        for (var j = 0u; j < N; j++) {
            sa -= s[j] * sh_kk[j];
        }
        var y = 0.0;
        for (var j = 0u; j < N; j++) {
            s[j] = s[j] * sh_w[j] + sa * sh_b[j] + v * sh_k[j];
            y += s[j] * sh_r[j];
        }
        // group norm over the head, then the r.k bonus, then the gate
        let mean = head_sum(y, i) / f32(N);
        let d = y - mean;
        let variance = head_sum(d * d, i) / f32(N);
        var o = d * inverseSqrt(variance + 64e-5) * ln_x[c] + ln_x[C + c];
        o += head_sum(r * k * params[2u * C + c], i) * v;
        out[tc] = o * g_in[tc];
    }
    for (var j = 0u; j < N; j++) {
        state[base + j] = s[j];
    }
}
