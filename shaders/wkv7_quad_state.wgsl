// RWKV-7's state recurrence (wkv7_state.wgsl's delta rule) with four invocations a state row: invocation li
// holds vec4s 4p .. 4p + 3 of its row (p = li % 4, columns 16p .. 16p + 15), and the row's two dots
// (S kk and S r) are summed over the four (quad_sum.wgsl). The includer includes wkv7_state.wgsl (the
// token's vectors in workgroup memory, BUFFERS deep) and quad_sum.wgsl.

// The token in buffer b through invocation li's quarter of its state row (in s); returns the row's y.
fn delta_rule_quad(s: ptr<function, array<vec4<f32>, 4>>, b: u32, v: f32, li: u32) -> f32 {
    let j0 = 4u * (li % 4u);
    var sa4 = vec4<f32>(0.0);
#unroll J 4
    sa4 -= s[{{J}}] * sh_kk[b][j0 + {{J}}u];
#end
    let sa = quad_sum(sa4.x + sa4.y + sa4.z + sa4.w, li);
    var y4 = vec4<f32>(0.0);
#unroll J 4
    s[{{J}}] = s[{{J}}] * sh_w[b][j0 + {{J}}u] + sa * sh_b[b][j0 + {{J}}u] + v * sh_k[b][j0 + {{J}}u];
    y4 += s[{{J}}] * sh_r[b][j0 + {{J}}u];
#end
    return quad_sum(y4.x + y4.y + y4.z + y4.w, li);
}
