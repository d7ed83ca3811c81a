// RWKV-5/6 time mixing for long steps, chunked form (wkv6_chunk.wgsl), pass 3 of 3: per (head h, chunk g),
// every token's y (before the bonus, group norm and gate that wkv6_post adds), into `out`:
//   y[t, j] = sum_{s<t} a[t, s] v[s, j]  +  sum_i r[t, i] (prod_{u<t} w[u, i]) S0[i, j]
//   a[t, s] = sum_i r[t, i] k[s, i] prod_{u=s+1}^{t-1} w[u, i]
// S0 is the chunk's starting state (wkv6_chunk_scan). In four steps, barriers between them:
// 1. lane j, as channel i = j, puts r, k and cum[t] = sum_{u<=t} log w[u, i] (from the chunk's start) in
//    workgroup memory; 2. the lanes share out the L (L - 1) / 2 pairs s < t, each a 64-channel sum with
//    the decay exp(cum[t-1] - cum[s]) (never positive: no overflow however small w gets); 3. lane i
//    decays r[t, i] from the chunk's start, exp(cum[t-1]), and puts its v where k was; 4. lane j, as value
//    column j, adds the products with column j of S0 and of v: [L, N] x [N, N] and [L, L] x [L, N].
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(2) var<storage, read> rkv: array<f32>;  // [4, T_MAX, C]: r, k, v, gate
#if DECAY_LORA
@group(0) @binding(9) var<storage, read> ext: array<f32>;  // [T_MAX, C] w (wkv6_pre)
#else
@group(0) @binding(3) var<storage, read> decay: array<f32>;  // [C]
#endif
@group(0) @binding(7) var<storage, read_write> out: array<f32>;  // [T_MAX, C] y
@group(0) @binding(10) var<storage, read_write> chunks: array<f32>;  // [chunks, H, N N + N] S0, D

#include "wkv6_common.wgsl"
#include "wkv6_chunk.wgsl"
#include "wkv6_chunk_decay.wgsl"

// Rows of 16 vec4 padded to 17: step 2's lanes read different rows t, s at once, which a stride of 64 floats
// would put in the same memory bank.
var<workgroup> sh_r: array<array<vec4<f32>, 17>, L>;    // [t][i] r, then r[t, i] prod_{u<t} w[u, i]
var<workgroup> sh_kv: array<array<vec4<f32>, 17>, L>;   // [s][i] k, then [s][j] v
var<workgroup> sh_cum: array<array<vec4<f32>, 17>, L>;  // [t][i] sum_{u<=t} log w[u, i]
var<workgroup> sh_a: array<array<f32, L>, L>;           // [t][s] a, s < t

// The pair p of the strictly lower triangle, numbered row after row: (t, s) with p = t (t - 1) / 2 + s.
fn pair(p: u32) -> vec2<u32> {
    var t = u32((1.0 + sqrt(1.0 + 8.0 * f32(p))) * 0.5);  // then corrected for the float's rounding
    if (t * (t - 1u) / 2u > p) {
        t -= 1u;
    }
    if ((t + 1u) * t / 2u <= p) {
        t += 1u;
    }
    return vec2<u32>(t, p - t * (t - 1u) / 2u);
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let chunk = chunk_of(wg.y, j);  // (first token, tokens)
    if (chunk.y == 0u) {
        return;
    }
    let c = wg.x * N + j;
    let j4 = j / 4u;
    let jj = j % 4u;
    var s0: array<vec4<f32>, 16>;  // column j of S0, for step 4: loaded first, its latency behind steps 1-3
    load_block(&s0, block_at(wg.y, wg.x) + j);
    // 1. (unrolled, so that every token's loads are issued before the sum's first step waits on one)
    var cum = 0.0;
#unroll T CHUNK_LEN
    {
        var r = 0.0;  // tokens past a short chunk's end: zeros, never read back into y
        var k = 0.0;
        if ({{T}}u < chunk.y) {
            let tc = (chunk.x + {{T}}u) * C + c;
            r = rkv[tc];
            k = rkv[TC + tc];
            cum += log_w(tc, c);
        }
        sh_r[{{T}}][j4][jj] = r;
        sh_kv[{{T}}][j4][jj] = k;
        sh_cum[{{T}}][j4][jj] = cum;
    }
#end
    workgroupBarrier();
    // 2. (pairs of the chunk's own tokens only: those with t < len come first)
    for (var p = j; p < chunk.y * (chunk.y - 1u) / 2u; p += 64u) {
        let ts = pair(p);
        var a = vec4<f32>(0.0);
#unroll I 16
        a += sh_r[ts.x][{{I}}] * sh_kv[ts.y][{{I}}] * exp(sh_cum[ts.x - 1u][{{I}}] - sh_cum[ts.y][{{I}}]);
#end
        sh_a[ts.x][ts.y] = a.x + a.y + a.z + a.w;
    }
    workgroupBarrier();
    // 3.
#unroll T CHUNK_LEN
    if ({{T}}u < chunk.y) {
        sh_kv[{{T}}][j4][jj] = rkv[2u * TC + (chunk.x + {{T}}u) * C + c];
    }
#end
    for (var t = 1u; t < chunk.y; t++) {
        sh_r[t][j4][jj] *= exp(sh_cum[t - 1u][j4][jj]);
    }
    workgroupBarrier();
    // 4.
    for (var t = 0u; t < chunk.y; t++) {
        var y0 = vec4<f32>(0.0);  // two accumulators: 8 dependent multiply-adds, not 16
        var y1 = vec4<f32>(0.0);
#unroll I 8
        y0 += sh_r[t][2u * {{I}}u] * s0[2u * {{I}}u];
        y1 += sh_r[t][2u * {{I}}u + 1u] * s0[2u * {{I}}u + 1u];
#end
        let y4 = y0 + y1;
        var y = y4.x + y4.y + y4.z + y4.w;
        for (var s = 0u; s < t; s++) {
            y += sh_a[t][s] * sh_kv[s][j4][jj];
        }
        out[(chunk.x + t) * C + c] = y;
    }
}
