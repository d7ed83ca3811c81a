// RWKV-4 time mixing, one thread per (channel, row), numerically stable form with
// state (aa, bb, pp):  wkv = (e^{pp-p} aa + e^{u+k-p} v) / (e^{pp-p} bb + e^{u+k-p});  out = r * wkv
#include "common.wgsl"

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> rows: array<Row>;
@group(0) @binding(2) var<storage, read> rkv: array<f32>;    // [3, T_MAX, C]: sigmoid(r), k, v
@group(0) @binding(3) var<storage, read> decay: array<f32>;  // [C] = -exp(time_decay)
@group(0) @binding(4) var<storage, read> u: array<f32>;      // [C] time_first
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

const C: u32 = {{C}}u;
const TC: u32 = {{T_MAX}}u * {{C}}u;
const S: u32 = {{S}}u;
const REC: u32 = {{REC}}u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let b = gid.y;
    if (c >= C || b >= dims.B) {
        return;
    }
    let row = rows[b];
    let base = row.slot * S + REC + c;
    var aa = state[base];
    var bb = state[base + C];
    var pp = state[base + 2u * C];
    for (var n = 0u; n < row.len; n++) {
        let tc = (row.start + n) * C + c;
        let k = rkv[TC + tc];
        let v = rkv[2u * TC + tc];
        var ww = u[c] + k;
        var p = max(pp, ww);
        var e1 = exp(pp - p);
        var e2 = exp(ww - p);
        out[tc] = rkv[tc] * (e1 * aa + e2 * v) / (e1 * bb + e2);
        ww = decay[c] + pp;
        p = max(ww, k);
        e1 = exp(ww - p);
        e2 = exp(k - p);
        aa = e1 * aa + e2 * v;
        bb = e1 * bb + e2;
        pp = p;
    }
    state[base] = aa;
    state[base + C] = bb;
    state[base + 2u * C] = pp;
}
