// Sampler settings (kept in localStorage) and their live update: a change made while generations run is
// sent to each of them as an `update`, and the server's `updated` acknowledgement is shown.

import type { SamplerParams, UpdatedFrame } from "../protocol";
import { connection } from "./connection.svelte";

export type GrammarKind = "none" | "bnf" | "json";

export interface Settings {
  temperature: number;
  top_p: number;
  top_k: number;
  presence_penalty: number;
  frequency_penalty: number;
  half_life: number;
  max_tokens: number;
  /** one stop string per line; \n and \t are escapes */
  stop: string;
  grammarKind: GrammarKind;
  grammar: string;
  /** initial state id or saved-state handle; empty: none */
  state: string;
}

/** The keys a live `update` may change (grammars and the initial state only apply at the start). */
export const LIVE_KEYS = [
  "temperature",
  "top_p",
  "top_k",
  "presence_penalty",
  "frequency_penalty",
  "half_life",
  "max_tokens",
  "stop",
] as const satisfies readonly (keyof Settings)[];
export type LiveKey = (typeof LIVE_KEYS)[number];

export const DEFAULTS: Settings = {
  temperature: 1,
  top_p: 0.5,
  top_k: 0,
  presence_penalty: 0.3,
  frequency_penalty: 0.3,
  half_life: 200,
  max_tokens: 256,
  stop: "",
  grammarKind: "none",
  grammar: "",
  state: "",
};

const STORAGE = "ai00.settings";

function load(): Settings {
  try {
    return { ...DEFAULTS, ...JSON.parse(localStorage.getItem(STORAGE) ?? "{}") };
  } catch {
    return { ...DEFAULTS };
  }
}

export const settings: Settings = $state(load());

/** Runs that take live updates (registered while they stream), and the last acknowledgement seen. */
interface Updatable {
  update(params: SamplerParams): void;
}
const live = new Set<Updatable>();
export const ack = $state({
  last: null as UpdatedFrame | null,
  keys: [] as (keyof SamplerParams)[], // what the last change was about
  pending: 0,
  error: null as string | null,
});

export function persist(): void {
  localStorage.setItem(STORAGE, JSON.stringify(settings));
}

export function resetSettings(): void {
  Object.assign(settings, DEFAULTS);
  persist();
}

/** Set one setting; unless `send` is false (a slider still moving), a sampler key also goes to every running
 * generation as an `update`. */
export function change<K extends keyof Settings>(key: K, value: Settings[K], send = true): void {
  settings[key] = value;
  persist();
  if (!send || !(LIVE_KEYS as readonly string[]).includes(key) || live.size === 0) return;
  const params = paramsOf({ [key]: value } as Partial<Settings>);
  ack.keys = Object.keys(params) as (keyof SamplerParams)[];
  ack.pending += live.size;
  ack.error = null;
  for (const run of live) run.update(params);
}

export function registerLive(run: Updatable): () => void {
  live.add(run);
  return () => live.delete(run);
}

export function acknowledge(frame: UpdatedFrame): void {
  ack.last = frame;
  ack.pending = Math.max(0, ack.pending - 1);
}

export function refuse(message: string): void {
  ack.error = message;
  ack.pending = Math.max(0, ack.pending - 1);
}

export function parseStops(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.replace(/\\n/g, "\n").replace(/\\t/g, "\t"))
    .filter((s) => s.length > 0)
    .slice(0, 16);
}

/** The wire params of (part of) the settings. */
export function paramsOf(s: Partial<Settings>): SamplerParams {
  const p: SamplerParams = {};
  if (s.temperature !== undefined) p.temperature = s.temperature;
  if (s.top_p !== undefined) p.top_p = s.top_p;
  if (s.top_k !== undefined) p.top_k = Math.round(s.top_k);
  if (s.presence_penalty !== undefined) p.presence_penalty = s.presence_penalty;
  if (s.frequency_penalty !== undefined) p.frequency_penalty = s.frequency_penalty;
  if (s.half_life !== undefined) p.half_life = Math.max(1, s.half_life);
  if (s.max_tokens !== undefined) {
    // the server refuses more than its limit: ask for the most it allows instead
    const limit = connection.session?.limits.max_tokens ?? Infinity;
    p.max_tokens = Math.min(limit, Math.max(1, Math.round(s.max_tokens)));
  }
  if (s.stop !== undefined) p.stop = parseStops(s.stop);
  return p;
}

/** Params for a new generation, grammar included; throws when the JSON schema does not parse. */
export function generationParams(extraStops: string[] = []): SamplerParams {
  const p = paramsOf(settings);
  p.stop = [...(p.stop ?? []), ...extraStops].slice(0, 16);
  if (p.stop.length === 0) delete p.stop;
  const grammar = settings.grammar.trim();
  if (settings.grammarKind === "bnf" && grammar) p.bnf_schema = grammar;
  if (settings.grammarKind === "json" && grammar) {
    try {
      p.json_schema = JSON.parse(grammar);
    } catch (e) {
      throw new Error(`JSON schema: ${(e as Error).message}`);
    }
  }
  return p;
}

/** The params of a new generation, or the problem with the settings (e.g. an unparsable JSON schema). */
export function paramsOrProblem(extraStops: string[] = []): { params: SamplerParams } | { problem: string } {
  try {
    return { params: generationParams(extraStops) };
  } catch (e) {
    return { problem: (e as Error).message };
  }
}

export function initialState(): string | undefined {
  return settings.state.trim() || undefined;
}
