// resilience.test.mjs - the event stream across gateway restarts and
// across instances: reconnect with backoff after the gateway restarts on
// the same port, a refetch of every live subscription after the gap (a
// change made while the stream was down, whose event this client never
// saw), and events between two instances sharing Redis.
import assert from "node:assert/strict";
import http from "node:http";
import { after, test } from "node:test";
import { Run, gatewayConfig, loadClient, sleep, waitFor } from "./support.mjs";

const { createClient } = await loadClient();
const run = new Run("resilience");
const clients = [];
after(async () => {
  for (const c of clients) c.close();
  await run.cleanup();
});

test("the stream reconnects after the gateway restarts and refetches what changed during the gap", async () => {
  // Two gateways over one blog database, without Redis: events stay inside
  // each process, so a write through the second one is never announced to a
  // stream on the first; only the refetch after the gap can bring it.
  const db = { modules: [{ name: "blog", config: { db: run.tmp + "/shared-blog.db" } }] };
  const g1 = await run.gateway("g1", gatewayConfig(run, "g1", db));
  const g2 = await run.gateway("g2", gatewayConfig(run, "g2", db));
  const alice = g2.token("alice");
  const opens = [];
  const c = createClient({ baseUrl: g1.url, reconnect: { baseMs: 100, maxMs: 1000 } });
  clients.push(c);
  const titles = [];
  const errors = [];
  c.subscribe("post", { post_id: 1 }, (b) => titles.push(b.data.get_post.title), (e) => errors.push(e));
  await waitFor(() => titles.length === 1 && c.stats.streamConnected, 15000, "first bundle and stream");
  opens.push(c.stats.streamOpens);

  await g1.stop();
  await waitFor(() => !c.stats.streamConnected, 15000, "the client to notice the stream is gone");
  const title = "written during the gap " + Date.now();
  const w = createClient({ baseUrl: g2.url, token: alice, events: false });
  clients.push(w);
  await w.call("update_post", { post_id: 1, title });
  // Backoff keeps trying while the port is closed.
  await sleep(1500);
  assert.equal(c.stats.streamConnected, false);

  await g1.restart();
  await waitFor(() => c.stats.streamConnected, 20000, "the stream to reconnect to the restarted gateway");
  assert.equal(c.stats.streamOpens, opens[0] + 1);
  await waitFor(() => titles.at(-1) === title, 15000, "the refetch after the gap");

  // The new stream carries events again.
  const again = "after the reconnect " + Date.now();
  const w1 = createClient({ baseUrl: g1.url, token: alice, events: false });
  clients.push(w1);
  await w1.call("update_post", { post_id: 1, title: again });
  await waitFor(() => titles.at(-1) === again, 10000, "an event on the new stream");
});

test("two instances sharing Redis: a write on one reaches a subscriber of the other", async () => {
  const redis = await run.redis();
  const shared = {
    cache: { secret: "mizan-test-secret-0123456789abcdef", redis_url: redis.url, prefix: "mizan:" },
    modules: [{ name: "blog", config: { db: run.tmp + "/cluster-blog.db" } }],
  };
  const a = await run.gateway("a", gatewayConfig(run, "a", shared));
  const b = await run.gateway("b", gatewayConfig(run, "b", shared));
  const token = a.token("alice");
  const writer = createClient({ baseUrl: a.url, token });
  const reader = createClient({ baseUrl: b.url });
  clients.push(writer, reader);
  const seen = [];
  const mine = [];
  reader.subscribe("post", { post_id: 2 }, (x) => seen.push(x));
  writer.subscribe("post", { post_id: 2 }, (x) => mine.push(x));
  await waitFor(() => seen.length === 1 && mine.length === 1 && reader.stats.streamConnected, 15000, "first bundles");
  const text = "comment through instance a " + Date.now();
  await writer.call("add_comment", { post_id: 2, text });
  await waitFor(() => seen.at(-1).data.list_comments.some((x) => x.text === text), 10000, "the comment on instance b");
  await waitFor(() => mine.at(-1).data.list_comments.some((x) => x.text === text), 10000, "the writer's own refetch");
  // Read-your-writes across instances: a fresh client on b never sees the old list.
  const fresh = createClient({ baseUrl: b.url });
  clients.push(fresh);
  const bundle = await fresh.context("post", { post_id: 2 });
  assert.ok(bundle.data.list_comments.some((x) => x.text === text));
});

test("heartbeats keep a quiet stream open; a stream silent past idleMs is dropped and reopened", async () => {
  const g = await run.gateway("beat", gatewayConfig(run, "beat", { sse_heartbeat_s: 1 }));
  const c = createClient({ baseUrl: g.url, reconnect: { baseMs: 50, maxMs: 200, idleMs: 2500 } });
  clients.push(c);
  c.subscribe("feed", {}, () => {});
  await waitFor(() => c.stats.streamConnected, 10000, "stream");
  await sleep(5000);
  assert.equal(c.stats.streamOpens, 1, "a heartbeat every second kept the stream open past idleMs twice over");

  // Something between client and gateway that accepts and then says nothing.
  let accepted = 0;
  const silent = http.createServer((req, res) => {
    if (req.url.startsWith("/api/mizan/events/")) {
      accepted++;
      res.writeHead(200, { "Content-Type": "text/event-stream" });
      res.write(": connected\n\n");
      return;
    }
    res.writeHead(404, { "Content-Type": "application/json" });
    res.end('{"error":{"code":"NOT_FOUND","message":"no","details":null}}');
  });
  await new Promise((r) => silent.listen(0, "127.0.0.1", r));
  run.defer(() => new Promise((r) => {
    silent.closeAllConnections?.();
    silent.close(() => r());
  }));
  const s = createClient({ baseUrl: `http://127.0.0.1:${silent.address().port}`, reconnect: { baseMs: 50, maxMs: 200, idleMs: 400 } });
  clients.push(s);
  s.subscribe("feed", {}, () => {}, () => {});
  await waitFor(() => accepted >= 3, 10000, "the silent stream to be dropped and reopened twice");
  assert.ok(s.stats.streamOpens >= 2);
  s.close();
});
