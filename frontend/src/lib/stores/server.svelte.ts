// What the server says about itself over REST: slot use (polled, and at once when a generation starts or
// ends) and the model's details with its loaded initial states (on connect and now and then).

import { fetchHealth, fetchModelInfo, fetchModels, type Health, type ModelInfo } from "../server";
import { connection, socket } from "./connection.svelte";
import { activity } from "./generations.svelte";

export const server = $state({
  health: null as Health | null,
  info: null as ModelInfo | null,
  models: [] as string[], // the served models; a picker shows when there are several
  model: null as string | null, // the one this tab's socket uses (null: the default)
});

/** Run this tab's later generations on `model`. */
export function chooseModel(model: string): void {
  server.model = model;
  socket.setModel(model);
  void pollInfo();
}

const visible = () => document.visibilityState === "visible";

async function pollHealth(): Promise<void> {
  if (visible()) server.health = await fetchHealth();
}

async function pollInfo(): Promise<void> {
  if (!visible() || connection.status !== "open") return;
  server.models = await fetchModels(connection.apiKey);
  server.info = await fetchModelInfo(connection.apiKey, server.model);
}

/** Start polling; returns the function that stops it. */
export function watchServer(): () => void {
  const timers = [setInterval(pollHealth, 3000), setInterval(pollInfo, 15000)];
  const stop = $effect.root(() => {
    $effect(() => {
      void activity.changes;
      void pollHealth();
    });
    $effect(() => {
      void connection.session; // a (re)connect may mean another model
      void pollInfo();
    });
  });
  return () => {
    timers.forEach(clearInterval);
    stop();
  };
}
