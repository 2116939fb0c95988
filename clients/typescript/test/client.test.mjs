// client.test.mjs - @mizan/client against a real gateway (the blog module):
// calls, errors (MizanError vs NetworkError), tokens (Bearer and cookie
// mode), context bundles, deduplication counted at the gateway, the store,
// invalidation refetches, coalescing, and events from another client.
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { Run, freePort, gatewayConfig, loadClient, recordingFetch, sleep, waitFor } from "./support.mjs";

const { createClient, MizanError, NetworkError, canonicalParams, paramsQuery, SseParser } = await loadClient();

const run = new Run("client");
let gw;
let alice;
const clients = [];
function client(opts = {}) {
  const c = createClient({ baseUrl: gw.url, ...opts });
  clients.push(c);
  return c;
}

before(async () => {
  gw = await run.gateway("gw", gatewayConfig(run, "gw"));
  alice = gw.token("alice");
});
after(async () => {
  for (const c of clients) c.close();
  await run.cleanup();
});

describe("calls", () => {
  test("a query returns its result; args may be left out when none are required", async () => {
    const c = client();
    assert.equal(await c.call("add", { a: 2, b: 40 }), 42);
    assert.equal(await c.call("ping"), "pong");
    assert.deepEqual(await c.call("echo", { value: { nested: [1, "two", null] } }), { nested: [1, "two", null] });
  });

  test("a protocol error is a MizanError with code, message, details and status", async () => {
    const c = client();
    const e = await c.call("add", { a: "two" }).then(() => null, (x) => x);
    assert.ok(e instanceof MizanError, `expected MizanError, got ${e}`);
    assert.ok(!(e instanceof NetworkError));
    assert.equal(e.code, "VALIDATION_FAILED");
    assert.equal(e.status, 422);
    assert.equal(e.message, "2 validation errors");
    assert.ok(Array.isArray(e.details) && e.details.length === 2);
    assert.deepEqual(e.details.map((d) => d.loc.join(".")).sort(), ["args.a", "args.b"]);

    const nf = await c.call("no_such_function").then(() => null, (x) => x);
    assert.ok(nf instanceof MizanError);
    assert.equal(nf.code, "NOT_FOUND");
    assert.equal(nf.status, 404);

    const boom = await c.call("boom").then(() => null, (x) => x);
    assert.ok(boom instanceof MizanError);
    assert.equal(boom.code, "INTERNAL_ERROR");
    assert.equal(boom.status, 500);
    assert.equal(typeof boom.details.request_id, "string");

    const unauth = await c.call("whoami").then(() => null, (x) => x);
    assert.ok(unauth instanceof MizanError);
    assert.equal(unauth.code, "UNAUTHORIZED");
    assert.equal(unauth.status, 401);
  });

  test("nothing listening is a NetworkError, never a MizanError", async () => {
    const port = await freePort();
    const c = createClient({ baseUrl: `http://127.0.0.1:${port}` });
    const e = await c.call("ping").then(() => null, (x) => x);
    assert.ok(e instanceof NetworkError, `expected NetworkError, got ${e}`);
    assert.ok(!(e instanceof MizanError));
    assert.equal(e.status, 0);
    const e2 = await c.context("feed", {}).then(() => null, (x) => x);
    assert.ok(e2 instanceof NetworkError);
    c.close();
  });

  test("an answer that is not the envelope (HTML page, bad JSON) is a NetworkError with its status", async () => {
    const server = http.createServer((req, res) => {
      if (req.url.includes("/call")) {
        res.writeHead(502, { "Content-Type": "text/html" });
        res.end("<html><body>Bad gateway</body></html>");
      } else {
        res.writeHead(200, { "Content-Type": "application/json" });
        res.end("{not json");
      }
    });
    await new Promise((r) => server.listen(0, "127.0.0.1", r));
    try {
      const c = createClient({ baseUrl: `http://127.0.0.1:${server.address().port}` });
      const e = await c.call("ping").then(() => null, (x) => x);
      assert.ok(e instanceof NetworkError && !(e instanceof MizanError));
      assert.equal(e.status, 502);
      const e2 = await c.context("feed", {}).then(() => null, (x) => x);
      assert.ok(e2 instanceof NetworkError && !(e2 instanceof MizanError));
      assert.equal(e2.status, 200);
      c.close();
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  test("an aborted fetch is a NetworkError", async () => {
    const ctl = new AbortController();
    const c = client({ fetch: (u, init) => fetch(u, { ...init, signal: ctl.signal }) });
    const p = c.call("sleep", { ms: 2000 }).then(() => null, (x) => x);
    setTimeout(() => ctl.abort(), 100);
    const e = await p;
    assert.ok(e instanceof NetworkError, `expected NetworkError, got ${e}`);
  });
});

describe("tokens", () => {
  test("Bearer: a string or a function asked before every request", async () => {
    const rec = recordingFetch();
    const c = client({ token: alice, fetch: rec });
    const me = await c.call("whoami");
    assert.equal(me.sub, "alice");
    assert.equal(rec.log[0].headers.Authorization, "Bearer " + alice);

    let current = null;
    const c2 = client({ token: () => current });
    await assert.rejects(c2.call("whoami"), (e) => e instanceof MizanError && e.code === "UNAUTHORIZED");
    current = gw.token("bob");
    assert.equal((await c2.call("whoami")).sub, "bob");
    const b = await c2.context("me", {});
    assert.equal(b.data.whoami.sub, "bob");
  });

  test("cookie mode: credentials include, no Authorization header, the cookie carries the token", async () => {
    // Node has no cookie jar: this fetch plays the browser's part and sends
    // the gateway's cookie exactly when credentials are "include".
    const seen = [];
    const jar = async (url, init = {}) => {
      seen.push({ credentials: init.credentials, headers: { ...(init.headers ?? {}) } });
      const headers = { ...(init.headers ?? {}) };
      if (init.credentials === "include") headers.Cookie = "theme=dark; mwt=" + alice;
      return fetch(url, { ...init, headers });
    };
    const c = client({ credentials: "include", fetch: jar });
    assert.equal((await c.call("whoami")).sub, "alice");
    const b = await c.context("me", {});
    assert.equal(b.data.whoami.sub, "alice");
    assert.ok(seen.every((s) => s.credentials === "include" && s.headers.Authorization === undefined));
    // A user-scoped stream opens with the cookie too.
    let got;
    const off = c.subscribe("me", {}, (x) => (got = x));
    await waitFor(() => got && c.stats.streamConnected, 10000, "the cookie-mode event stream");
    off();
  });
});

describe("contexts", () => {
  test("a bundle with its params, data, errors and X-Mizan-Cache", async () => {
    const c = client();
    const b1 = await c.context("post", { post_id: 3 });
    assert.equal(b1.context, "post");
    assert.deepEqual(b1.params, { post_id: 3 });
    assert.equal(b1.data.get_post.id, 3);
    assert.ok(Array.isArray(b1.data.list_comments));
    assert.equal(b1.data.get_author.name, "alice");
    assert.deepEqual(b1.errors, {});
    assert.ok(["MISS", "HIT"].includes(b1.cache));
    const b2 = await c.context("post", { post_id: 3 });
    assert.equal(b2.cache, "HIT");
    assert.deepEqual(c.peek("post", { post_id: 3 }).data, b2.data);
    // The store is bounded: the oldest bundle goes first.
    const small = client({ storeSize: 2 });
    for (const id of [1, 2, 3]) await small.context("post", { post_id: id });
    assert.equal(small.peek("post", { post_id: 1 }), undefined);
    assert.equal(small.peek("post", { post_id: 3 }).data.get_post.id, 3);
    // A params error is a MizanError with the params location.
    const e = await c.context("post", { post_id: "x" }).then(() => null, (x) => x);
    assert.ok(e instanceof MizanError);
    assert.equal(e.code, "VALIDATION_FAILED");
    assert.equal(e.details[0].loc[0], "params");
    // Params that cannot go on a query string are refused before any request.
    const bad = await c.context("post", { post_id: [1] }).then(() => null, (x) => x);
    assert.ok(bad instanceof TypeError, `got ${bad}`);
    const u = await c.context("no_such_context", {}).then(() => null, (x) => x);
    assert.ok(u instanceof MizanError && u.code === "NOT_FOUND");
  });

  test("canonical params match the gateway's: members sorted, integers as integers", () => {
    assert.equal(canonicalParams({ b: 1, a: "x", c: null }), '{"a":"x","b":1,"c":null}');
    assert.equal(canonicalParams({ post_id: 12.0 }), '{"post_id":12}');
    assert.equal(canonicalParams(undefined), "{}");
    assert.equal(paramsQuery({ q: "a b&c", post_id: 5, on: true, none: null }), "?none=&on=true&post_id=5&q=a%20b%26c");
  });

  test("identical requests in flight are one request at the gateway (counted by /metrics)", async () => {
    const c = client();
    const before = await gw.metric("mizan_cache_requests_total", { context: "fanout" });
    const same = await Promise.all(Array.from({ length: 6 }, () => c.context("fanout", { ms: 300 })));
    const mid = await gw.metric("mizan_cache_requests_total", { context: "fanout" });
    assert.equal(mid - before, 1, "six identical in-flight requests reached the gateway once");
    assert.ok(same.every((b) => b === same[0]));
    assert.equal(c.stats.dedupHits, 5);
    // Different params are different requests; a finished request is not reused.
    await Promise.all([c.context("fanout", { ms: 200 }), c.context("fanout", { ms: 201 })]);
    await c.context("fanout", { ms: 200 });
    const end = await gw.metric("mizan_cache_requests_total", { context: "fanout" });
    assert.equal(end - mid, 3);
  });
});

describe("invalidation", () => {
  test("a mutation's invalidate list refetches matching subscriptions only", async () => {
    const c = client({ token: alice, events: false });
    const seen = { p1: [], p2: [], feed: [] };
    const offs = [
      c.subscribe("post", { post_id: 1 }, (b) => seen.p1.push(b)),
      c.subscribe("post", { post_id: 2 }, (b) => seen.p2.push(b)),
      c.subscribe("feed", {}, (b) => seen.feed.push(b)),
    ];
    await waitFor(() => seen.p1.length && seen.p2.length && seen.feed.length, 10000, "first bundles");
    const title = "invalidated " + Date.now();
    const r = await c.call("update_post", { post_id: 1, title });
    assert.equal(r.title, title);
    await waitFor(() => seen.p1.at(-1).data.get_post.title === title, 10000, "post 1 refetched with the new title");
    await waitFor(() => seen.feed.at(-1).data.list_posts.some((p) => p.title === title), 10000, "feed refetched (whole context)");
    await sleep(300);
    assert.equal(seen.p2.length, 1, "post 2 was not named by the mutation and is not refetched");
    assert.equal(c.peek("post", { post_id: 1 }).data.get_post.title, title);
    for (const off of offs) off();
  });

  test("a subscription keyed by the gateway's coercion: params given as text still match the mutation's target", async () => {
    const c = client({ token: alice, events: false });
    const got = [];
    const errors = [];
    const off = c.subscribe("post", { post_id: "3" }, (b) => got.push(b), (e) => errors.push(e));
    await waitFor(() => got.length === 1, 10000, "first bundle");
    assert.deepEqual(got[0].params, { post_id: 3 }, "the gateway answered with canonical params");
    const title = "coerced " + Date.now();
    await c.call("update_post", { post_id: 3, title });
    await waitFor(() => got.at(-1).data.get_post.title === title, 10000, "the refetch of the coerced subscription");
    // A second subscriber to a live key gets the stored bundle at once.
    let second;
    const off2 = c.subscribe("post", { post_id: "3" }, (b) => (second = b));
    await waitFor(() => second !== undefined, 1000, "the stored bundle");
    assert.equal(second.data.get_post.title, title);
    off();
    off2();
    // A failing context reaches onError as a MizanError.
    let err;
    const off3 = client().subscribe("me", {}, () => {}, (e) => (err = e));
    await waitFor(() => err !== undefined, 10000, "onError");
    assert.ok(err instanceof MizanError && err.code === "UNAUTHORIZED" && err.status === 401);
    off3();
    assert.deepEqual(errors, []);
  });

  test("the refetches of one target are coalesced: one in flight, one queued", async () => {
    const c = client({ events: false });
    const got = [];
    const off = c.subscribe("fanout", { ms: 200 }, (b) => got.push(b));
    await waitFor(() => got.length === 1, 10000, "first bundle");
    const before = await gw.metric("mizan_cache_requests_total", { context: "fanout" });
    for (let i = 0; i < 10; i++) c.invalidate([{ context: "fanout", params: { ms: 200 } }]);
    for (let i = 0; i < 10; i++) c.invalidate([{ context: "fanout" }]);
    await waitFor(() => got.length === 3, 10000, "two refetches");
    await sleep(600);
    const after = await gw.metric("mizan_cache_requests_total", { context: "fanout" });
    assert.equal(after - before, 2, "twenty invalidations, two requests");
    assert.equal(got.length, 3);
    off();
  });

  test("an unsubscribed target is not refetched; a new context() never joins a fetch older than a write", async () => {
    const c = client({ token: alice, events: false });
    let n = 0;
    const off = c.subscribe("post", { post_id: 2 }, () => n++);
    await waitFor(() => n === 1, 10000, "first bundle");
    off();
    c.invalidate([{ context: "post", params: { post_id: 2 } }]);
    await sleep(200);
    assert.equal(n, 1);
    // A read in flight, then a write: the read after the write is a new request.
    const early = c.context("post", { post_id: 2 });
    const title = "after write " + Date.now();
    await c.call("update_post", { post_id: 2, title });
    const late = await c.context("post", { post_id: 2 });
    await early;
    assert.equal(late.data.get_post.title, title);
  });
});

describe("the SSE parser", () => {
  test("frames split anywhere, CRLF or LF, comments and retry lines", () => {
    const text = "retry: 2000\r\n: connected\r\n\r\nevent: invalidate\r\ndata: {\"context\":\"post\",\r\ndata: \"params\":{\"post_id\":1}}\r\n\r\n: heartbeat\n\nevent: invalidate\ndata:{\"context\":\"feed\"}\n\n";
    for (let cut = 0; cut <= text.length; cut++) {
      const got = [];
      const p = new SseParser((event, data) => got.push([event, data]));
      p.push(text.slice(0, cut));
      p.push(text.slice(cut));
      assert.deepEqual(got, [
        ["invalidate", '{"context":"post",\n"params":{"post_id":1}}'],
        ["invalidate", '{"context":"feed"}'],
      ], `split at ${cut}`);
    }
  });
});

describe("prefix", () => {
  test("a gateway with another api_prefix is reached through the prefix option", async () => {
    const g = await run.gateway("prefixed", gatewayConfig(run, "prefixed", { api_prefix: "/v2/rpc" }));
    const c = createClient({ baseUrl: g.url + "/", prefix: "/v2/rpc/" });
    clients.push(c);
    assert.equal(await c.call("add", { a: 1, b: 2 }), 3);
    const titles = [];
    c.subscribe("post", { post_id: 1 }, (b) => titles.push(b.data.get_post.title));
    await waitFor(() => titles.length === 1 && c.stats.streamConnected, 10000, "bundle and stream under the prefix");
    const wrong = createClient({ baseUrl: g.url });
    clients.push(wrong);
    await assert.rejects(wrong.call("ping"), (e) => e instanceof MizanError && e.code === "NOT_FOUND");
  });
});

describe("events", () => {
  test("another client's mutation reaches a subscriber through the event stream", async () => {
    const writer = client({ token: alice, events: false });
    const reader = client();
    const titles = [];
    const events = [];
    const r2 = client({ onInvalidate: (t, source) => events.push({ t, source }) });
    const off = reader.subscribe("post", { post_id: 3 }, (b) => titles.push(b.data.get_post.title));
    const off2 = r2.subscribe("post", { post_id: 3 }, () => {});
    await waitFor(() => titles.length === 1 && reader.stats.streamConnected && r2.stats.streamConnected, 10000, "streams open");
    const title = "from elsewhere " + Date.now();
    await writer.call("update_post", { post_id: 3, title });
    await waitFor(() => titles.at(-1) === title, 10000, "the reader's subscription refetched");
    assert.ok(reader.stats.events >= 1);
    await waitFor(() => events.length >= 1, 5000, "r2 saw the event");
    assert.deepEqual(events[0], { t: { context: "post", params: { post_id: 3 } }, source: "event" });
    off();
    off2();
  });

  test("the stream follows the subscribed contexts and stops on close()", async () => {
    const c = createClient({ baseUrl: gw.url });
    const offA = c.subscribe("feed", {}, () => {});
    await waitFor(() => c.stats.streamConnected, 10000, "stream for feed");
    const opens = c.stats.streamOpens;
    const offB = c.subscribe("post", { post_id: 1 }, () => {});
    await waitFor(() => c.stats.streamOpens === opens + 1, 10000, "stream reopened for feed,post");
    const before = await gw.metric("mizan_requests_total", { route: "events" });
    c.close();
    offA();
    offB();
    assert.equal(c.stats.streamConnected, false);
    assert.ok(before >= 2);
  });
});
