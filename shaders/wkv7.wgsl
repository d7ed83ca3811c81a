// RWKV-7 time mixing for one (head h, row b): runs the row's tokens through the
// generalised delta rule and writes the gated, group-normed output.
// State S [N(value i), N(key j)] per head:  S = S diag(w) + (S (-kk)) (kk*a)^T + v k^T;  y = S r
// Invocation i owns state row i as 16 vec4 (unrolled: constant indices stay in registers).
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
@group(0) @binding(9) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read_write> out: array<f32>;  // [T_MAX, C]
#if MIX_V
@group(0) @binding(11) var<storage, read> vg_in: array<f32>;  // [T_MAX, C] sigmoid(v0 + lora)
#endif

#include "head_reduce.wgsl"

const N: u32 = 64u;
const C: u32 = {{C}}u;
const TC: u32 = {{T_MAX}}u * {{C}}u;
const S4: u32 = {{S}}u / 4u;
const REC4: u32 = {{REC}}u / 4u;

var<workgroup> sh_r: array<vec4<f32>, 16>;
var<workgroup> sh_w: array<vec4<f32>, 16>;
var<workgroup> sh_k: array<vec4<f32>, 16>;
var<workgroup> sh_kk: array<vec4<f32>, 16>;
var<workgroup> sh_b: array<vec4<f32>, 16>;
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
        sh_r[i / 4u][i % 4u] = r;
        sh_w[i / 4u][i % 4u] = exp(-0.606531 * sigmoid(w_in[tc]));  // 0.606531 = exp(-0.5)
        sh_k[i / 4u][i % 4u] = k;
        sh_kk[i / 4u][i % 4u] = kk;
        sh_b[i / 4u][i % 4u] = kk * a;
        workgroupBarrier();
        var sa = 0.0;
#unroll J 16
        sa -= dot(s[{{J}}], sh_kk[{{J}}]);
#end
        var y = 0.0;
#unroll J 16
        s[{{J}}] = s[{{J}}] * sh_w[{{J}}] + sa * sh_b[{{J}}] + v * sh_k[{{J}}];
        y += dot(s[{{J}}], sh_r[{{J}}]);
#end
        // group norm over the head, then the r.k bonus, then the gate
        let mean = head_sum(y, i) / f32(N);
        let d = y - mean;
        let variance = head_sum(d * d, i) / f32(N);
        var o = d * inverseSqrt(variance + 64e-5) * ln_x[c] + ln_x[C + c];
        o += head_sum(r * k * params[2u * C + c], i) * v;
        out[tc] = o * g_in[tc];
    }
#unroll J 16
    state[base + {{J}}u] = s[{{J}}];
#end
}
