// RWKV-6 time mixing for long steps, part 1 of 3 (wkv6_pre, wkv6_scan, wkv6_post; wkv6.wgsl does all
// three per token for short steps): the decay LoRA's second stage for every token at once,
//   w[t, c] = exp(-exp(decay[c] + hidden[t] . decay_w2[:, c]))
// One workgroup per (64 channels, token t); each lane reads its channel's decay_w2 row.

@group(0) @binding(2) var<storage, read> rkv: array<f32>;    // [4, T_MAX, C]: r, k, v, gate; [T_MAX, LW] hidden
@group(0) @binding(3) var<storage, read> decay: array<f32>;  // [C]
@group(0) @binding(8) var<storage, read> decay_w2: array<f32>;  // [C, D]
@group(0) @binding(9) var<storage, read_write> ext: array<f32>;  // [T_MAX, C] w

const C: u32 = {{C}}u;
const LORA_BASE: u32 = {{LORA_BASE}}u;
const LW: u32 = {{LW}}u;  // hidden floats per token in rkv
const D: u32 = {{D}}u;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let c = wg.x * 64u + i;
    let t = wg.y;
    let hb = LORA_BASE + t * LW;
    var wd = decay[c];
    for (var q = 0u; q < D; q++) {
        wd += rkv[hb + q] * decay_w2[c * D + q];
    }
    ext[t * C + c] = exp(-exp(wd));
}
