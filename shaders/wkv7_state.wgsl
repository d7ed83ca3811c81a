// RWKV-7's state recurrence, the generalised delta rule, per head:
//   S = S diag(w) + (S (-kk)) (kk*a)^T + v k^T;   y = S r
// State S [N(value i), N(key j)]: lane i owns row i as 16 vec4 (unrolled: constant indices stay in
// registers). A token's r, w, k, kk and b = kk*a reach every lane through workgroup memory, BUFFERS
// deep (the includer's constant: wkv7.wgsl 1, wkv7_scan.wgsl 2 to need one barrier per token). The
// includer binds `state` as vec4 and includes wkv7_common.wgsl.

var<workgroup> sh_r: array<array<vec4<f32>, 16>, BUFFERS>;
var<workgroup> sh_w: array<array<vec4<f32>, 16>, BUFFERS>;
var<workgroup> sh_k: array<array<vec4<f32>, 16>, BUFFERS>;
var<workgroup> sh_kk: array<array<vec4<f32>, 16>, BUFFERS>;
var<workgroup> sh_b: array<array<vec4<f32>, 16>, BUFFERS>;

// Where row i of head h's state lies for this slot (c = h N + i).
fn state_row(slot: u32, c: u32) -> u32 {
    return slot * S4 + REC4 + c * 16u;
}

fn load_state(s: ptr<function, array<vec4<f32>, 16>>, at: u32) {
#unroll J 16
    s[{{J}}] = state[at + {{J}}u];
#end
}

fn store_state(at: u32, s: ptr<function, array<vec4<f32>, 16>>) {
#unroll J 16
    state[at + {{J}}u] = s[{{J}}];
#end
}

// Lane i's entries of a token's vectors into buffer p (a barrier before delta_rule reads them).
fn share_token(p: u32, i: u32, r: f32, w: f32, k: f32, kk: f32, b: f32) {
    sh_r[p][i / 4u][i % 4u] = r;
    sh_w[p][i / 4u][i % 4u] = w;
    sh_k[p][i / 4u][i % 4u] = k;
    sh_kk[p][i / 4u][i % 4u] = kk;
    sh_b[p][i / 4u][i % 4u] = b;
}

// The token in buffer p through row i of the state; returns y_i (before the output's group norm).
fn delta_rule(s: ptr<function, array<vec4<f32>, 16>>, p: u32, v: f32) -> f32 {
    var sa = 0.0;  // (S (-kk))_i
#unroll J 16
    sa -= dot(s[{{J}}], sh_kk[p][{{J}}]);
#end
    var y = 0.0;
#unroll J 16
    s[{{J}}] = s[{{J}}] * sh_w[p][{{J}}] + sa * sh_b[p][{{J}}] + v * sh_k[p][{{J}}];
    y += dot(s[{{J}}], sh_r[p][{{J}}]);
#end
    return y;
}
