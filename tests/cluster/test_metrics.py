#!/usr/bin/python3
"""test_metrics.py - the gateway's /metrics, read by Prometheus's own tools.

    test_metrics.py promtool|prometheus

promtool    A gateway with the embedded cache and one with Redis each get a
            bit of every kind of traffic (support.exercise); their /metrics
            must pass `promtool check metrics` (the exposition format and
            Prometheus's naming lints) without a single remark, and the
            numbers must agree with the traffic: request counters by route
            and status, cache outcomes, function errors and timeouts,
            histograms whose buckets are cumulative and whose +Inf bucket
            equals their count.
prometheus  A real `prometheus` server scrapes both gateways every second;
            its HTTP API must report both targets up with no scrape error,
            know the metric types, and answer queries over the gateways'
            counters and histograms.

promtool and prometheus come from the Debian package prometheus (on bookworm
it ships both); when missing the test fails, naming the package. It is
never skipped. Registered with ctest by tests/cluster/tests.cmake.
"""

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import support as s  # noqa: E402
from support import Failure, check, log

TOKEN_SECRET = "metrics-token-secret-0123456789abcdef"
CACHE_SECRET = "metrics-cache-secret-0123456789abcdef"


def start_pair(run):
    """An embedded-cache gateway and a Redis-backed one, both exercised."""
    redis = run.redis()
    gws = {}
    for mode in ("embedded", "redis"):
        cache = {"secret": CACHE_SECRET}
        if mode == "redis":
            cache["redis_url"] = "redis://127.0.0.1:%d/0" % redis.port
        cfg = s.gateway_config(run, mode, token={"secret": TOKEN_SECRET}, cache=cache, instance="metrics-" + mode)
        gw = run.gateway(mode, cfg)
        token = run.token(gw.config_path, "alice", "--staff")
        s.check_exercise(s.exercise(gw.port, token, cookie_token=token), mode)
        gws[mode] = gw
    return gws


def parse_exposition(text):
    """{family: type} and [(name, labels dict, value)] from the text format."""
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
            check(m is not None, "unparsable sample line %r", line)
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            samples.append((m.group(1), labels, float(m.group(3))))
    return types, samples


def check_histograms(types, samples, mode):
    """Cumulative buckets, +Inf == _count, for every histogram series."""
    series = {}
    for name, labels, value in samples:
        for fam, kind in types.items():
            if kind == "histogram" and name in (fam + "_bucket", fam + "_count", fam + "_sum"):
                key = (fam, tuple(sorted((k, v) for k, v in labels.items() if k != "le")))
                entry = series.setdefault(key, {"buckets": [], "count": None})
                if name.endswith("_bucket"):
                    le = labels["le"]
                    entry["buckets"].append((float("inf") if le == "+Inf" else float(le), value))
                elif name.endswith("_count"):
                    entry["count"] = value
    check(series, "%s: no histogram series", mode)
    for key, e in series.items():
        b = e["buckets"]
        check(b and b == sorted(b), "%s %s: bucket bounds out of order: %s", mode, key, b)
        check(all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1)), "%s %s: buckets not cumulative: %s",
              mode, key, b)
        check(b[-1][0] == float("inf") and b[-1][1] == e["count"], "%s %s: +Inf bucket %s != count %s",
              mode, key, b[-1], e["count"])
    return len(series)


def test_promtool():
    promtool = s.need_tool("promtool", "prometheus")
    with s.Run("metrics-promtool") as run:
        gws = start_pair(run)
        for mode, gw in gws.items():
            r = s.get(gw.port, "/metrics")
            check(r.status == 200, "%s: GET /metrics: %r", mode, r)
            ctype = r.header("Content-Type") or ""
            check(ctype.startswith("text/plain; version=0.0.4"), "%s: /metrics Content-Type %r", mode, ctype)
            p = subprocess.run([promtool, "check", "metrics"], input=r.body, capture_output=True, timeout=60)
            remarks = (p.stdout + p.stderr).decode(errors="replace").strip()
            check(p.returncode == 0 and not remarks, "%s: promtool check metrics exited %d:\n%s\n--- the scrape:\n%s",
                  mode, p.returncode, remarks, r.body.decode(errors="replace")[:6000])
            types, samples = parse_exposition(r.body.decode())
            nhist = check_histograms(types, samples, mode)

            def total(name, **labels):
                return sum(v for n, lb, v in samples if n == name and all(lb.get(k) == x for k, x in labels.items()))
            expect = {
                ("mizan_requests_total", (("route", "call"), ("status", "200"))): 5,
                ("mizan_requests_total", (("route", "call"), ("status", "422"))): 1,
                ("mizan_requests_total", (("route", "call"), ("status", "404"))): 1,
                ("mizan_requests_total", (("route", "call"), ("status", "500"))): 1,
                ("mizan_requests_total", (("route", "call"), ("status", "504"))): 1,
                ("mizan_requests_total", (("route", "ctx"), ("status", "401"))): 1,
                ("mizan_requests_total", (("route", "events"), ("status", "200"))): 1,
                ("mizan_cache_requests_total", (("context", "post"), ("outcome", "hit"))): 1,
                ("mizan_cache_requests_total", (("context", "post"), ("outcome", "miss"))): 1,
                ("mizan_cache_requests_total", (("context", "fanout"), ("outcome", "bypass"))): 1,
                ("mizan_function_errors_total", (("function", "boom"),)): 1,
                ("mizan_function_timeouts_total", (("function", "sleep"),)): 1,
                ("mizan_function_runs_total", (("function", "update_post"),)): 1,
            }
            for (name, labels), least in expect.items():
                got = total(name, **dict(labels))
                check(got >= least, "%s: %s%s is %g, expected at least %d", mode, name, dict(labels), got, least)
            calls = total("mizan_requests_total", route="call")
            check(total("mizan_request_duration_seconds_count", route="call") == calls,
                  "%s: the call latency histogram counts differ from mizan_requests_total", mode)
            if mode == "redis":
                check(total("mizan_redis_up") >= 1, "%s: mizan_redis_up is not >= 1", mode)
            else:
                check("mizan_redis_up" not in types, "embedded: a mizan_redis_up series without Redis")
            log("%s: promtool check metrics: no remark (%d families, %d samples, %d histogram series)",
                mode, len(types), len(samples), nhist)


