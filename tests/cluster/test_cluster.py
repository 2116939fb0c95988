#!/usr/bin/python3
"""test_cluster.py - the gateway scaled out: deploy/cluster's Redis, three
`mizand` and HAProxy, exercised through the balancer and instance by
instance.

    test_cluster.py read_your_writes|events|drain|script

read_your_writes  Several clients, each on its own keep-alive connection to
                  HAProxy, mix reads of `post` bundles with update_post
                  calls. A read that starts after a mutation was
                  acknowledged (to anyone) must show that mutation or a later
                  one: every violation is counted, and the count must be 0.
                  Cache HITs must occur (and be checked like every other
                  read); a bundle computed on one instance is a HIT on the
                  others and a mutation on one is seen by all.
events            SSE clients on EVERY instance (and one through HAProxy)
                  receive each invalidation of mutations spread over all
                  instances exactly once.
drain             Under load through HAProxy, gateway 2 gets SIGTERM while a
                  2 s call runs on it: the call is answered (Connection:
                  close), so is a request arriving on an already open
                  keep-alive connection during the drain, the process drains
                  cleanly and exits, HAProxy takes it out of rotation, and no
                  client sees an error (HAProxy's retries of refused
                  connections are counted from its log);
                  restarted, HAProxy's check turns it UP and requests reach
                  it again (its /metrics and access log).
script            deploy/cluster itself: the generated HAProxy config keeps
                  the deploy file's settings, --stop, Ctrl-C and SIGTERM in
                  the foreground, --owner, and a busy state directory stop or
                  refuse exactly what they should.

Every test starts its own cluster and stops it even when it fails (see
support.py). Registered with ctest by tests/cluster/tests.cmake.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import support as s  # noqa: E402
from support import Failure, check, log, now


def writer_tokens(run, cluster, n):
    return [run.token(cluster.config, "writer%d" % k) for k in range(n)]


def create_post(port, token, title):
    r = s.call(port, "create_post", {"title": title, "body": "cluster test"}, token=token)
    res = s.expect_ok(r, "create_post")
    return res["result"]["id"]


def title_seq(bundle):
    """The sequence number in a post bundle's title "c<k>-s<seq>"."""
    title = bundle["data"]["get_post"]["title"]
    m = re.match(r"^c(\d+)-s(\d+)$", title)
    check(m is not None, "unexpected title %r in %s", title, bundle)
    return int(m.group(2))


# ----------------------------------------------------------- read your writes

