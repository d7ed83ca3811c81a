import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { ClientFrame, ServerFrame } from "./protocol";
import { Ai00Socket, socketUrl, type WebSocketLike } from "./socket";

/** A WebSocket double: records what the client sends, lets the test play the server. */
class FakeWebSocket implements WebSocketLike {
  static all: FakeWebSocket[] = [];
  readyState = 0;
  sent: ClientFrame[] = [];
  closed: { code?: number; reason?: string } | null = null;
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;

  constructor(
    readonly url: string,
    readonly protocols: string[],
  ) {
    FakeWebSocket.all.push(this);
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(JSON.parse(data));
  }

  close(code?: number, reason?: string): void {
    this.closed = { code, reason };
    this.readyState = 3;
  }

  // ---- the server's side ----
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  push(frame: ServerFrame | Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  drop(code = 1006): void {
    this.readyState = 3;
    this.onerror?.({});
    this.onclose?.({ code, reason: "" });
  }

  static last(): FakeWebSocket {
    return FakeWebSocket.all[FakeWebSocket.all.length - 1];
  }
}

const SESSION = {
  type: "session.created",
  protocol: 1,
  server: { name: "ai00-server-py", version: "0.1.0" },
  model: { id: "demo", version: "v7", size: 1000 },
  limits: { max_batch: 8, max_tokens: 64, max_message_bytes: 4096 },
  defaults: {},
} as const;

function done(id: string, branch = 0, finish_reason = "stop", text = "") {
  return {
    type: "done",
    id,
    branch,
    finish_reason,
    text,
    usage: { prompt_tokens: 3, completion_tokens: 2 },
    timings: { queue_ms: 1, prefill_ms: 2, decode_tok_per_s: 50 },
  } as const;
}

function connected(apiKey = ""): { socket: Ai00Socket; ws: FakeWebSocket } {
  const socket = new Ai00Socket({
    url: "ws://host/api/ws",
    apiKey,
    WebSocket: FakeWebSocket,
    backoffMs: [100, 200, 400],
    pingIntervalMs: 0,
  });
  socket.connect();
  const ws = FakeWebSocket.last();
  ws.open();
  ws.push(SESSION);
  return { socket, ws };
}

beforeEach(() => {
  FakeWebSocket.all = [];
});

afterEach(() => {
  vi.useRealTimers();
});

describe("connecting", () => {
  it("offers the ai00.v1 subprotocol, and the key as bearer.KEY", () => {
    connected("sk-abc");
    expect(FakeWebSocket.last().url).toBe("ws://host/api/ws");
    expect(FakeWebSocket.last().protocols).toEqual(["ai00.v1", "bearer.sk-abc"]);
    connected();
    expect(FakeWebSocket.last().protocols).toEqual(["ai00.v1"]);
  });

  it("reports connecting, then open, and keeps session.created", () => {
    const socket = new Ai00Socket({ url: "ws://h/api/ws", WebSocket: FakeWebSocket, pingIntervalMs: 0 });
    const seen: string[] = [];
    socket.subscribe((s) => seen.push(s.status));
    socket.connect();
    FakeWebSocket.last().open();
    FakeWebSocket.last().push(SESSION);
    expect(seen).toEqual(["closed", "connecting", "open", "open"]);
    expect(socket.session?.model.id).toBe("demo");
  });

  it("queues frames sent before the socket opens and sends them in order on open", () => {
    const socket = new Ai00Socket({ url: "ws://h/api/ws", WebSocket: FakeWebSocket, pingIntervalMs: 0 });
    socket.connect();
    const gen = socket.generate({ prompt: "hi" });
    gen.cancel();
    const ws = FakeWebSocket.last();
    expect(ws.sent).toEqual([]);
    // cancelling a generation that never went out drops it without a word to the server
    const gen2 = socket.generate({ prompt: "again" });
    ws.open();
    expect(ws.sent).toEqual([{ type: "generate", id: gen2.id, prompt: "again" }]);
    expect(gen.ended).toBe(true);
  });

  it("builds ws:// or wss:// from the page's location", () => {
    expect(socketUrl({ protocol: "http:", host: "a:1" })).toBe("ws://a:1/api/ws");
    expect(socketUrl({ protocol: "https:", host: "b" })).toBe("wss://b/api/ws");
  });
});

describe("generations", () => {
  it("gives each generation its own id and routes events by id", async () => {
    const { socket, ws } = connected();
    const texts: Record<string, string> = {};
    const a = socket.generate({ prompt: "A" }, { delta: (f) => (texts.a = (texts.a ?? "") + f.text) });
    const b = socket.generate(
      { messages: [{ role: "user", content: "B" }], names: { user: "Me" }, params: { temperature: 0.5 } },
      { delta: (f) => (texts.b = (texts.b ?? "") + f.text) },
    );
    expect(a.id).not.toBe(b.id);
    expect(ws.sent).toEqual([
      { type: "generate", id: a.id, prompt: "A" },
      { type: "generate", id: b.id, messages: [{ role: "user", content: "B" }], names: { user: "Me" }, params: { temperature: 0.5 } },
    ]);
    for (const id of [a.id, b.id]) ws.push({ type: "generation.started", id, prompt_tokens: 1, cached_tokens: 0, params: {} });
    ws.push({ type: "delta", id: b.id, branch: 0, text: "b1", tokens: [1] });
    ws.push({ type: "delta", id: a.id, branch: 0, text: "a1", tokens: [2] });
    ws.push({ type: "delta", id: b.id, branch: 0, text: "b2", tokens: [3] });
    ws.push(done(b.id, 0, "length", "b1b2"));
    expect(texts).toEqual({ a: "a1", b: "b1b2" });
    expect(b.ended).toBe(true);
    expect(a.ended).toBe(false);
    expect(socket.liveCount).toBe(1);
    const r = await b.result;
    expect(r.done.map((d) => d.finish_reason)).toEqual(["length"]);
    expect(r.error).toBeUndefined();
  });

  it("ends a generation of n branches only after every branch's done", async () => {
    const { socket, ws } = connected();
    const dones: number[] = [];
    const gen = socket.generate({ prompt: "p", n: 3 }, { done: (f) => dones.push(f.branch) });
    expect(ws.sent[0]).toMatchObject({ n: 3 });
    ws.push({ type: "generation.started", id: gen.id, prompt_tokens: 1, cached_tokens: 0, params: {} });
    ws.push(done(gen.id, 2));
    ws.push(done(gen.id, 0));
    expect(gen.ended).toBe(false);
    ws.push(done(gen.id, 1));
    expect(gen.ended).toBe(true);
    expect(dones).toEqual([2, 0, 1]);
    expect((await gen.result).done).toHaveLength(3);
  });

  it("sends cancel for a live generation, which ends with done(cancelled)", async () => {
    const { socket, ws } = connected();
    const gen = socket.generate({ prompt: "p" });
    ws.push({ type: "generation.started", id: gen.id, prompt_tokens: 1, cached_tokens: 0, params: {} });
    gen.cancel();
    expect(ws.sent.at(-1)).toEqual({ type: "cancel", id: gen.id });
    ws.push(done(gen.id, 0, "cancelled"));
    expect((await gen.result).done[0].finish_reason).toBe("cancelled");
    gen.cancel(); // after the end: nothing more is sent
    expect(ws.sent.filter((f) => f.type === "cancel")).toHaveLength(1);
  });

  it("cancels all of this socket's generations with id *", () => {
    const { socket, ws } = connected();
    socket.cancelAll(); // none live: nothing to say
    socket.generate({ prompt: "p" });
    socket.cancelAll();
    expect(ws.sent.at(-1)).toEqual({ type: "cancel", id: "*" });
  });

  it("holds updates until generation.started, merged, then sends them at once", () => {
    const { socket, ws } = connected();
    const acks: number[] = [];
    const gen = socket.generate({ prompt: "p" }, { updated: (f) => acks.push(f.at_token) });
    gen.update({ temperature: 0.3 });
    gen.update({ top_p: 0.9 });
    expect(ws.sent.filter((f) => f.type === "update")).toEqual([]);
    ws.push({ type: "generation.started", id: gen.id, prompt_tokens: 1, cached_tokens: 0, params: {} });
    expect(ws.sent.at(-1)).toEqual({ type: "update", id: gen.id, params: { temperature: 0.3, top_p: 0.9 } });
    gen.update({ temperature: 1.5 });
    expect(ws.sent.at(-1)).toEqual({ type: "update", id: gen.id, params: { temperature: 1.5 } });
    ws.push({ type: "updated", id: gen.id, params: { temperature: 1.5 }, at_token: 7 });
    expect(acks).toEqual([7]);
  });

  it("ends a refused generate with its error; a later error (refused update) leaves it running", async () => {
    const { socket, ws } = connected();
    const refused = socket.generate({ prompt: "p", params: { max_tokens: 1e9 } });
    ws.push({ type: "error", id: refused.id, code: "invalid_request", message: "params.max_tokens: must be <= 64" });
    const r = await refused.result;
    expect(r.error?.code).toBe("invalid_request");
    expect(refused.ended).toBe(true);

    const notices: string[] = [];
    const gen = socket.generate({ prompt: "p" }, { error: (f) => notices.push(f.code) });
    ws.push({ type: "generation.started", id: gen.id, prompt_tokens: 1, cached_tokens: 0, params: {} });
    ws.push({ type: "error", id: gen.id, code: "invalid_request", message: "temperature: too big" });
    expect(notices).toEqual(["invalid_request"]);
    expect(gen.ended).toBe(false);
  });

  it("snapshots a state and resolves with the handle; an error rejects", async () => {
    const { socket, ws } = connected();
    const gen = socket.generate({ prompt: "p" });
    ws.push({ type: "generation.started", id: gen.id, prompt_tokens: 1, cached_tokens: 0, params: {} });
    ws.push(done(gen.id));
    const saved = gen.saveState(0);
    expect(ws.sent.at(-1)).toEqual({ type: "state.save", id: gen.id, branch: 0 });
    ws.push({ type: "state.saved", id: gen.id, handle: "st-1", bytes: 4096 });
    expect((await saved).handle).toBe("st-1");
    const failed = gen.saveState(0);
    ws.push({ type: "error", id: gen.id, code: "unknown_id", message: "gone" });
    await expect(failed).rejects.toThrow("unknown_id");
  });

  it("measures the round trip of a ping", async () => {
    const { socket, ws } = connected();
    const rtt = socket.ping();
    const ping = ws.sent.at(-1) as { type: "ping"; data: number };
    expect(ping.type).toBe("ping");
    ws.push({ type: "pong", data: ping.data });
    expect(await rtt).toBeGreaterThanOrEqual(0);
    expect(socket.latencyMs).not.toBeNull();
  });

  it("ignores frames that are not JSON and events of unknown ids", () => {
    const { socket, ws } = connected();
    ws.onmessage?.({ data: "not json" });
    ws.push({ type: "delta", id: "nobody", branch: 0, text: "x", tokens: [] });
    ws.push({ type: "error", code: "invalid_json", message: "bad frame" });
    expect(socket.status).toBe("open");
    expect(socket.lastError).toBe("invalid_json: bad frame");
  });
});

describe("reconnecting", () => {
  it("ends live generations when the connection drops, and reconnects with backoff", async () => {
    vi.useFakeTimers();
    const { socket, ws } = connected("k");
    const gen = socket.generate({ prompt: "p" });
    ws.push({ type: "generation.started", id: gen.id, prompt_tokens: 1, cached_tokens: 0, params: {} });
    ws.drop();
    const r = await gen.result;
    expect(r.error?.code).toBe("disconnected");
    expect(socket.status).toBe("reconnecting");
    expect(FakeWebSocket.all).toHaveLength(1);

    // a generate made while disconnected waits for the next connection
    const queued = socket.generate({ prompt: "later" });
    vi.advanceTimersByTime(99);
    expect(FakeWebSocket.all).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(FakeWebSocket.all).toHaveLength(2);
    const ws2 = FakeWebSocket.last();
    expect(ws2.protocols).toEqual(["ai00.v1", "bearer.k"]);

    // it fails too: the next delay is longer
    ws2.drop();
    vi.advanceTimersByTime(199);
    expect(FakeWebSocket.all).toHaveLength(2);
    vi.advanceTimersByTime(1);
    const ws3 = FakeWebSocket.last();
    ws3.open();
    ws3.push(SESSION);
    expect(socket.status).toBe("open");
    expect(socket.failures).toBe(0);
    expect(ws3.sent).toEqual([{ type: "generate", id: queued.id, prompt: "later" }]);
    expect(queued.ended).toBe(false);
  });

  it("stops reconnecting after close()", () => {
    vi.useFakeTimers();
    const { socket, ws } = connected();
    ws.drop();
    socket.close();
    vi.advanceTimersByTime(10_000);
    expect(FakeWebSocket.all).toHaveLength(1);
    expect(socket.status).toBe("closed");
  });

  it("picks a model at once and again on every new connection, before queued generates", () => {
    vi.useFakeTimers();
    const { socket, ws } = connected();
    socket.setModel("beta");
    expect(ws.sent).toEqual([{ type: "session.update", model: "beta" }]);
    ws.drop();
    const queued = socket.generate({ prompt: "p" });
    vi.advanceTimersByTime(100);
    const ws2 = FakeWebSocket.last();
    ws2.open();
    expect(ws2.sent).toEqual([{ type: "session.update", model: "beta" }, { type: "generate", id: queued.id, prompt: "p" }]);
  });

  it("reconnects at once with a new API key", () => {
    const { socket, ws } = connected("old");
    socket.setApiKey("new");
    expect(ws.closed?.code).toBe(1000);
    expect(FakeWebSocket.all).toHaveLength(2);
    expect(FakeWebSocket.last().protocols).toEqual(["ai00.v1", "bearer.new"]);
  });

  it("retries when the WebSocket constructor throws (a key a subprotocol cannot carry)", () => {
    vi.useFakeTimers();
    let throwing = true;
    class Picky extends FakeWebSocket {
      constructor(url: string, protocols: string[]) {
        if (throwing) throw new SyntaxError("invalid subprotocol");
        super(url, protocols);
      }
    }
    const socket = new Ai00Socket({ url: "ws://h/api/ws", apiKey: "a b", WebSocket: Picky, backoffMs: [50], pingIntervalMs: 0 });
    socket.connect();
    expect(socket.status).toBe("reconnecting");
    expect(socket.lastError).toContain("invalid subprotocol");
    throwing = false;
    vi.advanceTimersByTime(50);
    expect(FakeWebSocket.all).toHaveLength(1);
  });
});
