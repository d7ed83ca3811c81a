// One workgroup per draw: choose the next token from one logit line, all on the GPU.
//   x = logit - (presence [count > 0] + frequency * count)    AI00's penalties on decayed counts
//   x = -inf where the grammar's bitmask forbids the token
//   x += logit_bias[token] (OpenAI's, already clamped to +-100 by the host)
//   temperature 0: argmax x (ties: lowest id); else p = exp((x - max x) / T), then keep p >= tau where
//   tau = max(k-th largest p, top-p cut, min_p * max p) and draw the kept token with the largest p / E, where
//   E ~ Exp(1) is hashed from the host's key and the token id (an exponential race: backend/sampling/race.py
//   says why, and is the float64 specification of `race_noise`; a seeded host RNG makes the draw reproducible).
// Then counts = counts * decay (or 0 for a fresh generation) + onehot(token), and, when asked, the
// model's log-probabilities (raw logits, before any sampling setting) of the token and of the k best.
// Cuts are thresholds found by a 4-way search over the float bits (p >= 0, so bits order like values):
// no sort; each of <= 16 passes tests three thresholds at once over vec4 loads (one invocation would
// otherwise wait on 256 dependent loads per pass: latency, not bandwidth, bounds this kernel).

struct Draw {
    line: u32,  // logit line to draw from
    slot: u32,  // penalty counts row
    flags: u32,  // FRESH | MASKED | LOGPROBS
    top_k: u32,  // 0: off
    temperature: f32,
    top_p: f32,
    min_p: f32,
    presence: f32,
    frequency: f32,
    decay: f32,  // per-token factor on counts (0.5 ** (1 / half_life))
    key_lo: u32,  // the draw's 64-bit key, low word
    logprobs: u32,  // how many alternatives to report
    mask_row: u32,  // row of `masks` when MASKED, and of `biases`
    n_bias: u32,  // entries of this draw's row of `biases`
    key_hi: u32,
    pad: u32,
}

const FRESH: u32 = 1u;  // the generation's first token: counts start from zero
const MASKED: u32 = 2u;
const LOGPROBS: u32 = 4u;

const V: u32 = {{V}}u;
const V4: u32 = (V + 3u) / 4u;  // vec4s per row of `work` and `counts` (padded past V with p = 0)
const WG: u32 = 256u;
const MASK_WORDS: u32 = (V + 31u) / 32u;
const OUT: u32 = {{OUT}}u;  // words per draw: token, logprob bits, alternatives, pad, then (id, logprob) pairs
const TOP_MAX: u32 = (OUT - 4u) / 2u;
const EXCLUDED: f32 = -3.0e38;  // below any real logit: exp() of it is 0
const ONE_BITS: u32 = 0x3f800000u;  // bits of 1.0, the largest p (the max token's)
const NONE: u32 = 0xffffffffu;
const TWO_M32: f32 = 2.3283064365386963e-10;  // 2^-32
const MAX_BIAS: u32 = {{MAX_BIAS}}u;  // entries per row of `biases`

@group(0) @binding(0) var<storage, read> logits: array<f32>;  // [lines, V]
@group(0) @binding(1) var<storage, read> draws: array<Draw>;
@group(0) @binding(2) var<storage, read> masks: array<u32>;  // [draws, MASK_WORDS]
@group(0) @binding(3) var<storage, read_write> counts: array<vec4<f32>>;  // [slots, V4]
@group(0) @binding(4) var<storage, read_write> work: array<vec4<f32>>;  // [draws, V4]: x, then p
@group(0) @binding(5) var<storage, read_write> out: array<u32>;  // [draws, OUT]
@group(0) @binding(6) var<storage, read> biases: array<vec2<u32>>;  // [draws, MAX_BIAS]: (token id, f32 bits of bias)

var<workgroup> red_f: array<vec4<f32>, WG>;
var<workgroup> red_u: array<vec4<u32>, WG>;
var<workgroup> params: Draw;
var<workgroup> n_top: atomic<u32>;

fn sum_f(v: vec4<f32>, li: u32) -> vec4<f32> {
    red_f[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red_f[li] += red_f[li + s];
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&red_f[0]);
}

fn max_f(v: f32, li: u32) -> f32 {
    red_f[li].x = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red_f[li].x = max(red_f[li].x, red_f[li + s].x);
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&red_f[0]).x;
}

