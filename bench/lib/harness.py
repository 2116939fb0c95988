"""
harness.py - runs the bench scenarios against a built gateway and writes the
report (JSON, then Markdown and plots through report.py).

Started by bench/run, which installs the packages, builds the release tree
and the two helper programs (bench/ceiling/ceiling.c, bench/client/client.c),
makes the work directory and owns the EXIT/INT/TERM trap. This file starts
everything a run needs, all on loopback ports:

    redis-server                one, no persistence, for the Redis scenarios
    mizand "embedded"           in-process cache; calls, cache hits, fan-out,
                                idle connections
    mizand "miss"               in-process cache bounded to 64 KiB (the
                                smallest the config allows), for the
                                every-fetch-a-miss scenario
    mizand "redis-a", "redis-b" sharing Redis and one SQLite file: cache hits
                                through Redis, the mixed workload, SSE
    redis-server x 6            a Redis Cluster (3 masters, 3 replicas) for the
                                *_redis_cluster scenarios
    mizand "cluster-a", "cluster-b" sharing the cluster and another SQLite file
    mizand "storm-lock-1..3",   sharing Redis, the miss_storm_fleet scenario:
    "storm-nolock-1..3"         concurrent first requests for one bundle over
                                3 instances, with the fleet fill lock and
                                with cache.fill_lock false
    mizand "upstream"           no module: four upstream functions declared in
                                its config, answered by "ceiling-upstream",
                                and two contexts bundling them (TTL 0 and
                                TTL 300), for the upstream_bundle scenarios
    ceiling                     the evhttp + jansson reference server
    ceiling "ceiling-upstream"  a second instance of it, the HTTP service the
                                upstream functions call (never the bottleneck:
                                it is the least a JSON server can do)

Every process it starts is written to <work>/pids ("PID NAME" lines) before
anything else happens, so that bench/run's trap can kill exactly those even
when this interpreter dies; each also gets PR_SET_PDEATHSIG. On the way out
(normal end, exception, SIGINT, SIGTERM) it stops what it started, and only
that: SIGTERM, then SIGKILL after a grace period.

Pinning: with two CPUs or more, the load generators (wrk, bench-client) are
pinned with taskset to the first half of the CPUs this process may use and
every server (gateways, ceilings, Redis) to the other half; gateways and the
ceilings get as many I/O threads as there are server CPUs, and wrk as many
threads as there are load CPUs.

Only the Python standard library is used (Debian's python3).
"""

import argparse
import ctypes
import datetime
import http.client
import json
import os
import platform
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import zlib

import report

TOKEN_SECRET = "bench-token-secret-0123456789abcdef-0123"
CACHE_SECRET = "bench-cache-secret-0123456789abcdef-0123"
POSTS = 1000             # posts seeded in every blog database
CHECK_POSTS = 100        # posts 901..1000 are the checker's; the mixed load writes 1..900
SMALL_CACHE = 65536      # cache.max_bytes of the miss instance (the config's minimum)
WORKERS = 16             # worker threads per gateway, as the blog example's config
CLK_TCK = os.sysconf("SC_CLK_TCK")
UPSTREAM_PATHS = ["/a", "/b", "/c", "/d"]  # one upstream function per path, all in one context
UPSTREAM_POOL = 64       # upstream connections per I/O thread: as many as wrk's, so the pool is not the limit
UPSTREAM_QUEUE = 1024    # calls that may wait for a pooled connection (64 connections x 4 calls fit)
UPSTREAM_CACHED_TTL = 300  # the cached variant's TTL: longer than the scenario, so it never expires mid-run
FANOUT_LIMIT = 32        # concurrent runs of each slow_* function allowed on the "embedded" gateway
GZIP_POSTS = 100         # posts in the gzip_bundle scenario's bundle (list_posts' maximum limit)
# The gzip_bundle scenario's context, declared in the "gzip" gateway's config: list_posts with its limit as a
# param, so one cached bundle holds GZIP_POSTS posts.
GZIP_CONTEXT = {"name": "bench_big", "ttl": 3600, "functions": ["list_posts"],
                "params_schema": {"type": "object", "properties": {"limit": {"type": "integer", "minimum": 1,
                                                                             "maximum": 100}},
                                  "required": ["limit"], "additionalProperties": False}}
# The miss_storm_fleet scenario's context: slow_a (sleeps ms) cached, with a round param so that every round of
# the storm is a first request for a bundle of its own.
STORM_CONTEXT = {"name": "bench_storm", "ttl": 300, "functions": ["slow_a"],
                 "params_schema": {"type": "object",
                                   "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": 10000},
                                                  "round": {"type": "integer", "minimum": 0}},
                                   "required": ["ms", "round"], "additionalProperties": False}}
STORM_INSTANCES = 3
STORM_MS = 200           # one computation of a storm bundle

SCENARIOS = [
    "call_ping", "call_add", "ctx_post_hit_embedded", "ctx_post_hit_redis", "ctx_post_hit_redis_cluster",
    "ctx_post_miss", "ctx_fanout", "mixed", "mixed_redis_cluster", "sse_fanout", "connections", "upstream_bundle",
    "upstream_bundle_cached", "gzip_bundle", "miss_storm_fleet",
]
CLUSTER_NODES = 6         # the Redis Cluster of the *_redis_cluster scenarios: 3 masters, 3 replicas

# What each set runs: seconds per wrk run, ceiling/gateway rounds per wrk
# scenario, open-loop rates, client counts.
SETS = {
    "full": {"duration": 10, "rounds": 3, "connections": 64, "fanout_rate": 100, "sse_clients": 1000, "sse_rate": 20,
             "idle_stages": [1000, 10000], "settle": 1.0, "storm_rounds": 20, "storm_clients": 30},
    "quick": {"duration": 3, "rounds": 1, "connections": 64, "fanout_rate": 50, "sse_clients": 100, "sse_rate": 20,
              "idle_stages": [500, 2000], "settle": 0.5, "storm_rounds": 5, "storm_clients": 20},
}


class BenchError(Exception):
    """A scenario could not run (its message goes into the report)."""


# ---------------------------------------------------------------------------
# /proc readers
# ---------------------------------------------------------------------------

def proc_cpu_ticks(pid):
    """utime + stime of pid in clock ticks, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def proc_status(pid, key):
    """A kB field of /proc/PID/status (VmRSS, VmHWM) in bytes, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def proc_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def reset_peak_rss(pid):
    """Resets VmHWM to the current RSS (Linux >= 4.0); False when refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_ticks_split():
    """
    (process ticks, interrupt ticks, steal ticks) of all CPUs from /proc/stat:
    user + nice + system, irq + softirq (loopback TCP is mostly softirq work,
    charged to no process), steal (taken by the hypervisor).
    """
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2], v[5] + v[6], v[7] if len(v) > 7 else 0


def per_cpu_ticks():
    """{cpu: (busy ticks, all ticks)} from the cpuN lines of /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            parts = line.split()
            v = [int(x) for x in parts[1:]]
            out[int(parts[0][3:])] = (sum(v[:8]) - v[3] - v[4], sum(v[:8]))
    return out


def cores_busy(before, after, cores):
    """Mean busy fraction of cores between two per_cpu_ticks() readings."""
    busy = total = 0
    for c in cores:
        if c in before and c in after:
            busy += after[c][0] - before[c][0]
            total += after[c][1] - before[c][1]
    return round(busy / total, 3) if total else None


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------
# HTTP and Prometheus helpers
# ---------------------------------------------------------------------------

def port_free(port):
    """Whether 127.0.0.1:port can be bound now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def redis_command(port, *args, timeout=2):
    """One inline command on a fresh connection; the raw reply text ("" on failure)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall((" ".join(args) + "\r\n").encode())
            time.sleep(0.01)
            return s.recv(65536).decode(errors="replace")
    except OSError:
        return ""


def redis_ping(port, proc, timeout=10):
    """Waits until redis-server proc answers PING on port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.alive():
        if redis_command(port, "PING", timeout=1).startswith("+PONG"):
            return True
        time.sleep(0.05)
    return False


def http_request(addr, method, path, body=None, headers=None, timeout=15):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(addr):
    """{(name, ((label, value), ...)): float} from /metrics, or None."""
    try:
        status, _, body = http_request(addr, "GET", "/metrics")
    except OSError:
        return None
    if status != 200:
        return None
    out = {}
    for line in body.decode("utf-8", "replace").splitlines():
        m = METRIC_LINE.match(line)
        if not m or line.startswith("#"):
            continue
        labels = tuple(sorted(LABEL.findall(m.group(2) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            pass
    return out


def metric_delta(before, after, name, **labels):
    """after - before of one series; None when /metrics is unavailable or lacks it."""
    if before is None or after is None:
        return None
    key = (name, tuple(sorted(labels.items())))
    if key not in after:
        return None
    return after[key] - before.get(key, 0.0)


def _n(x):
    """An integer with thousands separators, or "unknown"."""
    return "unknown" if x is None else f"{x:,}"


def metric_value(snapshot, name, **labels):
    """One series' value as an int (counters and small gauges); None when absent."""
    if snapshot is None:
        return None
    v = snapshot.get((name, tuple(sorted(labels.items()))))
    return int(v) if v is not None else None


