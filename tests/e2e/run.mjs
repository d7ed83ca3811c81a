// Browser scenarios against a running server, in Debian's chromium driven by playwright-core (no downloaded
// browser). tests/e2e/test_ui.py starts the real server and runs one scenario per test:
//   node tests/e2e/run.mjs SCENARIO --base http://127.0.0.1:PORT --key KEY [--chromium /usr/bin/chromium]
// Exit 0 when the scenario passed; otherwise the error, the page's console and a failure-SCENARIO.png.

import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { positionals, values: opt } = parseArgs({
  allowPositionals: true,
  options: {
    base: { type: "string" },
    key: { type: "string", default: "" },
    chromium: { type: "string", default: process.env.AI00_CHROMIUM ?? "/usr/bin/chromium" },
    screenshots: { type: "string", default: join(dirname(fileURLToPath(import.meta.url)), "screenshots") },
  },
});

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const DESKTOP = { width: 1360, height: 860 };
const PHONE = { width: 390, height: 844 };
const STREAM_MS = 60_000; // lavapipe: tens of ms a step, and the first step compiles pipelines

function check(cond, message) {
  if (!cond) throw new Error(message);
}

/** A page on `path` with the API key already saved, connected to the server. */
async function openConnected(ctx, path = "/") {
  const page = await ctx.newPage();
  await page.addInitScript((key) => localStorage.setItem("ai00.apiKey", key), opt.key);
  await page.goto(opt.base + path);
  await page.locator('[data-testid="connection"][data-status="open"]').waitFor({ timeout: 20_000 });
  return page;
}

/** Sets a settings field the way a user does: type the value, leave the field (change event). */
async function setNumber(page, name, value) {
  await openSettingsIfDrawer(page);
  const input = page.getByTestId(`param-${name}`);
  await input.fill(String(value));
  await input.dispatchEvent("change");
}

async function openSettingsIfDrawer(page) {
  const toggle = page.getByRole("button", { name: "Settings", exact: true });
  if (await toggle.isVisible()) {
    if ((await toggle.getAttribute("aria-expanded")) !== "true") await toggle.click();
  }
}

/** Waits until `locator`'s text is at least `min` characters long; returns it. */
async function waitForText(page, selector, min = 1, timeout = STREAM_MS) {
  const handle = await page.waitForFunction(
    ([sel, n]) => {
      const el = document.querySelector(sel);
      const t = el ? (el.value ?? el.textContent ?? "") : "";
      return t.trim().length >= n ? t : false;
    },
    [selector, min],
    { timeout, polling: 50 },
  );
  return handle.jsonValue();
}

/** ai00:requests_total summed per model_name label, from /metrics. */
async function requestsByModel() {
  const text = await (await fetch(opt.base + "/metrics")).text();
  const counts = {};
  for (const m of text.matchAll(/^ai00:requests_total\{([^}]*)\} (\S+)$/gm)) {
    const model = /model_name="([^"]*)"/.exec(m[1])?.[1];
    if (model) counts[model] = (counts[model] ?? 0) + Number(m[2]);
  }
  return counts;
}

async function shot(page, name) {
  await page.screenshot({ path: join(opt.screenshots, `${name}.png`) });
}

