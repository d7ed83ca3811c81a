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
// The two sums run in two vec4 accumulators each (even and odd J): a chain of 8 dependent vector
// multiply-adds instead of 16 dots' 64, which is the scan's critical path token after token.
fn delta_rule(s: ptr<function, array<vec4<f32>, 16>>, p: u32, v: f32) -> f32 {
    var sa0 = vec4<f32>(0.0);  // -(S kk)_i, in parts
    var sa1 = vec4<f32>(0.0);
#unroll J 8
    sa0 -= s[2u * {{J}}u] * sh_kk[p][2u * {{J}}u];
    sa1 -= s[2u * {{J}}u + 1u] * sh_kk[p][2u * {{J}}u + 1u];
#end
    let sa4 = sa0 + sa1;
    let sa = sa4.x + sa4.y + sa4.z + sa4.w;
    var y0 = vec4<f32>(0.0);
    var y1 = vec4<f32>(0.0);
#unroll J 8
    s[2u * {{J}}u] = s[2u * {{J}}u] * sh_w[p][2u * {{J}}u] + sa * sh_b[p][2u * {{J}}u] + v * sh_k[p][2u * {{J}}u];
    y0 += s[2u * {{J}}u] * sh_r[p][2u * {{J}}u];
    s[2u * {{J}}u + 1u] = s[2u * {{J}}u + 1u] * sh_w[p][2u * {{J}}u + 1u] + sa * sh_b[p][2u * {{J}}u + 1u]
        + v * sh_k[p][2u * {{J}}u + 1u];
    y1 += s[2u * {{J}}u + 1u] * sh_r[p][2u * {{J}}u + 1u];
#end
    let y4 = y0 + y1;
    return y4.x + y4.y + y4.z + y4.w;
}
