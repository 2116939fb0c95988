"""support.py - what the cluster, metrics and log tests share.

The tests start real things: `deploy/cluster` (Redis, several `mizand`,
HAProxy), or `mizand` and `redis-server` directly, on free loopback ports
in temporary directories, and talk to them over HTTP. Nothing here links
the gateway; everything comes through command lines, files, logs and the
wire.

Clean-up. A `Run` (a context manager, one per test) owns everything a test
starts. On leaving it, also after a failed check or an exception, it stops
every cluster (`deploy/cluster --stop`) and every process it spawned
(SIGTERM, then SIGKILL), scans every log for sanitizer reports, and removes
its temporary directory (kept with MIZAN_TEST_KEEP_TMP=1; the tails of
the logs are printed when the test failed). Processes
spawned directly carry PR_SET_PDEATHSIG(SIGKILL), and clusters are started
with `--owner <this process>`, so a test killed by ctest's timeout leaves
nothing running either.

Environment (set by ctest, see tests/CMakeLists.txt): MIZAN_TEST_BIN (the
mizand to run; its directory must hold modules/blog.so, which is where the
build puts it), MIZAN_TEST_SOURCE_DIR. Run by hand, they default to
build/mizand and this checkout.

Threads: Http, Sse and the process helpers may be used from any thread;
`check` raises Failure, which a worker thread must hand to the main thread
itself (the tests collect outcomes in lists instead).
"""

import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SOURCE_DIR = os.environ.get("MIZAN_TEST_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
MIZAND = os.environ.get("MIZAN_TEST_BIN") or os.path.join(SOURCE_DIR, "build", "mizand")
BIN_DIR = os.path.dirname(os.path.abspath(MIZAND))
CLUSTER = os.path.join(SOURCE_DIR, "deploy", "cluster")
# The ACL rule the deploy files document for the gateway's Redis user.
REDIS_CONF = os.path.join(SOURCE_DIR, "deploy", "redis", "redis-cache.conf")

# What a sanitizer report looks like in a log (kept in step with
# MIZAN_SANITIZER_REPORT in tests/CMakeLists.txt).
SANITIZER = re.compile(r"(Address|Leak|Thread|UndefinedBehavior)Sanitizer|runtime error:")


class Failure(Exception):
    """A check that did not hold."""


def check(cond, msg, *args):
    """Raises Failure(msg % args) unless cond holds."""
    if not cond:
        raise Failure(msg % args if args else msg)


def log(msg, *args):
    """One progress line on stdout (ctest shows it on failure or with -V)."""
    print(msg % args if args else msg, flush=True)


def now():
    """Monotonic seconds."""
    return time.monotonic()


def wait_for(pred, timeout, what, interval=0.05):
    """Polls pred() until it returns a true value; returns it. Failure on timeout."""
    deadline = now() + timeout
    while True:
        v = pred()
        if v:
            return v
        if now() >= deadline:
            raise Failure("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_port():
    """A free loopback port (bound and released: racy, as every such helper)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_tool(tool, package):
    """Failure naming the Debian package when tool is not on PATH (never a skip)."""
    path = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    check(path is not None, "%s not found: install the Debian package %s (apt-get install -y %s)",
          tool, package, package)
    return path


def need_build():
    check(os.access(MIZAND, os.X_OK), "no mizand at %s: build it (cmake --build build) or set MIZAN_TEST_BIN", MIZAND)
    check(os.path.exists(os.path.join(BIN_DIR, "modules", "blog.so")),
          "no modules/blog.so beside %s: build the examples (cmake --build build)", MIZAND)


def _pdeathsig():
    """preexec_fn: the child gets SIGKILL when the test process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def clean_env(extra=None):
    """The test's environment without MIZAN_* overrides, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIZAN_") or k.startswith("MIZAN_TEST_")}
    env.update(extra or {})
    return env


# ------------------------------------------------------------------ HTTP

class Response:
    """status, headers (lowercase names), body (bytes), json (or None)."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def header(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return "HTTP %d %s %s" % (self.status, self.headers, self.body[:300])


class Http:
    """A keep-alive HTTP/1.1 client to 127.0.0.1:port (one per thread).

    request() raises OSError / http.client.HTTPException on transport
    failures; the connection is then reopened on the next request.
    """

    def __init__(self, port, timeout=15.0):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, headers=None, token=None):
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = "Bearer " + token
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=hdrs)
            r = self.conn.getresponse()
            data = r.read()
            resp = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
            if r.will_close:
                self.close()
            return resp
        except BaseException:
            self.close()
            raise

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def call(self, fn, args=None, token=None, headers=None):
        body = {"function": fn}
        if args is not None:
            body["args"] = args
        return self.request("POST", "/api/mizan/call/", body=body, headers=headers, token=token)


