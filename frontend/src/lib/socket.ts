// The one WebSocket client of the UI: auth subprotocol, id multiplexing, reconnect, cancel and live updates.
// Components never touch a WebSocket; they go through the stores, which hold one Ai00Socket.

import {
  PROTOCOL,
  type ClientFrame,
  type DeltaFrame,
  type DoneFrame,
  type ErrorFrame,
  type GenerateFrame,
  type GenerationStartedFrame,
  type SamplerParams,
  type ServerFrame,
  type SessionCreatedFrame,
  type StateSavedFrame,
  type UpdatedFrame,
} from "./protocol";

export type ConnectionStatus = "connecting" | "open" | "reconnecting" | "closed";

/** The part of the browser's WebSocket we use, so tests can pass a fake class. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketCtor = new (url: string, protocols: string[]) => WebSocketLike;

export interface SocketOptions {
  url: string;
  apiKey?: string;
  WebSocket?: WebSocketCtor;
  /** delays before reconnect attempt 1, 2, ...; the last one repeats */
  backoffMs?: number[];
  /** how often to ping while open (latency shown in the UI); 0: never */
  pingIntervalMs?: number;
}

export interface GenerationHandlers {
  started?(frame: GenerationStartedFrame): void;
  delta?(frame: DeltaFrame): void;
  updated?(frame: UpdatedFrame): void;
  /** once per branch */
  done?(frame: DoneFrame): void;
  /** an error that does not end the generation, e.g. a refused `update` */
  error?(frame: ErrorFrame): void;
}

export interface GenerationResult {
  id: string;
  /** the `done` of every branch that finished */
  done: DoneFrame[];
  /** why the generation ended without a `done` for every branch: refused, or the connection was lost */
  error?: ErrorFrame;
}

export type GenerateRequest = Omit<GenerateFrame, "type" | "id">;

const OPEN = 1;
const DEFAULT_BACKOFF = [250, 500, 1000, 2000, 4000, 8000];

/** One live generation on the socket; ends exactly once, with every branch's `done` or an error. */
export class Generation {
  readonly result: Promise<GenerationResult>;
  started = false;
  ended = false;
  /** the connection it was sent on; -1 while it waits in the outbox */
  epoch = -1;
  private remaining: number;
  private pendingUpdate: SamplerParams | null = null;
  private readonly done: DoneFrame[] = [];
  private resolve!: (r: GenerationResult) => void;

  constructor(
    readonly id: string,
    readonly n: number,
    private readonly socket: Ai00Socket,
    private readonly handlers: GenerationHandlers,
  ) {
    this.remaining = n;
    this.result = new Promise((resolve) => (this.resolve = resolve));
  }

  /** Stop it; the server answers with `done(cancelled)` for each branch. */
  cancel(): void {
    if (this.ended) return;
    if (this.epoch === -1) {
      // never left the outbox: nothing to tell the server
      this.socket.unqueue(this.id);
      this.end({ type: "error", id: this.id, code: "cancelled", message: "cancelled before it was sent" });
    } else this.socket.send({ type: "cancel", id: this.id });
  }

  /** Change sampler params from the next token on; held back until the server accepted the prompt. */
  update(params: SamplerParams): void {
    if (this.ended) return;
    if (this.started) this.socket.send({ type: "update", id: this.id, params });
    else this.pendingUpdate = { ...this.pendingUpdate, ...params };
  }

  /** Snapshot its RWKV state; the handle can be a later generation's `state`. */
  saveState(branch = 0): Promise<StateSavedFrame> {
    return this.socket.saveState(this.id, branch);
  }

  /** @internal routes one server frame of this id */
  receive(frame: ServerFrame): void {
    switch (frame.type) {
      case "generation.started":
        this.started = true;
        this.handlers.started?.(frame);
        if (this.pendingUpdate) {
          this.socket.send({ type: "update", id: this.id, params: this.pendingUpdate });
          this.pendingUpdate = null;
        }
        break;
      case "delta":
        this.handlers.delta?.(frame);
        break;
      case "updated":
        this.handlers.updated?.(frame);
        break;
      case "done":
        this.done.push(frame);
        this.handlers.done?.(frame);
        if (--this.remaining <= 0) this.end();
        break;
      case "error":
        // before `generation.started` an error can only be the refusal of the generate itself
        if (this.started) this.handlers.error?.(frame);
        else this.end(frame);
        break;
    }
  }

