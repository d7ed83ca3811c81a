/// <reference types="vitest/config" />
import { svelte } from "@sveltejs/vite-plugin-svelte";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const here = fileURLToPath(new URL(".", import.meta.url));
const backend = process.env.AI00_BACKEND ?? "http://127.0.0.1:65530";

export default defineConfig({
  root: here,
  plugins: [svelte()],
  build: {
    // package data: backend/api/static.py serves it, so an installed wheel ships a working UI
    outDir: fileURLToPath(new URL("../backend/static", import.meta.url)),
    emptyOutDir: true,
    assetsDir: "assets",
    chunkSizeWarningLimit: 1200,
  },
  server: {
    proxy: {
      "/api": { target: backend, ws: true },
      "/health": backend,
    },
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