def get(port, path, **kw):
    """One GET on a fresh connection."""
    h = Http(port)
    try:
        return h.get(path, **kw)
    finally:
        h.close()


def call(port, fn, args=None, token=None, headers=None):
    """One call on a fresh connection."""
    h = Http(port)
    try:
        return h.call(fn, args, token=token, headers=headers)
    finally:
        h.close()


def expect_ok(resp, what):
    check(resp.status == 200, "%s: expected 200, got %r", what, resp)
    return resp.json


def metrics(port):
    """GET /metrics parsed into {series text: value}."""
    r = get(port, "/metrics")
    check(r.status == 200, "GET /metrics: %r", r)
    out = {}
    for line in r.body.decode().splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def metric_sum(samples, name, **labels):
    """Sum of the samples of name whose labels include every labels item."""
    total = 0.0
    for series, v in samples.items():
        if series.split("{", 1)[0] != name:
            continue
        if all(('%s="%s"' % (k, val)) in series for k, val in labels.items()):
            total += v
    return total


# ------------------------------------------------------------------- SSE

class Sse:
    """A Server-Sent Events stream read over a raw socket (chunked or not).

    After construction, .status and .headers hold the response head. A
    reader thread (start()) collects events as (monotonic time, event,
    data dict) in .events; .closed turns true when the server ends it.
    """

    def __init__(self, port, path, headers=None, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port, "Accept: text/event-stream"]
        lines += ["%s: %s" % kv for kv in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Failure("event stream on port %d closed before its head: %r" % (port, raw))
            raw += chunk
        head, _, self.raw = raw.partition(b"\r\n\r\n")
        head_lines = head.decode("latin-1").split("\r\n")
        self.status = int(head_lines[0].split()[1])
        self.headers = {}
        for hl in head_lines[1:]:
            k, _, v = hl.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self.chunk_left = 0          # bytes left in the current chunk
        self.chunk_crlf = False      # a chunk's trailing CRLF is still due
        self.body = b""              # decoded stream bytes not yet framed
        self.events = []
        self.frames = []
        self.closed = False
        self.lock = threading.Lock()
        self.stop = False
        self.thread = None
        self._decode()

    def _decode(self):
        if not self.chunked:
            self.body += self.raw
            self.raw = b""
            return
        while self.raw:
            if self.chunk_crlf:
                if len(self.raw) < 2:
                    return
                self.raw = self.raw[2:]
                self.chunk_crlf = False
            if self.chunk_left == 0:
                line, sep, rest = self.raw.partition(b"\r\n")
                if not sep:
                    return
                size = int(line.split(b";")[0], 16)
                self.raw = rest
                if size == 0:
                    self.closed = True
                    return
                self.chunk_left = size
            take = self.raw[:self.chunk_left]
            self.body += take
            self.raw = self.raw[len(take):]
            self.chunk_left -= len(take)
            if self.chunk_left == 0:
                self.chunk_crlf = True

    def next_frame(self, timeout):
        """The next frame's text (without its blank line); None on timeout or end."""
        deadline = now() + timeout
        while True:
            idx = self.body.find(b"\n\n")
            if idx >= 0:
                frame = self.body[:idx].decode()
                self.body = self.body[idx + 2:]
                return frame
            if self.closed:
                return None
            left = deadline - now()
            if left <= 0:
                return None
            self.sock.settimeout(min(left, 0.5))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                self.closed = True
                return None
            if not chunk:
                self.closed = True
                return None
            self.raw += chunk
            self._decode()

    def _reader(self):
        while not self.stop:
            frame = self.next_frame(0.5)
            if frame is None:
                if self.closed:
                    return
                continue
            event, data = None, []
            for line in frame.split("\n"):
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
            with self.lock:
                self.frames.append(frame)
                if event is not None:
                    try:
                        payload = json.loads("\n".join(data))
                    except ValueError:
                        payload = {"unparsable": "\n".join(data)}
                    self.events.append((now(), event, payload))

    def start(self):
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()
        return self

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def close(self):
        self.stop = True
        if self.thread is not None:
            self.thread.join(5)
        try:
            self.sock.close()
        except OSError:
            pass


# ------------------------------------------------------------------ Redis

def _resp_encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def _resp_read(f):
    line = f.readline()
    if not line:
        raise OSError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return {"error": rest.decode()}
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise OSError("unexpected redis reply %r" % line)


def redis_cmd(port, *args, user=None, password=None, timeout=2.0):
    """Runs one command (after AUTH when password is given); the reply as Python data."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        f = s.makefile("rb")
        if password is not None:
            s.sendall(_resp_encode(["AUTH", user, password] if user else ["AUTH", password]))
            r = _resp_read(f)
            if r != "OK":
                return r
        s.sendall(_resp_encode(list(args)))
        return _resp_read(f)


def acl_rule():
    """The gateway's ACL rule from the comment block of deploy/redis/redis-cache.conf."""
    with open(REDIS_CONF) as f:
        for line in f:
            m = re.match(r"^# user mizan on >\S+ (.*)$", line.rstrip("\n"))
            if m:
                return m.group(1)
    raise Failure("no '# user mizan on >PASSWORD ...' line in %s" % REDIS_CONF)


# ---------------------------------------------------------------- the run

class Proc:
    """A process spawned by Run.spawn()."""

    def __init__(self, popen, name, log_path, cwd):
        self.popen = popen
        self.pid = popen.pid
        self.name = name
        self.log_path = log_path
        self.cwd = cwd
        self.port = None

    def alive(self):
        return self.popen.poll() is None

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Signals the process and waits; returns its exit status (negative: signal)."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
                raise Failure("%s (pid %d) did not exit within %.0f s of signal %d"
                              % (self.name, self.pid, timeout, sig))
        return self.popen.returncode


class Cluster:
    """A cluster started by `deploy/cluster --detach` (see Run.cluster)."""

    def __init__(self, state, info, took):
        self.state = state
        self.info = info
        self.start_seconds = took
        self.port = int(info["MIZAN_CLUSTER_PORT"])
        self.n = int(info["MIZAN_CLUSTER_N"])
        self.gateways = [int(p) for p in info["MIZAN_CLUSTER_GATEWAYS"].split()]
        self.config = info["MIZAN_CLUSTER_CONFIG"]
        self.socket = info["MIZAN_CLUSTER_HAPROXY_SOCKET"]

    def pid(self, i):
        """PID of gateway i (1-based) from its pidfile, or None."""
        try:
            with open(os.path.join(self.state, "pids", "mizan%d.pid" % i)) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def pids(self):
        out = {}
        d = os.path.join(self.state, "pids")
        for name in os.listdir(d) if os.path.isdir(d) else []:
            with open(os.path.join(d, name)) as f:
                out[name[:-4]] = int(f.read().strip())
        return out

    def log_path(self, i):
        return os.path.join(self.state, "mizan%d" % i, "mizand.log")

    def haproxy(self, command):
        """A command on HAProxy's runtime API socket; the answer text."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.socket)
            s.sendall(command.encode() + b"\n")
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        return out.decode()

    def server_status(self, backend="mizan_gateways"):
        """{server name: status} from `show stat` ("UP", "DOWN", "MAINT", "UP 1/2", ...)."""
        text = self.haproxy("show stat")
        lines = text.splitlines()
        header = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND"):
                out[row["svname"]] = row["status"]
        return out


class Run:
    """Everything one test starts; a context manager that cleans it all up."""

    def __init__(self, name):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="mizan-%s." % name, dir=os.environ.get("TMPDIR", "/tmp"))
        self.procs = []
        self.clusters = []
        self.states = []   # cluster state directories to stop at the end
        self.logs = []     # every log file to scan for sanitizer reports

    def __enter__(self):
        return self

    def __exit__(self, etype, exc, tb):
        problems = []
        for state in reversed(self.states):
            if not os.path.exists(os.path.join(state, "cluster.conf")):
                continue
            try:
                r = subprocess.run([CLUSTER, "--stop", state], capture_output=True, text=True, timeout=90)
                if r.returncode != 0:
                    problems.append("deploy/cluster --stop %s: %s%s" % (state, r.stdout, r.stderr))
            except subprocess.TimeoutExpired:
                problems.append("deploy/cluster --stop %s did not finish in 90 s" % state)
            pids = os.path.join(state, "pids")
            for name in os.listdir(pids) if os.path.isdir(pids) else []:
                problems.append("%s still recorded in %s after --stop" % (name, pids))
        for p in reversed(self.procs):
            try:
                p.stop(signal.SIGTERM, 20)
            except Failure as e:
                problems.append(str(e))
        reports = self.sanitizer_reports()
        if reports:
            problems.append("sanitizer reports in the logs:\n" + reports)
        failed = etype is not None or bool(problems)
        if failed or os.environ.get("MIZAN_TEST_VERBOSE") == "1":
            for path in self.logs:
                if os.path.exists(path):
                    with open(path, errors="replace") as f:
                        tail = f.read()[-3000:]
                    log("---- tail of %s ----\n%s", path, tail)
        if os.environ.get("MIZAN_TEST_KEEP_TMP") == "1":
            log("(kept %s)", self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if problems:
            for p in problems:
                log("FAIL (clean-up): %s", p)
            if etype is None:
                raise Failure("; ".join(problems)[:4000])
        return False

    def sanitizer_reports(self):
        found = []
        for path in self.logs:
            try:
                with open(path, errors="replace") as f:
                    lines = f.read().splitlines()
            except OSError:
                continue
            for i, line in enumerate(lines):
                if SANITIZER.search(line):
                    found.append("%s:%d:\n%s" % (path, i + 1, "\n".join(lines[i:i + 25])))
                    break
        return "\n".join(found)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def mkdir(self, name):
        d = self.path(name)
        os.makedirs(d, exist_ok=True)
        return d

    def write(self, path, text, mode=0o600):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    # -- processes --------------------------------------------------------

    def spawn(self, name, argv, cwd=None, env=None):
        """Starts argv with stdout+stderr appended to <tmp>/<name>.log."""
        cwd = cwd or self.tmp
        log_path = self.path(name + ".log")
        out = open(log_path, "ab")
        try:
            p = subprocess.Popen(argv, cwd=cwd, env=env if env is not None else clean_env(), stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, preexec_fn=_pdeathsig)
        finally:
            out.close()
        proc = Proc(p, name, log_path, cwd)
        self.procs.append(proc)
        if log_path not in self.logs:
            self.logs.append(log_path)
        return proc

    def redis(self, name="redis", password=None, port=None):
        """redis-server with deploy/redis/redis-cache.conf on a free port, no
        persistence; with password, the default user is off and the only user
        is the gateway's ACL user "mizan". Returns the Proc (.port set)."""
        need_tool("redis-server", "redis-server")
        d = self.mkdir(name)
        for _ in range(5):
            p = port or free_port()
            lines = ["include %s" % REDIS_CONF, "port %d" % p, "bind 127.0.0.1", "dir %s" % d, 'save ""']
            if password is not None:
                lines += ["user mizan on >%s %s" % (password, acl_rule()), "user default off"]
            conf = self.write(os.path.join(d, "redis.conf"), "\n".join(lines) + "\n")
            proc = self.spawn(name, ["redis-server", conf], cwd=d)
            proc.port = p
            deadline = now() + 10
            while now() < deadline and proc.alive():
                try:
                    if redis_cmd(p, "PING", user="mizan" if password else None, password=password) == "PONG":
                        return proc
                except OSError:
                    pass
                time.sleep(0.05)
            proc.stop(signal.SIGKILL)
            if "Address already in use" not in proc.log_text() or port is not None:
                break
        raise Failure("redis-server did not start:\n" + proc.log_text()[-2000:])

    def gateway(self, name, config, env=None, port=0):
        """mizand with config (a dict, written to <tmp>/<name>.json); waits
        for its "listening" line. Returns the Proc (.port, .config_path)."""
        need_build()
        path = self.write(self.path(name + ".json"), json.dumps(config, indent=2))
        e = clean_env(env)
        e.setdefault("MIZAN_LISTEN", "127.0.0.1:%d" % port)
        proc = self.spawn(name, [MIZAND, "--config", path], env=e)
        proc.config_path = path
        deadline = now() + 30
        while now() < deadline:
            for line in proc.log_text().splitlines():
                if '"msg":"listening"' in line:
                    proc.port = int(json.loads(line)["addr"].rsplit(":", 1)[1])
                    return proc
            if not proc.alive():
                break
            time.sleep(0.05)
        raise Failure("%s did not start:\n%s" % (name, proc.log_text()[-3000:]))

    def token(self, config_path, sub, *extra):
        """A token minted by `mizand token`."""
        r = subprocess.run([MIZAND, "token", "--config", config_path, "--sub", sub] + list(extra),
                           capture_output=True, text=True, timeout=30, env=clean_env())
        check(r.returncode == 0 and r.stdout.count(".") == 2, "mizand token failed: %s %s", r.stdout, r.stderr)
        return r.stdout.strip()

    # -- clusters ---------------------------------------------------------

    def track(self, state):
        """Stops the cluster of state (if any) with `deploy/cluster --stop` at the end."""
        if state not in self.states:
            self.states.append(state)

    def cluster(self, n=3, name="cluster", redis_cluster=False):
        """deploy/cluster --detach with this build, owned by this process
        (with redis_cluster: on a Redis Cluster, --redis-cluster)."""
        need_build()
        state = self.path(name)
        self.track(state)
        last = ""
        for _ in range(3):
            port = free_port()
            t0 = now()
            r = subprocess.run([CLUSTER, "--detach", "--bin", BIN_DIR, "--dir", state, "-n", str(n), "-p", str(port),
                                "--owner", str(os.getpid())] + (["--redis-cluster"] if redis_cluster else []),
                               capture_output=True, text=True, timeout=180, env=clean_env())
            took = now() - t0
            for sub in (["mizan%d/mizand.log" % i for i in range(1, n + 1)] + ["haproxy.log", "redis/redis.log",
                                                                                "cluster.log"] +
                        ["redis/node%d/redis.log" % i for i in range(1, 7)]):
                p = os.path.join(state, sub)
                if p not in self.logs:
                    self.logs.append(p)
            if r.returncode == 0:
                info = {}
                with open(os.path.join(state, "cluster.env")) as f:
                    for line in f:
                        k, _, v = line.strip().partition("=")
                        info[k] = v.strip('"')
                c = Cluster(state, info, took)
                self.clusters.append(c)
                log("%s: %d gateways %s behind HAProxy :%d (started in %.2f s)", name, n, c.gateways, c.port, took)
                return c
            last = r.stdout + r.stderr
            if "is in use" not in last:
                break
        raise Failure("deploy/cluster did not start:\n" + last)


def main(tests):
    """Runs the test named by argv[1] from tests {name: function()}; exit status 0/1."""
    if len(sys.argv) != 2 or sys.argv[1] not in tests:
        print("usage: %s %s" % (sys.argv[0], "|".join(tests)), file=sys.stderr)
        sys.exit(2)
    name = sys.argv[1]
    t0 = now()
    try:
        tests[name]()
    except Failure as e:
        log("FAIL %s: %s", name, e)
        sys.exit(1)
    log("PASS %s (%.1f s)", name, now() - t0)


# --------------------------------------------------------------- traffic

def gateway_config(run, name, **extra):
    """A gateway config for the blog module with its database in the run's
    directory (a dict; extra members are merged in at the top level)."""
    cfg = {
        "io_threads": 2,
        "workers": 8,
        "log_level": "info",
        "function_timeout_ms": 500,
        "module_dir": os.path.join(BIN_DIR, "modules"),
        "modules": [{"name": "blog", "config": {"db": run.path(name + "-blog.db")}}],
    }
    cfg.update(extra)
    return cfg


def exercise(port, token, cookie_token=None):
    """A bit of everything a gateway answers, so that every kind of series,
    log line and error path has happened at least once: calls (200, 404,
    422, 500, 504), contexts (MISS, HIT, BYPASS, 401), a mutation with its
    invalidation, an event stream, the registry, health, metrics, 405, a
    bad token. Returns {description: status} for the caller to check."""
    out = {}
    h = Http(port)
    try:
        def note(what, r):
            out[what] = r.status
        note("call add", h.call("add", {"a": 2, "b": 3}))
        note("call add invalid", h.call("add", {"a": "two"}))
        note("call unknown", h.call("no_such_function"))
        note("call boom", h.call("boom"))
        note("call sleep past its deadline", h.call("sleep", {"ms": 800}))
        note("call whoami (Bearer)", h.call("whoami", token=token))
        note("call update_post (Bearer)", h.call("update_post", {"post_id": 1, "title": "exercised"}, token=token))
        note("ctx post (miss)", h.get("/api/mizan/ctx/post/?post_id=2"))
        note("ctx post (hit)", h.get("/api/mizan/ctx/post/?post_id=2"))
        note("ctx fanout (bypass)", h.get("/api/mizan/ctx/fanout/?ms=1"))
        note("ctx feed", h.get("/api/mizan/ctx/feed/"))
        note("ctx me without token", h.get("/api/mizan/ctx/me/"))
        note("ctx me (Bearer)", h.get("/api/mizan/ctx/me/", token=token))
        if cookie_token is not None:
            note("ctx me (cookie)", h.get("/api/mizan/ctx/me/", headers={"Cookie": "theme=dark; mwt=%s; lang=en"
                                                                          % cookie_token}))
            note("call create_post (cookie)", h.call("create_post", {"title": "from a cookie", "body": "b"},
                                                     headers={"Cookie": "mwt=" + cookie_token}))
        note("ctx unknown", h.get("/api/mizan/ctx/no_such_context/"))
        note("bad token", h.call("add", {"a": 1, "b": 1}, token=token[:-4] + ("AAAA" if not token.endswith("AAAA")
                                                                           else "BBBB")))
        note("malformed Authorization", h.request("POST", "/api/mizan/call/", body={"function": "ping"},
                                                  headers={"Authorization": "Token " + token}))
        note("schema", h.get("/api/mizan/schema/"))
        note("healthz", h.get("/healthz"))
        note("readyz", h.get("/readyz"))
        note("wrong method", h.request("DELETE", "/api/mizan/call/"))
        note("unknown route", h.get("/nowhere"))
        note("request id kept", h.call("ping", headers={"X-Request-Id": "exercise-request-1"}))
    finally:
        h.close()
    sse = Sse(port, "/api/mizan/events/?contexts=post")
    out["events"] = sse.status
    sse.close()
    return out


EXERCISE_STATUS = {
    "call add": 200, "call add invalid": 422, "call unknown": 404, "call boom": 500,
    "call sleep past its deadline": 504, "call whoami (Bearer)": 200, "call update_post (Bearer)": 200,
    "ctx post (miss)": 200, "ctx post (hit)": 200, "ctx fanout (bypass)": 200, "ctx feed": 200,
    "ctx me without token": 401, "ctx me (Bearer)": 200, "ctx me (cookie)": 200, "call create_post (cookie)": 200,
    "ctx unknown": 404, "bad token": 401, "malformed Authorization": 401, "schema": 200, "healthz": 200,
    "readyz": 200, "wrong method": 405, "unknown route": 404, "request id kept": 200, "events": 200,
}


def check_exercise(out, what):
    """Every request of exercise() got its expected status."""
    wrong = {k: (v, EXERCISE_STATUS[k]) for k, v in out.items() if v != EXERCISE_STATUS[k]}
    check(not wrong, "%s: unexpected statuses (got, expected): %s", what, wrong)
