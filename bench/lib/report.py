"""
report.py - turns a bench report (the JSON that harness.py writes) into the
Markdown summary and the two PNG plots that sit beside it:

    <base>.md                 summary table, per-scenario details, checks, noise
    <base>-throughput.png     requests/s of the gateway and the ceiling per scenario
    <base>-latency.png        p50/p90/p99/p99.9 per scenario, gateway and ceiling

Plots are drawn by gnuplot (Debian's gnuplot-nox); without it the Markdown
says so and no PNG is written. Also usable alone, to redraw from a JSON
file: python3 bench/lib/report.py bench/results/DATE-SET.json
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

# Scenarios measured with wrk against the ceiling (same load, same run).
WRK_SCENARIOS = ["call_ping", "call_add", "ctx_post_hit_embedded", "ctx_post_hit_redis", "ctx_post_hit_redis_cluster",
                 "ctx_post_miss", "mixed", "mixed_redis_cluster", "upstream_bundle", "upstream_bundle_cached"]
UPSTREAM_SCENARIOS = ["upstream_bundle", "upstream_bundle_cached"]


def _f(x, digits=1):
    if x is None:
        return "–"
    if isinstance(x, float) and abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}" if isinstance(x, float) else f"{x:,}" if isinstance(x, int) else str(x)


def _ratio(x):
    return "–" if x is None else f"{x:.2f}×"


def _mib(b):
    return "–" if b is None else f"{b / 2**20:.1f}"


def _hits(s):
    c = s.get("cache")
    if not c or c.get("hit_ratio") is None:
        return "–"
    if c.get("bypass") and not c.get("hit") and not c.get("miss"):
        return "bypass (TTL 0)"
    return f"{100 * c['hit_ratio']:.1f} %"


def _cpu(m):
    """Where the CPU time of one measurement went."""
    busy = m.get("server_cpus_busy")
    text = f"server CPU {m.get('server_cpu_cores')} cores"
    if busy is not None:
        text += f" (the pinned server CPUs were {100 * busy:.0f} % busy in all)"
    text += (f"; load generator {m.get('loadgen_cpu_cores')} cores; other work on the machine "
             f"{m.get('foreign_cpu_cores')} cores; interrupts {m.get('softirq_cpu_cores')} cores")
    return text


def _by_name(rep):
    return {s["name"]: s for s in rep["scenarios"]}


def summary_table(rep):
    """The main table: one row per scenario, gateway figures with their ratio to the ceiling."""
    rows = ["| scenario | gateway req/s | ceiling req/s | ratio | CPU µs/req gateway | ceiling | ratio "
            "| p50 ms | p90 ms | p99 ms | p99.9 ms | p99 ratio | errors | peak RSS MiB | cache hits |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in rep["scenarios"]:
        name = s["name"]
        st = s.get("status")
        if st != "ok":
            why = {"not_available": "not available: " + s.get("reason", ""),
                   "skipped": "skipped", "failed": "FAILED: " + s.get("error", "").splitlines()[0][:120]
                   if s.get("error") else "FAILED"}.get(st, st)
            rows.append(f"| {name} | {why} |" + " |" * 14)
            continue
        g, c, r = s.get("gateway", {}), s.get("ceiling"), s.get("ratio")
        if name in WRK_SCENARIOS:
            lat = g["latency_ms"]
            rows.append(
                f"| {name} | {_f(g['rps'])} | {_f(c['rps'])} | {_ratio(r['rps'])} | {_f(g.get('cpu_us_per_req'))} "
                f"| {_f(c.get('cpu_us_per_req'))} | {_ratio(r.get('cpu_us_per_req'))} | {_f(lat['p50'], 2)} "
                f"| {_f(lat['p90'], 2)} | {_f(lat['p99'], 2)} | {_f(lat['p99_9'], 2)} | {_ratio(r['p99'])} "
                f"| {_f(g['errors']['total'])} | {_mib(g.get('peak_rss_bytes'))} | {_hits(s)} |")
        elif name == "ctx_fanout":
            lat = g["latency_ms"]
            rows.append(
                f"| {name} | {_f(g['rps'])} (fixed rate) | – | p50 = {_ratio(s.get('p50_vs_ideal'))} of 20 ms "
                f"| – | – | – | {_f(lat['p50'], 2)} | {_f(lat['p90'], 2)} | {_f(lat['p99'], 2)} "
                f"| {_f(lat['p99_9'], 2)} | – | {_f(g['errors']['total'])} | {_mib(g.get('peak_rss_bytes'))} | – |")
        elif name == "sse_fanout":
            lr = g.get("latency_from_response_ms", {})
            rows.append(
                f"| {name} | {g.get('connected')} streams, {g.get('mutations_ok')} mutations | – | – | – | – | – "
                f"| {_f(lr.get('p50'), 2)} | {_f(lr.get('p90'), 2)} | {_f(lr.get('p99'), 2)} "
                f"| {_f(lr.get('p99_9'), 2)} | – | {_f(g.get('events_missing'))} missing "
                f"| {_mib(g.get('peak_rss_bytes'))} | – |")
        elif name == "gzip_bundle":
            lat, cpu = g["latency_ms"], s.get("cpu_us_per_req", {})
            rows.append(
                f"| {name} | {_f(g['rps'])} gzip, {_f(s['plain']['rps'])} plain | – "
                f"| body {_ratio(s.get('gzip_ratio'))} smaller | {_f(cpu.get('gzip'))} gzip "
                f"| {_f(cpu.get('plain'))} plain | +{_f(cpu.get('gzip_extra'))} µs | {_f(lat['p50'], 2)} "
                f"| {_f(lat['p90'], 2)} | {_f(lat['p99'], 2)} | {_f(lat['p99_9'], 2)} | – "
                f"| {_f(g['errors']['total'])} | {_mib(g.get('peak_rss_bytes'))} | – |")
        elif name == "miss_storm_fleet":
            lk, nl = s.get("lock", {}), s.get("nolock", {})
            rows.append(f"| {name} | {lk.get('computations')} computations with the fill lock, "
                        f"{nl.get('computations')} without, for {s.get('rounds')} bundles |" + " |" * 14)
        elif name == "connections":
            parts = []
            for gs, cs in zip(g.get("stages", []), (c or {}).get("stages", [])):
                ratio = (gs["bytes_per_connection"] / cs["bytes_per_connection"]
                         if gs.get("bytes_per_connection") and cs.get("bytes_per_connection") else None)
                parts.append(f"{gs['connections']}: {_f(gs['bytes_per_connection'], 0)} B/conn "
                             f"(ceiling {_f(cs['bytes_per_connection'], 0)}, {_ratio(ratio)})")
            last = g.get("stages", [{}])[-1]
            rows.append(f"| {name} | {'; '.join(parts)} |" + " |" * 11 +
                        f" {_mib(last.get('rss_bytes'))} | – |")
    return "\n".join(rows)


def upstream_table(rep):
    """
    The upstream scenarios' own figures: the bundle against one GET answered
    directly, the CPU of the gateway and of the upstream service per
    bundle, upstream calls and connections, and the answer check. Empty
    when no upstream scenario ran.
    """
    rows = ["| scenario | bundle req/s | ceiling req/s (one GET) | ratio | CPU µs/bundle: gateway | upstream "
            "service | both | ceiling µs/GET | both ÷ ceiling | upstream calls/bundle | upstream connections "
            "opened (open at most) | answers checked | incomplete |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    n = 0
    for s in rep["scenarios"]:
        if s["name"] not in UPSTREAM_SCENARIOS or s.get("status") != "ok":
            continue
        n += 1
        g, c, r, up, b = s["gateway"], s["ceiling"], s["ratio"], s.get("upstream", {}), s.get("bundles", {})
        rows.append(
            f"| {s['name']} | {_f(g['rps'])} | {_f(c['rps'])} | {_ratio(r['rps'])} | {_f(g.get('cpu_us_per_req'))} "
            f"| {_f(g.get('upstream_cpu_us_per_req'))} | {_f(g.get('cpu_us_per_req_with_upstream'))} "
            f"| {_f(c.get('cpu_us_per_req'))} | {_ratio(r.get('cpu_us_per_req_with_upstream'))} "
            f"| {_f(up.get('calls_per_request'), 3)} | {_f(up.get('connections_opened_since_start'))} "
            f"({_f(up.get('connections_established_max'))}) | {_f(b.get('checked'))} | {_f(b.get('incomplete'))} |")
    return "\n".join(rows) if n else ""


def _bound_notes(rep):
    """
    Flags load runs whose server CPUs were not saturated while the load
    CPUs were: that run measured the load generator (starved by other work
    on the machine, or simply slower than the server), not the server, so
    its req/s understates the server. On a ceiling run that makes the
    req/s ratio flatter the gateway; the CPU µs/request ratio still holds.
    """
    out = []
    for s in rep["scenarios"]:
        if s.get("status") != "ok" or s["name"] not in WRK_SCENARIOS:
            continue
        for side in ("ceiling", "gateway"):
            m = s.get(side) or {}
            sb, lb = m.get("server_cpus_busy"), m.get("load_cpus_busy")
            if sb is not None and lb is not None and sb < 0.8 and lb > 0.9:
                out.append(f"- `{s['name']}` {side}: server CPUs {100 * sb:.0f} % busy, load CPUs "
                           f"{100 * lb:.0f} % busy (load generator {m.get('loadgen_cpu_cores')} cores, other work "
                           f"{m.get('foreign_cpu_cores')} cores): bound by the load side, so its req/s understates "
                           f"the server" + ("; the req/s ratio flatters the gateway, use the CPU ratio"
                                            if side == "ceiling" else ""))
    return out


def _checks(rep):
    out = []
    for c in rep.get("checks", []):
        out.append(f"- {'PASS' if c['passed'] else '**FAIL**'} `{c['scenario']}/{c['name']}`: {c['detail']}")
    return "\n".join(out) if out else "- (no checks ran)"


def _details(rep):
    out = []
    for s in rep["scenarios"]:
        out.append(f"### {s['name']}\n")
        if s.get("what"):
            out.append(s["what"] + ".\n")
        st = s.get("status")
        if st == "not_available":
            out.append(f"**Not available.** {s.get('reason', '')}.\n")
            continue
        if st == "skipped":
            out.append("Skipped in this run (--only).\n")
            continue
        if st == "failed":
            out.append("**Failed:**\n\n```\n" + s.get("error", "") + "\n```\n")
            continue
        g, c = s.get("gateway", {}), s.get("ceiling") or {}
        name = s["name"]
        if name in WRK_SCENARIOS:
            out.append(f"- gateway: {g['requests']:,} requests in {g['duration_s']} s on {g['connections']} "
                       f"connections ({g['wrk_runs']} wrk); errors {g['errors']['non2xx']} non-2xx, "
                       f"{g['errors']['socket']} socket; {_cpu(g)}")
            out.append(f"- ceiling: {c['requests']:,} requests, {_f(c['rps'])} req/s, p50 "
                       f"{c['latency_ms']['p50']} ms, p99 {c['latency_ms']['p99']} ms, "
                       f"{_f(c.get('cpu_us_per_req'))} µs/request; {_cpu(c)}")
            rounds = [(side, m.get("rounds")) for side, m in (("gateway", g), ("ceiling", c)) if m.get("rounds")]
            if rounds and len(rounds[0][1]) > 1:
                out.append("- req/s per round (best kept): " + "; ".join(
                    f"{side} " + ", ".join(_f(x["rps"]) for x in rs) for side, rs in rounds))
            if g.get("redis_cpu_s") is not None:
                out.append(f"- redis-server CPU during the gateway run: {g['redis_cpu_s']} s")
            if isinstance(s.get("function_runs"), int):
                out.append(f"- handler runs counted by /metrics: {s['function_runs']:,}")
            if s.get("cache"):
                cc = s["cache"]
                out.append(f"- cache outcomes (/metrics deltas): {cc['hit']:,} hit, {cc['miss']:,} miss, "
                           f"{cc['bypass']:,} bypass")
            if name in UPSTREAM_SCENARIOS:
                up, b = s.get("upstream", {}), s.get("bundles", {})
                calls = up.get("calls") or {}
                out.append(f"- upstream service (second ceiling) CPU in the kept gateway round: "
                           f"{g.get('upstream_cpu_s')} s, {_f(g.get('upstream_cpu_us_per_req'))} µs per bundle"
                           + (f", {_f(up.get('upstream_cpu_us_per_call'))} µs per call"
                              if up.get("upstream_cpu_us_per_call") else "")
                           + f"; gateway + upstream {_f(g.get('cpu_us_per_req_with_upstream'))} µs per bundle "
                           f"({_ratio(s['ratio'].get('cpu_us_per_req_with_upstream'))} the ceiling's one GET)")
                out.append(f"- upstream calls (/metrics deltas, all rounds): "
                           + ", ".join(f"{v:,} {k}" for k, v in calls.items() if v is not None)
                           + f"; {_f(up.get('calls_per_request'), 3)} per answer; retries {up.get('retries')}; "
                           f"circuit breaker opened {up.get('breaker_opened')} times (state at the end: "
                           f"{up.get('breaker_state_end')})")
                out.append(f"- upstream connections: {up.get('connections_opened')} opened during the scenario, "
                           f"{up.get('connections_opened_since_start')} since the gateway started, at most "
                           f"{up.get('connections_established_max')} open at once (pool bound "
                           f"{up.get('pool_bound')})")
                out.append(f"- answers checked by the wrk script: {b.get('complete', 0):,} complete of "
                           f"{b.get('requests', 0):,} ({b.get('incomplete')} incomplete, {b.get('errors')} errors); "
                           f"first fetch X-Mizan-Cache {b.get('first_fetch_cache')}"
                           + (f", second {b.get('second_fetch_cache')}" if b.get("second_fetch_cache") else ""))
                if s.get("function_runs"):
                    out.append(f"- function runs (/metrics): {s['function_runs']}")
                if s.get("sample_bundle") is not None:
                    out.append("- one bundle: `" + json.dumps(s["sample_bundle"], separators=(",", ":")) + "`")
            if name in ("mixed", "mixed_redis_cluster"):
                for pi in g.get("per_instance", []):
                    out.append(f"- instance {pi['instance']}: {_f(pi['rps'])} req/s ({pi['reads']:,} reads, "
                               f"{pi['writes']:,} writes), p50 {pi['latency_ms']['p50']} ms, p99 "
                               f"{pi['latency_ms']['p99']} ms")
                ck = s.get("checker", {})
                out.append(f"- read-after-write checker: {ck.get('reads_ok', 0):,} write-then-read pairs "
                           f"({ck.get('chains')} chains, {_f(ck.get('pairs_per_s'))} pairs/s), "
                           f"{ck.get('violations')} violations, {ck.get('write_errors')} write errors, "
                           f"{ck.get('read_errors')} read errors; reads answered {ck.get('read_cache')}")
                for v in ck.get("violation_samples", []):
                    out.append(f"  - stale read: {v}")
        elif name == "miss_storm_fleet":
            for label, what in (("lock", "with the fill lock"), ("nolock", "with cache.fill_lock false")):
                m = s.get(label, {})
                out.append(f"- {what}: {m.get('computations')} computations for {s.get('rounds')} bundles "
                           f"({m.get('per_bundle')} per bundle; per instance {m.get('per_instance')}); "
                           f"{m.get('requests')} requests, statuses {m.get('statuses')}, X-Mizan-Cache "
                           f"{m.get('cache')}, fill locks {m.get('fill_locks')}, {m.get('elapsed_s')} s")
        elif name == "ctx_fanout":
            out.append(f"- gateway: {g['requests']:,} requests at {g['rate']}/s, p50 {g['latency_ms']['p50']} ms, "
                       f"p99 {g['latency_ms']['p99']} ms (ideal 20 ms, sequential 80 ms); errors "
                       f"{g['errors']['total']}; server CPU {g.get('server_cpu_cores')} cores")
            out.append(f"- ceiling at the same rate (the client's own floor): p50 {c['latency_ms']['p50']} ms, "
                       f"p99 {c['latency_ms']['p99']} ms")
            out.append(f"- handler runs: {s.get('function_runs')}")
        elif name == "sse_fanout":
            lr, lq = g.get("latency_from_response_ms", {}), g.get("latency_from_request_ms", {})
            out.append(f"- {g.get('connected')}/{g.get('clients')} streams connected, {g.get('closed_early')} "
                       f"closed early; {g.get('mutations_ok')} mutations acknowledged "
                       f"({g.get('mutations_failed')} failed)")
            out.append(f"- {g.get('events_received'):,} of {g.get('events_expected'):,} events delivered, "
                       f"{g.get('events_missing')} missing, {g.get('duplicates')} duplicates; "
                       f"{g.get('before_response'):,} arrived before the mutation's own response")
            out.append(f"- from the mutation's response: p50 {lr.get('p50')} ms, p90 {lr.get('p90')} ms, p99 "
                       f"{lr.get('p99')} ms, p99.9 {lr.get('p99_9')} ms, max {lr.get('max')} ms")
            out.append(f"- from the mutation's scheduled send: p50 {lq.get('p50')} ms, p99 {lq.get('p99')} ms, "
                       f"max {lq.get('max')} ms")
            out.append(f"- server CPU {g.get('server_cpu_cores')} cores (both instances), peak RSS "
                       f"{_mib(g.get('peak_rss_bytes'))} MiB")
        elif name == "gzip_bundle":
            p, cpu, b = s.get("plain", {}), s.get("cpu_us_per_req", {}), s.get("body_bytes", {})
            out.append(f"- body: {b.get('plain', 0):,} bytes plain, {b.get('gzip', 0):,} gzip-compressed "
                       f"(level {s.get('compress_level')}): {_ratio(s.get('gzip_ratio'))} smaller")
            out.append(f"- on the wire (wrk's bytes read per answer, headers included): "
                       f"{_f(p.get('wire_bytes_per_req'), 0)} plain, {_f(g.get('wire_bytes_per_req'), 0)} gzip "
                       f"({_ratio(s.get('wire_ratio'))} fewer)")
            out.append(f"- gateway CPU per answer: {_f(cpu.get('plain'))} µs plain, {_f(cpu.get('gzip'))} µs gzip "
                       f"(+{_f(cpu.get('gzip_extra'))} µs to compress)")
            out.append(f"- plain: {p.get('requests', 0):,} requests, {_f(p.get('rps'))} req/s, p50 "
                       f"{(p.get('latency_ms') or {}).get('p50')} ms; {_cpu(p) if p else ''}")
            out.append(f"- gzip: {g['requests']:,} requests, {_f(g['rps'])} req/s, p50 {g['latency_ms']['p50']} ms; "
                       f"{_cpu(g)}")
        elif name == "connections":
            out.append("| connections | gateway RSS MiB | gateway B/conn | gateway fds | ceiling RSS MiB "
                       "| ceiling B/conn | ratio |")
            out.append("|---:|---:|---:|---:|---:|---:|---:|")
            out.append(f"| 0 | {_mib(g['baseline']['rss_bytes'])} | – | {g['baseline']['fds']} "
                       f"| {_mib(c['baseline']['rss_bytes'])} | – | – |")
            for gs, cs in zip(g["stages"], c["stages"]):
                ratio = (gs["bytes_per_connection"] / cs["bytes_per_connection"]
                         if gs.get("bytes_per_connection") and cs.get("bytes_per_connection") else None)
                out.append(f"| {gs['established']:,}/{gs['connections']:,} | {_mib(gs['rss_bytes'])} "
                           f"| {_f(gs['bytes_per_connection'], 0)} | {gs['server_fds']} | {_mib(cs['rss_bytes'])} "
                           f"| {_f(cs['bytes_per_connection'], 0)} | {_ratio(ratio)} |")
        out.append("")
    return "\n".join(out)


def markdown(rep, base, plots_ok):
    name = os.path.basename(base)
    m, pin, st, noise = rep["machine"], rep["pinning"], rep["settings"], rep["noise"]
    fc = noise.get("foreign_cpu_cores", {})
    git = rep.get("git", {})
    sanitized = rep["binaries"].get("sanitized")
    lines = [
        f"# Mizan bench: {rep['set']} set, {rep['date']}",
        "",
        f"Commit `{(git.get('commit') or 'unknown')[:12]}`{' (work tree with uncommitted changes)' if git.get('dirty') else ''}, "
        f"{rep['binaries']['build']} build of `mizand`"
        f"{' **with sanitizers: the numbers mean nothing, this run only proves the harness works**' if sanitized else ''}. "
        f"{m.get('cpus')} CPUs ({m.get('model')}), {m.get('memory_gib')} GiB, Linux {m.get('kernel')}. "
        f"Run took {rep.get('wall_s')} s.",
        "",
        f"**Pinning:** {pin['note']}. Gateways and the ceiling run {st['io_threads']} I/O thread(s) "
        f"(gateways: {st['workers']} workers); wrk runs {st['wrk_threads']} thread(s) and "
        f"{st['connections']} connections, {st['duration_s']} s per run.",
        "",
        "**Noise:** this machine is shared (other builds and test suites may run at the same time), so absolute "
        "numbers move from run to run. Every gateway figure is therefore set against the ceiling server "
        "measured with the same load, the same threads and the same pinning minutes apart in the same run: "
        "read the ratios, not the absolute values. Load average "
        f"{noise.get('loadavg_start')} at the start, {noise.get('loadavg_end')} at the end; CPU used by "
        f"processes outside this run during the measurements: mean {fc.get('mean', '–')} cores, max "
        f"{fc.get('max', '–')} cores. Under such contention the kernel shares the server CPU between threads, "
        "so the gateway (more threads) gets a larger share than the ceiling and its req/s ratio comes out "
        "higher than on a quiet machine; the CPU µs/request ratio has no such bias.",
        "",
        "## Summary",
        "",
        "Ratio columns: gateway ÷ ceiling. Throughput ratio 0.40× means the gateway serves 40 % of what a bare "
        "evhttp + jansson server does on the same cores; latency and CPU ratios above 1 are the gateway's "
        "extra cost. The CPU µs/request ratio is the figure least moved by other work on the machine: it "
        "counts only the CPU time the server processes themselves got, whereas req/s and latency also "
        "depend on how much of the server CPU other processes took meanwhile. Errors = non-2xx responses + "
        "socket errors. Peak RSS is VmHWM of the gateway process (reset before each run); cache hits come "
        "from /metrics deltas.",
        "",
        summary_table(rep),
        "",
        "Rows that are not plain load runs: `ctx_fanout` is driven open-loop at a fixed rate and its p50 is set "
        "against the 20 ms ideal (80 ms if the four functions ran one after another); `sse_fanout`'s latency "
        "columns are event delivery measured from the mutation's response; `connections` gives RSS bytes per "
        "idle connection, gateway against ceiling; `mixed` reports, for each percentile, the worse of its two "
        "instances; the `upstream_bundle` rows set one context of four upstream functions (TTL 0: four HTTP "
        "calls per request; `_cached`: a cache hit) against the ceiling answering one GET, and their CPU "
        "µs/req is the gateway's alone (the upstream service, on the same server CPU, is in the table below).",
        "",
    ]
    ut = upstream_table(rep)
    if ut:
        lines += [
            "## Upstream functions",
            "",
            "A context bundling four upstream functions, each a GET on a second ceiling server (the upstream "
            "service: the least an HTTP JSON server can do, so it is never the bottleneck), pinned to the server "
            "CPU with the gateway: the bundle's req/s is therefore what one server CPU gives for the gateway "
            "plus four upstream answers, set against the ceiling answering one GET directly in the same run. "
            "CPU per bundle is split between the gateway and the upstream service; \"both ÷ ceiling\" sets "
            "their sum against the ceiling's CPU for one GET: the upstream service's four GETs alone make about "
            "4× of it, so what lies above is the gateway's front request and its four client-side calls. "
            "Connections come from the gateway's /metrics "
            "(`mizan_upstream_connections_opened_total`) and, at most open at once, from /proc/net/tcp after "
            "each gateway round. Every answer of every gateway round is checked by the wrk script: status 200, "
            "four results, each the upstream's answer to its own path, and an empty `errors` object.",
            "",
            ut,
            "",
        ]
    lines += [
        "## Checks",
        "",
        _checks(rep),
        "",
    ]
    notes = _bound_notes(rep)
    if notes:
        lines += ["## Runs bound by the load generator", ""] + notes + [""]
    if rep.get("sanitizer_reports"):
        lines += ["## Sanitizer reports in server logs", "", "```"] + rep["sanitizer_reports"] + ["```", ""]
    lines += ["## Plots", ""]
    if plots_ok:
        lines += [f"![throughput]({name}-throughput.png)", "", f"![latency]({name}-latency.png)", ""]
    else:
        lines += ["(gnuplot not available: no plots were drawn)", ""]
    lines += ["## Scenarios", "", _details(rep)]
    return "\n".join(lines) + "\n"


def _gnuplot(script, workdir, output):
    """
    Runs a gnuplot script that writes output (an absolute path) with the
    pngcairo terminal, falling back to the gd png terminal. True when a PNG
    was written.
    """
    gp = shutil.which("gnuplot")
    if gp is None:
        return False
    for term in ("pngcairo size 1100,600 font 'DejaVu Sans,10'", "png size 1100,600"):
        if os.path.exists(output):
            os.unlink(output)
        r = subprocess.run([gp], input=script.replace("@TERM@", term).encode(), capture_output=True,
                           cwd=workdir, timeout=60)
        if r.returncode == 0 and os.path.exists(output) and os.path.getsize(output) > 0:
            return True
    sys.stderr.write(f"gnuplot failed: {r.stderr.decode(errors='replace')[-500:]}\n")
    return False


def _two_lines(name):
    """A long scenario name broken at its middle-most underscore, for an x-axis label."""
    if len(name) <= 14 or "_" not in name:
        return name
    cuts = [i for i, ch in enumerate(name) if ch == "_"]
    i = min(cuts, key=lambda k: abs(k - len(name) / 2))
    return name[:i] + "_\\n" + name[i + 1:]


# Line colours of the latency plot, one per scenario (gnuplot's own eight repeat beyond eight series).
LINE_COLOURS = ["#9400d3", "#009e73", "#56b4e9", "#e69f00", "#f0e442", "#0072b2", "#e51e10", "#000000",
                "#8c564b", "#ff7f0e", "#7f7f7f", "#17becf"]


def draw_plots(rep, base):
    base = os.path.abspath(base)
    by = _by_name(rep)
    names = [n for n in WRK_SCENARIOS if by.get(n, {}).get("status") == "ok"]
    lat_names = names + (["ctx_fanout"] if by.get("ctx_fanout", {}).get("status") == "ok" else [])
    if not names:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "tp.dat"), "w") as f:
            for n in names:
                s = by[n]
                label = _two_lines(n)
                if s["ratio"]["rps"] is not None:
                    label += f"\\n({s['ratio']['rps']:.2f}x)"
                f.write(f"\"{label}\" {s['gateway']['rps']} {s['ceiling']['rps']}\n")
        keys = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99_9", "p99.9")]
        with open(os.path.join(tmp, "lat.dat"), "w") as f:
            f.write("pct " + " ".join(f"\"{n}\"" for n in lat_names) + " " +
                    " ".join(f"\"{n}\"" for n in lat_names) + "\n")
            for k, label in keys:
                gv = [max(by[n]["gateway"]["latency_ms"][k], 0.001) for n in lat_names]
                cv = [max(by[n]["ceiling"]["latency_ms"][k], 0.001) for n in lat_names]
                f.write(f"{label} " + " ".join(str(v) for v in gv + cv) + "\n")
        n = len(lat_names)
        allv = [by[x][side]["latency_ms"][k] for x in lat_names for side in ("gateway", "ceiling")
                for k, _ in keys if by[x][side]["latency_ms"][k]]
        lo = 10 ** math.floor(math.log10(max(min(allv), 0.001))) if allv else 0.01
        hi = 10 ** math.ceil(math.log10(max(allv))) if allv else 1000
        colours = "\n".join(f"set linetype {i + 1} lc rgb '{c}'" for i, c in enumerate(LINE_COLOURS))
        tp = f"""
