// RWKV-5/6 time mixing for long steps, chunked form (wkv6_chunk.wgsl), pass 2 of 3: per (head h, row b),
// chunk after chunk of the row (len / L steps, not len), the state each chunk starts from,
//   S0(first chunk) = the slot's state;   S0(next)[i, j] = D[i] S0[i, j] + dS[i, j]
// written over the chunk's dS in `chunks` (wkv6_chunk_out reads it), and the state after the row's last
// chunk back to the slot, where the split and fused forms continue from it. The update is elementwise in
// (i, j): each invocation owns one element, 256 a workgroup, N N / 256 workgroups a head; what is
// sequential is one multiply-add a chunk, so the loads of four chunks' dS and D are issued together and
// their latency is paid once for every four.
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(10) var<storage, read_write> chunks: array<f32>;  // [chunks, H, N N + N] dS -> S0, D

const BUFFERS: u32 = 1u;  // wkv6_state.wgsl's token buffers (unused here)
const EB: u32 = 256u;     // elements (i, j) per workgroup

#include "wkv6_common.wgsl"
#include "wkv6_state.wgsl"
#include "wkv6_chunk.wgsl"

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lane: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let h = wg.x / (N * N / EB);
    let e = (wg.x % (N * N / EB)) * EB + lane;  // = i N + j
    let i = e / N;
    let row = rows[wg.y];
    let first = chunks_before(wg.y);
    let n = chunks_of(row.len);
    let at = state_column(row.slot, h, e % N) + i * N;
    var s = state[at];
    var q = 0u;
    for (; q + 4u <= n; q += 4u) {
#unroll Q 4
        let block{{Q}} = block_at(first + q + {{Q}}u, h);
        let ds{{Q}} = chunks[block{{Q}} + e];
        let d{{Q}} = chunks[block{{Q}} + N * N + i];
#end
#unroll Q 4
        chunks[block{{Q}} + e] = s;
        s = d{{Q}} * s + ds{{Q}};
#end
    }
    for (; q < n; q++) {
        let block = block_at(first + q, h);
        let ds = chunks[block + e];
        chunks[block + e] = s;
        s = chunks[block + N * N + i] * s + ds;
    }
    state[at] = s;
}
