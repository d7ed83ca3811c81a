// RWKV-5/6 time mixing for long steps, chunked form: what its three passes share. The recurrence per head,
//   y[t, j] = sum_i r[t, i] S[i, j]  (S before token t's update);   S[i, j] = k[t, i] v[t, j] + w[t, i] S[i, j]
// is sequential in t; the split form's wkv6_scan walks it token by token with heads x rows workgroups.
// Cut each row's tokens into chunks of L (the row's last one may be shorter) and unroll it inside a chunk
// that starts from state S0 (a chunk's tokens numbered 0 .. last):
//   y[t, j] = sum_{s<t} a[t, s] v[s, j]  +  sum_i r[t, i] (prod_{u<t} w[u, i]) S0[i, j]
//   a[t, s] = sum_i r[t, i] k[s, i] prod_{u=s+1}^{t-1} w[u, i]
//   S_end[i, j] = D[i] S0[i, j] + dS[i, j],   D[i] = prod_u w[u, i],
//   dS[i, j] = sum_s (prod_{u=s+1}^{last} w[u, i]) k[s, i] v[s, j]
// Three passes, each GEMM-shaped or short:
//   wkv6_chunk_state (per head, chunk; parallel): dS and D of every chunk;
//   wkv6_chunk_scan (per head, row, 256 elements of S): S0 of each chunk from the last, S0' = D S0 + dS,
//     over the row's chunks only (len / L steps, not len), ending in the slot's state as the scan would;
//   wkv6_chunk_out (per head, chunk; parallel): y, the chunk-local a[t, s] v[s, j] part included (it needs
//     the same r, k and decays as the S0 part, so computing it there saves a [T, C] scratch).
// y lands in `out` where wkv6_scan writes it, so wkv6_post runs unchanged after it.
// Decays are products of v6's per-token w, which can be ~1e-30 each: every product above is taken as
// exp of a sum of log w over exactly its range (a cumulative sum inside the chunk, differenced pairwise,
// so never positive), never as k / prod or r * prod over the whole chunk, which overflow or underflow.
// L = 16 (CHUNK_LEN in backend/gpu/wkv_chunk.py): wkv6_chunk_out holds r, k (then v), the cumulative decays
// and a in workgroup memory, 3 L (N + 4) + L^2 floats = 14 KiB (30 KiB at 32: within lavapipe's 32 KiB and
// the H100's 48 KiB); a token costs L / 2 pairwise exps a channel against N multiply-adds for the S0 term
// and N for dS, and a row len / L steps of the chunk scan. 16 keeps the exps (8) small beside the 128
// multiply-adds and the chunk scan at 64 steps for 1,024 tokens; AI00_WKV_CHUNK_LEN tries others on a GPU.
// `chunks` holds one block per (chunk g, head h): dS [N(i), N(j)] (then S0, written over it by the scan,
// in the state's own [i, j] order, wkv6_state.wgsl), then D [N]. A step's chunks are numbered row after
// row; grids have ceil(T / L) + B (at most T) chunks per head, the surplus workgroups exit at once.
// The includer binds dims, rows and `chunks` (read_write) and includes wkv6_common.wgsl.
const L: u32 = {{CHUNK_LEN}}u;
const H: u32 = C / N;
const BLOCK: u32 = N * N + N;  // floats per (chunk, head) in `chunks`: S [N, N], then D [N]

// Where chunk g's block for head h starts.
fn block_at(g: u32, h: u32) -> u32 {
    return (g * H + h) * BLOCK;
}

fn chunks_of(len: u32) -> u32 {
    return (len + L - 1u) / L;
}

// Chunk g of the step: (its first token, its token count), count 0 past the step's chunks.
fn find_chunk(g: u32) -> vec2<u32> {
    var left = g;
    for (var b = 0u; b < dims.B; b++) {
        let row = rows[b];
        let n = chunks_of(row.len);
        if (left < n) {
            return vec2<u32>(row.start + left * L, min(L, row.len - left * L));
        }
        left -= n;
    }
    return vec2<u32>(0u, 0u);
}

var<workgroup> sh_chunk: vec2<u32>;

// find_chunk(g), walked by lane 0 alone and read back uniform (a workgroup may then return early).
fn chunk_of(g: u32, lane: u32) -> vec2<u32> {
    if (lane == 0u) {
        sh_chunk = find_chunk(g);
    }
    return workgroupUniformLoad(&sh_chunk);
}

// The number of chunks of the step's rows before row b (its first chunk's g).
fn chunks_before(b: u32) -> u32 {
    var n = 0u;
    for (var q = 0u; q < b; q++) {
        n += chunks_of(rows[q].len);
    }
    return n;
}

// A block's column j as 16 vec4 over i, at = block_at(g, h) + j (S[i .. i+4, j] sit N floats apart).
fn load_block(s: ptr<function, array<vec4<f32>, 16>>, at: u32) {
#unroll I 16
    s[{{I}}] = vec4<f32>(chunks[at + {{I}}u * 4u * N], chunks[at + ({{I}}u * 4u + 1u) * N],
                         chunks[at + ({{I}}u * 4u + 2u) * N], chunks[at + ({{I}}u * 4u + 3u) * N]);
#end
}

fn store_block(at: u32, s: ptr<function, array<vec4<f32>, 16>>) {
#unroll I 16
    chunks[at + {{I}}u * 4u * N] = s[{{I}}].x;
    chunks[at + ({{I}}u * 4u + 1u) * N] = s[{{I}}].y;
    chunks[at + ({{I}}u * 4u + 2u) * N] = s[{{I}}].z;
    chunks[at + ({{I}}u * 4u + 3u) * N] = s[{{I}}].w;
#end
}
