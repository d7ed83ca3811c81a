// RWKV-5/6 time mixing for long steps, chunked form (wkv6_chunk.wgsl), pass 1 of 3: per (head h, chunk g),
// the chunk's own contribution to the state and its total decay,
//   dS[i, j] = sum_s (prod_{u=s+1}^{last} w[u, i]) k[s, i] v[s, j],   D[i] = prod_u w[u, i],
// into the chunk's block of `chunks`. Lane j, as channel i = j, weights its k by the decay after each token
// (log w summed from the chunk's end backwards) into workgroup memory; then, as value column j, sums the
// weighted k times its own v over the chunk's tokens: a [N, L] x [L, N] product per chunk.
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(2) var<storage, read> rkv: array<f32>;  // [4, T_MAX, C]: r, k, v, gate
#if DECAY_LORA
@group(0) @binding(9) var<storage, read> ext: array<f32>;  // [T_MAX, C] w (wkv6_pre)
#else
@group(0) @binding(3) var<storage, read> decay: array<f32>;  // [C]
#endif
@group(0) @binding(10) var<storage, read_write> chunks: array<f32>;  // [chunks, H, N N + N] dS, D

#include "wkv6_common.wgsl"
#include "wkv6_chunk.wgsl"
#include "wkv6_chunk_decay.wgsl"

var<workgroup> sh_kd: array<array<vec4<f32>, 16>, L>;  // [s][i]: k[s, i] prod_{u=s+1}^{last} w[u, i]

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) j: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let chunk = chunk_of(wg.y, j);  // (first token, tokens)
    if (chunk.y == 0u) {
        return;
    }
    let c = wg.x * N + j;
    var after = 0.0;  // sum_{u=s+1}^{last} log w[u, c]
    // unrolled, so that every token's loads are issued before the sum's first step waits on one
#unroll N CHUNK_LEN
    {
        let s = L - 1u - {{N}}u;
        var kd = 0.0;  // tokens past a short chunk's end add nothing
        if (s < chunk.y) {
            let tc = (chunk.x + s) * C + c;
            kd = rkv[TC + tc] * exp(after);
            after += log_w(tc, c);
        }
        sh_kd[s][j / 4u][j % 4u] = kd;
    }
#end
    let at = block_at(wg.y, wg.x);
    chunks[at + N * N + j] = exp(after);  // D[j]
    workgroupBarrier();
    var ds: array<vec4<f32>, 16>;  // column j of dS, 16 independent accumulators
    for (var s = 0u; s < chunk.y; s++) {
        let v = rkv[2u * TC + (chunk.x + s) * C + c];
#unroll I 16
        ds[{{I}}] += sh_kd[s][{{I}}] * v;
#end
    }
    store_block(at + j, &ds);
}
