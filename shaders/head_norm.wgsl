// One workgroup per logit line r: y[r] = LayerNorm(x[positions[r]]) with ln_out's weights.
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> ln_w: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> ln_b: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> y: array<vec4<f32>>;

#include "layer_norm.wgsl"

@compute @workgroup_size(128)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let r = wg.x;
    let t = positions[r];
    let st = ln_stats(t * C4, li);
    for (var i = li; i < C4; i += WG) {
        y[r * C4 + i] = (x[t * C4 + i] - vec4<f32>(st.x)) * st.y * ln_w[i] + ln_b[i];
    }
}
