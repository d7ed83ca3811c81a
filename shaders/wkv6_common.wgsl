// RWKV-5/6 time mixing: the sizes every kernel of it shares (wkv6.wgsl, and the split form wkv6_pre,
// wkv6_scan, wkv6_post). Heads of N = 64 channels; a kernel's workgroup is one head (or, in wkv6_pre,
// 64 channels), lane j its channel c = h N + j.
const N: u32 = 64u;
const C: u32 = {{C}}u;
const TC: u32 = {{T_MAX}}u * {{C}}u;  // floats per group of rkv: [T_MAX, C]
const S: u32 = {{S}}u;                // floats per state slot
const REC: u32 = {{REC}}u;            // the recurrent state's first float in a slot
const LORA_BASE: u32 = {{LORA_BASE}}u;
const LW: u32 = {{LW}}u;  // hidden floats per token in rkv
const D: u32 = {{D}}u;    // decay LoRA width (v6)
