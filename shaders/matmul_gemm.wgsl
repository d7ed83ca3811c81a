// Same contract as matmul.wgsl, for many tokens (prefill, batched decode): a BM-row x BT-token tile per
// workgroup, K in stages of BK4 vec4s through workgroup memory, TM rows x TN tokens per invocation, so
// each weight is read once per BT tokens. The tile shape is a define (backend/gpu/matmul.py GemmTile
// picks it by the step's token count). Tiles never straddle segments; no LN input.
//
// Why it is shaped so:
// - each invocation keeps TM x TN sums and reads TM + TN vec4s of workgroup memory per vec4 of K: the
//   operand traffic per multiply-add falls as the invocation's tile grows;
// - workgroup rows are padded by one vec4 (PAD), so the invocations of a subgroup reading rows 80 bytes
//   apart hit distinct banks (unpadded 64-byte strides made four of them wait on one bank);
// - the next stage's weights and inputs are loaded into registers while this stage is multiplied, so
//   the global reads' latency hides behind arithmetic;
// - consecutive invocations own consecutive rows (ty = li % TYS), so their outputs are written together;
// - with KS > 1 (a step of 9-64 tokens has few tiles on a 2k-row weight), KS groups of invocations share a tile,
//   each multiplying every KS-th stage of K, and sum their partial tiles through workgroup memory at the
//   end: KS times the invocations on the same weights, and 1/KS of the stages one after another;
// - with SLICES > 1 (a weight of few tiles, such as a 2k-row projection of a 7k-wide K, at few tokens),
//   workgroup z multiplies only slice z of K and leaves its raw sums in `part` [SLICES, count, NROWS];
//   matmul_reduce.wgsl adds the slices in order and applies the epilogue. SLICES times the workgroups,
//   for one more dispatch and SLICES x count x NROWS floats written and read back;
// - with HALF (an opt-in tile, "...h" in AI00_GEMM; needs shader-f16, and only inputs a LayerNorm bounds), the
//   stages sit in workgroup memory as f16 and each invocation multiplies them with packed f16 fma into f16
//   pairs, added into its f32 sums once a stage (2 x BK4 products a pair): half the workgroup-memory
//   traffic, and GPUs that run f16 pairs at twice the f32 rate do the multiply-adds in half the
//   instructions, for about 1e-3 of relative error (f16's 11-bit significand over 2 x BK4 terms).
#if HALF
enable f16;
#endif
#include "common.wgsl"
#include "weights.wgsl"
#include "matmul_common.wgsl"

const BM: u32 = {{BM}}u;  // output rows per tile
const BT: u32 = {{BT}}u;  // tokens per tile
const BK4: u32 = {{BK4}}u;  // vec4s of K per stage
const PAD: u32 = BK4 + 1u;  // vec4s per row of a workgroup tile
const TM: u32 = {{TM}}u;  // rows per invocation
const TN: u32 = {{TN}}u;  // tokens per invocation
const TYS: u32 = {{TYS}}u;  // invocations along rows: row i of an invocation is ty + i * TYS
const TXS: u32 = {{TXS}}u;  // invocations along tokens: token j is tx + j * TXS
const KS: u32 = {{KS}}u;  // groups of invocations splitting K
const TPG: u32 = TYS * TXS;  // invocations per group
const NT: u32 = TPG * KS;
const SLICE_K4: u32 = {{SLICE_K4}}u;  // vec4s of K per workgroup z (K4 unless SLICED)

#if SLICED
@group(0) @binding(14) var<storage, read_write> part: array<f32>;  // [SLICES, count, NROWS] raw sums
#endif

var<workgroup> ws: array<{{WT}}, {{KS}} * {{BM}} * ({{BK4}} + 1)>;  // [KS][BM][PAD] weights of KS stages
var<workgroup> xs: array<{{WT}}, {{KS}} * {{BT}} * ({{BK4}} + 1)>;  // [KS][BT][PAD] inputs of KS stages
#if SPLIT_K
var<workgroup> partial: array<vec4<f32>, ({{KS}} - 1) * {{BM}} * {{BT}} / 4>;  // groups 1.. KS-1's sums
#endif

// flat index i of KS stages' [KS][n][BK4] block (n rows or tokens): its place in the padded tiles
fn slot(i: u32, n: u32) -> u32 {
    let s = i / (n * BK4);
    let j = i % (n * BK4);
    return (s * n + j / BK4) * PAD + j % BK4;
}

