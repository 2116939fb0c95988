#!/usr/bin/env bash
# stress_gateway.sh - the whole gateway under ThreadSanitizer: starts a
# TSan build of mizand serving the blog module (built with TSan too) and
# drives every place where threads meet, then stops it with SIGTERM while
# requests are still in flight.
#
#   stress_gateway.sh MIZAND MODULE_DIR [embedded|abort|redis]
#
# Event streams connect first and stay connected; then these phases run
# MIZAN_STRESS_REPEAT times (default 2), each bounded (every curl has a
# --max-time, every wait a limit):
#   calls       concurrent calls of every kind (results, errors, 404s, 422s)
#               and the small endpoints (schema, metrics, health)
#   coalescing  after each mutation of a post, bursts of concurrent first
#               fetches of the same context (one computation, many
#               waiters, some of whose clients give up mid-flight)
#   events      mutations while event-stream clients are connected
#   deadlines   handlers sleeping past function_timeout_ms, in calls and
#               in a context's fan-out
#   saturation  more concurrent work than workers + queue_size
#   hang-ups    clients that disconnect while their functions run
# and finally
#   shutdown    SIGTERM with calls, contexts and streams in flight
#
# Modes:
# embedded: in-process cache, a graceful drain at the end.
# abort: the same with a drain budget (150 ms) shorter than the work in
# flight, so the shutdown answers 503 while jobs are still out.
# redis: the cache is a redis-server started here, killed during
# the events phase and restarted, so the reconnect paths run too; at the
# end it is frozen (SIGSTOP) with lookups in flight, and its timeout
# (3 s) is longer than the drain budget (150 ms) plus the 1 s the gateway
# waits after stopping its workers, so the shutdown meets lookups still
# waiting on Redis.
#
# Fails (exit 1) when the gateway's stderr holds a ThreadSanitizer report
# (each report is printed), when it does not exit 0 after SIGTERM within
# 60 s, when a request in flight at SIGTERM gets no HTTP response at all
# (docs/configuration.md: what the drain budget cuts off is answered 503),
# or when a phase shows the gateway not serving at all. Cleans up
# every process it started and its temporary directory, also on failure
# (MIZAN_TEST_KEEP_TMP=1 keeps the directory).
set -u -o pipefail

USAGE="usage: stress_gateway.sh MIZAND MODULE_DIR [embedded|abort|redis]"
MIZAND=${1:?$USAGE}
MODULE_DIR=${2:?$USAGE}
MODE=${3:-embedded}
case "$MODE" in embedded | abort | redis) ;; *) echo "stress_gateway: $USAGE" >&2; exit 2 ;; esac
REPEAT=${MIZAN_STRESS_REPEAT:-2}
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "stress_gateway: MIZAN_STRESS_REPEAT must be a positive number" >&2; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mizan-stress.XXXXXX")
GW_PID=""
REDIS_PID=""
REDIS_PORT=""
BG_PIDS=()
PROBLEMS=()
export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 history_size=7 exitcode=66 ${TSAN_OPTIONS:-}"

say() { echo "stress_gateway: $*"; }
problem() {
    say "PROBLEM: $*"
    PROBLEMS+=("$*")
}

