"""
check_report.py DIR - checks the bench report that bench/run --quick wrote
into DIR: exactly one DATE-quick.json, valid JSON, every scenario of the
issue present (upstream_bundle reported as not available, every other one
run), the figures each scenario promises present and sane, every check
passed, no sanitizer report in a server log, and the Markdown summary and
both plots written beside it. Prints one line per finding and a closing
"bench-report: N passed, M failed" line; exit status 1 on any failure.
"""

import glob
import json
import os
import sys

WRK = ["call_ping", "call_add", "ctx_post_hit_embedded", "ctx_post_hit_redis", "ctx_post_miss", "mixed"]
ALL = WRK + ["ctx_fanout", "sse_fanout", "connections", "upstream_bundle"]
CACHED = ["ctx_post_hit_embedded", "ctx_post_hit_redis", "ctx_post_miss", "mixed"]
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
    check(by.get("upstream_bundle", {}).get("status") == "not_available", "upstream_bundle is not_available")
    for name in ALL[:-1]:
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

    for name in ("ctx_post_hit_embedded", "ctx_post_hit_redis"):
        hr = get(name, "cache", "hit_ratio")
        check(hr is not None and hr > 0.9, f"{name}: warmed cache hits (hit ratio {hr})")
    hr = get("ctx_post_miss", "cache", "hit_ratio")
    check(hr is not None and hr < 0.1, f"ctx_post_miss: fetches miss (hit ratio {hr})")
    check((get("mixed", "checker", "reads_ok") or 0) > 0, "mixed: the checker made write-then-read pairs")
    check(get("mixed", "checker", "violations") == 0, "mixed: no stale read after an acknowledged write")
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
    check(os.path.getsize(base + ".md") > 0 if os.path.exists(base + ".md") else False, "Markdown summary written")
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
