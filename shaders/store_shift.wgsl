// After a layer: each row's last normalised inputs become its state's x_prev (att and ffn).
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(2) var<storage, read> ln_att: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> ln_ffn: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> state: array<vec4<f32>>;

const C4: u32 = {{C4}}u;
const S4: u32 = {{S4}}u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let b = gid.y;
    if (i < C4 && b < dims.B) {
        let row = rows[b];
        let last = row.start + row.len - 1u;
        state[row.slot * S4 + i] = ln_att[last * C4 + i];
        state[row.slot * S4 + C4 + i] = ln_ffn[last * C4 + i];
    }
}
