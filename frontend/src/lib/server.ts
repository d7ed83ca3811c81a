// The few REST calls the UI makes besides the WebSocket: health (slot use), the model's details and the
// loaded initial states (GET /api/models/info), the served models (GET /v1/models), and an auth probe.

export interface Health {
  status: string;
  model: string;
  slots: { total: number; free: number };
}

/** GET /api/models/info; every field optional, so an older server (or none of it) still works. */
export interface ModelInfo {
  model?: { id?: string; version?: string; precision?: string; quant?: number; quant_type?: string; path?: string };
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

export async function fetchModelInfo(key: string, model: string | null = null): Promise<ModelInfo | null> {
  try {
    const query = model ? `?model=${encodeURIComponent(model)}` : "";
    const r = await fetch(`/api/models/info${query}`, { cache: "no-store", headers: auth(key) });
    return r.ok ? ((await r.json()) as ModelInfo) : null;
  } catch {
    return null;
  }
}

/** The served models' names, the default first ([] when the server cannot say). */
export async function fetchModels(key: string): Promise<string[]> {
  try {
    const r = await fetch("/api/oai/v1/models", { cache: "no-store", headers: auth(key) });
    return r.ok ? ((await r.json()) as { data: { id: string }[] }).data.map((m) => m.id) : [];
  } catch {
    return [];
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
