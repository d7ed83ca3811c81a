// x[t] = emb[tokens[t].id] for the ids in rows [ROW0, ROW0 + ROWS) of the table, which this
// dispatch binds (a table larger than one binding is copied by one dispatch per slice).
// The embedding has passed through ln0 at load.
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> tokens: array<Token>;
#include "weights.wgsl"
@group(0) @binding(3) var<storage, read_write> x: array<vec4<f32>>;

const C4: u32 = {{C4}}u;
const ROW0: u32 = {{ROW0}}u;
const ROWS: u32 = {{ROWS}}u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.y;
    if (i < C4 && t < dims.T) {
        let id = tokens[t].id - ROW0;  // wraps for ids below the slice
        if (id < ROWS) {
            x[t * C4 + i] = w4(id * C4 + i);
        }
    }
}
