// Per-step inputs shared by every kernel (written once per step by the engine).
struct Dims {
    T: u32,  // tokens in this step
    R: u32,  // logit lines wanted
    B: u32,  // rows (sequences) in this step
    pad: u32,
}

struct Token {
    id: u32,
    slot: u32,
    flags: u32,  // bit 0: first token of its row (its token shift comes from the state)
    row: u32,
}

struct Row {
    slot: u32,
    start: u32,  // index of the row's first token in this step
    len: u32,
    pad: u32,
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}
