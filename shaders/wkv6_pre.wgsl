// RWKV-6 time mixing for long steps, part 1 of 3 (wkv6_pre, wkv6_scan, wkv6_post; wkv6.wgsl does all
// three per token for short steps): the decay w = exp(-exp(decay + hidden[t] . decay_w2[c])) for every
// token at once, as wkv6_decay.wgsl computes it for one. One workgroup per (64 channels, PRE_TT tokens);
// each lane reads its channel's decay_w2 row once for all the workgroup's tokens (a row per token was
// most of this pass on the H100, bench/NOTES.md entry 17).
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(2) var<storage, read> rkv: array<f32>;    // [4, T_MAX, C]: r, k, v, gate; [T_MAX, LW] hidden
@group(0) @binding(3) var<storage, read> decay: array<f32>;  // [C]
#if LORA4
@group(0) @binding(8) var<storage, read> decay_w2: array<vec4<f32>>;  // [C, D / 4]
#else
@group(0) @binding(8) var<storage, read> decay_w2: array<f32>;  // [C, D]
#endif
@group(0) @binding(9) var<storage, read_write> ext: array<f32>;  // [T_MAX, C] w

#include "wkv6_common.wgsl"
#include "wkv6_decay.wgsl"

const TT: u32 = {{PRE_TT}}u;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let c = wg.x * N + i;
    let t0 = wg.y * TT;
    let tn = min(TT, dims.T - t0);  // the last block's tokens past the step read junk and are not stored
    let hb0 = LORA_BASE + t0 * LW;
#unroll J PRE_TT
    var wd{{J}} = decay[c];
#end
#if LORA4
    for (var q = 0u; q < D / 4u; q++) {  // the row as vec4 (wkv7_inputs.wgsl's lora_dot says why)
        let wv = decay_w2[c * (D / 4u) + q];
#unroll J PRE_TT
        wd{{J}} += dot(hidden4(hb0 + {{J}}u * LW + 4u * q), wv);
#end
    }
#else
    for (var q = 0u; q < D; q++) {
        let wv = decay_w2[c * D + q];
#unroll J PRE_TT
        wd{{J}} += rkv[hb0 + {{J}}u * LW + q] * wv;
#end
    }
#endif
#unroll J PRE_TT
    if ({{J}}u < tn) {
        ext[(t0 + {{J}}u) * C + c] = exp(-exp(wd{{J}}));
    }
#end
}
