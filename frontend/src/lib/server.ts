// The few REST calls the UI makes besides the WebSocket: health (slot use), the model's details and the
// loaded initial states (GET /api/models/info), and an auth probe.

export interface Health {
  status: string;
  model: string;
  slots: { total: number; free: number };
}

/** GET /api/models/info; every field optional, so an older server (or none of it) still works. */
export interface ModelInfo {
  model?: { id?: string; precision?: string; quant?: number; quant_type?: string; path?: string };
  adapters?: { name: string; alpha: number; active: boolean }[];
  states?: { id: string; default: boolean }[];
  default_state?: string | null;
}

export async function fetchHealth(): Promise<Health | null> {
  try {
    const r = await fetch("/health", { cache: "no-store" });
    return r.ok || r.status === 503 ? ((await r.json()) as Health) : null;
  } catch {
    return null;
  }
}

function auth(key: string): HeadersInit {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export async function fetchModelInfo(key: string): Promise<ModelInfo | null> {
  try {
    const r = await fetch("/api/models/info", { cache: "no-store", headers: auth(key) });
    return r.ok ? ((await r.json()) as ModelInfo) : null;
  } catch {
    return null;
  }
}

/** Whether the key opens the API: a browser cannot see why a WebSocket upgrade failed, REST can. */
export async function probeKey(key: string): Promise<"ok" | "unauthorized" | "down"> {
  try {
    const r = await fetch("/api/oai/v1/models", { cache: "no-store", headers: auth(key) });
    if (r.status === 401) return "unauthorized";
    return r.ok ? "ok" : "down";
  } catch {
    return "down";
  }
}
