// browser.test.mjs - the blog page (examples/blog/web) in a real browser:
// Debian's Chromium, headless, driven by puppeteer-core.
//
// The page is served by examples/blog/web/serve.mjs on one origin, the
// gateway listens on another and allows that origin (cors), so every call
// is a real cross-origin request with a preflight (Authorization). Page A
// signs in through the UI and edits; page B (anonymous: its event stream is
// an EventSource) must follow without a reload. A page on an origin the
// gateway does not allow gets a NetworkError. Screenshots go to
// MIZAN_TEST_OUTPUT_DIR (default: clients/typescript/test-output/browser).
//
// Chromium missing is a failure naming the package, never a skip.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { CLIENT_DIR, Run, SOURCE_DIR, gatewayConfig, sleep } from "./support.mjs";

const CHROMIUM = process.env.MIZAN_CHROMIUM || "/usr/bin/chromium";
const OUT = process.env.MIZAN_TEST_OUTPUT_DIR || path.join(CLIENT_DIR, "test-output", "browser");
const WEB = path.join(SOURCE_DIR, "examples", "blog", "web");

const run = new Run("browser");
let puppeteer;
let browser;
let gw;
let site;
let other;
let alice;

const t0 = Date.now();
/* One progress line (ctest shows them on failure or with -V). */
function step(msg) {
  console.log(`[${((Date.now() - t0) / 1000).toFixed(2)} s] ${msg}`);
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `no ${CHROMIUM}: install the Debian package chromium (apt-get install -y chromium)`);
  assert.ok(fs.existsSync(path.join(WEB, "dist", "app.js")), "the page is not built: npm run build:web in clients/typescript");
  puppeteer = (await import("puppeteer-core")).default;
  fs.mkdirSync(OUT, { recursive: true });
  const { startServer } = await import(path.join(WEB, "serve.mjs"));
  // The gateway's address must be known before the page server starts.
  const { freePort } = await import("./support.mjs");
  const gwPort = await freePort();
  site = await startServer({ port: 0, api: `http://127.0.0.1:${gwPort}` });
  other = await startServer({ port: 0, host: "localhost", api: `http://127.0.0.1:${gwPort}` });
  run.defer(() => site.close());
  run.defer(() => other.close());
  gw = await run.gateway("gw", gatewayConfig(run, "gw", { cors: { origins: [site.url], credentials: false, max_age_s: 600 }, compress_min_bytes: 256 }), { port: gwPort });
  alice = gw.token("alice");
  const userDataDir = fs.mkdtempSync(path.join(run.tmp, "chromium-"));
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    protocolTimeout: 60000,
    userDataDir,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // Two pages side by side: neither may be throttled as a background tab.
      "--disable-background-timer-throttling",
      "--disable-renderer-backgrounding",
      "--disable-backgrounding-occluded-windows",
      `--user-data-dir=${userDataDir}`,
    ],
  });
  run.defer(() => browser.close());
});

after(async () => {
  await run.cleanup();
});

/* A new page on the blog; console errors and failed requests are collected. */
async function openPage(base, postId = 1) {
  const page = await browser.newPage();
  page.problems = [];
  page.on("pageerror", (e) => page.problems.push(String(e)));
  // What the gateway answered this page (cross-origin, compressed or not).
  page.gatewayAnswers = [];
  page.on("response", (r) => {
    if (r.url().startsWith(gw.url)) page.gatewayAnswers.push({
        url: r.url(),
        status: r.status(),
        method: r.request().method(),
        type: r.request().resourceType(),
        encoding: r.headers()["content-encoding"] ?? null,
      });
  });
  // Every title the page ever shows, from the first paint on.
  await page.evaluateOnNewDocument(() => {
    window.__titlesSeen = [];
    new MutationObserver(() => {
      const el = document.getElementById("post-title");
      if (el && window.__titlesSeen.at(-1) !== el.textContent) window.__titlesSeen.push(el.textContent);
    }).observe(document, { subtree: true, childList: true, characterData: true });
  });
  await page.goto(`${base}/?post=${postId}`, { waitUntil: "load" });
  return page;
}

const title = (page) => page.$eval("#post-title", (el) => el.textContent);
const waitTitle = (page, t, timeout) =>
  page.waitForFunction((want) => document.getElementById("post-title")?.textContent === want, { timeout, polling: 10 }, t);

