// cors.test.mjs - the client behind a browser's CORS rules, against a real
// gateway with `cors` configured (PROTOCOL section 8).
//
// Node's fetch does not enforce CORS, so browserFetch() below does what a
// browser does for a page on `origin`: it sends Origin, sends the preflight
// (OPTIONS with Access-Control-Request-*) before any request that carries
// Authorization or Content-Type: application/json, and fails with a
// TypeError, as fetch does in a browser, when the preflight or the answer
// does not allow the origin, or hides the headers not exposed. The real
// browser test (browser.test.mjs) checks the same in Chromium.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Run, gatewayConfig, loadClient, waitFor } from "./support.mjs";

const { createClient, MizanError, NetworkError } = await loadClient();
const ALLOWED = "http://127.0.0.1:9";
const REFUSED = "http://evil.example";

function browserFetch(origin, log) {
  return async (url, init = {}) => {
    const headers = { ...(init.headers ?? {}) };
    const method = init.method ?? "GET";
    const names = Object.keys(headers).map((h) => h.toLowerCase());
    const simple = names.every((h) => h === "accept") && (method === "GET" || method === "HEAD");
    if (!simple) {
      const pre = await fetch(url, {
        method: "OPTIONS",
        headers: {
          Origin: origin,
          "Access-Control-Request-Method": method,
          "Access-Control-Request-Headers": names.filter((h) => h !== "accept").sort().join(","),
        },
      });
      log.push({ preflight: true, url: String(url), status: pre.status, headers: pre.headers });
      const allowOrigin = pre.headers.get("access-control-allow-origin");
      const allowHeaders = (pre.headers.get("access-control-allow-headers") ?? "").toLowerCase();
      const allowMethods = pre.headers.get("access-control-allow-methods") ?? "";
      if (pre.status < 200 || pre.status > 299 || allowOrigin !== origin) throw new TypeError("Failed to fetch (preflight refused)");
      for (const h of names) if (h !== "accept" && !allowHeaders.includes(h)) throw new TypeError(`Failed to fetch (header ${h} not allowed)`);
      if (method !== "GET" && !allowMethods.includes(method)) throw new TypeError("Failed to fetch (method not allowed)");
    }
    const res = await fetch(url, { ...init, headers: { ...headers, Origin: origin } });
    log.push({ preflight: false, url: String(url), status: res.status, headers: res.headers });
    if (res.headers.get("access-control-allow-origin") !== origin) {
      await res.body?.cancel();
      throw new TypeError("Failed to fetch (no Access-Control-Allow-Origin)");
    }
    // Only safelisted and exposed headers are visible to the page.
    const exposed = (res.headers.get("access-control-expose-headers") ?? "").toLowerCase().split(/\s*,\s*/);
    const visible = new Headers();
    for (const [k, v] of res.headers) if (["content-type", "cache-control"].includes(k) || exposed.includes(k)) visible.set(k, v);
    return new Proxy(res, {
      get(target, prop) {
        if (prop === "headers") return visible;
        const v = Reflect.get(target, prop, target);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
  };
}

const run = new Run("cors");
let gw;
let plain;
let alice;
const clients = [];
before(async () => {
  gw = await run.gateway("gw", gatewayConfig(run, "gw", { cors: { origins: [ALLOWED], credentials: false, max_age_s: 60 } }));
  plain = await run.gateway("plain", gatewayConfig(run, "plain"));
  alice = gw.token("alice");
});
after(async () => {
  for (const c of clients) c.close();
  await run.cleanup();
});

test("an allowed origin: preflighted calls with a Bearer token, bundles with X-Mizan-Cache, events", async () => {
  const log = [];
  const c = createClient({ baseUrl: gw.url, token: alice, fetch: browserFetch(ALLOWED, log) });
  clients.push(c);
  assert.equal((await c.call("whoami")).sub, "alice");
  const pre = log.find((e) => e.preflight);
  assert.equal(pre.status, 204);
  assert.match(pre.headers.get("access-control-allow-headers"), /Authorization/i);
  assert.equal(log.at(-1).headers.get("vary")?.includes("Origin"), true);

  const b1 = await c.context("post", { post_id: 1 });
  const b2 = await c.context("post", { post_id: 1 });
  assert.equal(b2.cache, "HIT", "X-Mizan-Cache is exposed to the page");
  assert.equal(b1.data.get_post.id, 1);

  // Errors reach the page too: the envelope carries the CORS headers.
  await assert.rejects(c.call("add", { a: 1 }), (e) => e instanceof MizanError && e.code === "VALIDATION_FAILED");

  // The event stream is a CORS request as well (preflighted: Authorization).
  const titles = [];
  c.subscribe("post", { post_id: 1 }, (b) => titles.push(b.data.get_post.title));
  await waitFor(() => c.stats.streamConnected, 10000, "the cross-origin event stream");
  const title = "cors " + Date.now();
  await c.call("update_post", { post_id: 1, title });
  await waitFor(() => titles.at(-1) === title, 10000, "the refetch");
});

test("a refused origin: the preflight is a 403 envelope and the page gets a NetworkError", async () => {
  const res = await fetch(gw.url + "/api/mizan/call/", {
    method: "OPTIONS",
    headers: { Origin: REFUSED, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type" },
  });
  assert.equal(res.status, 403);
  assert.equal((await res.json()).error.code, "FORBIDDEN");
  assert.equal(res.headers.get("access-control-allow-origin"), null);

  const log = [];
  const c = createClient({ baseUrl: gw.url, fetch: browserFetch(REFUSED, log) });
  clients.push(c);
  const e = await c.call("ping").then(() => null, (x) => x);
  assert.ok(e instanceof NetworkError && !(e instanceof MizanError), `expected NetworkError, got ${e}`);
  // A simple GET is sent, answered, and withheld from the page.
  const e2 = await c.context("feed", {}).then(() => null, (x) => x);
  assert.ok(e2 instanceof NetworkError && !(e2 instanceof MizanError));
  assert.equal(log.at(-1).status, 200);
});

test("no cors config: every origin is refused (the default)", async () => {
  const log = [];
  const c = createClient({ baseUrl: plain.url, token: alice, fetch: browserFetch(ALLOWED, log) });
  clients.push(c);
  const e = await c.call("ping").then(() => null, (x) => x);
  assert.ok(e instanceof NetworkError);
  assert.equal(log[0].status, 403);
});
