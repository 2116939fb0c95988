/*
 * events.ts - the invalidation event stream (PROTOCOL section 7) with
 * reconnection.
 *
 * Two transports read `GET {prefix}/events/?contexts=a,b`:
 *   - EventSource, in browsers when no Authorization header is needed
 *     (anonymous, or cookie mode with withCredentials);
 *   - a streaming fetch with an SSE parser, everywhere else: in Node, and
 *     in browsers with a Bearer token (EventSource cannot send headers).
 * Both report through the same callbacks: open (the gateway accepted the
 * stream), event (one invalidation target) and down (the stream ended or
 * failed). The EventStream above them owns reconnection: exponential
 * backoff from baseMs to maxMs with jitter (half to all of the delay), and
 * a watchdog that drops a stream silent for longer than idleMs (the
 * gateway sends a heartbeat comment every 15 s).
 *
 * A stream is reopened whenever the set of contexts changes; a reopen
 * after a failure (not after a change of contexts) is a gap: the owner is
 * told so it refetches everything live.
 */
import { MizanError, NetworkError } from "./errors.js";

/** An invalidation target: a whole context, or one context with params. */
export interface InvalidationTarget {
  context: string;
  params?: Record<string, unknown>;
}

/** How to reach the gateway (shared with the client). */
export interface StreamTransport {
  url(contexts: string[]): string;
  headers(): Record<string, string>;
  credentials: RequestCredentials | undefined;
  fetch: typeof fetch;
  /** Whether EventSource is to be used for the next stream (browser, no header needed). */
  useEventSource(): boolean;
}

/** Reconnection tuning (milliseconds). */
export interface ReconnectOptions {
  baseMs?: number;
  maxMs?: number;
  idleMs?: number;
}

export interface StreamCallbacks {
  onEvent(target: InvalidationTarget): void;
  /** The stream is open again after a failure: every live thing may be stale. */
  onGap(): void;
  /** A stream failed (for observers; reconnection is automatic). */
  onError(err: Error): void;
}

/* One open attempt; close() is idempotent. */
interface Connection {
  close(): void;
  /** Whether activity() sees the heartbeats (a fetch does; EventSource hides comments). */
  seesHeartbeats: boolean;
}

interface ConnectionHandlers {
  open(): void;
  frame(event: string, data: string): void;
  activity(): void;
  down(err: Error): void;
}

/* ------------------------------------------------------------ SSE parser */

/**
 * Incremental text/event-stream parser (the WHATWG algorithm, reduced to
 * what the gateway sends: event, data, retry, comments). Calls dispatch
 * once per complete event block.
 */
export class SseParser {
  private buf = "";
  private event = "";
  private data: string[] = [];
  private sawCR = false;

  constructor(private readonly dispatch: (event: string, data: string) => void) {}

  push(chunk: string): void {
    let text = chunk;
    if (this.sawCR && text.startsWith("\n")) text = text.slice(1);
    this.sawCR = false;
    this.buf += text;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buf);
      if (m === null) break;
      const line = this.buf.slice(0, m.index);
      // A lone CR at the very end may be the first half of a CRLF.
      if (m[0] === "\r" && m.index === this.buf.length - 1) this.sawCR = true;
      this.buf = this.buf.slice(m.index + m[0].length);
      this.line(line);
    }
  }

  private line(line: string): void {
    if (line === "") {
      if (this.data.length > 0) this.dispatch(this.event || "message", this.data.join("\n"));
      this.event = "";
      this.data = [];
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
  }
}

/* ------------------------------------------------------------ transports */

function openFetch(t: StreamTransport, url: string, h: ConnectionHandlers): Connection {
  const abort = new AbortController();
  let closed = false;
  const parser = new SseParser((event, data) => h.frame(event, data));
  (async () => {
    let res: Response;
    try {
      const headers = { ...t.headers(), Accept: "text/event-stream" };
      const init: RequestInit = { method: "GET", headers, signal: abort.signal, cache: "no-store" };
      if (t.credentials !== undefined) init.credentials = t.credentials;
      res = await t.fetch(url, init);
    } catch (e) {
      if (!closed) h.down(new NetworkError("event stream: request failed", { cause: e }));
      return;
    }
    if (!res.ok || res.body === null) {
      let err: Error = new NetworkError(`event stream: HTTP ${res.status}`, { status: res.status });
      try {
        const body = JSON.parse(await res.text()) as { error?: { code?: unknown; message?: unknown; details?: unknown } };
        if (body.error && typeof body.error.code === "string") {
          err = new MizanError(body.error.code, String(body.error.message ?? ""), body.error.details ?? null, res.status);
        }
      } catch {
        /* not the envelope: keep the NetworkError */
      }
      if (!closed) h.down(err);
      return;
    }
    h.open();
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (closed) return;
        if (done) break;
        h.activity();
        parser.push(decoder.decode(value, { stream: true }));
      }
      if (!closed) h.down(new NetworkError("event stream: closed by the server"));
    } catch (e) {
      if (!closed) h.down(new NetworkError("event stream: connection lost", { cause: e }));
    }
  })();
  return {
    seesHeartbeats: true,
    close() {
      if (closed) return;
      closed = true;
      abort.abort();
    },
  };
}

