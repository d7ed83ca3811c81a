// The second half of a GEMM whose K was sliced over workgroups (matmul_gemm.wgsl with SLICES > 1): each
// output y[t, o] is the sum of the slices' raw sums, added in slice order (so a step's result does not
// depend on which workgroup finished first), then the same epilogue as every matmul (matmul_common.wgsl).
// One invocation per (row o, token t): consecutive invocations read and write consecutive rows.
#include "common.wgsl"
#include "matmul_common.wgsl"

@group(0) @binding(14) var<storage, read> part: array<f32>;  // [SLICES, count, NROWS]

const SLICES: u32 = {{SLICES}}u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let o = id.x;
    let t = id.y;
    let count = dims.{{COUNT}};
    if (o >= NROWS || t >= count) {
        return;
    }
    var acc = 0.0;
    for (var z = 0u; z < SLICES; z++) {
        acc += part[(z * count + t) * NROWS + o];
    }
    finish(o, t, acc);
}
