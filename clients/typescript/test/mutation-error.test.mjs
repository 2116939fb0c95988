// mutation-error.test.mjs - a mutation that may have run but did not
// answer with success (PROTOCOL section 5): the gateway lists what it
// invalidated in the error's details.invalidate, and the client refetches
// the matching subscriptions before it rethrows the MizanError.
//
// The mutation is an upstream function (docs/upstream.md) whose service,
// a small Node HTTP server here, receives the write and answers too late:
// the gateway's deadline passes after the request was written, so it
// answers 504 TIMEOUT and still invalidates the blog's `post` context.
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, test } from "node:test";
import { Run, gatewayConfig, loadClient, sleep, waitFor } from "./support.mjs";

const { createClient, MizanError } = await loadClient();
const run = new Run("mutation-error");
let gw;
let service;
let writes = 0;
const clients = [];

before(async () => {
  service = http.createServer((req, res) => {
    writes++;
    req.resume();
    // Later than the function's deadline: the gateway gives up first.
    setTimeout(() => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end('{"ok":true}');
    }, 1500).unref();
  });
  await new Promise((r) => service.listen(0, "127.0.0.1", r));
  run.defer(() => new Promise((r) => service.close(() => r())));
  const postId = { type: "object", properties: { post_id: { type: "integer", minimum: 1 } }, required: ["post_id"], additionalProperties: false };
  gw = await run.gateway(
    "gw",
    gatewayConfig(run, "gw", {
      upstreams: { slow_service: { url: `http://127.0.0.1:${service.address().port}`, timeout_ms: 300 } },
      functions: [
        {
          name: "touch_post",
          kind: "mutation",
          input_schema: postId,
          invalidates: ["post"],
          upstream: { service: "slow_service", method: "POST", path: "/touch/{post_id}" },
        },
        {
          name: "touch_everything",
          kind: "mutation",
          input_schema: { type: "object", additionalProperties: false },
          invalidates: ["post", "feed"],
          upstream: { service: "slow_service", method: "POST", path: "/touch" },
        },
      ],
    }),
  );
});
after(async () => {
  for (const c of clients) c.close();
  service.closeAllConnections?.();
  await run.cleanup();
});

test("an error answer's details.invalidate refetches what the write may have changed", async () => {
  const c = createClient({ baseUrl: gw.url, events: false });
  clients.push(c);
  const seen = { p1: 0, p2: 0 };
  c.subscribe("post", { post_id: 1 }, () => seen.p1++);
  c.subscribe("post", { post_id: 2 }, () => seen.p2++);
  await waitFor(() => seen.p1 === 1 && seen.p2 === 1, 10000, "first bundles");
  const e = await c.call("touch_post", { post_id: 1 }).then(() => null, (x) => x);
  assert.ok(e instanceof MizanError, `expected a MizanError, got ${e}`);
  assert.equal(e.code, "TIMEOUT");
  assert.equal(e.status, 504);
  assert.equal(writes, 1, "the write reached the service");
  assert.deepEqual(e.details.invalidate, [{ context: "post", params: { post_id: 1 } }]);
  await waitFor(() => seen.p1 === 2, 10000, "post 1 refetched after the failed write");
  await sleep(200);
  assert.equal(seen.p2, 1, "post 2 was not named");
});

test("whole-context targets in details.invalidate refetch every subscription of those contexts", async () => {
  const c = createClient({ baseUrl: gw.url, events: false });
  clients.push(c);
  const seen = { p1: 0, p2: 0, feed: 0, me: 0 };
  c.subscribe("post", { post_id: 1 }, () => seen.p1++);
  c.subscribe("post", { post_id: 2 }, () => seen.p2++);
  c.subscribe("feed", {}, () => seen.feed++);
  await waitFor(() => seen.p1 === 1 && seen.p2 === 1 && seen.feed === 1, 10000, "first bundles");
  const e = await c.call("touch_everything").then(() => null, (x) => x);
  assert.ok(e instanceof MizanError && e.code === "TIMEOUT" && e.status === 504, `got ${e}`);
  assert.deepEqual(e.details.invalidate, [{ context: "post" }, { context: "feed" }]);
  await waitFor(() => seen.p1 === 2 && seen.p2 === 2 && seen.feed === 2, 10000, "every post and the feed refetched");
  await sleep(200);
  assert.deepEqual(seen, { p1: 2, p2: 2, feed: 2, me: 0 });
});