set terminal @TERM@
set termoption noenhanced
set output '{base}-throughput.png'
set title "Throughput, gateway vs ceiling (same load, same run; ratio under each name)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel "requests/s"
set yrange [0:*]
set grid ytics
set key top right
set xtics font ",9"
set bmargin 6
set xrange [-0.6:{len(names) - 0.4}]
plot '{tmp}/tp.dat' using 2:xtic(1) title 'gateway' lc rgb '#2a6fb0', \\
     '' using 3 title 'ceiling (evhttp + jansson)' lc rgb '#b0b0b0'
"""
        lt = f"""
set terminal @TERM@
set termoption noenhanced
set output '{base}-latency.png'
{colours}
set multiplot layout 1,2 title "Latency percentiles (ms, log scale; same scale on both sides)"
set logscale y
set yrange [{lo}:{hi}]
set grid ytics mytics
set xrange [-0.3:3.3]
set key top left font ",8"
set ylabel "ms"
set title "gateway"
plot for [i=2:{n + 1}] '{tmp}/lat.dat' using 0:i:xtic(1) with linespoints lw 2 pt 7 lt (i-1) \\
     title columnheader(i)
set title "ceiling (same load)"
unset ylabel
plot for [i={n + 2}:{2 * n + 1}] '{tmp}/lat.dat' using 0:i:xtic(1) with linespoints lw 2 pt 7 lt (i-{n + 1}) \\
     title columnheader(i)
unset multiplot
"""
        ok = _gnuplot(tp, tmp, f"{base}-throughput.png")
        ok = _gnuplot(lt, tmp, f"{base}-latency.png") and ok
    return ok


def write_all(rep, base, plots=True):
    ok = draw_plots(rep, base) if plots else False
    with open(base + ".md", "w") as f:
        f.write(markdown(rep, base, ok))
    return ok


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].endswith(".json"):
        sys.stderr.write("usage: report.py REPORT.json\n")
        sys.exit(2)
    with open(sys.argv[1]) as f:
        r = json.load(f)
    write_all(r, sys.argv[1][:-len(".json")])
    print(summary_table(r))
    if upstream_table(r):
        print("\n" + upstream_table(r))
