// RWKV-7 time mixing: the sizes every kernel of it shares (wkv7.wgsl, and the split form wkv7_pre,
// wkv7_scan, wkv7_post). Heads of N = 64 channels; a kernel's workgroup is one head, lane i its channel
// c = h N + i.
const N: u32 = 64u;
const C: u32 = {{C}}u;
const TC: u32 = {{T_MAX}}u * {{C}}u;  // floats per group of rkv: [T_MAX, C]
const S4: u32 = {{S}}u / 4u;          // vec4 per state slot
const REC4: u32 = {{REC}}u / 4u;      // the recurrent state's first vec4 in a slot
const LORA_BASE: u32 = {{LORA_BASE}}u;
const LW: u32 = {{LW}}u;  // hidden floats per token in rkv
const L2: u32 = {{L2}}u;  // lora2 floats per channel
