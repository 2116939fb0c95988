// support.mjs - what the client tests share: real gateways (the built
// mizand with the blog module), redis-server, tokens minted by
// `mizand token`, /metrics, and clean-up.
//
// Every process a test starts is registered with the Run that started it;
// run.cleanup() (registered with node:test's after()) stops them all
// (SIGTERM, then SIGKILL), fails on a sanitizer report in any of their logs
// and removes the run's temporary directory (kept with
// MIZAN_TEST_KEEP_TMP=1). Ports are picked free on 127.0.0.1.
//
// Environment (set by ctest, see tests/client/tests.cmake): MIZAN_TEST_BIN
// (the mizand to run; modules/blog.so beside it), MIZAN_TEST_SOURCE_DIR.
// Run by hand they default to build/mizand and this checkout.
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const SOURCE_DIR = process.env.MIZAN_TEST_SOURCE_DIR || path.resolve(here, "..", "..", "..");
export const MIZAND = process.env.MIZAN_TEST_BIN || path.join(SOURCE_DIR, "build", "mizand");
export const MODULE_DIR = process.env.MIZAN_TEST_MODULE_DIR || path.join(path.dirname(MIZAND), "modules");
export const CLIENT_DIR = path.resolve(here, "..");
export const TOKEN_SECRET = "mizan-token-secret-0123456789abcd";
export const CACHE_SECRET = "mizan-test-secret-0123456789abcdef";
const SANITIZER = /(Address|Leak|Thread|UndefinedBehavior)Sanitizer|runtime error:/;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls pred (sync or async) until truthy; throws naming what on timeout. */
export async function waitFor(pred, timeoutMs, what, intervalMs = 20) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** A free loopback port (bound and released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("MIZAN_") || k.startsWith("MIZAN_TEST_")) env[k] = v;
  }
  return { ...env, ...extra };
}

/** A gateway config for the blog module (a plain object; extra merged on top). */
export function gatewayConfig(run, name, extra = {}) {
  return {
    io_threads: 2,
    workers: 8,
    log_level: "info",
    // Results are checked against their declared output schemas, so the
    // types the generated client promises are proven by every test.
    validate_output: true,
    token: { secret: TOKEN_SECRET, cookie: "mwt" },
    cache: { secret: CACHE_SECRET, redis_url: "", prefix: "mizan:" },
    module_dir: MODULE_DIR,
    modules: [{ name: "blog", config: { db: path.join(run.tmp, name + "-blog.db") } }],
    ...extra,
  };
}

/** A spawned process with its log. */
class Proc {
  constructor(child, name, logPath) {
    this.child = child;
    this.name = name;
    this.logPath = logPath;
    this.exited = new Promise((resolve) => child.on("exit", (code, sig) => resolve(sig ? 128 : code)));
    this.alive = true;
    this.exited.then(() => (this.alive = false));
  }

  log() {
    try {
      return fs.readFileSync(this.logPath, "utf8");
    } catch {
      return "";
    }
  }

  /** SIGTERM, then SIGKILL after timeoutMs; resolves with the exit status. */
  async stop(timeoutMs = 20000) {
    if (!this.alive) return this.exited;
    this.child.kill("SIGTERM");
    const t = setTimeout(() => this.alive && this.child.kill("SIGKILL"), timeoutMs);
    const st = await this.exited;
    clearTimeout(t);
    return st;
  }
}

/** A started gateway. */
export class Gateway {
  constructor(run, name, config, port, proc) {
    this.run = run;
    this.name = name;
    this.config = config;
    this.port = port;
    this.proc = proc;
    this.url = `http://127.0.0.1:${port}`;
    this.configPath = path.join(run.tmp, name + ".json");
  }

  async stop() {
    return this.proc.stop();
  }

  /** Stops it (if running) and starts it again on the same port and config. */
  async restart() {
    await this.stop();
    const g = await this.run.gateway(this.name, this.config, { port: this.port });
    this.proc = g.proc;
    return this;
  }

  token(sub, ...extra) {
    return this.run.token(this.configPath, sub, ...extra);
  }

  /** GET /metrics parsed into {series text: value}. */
  async metrics() {
    const res = await fetch(this.url + "/metrics");
    if (res.status !== 200) throw new Error(`GET /metrics: HTTP ${res.status}`);
    const out = {};
    for (const line of (await res.text()).split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const i = line.lastIndexOf(" ");
      out[line.slice(0, i)] = Number(line.slice(i + 1));
    }
    return out;
  }

  /** Sum of the samples of name whose labels include every labels item. */
  async metric(name, labels = {}) {
    const m = await this.metrics();
    let total = 0;
    for (const [series, v] of Object.entries(m)) {
      if (series.split("{", 1)[0] !== name) continue;
      if (Object.entries(labels).every(([k, val]) => series.includes(`${k}="${val}"`))) total += v;
    }
    return total;
  }
}