const scenarios = {
  /** Open / without a key: the page asks for it; then a chat message streams a reply. */
  async chat_streams_reply(ctx) {
    const page = await ctx.newPage();
    await page.goto(opt.base + "/");
    if (opt.key) {
      await page.getByTestId("key-prompt").waitFor({ timeout: 20_000 });
      await shot(page, "key-prompt");
      await page.locator("#api-key").fill(opt.key);
      await page.getByTestId("key-prompt").getByRole("button", { name: "Connect" }).click();
    }
    await page.locator('[data-testid="connection"][data-status="open"]').waitFor({ timeout: 20_000 });
    await setNumber(page, "max_tokens", 48);
    await page.getByTestId("composer-input").fill("Hello! Write a short poem about the sea.");
    await page.getByTestId("send").click();
    // the reply streams in: it shows as streaming, text grows, then it finishes
    await page.locator(".msg-assistant.streaming").waitFor({ timeout: 10_000 });
    const first = await waitForText(page, ".msg-assistant .md", 1);
    await page.locator(".msg-assistant.streaming").waitFor({ state: "detached", timeout: STREAM_MS });
    const final = (await page.locator(".msg-assistant .md").innerText()).trim();
    check(final.length >= first.trim().length, `the reply shrank: ${JSON.stringify(first)} -> ${JSON.stringify(final)}`);
    check((await page.getByTestId("msg-user").count()) === 1, "the user's message is not shown");
    await shot(page, "chat-streamed-reply");
    // kept in the browser: a reload shows the same conversation
    await page.reload();
    await page.locator(".msg-assistant .md").waitFor();
    check((await page.locator(".msg-assistant .md").innerText()).trim() === final, "the conversation was not kept");
  },

  /** Stop mid-stream: the reply ends as "stopped" long before max_tokens and Send comes back. */
  async stop_mid_stream(ctx) {
    const page = await openConnected(ctx, "/chat");
    await setNumber(page, "max_tokens", 400);
    await page.getByTestId("composer-input").fill("Tell me a very long story.");
    await page.getByTestId("send").click();
    await waitForText(page, ".msg-assistant .md", 8);
    await page.getByTestId("stop").click();
    await page.getByTestId("send").waitFor({ timeout: 10_000 });
    const finish = await page.getByTestId("finish").innerText();
    check(finish === "stopped", `finish label: ${finish}`);
    const tokens = await page.evaluate(() => JSON.parse(localStorage.getItem("ai00.conversations")));
    const reply = tokens.list[0].messages.at(-1);
    check(reply.finish === "cancelled", `saved finish_reason: ${reply.finish}`);
    await shot(page, "chat-stopped");
  },

  /** Regenerate, edit and delete messages; a second conversation; role names reach the prompt. */
  async chat_edit_regenerate_delete(ctx) {
    const page = await openConnected(ctx, "/chat");
    await setNumber(page, "max_tokens", 12);
    const idle = () => page.getByTestId("send").waitFor({ timeout: STREAM_MS });
    const replies = page.getByTestId("msg-assistant");
    await page.getByLabel("User name").fill("Alice");
    await page.getByLabel("User name").dispatchEvent("change");
    await page.getByTestId("composer-input").fill("First question");
    await page.getByTestId("composer-input").press("Enter");
    await page.locator(".msg-assistant.streaming").waitFor({ timeout: 10_000 });
    await idle();
    check((await page.getByTestId("msg-user").locator(".who").innerText()) === "Alice", "user name not shown");

    // regenerate: the reply is replaced by a new one
    await replies.first().hover();
    await replies.first().getByRole("button", { name: "Regenerate" }).click();
    await page.locator(".msg-assistant.streaming").waitFor({ timeout: 10_000 });
    await idle();
    check((await replies.count()) === 1, `${await replies.count()} replies after regenerate`);

    // edit the question and regenerate from it
    const question = page.getByTestId("msg-user").first();
    await question.hover();
    await question.getByRole("button", { name: "Edit" }).click();
    await page.getByLabel("Edit message").fill("Edited question");
    await page.getByRole("button", { name: "Save & regenerate" }).click();
    await page.locator(".msg-assistant.streaming").waitFor({ timeout: 10_000 });
    await idle();
    check((await question.getByTestId("msg-text").innerText()).trim() === "Edited question", "edit not saved");
    check((await replies.count()) === 1, `${await replies.count()} replies after edit`);

    // delete the reply
    await replies.first().hover();
    await replies.first().getByRole("button", { name: "Delete" }).click();
    check((await replies.count()) === 0, "reply not deleted");

    // a second conversation, then back to the first
    await page.getByTestId("new-chat").click();
    check((await page.getByTestId("msg-user").count()) === 0, "the new chat is not empty");
    const titles = page.locator(".convs .conv-title");
    check((await titles.count()) === 2, `${await titles.count()} conversations`);
    await titles.filter({ hasText: "First question" }).click();
    await page.getByTestId("msg-user").waitFor();
    await shot(page, "chat-conversations");
  },

  /** Paper with N = 4: four streams side by side, each with text and tokens/s, and a batch total. */
  async paper_four_streams(ctx) {
    const page = await openConnected(ctx, "/paper");
    await setNumber(page, "max_tokens", 24);
    await page.getByTestId("paper-prompt").fill("Once upon a time,");
    await page.getByTestId("paper-n").fill("4");
    check((await page.getByTestId("paper-n-value").innerText()) === "4", "N is not 4");
    await page.getByTestId("paper-go").click();
    await page.getByTestId("paper-go").waitFor({ timeout: STREAM_MS }); // back when all four are done
    const streams = page.getByTestId("paper-stream");
    check((await streams.count()) === 4, `${await streams.count()} streams`);
    for (let i = 0; i < 4; i++) {
      const text = await streams.nth(i).getByTestId("stream-text").innerText();
      const rate = parseFloat(await streams.nth(i).getByTestId("stream-rate").innerText());
      check(text.length > 0, `stream ${i + 1} is empty`);
      check(rate > 0, `stream ${i + 1}: ${rate} tok/s`);
    }
    const total = await page.getByTestId("paper-total").innerText();
    check(/4 ×/.test(total) && parseFloat(total.split("·")[2]) > 0, `total: ${total}`);
    await shot(page, "paper-four-streams");
  },

  /** Moving the temperature slider during a generation sends `update`; the `updated` ack is shown. */
  async live_temperature_update(ctx) {
    const page = await openConnected(ctx, "/continuation");
    await setNumber(page, "max_tokens", 400);
    await page.getByTestId("continuation-text").fill("The history of the world, in brief:");
    await page.getByTestId("continue").click();
    await page.getByTestId("stop").waitFor();
    const before = (await page.getByTestId("continuation-text").inputValue()).length;
    await page.waitForFunction(
      (n) => document.querySelector('[data-testid="continuation-text"]').value.length > n,
      before,
      { timeout: STREAM_MS, polling: 50 },
    );
    const slider = page.getByTestId("param-temperature");
    await slider.fill("0.3"); // a range input: fill sets the value and fires input + change
    const ack = page.getByTestId("update-ack");
    await ack.getByText("updated").waitFor({ timeout: 10_000 });
    const text = await ack.innerText();
    check(/from token \d+: temperature 0\.30/.test(text), `ack: ${text}`);
    await shot(page, "continuation-live-update");
    await page.getByTestId("stop").click();
    await page.getByTestId("continue").waitFor({ timeout: 10_000 });
    check((await page.getByTestId("continue").innerText()).includes("Continue again"), "no 'Continue again'");
  },

  /** With two models served, the picker sends this tab's generations to the one chosen (per-model /metrics). */
  async model_picker(ctx) {
    const page = await openConnected(ctx, "/continuation");
    const picker = page.getByTestId("model-picker");
    await picker.waitFor({ timeout: 20_000 });
    check((await picker.inputValue()) === "alpha", `the picker starts on ${await picker.inputValue()}`);
    await picker.selectOption("beta");
    const before = await requestsByModel();
    await setNumber(page, "max_tokens", 4);
    await page.getByTestId("continue").click();
    await page.getByTestId("continuation-stats").getByText("generated").waitFor({ timeout: STREAM_MS });
    await page.getByTestId("continue").waitFor({ timeout: STREAM_MS });
    const after = await requestsByModel();
    check(after.beta === (before.beta ?? 0) + 1 && (after.alpha ?? 0) === (before.alpha ?? 0),
          `requests by model: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
    await shot(page, "model-picker");
  },

  /** Every page on a desktop and a phone, light and dark, for a person to look at. */
  async screenshots(ctx) {
    const page = await openConnected(ctx, "/chat");
    await page.evaluate(() => {
      const conv = {
        id: "demo",
        title: "Markdown demo",
        names: { user: "Alice", assistant: "RWKV" },
        updated: Date.now(),
        messages: [
          { id: "m1", role: "user", content: "Show me a Python function and a table, please." },
          {
            id: "m2",
            role: "assistant",
            finish: "stop",
            tokPerS: 42.5,
            content:
              "Sure! Here is **fizzbuzz**:\n\n```python\ndef fizzbuzz(n: int) -> str:\n    # multiples of 15 first\n    if n % 15 == 0:\n        return \"FizzBuzz\"\n    return str(n)\n```\n\n| model | layers |\n| --- | --- |\n| demo | 2 |\n\n<img src=x onerror=alert(1)> Inline `code` and a [link](https://example.com).",
          },
        ],
      };
      localStorage.setItem("ai00.conversations", JSON.stringify({ list: [conv], current: "demo" }));
    });
    await page.reload();
    await page.locator(".msg-assistant pre.code").waitFor();
    check((await page.locator(".msg-assistant img").count()) === 0, "an <img> survived sanitizing");
    check((await page.locator(".msg-assistant .hljs-keyword").count()) > 0, "code is not highlighted");
    for (const theme of ["light", "dark"]) {
      await page.evaluate((t) => localStorage.setItem("ai00.theme", t), theme);
      for (const [size, vp] of [["desktop", DESKTOP], ["phone", PHONE]]) {
        await page.setViewportSize(vp);
        for (const path of ["/chat", "/continuation", "/paper"]) {
          await page.goto(opt.base + path);
          await page.locator('[data-testid="connection"][data-status="open"]').waitFor({ timeout: 20_000 });
          await shot(page, `${path.slice(1)}-${size}-${theme}`);
        }
      }
    }
    await page.setViewportSize(PHONE);
    await page.goto(opt.base + "/continuation");
    await openSettingsIfDrawer(page);
    await page.waitForTimeout(300); // the drawer slides in
    await shot(page, "settings-phone-dark");
  },
};

