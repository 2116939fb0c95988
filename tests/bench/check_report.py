"""
check_report.py DIR - checks the bench report that bench/run --quick wrote
into DIR: exactly one DATE-quick.json, valid JSON, every scenario present
and run (the upstream bundles included), the figures each scenario promises
present and sane, every check passed, no sanitizer report in a server log,
and the Markdown summary (with its upstream table) and both plots written
beside it. Prints one line per finding and a closing
"bench-report: N passed, M failed" line; exit status 1 on any failure.
"""

import glob
import json
import os
import sys

UPSTREAM = ["upstream_bundle", "upstream_bundle_cached"]
WRK = ["call_ping", "call_add", "ctx_post_hit_embedded", "ctx_post_hit_redis", "ctx_post_hit_redis_cluster",
       "ctx_post_miss", "mixed", "mixed_redis_cluster"] + UPSTREAM
ALL = WRK + ["ctx_fanout", "sse_fanout", "connections", "gzip_bundle", "miss_storm_fleet"]
CACHED = ["ctx_post_hit_embedded", "ctx_post_hit_redis", "ctx_post_hit_redis_cluster", "ctx_post_miss", "mixed",
          "mixed_redis_cluster", "upstream_bundle_cached"]
UPSTREAM_FUNCTIONS = 4
PCTS = ["p50", "p90", "p99", "p99_9"]

passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}")


def positive(x):
    return isinstance(x, (int, float)) and x > 0


