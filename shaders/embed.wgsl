// x[t] = emb[tokens[t].id]   (emb already passed through ln0 at load)
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> tokens: array<Token>;
#include "weights.wgsl"
@group(0) @binding(3) var<storage, read_write> x: array<vec4<f32>>;

const C4: u32 = {{C4}}u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if (i < C4 && t < dims.T) {
        x[t * C4 + i] = w4(tokens[t].id * C4 + i);
    }
}
