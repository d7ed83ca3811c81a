// RWKV-7 time mixing for long steps, part 1 of 3 (wkv7_pre, wkv7_scan, wkv7_post; wkv7.wgsl does all
// three per token for short steps): each token's inputs to the recurrence (wkv7_inputs.wgsl), for every
// token at once. One workgroup per (head h, PRE_TT tokens); invocation i owns channel c = h N + i and
// reads its lora2 row once for all the workgroup's tokens (a row per token made the lanes' scattered
// row reads 50 % of a 1,024-token v7 step on the H100, bench/NOTES.md entry 17).
// Writes the decay into rkv's fourth group, k and v in place, and kk, kk * a and g to `ext`.
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(2) var<storage, read_write> rkv: array<f32>;  // [4, T_MAX, C]: r, k, v, (w); then hidden
#if LORA4
@group(0) @binding(3) var<storage, read> lora2: array<vec4<f32>>;  // [C, L2 / 4]: as below, in vec4
#else
@group(0) @binding(3) var<storage, read> lora2: array<f32>;  // [C, L2]: per channel w2, a2, (v2,) g2 columns
#endif
@group(0) @binding(6) var<storage, read_write> v_first: array<f32>;  // [T_MAX, C] layer 0's v
@group(0) @binding(7) var<storage, read> params: array<f32>;  // [6, C]: k_k, k_a, r_k, w0, a0, v0
@group(0) @binding(9) var<storage, read_write> ext: array<f32>;  // [3, T_MAX, C]: kk, kk * a, g

#include "head_reduce.wgsl"
#include "wkv7_common.wgsl"
#include "wkv7_inputs.wgsl"

const TT: u32 = {{PRE_TT}}u;  // tokens per workgroup: each lane reads its lora2 row once for all of them

// dotJ = hidden[t0 + J][o .. o + n) . lora2[c, o .. o + n) for the workgroup's tokens; `lb`: c's lora2 row
#unroll J PRE_TT
var<private> dot{{J}}: f32;
#end

fn dots_of(hb0: u32, lb: u32, o: u32, n: u32) {
#unroll J PRE_TT
    dot{{J}} = 0.0;
#end
#if LORA4
    let l4 = (lb + o) / 4u;  // the row's vec4 (wkv7_inputs.wgsl's lora_dot says why)
    for (var q = 0u; q < n / 4u; q++) {
        let wv = lora2[l4 + q];
        let j = o + 4u * q;
#unroll J PRE_TT
        dot{{J}} += dot(hidden4(hb0 + {{J}}u * LW + j), wv);
#end
    }
#else
    for (var j = o; j < o + n; j++) {
        let wv = lora2[lb + j];
#unroll J PRE_TT
        dot{{J}} += rkv[hb0 + {{J}}u * LW + j] * wv;
#end
    }
#endif
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let c = wg.x * N + i;
    let t0 = wg.y * TT;
    let last = dims.T - 1u;
    // tokens past the step's last run as the last one (their head sums keep the barriers uniform) and
    // are not stored; their dots read whatever lies past the step's hidden layers
    let tn = min(TT, dims.T - t0);
    let hb0 = LORA_BASE + t0 * LW;
    let lb = c * L2;
#unroll J PRE_TT
    var d{{J}} = LoraDots(0.0, 0.0, 0.0, 0.0);
#end
    dots_of(hb0, lb, 0u, {{DW}}u);
#unroll J PRE_TT
    d{{J}}.w = dot{{J}};
#end
    dots_of(hb0, lb, {{OA}}u, {{DA}}u);
#unroll J PRE_TT
    d{{J}}.a = dot{{J}};
#end
#if MIX_V
    dots_of(hb0, lb, {{OV}}u, {{DV}}u);
#unroll J PRE_TT
    d{{J}}.v = dot{{J}};
#end
#endif
    dots_of(hb0, lb, {{OG}}u, {{DG}}u);
#unroll J PRE_TT
    d{{J}}.g = dot{{J}};
    store_token(min(t0 + {{J}}u, last), c, i, d{{J}}, {{J}}u < tn);
#end
}

fn store_token(t: u32, c: u32, i: u32, d: LoraDots, keep: bool) {
    let x = inputs_from(t, c, i, d);
    let tc = t * C + c;
    if (!keep) {
        return;
    }
#if MIX_V
    rkv[2u * TC + tc] = x.v;
#endif
    rkv[TC + tc] = x.k;
    rkv[3u * TC + tc] = x.w;
    ext[tc] = x.kk;
    ext[TC + tc] = x.b;
    ext[2u * TC + tc] = x.g;
}