// its place in K, in vec4s from the first of the KS stages
fn k_of(i: u32, n: u32) -> u32 {
    return (i / (n * BK4)) * BK4 + i % BK4;
}

fn load_w(i: u32, o0: u32, k0: u32) -> vec4<f32> {
    let o = min(o0 + (i % (BM * BK4)) / BK4, NROWS - 1u);
    return w4(o * K4 + k0 + k_of(i, BM));
}

fn load_x(i: u32, xb: u32, t0: u32, last: u32, k0: u32) -> vec4<f32> {
    let t = min(t0 + (i % (BT * BK4)) / BK4, last);
    return x[xb + t * X_ROW + k0 + k_of(i, BT)];
}

@compute @workgroup_size({{WGS}})
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let o0 = wg.x * BM;
    let t0 = wg.y * BT;
    let count = dims.{{COUNT}};
    let last = max(count, 1u) - 1u;
    let xb = x_base(min(o0, NROWS - 1u), 0u);
    let g = li / TPG;  // this invocation's group: stages g, g + KS, ...
    let ty = (li % TPG) % TYS;
    let tx = (li % TPG) / TYS;
    let wg0 = g * BM * PAD;
    let xg0 = g * BT * PAD;
    let kb = wg.z * SLICE_K4;  // this workgroup's slice of K: [kb, ke)
    let ke = kb + SLICE_K4;
#unroll L LW
    var pw{{L}} = load_w(li + {{L}}u * NT, o0, kb);
#end
#unroll L LX
    var px{{L}} = load_x(li + {{L}}u * NT, xb, t0, last, kb);
#end
    // accIa[j]: row ty + I * TYS, token tx + j * TXS (b: tokens 4..7); vectors, not arrays (arrays spill)
#unroll I TM
    var acc{{I}}a = vec4<f32>(0.0);
#if TN8
    var acc{{I}}b = vec4<f32>(0.0);
#endif
#if HALF
    // hI_j: row ty + I * TYS, token tx + j * TXS: this stage's products, in two f16 lanes
    var h{{I}}_0 = vec2<f16>(0.0);
    var h{{I}}_1 = vec2<f16>(0.0);
    var h{{I}}_2 = vec2<f16>(0.0);
    var h{{I}}_3 = vec2<f16>(0.0);
#if TN8
    var h{{I}}_4 = vec2<f16>(0.0);
    var h{{I}}_5 = vec2<f16>(0.0);
    var h{{I}}_6 = vec2<f16>(0.0);
    var h{{I}}_7 = vec2<f16>(0.0);
