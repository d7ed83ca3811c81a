// The AI00 WebSocket protocol v1 (shared/ws-protocol.md), mirroring backend/api/schemas.py.
// tests/unit/test_protocol_mirror.py checks the key lists below against the Python models.

export const PROTOCOL = "ai00.v1";

/** Sampler params of a generation (`WsParams`); every key optional. */
export interface SamplerParams {
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  min_p?: number;
  presence_penalty?: number;
  frequency_penalty?: number;
  half_life?: number;
  stop?: string[];
  seed?: number;
  logprobs?: number;
  logit_bias?: Record<string, number>;
  bnf_schema?: string;
  json_schema?: Record<string, unknown>;
}

export const PARAM_KEYS = [
  "max_tokens",
  "temperature",
  "top_p",
  "top_k",
  "min_p",
  "presence_penalty",
  "frequency_penalty",
  "half_life",
  "stop",
  "seed",
  "logprobs",
  "logit_bias",
  "bnf_schema",
  "json_schema",
] as const satisfies readonly (keyof SamplerParams)[];

export type Role = "system" | "user" | "assistant";
export type Names = Partial<Record<Role, string>>;

export interface ChatMessage {
  role: Role | "developer" | "tool";
  content: string;
  name?: string;
}

// ---- client -> server ----

export interface SessionUpdateFrame {
  type: "session.update";
  defaults?: SamplerParams;
  model?: string;
}

export interface GenerateFrame {
  type: "generate";
  id: string;
  prompt?: string;
  messages?: ChatMessage[];
  names?: Names;
  params?: SamplerParams;
  n?: number;
  state?: string;
}

export interface UpdateFrame {
  type: "update";
  id: string;
  params: SamplerParams;
}

export interface CancelFrame {
  type: "cancel";
  id: string; // a live id, or "*" for all of this socket's generations
}

export interface StateSaveFrame {
  type: "state.save";
  id: string;
  branch?: number;
}

export interface PingFrame {
  type: "ping";
  data?: unknown;
}

export type ClientFrame =
  | SessionUpdateFrame
  | GenerateFrame
  | UpdateFrame
  | CancelFrame
  | StateSaveFrame
  | PingFrame;

export const CLIENT_FRAME_TYPES = [
  "session.update",
  "generate",
  "update",
  "cancel",
  "state.save",
  "ping",
] as const satisfies readonly ClientFrame["type"][];

// ---- server -> client ----

// Each interface below mirrors the pydantic model of the same name in backend/api/schemas.py (Logprob:
// TokenLogprobOut), field by field: tests/unit/test_protocol_mirror.py.

export interface ModelSummary {
  id: string;
  version: string;
  size: number; // bytes of the model file
  n_layer: number;
  n_embd: number;
  n_vocab: number;
  precision: string;
  quant: number;
  quant_type: string;
}

export interface ServerInfo {
  name: string;
  version: string;
}

export interface SessionLimits {
  max_batch: number;
  max_tokens: number;
  max_message_bytes: number;
  max_n: number;
}

export interface SessionCreatedFrame {
  type: "session.created";
  protocol: number;
  server: ServerInfo;
  model: ModelSummary;
  limits: SessionLimits;
  defaults: SamplerParams;
}

export interface GenerationStartedFrame {
  type: "generation.started";
  id: string;
  prompt_tokens: number;
  cached_tokens: number;
  params: SamplerParams;
}

export interface Logprob {
  token: number;
  logprob: number;
  top: [number, number][];
}

export interface DeltaFrame {
  type: "delta";
  id: string;
  branch: number;
  text: string;
  tokens: number[];
  logprobs?: Logprob[];
}

export interface UpdatedFrame {
  type: "updated";
  id: string;
  params: SamplerParams;
  at_token: number;
}

export type FinishReason = "stop" | "length" | "cancelled" | "grammar" | "error";

export interface DoneUsage {
  prompt_tokens: number;
  completion_tokens: number;
  cached_tokens: number;
}

export interface DoneTimings {
  queue_ms: number;
  prefill_ms: number;
  decode_tok_per_s: number;
}

export interface DoneFrame {
  type: "done";
  id: string;
  branch: number;
  finish_reason: FinishReason;
  text: string;
  usage: DoneUsage;
  timings: DoneTimings;
}

export interface StateSavedFrame {
  type: "state.saved";
  id: string;
  handle: string;
  bytes: number;
}

export interface PongFrame {
  type: "pong";
  data: unknown;
}

export type ErrorCode =
  | "invalid_json"
  | "invalid_request"
  | "unknown_type"
  | "duplicate_id"
  | "unknown_id"
  | "too_large"
  | "overloaded"
  | "unauthorized"
  | "internal"
  | "not_supported";

export interface ErrorFrame {
  type: "error";
  id?: string;
  code: ErrorCode | string;
  message: string;
  param?: string;
}

export type ServerFrame =
  | SessionCreatedFrame
  | GenerationStartedFrame
  | DeltaFrame
  | UpdatedFrame
  | DoneFrame
  | StateSavedFrame
  | PongFrame
  | ErrorFrame;

export const SERVER_FRAME_TYPES = [
  "session.created",
  "generation.started",
  "delta",
  "updated",
  "done",
  "state.saved",
  "pong",
  "error",
] as const satisfies readonly ServerFrame["type"][];