def cache_outcomes(pairs, context):
    """Cache outcome deltas of context summed over (before, after) pairs."""
    total = {"hit": 0, "miss": 0, "bypass": 0}
    for before, after in pairs:
        for outcome in total:
            d = metric_delta(before, after, "mizan_cache_requests_total", context=context, outcome=outcome)
            if d is None:
                return None
            total[outcome] += int(d)
    n = sum(total.values())
    total["hit_ratio"] = round(total["hit"] / n, 4) if n else None
    return total


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Proc:
    def __init__(self, name, popen, log):
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.log = log

    def alive(self):
        return self.popen.poll() is None

    def log_tail(self, n=15):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except (OSError, TypeError):
            return ""


class Gateway:
    def __init__(self, name, proc, addr, config):
        self.name = name
        self.proc = proc
        self.addr = addr
        self.config = config

    def url(self, path):
        return f"http://{self.addr}{path}"


class Harness:
    def __init__(self, opts):
        self.o = opts
        self.s = SETS[opts.set]
        self.work = opts.work
        self.pidfile = os.path.join(self.work, "pids")
        self.procs = []
        self.mizand = os.path.join(opts.bin, "mizand")
        self.module_dir = os.path.join(opts.bin, "modules")
        self.ceiling_bin = os.path.join(opts.tools, "ceiling")
        self.client_bin = os.path.join(opts.tools, "bench-client")
        self.lua = os.path.join(opts.source, "bench", "lua")
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2 and not opts.no_pin:
            half = len(cpus) // 2
            self.load_cores, self.server_cores = cpus[:half], cpus[half:]
        else:
            self.load_cores, self.server_cores = [], []
        self.io_threads = max(1, len(self.server_cores) or len(cpus))
        self.wrk_threads = max(1, len(self.load_cores) or 1)
        # Open-loop and mixed scenarios run once, as long as all rounds of a wrk scenario.
        self.long = self.s["duration"] * self.s["rounds"]
        self.started = time.monotonic()
        self.planned = 0.0
        self.tty = sys.stderr.isatty()
        self.foreign = []
        self.gateways = {}
        self.redis = None
        self.redis_addr = None
        self.cluster_nodes = []     # the Redis Cluster's redis-server processes
        self.cluster_url = None
        self.redis_measured = []    # the Redis processes whose CPU the current scenario reports
        self.ceiling = None
        self.upstream_svc = None
        self.token = None

    # -- progress ---------------------------------------------------------

    def say(self, msg):
        el = time.monotonic() - self.started
        line = f"[{fmt_clock(el)} / ~{fmt_clock(self.planned)}] {msg}"
        if self.tty:
            sys.stderr.write("\r\033[K")
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def wait_procs(self, procs, label, seconds):
        """Waits for procs to exit, showing a countdown on a terminal."""
        t0 = time.monotonic()
        while any(p.poll() is None for p in procs):
            if self.tty:
                el = time.monotonic() - t0
                sys.stderr.write(f"\r\033[K    {label}: {el:4.0f}/{seconds:.0f} s")
                sys.stderr.flush()
            time.sleep(0.25)
        if self.tty:
            sys.stderr.write("\r\033[K")

    # -- starting and stopping ----------------------------------------------

    def pin(self, argv, cores):
        if cores:
            return ["taskset", "-c", ",".join(str(c) for c in cores)] + argv
        return argv

    def spawn(self, name, argv, cores, log=None, stdin=None, stdout=None, env=None):
        out = open(log, "ab") if log else subprocess.DEVNULL
        try:
            p = subprocess.Popen(self.pin(argv, cores), stdin=stdin or subprocess.DEVNULL,
                                 stdout=stdout or out, stderr=out, env=env,
                                 preexec_fn=_die_with_parent, cwd=self.work)
        finally:
            if log:
                out.close()
        proc = Proc(name, p, log)
        self.procs.append(proc)
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid} {name}\n")
        return proc

    def stop(self, proc, grace=10.0):
        if proc.popen.poll() is None:
            try:
                proc.popen.send_signal(signal.SIGTERM)
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
            except ProcessLookupError:
                pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self):
        for proc in reversed(list(self.procs)):
            self.stop(proc)

    def gateway_env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIZAN_")}
        return env

    def start_redis(self):
        for _ in range(5):
            port = free_port()
            d = os.path.join(self.work, "redis")
            os.makedirs(d, exist_ok=True)
            proc = self.spawn("redis-server", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                               "--save", "", "--appendonly", "no", "--dir", d,
                                               "--daemonize", "no", "--protected-mode", "no"],
                              self.server_cores, log=os.path.join(self.work, "redis.log"))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.alive():
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                        s.sendall(b"PING\r\n")
                        if s.recv(64).startswith(b"+PONG"):
                            self.redis, self.redis_addr = proc, f"127.0.0.1:{port}"
                            return
                except OSError:
                    time.sleep(0.05)
            self.stop(proc)
        raise BenchError("redis-server did not start (see redis.log)")

    def start_redis_cluster(self):
        """Six cluster-enabled redis-server (port P and bus port P + 10000 free), joined by redis-cli."""
        addrs = []
        for i in range(CLUSTER_NODES):
            d = os.path.join(self.work, f"redis-node{i + 1}")
            os.makedirs(d, exist_ok=True)
            for _ in range(10):
                port = 20000 + random.randrange(30000)
                if not (port_free(port) and port_free(port + 10000)):
                    continue
                proc = self.spawn(f"redis-node{i + 1}",
                                  ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", d, "--daemonize", "no", "--protected-mode", "no",
                                   "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                   "--cluster-node-timeout", "2000"],
                                  self.server_cores, log=os.path.join(self.work, f"redis-node{i + 1}.log"))
                if redis_ping(port, proc):
                    self.cluster_nodes.append(proc)
                    addrs.append(f"127.0.0.1:{port}")
                    break
                self.stop(proc)
            else:
                raise BenchError(f"cluster node {i + 1} did not start (see redis-node{i + 1}.log)")
        r = subprocess.run(["redis-cli", "--cluster", "create"] + addrs + ["--cluster-replicas", "1",
                                                                          "--cluster-yes"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise BenchError(f"redis-cli --cluster create failed: {r.stdout[-500:]}{r.stderr[-500:]}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in redis_command(int(a.rsplit(":", 1)[1]), "CLUSTER", "INFO") for a in addrs):
                self.cluster_url = "redis-cluster://" + ",".join(addrs)
                return
            time.sleep(0.1)
        raise BenchError("the Redis Cluster did not reach cluster_state:ok")

    def start_gateway(self, name, db, redis=False, cache_max_bytes=None, extra=None, cache_extra=None):
        """
        Starts a gateway on a free port and waits for /readyz. db: the blog
        module's SQLite file, or None for a gateway without modules; extra:
        more top-level config sections (upstreams, functions, contexts).
        """
        for _ in range(5):
            port = free_port()
            cache = {"secret": CACHE_SECRET}
            if redis == "cluster":
                cache["redis_url"] = self.cluster_url
            elif redis:
                cache["redis_url"] = f"redis://{self.redis_addr}/0"
            if cache_max_bytes:
                cache["max_bytes"] = cache_max_bytes
            cache.update(cache_extra or {})
            cfg = {
                "listen": f"127.0.0.1:{port}",
                "io_threads": self.io_threads,
                "workers": WORKERS,
                "idle_timeout_s": 3600,
                "drain_timeout_ms": 2000,
                # The per-request access log of "info" would be measured too.
                "log_level": "warn",
                "instance": f"bench-{name}",
                "module_dir": self.module_dir,
                "token": {"secret": TOKEN_SECRET},
                "cache": cache,
            }
            if db is not None:
                cfg["modules"] = [{"name": "blog", "config": {"db": db, "seed_posts": POSTS}}]
            cfg.update(extra or {})
            path = os.path.join(self.work, f"{name}.json")
            with open(path, "w") as f:
                json.dump(cfg, f, indent=2)
            log = os.path.join(self.work, f"{name}.log")
            proc = self.spawn(f"mizand-{name}", [self.mizand, "--config", path], self.server_cores,
                              log=log, env=self.gateway_env())
            addr = f"127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.alive():
                try:
                    status, _, _ = http_request(addr, "GET", "/readyz", timeout=2)
                    if status == 200:
                        gw = Gateway(name, proc, addr, path)
                        self.gateways[name] = gw
                        return gw
                except OSError:
                    pass
                time.sleep(0.1)
            tail = proc.log_tail()
            self.stop(proc)
            if "in use" not in tail:
                raise BenchError(f"gateway {name} did not become ready:\n{tail}")
        raise BenchError(f"gateway {name}: no free port after 5 tries")

    def start_ceiling(self, name="ceiling"):
        """Starts a ceiling server (the reference, or the upstream service) and returns it."""
        out = os.path.join(self.work, f"{name}.out")
        with open(out, "wb") as stdout:
            proc = self.spawn(name, [self.ceiling_bin, "--threads", str(self.io_threads), "--port", "0"],
                              self.server_cores, log=os.path.join(self.work, f"{name}.log"), stdout=stdout)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.alive():
            with open(out) as f:
                m = re.search(r"listening (\S+)", f.read())
            if m:
                return Gateway(name, proc, m.group(1), None)
            time.sleep(0.05)
        raise BenchError(f"the {name} server did not start:\n" + proc.log_tail())

    def upstream_config(self, service):
        """The upstreams/functions/contexts sections of the 'upstream' gateway."""
        fns = [{"name": f"up_{p.strip('/')}", "kind": "query",
                "description": f"GET {p} on the bench's upstream service (its whole answer is the result)",
                # No identity headers: the answers are the same for every caller, as public contexts need.
                "upstream": {"service": "svc", "method": "GET", "path": p, "identity": False}}
               for p in UPSTREAM_PATHS]
        names = [f["name"] for f in fns]
        return {
            "upstreams": {"svc": {"url": f"http://{service.addr}", "timeout_ms": 10000, "pool_size": UPSTREAM_POOL,
                                  "queue_size": UPSTREAM_QUEUE, "idle_timeout_ms": 600000}},
            "functions": fns,
            "contexts": [
                {"name": "bundle", "ttl": 0, "scope": "public", "functions": names,
                 "description": "four upstream calls per fetch, never cached"},
                {"name": "bundle_cached", "ttl": UPSTREAM_CACHED_TTL, "scope": "public", "functions": names,
                 "description": "the same four calls, cached"},
            ],
        }

    def mint_token(self, gw):
        r = subprocess.run([self.mizand, "token", "--config", gw.config, "--sub", "alice", "--staff",
                            "--ttl", "86400"], capture_output=True, text=True, env=self.gateway_env(),
                           timeout=60)
        if r.returncode != 0 or not r.stdout.strip():
            raise BenchError(f"mizand token failed: {r.stderr.strip()}")
        return r.stdout.strip().splitlines()[-1]

    # -- measuring ------------------------------------------------------------

    def probe_start(self, servers):
        """Starts measuring: CPU of every process we started, peak RSS of servers."""
        state = {"t": time.monotonic(), "sys": cpu_ticks_split(), "percpu": per_cpu_ticks(),
                 "children": resource.getrusage(resource.RUSAGE_CHILDREN), "cpu": {}}
        for p in servers:
            reset_peak_rss(p.pid)
        for p in self.procs:
            state["cpu"][p.pid] = proc_cpu_ticks(p.pid)
        return state

    def probe_stop(self, state, servers, helpers=()):
        """
        Ends a measurement: the servers' CPU and peak RSS, the load
        generators' CPU (children reaped meanwhile) and what the rest of the
        machine used (foreign: other people's work, the noise). helpers:
        processes the servers depend on (the upstream service), measured on
        their own: their CPU time goes into helper_cpu_s by name, not into
        server_cpu_s.
        """
        wall = time.monotonic() - state["t"]
        server_ticks = 0
        all_ticks = 0
        helper_ticks = {}
        for p in self.procs:
            before, after = state["cpu"].get(p.pid), proc_cpu_ticks(p.pid)
            if (p in servers or p in helpers) and (before is None or after is None):
                raise BenchError(f"{p.name} exited during the measurement:\n{p.log_tail()}")
            if before is None or after is None:
                continue
            all_ticks += after - before
            if p in servers:
                server_ticks += after - before
            if p in helpers:
                helper_ticks[p.name] = after - before
        ru0, ru1 = state["children"], resource.getrusage(resource.RUSAGE_CHILDREN)
        load_s = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        now = cpu_ticks_split()
        percpu = per_cpu_ticks()
        proc_s, irq_s, steal_s = ((a - b) / CLK_TCK for a, b in zip(now, state["sys"]))
        foreign = max(0.0, proc_s - all_ticks / CLK_TCK - load_s) + steal_s
        peaks = [proc_status(p.pid, "VmHWM") for p in servers]
        out = {
            "wall_s": round(wall, 3),
            "server_cpu_s": round(server_ticks / CLK_TCK, 3),
            "server_cpu_cores": round(server_ticks / CLK_TCK / wall, 3) if wall > 0 else None,
            "loadgen_cpu_cores": round(load_s / wall, 3) if wall > 0 else None,
            "foreign_cpu_cores": round(foreign / wall, 3) if wall > 0 else None,
            "softirq_cpu_cores": round(irq_s / wall, 3) if wall > 0 else None,
            # How busy the pinned CPUs were, whoever used them (1.0: saturated).
            "server_cpus_busy": cores_busy(state["percpu"], percpu, self.server_cores),
            "load_cpus_busy": cores_busy(state["percpu"], percpu, self.load_cores),
            "peak_rss_bytes": max((x for x in peaks if x is not None), default=None),
        }
        if helpers:
            out["helper_cpu_s"] = {k: round(v / CLK_TCK, 3) for k, v in helper_ticks.items()}
        if out["foreign_cpu_cores"] is not None:
            self.foreign.append(out["foreign_cpu_cores"])
        return out

    def redis_cpu_ticks(self):
        """CPU ticks of the Redis processes the current scenario uses (every node of a cluster), or None."""
        ticks = [proc_cpu_ticks(p.pid) for p in self.redis_measured]
        return sum(ticks) if ticks and None not in ticks else None

    def wrk(self, url, script, args, conns, env=None, duration=None):
        duration = duration or self.s["duration"]
        argv = ["wrk", "-t", str(min(self.wrk_threads, conns)), "-c", str(conns), "-d", f"{duration}s",
                "--timeout", "10s", "-s", os.path.join(self.lua, script), url, "--"] + [str(a) for a in args]
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.Popen(self.pin(argv, self.load_cores), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=e, preexec_fn=_die_with_parent, cwd=self.work)
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid} wrk\n")
        return p

    @staticmethod
    def wrk_result(p):
        out, err = p.communicate()
        text = out.decode("utf-8", "replace")
        for line in text.splitlines():
            if line.startswith("BENCH_JSON "):
                return json.loads(line[len("BENCH_JSON "):])
        raise BenchError(f"wrk printed no report (exit {p.returncode}): {err.decode(errors='replace')[-500:]}"
                         f"{text[-500:]}")

    def measure_wrk(self, label, runs, servers, extra=None, duration=None, helpers=()):
        """
        Runs one wrk per (url, script, args, conns, env) in runs at the same
        time and measures servers (and helpers, apart) meanwhile. Returns
        the measurement.
        """
        self.say(label)
        redis0 = self.redis_cpu_ticks()
        state = self.probe_start(servers)
        procs = [self.wrk(*r, duration=duration) for r in runs]
        self.wait_procs(procs, label, duration or self.s["duration"])
        results = [self.wrk_result(p) for p in procs]
        probe = self.probe_stop(state, servers, helpers)
        m = combine_wrk(results, [r[3] for r in runs])
        m.update(probe)
        m["cpu_us_per_req"] = round(probe["server_cpu_s"] * 1e6 / m["requests"], 2) if m["requests"] else None
        if extra is not None and redis0 is not None:
            m["redis_cpu_s"] = round((self.redis_cpu_ticks() - redis0) / CLK_TCK, 3)
        return m

    def client(self, mode, args, label, stdin=None):
        argv = self.pin([self.client_bin, mode] + [str(a) for a in args], self.load_cores)
        self.say(label)
        p = subprocess.Popen(argv, stdin=stdin or subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, preexec_fn=_die_with_parent, cwd=self.work)
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid} bench-client\n")
        return p

    def client_result(self, p, label, seconds):
        self.wait_procs([p], label, seconds)
        out, err = p.communicate()
        lines = [l for l in out.decode(errors="replace").splitlines() if l.startswith("{")]
        if p.returncode != 0 or not lines:
            raise BenchError(f"bench-client failed (exit {p.returncode}): {err.decode(errors='replace')[-800:]}")
        if err.strip():
            sys.stderr.write(err.decode(errors="replace"))
        return json.loads(lines[-1])

    def warm(self, gw, context="post"):
        """Fetches every post's context once on one keep-alive connection."""
        host, port = gw.addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        bad = 0
        try:
            for i in range(1, POSTS + 1):
                conn.request("GET", f"/api/mizan/ctx/{context}/?post_id={i}")
                r = conn.getresponse()
                r.read()
                bad += r.status != 200
        finally:
            conn.close()
        if bad:
            raise BenchError(f"warming {gw.name}: {bad} of {POSTS} context fetches failed")

    # -- scenarios --------------------------------------------------------------

    def ceiling_vs(self, name, runs_for, gateway_servers, metrics_of, extra_redis=False, helpers=(),
                   after_gateway=None):
        """
        Runs the same wrk load against the ceiling and the gateway(s), in
        rounds ordered ceiling, gateway, gateway, ceiling, ... so that a slow
        drift of the machine's load hits both alike. runs_for(targets) gives
        the wrk runs. Each side reports its best round (highest req/s): other
        people's work on the machine only ever slows a run down. Every
        round's figures stay in the report. helpers: processes measured
        apart during the gateway rounds (see probe_stop); after_gateway(m),
        when given, is called after each gateway round to add to its
        measurement.
        """
        rounds = self.s["rounds"]
        order = []
        for i in range(rounds):
            order += ["ceiling", "gateway"] if i % 2 == 0 else ["gateway", "ceiling"]
        seen = {"ceiling": [], "gateway": []}
        before = [scrape(g.addr) for g in gateway_servers]
        for k, side in enumerate(order):
            n = len(seen[side]) + 1
            label = f"{name}: {side}" + (f" (round {n}/{rounds})" if rounds > 1 else "")
            if side == "ceiling":
                m = self.measure_wrk(label, runs_for([self.ceiling] * len(gateway_servers)), [self.ceiling.proc])
            else:
                m = self.measure_wrk(label, runs_for(gateway_servers), [x.proc for x in gateway_servers],
                                     extra=True if extra_redis else None, helpers=helpers)
                if after_gateway is not None:
                    after_gateway(m)
            seen[side].append(m)
        after = [scrape(x.addr) for x in gateway_servers]
        for x in gateway_servers:
            if not x.proc.alive():
                raise BenchError(f"gateway {x.name} died:\n{x.proc.log_tail()}")
        best = {}
        for side, ms in seen.items():
            best[side] = dict(max(ms, key=lambda m: m["rps"]))
            best[side]["rounds"] = [{"rps": m["rps"], "requests": m["requests"], "errors": m["errors"]["total"],
                                     "p50_ms": m["latency_ms"]["p50"], "p99_ms": m["latency_ms"]["p99"],
                                     "foreign_cpu_cores": m["foreign_cpu_cores"],
                                     **({"counters": m["counters"]} if m.get("counters") else {})}
                                    for m in ms]
        g, c = best["gateway"], best["ceiling"]
        body = {"gateway": g, "ceiling": c, "ratio": ratios(g, c)}
        if metrics_of:
            body.update(metrics_of(list(zip(before, after))))
        return body

    def sc_call(self, fn):
        gw = self.gateways["embedded"]
        conns = self.s["connections"]

        def runs(targets):
            return [(t.url("/api/mizan/call/"), "call.lua", [fn], conns, None) for t in targets]

        def metrics(pairs):
            runs_ = metric_delta(pairs[0][0], pairs[0][1], "mizan_function_runs_total", function=fn)
            return {"function_runs": int(runs_) if runs_ is not None else None}

        body = self.ceiling_vs(f"call_{fn}", runs, [gw], metrics)
        body["what"] = (f"POST /api/mizan/call/ {{\"function\": \"{fn}\"}} on {conns} keep-alive connections; "
                        "the embedded-cache gateway")
        return body

    def sc_hit(self, which):
        gw = self.gateways[{"embedded": "embedded", "redis": "redis-a", "redis_cluster": "cluster-a"}[which]]
        self.redis_measured = {"redis": [self.redis], "redis_cluster": self.cluster_nodes}.get(which, [])
        conns = self.s["connections"]
        self.say(f"ctx_post_hit_{which}: warming {POSTS} bundles")
        self.warm(gw)

        def runs(targets):
            return [(t.url("/api/mizan/ctx/post/"), "ctx_post.lua", ["random", POSTS, self.wrk_threads], conns,
                     None) for t in targets]

        body = self.ceiling_vs(f"ctx_post_hit_{which}", runs, [gw],
                               lambda pairs: {"cache": cache_outcomes(pairs, "post")}, extra_redis=which != "embedded")
        cache = {"redis": "Redis", "redis_cluster": "a Redis Cluster of 3 masters and 3 replicas (redis_cpu_s: all six)",
                 "embedded": "embedded (in process)"}[which]
        body["what"] = (f"GET /api/mizan/ctx/post/?post_id=N, N uniform in 1..{POSTS}, after every bundle was "
                        f"fetched once; cache: {cache}")
        return body

    def sc_miss(self):
        gw = self.gateways["miss"]
        conns = self.s["connections"]

        def runs(targets):
            return [(t.url("/api/mizan/ctx/post/"), "ctx_post.lua", ["scan", POSTS, self.wrk_threads], conns,
                     None) for t in targets]

        body = self.ceiling_vs("ctx_post_miss", runs, [gw], lambda pairs: {"cache": cache_outcomes(pairs, "post")})
        body["what"] = (f"GET the post context cycling through post_id 1..{POSTS} in order against a gateway whose "
                        f"embedded cache is bounded to {SMALL_CACHE // 1024} KiB (far fewer than {POSTS} bundles): "
                        "the LRU evicts every bundle before it comes round again, so every fetch runs get_post, "
                        "list_comments and get_author (SQLite) concurrently and stores the result")
        return body

    def storm_round(self, gws, path, clients):
        """clients concurrent GETs of path on each gateway, released together; (statuses, X-Mizan-Cache) counts."""
        import threading
        barrier = threading.Barrier(clients * len(gws))
        statuses, caches, lock = {}, {}, threading.Lock()

        def one(addr):
            try:
                barrier.wait(timeout=30)
                status, headers, _ = http_request(addr, "GET", path, timeout=30)
                cache = headers.get("X-Mizan-Cache", "none")
            except (OSError, threading.BrokenBarrierError) as e:
                status, cache = type(e).__name__, "none"
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                caches[cache] = caches.get(cache, 0) + 1

        threads = [threading.Thread(target=one, args=(gw.addr,)) for gw in gws for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return statuses, caches

    def sc_storm(self):
        rounds, clients = self.s["storm_rounds"], self.s["storm_clients"]
        out = {"what": (f"{rounds} rounds of {clients} concurrent first requests on each of {STORM_INSTANCES} "
                        f"instances sharing Redis for one new bundle (a context of slow_a, {STORM_MS} ms): "
                        "computations (slow_a runs, summed over the instances' /metrics) with the fleet fill lock "
                        "and with cache.fill_lock false"),
               "rounds": rounds, "clients_per_instance": clients, "instances": STORM_INSTANCES}
        checks = []
        for label, offset in (("lock", 0), ("nolock", 100000)):
            gws = [self.gateways[f"storm-{label}-{i}"] for i in range(1, STORM_INSTANCES + 1)]
            before = [scrape(gw.addr) for gw in gws]
            statuses, caches = {}, {}
            t0 = time.monotonic()
            for r in range(rounds):
                path = f"/api/mizan/ctx/bench_storm/?ms={STORM_MS}&round={offset + r}"
                st, ca = self.storm_round(gws, path, clients)
                for k, v in st.items():
                    statuses[str(k)] = statuses.get(str(k), 0) + v
                for k, v in ca.items():
                    caches[k] = caches.get(k, 0) + v
            elapsed = time.monotonic() - t0
            after = [scrape(gw.addr) for gw in gws]
            runs = [metric_delta(b, a, "mizan_function_runs_total", function="slow_a") for b, a in zip(before, after)]
            locks = {o: sum(int(metric_delta(b, a, "mizan_cache_fill_locks_total", outcome=o) or 0)
                            for b, a in zip(before, after)) for o in ("won", "waited", "served", "expired")}
            total = int(sum(x for x in runs if x is not None))
            out[label] = {"computations": total, "per_bundle": round(total / rounds, 2),
                          "per_instance": [int(x) if x is not None else None for x in runs],
                          "requests": rounds * clients * STORM_INSTANCES, "statuses": statuses, "cache": caches,
                          "fill_locks": locks, "elapsed_s": round(elapsed, 2)}
            self.say(f"miss_storm_fleet ({label}): {total} computations for {rounds} bundles; statuses {statuses}, "
                     f"cache {caches}, locks {locks}")
        lk, nl = out["lock"], out["nolock"]
        checks.append({"name": "storm_one_computation_per_bundle", "passed": lk["computations"] == rounds,
                       "detail": f"{lk['computations']} computations for {rounds} bundles with the fill lock "
                                 f"({nl['computations']} without it) (pass: exactly one per bundle)"})
        checks.append({"name": "storm_all_answered", "passed": set(lk["statuses"]) == {"200"}
                       and set(nl["statuses"]) == {"200"},
                       "detail": f"statuses with the lock {lk['statuses']}, without {nl['statuses']} (pass: all 200)"})
        out["checks"] = checks
        return out

    def sc_fanout(self):
        gw = self.gateways["embedded"]
        rate, d = self.s["fanout_rate"], self.long
        args = ["--rate", rate, "--duration", d, "--conns", 64]
        c = self.client_result(self.client("rate", ["--url", self.ceiling.url("/api/mizan/ctx/fanout/?ms=20")]
                                           + args, "ctx_fanout: ceiling (open loop)"),
                               "ctx_fanout: ceiling", d)
        before = scrape(gw.addr)
        state = self.probe_start([gw.proc])
        g = self.client_result(self.client("rate", ["--url", gw.url("/api/mizan/ctx/fanout/?ms=20")] + args,
                                           "ctx_fanout: gateway (open loop)"), "ctx_fanout: gateway", d)
        probe = self.probe_stop(state, [gw.proc])
        after = scrape(gw.addr)
        runs = {f: metric_delta(before, after, "mizan_function_runs_total", function=f)
                for f in ("slow_a", "slow_b", "slow_c", "slow_d")}
        # The bench's gateway runs each slow_* at most FANOUT_LIMIT at a time; at this rate about
        # rate x 20 ms = 2 fetches are in flight, so none should be refused. A refused run would leave an UNAVAILABLE slot in a 200 bundle
        # (invisible to the client's status counts): count them from the gateway's metrics.
        limited = {f: metric_delta(before, after, "mizan_function_limited_total", function=f)
                   for f in ("slow_a", "slow_b", "slow_c", "slow_d")}
        refused = sum(int(v) for v in limited.values() if v is not None)
        p50 = g["latency_ms"]["p50"]
        gm = open_loop_measurement(g, probe)
        return {
            "what": (f"GET /api/mizan/ctx/fanout/?ms=20 (four functions that each sleep 20 ms) at a fixed "
                     f"{rate} requests/s from the open-loop client; run one after the other they would take 80 ms"),
            "gateway": gm,
            "ceiling": open_loop_measurement(c, None),
            "ideal_ms": 20,
            "sequential_ms": 80,
            "p50_vs_ideal": round(p50 / 20.0, 3) if p50 else None,
            "function_runs": {k: (int(v) if v is not None else None) for k, v in runs.items()},
            "function_limited": {k: (int(v) if v is not None else None) for k, v in limited.items()},
            "checks": [{"name": "fanout_concurrent", "passed": bool(p50 and p50 < 40.0),
                        "detail": f"p50 {p50} ms against 20 ms ideal, 80 ms sequential (pass: under 40 ms)"},
                       {"name": "fanout_within_limit", "passed": refused == 0,
                        "detail": f"{refused} slow_* runs refused at the bench's limit of {FANOUT_LIMIT} concurrent runs "
                                  "(pass: none, so every fetch measured ran all four functions)"}],
        }

    def sc_mixed(self, which="redis"):
        a, b = (self.gateways["redis-a"], self.gateways["redis-b"]) if which == "redis" else \
            (self.gateways["cluster-a"], self.gateways["cluster-b"])
        self.redis_measured = [self.redis] if which == "redis" else self.cluster_nodes
        half = self.s["connections"] // 2
        d = self.long
        tag = f"mixed{int(time.time())}"
        env = {"BENCH_TOKEN": self.token}

        def runs(targets):
            return [(f"http://{t.addr}", "mixed.lua", [5, POSTS, POSTS - CHECK_POSTS, f"{tag}-{i}"], half, env)
                    for i, t in enumerate(targets)]

        c = self.measure_wrk("mixed: ceiling (two wrk, one per target)", runs([self.ceiling, self.ceiling]),
                             [self.ceiling.proc], duration=d)
        before = [scrape(x.addr) for x in (a, b)]
        redis0 = self.redis_cpu_ticks()
        state = self.probe_start([a.proc, b.proc])
        self.say("mixed: gateways A and B (one wrk each) + read-after-write checker")
        procs = [self.wrk(*r, duration=d) for r in runs([a, b])]
        checker = self.client("check", ["--a", f"http://{a.addr}", "--b", f"http://{b.addr}", "--token",
                                        self.token, "--duration", d, "--chains", 4, "--post-base",
                                        POSTS - CHECK_POSTS + 1, "--post-count", CHECK_POSTS],
                              "mixed: checker running")
        self.wait_procs(procs, "mixed: gateways", d)
        results = [self.wrk_result(p) for p in procs]
        chk = self.client_result(checker, "mixed: checker", d)
        probe = self.probe_stop(state, [a.proc, b.proc])
        after = [scrape(x.addr) for x in (a, b)]
        g = combine_wrk(results, [half, half])
        g.update(probe)
        g["cpu_us_per_req"] = round(probe["server_cpu_s"] * 1e6 / g["requests"], 2) if g["requests"] else None
        if redis0 is not None:
            g["redis_cpu_s"] = round((self.redis_cpu_ticks() - redis0) / CLK_TCK, 3)
        g["per_instance"] = [{"instance": n, "rps": round(r["requests"] * 1e6 / r["duration_us"], 1),
                              "latency_ms": latency_ms(r), "reads": r["counters"].get("reads"),
                              "writes": r["counters"].get("writes")} for n, r in zip("AB", results)]
        viol = chk.get("violations")
        return {
            "what": (f"two gateways sharing {'Redis' if which == 'redis' else 'a Redis Cluster (3 + 3 replicas)'} "
                     f"and one SQLite file, one wrk each ({half} connections): 95 % GET "
                     f"post context (post 1..{POSTS}), 5 % update_post (posts 1..{POSTS - CHECK_POSTS}) with a "
                     f"bearer token; meanwhile a checker reads a post on one instance (which then holds its bundle), "
                     f"writes a unique title through the other and, once acknowledged, reads the post again on the "
                     f"first (posts {POSTS - CHECK_POSTS + 1}..{POSTS}, roles swapped on every pass)"),
            "gateway": g, "ceiling": c, "ratio": ratios(g, c),
            "cache": cache_outcomes(list(zip(before, after)), "post"),
            "checker": chk,
            "checks": [{"name": "read_after_write", "passed": viol == 0 and chk.get("reads_ok", 0) > 0,
                        "detail": f"{viol} stale reads in {chk.get('reads_ok')} write-then-read pairs across "
                                  f"instances (must be 0)"}],
        }

    def sc_sse(self):
        a, b = self.gateways["redis-a"], self.gateways["redis-b"]
        d, n, rate = self.long, self.s["sse_clients"], self.s["sse_rate"]
        args = ["--events", a.url("/api/mizan/events/?contexts=post"),
                "--events", b.url("/api/mizan/events/?contexts=post"),
                "--clients", n, "--mutate", a.url("/api/mizan/call/"), "--token", self.token,
                "--rate", rate, "--duration", d, "--post-base", 1, "--post-count", POSTS,
                "--settle", 5, "--conns", 8]
        state = self.probe_start([a.proc, b.proc])
        r = self.client_result(self.client("sse", args, f"sse_fanout: {n} streams, {rate} mutations/s"),
                               "sse_fanout", d + 5)
        probe = self.probe_stop(state, [a.proc, b.proc])
        ok = r.get("events_missing") == 0 and r.get("events_received", 0) > 0 and r.get("connected") == n
        return {
            "what": (f"{n} SSE clients on /api/mizan/events/?contexts=post, half on instance A and half on B; "
                     f"update_post on A at {rate}/s on distinct posts; delivery latency per (client, mutation) "
                     "measured from the mutation's response (negative: the event came first) and from its "
                     "scheduled send time"),
            "gateway": dict(r, **probe),
            "checks": [{"name": "sse_delivery", "passed": bool(ok),
                        "detail": f"{r.get('connected')}/{n} streams, {r.get('events_received')} of "
                                  f"{r.get('events_expected')} events delivered, {r.get('events_missing')} "
                                  "missing"}],
        }

    def idle_conns(self, target, label):
        stages = self.s["idle_stages"]
        pid = target.proc.pid
        base = {"rss_bytes": proc_status(pid, "VmRSS"), "fds": proc_fds(pid)}
        p = self.client("idle", ["--url", target.url("/healthz"), "--stages", ",".join(map(str, stages))],
                        label, stdin=subprocess.PIPE)
        out = {"baseline": base, "stages": []}
        for n in stages:
            line = p.stdout.readline().decode()
            if not line.startswith("ready"):
                p.kill()
                p.wait()
                raise BenchError(f"idle client: {line!r} {p.stderr.read().decode(errors='replace')[-500:]}")
            _, est, failed = line.split()
            time.sleep(self.s["settle"])
            rss, fds = proc_status(pid, "VmRSS"), proc_fds(pid)
            est = int(est)
            out["stages"].append({
                "connections": n, "established": est, "failed": int(failed), "rss_bytes": rss,
                "server_fds": fds,
                "bytes_per_connection": round((rss - base["rss_bytes"]) / est, 1) if est else None,
            })
            self.say(f"{label}: {est} idle connections, RSS {rss / 2**20:.1f} MiB")
            p.stdin.write(b"next\n")
            p.stdin.flush()
        p.stdin.close()
        p.wait(timeout=60)
        p.stdout.read()
        p.stderr.read()
        if not target.proc.alive():
            raise BenchError(f"{target.name} died holding idle connections:\n{target.proc.log_tail()}")
        return out

    def sc_connections(self):
        gw = self.gateways["embedded"]
        c = self.idle_conns(self.ceiling, "connections: ceiling")
        g = self.idle_conns(gw, "connections: gateway")
        ratio = []
        for gs, cs in zip(g["stages"], c["stages"]):
            if gs["bytes_per_connection"] and cs["bytes_per_connection"]:
                ratio.append({"connections": gs["connections"],
                              "bytes_per_connection": round(gs["bytes_per_connection"] /
                                                            cs["bytes_per_connection"], 2)})
        ok = all(s["established"] == s["connections"] for s in g["stages"])
        return {
            "what": ("idle keep-alive connections, each after one GET /healthz, opened in stages; RSS per "
                     "connection = (VmRSS at the stage - VmRSS before any) / connections"),
            "gateway": g, "ceiling": c, "ratio": ratio,
            "checks": [{"name": "idle_connections_held", "passed": ok,
                        "detail": ", ".join(f"{s['established']}/{s['connections']}" for s in g["stages"])}],
        }

    def fetch_bundle(self, gw, path):
        """
        Fetches one upstream bundle and checks it whole: status 200, one
        result per upstream function, each the service's answer to that
        function's path, and an empty errors object. Returns (bundle,
        X-Mizan-Cache); raises BenchError with the body otherwise.
        """
        status, headers, body = http_request(gw.addr, "GET", path)
        text = body.decode("utf-8", "replace")
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        data = doc.get("data") if isinstance(doc, dict) else None
        want = {f"up_{p.strip('/')}": p for p in UPSTREAM_PATHS}
        ok = (status == 200 and isinstance(data, dict) and set(data) == set(want) and doc.get("errors") == {} and
              all(isinstance(data[k], dict) and data[k].get("uri") == p for k, p in want.items()))
        if not ok:
            raise BenchError(f"GET {path} on {gw.name}: status {status}, not a complete bundle of "
                             f"{len(want)} upstream results: {text[:600]}")
        cache = next((v for k, v in headers.items() if k.lower() == "x-mizan-cache"), None)
        return doc, cache

    @staticmethod
    def established_to(addr):
        """ESTABLISHED IPv4 TCP connections whose remote end is addr (from /proc/net/tcp)."""
        host, port = addr.rsplit(":", 1)
        remote = "%s:%04X" % ("".join(f"{int(b):02X}" for b in reversed(host.split("."))), int(port))
        n = 0
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if len(parts) > 3 and parts[2] == remote and parts[3] == "01":
                    n += 1
        return n

    def sc_upstream(self, cached):
        gw, svc = self.gateways["upstream"], self.upstream_svc
        ctx = "bundle_cached" if cached else "bundle"
        name = "upstream_bundle_cached" if cached else "upstream_bundle"
        path = f"/api/mizan/ctx/{ctx}/"
        conns = self.s["connections"]
        nfn = len(UPSTREAM_PATHS)
        fns = [f"up_{p.strip('/')}" for p in UPSTREAM_PATHS]
        outcomes = ("ok", "client_error", "server_error", "timeout", "connect_error", "invalid", "rejected")
        # One fetch first: a broken bundle fails here with its body rather than as a count of bad answers.
        sample, first = self.fetch_bundle(gw, path)
        warm = None
        if cached:
            _, warm = self.fetch_bundle(gw, path)
            if warm != "HIT":
                raise BenchError(f"{name}: the second fetch of {path} was not a cache hit (X-Mizan-Cache: {warm})")

        def runs(targets):
            # The ceiling answers one GET of the first path: what one upstream call asks of the service.
            return [(t.url(UPSTREAM_PATHS[0]), "bundle.lua", ["nocheck"], conns, None) if t is self.ceiling
                    else (t.url(path), "bundle.lua", ["check"] + UPSTREAM_PATHS, conns, None) for t in targets]

        established = []

        def after_gateway(m):
            # Pooled connections stay open between requests: this is the pool the round used.
            m["upstream_connections_established"] = self.established_to(svc.addr)
            established.append(m["upstream_connections_established"])

        def metrics(pairs):
            before, after = pairs[0]

            def d(metric, **labels):
                v = metric_delta(before, after, metric, upstream="svc", **labels)
                return int(v) if v is not None else None

            calls = {o: d("mizan_upstream_calls_total", outcome=o) for o in outcomes}
            total = metric_value(after, "mizan_upstream_connections_opened_total", upstream="svc")
            runs_ = {f: metric_delta(before, after, "mizan_function_runs_total", function=f) for f in fns}
            return {
                "upstream": {
                    "calls": calls,
                    "retries": d("mizan_upstream_retries_total"),
                    "connections_opened": d("mizan_upstream_connections_opened_total"),
                    "connections_opened_since_start": total,
                    "breaker_opened": d("mizan_upstream_breaker_opened_total"),
                    "breaker_state_end": metric_value(after, "mizan_upstream_breaker_state", upstream="svc"),
                },
                "function_runs": {k: (int(v) if v is not None else None) for k, v in runs_.items()},
                "cache": cache_outcomes(pairs, ctx),
            }

        body = self.ceiling_vs(name, runs, [gw], metrics, helpers=[svc.proc], after_gateway=after_gateway)
        if not svc.proc.alive():
            raise BenchError(f"the upstream service died:\n{svc.proc.log_tail()}")
        g, c, up = body["gateway"], body["ceiling"], body["upstream"]
        # The upstream service's CPU in the kept gateway round, per bundle served.
        up_s = (g.pop("helper_cpu_s", None) or {}).get(svc.name)
        g["upstream_cpu_s"] = up_s
        g["upstream_cpu_us_per_req"] = round(up_s * 1e6 / g["requests"], 2) if up_s is not None and g["requests"] \
            else None
        g["cpu_us_per_req_with_upstream"] = (round(g["cpu_us_per_req"] + g["upstream_cpu_us_per_req"], 2)
                                             if g.get("cpu_us_per_req") is not None and
                                             g["upstream_cpu_us_per_req"] is not None else None)
        cc = c.get("cpu_us_per_req")
        body["ratio"]["cpu_us_per_req_with_upstream"] = (round(g["cpu_us_per_req_with_upstream"] / cc, 3)
                                                         if g["cpu_us_per_req_with_upstream"] is not None and cc
                                                         else None)
        # Every round's answers, not just the kept one's.
        rounds = g["rounds"]
        requests = sum(r["requests"] for r in rounds)
        errors = sum(r["errors"] for r in rounds)
        good = sum(r.get("counters", {}).get("bundles_ok", 0) for r in rounds)
        bad = sum(r.get("counters", {}).get("bundles_bad", 0) for r in rounds)
        calls_ok = up["calls"]["ok"]
        failed_calls = sum(v for k, v in up["calls"].items() if k != "ok" and v is not None)
        up["calls_per_request"] = round(calls_ok / requests, 4) if calls_ok is not None and requests else None
        up["upstream_cpu_us_per_call"] = (round(g["upstream_cpu_us_per_req"] / up["calls_per_request"], 2)
                                          if g["upstream_cpu_us_per_req"] and up["calls_per_request"] else None)
        up["connections_established_max"] = max(established, default=None)
        up["pool_bound"] = UPSTREAM_POOL * self.io_threads
        body["bundles"] = {"checked": good + bad, "complete": good, "incomplete": bad, "requests": requests,
                           "errors": errors, "first_fetch_cache": first, "second_fetch_cache": warm}
        body["sample_bundle"] = sample
        body["what"] = (f"GET {path}: a context of {nfn} upstream functions (GET {', '.join(UPSTREAM_PATHS)} on "
                        f"a second ceiling server, the upstream service, pinned with the other servers), "
                        + (f"TTL {UPSTREAM_CACHED_TTL} s and fetched twice first, so every request is a cache hit "
                           "and the upstream is not called" if cached else
                           f"TTL 0, so every request makes {nfn} concurrent upstream calls")
                        + f"; pool of {UPSTREAM_POOL} keep-alive connections per I/O thread, {conns} wrk connections, "
                        f"every answer checked by the wrk script. The ceiling side is one GET "
                        f"{UPSTREAM_PATHS[0]} answered directly (what one upstream call asks of the service)")
        calls_ok_check = (calls_ok is not None and failed_calls == 0 and
                          (calls_ok <= 0.01 * requests if cached else calls_ok >= nfn * requests))
        conn_ok = (up["connections_opened_since_start"] is not None and
                   0 < up["connections_opened_since_start"] <= up["pool_bound"])
        body["checks"] = [
            {"name": "bundles_complete", "passed": requests > 0 and good == requests and bad == 0 and errors == 0,
             "detail": f"{good:,} of {requests:,} answers (all {len(rounds)} gateway round(s)) were 200 with "
                       f"{nfn} upstream results and an empty errors object; {bad} incomplete, {errors} wrk errors"},
            {"name": "upstream_calls", "passed": bool(calls_ok_check),
             "detail": f"{_n(calls_ok)} successful upstream calls for {requests:,} answers "
                       f"({up['calls_per_request']} per answer; expected "
                       + ("about 0: the bundle is cached" if cached else f"at least {nfn}") +
                       f"), {failed_calls} failed"
                       + "".join(f", {v} {k}" for k, v in up["calls"].items() if k != "ok" and v)},
            {"name": "upstream_pool", "passed": bool(conn_ok),
             "detail": f"{up['connections_opened_since_start']} connections opened since start "
                       f"({up['connections_opened']} during this scenario, at most "
                       f"{up['connections_established_max']} established at once), bound "
                       f"{up['pool_bound']} ({UPSTREAM_POOL} per I/O thread): kept alive and reused"},
        ]
        return body

    def sc_gzip(self):
        """
        One large cached bundle fetched without and with Accept-Encoding:
        gzip: the gateway's CPU per answer and the bytes on the wire (wrk's
        byte count: headers and body) of each, and the gzip ratio of the
        body. The compressed answer is checked once to inflate to the plain
        one.
        """
        gw = self.gateways["gzip"]
        conns = self.s["connections"]
        path = f"/api/mizan/ctx/{GZIP_CONTEXT['name']}/?limit={GZIP_POSTS}"
        st_p, h_p, plain = http_request(gw.addr, "GET", path)
        st_z, h_z, packed = http_request(gw.addr, "GET", path, headers={"Accept-Encoding": "gzip"})
        if st_p != 200 or st_z != 200:
            raise BenchError(f"gzip_bundle: GET {path} answered {st_p} / {st_z}")
        try:
            inflated = zlib.decompress(packed, 16 + zlib.MAX_WBITS) if h_z.get("Content-Encoding") == "gzip" else None
        except zlib.error:
            inflated = None
        with open(os.path.join(self.work, "gzip.json")) as f:
            config = json.load(f)
        level, threshold = config.get("compress_level", 1), config.get("compress_min_bytes", 1024)
        m = {}
        for mode in ("plain", "gzip"):
            m[mode] = self.measure_wrk(f"gzip_bundle: {'Accept-Encoding: gzip' if mode == 'gzip' else 'no Accept-Encoding'}",
                                       [(gw.url(path), "gzip.lua", [mode], conns, None)], [gw.proc])
            m[mode]["wire_bytes_per_req"] = (round(m[mode]["bytes_read"] / m[mode]["requests"], 1)
                                             if m[mode]["requests"] else None)
        if not gw.proc.alive():
            raise BenchError(f"gateway gzip died:\n{gw.proc.log_tail()}")
        p, z = m["plain"], m["gzip"]
        cpu_p, cpu_z = p.get("cpu_us_per_req"), z.get("cpu_us_per_req")
        body = {
            "what": (f"GET {path}: one cached bundle of {GZIP_POSTS} posts ({len(plain):,} bytes of JSON), on {conns} "
                     f"keep-alive connections, first without Accept-Encoding, then with Accept-Encoding: gzip "
                     f"(compress_level {level}, threshold {threshold} bytes); no ceiling side: both runs are the "
                     "gateway, and the difference is the cost of compressing"),
            "gateway": z, "plain": p,
            "body_bytes": {"plain": len(plain), "gzip": len(packed)},
            "gzip_ratio": round(len(plain) / len(packed), 2) if packed else None,
            "wire_ratio": (round(p["wire_bytes_per_req"] / z["wire_bytes_per_req"], 2)
                           if p.get("wire_bytes_per_req") and z.get("wire_bytes_per_req") else None),
            "cpu_us_per_req": {"plain": cpu_p, "gzip": cpu_z,
                               "gzip_extra": round(cpu_z - cpu_p, 2) if cpu_p is not None and cpu_z is not None
                               else None},
            "compress_level": level,
        }
        body["checks"] = [
            {"name": "gzip_round_trip", "passed": inflated == plain and h_p.get("Content-Encoding") is None,
             "detail": f"Content-Encoding {h_z.get('Content-Encoding')} with Accept-Encoding: gzip, "
                       f"{h_p.get('Content-Encoding')} without; the {len(packed):,}-byte body "
                       + ("inflates to exactly the plain one" if inflated == plain else "does NOT inflate to the plain one")},
            {"name": "gzip_no_errors", "passed": p["errors"]["total"] == 0 and z["errors"]["total"] == 0
             and p["requests"] > 0 and z["requests"] > 0,
             "detail": f"{p['requests']:,} plain and {z['requests']:,} gzip answers; errors {p['errors']['total']} / "
                       f"{z['errors']['total']}"},
        ]
        return body

    # -- the run ----------------------------------------------------------------

    def plan(self, selected):
        d = self.s["duration"]
        w = 2 * self.s["rounds"] * (d + 0.5)
        cost = {"call_ping": w, "call_add": w, "ctx_post_hit_embedded": w + 2,
                "ctx_post_hit_redis": w + 2, "ctx_post_hit_redis_cluster": w + 2, "ctx_post_miss": w,
                "ctx_fanout": 2 * self.long + 2, "mixed": 2 * self.long + 3, "mixed_redis_cluster": 2 * self.long + 3,
                "sse_fanout": self.long + 10, "connections": 10 + 8 * self.s["settle"],
                "upstream_bundle": w + 2, "upstream_bundle_cached": w + 2,
                "gzip_bundle": 2 * (d + 0.5) + 2,
                "miss_storm_fleet": 2 * self.s["storm_rounds"] * (STORM_MS / 1000.0 + 0.5) + 10}
        return 10 + sum(cost[s] for s in selected)

    def run(self):
        selected = [s for s in SCENARIOS if not self.o.only or s in self.o.only]
        self.planned = self.plan(selected)
        started_at = datetime.datetime.now(datetime.timezone.utc)
        rep = {
            "schema": "mizan-bench/1",
            "set": self.o.set_name,
            "date": started_at.strftime("%Y-%m-%d"),
            "started_at": started_at.isoformat(timespec="seconds"),
            "git": git_info(self.o.source),
            "machine": machine_info(),
            "binaries": {"mizand": os.path.abspath(self.mizand), "build": self.o.build,
                         "sanitized": is_sanitized(self.mizand)},
            "pinning": {
                "enabled": bool(self.load_cores),
                "load_cores": self.load_cores, "server_cores": self.server_cores,
                "note": (f"wrk and bench-client pinned to CPU {cpulist(self.load_cores)}; gateways, ceiling and "
                         f"Redis pinned to CPU {cpulist(self.server_cores)} (taskset)") if self.load_cores
                else "not pinned (one CPU, or --no-pin)",
            },
            "settings": {
                "duration_s": self.s["duration"], "rounds": self.s["rounds"],
                "connections": self.s["connections"],
                "wrk_threads": self.wrk_threads, "io_threads": self.io_threads, "workers": WORKERS,
                "posts": POSTS, "fanout_rate": self.s["fanout_rate"], "sse_clients": self.s["sse_clients"],
                "sse_rate": self.s["sse_rate"], "idle_stages": self.s["idle_stages"], "log_level": "warn",
                "upstream": {"functions": len(UPSTREAM_PATHS), "paths": UPSTREAM_PATHS, "pool_size": UPSTREAM_POOL,
                             "queue_size": UPSTREAM_QUEUE, "cached_ttl_s": UPSTREAM_CACHED_TTL},
            },
            "noise": {"loadavg_start": loadavg()},
            "scenarios": [],
        }
        self.say(f"bench {self.o.set_name}: {len(selected)} scenarios, about {fmt_clock(self.planned)}; "
                 f"{rep['pinning']['note']}")
        setup_error = None
        try:
            self.setup(selected)
        except BenchError as e:
            setup_error = str(e)
            self.say(f"setup failed: {e}")
        for name in SCENARIOS:
            entry = {"name": name}
            if name not in selected:
                entry["status"] = "skipped"
            elif setup_error:
                entry.update(status="failed", error=setup_error)
            else:
                t0 = time.monotonic()
                try:
                    entry.update(self.scenario(name))
                    entry["status"] = "ok"
                except (BenchError, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
                    entry.update(status="failed", error=str(e))
                    self.say(f"{name}: FAILED: {e}")
                entry["elapsed_s"] = round(time.monotonic() - t0, 1)
            rep["scenarios"].append(entry)
        rep["noise"]["loadavg_end"] = loadavg()
        if self.foreign:
            rep["noise"]["foreign_cpu_cores"] = {"mean": round(sum(self.foreign) / len(self.foreign), 3),
                                                 "max": round(max(self.foreign), 3)}
        rep["sanitizer_reports"] = self.sanitizer_reports()
        rep["finished_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        rep["wall_s"] = round(time.monotonic() - self.started, 1)
        rep["checks"] = [dict(c, scenario=s["name"]) for s in rep["scenarios"] for c in s.get("checks", [])]
        return rep

    def setup(self, selected):
        needs = set(selected)
        self.say("starting the ceiling server")
        self.ceiling = self.start_ceiling()
        local_db = os.path.join(self.work, "blog-local.db")
        shared_db = os.path.join(self.work, "blog-shared.db")
        if needs & {"call_ping", "call_add", "ctx_post_hit_embedded", "ctx_fanout", "connections"}:
            self.say("starting gateway 'embedded' (seeds 1000 posts)")
            # The fan-out scenario measures concurrency, not the blog's limit of 4 runs per slow_*
            # function: a stall of a few tens of ms on a shared machine puts a fifth fetch in flight.
            self.start_gateway("embedded", local_db,
                               extra={"max_concurrency": {f: FANOUT_LIMIT for f in ("slow_a", "slow_b", "slow_c",
                                                                                      "slow_d")}})
        if "ctx_post_miss" in needs:
            self.say("starting gateway 'miss' (64 KiB embedded cache)")
            self.start_gateway("miss", local_db, cache_max_bytes=SMALL_CACHE)
        if needs & {"ctx_post_hit_redis", "mixed", "sse_fanout"}:
            self.say("starting redis-server and gateways 'redis-a', 'redis-b' (shared SQLite file)")
            self.start_redis()
            self.start_gateway("redis-a", shared_db, redis=True)
            self.start_gateway("redis-b", shared_db, redis=True)
            self.token = self.mint_token(self.gateways["redis-a"])
        if needs & {"ctx_post_hit_redis_cluster", "mixed_redis_cluster"}:
            self.say("starting a Redis Cluster (3 masters, 3 replicas) and gateways 'cluster-a', 'cluster-b'")
            self.start_redis_cluster()
            cluster_db = os.path.join(self.work, "blog-cluster.db")
            self.start_gateway("cluster-a", cluster_db, redis="cluster")
            self.start_gateway("cluster-b", cluster_db, redis="cluster")
            self.token = self.token or self.mint_token(self.gateways["cluster-a"])
        if needs & {"upstream_bundle", "upstream_bundle_cached"}:
            self.say("starting the upstream service (a second ceiling) and gateway 'upstream' "
                     f"({len(UPSTREAM_PATHS)} upstream functions)")
            self.upstream_svc = self.start_ceiling("ceiling-upstream")
            self.start_gateway("upstream", None, extra=self.upstream_config(self.upstream_svc))
        if "miss_storm_fleet" in needs:
            self.say(f"starting gateways 'storm-lock-1..{STORM_INSTANCES}' and 'storm-nolock-1..{STORM_INSTANCES}' "
                     "(sharing Redis, with and without the fill lock)")
            if self.redis is None:
                self.start_redis()
            storm_db = os.path.join(self.work, "blog-storm.db")
            for i in range(1, STORM_INSTANCES + 1):
                self.start_gateway(f"storm-lock-{i}", storm_db, redis=True, extra={"contexts": [STORM_CONTEXT]})
                self.start_gateway(f"storm-nolock-{i}", storm_db, redis=True, extra={"contexts": [STORM_CONTEXT]},
                                   cache_extra={"fill_lock": False})
        if "gzip_bundle" in needs:
            self.say(f"starting gateway 'gzip' (a context bundling {GZIP_POSTS} posts)")
            self.start_gateway("gzip", local_db, extra={"contexts": [GZIP_CONTEXT]})

    def scenario(self, name):
        if name == "call_ping":
            return self.sc_call("ping")
        if name == "call_add":
            return self.sc_call("add")
        if name == "ctx_post_hit_embedded":
            return self.sc_hit("embedded")
        if name == "ctx_post_hit_redis":
            return self.sc_hit("redis")
        if name == "ctx_post_hit_redis_cluster":
            return self.sc_hit("redis_cluster")
        if name == "mixed_redis_cluster":
            return self.sc_mixed("redis_cluster")
        if name == "ctx_post_miss":
            return self.sc_miss()
        if name == "miss_storm_fleet":
            return self.sc_storm()
        if name == "ctx_fanout":
            return self.sc_fanout()
        if name == "mixed":
            return self.sc_mixed()
        if name == "sse_fanout":
            return self.sc_sse()
        if name == "connections":
            return self.sc_connections()
        if name == "upstream_bundle":
            return self.sc_upstream(cached=False)
        if name == "upstream_bundle_cached":
            return self.sc_upstream(cached=True)
        if name == "gzip_bundle":
            return self.sc_gzip()
        raise BenchError(f"unknown scenario {name}")

    def sanitizer_reports(self):
        found = []
        pat = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|ThreadSanitizer")
        for name in os.listdir(self.work):
            if not name.endswith(".log"):
                continue
            try:
                with open(os.path.join(self.work, name), errors="replace") as f:
                    for line in f:
                        if pat.search(line):
                            found.append(f"{name}: {line.strip()}")
            except OSError:
                pass
        return found[:50]


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------

def latency_ms(r):
    lat = r["latency_us"]
    return {k: round(lat[k] / 1000.0, 3) for k in ("p50", "p90", "p99", "p99_9", "mean", "max")}


def combine_wrk(results, conns):
    """One measurement from one or more simultaneous wrk runs."""
    requests = sum(r["requests"] for r in results)
    rps = sum(r["requests"] * 1e6 / r["duration_us"] for r in results if r["duration_us"])
    errs = {k: sum(r["errors"][k] for r in results) for k in ("connect", "read", "write", "timeout", "status")}
    lat = [latency_ms(r) for r in results]
    # Percentiles of separate runs do not merge: with several, the worst is reported.
    merged = {k: max(x[k] for x in lat) for k in lat[0]}
    counters = {}
    for r in results:
        for k, v in r.get("counters", {}).items():
            counters[k] = counters.get(k, 0) + v
    m = {
        "requests": requests,
        "bytes_read": sum(r.get("bytes", 0) for r in results),
        "duration_s": round(max(r["duration_us"] for r in results) / 1e6, 3),
        "rps": round(rps, 1),
        "latency_ms": merged,
        "errors": {"non2xx": errs["status"],
                   "socket": errs["connect"] + errs["read"] + errs["write"] + errs["timeout"],
                   "total": sum(errs.values()), "detail": errs},
        "connections": sum(conns),
        "wrk_runs": len(results),
    }
    if counters:
        m["counters"] = counters
    return m


def open_loop_measurement(r, probe):
    m = {
        "requests": r["ok"],
        "rate": r["rate"],
        "rps": round(r["achieved_rps"], 1),
        "latency_ms": {k: r["latency_ms"][k] for k in ("p50", "p90", "p99", "p99_9", "mean", "max")},
        "errors": {"non2xx": r["non2xx"], "socket": r["failed"] + r["unfinished"],
                   "total": r["non2xx"] + r["failed"] + r["unfinished"]},
        "connections": r["conns"],
    }
    if probe:
        m.update(probe)
    return m


def ratios(g, c):
    def div(a, b):
        return round(a / b, 3) if a is not None and b else None
    out = {"rps": div(g["rps"], c["rps"])}
    for k in ("p50", "p90", "p99", "p99_9"):
        out[k] = div(g["latency_ms"][k], c["latency_ms"][k])
    out["cpu_us_per_req"] = div(g.get("cpu_us_per_req"), c.get("cpu_us_per_req"))
    return out


# ---------------------------------------------------------------------------
# Environment facts
# ---------------------------------------------------------------------------

def fmt_clock(s):
    s = int(round(s))
    return f"{s // 60}:{s % 60:02d}"


def cpulist(cores):
    return ",".join(str(c) for c in cores)


def git_info(source):
    def git(*args):
        r = subprocess.run(["git", "-C", source] + list(args), capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def machine_info():
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "model": model,
            "kernel": platform.release(), "memory_gib": mem, "hostname": socket.gethostname()}


def is_sanitized(path):
    try:
        r = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30)
        return "libasan" in r.stdout or "libubsan" in r.stdout or "libtsan" in r.stdout
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description="Mizan bench harness (run through bench/run)")
    ap.add_argument("--set", choices=sorted(SETS), required=True)
    ap.add_argument("--set-name", help="name of the scenario set in the report and file names")
    ap.add_argument("--bin", required=True, help="build directory holding mizand and modules/blog.so")
    ap.add_argument("--build", default="given", help="how the binaries were built (for the report)")
    ap.add_argument("--tools", required=True, help="directory holding ceiling and bench-client")
    ap.add_argument("--work", required=True, help="scratch directory (made by bench/run)")
    ap.add_argument("--out", required=True, help="directory for the report files")
    ap.add_argument("--source", required=True, help="the repository root")
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--no-plots", action="store_true")
    opts = ap.parse_args()
    opts.only = [s for s in opts.only.split(",") if s] if opts.only else None
    if opts.only:
        unknown = [s for s in opts.only if s not in SCENARIOS]
        if unknown:
            ap.error(f"unknown scenario(s): {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    opts.set_name = opts.set_name or opts.set

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    h = Harness(opts)
    try:
        rep = h.run()
    finally:
        h.say("stopping everything this run started")
        h.stop_all()
    os.makedirs(opts.out, exist_ok=True)
    base = os.path.join(opts.out, f"{rep['date']}-{opts.set_name}")
    with open(base + ".json", "w") as f:
        json.dump(rep, f, indent=2)
        f.write("\n")
    report.write_all(rep, base, plots=not opts.no_plots)
    for line in rep["sanitizer_reports"]:
        sys.stderr.write(f"sanitizer report in a server log: {line}\n")
    sys.stdout.write(report.summary_table(rep) + "\n")
    if report.upstream_table(rep):
        sys.stdout.write("\n" + report.upstream_table(rep) + "\n")
    sys.stdout.write(f"report: {base}.json, {base}.md\n")
    failed = [s["name"] for s in rep["scenarios"] if s["status"] == "failed"]
    bad = [f"{c['scenario']}/{c['name']}" for c in rep["checks"] if not c["passed"]]
    if failed:
        sys.stderr.write(f"bench: scenarios failed: {', '.join(failed)}\n")
    if bad:
        sys.stderr.write(f"bench: checks failed: {', '.join(bad)}\n")
    return 1 if failed or bad else 0


if __name__ == "__main__":
    sys.exit(main())