  /** @internal */
  end(error?: ErrorFrame): void {
    if (this.ended) return;
    this.ended = true;
    this.socket.forget(this);
    this.resolve({ id: this.id, done: this.done, error });
  }
}

type Listener = (socket: Ai00Socket) => void;

export class Ai00Socket {
  status: ConnectionStatus = "closed";
  session: SessionCreatedFrame | null = null;
  latencyMs: number | null = null;
  /** failed connection attempts in a row (0 once a session was created) */
  failures = 0;
  lastError: string | null = null;

  private ws: WebSocketLike | null = null;
  private epoch = 0;
  private wanted = false;
  private seq = 0;
  private outbox: ClientFrame[] = [];
  private readonly live = new Map<string, Generation>();
  private readonly saves = new Map<string, { resolve(f: StateSavedFrame): void; reject(e: Error): void }[]>();
  private readonly pings = new Map<number, { sent: number; resolve(ms: number): void; reject(e: Error): void }>();
  private readonly listeners = new Set<Listener>();
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private readonly Ctor: WebSocketCtor;
  private readonly backoff: number[];
  private readonly pingInterval: number;
  private url: string;
  private apiKey: string;
  /** the served model this socket's generations run on (null: the server's default) */
  model: string | null = null;

  constructor(options: SocketOptions) {
    this.url = options.url;
    this.apiKey = options.apiKey ?? "";
    this.Ctor = options.WebSocket ?? (globalThis.WebSocket as unknown as WebSocketCtor);
    this.backoff = options.backoffMs?.length ? options.backoffMs : DEFAULT_BACKOFF;
    this.pingInterval = options.pingIntervalMs ?? 10_000;
  }

  /** Connect, and keep reconnecting until close(). */
  connect(): void {
    this.wanted = true;
    if (!this.ws && !this.retryTimer) this.open();
  }