// Puppeteer's click waits for an animation frame, which a background tab
// never gets: the page acted on is brought to the front first.
async function signIn(page) {
  await page.bringToFront();
  await page.type("#token", alice);
  await page.click("#signin");
  await page.waitForFunction(() => document.getElementById("whoami")?.textContent === "signed in as alice", { timeout: 10000, polling: 20 });
}

async function editTitle(page, t) {
  await page.bringToFront();
  await page.$eval("#title-input", (el) => (el.value = ""));
  await page.type("#title-input", t);
  await page.click("#title-save");
}

test("two pages, a cross-origin gateway: edits and comments made in A appear in B without a reload", async () => {
  const a = await openPage(site.url);
  const b = await openPage(site.url);
  for (const p of [a, b]) await p.waitForFunction(() => window.__mizan?.ready === true, { timeout: 15000, polling: 50 });
  step("pages A and B show post 1");
  const oldTitle = await title(b);
  assert.equal(oldTitle, await title(a));
  await signIn(a);
  step("A signed in through the form");
  // B listens before A writes.
  await b.waitForFunction(() => document.getElementById("live")?.textContent === "connected", { timeout: 10000, polling: 20 });

  step("B's event stream is open");
  const newTitle = "Edited in page A " + Date.now();
  await editTitle(a, newTitle);
  await a.waitForFunction((t) => window.__mizan.acks.some((x) => x.title === t), { timeout: 10000, polling: 20 }, newTitle);
  const ack = await a.evaluate((t) => window.__mizan.acks.find((x) => x.title === t).at, newTitle);
  await waitTitle(b, newTitle, 1000);
  const shown = await b.evaluate((t) => window.__mizan.titles.find((x) => x.title === t).at, newTitle);
  console.log(`first edit: page B showed the new title ${(shown - ack).toFixed(1)} ms after page A's mutation was acknowledged`);
  assert.ok(shown - ack <= 1000, `page B took ${shown - ack} ms`);
  assert.equal(await title(a), newTitle);
  assert.ok(await b.$$eval("#feed li a", (as, t) => as.some((x) => x.textContent === t), newTitle), "B's feed has the new title too");

  step("B shows A's title");
  // A comment from A reaches B's list.
  const comment = "a comment from page A " + Date.now();
  const before = await b.$$eval("#comments li", (lis) => lis.length);
  await a.bringToFront();
  await a.type("#comment-input", comment);
  await a.click("#comment-add");
  await b.waitForFunction(
    (text) => Array.from(document.querySelectorAll("#comments li")).some((li) => li.textContent.includes(text)),
    { timeout: 5000, polling: 10 },
    comment,
  );
  assert.equal(await b.$$eval("#comments li", (lis) => lis.length), before + 1);
  assert.equal(await b.$eval("#comment-count", (el) => el.textContent), String(before + 1));

  step("B shows A's comment");
  // A page loaded after the edit never shows the old title.
  const c = await openPage(site.url);
  await c.waitForFunction(() => window.__mizan?.ready === true, { timeout: 15000, polling: 50 });
  const seen = await c.evaluate(() => window.__titlesSeen);
  assert.ok(!seen.includes(oldTitle), `page C showed ${JSON.stringify(seen)}`);
  assert.equal(await title(c), newTitle);

  await a.screenshot({ path: path.join(OUT, "page-a.png"), fullPage: true });
  await b.screenshot({ path: path.join(OUT, "page-b.png"), fullPage: true });
  await c.screenshot({ path: path.join(OUT, "page-c-loaded-after-edit.png"), fullPage: true });
  for (const p of [a, b, c]) assert.deepEqual(p.problems, []);
  // The browser itself preflighted A's authorised calls and inflated gzip answers.
  assert.ok(a.gatewayAnswers.some((r) => r.method === "OPTIONS" && r.status === 204), "A's requests were preflighted");
  assert.ok(b.gatewayAnswers.some((r) => r.encoding === "gzip"), "B received compressed bundles");
  // Anonymous B listens through EventSource; A, with a Bearer token, through a streaming fetch.
  const streams = (p) => p.gatewayAnswers.filter((r) => r.url.includes("/events/")).map((r) => r.type);
  assert.ok(streams(b).length > 0 && streams(b).every((t) => t === "eventsource"), `B's streams: ${streams(b)}`);
  assert.equal(streams(a).at(-1), "fetch", `A's streams: ${streams(a)}`);

  // Event-to-DOM latency over 20 edits (reported, not asserted).
  const eventToDom = [];
  const ackToDom = [];
  for (let i = 0; i < 20; i++) {
    const t = `Latency run ${i} ${Date.now()}`;
    await editTitle(a, t);
    await waitTitle(b, t, 10000);
    await a.waitForFunction((x) => window.__mizan.acks.some((k) => k.title === x), { timeout: 10000, polling: 20 }, t);
    const ackAt = await a.evaluate((x) => window.__mizan.acks.find((k) => k.title === x).at, t);
    const { at, ev } = await b.evaluate((x) => {
      const r = window.__mizan.titles.find((k) => k.title === x);
      const evs = window.__mizan.events.filter((e) => e.context === "post" && e.at <= r.at);
      return { at: r.at, ev: evs.at(-1)?.at };
    }, t);
    assert.ok(ev !== undefined, "B received an invalidation event before it rendered");
    eventToDom.push(at - ev);
    ackToDom.push(at - ackAt);
    await sleep(50);
  }
  const fmt = (xs) => `median ${median(xs).toFixed(1)} ms, max ${Math.max(...xs).toFixed(1)} ms`;
  console.log(`event-to-DOM latency over 20 edits (event arrives in B -> title in B's DOM): ${fmt(eventToDom)}`);
  console.log(`A's acknowledged mutation -> title in B's DOM over 20 edits: ${fmt(ackToDom)}`);
  fs.writeFileSync(path.join(OUT, "latency.json"), JSON.stringify({ eventToDom, ackToDom }, null, 1));
  await b.screenshot({ path: path.join(OUT, "page-b-after-20-edits.png"), fullPage: true });
  console.log(`screenshots in ${OUT}`);
  for (const p of [a, b, c]) await p.close();
});