#endif
#endif
#end
    for (var k0 = kb; k0 < ke; k0 += KS * BK4) {
#unroll L LW
        ws[slot(li + {{L}}u * NT, BM)] = {{WT}}(pw{{L}});
#end
#unroll L LX
        xs[slot(li + {{L}}u * NT, BT)] = {{WT}}(px{{L}});
#end
        workgroupBarrier();
        if (k0 + KS * BK4 < ke) {
#unroll L LW
            pw{{L}} = load_w(li + {{L}}u * NT, o0, k0 + KS * BK4);
#end
#unroll L LX
            px{{L}} = load_x(li + {{L}}u * NT, xb, t0, last, k0 + KS * BK4);
#end
        }
        for (var kc = 0u; kc < BK4; kc++) {
            let x0 = xs[xg0 + tx * PAD + kc];
            let x1 = xs[xg0 + (tx + TXS) * PAD + kc];
            let x2 = xs[xg0 + (tx + 2u * TXS) * PAD + kc];
            let x3 = xs[xg0 + (tx + 3u * TXS) * PAD + kc];
#if TN8
            let x4 = xs[xg0 + (tx + 4u * TXS) * PAD + kc];
            let x5 = xs[xg0 + (tx + 5u * TXS) * PAD + kc];
            let x6 = xs[xg0 + (tx + 6u * TXS) * PAD + kc];
            let x7 = xs[xg0 + (tx + 7u * TXS) * PAD + kc];
#endif
#unroll I TM
            let w{{I}} = ws[wg0 + (ty + {{I}}u * TYS) * PAD + kc];
#if HALF
            h{{I}}_0 = fma(w{{I}}.zw, x0.zw, fma(w{{I}}.xy, x0.xy, h{{I}}_0));
            h{{I}}_1 = fma(w{{I}}.zw, x1.zw, fma(w{{I}}.xy, x1.xy, h{{I}}_1));
            h{{I}}_2 = fma(w{{I}}.zw, x2.zw, fma(w{{I}}.xy, x2.xy, h{{I}}_2));
            h{{I}}_3 = fma(w{{I}}.zw, x3.zw, fma(w{{I}}.xy, x3.xy, h{{I}}_3));
#if TN8
            h{{I}}_4 = fma(w{{I}}.zw, x4.zw, fma(w{{I}}.xy, x4.xy, h{{I}}_4));
            h{{I}}_5 = fma(w{{I}}.zw, x5.zw, fma(w{{I}}.xy, x5.xy, h{{I}}_5));
            h{{I}}_6 = fma(w{{I}}.zw, x6.zw, fma(w{{I}}.xy, x6.xy, h{{I}}_6));
            h{{I}}_7 = fma(w{{I}}.zw, x7.zw, fma(w{{I}}.xy, x7.xy, h{{I}}_7));
#endif
#else
            acc{{I}}a += vec4<f32>(dot(w{{I}}, x0), dot(w{{I}}, x1), dot(w{{I}}, x2), dot(w{{I}}, x3));
#if TN8
            acc{{I}}b += vec4<f32>(dot(w{{I}}, x4), dot(w{{I}}, x5), dot(w{{I}}, x6), dot(w{{I}}, x7));
#endif
#endif
#end
        }
#if HALF
        // the stage's f16 products into the f32 sums (so f16 never sums more than 2 x BK4 terms)
#unroll I TM
        acc{{I}}a += vec4<f32>(sum2(h{{I}}_0), sum2(h{{I}}_1), sum2(h{{I}}_2), sum2(h{{I}}_3));
        h{{I}}_0 = vec2<f16>(0.0);
        h{{I}}_1 = vec2<f16>(0.0);
        h{{I}}_2 = vec2<f16>(0.0);
        h{{I}}_3 = vec2<f16>(0.0);
#if TN8
        acc{{I}}b += vec4<f32>(sum2(h{{I}}_4), sum2(h{{I}}_5), sum2(h{{I}}_6), sum2(h{{I}}_7));
        h{{I}}_4 = vec2<f16>(0.0);
        h{{I}}_5 = vec2<f16>(0.0);
        h{{I}}_6 = vec2<f16>(0.0);
        h{{I}}_7 = vec2<f16>(0.0);
#endif
#end
#endif
        workgroupBarrier();
    }
#if SPLIT_K
    // groups 1.. KS-1 leave their sums; group 0 adds them and writes the outputs
    let p0 = (li % TPG) * TM * (TN / 4u);
    let pstride = TPG * TM * (TN / 4u);
    if (g > 0u) {
#unroll I TM
        partial[(g - 1u) * pstride + p0 + {{I}}u * (TN / 4u)] = acc{{I}}a;
#if TN8
        partial[(g - 1u) * pstride + p0 + {{I}}u * 2u + 1u] = acc{{I}}b;
#endif
#end
    }
    workgroupBarrier();
    if (g > 0u) {
        return;
    }
    for (var h = 0u; h + 1u < KS; h++) {
#unroll I TM
        acc{{I}}a += partial[h * pstride + p0 + {{I}}u * (TN / 4u)];
#if TN8
        acc{{I}}b += partial[h * pstride + p0 + {{I}}u * 2u + 1u];
#endif
#end
    }
#endif
#unroll I TM
    store4(o0 + ty + {{I}}u * TYS, t0 + tx, count, wg.z, acc{{I}}a);
#if TN8
    store4(o0 + ty + {{I}}u * TYS, t0 + tx + 4u * TXS, count, wg.z, acc{{I}}b);
#endif
#end
}

#if HALF
fn sum2(h: vec2<f16>) -> f32 {
    return f32(h.x) + f32(h.y);
}
#endif

// row o, tokens t, t + TXS, t + 2 TXS, t + 3 TXS: finished, or (SLICED) slice z's raw sums
fn store4(o: u32, t: u32, count: u32, z: u32, acc: vec4<f32>) {
    if (o >= NROWS) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (t + TXS * j < count) {
#if SLICED
            part[(z * count + t + TXS * j) * NROWS + o] = acc[j];
#else
            finish(o, t + TXS * j, acc[j]);
#endif
        }
    }
}