# Loopback only: never through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def api(port, path, **params):
    url = "http://127.0.0.1:%d%s" % (port, path)
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with OPENER.open(url, timeout=5) as r:
        doc = json.loads(r.read())
    check(doc.get("status") == "success", "Prometheus %s: %s", path, doc)
    return doc["data"]


def test_prometheus():
    prometheus = s.need_tool("prometheus", "prometheus")
    with s.Run("metrics-prometheus") as run:
        gws = start_pair(run)
        targets = ["127.0.0.1:%d" % gw.port for gw in gws.values()]
        conf = run.write(run.path("prometheus.yml"), "\n".join([
            "global:",
            "  scrape_interval: 1s",
            "  scrape_timeout: 1s",
            "scrape_configs:",
            "  - job_name: mizan",
            "    static_configs:",
            "      - targets: [%s]" % ", ".join('"%s"' % t for t in targets),
            ""]))
        for _ in range(3):
            port = s.free_port()
            prom = run.spawn("prometheus", [prometheus, "--config.file=" + conf,
                                            "--storage.tsdb.path=" + run.mkdir("tsdb"),
                                            "--web.listen-address=127.0.0.1:%d" % port, "--log.level=warn"])

            def ready():
                if not prom.alive():
                    return "exited"
                try:
                    with OPENER.open("http://127.0.0.1:%d/-/ready" % port, timeout=1) as r:
                        return "ready" if r.status == 200 else None
                except OSError:
                    return None
            state = s.wait_for(ready, 30, "prometheus to be ready", interval=0.2)
            if state == "ready":
                break
            if "address already in use" not in prom.log_text():
                raise Failure("prometheus exited:\n" + prom.log_text()[-2000:])
        t0 = time.monotonic()

        def all_up():
            res = api(port, "/api/v1/targets")["activeTargets"]
            return res if len(res) == 2 and all(t["health"] == "up" and not t["lastError"] for t in res) else None
        try:
            s.wait_for(all_up, 20, "both gateways to be scraped", interval=0.5)
        except Failure:
            raise Failure("targets: %s" % json.dumps(api(port, "/api/v1/targets")["activeTargets"], indent=1))
        up = api(port, "/api/v1/query", query='up{job="mizan"}')["result"]
        check(sorted(r["metric"]["instance"] for r in up) == sorted(targets) and
              all(r["value"][1] == "1" for r in up), "up{job=\"mizan\"}: %s", up)

        # More traffic after the first scrape; the server must see it.
        calls = 25
        for gw in gws.values():
            h = s.Http(gw.port)
            for i in range(calls):
                check(h.call("add", {"a": i, "b": 1}).status == 200, "add on %d", gw.port)
            h.close()
        want = {t: s.metric_sum(s.metrics(int(t.rsplit(":", 1)[1])), "mizan_requests_total", route="call",
                                status="200") for t in targets}

        def caught_up():
            res = api(port, "/api/v1/query",
                      query='sum by (instance) (mizan_requests_total{route="call",status="200"})')
            got = {r["metric"]["instance"]: float(r["value"][1]) for r in res["result"]}
            return got if all(got.get(t, 0) >= want[t] for t in targets) else None
        got = s.wait_for(caught_up, 20, "Prometheus to see the calls (want %s)" % want, interval=0.5)
        meta = api(port, "/api/v1/metadata")
        for name, kind in (("mizan_requests_total", "counter"), ("mizan_request_duration_seconds", "histogram"),
                           ("mizan_workers_busy", "gauge")):
            check(meta.get(name, [{}])[0].get("type") == kind, "Prometheus metadata of %s: %s", name, meta.get(name))
        q = api(port, "/api/v1/query", query='histogram_quantile(0.9, sum by (le, instance) '
                                            '(mizan_request_duration_seconds_bucket{route="call"}))')
        vals = [float(r["value"][1]) for r in q["result"]]
        check(len(vals) == 2 and all(0 <= v <= 10 for v in vals), "p90 call latency per instance: %s", q)
        log("prometheus: both gateways up, scraped every 1 s; calls seen %s; p90 call latency %s s; "
            "%.1f s after start", got, ["%.4f" % v for v in vals], time.monotonic() - t0)


if __name__ == "__main__":
    s.main({"promtool": test_promtool, "prometheus": test_prometheus})