def test_read_your_writes():
    clients, ops_per_client = 6, 500
    with s.Run("cluster-ryw") as run:
        c = run.cluster(3)
        tokens = writer_tokens(run, c, clients)
        posts = [create_post(c.port, tokens[k], "c%d-s0" % k) for k in range(clients)]
        lock = threading.Lock()
        acked = {p: 0 for p in posts}    # post id -> highest acknowledged seq
        stats = {"reads": 0, "writes": 0, "violations": 0, "errors": 0, "HIT": 0, "MISS": 0, "BYPASS": 0,
                 "fresh_hits": 0, "checked": 0}
        problems = []

        def client(k):
            rnd = random.Random(k)
            h = s.Http(c.port)
            seq = 0
            try:
                for _ in range(ops_per_client):
                    if rnd.random() < 0.3:
                        seq += 1
                        r = h.call("update_post", {"post_id": posts[k], "title": "c%d-s%d" % (k, seq)},
                                   token=tokens[k])
                        if r.status != 200 or r.json["result"]["title"] != "c%d-s%d" % (k, seq):
                            with lock:
                                stats["errors"] += 1
                                problems.append("update_post: %r" % r)
                            continue
                        with lock:
                            stats["writes"] += 1
                            acked[posts[k]] = max(acked[posts[k]], seq)
                    else:
                        # Own post half the time (read-your-writes proper),
                        # else anyone's (monotonic reads of others' writes).
                        p = posts[k] if rnd.random() < 0.5 else rnd.choice(posts)
                        with lock:
                            floor = acked[p]
                        r = h.get("/api/mizan/ctx/post/?post_id=%d" % p)
                        if r.status != 200 or r.json.get("errors"):
                            with lock:
                                stats["errors"] += 1
                                problems.append("ctx post: %r" % r)
                            continue
                        got = title_seq(r.json)
                        cache = r.header("X-Mizan-Cache")
                        with lock:
                            stats["reads"] += 1
                            stats[cache] = stats.get(cache, 0) + 1
                            if cache == "HIT" and got > 0:
                                stats["fresh_hits"] += 1
                            if floor > 0:
                                stats["checked"] += 1
                            if got < floor:
                                stats["violations"] += 1
                                if len(problems) < 20:
                                    problems.append("post %d: read seq %d (%s) after seq %d was acknowledged"
                                                    % (p, got, cache, floor))
            except Exception as e:  # reported by the main thread
                with lock:
                    stats["errors"] += 1
                    problems.append("client %d: %r" % (k, e))
            finally:
                h.close()

        t0 = now()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        log("read-your-writes: %d reads (%d after an acknowledged mutation of their post), %d writes in %.1f s; "
            "violations %d, errors %d; X-Mizan-Cache HIT %d, MISS %d, BYPASS %d (HITs after a mutation: %d)",
            stats["reads"], stats["checked"], stats["writes"], now() - t0, stats["violations"], stats["errors"],
            stats["HIT"], stats["MISS"], stats["BYPASS"], stats["fresh_hits"])
        check(not problems, "%d problem(s):\n%s", len(problems), "\n".join(problems[:20]))
        check(stats["violations"] == 0, "read-your-writes violated %d times", stats["violations"])
        check(stats["writes"] > 100 and stats["checked"] > 500, "too little traffic to mean anything: %s", stats)
        check(stats["HIT"] > 0, "no cache HIT in %d reads", stats["reads"])
        check(stats["fresh_hits"] > 0, "no HIT of a bundle computed after a mutation")
        check(stats["MISS"] > 0, "no MISS in %d reads with %d mutations", stats["reads"], stats["writes"])

        # Which instances served: each must have hits of its own, i.e. the
        # balancer spread the reads and the shared cache served them.
        for i, port in enumerate(c.gateways, 1):
            m = s.metrics(port)
            hits = s.metric_sum(m, "mizan_cache_requests_total", context="post", outcome="hit")
            log("  mizan%d: %d post HITs", i, hits)
            check(hits > 0, "mizan%d served no post HIT", i)

        # One bundle, three instances, addressed directly: computed once,
        # then HIT everywhere; a mutation on one is seen by the others.
        g1, g2, g3 = c.gateways
        p = create_post(c.port, tokens[0], "c0-s0")
        path = "/api/mizan/ctx/post/?post_id=%d" % p
        seen = [s.get(g, path) for g in (g1, g2, g3)]
        check([r.header("X-Mizan-Cache") for r in seen] == ["MISS", "HIT", "HIT"],
              "a bundle stored by mizan1 is not a HIT on mizan2 and mizan3: %s",
              [r.header("X-Mizan-Cache") for r in seen])
        check(seen[0].body == seen[1].body == seen[2].body, "instances served different bundles: %s", seen)
        r = s.call(g2, "update_post", {"post_id": p, "title": "c0-s7"}, token=tokens[0])
        inv = s.expect_ok(r, "update_post on mizan2")["invalidate"]
        check({"context": "post", "params": {"post_id": p}} in inv and {"context": "feed"} in inv,
              "update_post invalidated %s", inv)
        for g, want in ((g3, "MISS"), (g1, "HIT"), (g2, "HIT")):
            r = s.get(g, path)
            check(r.status == 200 and title_seq(r.json) == 7 and r.header("X-Mizan-Cache") == want,
                  "after update_post on mizan2, port %d answered %s with %r", g, r.header("X-Mizan-Cache"), r)


# ---------------------------------------------------------------- events

