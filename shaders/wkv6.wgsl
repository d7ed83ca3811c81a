// RWKV-5/6 time mixing for one (head h, row b). State S [N(key i), N(value j)] per head:
//   y_j = sum_i r_i (u_i k_i v_j + S_ij);   S_ij = k_i v_j + w_i S_ij,   w = exp(-exp(decay))
// then group norm over the head and (GATE) the silu gate. Invocation j owns channel c = h N + j and
// state column j as 16 vec4 over i (unrolled: constant indices stay in registers). DECAY_LORA (v6):
// decay = decay[c] + hidden[t] . decay_w2[c], the second stage of the decay LoRA, done here.
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(2) var<storage, read> rkv: array<f32>;    // [4, T_MAX, C]: r, k, v, gate; [T_MAX, LW] hidden
@group(0) @binding(3) var<storage, read> decay: array<f32>;  // [C]
@group(0) @binding(4) var<storage, read> u: array<f32>;      // [C] bonus
@group(0) @binding(5) var<storage, read> ln_x: array<f32>;   // [2, C]: weight, bias
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;  // [T_MAX, C]
#if DECAY_LORA
@group(0) @binding(8) var<storage, read> decay_w2: array<f32>;  // [C, D]
#endif

#include "head_reduce.wgsl"

const N: u32 = 64u;
const C: u32 = {{C}}u;
const TC: u32 = {{T_MAX}}u * {{C}}u;
const S: u32 = {{S}}u;
const REC: u32 = {{REC}}u;
const LORA_BASE: u32 = {{LORA_BASE}}u;
const LW: u32 = {{LW}}u;  // hidden floats per token in rkv
const D: u32 = {{D}}u;

var<workgroup> sh_r: array<vec4<f32>, 16>;
var<workgroup> sh_k: array<vec4<f32>, 16>;
var<workgroup> sh_u: array<vec4<f32>, 16>;
var<workgroup> sh_w: array<vec4<f32>, 16>;
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
    sh_u[j / 4u][j % 4u] = u[c];
    for (var n = 0u; n < len; n++) {
        let tc = (row.start + n) * C + c;
        sh_r[j / 4u][j % 4u] = rkv[tc];
        sh_k[j / 4u][j % 4u] = rkv[TC + tc];
        var wd = decay[c];
#if DECAY_LORA
        let hb = LORA_BASE + (row.start + n) * LW;
        for (var q = 0u; q < D; q++) {
            wd += rkv[hb + q] * decay_w2[c * D + q];
        }
#endif
        sh_w[j / 4u][j % 4u] = exp(-exp(wd));
        let v = rkv[2u * TC + tc];
        workgroupBarrier();
        var y = 0.0;
#unroll I 16
        {
            let kv = sh_k[{{I}}] * v;
            y += dot(sh_r[{{I}}], sh_u[{{I}}] * kv + s[{{I}}]);
            s[{{I}}] = kv + sh_w[{{I}}] * s[{{I}}];
        }
#end
        let mean = head_sum(y, j) / f32(N);
        let d = y - mean;
        let variance = head_sum(d * d, j) / f32(N);
        var o = d * inverseSqrt(variance + 64e-5) * ln_x[c] + ln_x[C + c];
#if GATE
        o *= rkv[3u * TC + tc];
#endif
        out[tc] = o;
    }
#unroll I 16
    store4(base + {{I}}u * 4u * N, s[{{I}}]);
#end
}
