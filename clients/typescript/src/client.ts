/*
 * client.ts - createClient(): calls, context bundles, a small store,
 * invalidation and live subscriptions (PROTOCOL sections 2, 3, 5 and 7).
 *
 * Requests. A call is `POST {prefix}/call/` with a JSON body; a context is
 * `GET {prefix}/ctx/{name}/?params` (members sorted). A token is sent as
 * `Authorization: Bearer`, or, in cookie mode (credentials "include"), the
 * browser sends the gateway's cookie itself. Answers are parsed once: an
 * error envelope becomes a MizanError, anything that is not the protocol
 * (a failed fetch, an HTML page, bad JSON) a NetworkError.
 *
 * Contexts. Identical context requests in flight share one fetch (keyed by
 * context and canonical params). The store keeps the latest bundle per key.
 * A live subscription (subscribe()) is one entry per key with any number of
 * listeners; it refetches when a target names it: a mutation's
 * `invalidate` list (or `details.invalidate` of a mutation's error), or an
 * event from the gateway's stream for changes made elsewhere. A scoped
 * target matches the same context with equal canonical params; a
 * whole-context target matches every subscription of the context. The
 * refetches of one subscription are coalesced: one in flight, at most one
 * queued behind it. An invalidation also forgets the matching store entries
 * and detaches matching requests in flight from deduplication, so a later
 * context() never joins a fetch that may predate the write.
 *
 * Events. The stream listens to the contexts of the live subscriptions and
 * reconnects with capped, jittered exponential backoff; after a gap (the
 * stream was down) every live subscription is refetched, since events may
 * have been missed.
 */
import { MizanError, NetworkError } from "./errors.js";
import { EventStream, type InvalidationTarget, type ReconnectOptions, type StreamTransport } from "./events.js";
import { canonicalParams, paramsQuery, targetKey } from "./params.js";

export type { InvalidationTarget, ReconnectOptions } from "./events.js";

/** Options of createClient(). */
export interface ClientOptions {
  /** Where the gateway is, e.g. "http://127.0.0.1:8080" (no trailing path needed). */
  baseUrl: string;
  /** Route prefix, default "/api/mizan". */
  prefix?: string;
  /** Sent as `Authorization: Bearer`; a function is asked before every request. */
  token?: string | (() => string | undefined | null);
  /** Cookie mode (PROTOCOL section 4): "include" sends the gateway's cookie cross-origin. */
  credentials?: "omit" | "same-origin" | "include";
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /** Event stream reconnection tuning. */
  reconnect?: ReconnectOptions;
  /** "auto" (default): EventSource in browsers when no header is needed, else a streaming fetch. */
  eventTransport?: "auto" | "fetch" | "eventsource";
  /** Bundles kept in the store, least recently written dropped first (default 200). */
  storeSize?: number;
  /** Listen to the gateway's event stream while subscriptions are live (default true). */
  events?: boolean;
  /** Observer of every invalidation the client acts on (from a mutation or an event). */
  onInvalidate?: (target: InvalidationTarget, source: "mutation" | "event") => void;
}

/** What one function's entry says (kind, args and result types). */
export interface FunctionSpec {
  kind: "query" | "mutation";
  args: unknown;
  result: unknown;
}
/** What one context's entry says (params and data types). */
export interface ContextSpec {
  params: unknown;
  data: unknown;
}
/** Function name -> kind, args and result types (the generated `Functions`). */
export type FunctionMap = Record<string, FunctionSpec>;
/** Context name -> params and data types (the generated `Contexts`). */
export type ContextMap = Record<string, ContextSpec>;
/**
 * The constraints on the type parameters: every member a FunctionSpec or
 * ContextSpec. Mapped over F itself, so that a generated `interface
 * Functions {...}` (which has no index signature) is accepted as well as a
 * FunctionMap.
 */
export type FunctionsOf<F> = { [K in keyof F]: FunctionSpec };
export type ContextsOf<C> = { [K in keyof C]: ContextSpec };

/** An error object of a bundle's `errors` or of the envelope. */
export interface ErrorBody {
  code: string;
  message: string;
  details: unknown;
}

/** A context bundle (PROTOCOL section 5). */
export interface Bundle<N extends string = string, P = unknown, D = unknown> {
  context: N;
  params: P;
  data: Partial<D>;
  errors: Record<string, ErrorBody>;
  /** X-Mizan-Cache (HIT, MISS, BYPASS, STALE: any string) when the gateway exposes it. */
  cache?: string;
}

/** Whether every member of T is optional (so args may be left out). */
type AllOptional<T> = {} extends T ? true : false;
/** The rest-arguments of call(): optional exactly when nothing is required. */
export type CallArgs<A> = AllOptional<A> extends true ? [args?: A] : [args: A];