def test_events():
    mutations = 12
    with s.Run("cluster-events") as run:
        c = run.cluster(3)
        token = run.token(c.config, "eventer")
        posts = [create_post(c.port, token, "c0-s0") for _ in range(mutations)]
        time.sleep(0.5)  # the create_post events are not part of the count
        streams = []     # (label, Sse, filter)
        for i, port in enumerate(c.gateways, 1):
            for flt in ("post", None):
                path = "/api/mizan/events/" + ("?contexts=%s" % flt if flt else "")
                sse = s.Sse(port, path)
                check(sse.status == 200 and sse.headers.get("content-type", "").startswith("text/event-stream"),
                      "mizan%d %s: %s %s", i, path, sse.status, sse.headers)
                streams.append(("mizan%d %s" % (i, path), sse.start(), flt))
        via = s.Sse(c.port, "/api/mizan/events/?contexts=post,feed")
        check(via.status == 200, "events through HAProxy: %s", via.status)
        streams.append(("haproxy ?contexts=post,feed", via.start(), None))
        time.sleep(0.3)

        # Mutations spread over every instance: directly, then through HAProxy.
        targets = c.gateways + [c.port]
        for j, p in enumerate(posts):
            port = targets[j % len(targets)]
            r = s.call(port, "update_post", {"post_id": p, "title": "c0-s%d" % (j + 1)}, token=token)
            s.expect_ok(r, "update_post via port %d" % port)

        def expected(flt):
            want = {json.dumps({"context": "post", "params": {"post_id": p}}, sort_keys=True): 1 for p in posts}
            if flt is None:
                want[json.dumps({"context": "feed"}, sort_keys=True)] = mutations
            return want

        def counts(sse):
            out = {}
            for _, event, data in sse.snapshot():
                key = json.dumps(data, sort_keys=True) if event == "invalidate" else "%s: %s" % (event, data)
                out[key] = out.get(key, 0) + 1
            return out

        def all_arrived():
            return all(counts(sse) == expected(flt) for _, sse, flt in streams)

        t_sent = now()
        try:
            s.wait_for(all_arrived, 10, "every stream to receive every event", interval=0.1)
            log("events: every stream had every event %.2f s after the last mutation was acknowledged",
                now() - t_sent)
        except Failure:
            pass  # reported below with the counts
        time.sleep(1.5)  # duplicates arriving late would show now
        bad = []
        for label, sse, flt in streams:
            got, want = counts(sse), expected(flt)
            n = sum(got.values())
            log("  %-36s %3d events (%d expected)", label, n, sum(want.values()))
            if got != want:
                diff = {k: (got.get(k, 0), want.get(k, 0)) for k in set(got) | set(want)
                        if got.get(k, 0) != want.get(k, 0)}
                bad.append("%s: (received, expected) %s" % (label, diff))
        for _, sse, _ in streams:
            sse.close()
        check(not bad, "events not received exactly once:\n%s", "\n".join(bad))
        log("events: %d streams on %d instances + HAProxy each got each of %d mutations' events exactly once",
            len(streams), c.n, mutations)


# ----------------------------------------------------------------- drain