test("a page on an origin the gateway does not allow gets a NetworkError, not the data", async () => {
  const p = await browser.newPage();
  await p.goto(`${other.url}/?post=1`, { waitUntil: "load" });
  await p.waitForFunction(() => /network error/.test(document.getElementById("status")?.textContent ?? ""), { timeout: 15000, polling: 50 });
  assert.equal(await title(p), "…");
  await p.screenshot({ path: path.join(OUT, "page-refused-origin.png"), fullPage: true });
  await p.close();
});

test("cookie mode: the token in the gateway's cookie, credentials on every request and on the EventSource", async () => {
  const { startServer } = await import(path.join(WEB, "serve.mjs"));
  const { freePort } = await import("./support.mjs");
  const port = await freePort();
  const site2 = await startServer({ port: 0, api: `http://127.0.0.1:${port}` });
  run.defer(() => site2.close());
  const gw2 = await run.gateway("gw-cookie", gatewayConfig(run, "gw-cookie", { cors: { origins: [site2.url], credentials: true } }), { port });
  const token = gw2.token("alice");
  const page = await browser.newPage();
  const answers = [];
  page.on("response", (r) => {
    if (r.url().startsWith(gw2.url)) answers.push({ url: r.url(), type: r.request().resourceType(), cookie: "cookie" in r.request().headers() || null });
  });
  // The cookie a sign-in endpoint of the site would have set (cookies ignore ports).
  await page.setCookie({ name: "mwt", value: token, url: gw2.url, httpOnly: true, sameSite: "Lax" });
  await page.goto(`${site2.url}/?post=2&cookie=1`, { waitUntil: "load" });
  await page.waitForFunction(() => document.getElementById("whoami")?.textContent === "signed in as alice", { timeout: 15000, polling: 50 });
  step("cookie mode: signed in as alice through the user-scoped context me");
  const t = "Edited with a cookie " + Date.now();
  await editTitle(page, t);
  await waitTitle(page, t, 10000);
  const streams = answers.filter((r) => r.url.includes("/events/"));
  assert.ok(streams.length > 0 && streams.every((r) => r.type === "eventsource"), JSON.stringify(streams));
  assert.ok(answers.some((r) => r.url.includes("/ctx/me/")), "the me context was read");
  await page.screenshot({ path: path.join(OUT, "page-cookie-mode.png"), fullPage: true });
  await page.close();
});
