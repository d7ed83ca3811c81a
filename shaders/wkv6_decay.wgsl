// RWKV-5/6's decay of channel c at token t, w = exp(-exp(decay)): v6 (DECAY_LORA) adds the decay LoRA's
// second stage, hidden[t] . decay_w2[c] (the hidden layer is what the projection dispatch wrote after
// r, k, v, gate in rkv); v5's is the same for every token. The includer binds rkv, decay and (v6)
// decay_w2 and includes wkv6_common.wgsl.
fn decay_w(t: u32, c: u32) -> f32 {
    var wd = decay[c];
#if DECAY_LORA
    let hb = LORA_BASE + t * LW;
    for (var q = 0u; q < D; q++) {
        wd += rkv[hb + q] * decay_w2[c * D + q];
    }
#endif
    return exp(-exp(wd));
}
