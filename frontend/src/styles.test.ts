// Styles stay with their components: app.css holds only theme tokens, resets and the classes several components
// share; a class one component uses is styled in that component's <style> block, and no scoped rule is dead.

import { compile } from "svelte/compiler";
import { describe, expect, it } from "vitest";

const APP_CSS_MAX_LINES = 300; // 287 lines when the component styles moved out (from 1,186)

/** The class names a component's markup can set: static tokens of class="…" and class:name directives. */
function markupClasses(source: string): Set<string> {
  const markup = source.replace(/<(script|style)[^>]*>[\s\S]*?<\/\1>/g, "");
  const names = new Set<string>();
  for (const [, value] of markup.matchAll(/\bclass="([^"]*)"/g))
    for (const token of value.split(/\s+/)) if (/^[\w-]+$/.test(token)) names.add(token);
  for (const [, name] of markup.matchAll(/\bclass:([\w-]+)/g)) names.add(name);
  return names;
}

// vitest turns every .css import, ?raw included, into "" (its css option), so app.css is read from disk; the
// module name is a variable because the project has no Node type declarations
const fsModule = "node:fs";
const { readFileSync } = (await import(fsModule)) as { readFileSync(path: URL, encoding: "utf8"): string };
const appCss = readFileSync(new URL("./app.css", import.meta.url), "utf8");
const sources: Record<string, string> = import.meta.glob("./**/*.svelte", { query: "?raw", import: "default", eager: true });
const components = Object.entries(sources).map(([path, source]) => ({ name: path.slice(2), source }));

describe("app.css", () => {
  it(`stays under ${APP_CSS_MAX_LINES} lines`, () => {
    expect(appCss.trimEnd().split("\n").length).toBeLessThanOrEqual(APP_CSS_MAX_LINES);
  });

  it("styles only classes that at least two components use", () => {
    const selectors = appCss.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\{[^{}]*\}/g, "{}");
    const styled = new Set([...selectors.matchAll(/\.([a-zA-Z][\w-]*)/g)].map((m) => m[1]));
    const users = (cls: string) => components.filter((c) => markupClasses(c.source).has(cls)).map((c) => c.name);
    const notShared = [...styled].filter((cls) => users(cls).length < 2).map((cls) => `.${cls}: ${users(cls).join(", ") || "unused"}`);
    expect(notShared, "move these rules into the component's <style> (or delete them if unused)").toEqual([]);
  });
});

describe("component styles", () => {
  it.each(components.map((c) => [c.name, c.source]))("%s has no rule that matches nothing", (name, source) => {
    const { warnings } = compile(source, { filename: name });
    const unused = warnings.filter((w) => w.code === "css_unused_selector").map((w) => w.message);
    expect(unused).toEqual([]);
  });
});