def test_drain():
    with s.Run("cluster-drain") as run:
        c = run.cluster(3)
        token = run.token(c.config, "drainer")
        clients = 8
        own = [create_post(c.port, token, "c%d-s0" % k) for k in range(clients)]
        results = []     # (t, kind, status or error text)
        lock = threading.Lock()
        stop = threading.Event()

        def client(k):
            rnd = random.Random(100 + k)
            h = s.Http(c.port)
            seq = 0
            while not stop.is_set():
                x = rnd.random()
                try:
                    if x < 0.4:
                        kind = "ctx"
                        r = h.get("/api/mizan/ctx/post/?post_id=%d" % rnd.randint(1, 3))
                    elif x < 0.6:
                        kind = "call add"
                        r = h.call("add", {"a": k, "b": seq})
                    elif x < 0.8:
                        # A short sleep. The blog runs each of its sleeping functions at most 4 at a
                        # time per instance: two clients per function, and sleep itself is left to the
                        # 3 long callers and the direct call below, so no call here meets that limit.
                        kind = "call slow"
                        r = h.call("slow_" + "abcd"[k % 4], {"ms": 20})
                    else:
                        kind = "mutation"
                        seq += 1
                        r = h.call("update_post", {"post_id": own[k], "title": "c%d-s%d" % (k, seq)}, token=token)
                    outcome = r.status
                except Exception as e:
                    outcome = "%s: %s" % (type(e).__name__, e)
                with lock:
                    results.append((now(), kind, outcome))
            h.close()

        def slow(k):
            # Long calls, so that the drain has requests in flight to finish.
            h = s.Http(c.port)
            while not stop.is_set():
                try:
                    outcome = h.call("sleep", {"ms": 1500}).status
                except Exception as e:
                    outcome = "%s: %s" % (type(e).__name__, e)
                with lock:
                    results.append((now(), "call sleep 1500", outcome))
            h.close()

        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        threads += [threading.Thread(target=slow, args=(k,)) for k in range(3)]
        t_load = now()
        for t in threads:
            t.start()
        try:
            time.sleep(3)
            # A long call in flight on mizan2 itself when SIGTERM arrives:
            # the drain must let it finish (and then close its connection).
            inflight = {}

            def direct():
                h = s.Http(c.gateways[1])
                try:
                    r = h.call("sleep", {"ms": 2000})
                    inflight["resp"] = r
                except Exception as e:
                    inflight["error"] = "%s: %s" % (type(e).__name__, e)
                h.close()
            dt = threading.Thread(target=direct)
            dt.start()
            # An idle keep-alive connection to mizan2, as HAProxy holds them.
            keep = s.Http(c.gateways[1])
            r = keep.call("add", {"a": 1, "b": 1})
            check(r.status == 200 and keep.conn is not None, "keep-alive call on mizan2: %r", r)
            time.sleep(0.5)
            pid = c.pid(2)
            log_off = os.path.getsize(c.log_path(2))
            states = []
            t_term = now()
            os.kill(pid, signal.SIGTERM)
            # A request that reaches the draining gateway on a connection it
            # had already accepted (HAProxy sends such requests in the
            # moment before it learns of the drain) must be served and the
            # connection closed after it: a 503 there reaches the client,
            # since HAProxy retries only requests that never reached a
            # server.
            time.sleep(0.2)
            try:
                late = keep.call("add", {"a": 2, "b": 2})
            except Exception as e:
                late = "%s: %s" % (type(e).__name__, e)
            keep.close()
            t_exit = t_down = None
            while now() - t_term < 20 and (t_exit is None or t_down is None):
                st = c.server_status().get("mizan2", "?")
                if not states or states[-1][1] != st:
                    states.append((now() - t_term, st))
                if t_down is None and st.startswith("DOWN"):
                    t_down = now()
                if t_exit is None and not os.path.exists("/proc/%d" % pid):
                    t_exit = now()
                time.sleep(0.05)
            dt.join(30)
            check(t_exit is not None, "mizan2 (pid %d) still running 20 s after SIGTERM", pid)
            r = inflight.get("resp")
            check(r is not None and r.status == 200 and r.json == {"result": {"slept_ms": 2000}},
                  "the call in flight on mizan2 at SIGTERM was not answered: %s", inflight)
            check((r.header("Connection") or "").lower() == "close",
                  "the drained answer does not close its connection: %s", r.headers)
            check(t_exit - t_term > 1.0, "mizan2 exited %.3f s after SIGTERM, before its 2 s call ended",
                  t_exit - t_term)
            check(t_down is not None, "HAProxy never marked mizan2 DOWN: %s", states)
            check(not isinstance(late, str) and late.status == 200 and late.json == {"result": 4} and
                  (late.header("Connection") or "").lower() == "close",
                  "a request on an open keep-alive connection 0.2 s into the drain got %r "
                  "(expected 200 with Connection: close)", late)
            time.sleep(2)
            restart_off = os.path.getsize(c.log_path(2))
            t_restart = now()
            r = subprocess.run([s.CLUSTER, "--start-instance", c.state, "2"], capture_output=True, text=True,
                               timeout=60, env=s.clean_env())
            check(r.returncode == 0, "deploy/cluster --start-instance: %s %s", r.stdout, r.stderr)
            t_started = now()
            t_up = s.wait_for(lambda: now() if c.server_status().get("mizan2") == "UP" else None, 20,
                              "HAProxy to mark the restarted mizan2 UP")
            time.sleep(4)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        t_end = now()

        # The stopped process: clean drain, exit status from its last line.
        with open(c.log_path(2), "rb") as f:
            f.seek(log_off)
            drain_text = f.read(restart_off - log_off).decode(errors="replace")
        check('"msg":"received SIGTERM: draining"' in drain_text, "mizan2 did not log the drain")
        stopped = [json.loads(line) for line in drain_text.splitlines() if '"msg":"stopped' in line]
        check(stopped and stopped[0]["msg"] == "stopped",
              "mizan2 did not drain cleanly: %s", stopped or drain_text[-1500:])

        # Client-visible outcomes, by phase.
        def phase(t):
            if t < t_term:
                return "before"
            if t < t_restart:
                return "drain"
            if t < t_up:
                return "rejoin"
            return "after"
        table = {}
        bad = []
        for t, kind, outcome in results:
            key = (phase(t), outcome if outcome == 200 else "non-2xx")
            table[key] = table.get(key, 0) + 1
            if outcome != 200:
                bad.append("%+.3f s after SIGTERM: %s -> %s" % (t - t_term, kind, outcome))
        log("drain: %d requests over %.1f s from %d clients (+3 with 1.5 s calls); SIGTERM at %+.1f s",
            len(results), t_end - t_load, clients, t_term - t_load)
        log("  HAProxy states of mizan2 after SIGTERM: %s", ", ".join("%+.2f s %s" % st for st in states))
        log("  process exit %.3f s after SIGTERM; DOWN in HAProxy after %.2f s; restarted (ready) in %.2f s; "
            "UP %.2f s after the restart", t_exit - t_term, t_down - t_term, t_started - t_restart, t_up - t_started)
        for ph in ("before", "drain", "rejoin", "after"):
            log("  %-6s: %5d ok, %d non-2xx or failed", ph, table.get((ph, 200), 0), table.get((ph, "non-2xx"), 0))
        # What HAProxy hid from the clients: requests it retried (a refused
        # connection to the stopped instance, redispatched to another).
        retried, answered = 0, {}
        for line in read(os.path.join(c.state, "haproxy.log")).splitlines():
            m = re.search(r" mizan_gateways/(\S+) \S+ (\d+) .* \d+/\d+/\d+/\d+/(\+?)(\d+) ", line)
            if m:
                if int(m.group(4)) > 0:
                    retried += 1
                if m.group(2) != "200":
                    key = "%s %s" % (m.group(1), m.group(2))
                    answered[key] = answered.get(key, 0) + 1
        log("  HAProxy: %d requests retried on another instance after a failed connection; non-200 answers "
            "by server: %s", retried, answered or "none")
        for b in bad[:30]:
            log("  %s", b)
        check(not bad, "%d of %d requests failed or were not 2xx while an instance drained and rejoined",
              len(bad), len(results))

        # Requests reach the restarted instance again.
        m = s.metrics(c.gateways[1])
        served = s.metric_sum(m, "mizan_requests_total", route="ctx") + \
            s.metric_sum(m, "mizan_requests_total", route="call")
        with open(c.log_path(2), "rb") as f:
            f.seek(restart_off)
            restart_text = f.read().decode(errors="replace")
        lines = [json.loads(x) for x in restart_text.splitlines() if x.startswith("{")]
        routed = [x for x in lines if x.get("msg") == "request" and x.get("route") in ("ctx", "call")]
        log("  restarted mizan2: %d call/ctx requests in /metrics, %d in its access log", served, len(routed))
        check(served > 0, "no call or ctx request reached the restarted mizan2 (its /metrics)")
        check(routed, "no call or ctx request in the restarted mizan2's access log")