/** Everything one test file starts. */
export class Run {
  constructor(name) {
    this.name = name;
    this.tmp = fs.mkdtempSync(path.join(process.env.TMPDIR || os.tmpdir(), `mizan-client-${name}.`));
    this.procs = [];
    this.cleanups = [];
  }

  /** Another clean-up step (run first-registered last). */
  defer(fn) {
    this.cleanups.push(fn);
  }

  spawn(name, argv, env) {
    const logPath = path.join(this.tmp, name + ".log");
    const fd = fs.openSync(logPath, "a");
    const child = spawn(argv[0], argv.slice(1), { cwd: this.tmp, env: env ?? cleanEnv(), stdio: ["ignore", fd, fd] });
    fs.closeSync(fd);
    const p = new Proc(child, name, logPath);
    this.procs.push(p);
    return p;
  }

  /** Starts mizand with config (written to <tmp>/<name>.json); waits for "listening". */
  async gateway(name, config, { port = 0, env = {} } = {}) {
    if (!fs.existsSync(MIZAND)) throw new Error(`no mizand at ${MIZAND}: build it or set MIZAN_TEST_BIN`);
    const p = port || (await freePort());
    const cfgPath = path.join(this.tmp, name + ".json");
    fs.writeFileSync(cfgPath, JSON.stringify(config, null, 2), { mode: 0o600 });
    for (let attempt = 0; ; attempt++) {
      const proc = this.spawn(name, [MIZAND, "--config", cfgPath], cleanEnv({ MIZAN_LISTEN: `127.0.0.1:${p}`, ...env }));
      const deadline = Date.now() + 30000;
      while (Date.now() < deadline && proc.alive) {
        if (proc.log().split("\n").some((l) => l.includes('"msg":"listening"') && l.includes(`:${p}"`))) {
          return new Gateway(this, name, config, p, proc);
        }
        await sleep(30);
      }
      // The port of a restarted gateway may linger a moment; retry then.
      if (!proc.alive && /in use/i.test(proc.log()) && attempt < 20) {
        await sleep(250);
        continue;
      }
      await proc.stop();
      throw new Error(`${name} did not start:\n${proc.log().slice(-3000)}`);
    }
  }

  /** A token minted by `mizand token`. */
  token(configPath, sub, ...extra) {
    const out = execFileSync(MIZAND, ["token", "--config", configPath, "--sub", sub, ...extra], {
      env: cleanEnv(),
      encoding: "utf8",
      timeout: 30000,
    }).trim();
    if (out.split(".").length !== 3) throw new Error(`mizand token printed ${out}`);
    return out;
  }

  /** redis-server on a free port without persistence; resolves with {port, url, proc}. */
  async redis(name = "redis") {
    const port = await freePort();
    const dir = path.join(this.tmp, name);
    fs.mkdirSync(dir, { recursive: true });
    const proc = this.spawn(name, ["redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir]);
    await waitFor(() => !proc.alive || proc.log().includes("Ready to accept connections"), 15000, "redis-server");
    if (!proc.alive) throw new Error(`redis-server did not start:\n${proc.log()}`);
    return { port, url: `redis://127.0.0.1:${port}/0`, proc };
  }

  /** Stops everything; throws on a sanitizer report. */
  async cleanup() {
    for (const fn of this.cleanups.reverse()) {
      try {
        await fn();
      } catch {
        /* keep cleaning */
      }
    }
    await Promise.all(this.procs.map((p) => p.stop()));
    const reports = [];
    for (const p of this.procs) {
      const text = p.log();
      const m = SANITIZER.exec(text);
      if (m) reports.push(`${p.logPath}:\n${text.slice(m.index, m.index + 3000)}`);
    }
    if (process.env.MIZAN_TEST_KEEP_TMP === "1") console.log(`(kept ${this.tmp})`);
    else fs.rmSync(this.tmp, { recursive: true, force: true });
    if (reports.length > 0) throw new Error("sanitizer reports in the logs:\n" + reports.join("\n"));
  }
}

/** The built client (dist/), imported once it exists. */
export async function loadClient() {
  const entry = path.join(CLIENT_DIR, "dist", "index.js");
  if (!fs.existsSync(entry)) throw new Error(`no ${entry}: run npm run build in clients/typescript`);
  return import(entry);
}

/** A fetch that counts what it sends and records response headers. */
export function recordingFetch() {
  const log = [];
  const f = async (input, init = {}) => {
    const res = await fetch(input, init);
    log.push({ url: String(input), method: init.method ?? "GET", headers: init.headers ?? {}, status: res.status, response: res.headers });
    return res;
  };
  f.log = log;
  return f;
}
