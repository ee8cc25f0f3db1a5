// The dashboard in real headless Chromium (Debian's package), against the real server fed by the
// simulator. Run by scripts/test.sh after `cargo build`; screenshots go to target/screenshots/.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, createHmac, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.CALLPULSE_BIN || join(ROOT, "target/debug/callpulse");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const SHOTS = process.env.SCREENSHOT_DIR || join(ROOT, "target/screenshots");
const KEY = "APIbrowser";
const SECRET = "browser-test-secret-that-is-long-enough";
const TOKEN = "browser-events-token";

let server;
let base;
let browser;
let page;
let dir;

function run(args, { onLine } = {}) {
  const child = spawn(BIN, args, { env: { ...process.env, NO_COLOR: "1", RUST_LOG: "info" } });
  let buffer = "";
  const read = (chunk) => {
    buffer += chunk.toString();
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).replace(/\x1b\[[0-9;]*m/g, "");
      buffer = buffer.slice(newline + 1);
      if (onLine) onLine(line);
    }
  };
  child.stdout.on("data", read);
  child.stderr.on("data", read);
  return child;
}

function startServer() {
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start within 30 s")), 30000);
    server = run(
      ["serve", "--listen", "127.0.0.1:0", "--metrics-addr", "off", "--database", `sqlite://${join(dir, "callpulse.db")}`,
        "--livekit-keys", `${KEY}:${SECRET}`, "--events-token", TOKEN],
      {
        onLine: (line) => {
          const m = line.match(/callpulse listening addr=(\S+)/);
          if (m) {
            clearTimeout(timer);
            resolvePromise(`http://${m[1]}`);
          }
        },
      },
    );
    server.on("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
}

function simulate(seed) {
  return new Promise((resolvePromise, reject) => {
    const child = run(["simulate", "--url", base, "--livekit-keys", `${KEY}:${SECRET}`, "--events-token", TOKEN,
      "--rate", "40", "--duration", "3", "--speed", "300", "--seed", String(seed)]);
    child.on("exit", (code) => (code === 0 ? resolvePromise() : reject(new Error(`simulate exited with ${code}`))));
  });
}

async function api(path) {
  const r = await fetch(base + path);
  assert.equal(r.status, 200, path);
  return r.json();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until no call is in progress and the day's totals stop moving. */
async function settle() {
  let previous = null;
  for (let i = 0; i < 120; i++) {
    const [live, summary] = await Promise.all([api("/api/v1/live"), api("/api/v1/summary")]);
    const now = JSON.stringify(summary.today);
    if (live.summary.active_calls === 0 && now === previous) return;
    previous = now;
    await sleep(500);
  }
  throw new Error("traffic never settled");
}

/** A LiveKit webhook token: HS256 over the body's SHA-256, as LiveKit signs it. */
function sign(body) {
  const b64 = (text) => Buffer.from(text).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const header = b64(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims = b64(JSON.stringify({
    iss: KEY, nbf: now - 5, exp: now + 300, sub: "", name: "",
    sha256: createHash("sha256").update(body).digest("base64"),
  }));
  const signature = createHmac("sha256", SECRET).update(`${header}.${claims}`).digest("base64url");
  return `${header}.${claims}.${signature}`;
}

/** LiveKit's sample `participant_joined` of an inbound caller, as a new call starting now. */
function newInboundCall() {
  const callId = "SCL_browser" + randomBytes(3).toString("hex");
  const sample = readFileSync(join(ROOT, "crates/server/tests/fixtures/livekit/02-inbound-answered-participant_joined-sip.json"), "utf8");
  const shift = Math.floor(Date.now() / 1000) - 1795442531;
  const body = sample
    .replaceAll("SCL_9piNuUTbRzfj", callId)
    .replaceAll("EV_Up4AvJm9nVbH", "EV_" + randomBytes(6).toString("hex"))
    .replaceAll("PA_mu5LPXkN45rK", "PA_" + randomBytes(6).toString("hex"))
    .replace(/"(17\d{8})"/g, (_, s) => `"${Number(s) + shift}"`)
    .replace(/"(17\d{11})"/g, (_, ms) => `"${Number(ms) + shift * 1000}"`);
  return { callId, body };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "callpulse-browser-"));
  mkdirSync(SHOTS, { recursive: true });
  base = await startServer();
  await simulate(7);
  await settle();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(base + "/");
  await page.waitForSelector('#connection[data-state="live"]');
  await page.waitForSelector('[data-metric="error_rate"]');
  await page.waitForSelector("#cdr-table tbody tr");
});