  close(): void {
    this.wanted = false;
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.close(1000, "client closed");
      this.dropConnection("connection closed by the client");
    }
    this.setStatus("closed");
  }

  /** A new key takes effect on a new connection. */
  setApiKey(key: string): void {
    if (key === this.apiKey) return;
    this.apiKey = key;
    this.reconnectNow();
  }

  /** Later generations run on `model`; sent again on every new connection, since the choice is per socket. */
  setModel(model: string | null): void {
    if (model === this.model) return;
    this.model = model;
    this.outbox = this.outbox.filter((f) => !(f.type === "session.update" && f.model !== undefined));
    if (model !== null && this.ws && this.ws.readyState === OPEN) this.write({ type: "session.update", model });
  }

  /** Drop the current connection (if any) and connect again at once. */
  reconnectNow(): void {
    const wanted = this.wanted;
    this.close();
    this.failures = 0;
    if (wanted) this.connect();
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    listener(this);
    return () => this.listeners.delete(listener);
  }

  get liveCount(): number {
    return this.live.size;
  }

  generate(request: GenerateRequest, handlers: GenerationHandlers = {}): Generation {
    const id = `g${++this.seq}`;
    const gen = new Generation(id, request.n ?? 1, this, handlers);
    this.live.set(id, gen);
    this.send({ type: "generate", id, ...request });
    return gen;
  }

  cancelAll(): void {
    if (this.live.size) this.send({ type: "cancel", id: "*" });
  }

  /** Round trip time in ms. */
  ping(): Promise<number> {
    const data = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pings.set(data, { sent: performance.now(), resolve, reject });
      this.send({ type: "ping", data });
    });
  }

  /** @internal use Generation.saveState */
  saveState(id: string, branch: number): Promise<StateSavedFrame> {
    return new Promise((resolve, reject) => {
      const waiting = this.saves.get(id) ?? [];
      waiting.push({ resolve, reject });
      this.saves.set(id, waiting);
      this.send({ type: "state.save", id, branch });
    });
  }

  /** @internal frames wait in the outbox while there is no open connection */
  send(frame: ClientFrame): void {
    if (this.ws && this.ws.readyState === OPEN) this.write(frame);
    else this.outbox.push(frame);
  }

  /** @internal drops the unsent frames of a generation */
  unqueue(id: string): void {
    this.outbox = this.outbox.filter((f) => !("id" in f) || f.id !== id);
  }

  /** @internal */
  forget(gen: Generation): void {
    if (this.live.get(gen.id) === gen) this.live.delete(gen.id);
  }

  // ---- connection ----

  private open(): void {
    this.retryTimer = null;
    this.setStatus(this.failures ? "reconnecting" : "connecting");
    const protocols = this.apiKey ? [PROTOCOL, `bearer.${this.apiKey}`] : [PROTOCOL];
    let ws: WebSocketLike;
    try {
      ws = new this.Ctor(this.url, protocols);
    } catch (e) {
      // e.g. a key with characters a subprotocol token cannot carry
      this.lastError = String(e);
      this.failures++;
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    const epoch = ++this.epoch;
    ws.onopen = () => {
      this.setStatus("open");
      const queued = this.outbox;
      this.outbox = [];
      if (this.model !== null) this.write({ type: "session.update", model: this.model }); // before any generate
      for (const f of queued) this.write(f);
      if (this.pingInterval > 0) this.pingTimer = setInterval(() => void this.ping().catch(() => {}), this.pingInterval);
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") this.receive(ev.data);
    };
    ws.onerror = () => {
      this.lastError = "connection failed";
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws || epoch !== this.epoch) return;
      this.ws = null;
      this.clearTimers();
      this.failures++;
      this.lastError = ev.reason || this.lastError || `closed (code ${ev.code})`;
      this.dropConnection(`connection lost (code ${ev.code})`);
      if (this.wanted) this.scheduleRetry();
      else this.setStatus("closed");
    };
  }

  private scheduleRetry(): void {
    const delay = this.backoff[Math.min(this.failures - 1, this.backoff.length - 1)] ?? 1000;
    this.setStatus("reconnecting");
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  /** The server cancels a closed socket's generations: end ours with an error, keep the unsent ones queued. */
  private dropConnection(message: string): void {
    const error: ErrorFrame = { type: "error", code: "disconnected", message };
    for (const gen of [...this.live.values()]) {
      if (gen.epoch !== -1) gen.end({ ...error, id: gen.id });
    }
    for (const waiting of this.saves.values()) for (const w of waiting) w.reject(new Error(message));
    this.saves.clear();
    for (const p of this.pings.values()) p.reject(new Error(message));
    this.pings.clear();
    // frames of generations that never went out stay; updates/cancels of lost ones would only get unknown_id
    this.outbox = this.outbox.filter((f) => f.type === "generate" || f.type === "session.update");
  }

  private clearTimers(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.retryTimer = this.pingTimer = null;
  }

  private write(frame: ClientFrame): void {
    if (frame.type === "generate") this.live.get(frame.id)!.epoch = this.epoch;
    this.ws!.send(JSON.stringify(frame));
  }

  private receive(data: string): void {
    let frame: ServerFrame;
    try {
      frame = JSON.parse(data) as ServerFrame;
    } catch {
      return;
    }
    switch (frame.type) {
      case "session.created":
        this.session = frame;
        this.failures = 0;
        this.lastError = null;
        this.notify();
        if (this.pingInterval > 0) void this.ping().catch(() => {}); // show the latency at once
        return;
      case "pong": {
        const p = this.pings.get(frame.data as number);
        if (p) {
          this.pings.delete(frame.data as number);
          this.latencyMs = Math.round(performance.now() - p.sent);
          p.resolve(this.latencyMs);
          this.notify();
        }
        return;
      }
      case "state.saved":
        this.saves.get(frame.id)?.shift()?.resolve(frame);
        return;
      case "error":
        if (frame.id && this.saves.get(frame.id)?.length && !this.live.get(frame.id)?.started) {
          this.saves.get(frame.id)!.shift()!.reject(new Error(`${frame.code}: ${frame.message}`));
          return;
        }
        break;
    }
    if ("id" in frame && frame.id) this.live.get(frame.id)?.receive(frame);
    else if (frame.type === "error") this.lastError = `${frame.code}: ${frame.message}`;
  }

  private setStatus(status: ConnectionStatus): void {
    this.status = status;
    if (status !== "open") this.latencyMs = null;
    this.notify();
  }

  private notify(): void {
    for (const l of this.listeners) l(this);
  }
}

/** ws:// or wss:// URL of /api/ws on the server that served the page. */
export function socketUrl(location: { protocol: string; host: string }): string {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/api/ws`;
}
