#!/usr/bin/env python3
"""test_redis_cluster.py - deploy/cluster --redis-cluster: three gateways
behind HAProxy on a Redis Cluster of three masters and three replicas.

failover          clients write (update_post) and read (ctx post) their own
                  posts through HAProxy while the master that owns the {post}
                  slot is killed (SIGKILL). Checks: every answer is a 200
                  (the gateways stay ready and answer BYPASS while the slot
                  has no master), no read returns a title older than one
                  acknowledged before the read started, the replica took the
                  slot over, and hits come back. Two more clients only
                  read (everyone's posts, checked against what was
                  acknowledged before the read started): they see the BYPASS
                  window while the writers' mutations wait for the new
                  master. Prints the BYPASS window and the time to the first
                  hit after it.

Registered with ctest by tests/cluster/tests.cmake.
"""

import os
import random
import re
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import support as s  # noqa: E402
from support import check, log, now


def admin(c):
    with open(os.path.join(c.state, "redis", "admin.pass")) as f:
        return f.read().strip()


def node_ports(c):
    return [int(p) for p in c.info["MIZAN_CLUSTER_REDIS_PORTS"].split()]


def owner_of(c, password, slot, dead=()):
    """(port, node index 1-based) of the master serving slot, asked of a live node."""
    ports = node_ports(c)
    for port in ports:
        if port in dead:
            continue
        try:
            slots = s.redis_cmd(port, "CLUSTER", "SLOTS", user="default", password=password)
        except OSError:
            continue
        for lo, hi, master, *_ in slots:
            if lo <= slot <= hi:
                return master[1], ports.index(master[1]) + 1
    return None, None


def test_failover():
    clients = 4
    with s.Run("redis-cluster-failover") as run:
        c = run.cluster(3, redis_cluster=True)
        password = admin(c)
        slot = s.redis_cmd(node_ports(c)[0], "CLUSTER", "KEYSLOT", "{post}", user="default", password=password)
        victim_port, victim = owner_of(c, password, slot)
        check(victim is not None, "no owner of slot %d", slot)
        tokens = [run.token(c.config, "writer%d" % k) for k in range(clients)]
        posts = []
        for k in range(clients):
            r = s.call(c.port, "create_post", {"title": "c%d-s0" % k, "body": "b"}, token=tokens[k])
            s.expect_ok(r, "create_post")
            posts.append(r.json["result"]["id"])
        lock = threading.Lock()
        stop = threading.Event()
        acked_by_post = {p: 0 for p in posts}  # highest acknowledged seq per post, for the readers
        killed = {"at": None}
        stats = {"reads": 0, "writes": 0, "errors": 0, "violations": 0, "HIT": 0, "MISS": 0, "BYPASS": 0}
        bypass_times, hit_times, problems = [], [], []

        def read_post(h, post, floor, who):
            """Reads post's bundle: counts its X-Mizan-Cache (and, after the kill, when it came) and
            records a violation when it is older than floor, the highest seq acknowledged before it."""
            r = h.get("/api/mizan/ctx/post/?post_id=%d" % post)
            t = now()
            if r.status != 200:
                with lock:
                    stats["errors"] += 1
                    problems.append("%sctx post: %r" % (who, r))
                return
            got = int(re.match(r"^c\d+-s(\d+)$", r.json["data"]["get_post"]["title"]).group(1))
            cache = r.header("X-Mizan-Cache")
            with lock:
                stats["reads"] += 1
                stats[cache] = stats.get(cache, 0) + 1
                if killed["at"] is not None:
                    (bypass_times if cache == "BYPASS" else hit_times if cache == "HIT" else []).append(
                        t - killed["at"])
                if got < floor:
                    stats["violations"] += 1
                    problems.append("%spost %d: read seq %d (%s) after seq %d was acknowledged"
                                    % (who, post, got, cache, floor))

        def client(k):
            rnd = random.Random(k)
            h = s.Http(c.port)
            seq = acked = 0
            while not stop.is_set():
                try:
                    if rnd.random() < 0.3:
                        seq += 1
                        r = h.call("update_post", {"post_id": posts[k], "title": "c%d-s%d" % (k, seq)},
                                   token=tokens[k])
                        ok = r.status == 200 and r.json["result"]["title"] == "c%d-s%d" % (k, seq)
                        with lock:
                            if ok:
                                stats["writes"] += 1
                                acked = seq
                                acked_by_post[posts[k]] = seq
                            else:
                                stats["errors"] += 1
                                problems.append("update_post: %r" % r)
                        continue
                    read_post(h, posts[k], acked, "")
                except Exception as e:  # reported below
                    with lock:
                        stats["errors"] += 1
                        problems.append("client %d: %r" % (k, e))
                        h = s.Http(c.port)

        def reader(k):
            """Reads everyone's posts (never writes): it sees the BYPASS window while writers wait."""
            h = s.Http(c.port)
            i = k
            while not stop.is_set():
                p = posts[i % clients]
                i += 1
                try:
                    with lock:
                        floor = acked_by_post[p]
                    read_post(h, p, floor, "reader: ")
                except Exception as e:  # reported below
                    with lock:
                        stats["errors"] += 1
                        problems.append("reader %d: %r" % (k, e))
                        h = s.Http(c.port)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        threads += [threading.Thread(target=reader, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        time.sleep(2)
        pid = c.pids()["redis%d" % victim]
        os.kill(pid, signal.SIGKILL)
        with lock:
            killed["at"] = now()
        log("killed node %d (master of slot %d, port %d)", victim, slot, victim_port)
        # Until the replica serves the slot, then hits for a few seconds.
        s.wait_for(lambda: owner_of(c, password, slot, dead=(victim_port,))[0] not in (None, victim_port), 60,
                   "the replica to take slot %d over" % slot)
        promoted_at = now() - killed["at"]
        s.wait_for(lambda: len(hit_times) > 0 and (not bypass_times or hit_times[-1] > bypass_times[-1] + 3), 60,
                   "hits after the failover")
        stop.set()
        for t in threads:
            t.join(60)
        last_bypass = max(bypass_times) if bypass_times else -1
        first_hit = min([x for x in hit_times if x > last_bypass], default=-1)
        log("failover: replica promoted %.2f s after the kill; BYPASS from %.2f to %.2f s; first HIT after it "
            "%.2f s; %s", promoted_at, min(bypass_times, default=-1), last_bypass, first_hit, stats)
        check(stats["errors"] == 0, "%d errors: %s", stats["errors"], problems[:10])
        check(stats["violations"] == 0, "%d stale reads: %s", stats["violations"], problems[:10])
        check(bypass_times, "the kill should have caused BYPASS answers")
        check(first_hit > 0, "no hit after the failover")
        check(all(v.startswith("UP") for v in c.server_status().values()),
              "gateways out of rotation after the failover: %s", c.server_status())


if __name__ == "__main__":
    s.main({"failover": test_failover})