fn sum_u(v: vec4<u32>, li: u32) -> vec4<u32> {
    red_u[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red_u[li] += red_u[li + s];
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&red_u[0]);
}

// Index of the largest x (lowest index among equals).
fn argmax(v: f32, i: u32, li: u32) -> u32 {
    red_f[li].x = v;
    red_u[li].x = i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            let a = red_f[li].x;
            let b = red_f[li + s].x;
            if (b > a || (b == a && red_u[li + s].x < red_u[li].x)) {
                red_f[li].x = b;
                red_u[li].x = red_u[li + s].x;
            }
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&red_u[0]).x;
}

fn allowed(d: Draw, i: u32) -> bool {
    if ((d.flags & MASKED) == 0u) {
        return true;
    }
    return ((masks[d.mask_row * MASK_WORDS + i / 32u] >> (i % 32u)) & 1u) != 0u;
}

fn kept(p: vec4<f32>, tau: u32) -> vec4<bool> {
    return (p > vec4<f32>(0.0)) & (bitcast<vec4<u32>>(p) >= vec4<u32>(tau));
}

// For thresholds t.xyz (and t.w): how many p >= t, and their mass, over the row at `wb`.
fn count_ge(wb: u32, t: vec4<u32>, li: u32) -> vec4<u32> {
    var n = vec4<u32>(0u);
    for (var q = li; q < V4; q += WG) {
        let p = work[wb + q];
        n += vec4<u32>(
            dot(select(vec4<u32>(0u), vec4<u32>(1u), kept(p, t.x)), vec4<u32>(1u)),
            dot(select(vec4<u32>(0u), vec4<u32>(1u), kept(p, t.y)), vec4<u32>(1u)),
            dot(select(vec4<u32>(0u), vec4<u32>(1u), kept(p, t.z)), vec4<u32>(1u)),
            dot(select(vec4<u32>(0u), vec4<u32>(1u), kept(p, t.w)), vec4<u32>(1u)),
        );
    }
    return sum_u(n, li);
}

fn mass_ge(wb: u32, t: vec4<u32>, li: u32) -> vec4<f32> {
    var m = vec4<f32>(0.0);
    for (var q = li; q < V4; q += WG) {
        let p = work[wb + q];
        m += vec4<f32>(
            dot(select(vec4<f32>(0.0), p, kept(p, t.x)), vec4<f32>(1.0)),
            dot(select(vec4<f32>(0.0), p, kept(p, t.y)), vec4<f32>(1.0)),
            dot(select(vec4<f32>(0.0), p, kept(p, t.z)), vec4<f32>(1.0)),
            dot(select(vec4<f32>(0.0), p, kept(p, t.w)), vec4<f32>(1.0)),
        );
    }
    return sum_f(m, li);
}

// Three probes splitting [lo, hi) in four; the caller keeps the part where its predicate flips.
fn probes(lo: u32, hi: u32) -> vec4<u32> {
    let step = max((hi - lo) / 4u, 1u);
    return min(vec4<u32>(lo) + vec4<u32>(step, 2u * step, 3u * step, 3u * step), vec4<u32>(hi - 1u));
}

// Narrow [lo, hi) to the largest probe that still holds (`ok`) and the smallest that does not.
fn narrow(lo: u32, hi: u32, t: vec4<u32>, ok: vec4<bool>) -> vec2<u32> {
    if (ok.z) {
        return vec2<u32>(t.z, hi);
    }
    if (ok.y) {
        return vec2<u32>(t.y, t.z);
    }
    if (ok.x) {
        return vec2<u32>(t.x, t.y);
    }
    return vec2<u32>(lo, t.x);
}

// Largest bits b with count(p >= b) >= k (`lo_in` must satisfy it).
fn kth_largest_bits(wb: u32, k: u32, lo_in: u32, li: u32) -> u32 {
    var r = vec2<u32>(lo_in, ONE_BITS + 1u);
    for (var step = 0u; step < 16u; step++) {
        if (r.y - r.x <= 1u) {
            break;
        }
        let t = probes(r.x, r.y);
        r = narrow(r.x, r.y, t, count_ge(wb, t, li) >= vec4<u32>(k));
    }
    return r.x;
}