# ---------------------------------------------------------------- script

def read(path):
    with open(path) as f:
        return f.read()


def running(pid):
    """The process exists and is no zombie."""
    try:
        return read("/proc/%d/stat" % pid).rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def gone(pids, timeout=30):
    """Waits up to timeout s for every pid to end; returns those still running."""
    deadline = now() + timeout
    while True:
        left = [p for p in pids if running(p)]
        if not left or now() >= deadline:
            return left
        time.sleep(0.1)


def test_script():
    with s.Run("cluster-script") as run:
        # Detached, two gateways, a given state directory.
        c = run.cluster(2, name="two")
        cfg = read(os.path.join(c.state, "haproxy.cfg"))
        deploy = read(os.path.join(s.SOURCE_DIR, "deploy", "haproxy", "haproxy.cfg"))
        # Every setting of the deploy file that is not about addresses is kept.
        for line in deploy.splitlines():
            st = line.strip()
            if not st or st.startswith("#") or st.startswith(("server ", "bind ", "log /dev/log", "user ", "group ",
                                                               "stats socket", "maxconn")):
                continue
            if st.startswith(("stats ", "frontend stats")):
                continue
            check(line in cfg, "generated haproxy.cfg lost the deploy file's line %r", line)
        servers = re.findall(r"^    server (mizan\d) 127\.0\.0\.1:(\d+)( track .*)?$", cfg, re.M)
        check([(n, int(p)) for n, p, t in servers if not t] == [("mizan1", c.gateways[0]), ("mizan2", c.gateways[1])],
              "server list of mizan_gateways: %s", servers)
        check(len([x for x in servers if x[2]]) == 2, "server list of mizan_events: %s", servers)
        check("    bind 127.0.0.1:%d\n" % c.port in cfg, "HAProxy does not bind 127.0.0.1:%d", c.port)
        check(c.server_status() == {"mizan1": "UP", "mizan2": "UP"}, "servers: %s", c.server_status())
        check(s.get(c.port, "/readyz").status == 200, "no /readyz through HAProxy")
        # A token minted with the printed config works on every instance.
        tok = run.token(c.config, "alice")
        for port in c.gateways + [c.port]:
            r = s.call(port, "whoami", token=tok)
            check(r.status == 200 and r.json["result"]["sub"] == "alice", "whoami on %d: %r", port, r)
        # The shared Redis is the ACL-restricted one.
        redis_port = int(c.info["MIZAN_CLUSTER_REDIS_PORT"])
        check(isinstance(s.redis_cmd(redis_port, "PING"), dict), "Redis answers without credentials")
        # One gateway stopped (it drains and exits) and started again on its port.
        old = c.pid(2)
        r = subprocess.run([s.CLUSTER, "--stop-instance", c.state, "2"], capture_output=True, text=True, timeout=60)
        check(r.returncode == 0 and not running(old) and c.pid(2) is None, "--stop-instance: %s", r.stderr)
        r = subprocess.run([s.CLUSTER, "--start-instance", c.state, "2"], capture_output=True, text=True, timeout=60,
                           env=s.clean_env())
        check(r.returncode == 0 and c.pid(2) not in (None, old) and running(c.pid(2)), "--start-instance: %s %s",
              r.stdout, r.stderr)
        check(s.get(c.gateways[1], "/readyz").status == 200, "restarted mizan2 is not ready on its port")
        r = subprocess.run([s.CLUSTER, "--start-instance", c.state, "2"], capture_output=True, text=True, timeout=60)
        check(r.returncode != 0 and "is running" in r.stderr, "--start-instance of a running gateway: %s", r.stderr)
        # A second start on a running state directory is refused.
        r = subprocess.run([s.CLUSTER, "--detach", "--bin", s.BIN_DIR, "--dir", c.state, "-p", str(s.free_port())],
                           capture_output=True, text=True, timeout=60, env=s.clean_env())
        check(r.returncode != 0 and "already running" in r.stderr, "second start on %s: %s", c.state, r.stderr)
        pids = list(c.pids().values())
        check(len(pids) == 4 and all(running(p) for p in pids), "recorded PIDs: %s", c.pids())
        r = subprocess.run([s.CLUSTER, "--stop", c.state], capture_output=True, text=True, timeout=90)
        check(r.returncode == 0, "--stop: %s", r.stderr)
        left = gone(pids, 5)
        check(not left, "still running after --stop: %s", left)
        check(os.path.isdir(c.state) and not c.pids(), "--dir state kept, pidfiles removed")

        # --owner: the cluster goes when its owner does.
        owner = run.spawn("owner", ["sleep", "300"])
        state = run.path("owned")
        run.track(state)
        # (Run as the README has it: relative to the checkout.)
        r = subprocess.run(["deploy/cluster", "--detach", "--bin", s.BIN_DIR, "--dir", state, "-n", "1",
                            "-p", str(s.free_port()), "--owner", str(owner.pid)], cwd=s.SOURCE_DIR,
                           capture_output=True, text=True, timeout=120, env=s.clean_env())
        check(r.returncode == 0, "--owner start: %s", r.stderr)
        owned = [int(read(os.path.join(state, "pids", f))) for f in os.listdir(os.path.join(state, "pids"))]
        owner.stop(signal.SIGKILL)
        left = gone(owned, 30)
        check(not left, "still running 30 s after the owner died: %s", left)

        # Foreground, default temporary state directory: SIGTERM to the
        # script, and SIGINT to its process group (Ctrl-C), stop everything
        # and remove the directory.
        for sig, group in ((signal.SIGTERM, False), (signal.SIGINT, True)):
            tmpdir = run.mkdir("fg-%d" % sig)
            port = s.free_port()
            env = s.clean_env({"TMPDIR": tmpdir})
            p = subprocess.Popen(["deploy/cluster", "--bin", s.BIN_DIR, "-p", str(port)], cwd=s.SOURCE_DIR,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                 start_new_session=True)
            try:
                foreground(p, sig, group, tmpdir, port)
            finally:
                if p.poll() is None:  # a failed check: stop it the way a user would
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(60)