async function main() {
  const name = positionals[0];
  check(scenarios[name], `unknown scenario '${name}'; one of: ${Object.keys(scenarios).join(", ")}`);
  check(opt.base, "--base http://HOST:PORT is required");
  mkdirSync(opt.screenshots, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), "ai00-e2e-"));
  const logs = [];
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: opt.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: DESKTOP,
  });
  ctx.on("page", (page) => {
    page.on("console", (m) => logs.push(`[console.${m.type()}] ${m.text()}`));
    page.on("pageerror", (e) => logs.push(`[pageerror] ${e.message}`));
    page.on("request", (r) => {
      // everything the UI loads must come from the server itself
      if (!r.url().startsWith(opt.base) && !r.url().startsWith("data:")) logs.push(`[external] ${r.url()}`);
    });
  });
  const started = Date.now();
  try {
    await scenarios[name](ctx);
    const external = logs.filter((l) => l.startsWith("[external]") || l.startsWith("[pageerror]"));
    check(external.length === 0, `unexpected requests or page errors:\n${external.join("\n")}`);
    console.log(`ok ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (e) {
    const page = ctx.pages().at(-1);
    if (page) await page.screenshot({ path: join(opt.screenshots, `failure-${name}.png`) }).catch(() => {});
    console.error(`FAILED ${name}: ${e.stack ?? e}`);
    console.error(logs.join("\n"));
    process.exitCode = 1;
  } finally {
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

await main();