// Largest bits b >= lo with mass(p >= b) >= goal: the smallest most-likely set holding `goal`.
fn top_p_bits(wb: u32, goal: f32, lo_in: u32, li: u32) -> u32 {
    var r = vec2<u32>(lo_in, ONE_BITS + 1u);
    for (var step = 0u; step < 16u; step++) {
        if (r.y - r.x <= 1u) {
            break;
        }
        let t = probes(r.x, r.y);
        r = narrow(r.x, r.y, t, mass_ge(wb, t, li) >= vec4<f32>(goal));
    }
    return r.x;
}

// Order-preserving u32 key of any finite f32 (for the k best raw logits).
fn order_key(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn logit_or_excluded(d: Draw, base: u32, i: u32) -> f32 {
    if (i >= V || !allowed(d, i)) {
        return EXCLUDED;
    }
    return logits[base + i];
}

// Keep the largest of x (lowest id among equals: ids only grow within one invocation).
fn best_of4(x: vec4<f32>, i: u32, best: ptr<function, f32>, best_i: ptr<function, u32>) {
    for (var c = 0u; c < 4u; c++) {
        if (x[c] > *best) {
            *best = x[c];
            *best_i = i + c;
        }
    }
}

// work[token] += bias for the draw's logit_bias entries; a token the grammar excludes stays excluded. One
// invocation adds them all (<= MAX_BIAS loads): two ids in one vec4 written from two invocations would race.
fn add_biases(d: Draw, wb: u32, li: u32) {
    storageBarrier();
    if (li == 0u) {
        let row = d.mask_row * MAX_BIAS;
        for (var j = 0u; j < d.n_bias; j++) {
            let e = biases[row + j];
            let q = wb + e.x / 4u;
            var x = work[q];
            let c = e.x % 4u;
            if (e.x < V && x[c] > EXCLUDED) {
                x[c] += bitcast<f32>(e.y);
                work[q] = x;
            }
        }
    }
    storageBarrier();
}

fn choose(d: Draw, base: u32, wb: u32, li: u32) -> u32 {
    // penalised, masked logits
    let cb = d.slot * V4;
    var best = EXCLUDED;
    var best_i = 0u;
    for (var q = li; q < V4; q += WG) {
        let i = 4u * q;
        var x = vec4<f32>(logit_or_excluded(d, base, i), logit_or_excluded(d, base, i + 1u),
                          logit_or_excluded(d, base, i + 2u), logit_or_excluded(d, base, i + 3u));
        if ((d.flags & FRESH) == 0u) {
            let c = counts[cb + q];
            x -= select(vec4<f32>(0.0), vec4<f32>(d.presence) + d.frequency * c, c > vec4<f32>(0.0));
        }
        x = select(x, vec4<f32>(EXCLUDED), x <= vec4<f32>(EXCLUDED));
        work[wb + q] = x;
        best_of4(x, i, &best, &best_i);
    }
    if (d.n_bias > 0u) {
        add_biases(d, wb, li);
        best = EXCLUDED;
        for (var q = li; q < V4; q += WG) {
            best_of4(work[wb + q], 4u * q, &best, &best_i);
        }
    }
    if (d.temperature <= 0.0) {
        return argmax(best, best_i, li);
    }
    let m = max_f(best, li);
    let inv_t = 1.0 / d.temperature;
    for (var q = li; q < V4; q += WG) {
        let x = work[wb + q];
        work[wb + q] = select(exp((x - vec4<f32>(m)) * inv_t), vec4<f32>(0.0), x <= vec4<f32>(EXCLUDED));
    }
    storageBarrier();
    // tau as float bits; 1u keeps every p > 0
    var tau = 1u;
    if (d.top_k > 0u && d.top_k < V) {
        if (count_ge(wb, vec4<u32>(1u), li).x > d.top_k) {
            tau = kth_largest_bits(wb, d.top_k, 1u, li);
        }
    }
    if (d.top_p < 1.0) {
        let total = mass_ge(wb, vec4<u32>(tau), li).x;
        tau = top_p_bits(wb, d.top_p * total, tau, li);
    }
    if (d.min_p > 0.0) {
        tau = max(tau, bitcast<u32>(d.min_p));  // max p is exactly 1
    }
    return race(d, wb, tau, li);
}

// A 32-bit hash with full avalanche (the "lowbias32" constants published by C. Wellons).
fn mix32(x_in: u32) -> u32 {
    var x = x_in;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

// Token i's Exp(1) number: -ln v, v = (h + 0.5) / 2^32. Where v > 1/2, from w = 1 - v as -ln(1 - w) =
// 2 atanh(z), z = w / (2 - w) <= 1/3, by its series: f32 holds w exactly near 0 but not v near 1, and log's
// absolute error there (2^-21) would swamp the small E of the likely winners.
fn race_noise(d: Draw, i: u32) -> f32 {
    let h = mix32(mix32(i + d.key_lo) ^ d.key_hi);
    if (h < 0x80000000u) {
        return -log((f32(h) + 0.5) * TWO_M32);
    }
    let w = (f32(~h) + 0.5) * TWO_M32;
    let z = w / (2.0 - w);
    let z2 = z * z;
    let odd = 1.0 + z2 * (1.0 / 3.0 + z2 * (1.0 / 5.0 + z2 * (1.0 / 7.0 + z2 * (1.0 / 9.0 + z2 * (1.0 / 11.0
        + z2 * (1.0 / 13.0 + z2 * (1.0 / 15.0 + z2 / 17.0)))))));
    return 2.0 * z * odd;
}

// The kept token with the largest p / E (lowest id among equals): token i wins with probability p_i / sum p.
fn race(d: Draw, wb: u32, tau: u32, li: u32) -> u32 {
    var best = -1.0;
    var best_i = 0u;
    for (var q = li; q < V4; q += WG) {
        let p = work[wb + q];
        let k = kept(p, tau);
        for (var c = 0u; c < 4u; c++) {
            if (k[c]) {
                let score = p[c] / race_noise(d, 4u * q + c);
                if (score > best) {
                    best = score;
                    best_i = 4u * q + c;
                }
            }
        }
    }
    return argmax(best, best_i, li);
}

fn count_keys_ge(base: u32, t: vec4<u32>, li: u32) -> vec4<u32> {
    var n = vec4<u32>(0u);
    for (var i = li; i < V; i += WG) {
        n += select(vec4<u32>(0u), vec4<u32>(1u), vec4<u32>(order_key(logits[base + i])) >= t);
    }
    return sum_u(n, li);
}

fn report_logprobs(d: Draw, base: u32, token: u32, o: u32, li: u32) {
    var m = EXCLUDED;
    for (var i = li; i < V; i += WG) {
        m = max(m, logits[base + i]);
    }
    m = max_f(m, li);
    var s = 0.0;
    for (var i = li; i < V; i += WG) {
        s += exp(logits[base + i] - m);
    }
    let log_z = m + log(sum_f(vec4<f32>(s, 0.0, 0.0, 0.0), li).x);
    if (li == 0u) {
        atomicStore(&n_top, 0u);
    }
    workgroupBarrier();
    // the k best raw logits: search over order keys, then gather everything at or above the k-th
    let k = min(d.logprobs, TOP_MAX);
    if (k > 0u) {
        var r = vec2<u32>(0u, NONE);
        for (var step = 0u; step < 16u; step++) {
            if (r.y - r.x <= 1u) {
                break;
            }
            let t = probes(r.x, r.y);
            r = narrow(r.x, r.y, t, count_keys_ge(base, t, li) >= vec4<u32>(k));
        }
        for (var i = li; i < V; i += WG) {
            let x = logits[base + i];
            if (order_key(x) >= r.x) {
                let at = atomicAdd(&n_top, 1u);
                if (at < TOP_MAX) {
                    out[o + 4u + 2u * at] = i;
                    out[o + 5u + 2u * at] = bitcast<u32>(x - log_z);
                }
            }
        }
    }
    workgroupBarrier();
    if (li == 0u) {
        out[o + 1u] = bitcast<u32>(logits[base + token] - log_z);
        out[o + 2u] = min(atomicLoad(&n_top), TOP_MAX);
    }
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    if (li == 0u) {
        params = draws[wg.x];
    }
    let d = workgroupUniformLoad(&params);
    let base = d.line * V;
    let token = choose(d, base, wg.x * V4, li);
    // decayed counts plus the new token (a fresh generation starts from zero)
    let cb = d.slot * V4;
    for (var q = li; q < V4; q += WG) {
        var c = vec4<f32>(0.0);
        if ((d.flags & FRESH) == 0u) {
            c = counts[cb + q] * d.decay;
        }
        if (token / 4u == q) {
            c[token % 4u] += 1.0;
        }
        counts[cb + q] = c;
    }
    let o = wg.x * OUT;
    if (li == 0u) {
        out[o] = token;
    }
    if ((d.flags & LOGPROBS) != 0u) {
        report_logprobs(d, base, token, o, li);
    }
}