def foreground(p, sig, group, tmpdir, port):
    """Checks a cluster started in the foreground (p) with its state in a
    new directory under tmpdir, then stops it with sig: to the script, or
    to its process group as a terminal's Ctrl-C does."""
    out = []
    while True:
        line = p.stdout.readline()
        out.append(line)
        if not line or "stop      Ctrl-C" in line:
            break
    check(out[-1], "foreground cluster did not come up:\n%s", "".join(out))
    states = os.listdir(tmpdir)
    check(len(states) == 1, "temporary state directories: %s", states)
    st = os.path.join(tmpdir, states[0])
    fg = [int(read(os.path.join(st, "pids", f))) for f in os.listdir(os.path.join(st, "pids"))]
    check(len(fg) == 5, "pidfiles: %s", fg)
    r = s.call(port, "add", {"a": 2, "b": 3})
    check(r.status == 200 and r.json == {"result": 5}, "add through the foreground cluster: %r", r)
    if group:
        os.killpg(p.pid, sig)
    else:
        p.send_signal(sig)
    rc = p.wait(60)
    tail = p.stdout.read()
    left = gone(fg, 5)
    check(not left, "still running after signal %d: %s", sig, left)
    check(not os.path.exists(st), "temporary state %s not removed", st)
    check(rc == 128 + sig, "exit status %d after signal %d (%s)", rc, sig, tail)
    log("foreground: signal %d stopped %d processes, removed %s, exit status %d", sig, len(fg), st, rc)


if __name__ == "__main__":
    s.main({"read_your_writes": test_read_your_writes, "events": test_events, "drain": test_drain,
            "script": test_script})