function openEventSource(t: StreamTransport, url: string, h: ConnectionHandlers): Connection {
  const es = new EventSource(url, { withCredentials: t.credentials === "include" });
  let closed = false;
  es.onopen = () => {
    if (!closed) h.open();
  };
  es.addEventListener("invalidate", (ev) => {
    if (closed) return;
    h.activity();
    h.frame("invalidate", String((ev as MessageEvent).data));
  });
  es.onerror = () => {
    // EventSource would retry by itself; the owner's backoff decides instead.
    if (closed) return;
    closed = true;
    es.close();
    h.down(new NetworkError("event stream: connection lost"));
  };
  return {
    seesHeartbeats: false,
    close() {
      if (closed) return;
      closed = true;
      es.close();
    },
  };
}

/* ----------------------------------------------------------- the stream */

/** One logical event stream: opens, watches, reconnects with backoff. */
export class EventStream {
  private contexts: string[] = [];
  private conn: Connection | null = null;
  private prev: Connection | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private watchdog: ReturnType<typeof setTimeout> | null = null;
  private attempt = 0;
  private gap = false;
  private stopped = false;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly idleMs: number;
  /** Number of streams opened so far (for tests and diagnostics). */
  opens = 0;
  /** Whether a stream is currently open. */
  connected = false;

  constructor(
    private readonly transport: StreamTransport,
    private readonly cb: StreamCallbacks,
    opts: ReconnectOptions = {},
  ) {
    this.baseMs = opts.baseMs ?? 250;
    this.maxMs = opts.maxMs ?? 10000;
    this.idleMs = opts.idleMs ?? 40000;
  }

  /** Sets the contexts to listen to; reopens when they changed. */
  setContexts(contexts: string[]): void {
    const next = [...new Set(contexts)].sort();
    if (next.join(",") === this.contexts.join(",") && (this.conn !== null || this.timer !== null)) return;
    this.contexts = next;
    // The stream being replaced stays open until its successor is, so no
    // event falls between the two.
    const old = this.connected ? this.conn : null;
    if (old !== null) this.conn = null;
    this.drop();
    this.attempt = 0;
    if (next.length > 0 && !this.stopped) {
      this.prev = old;
      this.open();
    } else if (old !== null) {
      old.close();
    }
  }

  /** Stops for good: closes the stream and every timer. */
  stop(): void {
    this.stopped = true;
    this.contexts = [];
    this.drop();
  }

  private drop(): void {
    if (this.prev !== null) this.prev.close();
    this.prev = null;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.clearWatchdog();
    if (this.conn !== null) this.conn.close();
    this.conn = null;
    this.connected = false;
  }

  private clearWatchdog(): void {
    if (this.watchdog !== null) clearTimeout(this.watchdog);
    this.watchdog = null;
  }

  private armWatchdog(conn: Connection): void {
    this.clearWatchdog();
    this.watchdog = setTimeout(() => {
      if (this.conn === conn) this.failed(conn, new NetworkError("event stream: silent past the heartbeat"));
    }, this.idleMs);
  }

  private open(): void {
    const url = this.transport.url(this.contexts);
    let conn: Connection | null = null;
    const handlers: ConnectionHandlers = {
      open: () => {
        if (this.conn !== conn || conn === null) return;
        this.opens++;
        this.connected = true;
        if (this.prev !== null) this.prev.close();
        this.prev = null;
        this.attempt = 0;
        // Past the opening, silence means a dead stream only where the
        // heartbeats can be seen; EventSource reports its own failures.
        if (conn.seesHeartbeats) this.armWatchdog(conn);
        else this.clearWatchdog();
        if (this.gap) {
          this.gap = false;
          this.cb.onGap();
        }
      },
      activity: () => {
        if (this.conn === conn && conn !== null && conn.seesHeartbeats) this.armWatchdog(conn);
      },
      frame: (event, data) => {
        if ((this.conn !== conn && this.prev !== conn) || event !== "invalidate") return;
        let target: InvalidationTarget;
        try {
          const v = JSON.parse(data) as { context?: unknown; params?: unknown };
          if (typeof v.context !== "string") return;
          target = { context: v.context };
          if (v.params !== undefined && v.params !== null && typeof v.params === "object") {
            target.params = v.params as Record<string, unknown>;
          }
        } catch {
          return;
        }
        this.cb.onEvent(target);
      },
      down: (err) => {
        if (conn !== null && this.prev === conn) {
          // The replaced stream died before its successor opened: a gap.
          this.prev = null;
          this.gap = true;
          return;
        }
        if (conn !== null) this.failed(conn, err);
      },
    };
    conn = this.transport.useEventSource()
      ? openEventSource(this.transport, url, handlers)
      : openFetch(this.transport, url, handlers);
    this.conn = conn;
    this.armWatchdog(conn);
  }

  private failed(conn: Connection, err: Error): void {
    if (this.conn !== conn) return;
    conn.close();
    this.conn = null;
    this.connected = false;
    this.clearWatchdog();
    this.gap = true;
    try {
      this.cb.onError(err);
    } catch {
      /* an observer's failure must not stop reconnection */
    }
    if (this.stopped || this.contexts.length === 0) return;
    const ceiling = Math.min(this.maxMs, this.baseMs * 2 ** Math.min(this.attempt, 30));
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt++;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.stopped && this.contexts.length > 0) this.open();
    }, delay);
  }
}
