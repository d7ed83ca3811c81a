// A reactive view of one generation (all its branches) for the pages: text as it streams, tokens/s,
// how it finished. It takes live sampler updates while it runs.

import type { DoneFrame, FinishReason, SamplerParams, UpdatedFrame } from "../protocol";
import type { GenerateRequest, Generation } from "../socket";
import { socket } from "./connection.svelte";
import { acknowledge, refuse, registerLive } from "./settings.svelte";

export type RunStatus = "queued" | "running" | "done" | "failed";

/** Bumped whenever a run starts or ends, so views of server load refresh then. */
export const activity = $state({ changes: 0 });

/** How a finish reason reads in the UI. */
export const FINISH_LABEL: Record<FinishReason, string> = {
  stop: "done",
  length: "max tokens",
  cancelled: "stopped",
  grammar: "grammar end",
  error: "failed",
};

export class Branch {
  text = $state("");
  tokens = $state(0);
  finish = $state<FinishReason | null>(null);
  firstAt = $state<number | null>(null);
  lastAt = $state<number | null>(null);
  decodeTokPerS = $state<number | null>(null); // the server's own figure, once done

  /** tokens per second since this branch's first token (the server's figure once it is done) */
  get tokPerS(): number {
    if (this.decodeTokPerS !== null && this.decodeTokPerS > 0) return this.decodeTokPerS;
    if (this.firstAt === null || this.lastAt === null || this.lastAt <= this.firstAt) return 0;
    return ((this.tokens - 1) * 1000) / (this.lastAt - this.firstAt);
  }
}

export interface RunHooks {
  /** each piece of new text, as it arrives */
  delta?(branch: number, text: string): void;
  done?(frame: DoneFrame): void;
}

export class Run {
  status = $state<RunStatus>("queued");
  branches: Branch[] = $state([]);
  error = $state<string | null>(null);
  notice = $state<string | null>(null); // a non-fatal error, e.g. a refused update
  promptTokens = $state(0);
  cachedTokens = $state(0);
  acks = $state<UpdatedFrame[]>([]);
  readonly startedAt = performance.now();
  readonly finished: Promise<void>;
  private readonly gen: Generation;

  constructor(request: GenerateRequest, hooks: RunHooks = {}) {
    const n = request.n ?? 1;
    this.branches = Array.from({ length: n }, () => new Branch());
    const unregister = registerLive(this);
    this.gen = socket.generate(request, {
      started: (f) => {
        this.status = "running";
        this.promptTokens = f.prompt_tokens;
        this.cachedTokens = f.cached_tokens;
      },
      delta: (f) => {
        const b = this.branches[f.branch];
        if (!b) return;
        const now = performance.now();
        b.firstAt ??= now;
        b.lastAt = now;
        b.text += f.text;
        b.tokens += f.tokens.length;
        hooks.delta?.(f.branch, f.text);
      },
      updated: (f) => {
        this.acks.push(f);
        acknowledge(f);
      },
      done: (f) => {
        const b = this.branches[f.branch];
        if (!b) return;
        b.finish = f.finish_reason;
        b.text = f.text; // the whole output, authoritative
        b.tokens = f.usage.completion_tokens;
        b.decodeTokPerS = f.timings.decode_tok_per_s;
        hooks.done?.(f);
      },
      error: (f) => {
        this.notice = `${f.code}: ${f.message}`;
        refuse(this.notice);
      },
    });
    activity.changes++;
    this.finished = this.gen.result.then((r) => {
      unregister();
      activity.changes++;
      if (r.error) {
        this.error = `${r.error.code}: ${r.error.message}`;
        this.status = "failed";
      } else this.status = "done";
    });
  }

  get active(): boolean {
    return this.status === "queued" || this.status === "running";
  }

  get totalTokens(): number {
    return this.branches.reduce((sum, b) => sum + b.tokens, 0);
  }

  /** tokens of all branches per second of wall time since the first token */
  get totalTokPerS(): number {
    const firsts = this.branches.map((b) => b.firstAt).filter((t): t is number => t !== null);
    const lasts = this.branches.map((b) => b.lastAt).filter((t): t is number => t !== null);
    if (firsts.length === 0) return 0;
    const span = Math.max(...lasts) - Math.min(...firsts);
    return span > 0 ? ((this.totalTokens - firsts.length) * 1000) / span : 0;
  }

  cancel(): void {
    this.gen.cancel();
  }

  update(params: SamplerParams): void {
    this.gen.update(params);
  }
}
