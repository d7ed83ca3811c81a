// RWKV-5/6's state, per head: S [N(key i), N(value j)], updated by each token as
//   S_ij = k_i v_j + w_i S_ij
// Lane j owns column j as 16 vec4 over i (unrolled: constant indices stay in registers). A token's r, k
// and w reach every lane through workgroup memory, BUFFERS deep (the includer's constant: wkv6.wgsl 1,
// wkv6_scan.wgsl 2 to need one barrier per token). The includer binds `state` as f32 and includes
// wkv6_common.wgsl.

var<workgroup> sh_r: array<array<vec4<f32>, 16>, BUFFERS>;
var<workgroup> sh_k: array<array<vec4<f32>, 16>, BUFFERS>;
var<workgroup> sh_w: array<array<vec4<f32>, 16>, BUFFERS>;

// Where S[h, 0, j] lies for this slot; S[h, i, j] is N i floats further.
fn state_column(slot: u32, h: u32, j: u32) -> u32 {
    return slot * S + REC + h * N * N + j;
}

fn load4(at: u32) -> vec4<f32> {  // S[i .. i+4, j] sits N floats apart
    return vec4<f32>(state[at], state[at + N], state[at + 2u * N], state[at + 3u * N]);
}

fn store4(at: u32, v: vec4<f32>) {
    state[at] = v.x;
    state[at + N] = v.y;
    state[at + 2u * N] = v.z;
    state[at + 3u * N] = v.w;
}

fn load_state(s: ptr<function, array<vec4<f32>, 16>>, at: u32) {
#unroll I 16
    s[{{I}}] = load4(at + {{I}}u * 4u * N);
#end
}

fn store_state(at: u32, s: ptr<function, array<vec4<f32>, 16>>) {
#unroll I 16
    store4(at + {{I}}u * 4u * N, s[{{I}}]);
#end
}

// Lane j's r and k of a token into buffer p (a barrier before the state update reads them).
fn share_rk(p: u32, j: u32, r: f32, k: f32) {
    sh_r[p][j / 4u][j % 4u] = r;
    sh_k[p][j / 4u][j % 4u] = k;
}

// Lane j's decay into buffer p.
fn share_w(p: u32, j: u32, w: f32) {
    sh_w[p][j / 4u][j % 4u] = w;
}

// The update of four rows i of column j, given kv = k_i v_j.
fn update(s: vec4<f32>, w: vec4<f32>, kv: vec4<f32>) -> vec4<f32> {
    return kv + w * s;
}
