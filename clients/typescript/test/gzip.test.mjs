// gzip.test.mjs - compressed answers through the client (PROTOCOL section
// 8): large results and bundles come gzip-compressed when the request
// accepts it, the client hands back exactly the JSON the gateway meant,
// small answers and event streams stay uncompressed.
import assert from "node:assert/strict";
import http from "node:http";
import zlib from "node:zlib";
import { after, before, test } from "node:test";
import { Run, gatewayConfig, loadClient, recordingFetch, waitFor } from "./support.mjs";

const { createClient } = await loadClient();
const run = new Run("gzip");
let gw;
let alice;
const clients = [];
before(async () => {
  gw = await run.gateway("gw", gatewayConfig(run, "gw", { compress_min_bytes: 512 }));
  alice = gw.token("alice");
});
after(async () => {
  for (const c of clients) c.close();
  await run.cleanup();
});

/* One raw GET or POST: status, headers and the bytes as sent on the wire. */
function raw(method, path, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: gw.port, method, path, headers }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, bytes: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

test("a large result round-trips compressed and equal", async () => {
  const rec = recordingFetch();
  const c = createClient({ baseUrl: gw.url, fetch: rec });
  clients.push(c);
  const value = { rows: Array.from({ length: 2000 }, (_, i) => ({ i, name: `row ${i}`, tags: ["a", "b", "é✓"], ok: i % 2 === 0 })) };
  const back = await c.call("echo", { value });
  assert.deepEqual(back, value);
  assert.equal(rec.log.at(-1).response.get("content-encoding"), "gzip", "the answer was compressed");
  assert.match(rec.log.at(-1).response.get("vary") ?? "", /Accept-Encoding/i);

  // The same bytes by hand: compressed on the wire, the envelope inside.
  const body = JSON.stringify({ function: "echo", args: { value } });
  const r = await raw("POST", "/api/mizan/call/", body, { "Content-Type": "application/json", "Accept-Encoding": "gzip" });
  assert.equal(r.headers["content-encoding"], "gzip");
  const plain = zlib.gunzipSync(r.bytes);
  assert.deepEqual(JSON.parse(plain).result, value);
  console.log(`echo of ${plain.length} bytes: ${r.bytes.length} bytes on the wire (ratio ${(plain.length / r.bytes.length).toFixed(1)}x)`);
});

test("a large bundle round-trips compressed and equal; a small answer is not compressed", async () => {
  const rec = recordingFetch();
  const c = createClient({ baseUrl: gw.url, token: alice, fetch: rec });
  clients.push(c);
  const text = "A long body. ".repeat(800);
  const post = await c.call("create_post", { title: "big", body: text });
  const b = await c.context("post", { post_id: post.id });
  assert.equal(b.data.get_post.body, text);
  assert.equal(rec.log.at(-1).response.get("content-encoding"), "gzip");
  assert.ok(["MISS", "HIT"].includes(b.cache));
  const again = await c.context("post", { post_id: post.id });
  assert.equal(again.cache, "HIT");
  assert.deepEqual(again.data, b.data);
  assert.equal(rec.log.at(-1).response.get("content-encoding"), "gzip", "a cached bundle is compressed too");

  assert.equal(await c.call("ping"), "pong");
  assert.equal(rec.log.at(-1).response.get("content-encoding"), null, "a small answer is sent as is");
});

test("event streams are never compressed, and still carry events", async () => {
  const r = await new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port: gw.port, path: "/api/mizan/events/?contexts=post", headers: { "Accept-Encoding": "gzip" } }, (res) => {
      res.once("data", (chunk) => {
        resolve({ headers: res.headers, first: chunk.toString() });
        req.destroy();
      });
    });
    req.on("error", reject);
  });
  assert.equal(r.headers["content-encoding"], undefined);
  assert.match(r.first, /: connected/);

  const c = createClient({ baseUrl: gw.url });
  const w = createClient({ baseUrl: gw.url, token: alice, events: false });
  clients.push(c, w);
  const titles = [];
  c.subscribe("post", { post_id: 1 }, (b) => titles.push(b.data.get_post.title));
  await waitFor(() => titles.length === 1 && c.stats.streamConnected, 10000, "stream");
  const title = "gzip test " + Date.now();
  await w.call("update_post", { post_id: 1, title });
  await waitFor(() => titles.at(-1) === title, 10000, "event and refetch");
});