after(async () => {
  if (browser) await browser.close();
  if (server) server.kill("SIGTERM");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("the numbers on the page equal the API's", async () => {
  const summary = await api("/api/v1/summary");
  assert.ok(summary.today.total_calls >= 50, `enough simulated calls: ${summary.today.total_calls}`);
  for (const name of ["total_calls", "answer_rate", "avg_handle_time_seconds", "abandonment_rate",
    "avg_speed_of_answer_seconds", "service_level", "error_rate"]) {
    const tile = page.locator(`[data-metric="${name}"]`);
    assert.equal(await tile.getAttribute("data-value"), String(summary.today[name]), name);
    assert.equal(await tile.getAttribute("data-status"), summary.status[name], name);
    const text = await tile.locator(".value").textContent();
    assert.notEqual(text, "–", `${name} is shown`);
  }
  const percent = await page.locator('[data-metric="answer_rate"] .value').textContent();
  assert.equal(percent, (summary.today.answer_rate * 100).toFixed(1) + "%");

  const live = await api("/api/v1/live");
  for (const name of ["active_calls", "ringing_calls", "callers_in_queue"]) {
    assert.equal(await page.locator(`[data-live="${name}"]`).getAttribute("data-value"), String(live.summary[name]), name);
  }
  assert.equal(await page.locator('[data-live="agents_available"]').getAttribute("data-value"),
    String(live.summary.agents.available));

  const trunks = await api("/api/v1/metrics?group_by=trunk");
  const shown = trunks.groups.filter((g) => g.metrics.total_calls > 0);
  assert.ok(shown.length >= 2, "several trunks carried calls");
  assert.equal(await page.locator("#breakdown-table tbody tr").count(), shown.length);
  for (const g of shown) {
    const row = page.locator(`#breakdown-table tr[data-key="${g.key}"]`);
    assert.equal(await row.locator('[data-field="total_calls"]').textContent(), String(g.metrics.total_calls), g.key);
  }

  const cdrs = await api("/api/v1/cdrs?order=desc&limit=50");
  const ids = await page.locator("#cdr-table tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.call));
  assert.deepEqual(ids, cdrs.cdrs.map((c) => c.call_id));

  const ingest = await api("/api/v1/ingest");
  await page.waitForFunction(
    (n) => document.querySelector('[data-ingest="events_in_log"]').dataset.value === String(n),
    ingest.events_in_log,
  );
  await page.screenshot({ path: join(SHOTS, "dashboard.png"), fullPage: true });
});

test("a metric that breaks its target is shown red", async () => {
  const summary = await api("/api/v1/summary");
  const bad = Object.keys(summary.status).filter((k) => summary.status[k] === "bad");
  const onPage = bad.filter((name) => name !== "transfer_rate" && name !== "connect_rate");
  assert.ok(onPage.length > 0, `the simulated day breaks a target: ${JSON.stringify(summary.status)}`);
  for (const name of onPage) {
    const value = page.locator(`[data-metric="${name}"] .value`);
    const color = await value.evaluate((node) => getComputedStyle(node).color);
    assert.equal(color, "rgb(248, 81, 73)", `${name} is red`);
  }
  const fine = Object.keys(summary.status).filter((k) => summary.status[k] === "ok" && k !== "total_calls");
  for (const name of fine.filter((n) => n !== "transfer_rate" && n !== "connect_rate")) {
    const color = await page.locator(`[data-metric="${name}"] .value`).evaluate((node) => getComputedStyle(node).color);
    assert.notEqual(color, "rgb(248, 81, 73)", `${name} meets its target and is not red`);
  }
  assert.equal(await page.locator("#health").getAttribute("data-health"), "bad");
});

test("a new call appears on the live panel without a reload", async () => {
  const before = Number(await page.locator('[data-live="active_calls"]').getAttribute("data-value"));
  const navigations = [];
  page.on("framenavigated", (frame) => navigations.push(frame.url()));
  const { callId, body } = newInboundCall();
  const r = await fetch(base + "/webhooks/livekit", {
    method: "POST",
    headers: { "Content-Type": "application/webhook+json", Authorization: sign(body) },
    body,
  });
  assert.equal(r.status, 200, await r.text());
  const row = page.locator(`#live-calls tr[data-call="${callId}"]`);
  await row.waitFor({ timeout: 10000 });
  assert.equal(await row.locator("td").nth(2).textContent(), "ringing");
  await page.waitForFunction(
    (n) => document.querySelector('[data-live="active_calls"]').dataset.value === String(n),
    before + 1,
  );
  assert.equal(await page.locator('[data-live="callers_in_queue"]').getAttribute("data-value"), "1");
  assert.deepEqual(navigations, [], "the page was not reloaded");
});

test("a CDR opens with its event timeline", async () => {
  const first = page.locator("#cdr-table tbody tr").first();
  const callId = await first.getAttribute("data-call");
  await first.click();
  const dialog = page.locator("#cdr-dialog");
  await dialog.waitFor({ state: "visible" });
  assert.equal(await page.locator("#cdr-title").textContent(), callId);
  const { events, cdr } = await api("/api/v1/cdrs/" + callId);
  await page.waitForFunction((n) => document.querySelectorAll("#cdr-events tbody tr").length === n, events.length);
  const types = await page.locator("#cdr-events tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.event));
  assert.deepEqual(types, events.map((e) => e.type));
  assert.equal(await page.locator('#cdr-fields [data-field="outcome"]').textContent(), cdr.outcome);
  await page.screenshot({ path: join(SHOTS, "cdr-timeline.png") });
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "hidden" });
});

test("the trend charts load", async () => {
  const images = page.locator(".charts img");
  assert.equal(await images.count(), 10);
  await page.waitForFunction(() => [...document.querySelectorAll(".charts img")].every((i) => i.complete && i.naturalWidth > 0));
});

test("the page fits a wall screen and a laptop without sideways scrolling", async () => {
  for (const [name, width, height] of [["wall", 1920, 1080], ["laptop", 1366, 768]]) {
    await page.setViewportSize({ width, height });
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.waitForTimeout(200);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${name}: ${overflow}px wider than the window`);
    // On the wall screen not even a table may need sideways scrolling.
    const selector = name === "wall" ? ".panel, .split > div, .panel .scroll" : ".panel, .split > div";
    const clipped = await page.evaluate((sel) =>
      [...document.querySelectorAll(sel)]
        .filter((n) => n.offsetParent !== null && n.scrollWidth > n.clientWidth + 1)
        .map((n) => n.id || n.firstElementChild?.id || n.className), selector);
    assert.deepEqual(clipped, [], `${name}: content wider than its panel`);
    const valueSize = await page.locator('[data-live="active_calls"] .value').evaluate((n) => parseFloat(getComputedStyle(n).fontSize));
    assert.ok(valueSize >= 28, `${name}: live figures are large (${valueSize}px)`);
    await page.screenshot({ path: join(SHOTS, `dashboard-${name}.png`) });
  }
});
