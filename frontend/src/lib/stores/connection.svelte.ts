// The app's one Ai00Socket and a reactive view of its state (status, session, latency, key needed).

import { probeKey } from "../server";
import { Ai00Socket, socketUrl } from "../socket";
import type { SessionCreatedFrame } from "../protocol";
import type { ConnectionStatus } from "../socket";

const KEY_STORAGE = "ai00.apiKey";

export const socket = new Ai00Socket({
  url: socketUrl(location),
  apiKey: localStorage.getItem(KEY_STORAGE) ?? "",
});

export const connection = $state({
  status: "closed" as ConnectionStatus,
  session: null as SessionCreatedFrame | null,
  latencyMs: null as number | null,
  failures: 0,
  lastError: null as string | null,
  needsKey: false,
  apiKey: localStorage.getItem(KEY_STORAGE) ?? "",
});

let probedAt = 0; // the failure count we last asked REST about

socket.subscribe((s) => {
  connection.status = s.status;
  connection.session = s.session;
  connection.latencyMs = s.latencyMs;
  connection.failures = s.failures;
  connection.lastError = s.lastError;
  if (s.status === "open") connection.needsKey = false;
  // after the first failed attempt (and every 5th), ask REST whether the key is the reason
  if (s.failures === 0) probedAt = 0;
  else if (s.failures !== probedAt && (s.failures === 1 || s.failures % 5 === 0)) {
    probedAt = s.failures;
    void probeKey(connection.apiKey).then((r) => (connection.needsKey = r === "unauthorized"));
  }
});

export function setApiKey(key: string): void {
  key = key.trim();
  connection.apiKey = key;
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
  socket.setApiKey(key);
}

export function connect(): void {
  socket.connect();
}