export interface MizanClient<F extends FunctionsOf<F> = FunctionMap, C extends ContextsOf<C> = ContextMap> {
  /** Calls one function; a mutation's invalidations refetch what they name. */
  call<N extends keyof F & string>(name: N, ...args: CallArgs<F[N]["args"]>): Promise<F[N]["result"]>;
  /** Fetches a context bundle (identical requests in flight share one fetch). */
  context<N extends keyof C & string>(name: N, params: C[N]["params"]): Promise<Bundle<N, C[N]["params"], C[N]["data"]>>;
  /** Keeps a bundle live: onBundle gets it now and after every change; returns unsubscribe. */
  subscribe<N extends keyof C & string>(
    name: N,
    params: C[N]["params"],
    onBundle: (b: Bundle<N, C[N]["params"], C[N]["data"]>) => void,
    onError?: (e: Error) => void,
  ): () => void;
  /** The latest bundle held for (name, params), if any. */
  peek<N extends keyof C & string>(name: N, params: C[N]["params"]): Bundle<N, C[N]["params"], C[N]["data"]> | undefined;
  /** Acts on invalidation targets as if a mutation had returned them. */
  invalidate(targets: InvalidationTarget[]): void;
  /** Stops the event stream and timers; later calls still work, subscriptions end. */
  close(): void;
  /** Counters for tests and diagnostics. */
  readonly stats: ClientStats;
}

/** What the client did so far. */
export interface ClientStats {
  /** Context requests sent to the gateway. */
  contextFetches: number;
  /** Context requests that joined one already in flight. */
  dedupHits: number;
  /** Event streams opened. */
  streamOpens: number;
  /** Whether the event stream is open now. */
  streamConnected: boolean;
  /** Invalidation events received. */
  events: number;
}

/* A live subscription: one per (context, canonical params). */
interface Live {
  name: string;
  params: unknown;
  /** Key from the params as given (what subscribe() was called with). */
  key: string;
  /** Canonical params text as the gateway answered them (once known). */
  canonical: string;
  listeners: Set<{ onBundle: (b: Bundle) => void; onError?: ((e: Error) => void) | undefined }>;
  inflight: boolean;
  queued: boolean;
  latest: Bundle | undefined;
}

/* A context request in flight. */
interface Pending {
  promise: Promise<Bundle>;
  name: string;
  canonical: string;
}

interface Envelope {
  status: number;
  body: Record<string, unknown>;
  headers: Headers;
}

/* Runs a listener; its exception is reported, never allowed to stop the client. */
function guard(fn: () => void): void {
  try {
    fn();
  } catch (e) {
    const report = (globalThis as { reportError?: (e: unknown) => void }).reportError;
    if (typeof report === "function") report(e);
    else console.error(e);
  }
}

function trimSlash(s: string): string {
  return s.replace(/\/+$/, "");
}

function isTargetList(v: unknown): v is InvalidationTarget[] {
  return Array.isArray(v) && v.every((t) => t !== null && typeof t === "object" && typeof (t as InvalidationTarget).context === "string");
}

class Client {
  private readonly base: string;
  private readonly fetchFn: typeof fetch;
  private readonly opts: ClientOptions;
  private readonly pending = new Map<string, Pending>();
  private readonly store = new Map<string, Bundle>();
  private readonly live = new Map<string, Live>();
  private readonly stream: EventStream;
  private closed = false;
  private streamSync = false;
  readonly stats: ClientStats = { contextFetches: 0, dedupHits: 0, streamOpens: 0, streamConnected: false, events: 0 };

  constructor(o: ClientOptions) {
    if (typeof o.baseUrl !== "string") throw new TypeError("createClient: baseUrl is required");
    this.opts = o;
    this.base = trimSlash(o.baseUrl) + trimSlash(o.prefix ?? "/api/mizan");
    const f = o.fetch ?? (typeof fetch === "function" ? fetch : undefined);
    if (f === undefined) throw new TypeError("createClient: no fetch available; pass options.fetch");
    // A bare global fetch must be called with the global object as `this`.
    this.fetchFn = o.fetch ?? ((input, init) => f.call(globalThis, input, init));
    const canEventSource = typeof EventSource === "function";
    const mode = o.eventTransport ?? "auto";
    const transport: StreamTransport = {
      url: (contexts) => this.base + "/events/?contexts=" + contexts.map(encodeURIComponent).join(","),
      headers: () => this.headers(),
      credentials: o.credentials,
      fetch: this.fetchFn,
      // Decided at every (re)connection: a token may come and go.
      useEventSource: () =>
        mode === "eventsource" || (mode === "auto" && canEventSource && o.fetch === undefined && this.token() === undefined),
    };
    this.stream = new EventStream(
      transport,
      {
        onEvent: (t) => {
          this.stats.events++;
          this.apply([t], "event");
        },
        onGap: () => this.refetchAll(),
        onError: (e) => {
          // A refused stream (401/403/404) is worth telling the subscribers.
          if (e instanceof MizanError) {
            for (const l of this.live.values()) for (const s of l.listeners) s.onError?.(e);
          }
        },
      },
      o.reconnect,
    );
  }