def main(out):
    files = glob.glob(os.path.join(out, "*-quick.json"))
    check(len(files) == 1, f"exactly one *-quick.json in {out} (found {files})")
    if len(files) != 1:
        return
    base = files[0][:-len(".json")]
    with open(files[0]) as f:
        rep = json.load(f)
    check(rep.get("schema") == "mizan-bench/1", "schema is mizan-bench/1")
    check(rep.get("set") == "quick", "set is quick")
    by = {s.get("name"): s for s in rep.get("scenarios", [])}
    for name in ALL:
        check(name in by, f"scenario {name} present")
    for name in ALL:
        s = by.get(name, {})
        check(s.get("status") == "ok", f"{name} ran (status {s.get('status')}: {s.get('error', '')[:300]})")
    for name in WRK:
        s = by.get(name, {})
        if s.get("status") != "ok":
            continue
        for side in ("gateway", "ceiling"):
            m = s.get(side) or {}
            check(positive(m.get("rps")), f"{name} {side} req/s > 0")
            check(all(positive((m.get("latency_ms") or {}).get(p)) for p in PCTS), f"{name} {side} percentiles")
            check(positive(m.get("server_cpu_s")), f"{name} {side} server CPU measured")
            check(positive(m.get("peak_rss_bytes")), f"{name} {side} peak RSS measured")
        g = s.get("gateway") or {}
        check((g.get("errors") or {}).get("total") == 0, f"{name}: no errors ({g.get('errors')})")
        check(positive((s.get("ratio") or {}).get("rps")), f"{name}: ratio to the ceiling")
        if name in CACHED:
            check((s.get("cache") or {}).get("hit_ratio") is not None, f"{name}: cache hit ratio from /metrics")

    def get(*path):
        v = by
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        return v

    if get("gzip_bundle", "status") == "ok":
        check(isinstance(get("gzip_bundle", "gzip_ratio"), (int, float)) and get("gzip_bundle", "gzip_ratio") > 1,
              f"gzip_bundle: the body shrinks (ratio {get('gzip_bundle', 'gzip_ratio')})")
        for mode in ("plain", "gzip"):
            check(positive(get("gzip_bundle", "cpu_us_per_req", mode)), f"gzip_bundle: CPU per answer ({mode})")
        check(positive(get("gzip_bundle", "gateway", "wire_bytes_per_req")) and
              positive(get("gzip_bundle", "plain", "wire_bytes_per_req")), "gzip_bundle: bytes on the wire")

    if get("miss_storm_fleet", "status") == "ok":
        rounds = get("miss_storm_fleet", "rounds")
        lock, nolock = get("miss_storm_fleet", "lock", "computations"), get("miss_storm_fleet", "nolock", "computations")
        check(positive(rounds) and lock == rounds,
              f"miss_storm_fleet: one computation per bundle with the fill lock ({lock} for {rounds})")
        check(isinstance(nolock, int) and nolock >= rounds,
              f"miss_storm_fleet: computations without the lock counted ({nolock})")

    for name in UPSTREAM:
        if get(name, "status") != "ok":
            continue
        requests = get(name, "bundles", "requests") or 0
        check(requests > 0 and get(name, "bundles", "complete") == requests and get(name, "bundles", "incomplete") == 0,
              f"{name}: every answer a complete bundle ({get(name, 'bundles')})")
        data = get(name, "sample_bundle", "data") or {}
        check(len(data) == UPSTREAM_FUNCTIONS and get(name, "sample_bundle", "errors") == {},
              f"{name}: the sample bundle has {UPSTREAM_FUNCTIONS} results and no errors")
        calls = get(name, "upstream", "calls") or {}
        check(set(calls) >= {"ok", "timeout", "connect_error", "rejected"} and
              all(v == 0 for k, v in calls.items() if k != "ok"), f"{name}: no failed upstream call ({calls})")
        opened = get(name, "upstream", "connections_opened_since_start")
        check(positive(opened) and opened <= (get(name, "upstream", "pool_bound") or 0),
              f"{name}: upstream connections counted from /metrics and within the pool ({opened})")
        check(isinstance(get(name, "gateway", "upstream_cpu_s"), (int, float)),
              f"{name}: the upstream service's CPU measured apart")
    per = get("upstream_bundle", "upstream", "calls_per_request")
    check(per is not None and per >= UPSTREAM_FUNCTIONS,
          f"upstream_bundle: {UPSTREAM_FUNCTIONS} upstream calls per answer at TTL 0 ({per})")
    check(positive(get("upstream_bundle", "gateway", "upstream_cpu_us_per_req")),
          "upstream_bundle: the upstream service's CPU per bundle")
    per = get("upstream_bundle_cached", "upstream", "calls_per_request")
    check(per is not None and per < 0.01, f"upstream_bundle_cached: cached, no upstream calls ({per})")
    for name in ("ctx_post_hit_embedded", "ctx_post_hit_redis", "ctx_post_hit_redis_cluster", "upstream_bundle_cached"):
        hr = get(name, "cache", "hit_ratio")
        check(hr is not None and hr > 0.9, f"{name}: warmed cache hits (hit ratio {hr})")
    hr = get("ctx_post_miss", "cache", "hit_ratio")
    check(hr is not None and hr < 0.1, f"ctx_post_miss: fetches miss (hit ratio {hr})")
    for name in ("mixed", "mixed_redis_cluster"):
        check((get(name, "checker", "reads_ok") or 0) > 0, f"{name}: the checker made write-then-read pairs")
        check(get(name, "checker", "violations") == 0, f"{name}: no stale read after an acknowledged write")
    for name in ("ctx_post_hit_redis", "ctx_post_hit_redis_cluster"):
        check(positive(get(name, "gateway", "redis_cpu_s")), f"{name}: Redis CPU measured")
    check(positive(get("ctx_fanout", "gateway", "latency_ms", "p50")), "ctx_fanout: p50 measured")
    check(positive(get("sse_fanout", "gateway", "events_received")), "sse_fanout: events delivered")
    check(get("sse_fanout", "gateway", "latency_from_response_ms", "p99") is not None, "sse_fanout: delivery p99")
    # RSS deltas are only numbers here: under a sanitizer's allocator they may even be negative.
    stages = get("connections", "gateway", "stages") or []
    check(len(stages) >= 2 and all(x.get("established") == x.get("connections") and
                                   isinstance(x.get("bytes_per_connection"), (int, float)) for x in stages),
          f"connections: every stage established and measured ({stages})")
    for c in rep.get("checks", []):
        check(c.get("passed") is True, f"check {c.get('scenario')}/{c.get('name')}: {c.get('detail')}")
    check(not rep.get("sanitizer_reports"), f"no sanitizer report in server logs: {rep.get('sanitizer_reports')}")
    md = ""
    if os.path.exists(base + ".md"):
        with open(base + ".md", encoding="utf-8") as f:
            md = f.read()
    check(len(md) > 0, "Markdown summary written")
    check("## Upstream functions" in md and "| upstream_bundle | not available" not in md,
          "Markdown has the upstream table and no 'not available' row")
    for plot in ("throughput", "latency"):
        p = f"{base}-{plot}.png"
        ok = os.path.exists(p)
        if ok:
            with open(p, "rb") as f:
                ok = f.read(8) == b"\x89PNG\r\n\x1a\n"
        check(ok, f"{plot} plot is a PNG")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: check_report.py DIR\n")
        sys.exit(2)
    try:
        main(sys.argv[1])
    except (OSError, ValueError, AttributeError, TypeError) as e:
        check(False, f"report unreadable: {e}")
    print(f"bench-report: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
