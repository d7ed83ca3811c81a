// RWKV-7 DeepEmbed: each token's own 32 x 32 matrix scales its channel mix.
//   deep[t, j] = sum_i xs[t, i] * s_emb[token_t][i, j]     (xs = ln2(x) @ s1, [T, 32])
// Eight invocations per token, each owning four j; s_emb rows are read through weights.wgsl.
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> tokens: array<Token>;
#include "weights.wgsl"
@group(0) @binding(3) var<storage, read> xs: array<f32>;          // [T_MAX, 32]
@group(0) @binding(4) var<storage, read_write> deep: array<vec4<f32>>;  // [T_MAX, 32]

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x / 8u;
    let j4 = gid.x % 8u;
    if (t >= dims.T) {
        return;
    }
    let row = tokens[t].id * 256u;  // 1024 weights = 256 vec4 per token
    var acc = vec4<f32>(0.0);
    for (var i = 0u; i < 32u; i++) {
        acc += xs[t * 32u + i] * w4(row + i * 8u + j4);
    }
    deep[t * 8u + j4] = acc;
}
