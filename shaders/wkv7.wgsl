// RWKV-7 time mixing for one (head h, row b): runs the row's tokens through the
// generalised delta rule and writes the gated, group-normed output.
// State S [N(value i), N(key j)] per head:  S = S diag(w) + (S (-kk)) (kk*a)^T + v k^T;  y = S r
// Invocation i owns channel c = h N + i and state row i as 16 vec4 (unrolled: constant indices stay
// in registers). It also does the second stage of the w, a, v-mix and g LoRAs for its channel
// (a dot product with the token's hidden layer, which the projection dispatch wrote after r, k, v).
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(2) var<storage, read> rkv: array<f32>;    // [4, T_MAX, C]: r, k, v, -; then [T_MAX, LW] hidden
@group(0) @binding(3) var<storage, read> lora2: array<f32>;  // [C, L2]: per channel w2, a2, (v2,) g2 columns
@group(0) @binding(6) var<storage, read_write> v_first: array<f32>;  // [T_MAX, C] layer 0's v
@group(0) @binding(7) var<storage, read> params: array<f32>;  // [6, C]: k_k, k_a, r_k, w0, a0, v0
@group(0) @binding(8) var<storage, read> ln_x: array<f32>;    // [2, C]: weight, bias
@group(0) @binding(9) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read_write> out: array<f32>;  // [T_MAX, C]

#include "head_reduce.wgsl"

const N: u32 = 64u;
const C: u32 = {{C}}u;
const TC: u32 = {{T_MAX}}u * {{C}}u;
const S4: u32 = {{S}}u / 4u;
const REC4: u32 = {{REC}}u / 4u;
const LORA_BASE: u32 = {{LORA_BASE}}u;
const LW: u32 = {{LW}}u;  // hidden floats per token in rkv
const L2: u32 = {{L2}}u;  // lora2 floats per channel

// hidden[o .. o + n) . lora2[c, o .. o + n)
fn lora_dot(hb: u32, c: u32, o: u32, n: u32) -> f32 {
    let lb = c * L2;
    var acc = 0.0;
    for (var j = o; j < o + n; j++) {
        acc += rkv[hb + j] * lora2[lb + j];
    }
    return acc;
}

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
        let hb = LORA_BASE + (row.start + n) * LW;
        let w_in = params[3u * C + c] + lora_dot(hb, c, 0u, {{DW}}u);
        let a = sigmoid(params[4u * C + c] + lora_dot(hb, c, {{OA}}u, {{DA}}u));
        let g = lora_dot(hb, c, {{OG}}u, {{DG}}u);
        let kk_raw = k_raw * params[c];
        let kk = kk_raw / max(sqrt(head_sum(kk_raw * kk_raw, i)), 1e-12);
        let k = k_raw * (1.0 + (a - 1.0) * params[C + c]);
#if MIX_V
        let v_gate = sigmoid(params[5u * C + c] + lora_dot(hb, c, {{OV}}u, {{DV}}u));
        v = v + (v_first[tc] - v) * v_gate;
#else
        v_first[tc] = v;
#endif
        sh_r[i / 4u][i % 4u] = r;
        sh_w[i / 4u][i % 4u] = exp(-0.606531 * sigmoid(w_in));  // 0.606531 = exp(-0.5)
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
        out[tc] = o * g;
    }
#unroll J 16
    state[base + {{J}}u] = s[{{J}}];
#end
}