# Ends only what this script started, by process id.
cleanup() {
    for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    [ -n "$GW_PID" ] && kill -KILL "$GW_PID" 2>/dev/null
    [ -n "$REDIS_PID" ] && kill -KILL "$REDIS_PID" 2>/dev/null
    wait 2>/dev/null
    if [ "${MIZAN_TEST_KEEP_TMP:-0}" = 1 ]; then
        say "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v curl >/dev/null || { say "FAIL: curl is required (Debian package curl)"; exit 1; }
[ -x "$MIZAND" ] || { say "FAIL: no mizand at $MIZAND (build first)"; exit 1; }
[ -f "$MODULE_DIR/blog.so" ] || { say "FAIL: no blog.so in $MODULE_DIR (build first)"; exit 1; }
# The config lives in the temporary directory: make both paths absolute.
MIZAND=$(cd "$(dirname "$MIZAND")" && pwd)/$(basename "$MIZAND")
MODULE_DIR=$(cd "$MODULE_DIR" && pwd)

# ---- redis (redis mode) ----------------------------------------------------

port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# try_redis: starts redis-server on REDIS_PORT; 0 once it answers, 1 when it
# exits first (the port was taken since it was probed) or never answers.
try_redis() {
    "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --logfile "$TMP/redis.log" &
    REDIS_PID=$!
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
        kill -0 "$REDIS_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

start_redis() {
    try_redis && return 0
    say "FAIL: redis-server did not start on port $REDIS_PORT; its log:"
    cat "$TMP/redis.log" >&2 2>/dev/null
    exit 1
}

stop_redis() {
    kill -KILL "$REDIS_PID" 2>/dev/null
    wait "$REDIS_PID" 2>/dev/null
    REDIS_PID=""
}

REDIS_URL=""
# The embedded run drains gracefully; the others have a drain budget
# shorter than the work in flight (and, with Redis, than a Redis round trip
# can take), so that the shutdown also cuts off requests (503) while jobs
# and Redis lookups are still out.
DRAIN_MS=3000
REDIS_TIMEOUT_MS=200
[ "$MODE" = abort ] && DRAIN_MS=150
if [ "$MODE" = redis ]; then
    DRAIN_MS=150
    REDIS_TIMEOUT_MS=3000
    REDIS_SERVER=$(command -v redis-server) || { say "FAIL: redis mode needs redis-server (Debian package redis-server)"; exit 1; }
    command -v redis-cli >/dev/null || { say "FAIL: redis mode needs redis-cli (Debian package redis-tools)"; exit 1; }
    # A free port can be taken between the probe and the bind: then try another.
    started=""
    for _ in $(seq 5); do
        for _ in $(seq 50); do
            REDIS_PORT=$((20000 + RANDOM % 40000))
            port_is_free "$REDIS_PORT" && break
        done
        if try_redis; then
            started=1
            break
        fi
        kill -KILL "$REDIS_PID" 2>/dev/null
        wait "$REDIS_PID" 2>/dev/null
    done
    [ -n "$started" ] || { say "FAIL: redis-server did not start on 5 free ports; its log:"; cat "$TMP/redis.log" >&2; exit 1; }
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
fi

# ---- the gateway -----------------------------------------------------------

cat >"$TMP/mizan.json" <<EOF
{
  "listen": "127.0.0.1:0",
  "io_threads": 3,
  "workers": 4,
  "queue_size": 16,
  "function_timeout_ms": 400,
  "drain_timeout_ms": $DRAIN_MS,
  "sse_heartbeat_s": 1,
  "log_level": "info",
  "token": {"secret": "stress-token-secret-0123456789abcdef"},
  "cache": {"secret": "stress-cache-secret-0123456789abcdef", "redis_url": "$REDIS_URL", "timeout_ms": $REDIS_TIMEOUT_MS},
  "module_dir": "$MODULE_DIR",
  "modules": [{"name": "blog", "config": {"db": "$TMP/blog.db"}}]
}
EOF

# Inherited overrides must not change what this test runs.
GW_ENV=(env -u MIZAN_LISTEN -u MIZAN_WORKERS -u MIZAN_TOKEN_SECRET -u MIZAN_CACHE_SECRET -u MIZAN_REDIS_URL
    -u MIZAN_BLOG_DB)

"${GW_ENV[@]}" "$MIZAND" --config "$TMP/mizan.json" 2>"$TMP/gateway.err" &
GW_PID=$!
PORT=""
for _ in $(seq 600); do
    PORT=$(grep -m1 '"msg":"listening"' "$TMP/gateway.err" 2>/dev/null | sed -n 's/.*"addr":"[^"]*:\([0-9][0-9]*\)".*/\1/p')
    [ -n "$PORT" ] && break
    kill -0 "$GW_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$PORT" ]; then
    say "FAIL: the gateway did not start; its output:"
    cat "$TMP/gateway.err"
    exit 1
fi
BASE="http://127.0.0.1:$PORT"
API="$BASE/api/mizan"
say "gateway ($MODE mode) listening on port $PORT"

ALICE=$("${GW_ENV[@]}" "$MIZAND" token --config "$TMP/mizan.json" --sub alice 2>>"$TMP/token.err") ||
    { say "FAIL: cannot mint a token"; cat "$TMP/token.err"; exit 1; }

# ---- load: batches of concurrent requests through one curl -Z ---------------

# Quotes a value for a curl config file.
q() {
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

# add_get FILE PATH [MAX_TIME] [HEADER]
add_get() {
    {
        [ -s "$1" ] && echo next
        echo "url = $(q "$BASE$2")"
        echo "max-time = ${3:-20}"
        [ -n "${4:-}" ] && echo "header = $(q "$4")"
        echo 'output = "/dev/null"'
        echo 'write-out = "%{http_code} %{exitcode}\n"'
    } >>"$1"
}

# add_call FILE BODY [MAX_TIME] [HEADER]
add_call() {
    {
        [ -s "$1" ] && echo next
        echo "url = $(q "$API/call/")"
        echo 'request = "POST"'
        echo 'header = "Content-Type: application/json"'
        [ -n "${4:-}" ] && echo "header = $(q "$4")"
        echo "data = $(q "$2")"
        echo "max-time = ${3:-20}"
        echo 'output = "/dev/null"'
        echo 'write-out = "%{http_code} %{exitcode}\n"'
    } >>"$1"
}

# run FILE PARALLEL: runs every transfer of FILE, PARALLEL at once; prints one
# line per transfer: the HTTP status (000: none) and curl's exit code.
run() {
    curl -s -Z --parallel-immediate --parallel-max "$2" -K "$1" 2>/dev/null
    rm -f "$1"
}

# count CODE FILE: how many transfers got HTTP status CODE.
count() { grep -c "^$1 " "$2" 2>/dev/null || true; }

# unanswered FILE: transfers whose connection the gateway closed without a
# response (curl 52: empty reply, 56: connection reset), as opposed to
# client-side time-outs (28) or connections refused after shutdown (7).
unanswered() { awk '$1 == "000" && ($2 == 52 || $2 == 56)' "$1" | wc -l; }

summary() { awk '{print $1}' "$1" | sort | uniq -c | awk '{printf "%s x%s  ", $2, $1}'; }

AUTH="Authorization: Bearer $ALICE"

cfg="$TMP/cfg"

# ---- phase: calls -----------------------------------------------------------------
phase_calls() {
    say "phase calls"
    for i in $(seq 40); do
        add_call "$cfg" "{\"function\":\"add\",\"args\":{\"a\":$i,\"b\":$((i * 7))}}"
        add_call "$cfg" "{\"function\":\"echo\",\"args\":{\"value\":{\"n\":$i,\"list\":[1,2,{\"x\":\"\\u00e9\"}]}}}"
        add_call "$cfg" '{"function":"ping"}'
        add_call "$cfg" '{"function":"boom"}'
        add_call "$cfg" '{"function":"add","args":{"a":"two"}}'
        add_call "$cfg" "{\"function\":\"get_post\",\"args\":{\"post_id\":$((i % 5 + 1))}}"
        add_call "$cfg" '{"function":"no_such_function","args":{}}'
        add_call "$cfg" '{"function":"whoami"}' 20 "$AUTH"
        add_get "$cfg" "/api/mizan/ctx/me/" 20 "$AUTH"
        [ $((i % 8)) = 0 ] && { add_get "$cfg" /api/mizan/schema/; add_get "$cfg" /metrics; add_get "$cfg" /readyz; add_get "$cfg" /healthz; }
    done
    run "$cfg" 24 >"$TMP/calls.codes"
    say "  $(summary "$TMP/calls.codes")"
    [ "$(count 200 "$TMP/calls.codes")" -ge 100 ] || problem "calls: fewer than 100 answers of 200"
}

# ---- phase: coalescing ------------------------------------------------------------
phase_coalescing() {
    say "phase coalescing"
    : >"$TMP/mutations.codes"
    : >"$TMP/coalesce.codes"
    for r in $(seq 12); do
        post=$((r % 3 + 1))
        add_call "$cfg" "{\"function\":\"update_post\",\"args\":{\"post_id\":$post,\"title\":\"round $r\"}}" 20 "$AUTH"
        run "$cfg" 1 >>"$TMP/mutations.codes"
        for i in $(seq 40); do
            if [ $((i % 10)) = 0 ]; then
                add_get "$cfg" "/api/mizan/ctx/post/?post_id=$post" 0.05 # gives up mid-flight
            else
                add_get "$cfg" "/api/mizan/ctx/post/?post_id=$post"
            fi
        done
        for i in $(seq 8); do add_get "$cfg" /api/mizan/ctx/feed/; done
        run "$cfg" 48 >>"$TMP/coalesce.codes"
    done
    say "  mutations: $(summary "$TMP/mutations.codes")"
    say "  fetches: $(summary "$TMP/coalesce.codes")"
    [ "$(count 200 "$TMP/coalesce.codes")" -ge 100 ] || problem "coalescing: fewer than 100 answers of 200"
    coalesced=$(curl -s --max-time 20 "$BASE/metrics" | sed -n 's/^mizan_cache_coalesced_total \([0-9]*\).*/\1/p')
    say "  mizan_cache_coalesced_total ${coalesced:-?} (requests that joined a computation in progress)"
}

# ---- phase: events ----------------------------------------------------------------
phase_events() {
    say "phase events"
    [ "$MODE" = redis ] && { say "  killing redis-server"; stop_redis; }
    for i in $(seq 30); do
        add_call "$cfg" "{\"function\":\"create_post\",\"args\":{\"title\":\"stress $i\",\"body\":\"b\",\"published\":$([ $((i % 2)) = 0 ] && echo true || echo false)}}" 20 "$AUTH"
        add_call "$cfg" "{\"function\":\"add_comment\",\"args\":{\"post_id\":$((i % 3 + 1)),\"text\":\"c $i\"}}" 20 "$AUTH"
        add_call "$cfg" "{\"function\":\"update_post\",\"args\":{\"post_id\":1,\"body\":\"v$i\"}}" 20 "$AUTH"
        add_get "$cfg" "/api/mizan/ctx/post/?post_id=$((i % 3 + 1))"
        add_get "$cfg" /api/mizan/ctx/feed/
    done
    run "$cfg" 16 >"$TMP/events.codes"
    if [ "$MODE" = redis ]; then
        say "  restarting redis-server"
        start_redis
        sleep 2
        for i in $(seq 10); do
            add_call "$cfg" "{\"function\":\"add_comment\",\"args\":{\"post_id\":2,\"text\":\"after restart $i\"}}" 20 "$AUTH"
            add_get "$cfg" "/api/mizan/ctx/post/?post_id=2"
        done
        run "$cfg" 8 >>"$TMP/events.codes"
    fi
    sleep 1
    say "  $(summary "$TMP/events.codes")"
    [ "$(count 200 "$TMP/events.codes")" -ge 30 ] || problem "events: fewer than 30 answers of 200"
    got=0
    for out in "$TMP"/sse.*.out; do grep -q '^event: invalidate' "$out" && got=$((got + 1)); done
    say "  $got of 4 event streams received invalidations"
    [ "$got" -ge 1 ] || problem "events: no event stream received an invalidation"
}

# ---- phase: deadlines -------------------------------------------------------------
phase_deadlines() {
    say "phase deadlines"
    for i in $(seq 16); do add_call "$cfg" '{"function":"sleep","args":{"ms":1500}}'; done
    for i in $(seq 6); do add_get "$cfg" "/api/mizan/ctx/fanout/?ms=1000"; done
    for i in $(seq 10); do add_call "$cfg" '{"function":"sleep","args":{"ms":10}}'; done
    run "$cfg" 40 >"$TMP/deadlines.codes"
    say "  $(summary "$TMP/deadlines.codes")"
    [ "$(count 504 "$TMP/deadlines.codes")" -ge 1 ] || problem "deadlines: no call answered 504 past its deadline"
}

# ---- phase: saturation ------------------------------------------------------------
phase_saturation() {
    say "phase saturation"
    for i in $(seq 60); do add_call "$cfg" '{"function":"sleep","args":{"ms":300}}'; done
    for i in $(seq 10); do add_get "$cfg" "/api/mizan/ctx/fanout/?ms=300"; done
    run "$cfg" 70 >"$TMP/saturation.codes"
    say "  $(summary "$TMP/saturation.codes")"
    [ "$(count 503 "$TMP/saturation.codes")" -ge 1 ] || say "  (no 503 this time: the queue never overflowed)"
}

# ---- phase: hang-ups --------------------------------------------------------------
phase_hangups() {
    say "phase hang-ups"
    for i in $(seq 20); do add_call "$cfg" '{"function":"sleep","args":{"ms":300}}' 0.1; done
    for i in $(seq 8); do add_get "$cfg" "/api/mizan/ctx/fanout/?ms=300" 0.1; done
    for i in $(seq 8); do add_get "$cfg" "/api/mizan/ctx/post/?post_id=$((i % 3 + 1))" 0.02; done
    run "$cfg" 36 >"$TMP/hangups.codes"
    sleep 1
    say "  $(summary "$TMP/hangups.codes")"
    curl -s --max-time 20 -o /dev/null -w '%{http_code}' "$BASE/healthz" | grep -q 200 ||
        problem "hang-ups: the gateway stopped answering"
}

# Event streams stay connected from here until the shutdown.
for f in "post,feed" "post" "feed,drafts" ""; do
    n=${#BG_PIDS[@]}
    curl -sN --max-time 600 "$API/events/?contexts=$f" >"$TMP/sse.$n.out" 2>/dev/null &
    BG_PIDS+=($!)
done
sleep 1
for round in $(seq "$REPEAT"); do
    say "round $round of $REPEAT"
    phase_calls
    phase_coalescing
    phase_events
    phase_deadlines
    phase_saturation
    phase_hangups
done

# ---- phase: shutdown -------------------------------------------------------------
say "phase shutdown (SIGTERM with requests in flight)"
if [ "$MODE" = redis ]; then
    # Redis stops answering: context lookups are left waiting on it.
    kill -STOP "$REDIS_PID"
    for i in $(seq 12); do add_get "$cfg" "/api/mizan/ctx/post/?post_id=$((i % 5 + 1))"; done
    for i in $(seq 4); do add_get "$cfg" /api/mizan/ctx/feed/; done
fi
for i in $(seq 30); do add_call "$cfg" '{"function":"sleep","args":{"ms":300}}'; done
for i in $(seq 12); do add_get "$cfg" "/api/mizan/ctx/post/?post_id=$((i % 4 + 1))"; done
for i in $(seq 6); do add_get "$cfg" "/api/mizan/ctx/fanout/?ms=250"; done
for i in $(seq 6); do add_call "$cfg" "{\"function\":\"add_comment\",\"args\":{\"post_id\":1,\"text\":\"bye $i\"}}" 20 "$AUTH"; done
run "$cfg" 100 >"$TMP/shutdown.codes" &
load=$!
BG_PIDS+=("$load")
if [ "$MODE" = abort ]; then sleep 0.1; else sleep 0.3; fi
kill -TERM "$GW_PID"
status=""
for _ in $(seq 600); do
    if ! kill -0 "$GW_PID" 2>/dev/null; then
        wait "$GW_PID"
        status=$?
        break
    fi
    sleep 0.1
done
if [ -z "$status" ]; then
    problem "shutdown: the gateway did not exit within 60 s of SIGTERM"
    kill -KILL "$GW_PID" 2>/dev/null
    wait "$GW_PID" 2>/dev/null
fi
GW_PID=""
wait "$load" 2>/dev/null
say "  in flight at SIGTERM: $(summary "$TMP/shutdown.codes")"
# drain_timeout_ms: what is still in flight when the budget is spent is answered 503.
lost=$(unanswered "$TMP/shutdown.codes")
[ "$lost" = 0 ] || problem "shutdown: $lost requests in flight got no HTTP response (connection closed without one)"
[ -n "$status" ] && [ "$status" != 0 ] && problem "shutdown: the gateway exited with status $status (66: race reports)"

# ---- verdict ---------------------------------------------------------------------
reports=$(grep -c '^WARNING: ThreadSanitizer' "$TMP/gateway.err" || true)
if [ "$reports" -gt 0 ]; then
    problem "$reports ThreadSanitizer report(s) in the gateway's output"
    say "ThreadSanitizer reports:"
    # Every report, from its WARNING line to its closing rule.
    awk '/^WARNING: ThreadSanitizer/ {on = 1} on {print} on && /^SUMMARY: ThreadSanitizer/ {on = 0; print ""}' \
        "$TMP/gateway.err"
fi
if grep -qE 'AddressSanitizer|runtime error:|Segmentation fault|Assertion .* failed' "$TMP/gateway.err"; then
    problem "the gateway's output holds a crash or sanitizer report"
    grep -E -A20 'AddressSanitizer|runtime error:|Segmentation fault|Assertion .* failed' "$TMP/gateway.err" | head -60
fi
if [ ${#PROBLEMS[@]} -gt 0 ]; then
    say "FAIL (${#PROBLEMS[@]} problem(s)):"
    printf '  - %s\n' "${PROBLEMS[@]}"
    exit 1
fi
say "PASS: no data race reported; clean exit after SIGTERM"
exit 0