  /* ------------------------------------------------------------ HTTP */

  private token(): string | undefined {
    const t = this.opts.token;
    const v = typeof t === "function" ? t() : t;
    return v === null || v === undefined || v === "" ? undefined : v;
  }

  private headers(): Record<string, string> {
    const h: Record<string, string> = {};
    const t = this.token();
    if (t !== undefined) h["Authorization"] = "Bearer " + t;
    return h;
  }

  /* One exchange; resolves with the parsed envelope of a 2xx answer. */
  private async request(method: "GET" | "POST", url: string, body?: unknown): Promise<Envelope> {
    const headers: Record<string, string> = { Accept: "application/json", ...this.headers() };
    const init: RequestInit = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (this.opts.credentials !== undefined) init.credentials = this.opts.credentials;
    let res: Response;
    try {
      res = await this.fetchFn(url, init);
    } catch (e) {
      throw new NetworkError(`${method} ${url}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    let text: string;
    try {
      text = await res.text();
    } catch (e) {
      throw new NetworkError(`${method} ${url}: reading the answer failed`, { status: res.status, cause: e });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw new NetworkError(`${method} ${url}: HTTP ${res.status} with a body that is not JSON`, { status: res.status, cause: e });
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new NetworkError(`${method} ${url}: HTTP ${res.status} with a body that is not an object`, { status: res.status });
    }
    const obj = parsed as Record<string, unknown>;
    if (!res.ok) {
      const err = obj["error"] as Record<string, unknown> | undefined;
      if (err !== null && typeof err === "object" && typeof err["code"] === "string") {
        throw new MizanError(err["code"], typeof err["message"] === "string" ? err["message"] : "", err["details"] ?? null, res.status);
      }
      throw new NetworkError(`${method} ${url}: HTTP ${res.status} without the error envelope`, { status: res.status });
    }
    return { status: res.status, body: obj, headers: res.headers };
  }

  /* ------------------------------------------------------------ calls */

  async call(name: string, ...args: [unknown?]): Promise<unknown> {
    const body: Record<string, unknown> = { function: name };
    if (args.length > 0 && args[0] !== undefined) body["args"] = args[0];
    let env: Envelope;
    try {
      env = await this.request("POST", this.base + "/call/", body);
    } catch (e) {
      // A mutation that may have run lists what it invalidated (section 5).
      if (e instanceof MizanError && e.details !== null && typeof e.details === "object") {
        const inv = (e.details as Record<string, unknown>)["invalidate"];
        if (isTargetList(inv)) this.apply(inv, "mutation");
      }
      throw e;
    }
    if (!("result" in env.body)) {
      throw new NetworkError(`call ${name}: a 2xx answer without "result"`, { status: env.status });
    }
    const inv = env.body["invalidate"];
    if (isTargetList(inv)) this.apply(inv, "mutation");
    return env.body["result"];
  }

  /* --------------------------------------------------------- contexts */

  context(name: string, params: unknown): Promise<Bundle> {
    const key = targetKey(name, params);
    const inflight = this.pending.get(key);
    if (inflight !== undefined) {
      this.stats.dedupHits++;
      return inflight.promise;
    }
    let query: string;
    try {
      query = paramsQuery(params);
    } catch (e) {
      return Promise.reject(e);
    }
    const url = this.base + "/ctx/" + encodeURIComponent(name) + "/" + query;
    this.stats.contextFetches++;
    const entry: Pending = { name, canonical: canonicalParams(params), promise: Promise.resolve(null as unknown as Bundle) };
    entry.promise = (async () => {
      try {
        const env = await this.request("GET", url);
        const b = env.body as unknown as Bundle;
        if (typeof b.context !== "string" || b.data === null || typeof b.data !== "object") {
          throw new NetworkError(`context ${name}: a 2xx answer that is not a bundle`, { status: env.status });
        }
        if (b.errors === undefined || b.errors === null) b.errors = {};
        const cache = env.headers.get("X-Mizan-Cache");
        if (cache !== null) b.cache = cache;
        // Only a fetch not overtaken by an invalidation may become the stored value.
        if (this.pending.get(key) === entry) {
          this.remember(key, b);
          this.remember(targetKey(name, b.params), b);
        }
        return b;
      } finally {
        if (this.pending.get(key) === entry) this.pending.delete(key);
      }
    })();
    this.pending.set(key, entry);
    return entry.promise;
  }

  /* Stores b under key as the newest entry; drops the oldest past storeSize. */
  private remember(key: string, b: Bundle): void {
    this.store.delete(key);
    this.store.set(key, b);
    const max = Math.max(1, this.opts.storeSize ?? 200);
    for (const k of this.store.keys()) {
      if (this.store.size <= max) break;
      this.store.delete(k);
    }
  }

  peek(name: string, params: unknown): Bundle | undefined {
    return this.store.get(targetKey(name, params));
  }

  subscribe(name: string, params: unknown, onBundle: (b: Bundle) => void, onError?: (e: Error) => void): () => void {
    if (this.closed) throw new Error("subscribe: the client is closed");
    const key = targetKey(name, params);
    let l = this.live.get(key);
    const fresh = l === undefined;
    if (l === undefined) {
      l = { name, params, key, canonical: canonicalParams(params), listeners: new Set(), inflight: false, queued: false, latest: undefined };
      this.live.set(key, l);
    }
    const listener = { onBundle, onError };
    l.listeners.add(listener);
    const live = l;
    const known = l.latest ?? this.store.get(key);
    if (fresh) {
      this.syncStream();
      this.refresh(l);
    } else if (known !== undefined) {
      queueMicrotask(() => {
        if (live.listeners.has(listener)) onBundle(known);
      });
    }
    return () => {
      live.listeners.delete(listener);
      if (live.listeners.size === 0 && this.live.get(key) === live) {
        this.live.delete(key);
        this.syncStream();
      }
    };
  }

  /* Fetches a subscription again: one in flight, at most one queued. */
  private refresh(l: Live): void {
    if (l.inflight) {
      l.queued = true;
      return;
    }
    l.inflight = true;
    this.context(l.name, l.params).then(
      (b) => {
        if (this.live.get(l.key) !== l) return;
        l.latest = b;
        l.canonical = canonicalParams(b.params);
        for (const s of [...l.listeners]) guard(() => s.onBundle(b));
      },
      (e: unknown) => {
        if (this.live.get(l.key) !== l) return;
        const err = e instanceof Error ? e : new Error(String(e));
        for (const s of [...l.listeners]) guard(() => s.onError?.(err));
      },
    ).finally(() => {
      l.inflight = false;
      if (l.queued && this.live.get(l.key) === l) {
        l.queued = false;
        this.refresh(l);
      }
    });
  }

  invalidate(targets: InvalidationTarget[]): void {
    this.apply(targets, "mutation");
  }

  /* Forgets and refetches what targets name. */
  private apply(targets: InvalidationTarget[], source: "mutation" | "event"): void {
    for (const t of targets) {
      this.opts.onInvalidate?.(t, source);
      const whole = t.params === undefined || t.params === null;
      const canonical = whole ? "" : canonicalParams(t.params);
      const matches = (name: string, c: string) => name === t.context && (whole || c === canonical);
      for (const [k, p] of this.pending) if (matches(p.name, p.canonical)) this.pending.delete(k);
      for (const [k, b] of this.store) if (matches(b.context, canonicalParams(b.params))) this.store.delete(k);
      for (const l of this.live.values()) if (matches(l.name, l.canonical)) this.refresh(l);
    }
  }

  private refetchAll(): void {
    this.store.clear();
    this.pending.clear();
    for (const l of this.live.values()) this.refresh(l);
  }

  /* The event stream follows the contexts of the live subscriptions (batched per tick). */
  private syncStream(): void {
    if (this.streamSync || this.closed) return;
    this.streamSync = true;
    queueMicrotask(() => {
      this.streamSync = false;
      if (this.closed) return;
      if (this.opts.events === false) return;
      this.stream.setContexts([...new Set([...this.live.values()].map((l) => l.name))]);
    });
  }

  close(): void {
    this.closed = true;
    this.live.clear();
    this.stream.stop();
  }
}

/** A client for one gateway. F and C come from the generated file. */
export function createClient<F extends FunctionsOf<F> = FunctionMap, C extends ContextsOf<C> = ContextMap>(
  o: ClientOptions,
): MizanClient<F, C> {
  const c = new Client(o);
  // The stream's counters are read through the stats object.
  const stream = (c as unknown as { stream: EventStream }).stream;
  Object.defineProperty(c.stats, "streamOpens", { get: () => stream.opens, enumerable: true });
  Object.defineProperty(c.stats, "streamConnected", { get: () => stream.connected, enumerable: true });
  return c as unknown as MizanClient<F, C>;
}
