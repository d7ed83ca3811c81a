// log w of channel c at rkv offset tc for the chunked form (wkv6_chunk.wgsl), which sums decays in log
// space: v6 (DECAY_LORA) reads wkv6_pre's w, v5's is the same at every token (wkv6_decay.wgsl). w is
// held at least the smallest normal f32 (log -87.3): v6's can underflow to 0, whose log would make the
// pairwise differences of the cumulative sums NaN; a product through it stays below 1e-38 either way.
// The includer binds ext (v6) or decay (v5) and includes wkv6_common.wgsl.
const W_MIN: f32 = 1.17549435e-38;

#if DECAY_LORA
fn log_w(tc: u32, c: u32) -> f32 {
    return log(max(ext[tc], W_MIN));
}
#else
#include "wkv6_decay.wgsl"

fn log_w(tc: u32, c: u32) -> f32 {
    return log(max(decay_w(0u, c), W_MIN));
}
#endif
