#!/usr/bin/env bash
# check_configs.sh - validates the files of deploy/ with the real tools.
#
# Usage: tests/deploy/check_configs.sh CHECK
#   haproxy   haproxy -c on deploy/haproxy/haproxy.cfg (zero warnings) and on
#             deploy/container/haproxy.cfg (only "cannot resolve mizanN")
#   nginx     nginx -t on deploy/nginx/nginx.conf
#   redis     redis-server started on a free loopback port with
#             deploy/redis/redis-cache.conf, its settings read back, the
#             ACL rule of its comment block loaded and exercised; then a
#             node with deploy/redis/redis-cluster.conf (cluster mode)
#   systemd   systemd-analyze verify + security on deploy/systemd/mizan.service
#   json      every example gateway config parses as one JSON object
#   gateway   mizand --check-config loads the example configs (unknown or
#             mistyped fields are errors there), under PR_SET_MDWE, the
#             kernel's form of systemd's MemoryDenyWriteExecute=yes, to show
#             that loading modules survives it
#   yaml      compose.yaml, compose.cluster.yaml and k8s/mizan.yaml parse, and their numbers agree
#             with the gateway config (ports, grace periods, probe paths)
#
# Each check prints what it ran and ends with "deploy CHECK: ok" or a line
# starting "FAIL:". A missing tool is a failure that names the Debian
# package to install; nothing is skipped. Registered with ctest by
# tests/deploy/tests.cmake (label "deploy").
#
# Environment (set by ctest): MIZAN_TEST_BIN (the built mizand),
# MIZAN_TEST_MODULE_DIR (the built modules). Only "gateway" needs them; run
# by hand it falls back to build/mizand and build/modules.

set -u
# haproxy and nginx live in /usr/sbin, which a non-root PATH may lack.
PATH=$PATH:/usr/sbin:/sbin

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEPLOY=$ROOT/deploy
PY=/usr/bin/python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mizan-deploy.XXXXXX")
CHILD=""

cleanup() {
    if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
        kill "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    exit 1
}

# need TOOL PACKAGE: the tool must be on PATH.
need() {
    command -v "$1" >/dev/null 2>&1 ||
        fail "$1 not found: install the Debian package $2 (apt-get install -y $2)"
}

# run CMD...: echoes the command, runs it, keeps its output in $OUT.
run() {
    echo "+ $*"
    OUT=$("$@" 2>&1)
    RC=$?
    [ -n "$OUT" ] && printf '%s\n' "$OUT"
    return $RC
}

# ---------------------------------------------------------------- haproxy
check_haproxy() {
    need haproxy haproxy
    # -dW: zero-warning mode, any warning fails the check.
    run haproxy -dW -c -f "$DEPLOY/haproxy/haproxy.cfg" ||
        fail "deploy/haproxy/haproxy.cfg is not a valid warning-free HAProxy config"
    # The compose variant names servers mizan1..3 that only the container
    # engine's DNS resolves; "init-addr none" makes that a warning, which is
    # the only one allowed.
    run haproxy -c -f "$DEPLOY/container/haproxy.cfg" ||
        fail "deploy/container/haproxy.cfg is not a valid HAProxy config"
    local other
    other=$(printf '%s\n' "$OUT" | grep -F '[WARNING]' | grep -v "could not resolve address 'mizan[123]'")
    [ -z "$other" ] || fail "deploy/container/haproxy.cfg has unexpected warnings: $other"
}

# ------------------------------------------------------------------ nginx
check_nginx() {
    need nginx nginx
    # nginx -t writes the pid file: move it to the temp dir ("pid" is not in
    # the file for that reason). The other paths are Debian's own
    # (/var/log/nginx, /var/lib/nginx), which the package creates.
    run nginx -t -c "$DEPLOY/nginx/nginx.conf" -g "pid $TMP/nginx.pid;" ||
        fail "deploy/nginx/nginx.conf does not pass nginx -t"
    printf '%s\n' "$OUT" | grep -q 'test is successful' || fail "nginx -t did not report success"
    if printf '%s\n' "$OUT" | grep -q '\[warn\]'; then
        fail "nginx -t printed warnings"
    fi
}

# ------------------------------------------------------------------ redis
free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# cli ARGS...: one redis-cli command against the test server, output in $OUT.
cli() {
    OUT=$(redis-cli -h 127.0.0.1 -p "$PORT" "$@" 2>&1)
}

# expect WANT ARGS...: runs cli ARGS and requires output WANT (a glob).
expect() {
    local want=$1
    shift
    cli "$@"
    echo "  redis-cli ${*} -> $OUT"
    # shellcheck disable=SC2053
    [[ $OUT == $want ]] || fail "redis-cli $* answered '$OUT', expected '$want'"
}

check_redis() {
    need redis-server redis-server
    need redis-cli redis-tools
    local conf=$DEPLOY/redis/redis-cache.conf started=0
    for _ in 1 2 3; do
        PORT=$(free_port) || fail "cannot find a free port (python3 missing? install python3)"
        echo "+ redis-server $conf --port $PORT --dir $TMP --daemonize no"
        redis-server "$conf" --port "$PORT" --dir "$TMP" --daemonize no >"$TMP/redis.log" 2>&1 &
        CHILD=$!
        for _ in $(seq 50); do
            kill -0 "$CHILD" 2>/dev/null || break
            cli ping
            [ "$OUT" = PONG ] && { started=1; break; }
            sleep 0.1
        done
        [ $started = 1 ] && break
        # Exited: a config error (fatal, reported below) or a port taken
        # between free_port and the bind (retried).
        wait "$CHILD" 2>/dev/null
        CHILD=""
        grep -q 'Address already in use' "$TMP/redis.log" || break
    done
    if [ $started != 1 ]; then
        cat "$TMP/redis.log"
        fail "redis-server did not start with deploy/redis/redis-cache.conf"
    fi
    echo "  PING -> PONG"
    # The file, not a default, must be what is in force.
    expect $'maxmemory-policy\nvolatile-lru' config get maxmemory-policy
    expect $'maxmemory\n268435456' config get maxmemory
    expect save config get save
    expect $'appendonly\nno' config get appendonly
    expect notify-keyspace-events config get notify-keyspace-events
    expect $'timeout\n0' config get timeout

    # The ACL rule documented in the comment block, with a test password.
    local rule
    rule=$(sed -n 's/^# user mizan on >[^ ]* //p' "$conf")
    [ -n "$rule" ] || fail "no '# user mizan on >PASSWORD ...' line in the ACL comment block"
    # shellcheck disable=SC2086  # the rule is a list of words
    expect OK acl setuser mizan on '>deploy-check-password' $rule
    local as=(--user mizan --pass deploy-check-password --no-auth-warning)
    # What the gateway sends must be allowed...
    expect PONG "${as[@]}" ping
    expect OK "${as[@]}" select 0
    expect OK "${as[@]}" set 'mizan:ctx:{post}:ab12' '{"v":1}' EX 60
    expect '{"v":1}' "${as[@]}" get 'mizan:ctx:{post}:ab12'
    expect 1 "${as[@]}" incr 'mizan:rev:{post}'
    expect 1 "${as[@]}" expire 'mizan:rev:{post}' 120
    expect $'1\n\n{"v":1}' "${as[@]}" mget 'mizan:rev:{post}' 'mizan:rev:{post}:cd34' 'mizan:ctx:{post}:ab12'
    expect 0 "${as[@]}" publish mizan:events '{"type":"invalidate","context":"post"}'
    # The fill lock: SET NX PX, and its release by compare-and-delete (EVAL running GET and EXPIRE 0).
    expect OK "${as[@]}" set 'mizan:lock:{post}:ab12:0:0' tok NX PX 5000
    expect '' "${as[@]}" set 'mizan:lock:{post}:ab12:0:0' other NX PX 5000
    expect 0 "${as[@]}" eval "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], 0) else return 0 end" 1 'mizan:lock:{post}:ab12:0:0' other
    expect 1 "${as[@]}" eval "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], 0) else return 0 end" 1 'mizan:lock:{post}:ab12:0:0' tok
    expect '' "${as[@]}" get 'mizan:lock:{post}:ab12:0:0'
    expect "*can't run this command*" "${as[@]}" eval "return redis.call('DEL', KEYS[1])" 1 'mizan:rev:{post}'
    # ...and what it sends to a Redis Cluster (refused here by the server, not the ACL).
    expect 0 "${as[@]}" wait 0 0
    expect 'ERR*cluster support disabled*' "${as[@]}" cluster slots
    expect 'ERR*cluster support disabled*' "${as[@]}" asking
    expect 'master*' "${as[@]}" role
    echo "  redis-cli subscribe mizan:events (1 s)"
    OUT=$(timeout 1 redis-cli -h 127.0.0.1 -p "$PORT" "${as[@]}" subscribe mizan:events 2>&1)
    [[ $OUT == subscribe*mizan:events*1* ]] || fail "the ACL user cannot SUBSCRIBE mizan:events: $OUT"
    # ...and everything else refused.
    expect 'NOPERM*' "${as[@]}" get other:key
    expect 'NOPERM*' "${as[@]}" set other:key 1
    expect 'NOPERM*' "${as[@]}" publish other-channel x
    expect 'NOPERM*' "${as[@]}" flushall
    expect 'NOPERM*' "${as[@]}" config get maxmemory
    expect 'NOPERM*' "${as[@]}" keys 'mizan:*'
    expect 'NOPERM*' "${as[@]}" del 'mizan:rev:{post}'

    echo "  redis-cli shutdown nosave"
    redis-cli -h 127.0.0.1 -p "$PORT" shutdown nosave >/dev/null 2>&1
    wait "$CHILD"
    local rc=$?
    CHILD=""
    [ $rc = 0 ] || fail "redis-server exited with status $rc after SHUTDOWN NOSAVE"

    # redis-cluster.conf: the same node in cluster mode (its include pointed here).
    local cconf=$TMP/redis-cluster.conf
    sed "s|^include /etc/redis/redis-cache.conf|include $conf|" "$DEPLOY/redis/redis-cluster.conf" >"$cconf"
    grep -q "^include $conf\$" "$cconf" || fail "redis-cluster.conf does not include /etc/redis/redis-cache.conf"
    mkdir -p "$TMP/node"
    started=0
    for _ in 1 2 3; do
        # The cluster bus listens on PORT + 10000: stay below 55536.
        PORT=$((20000 + RANDOM % 30000))
        echo "+ redis-server redis-cluster.conf --port $PORT --dir $TMP/node --daemonize no"
        redis-server "$cconf" --port "$PORT" --dir "$TMP/node" --daemonize no >"$TMP/redis-cluster.log" 2>&1 &
        CHILD=$!
        for _ in $(seq 50); do
            kill -0 "$CHILD" 2>/dev/null || break
            cli ping
            [ "$OUT" = PONG ] && { started=1; break; }
            sleep 0.1
        done
        [ $started = 1 ] && break
        wait "$CHILD" 2>/dev/null
        CHILD=""
        grep -q 'Address already in use' "$TMP/redis-cluster.log" || break
    done
    if [ $started != 1 ]; then
        cat "$TMP/redis-cluster.log"
        fail "redis-server did not start with deploy/redis/redis-cluster.conf"
    fi
    expect $'cluster-enabled\nyes' config get cluster-enabled
    expect $'cluster-node-timeout\n2000' config get cluster-node-timeout
    expect $'maxmemory-policy\nvolatile-lru' config get maxmemory-policy
    expect '*cluster_state:fail*' cluster info
    redis-cli -h 127.0.0.1 -p "$PORT" shutdown nosave >/dev/null 2>&1
    wait "$CHILD"
    rc=$?
    CHILD=""
    [ $rc = 0 ] || fail "the cluster node exited with status $rc after SHUTDOWN NOSAVE"
}

# ---------------------------------------------------------------- systemd
check_systemd() {
    need systemd-analyze systemd
    local unit=$DEPLOY/systemd/mizan.service target
    # verify refuses a unit whose ExecStart binary is missing. Where mizand
    # is installed the unit is verified as it is; elsewhere (a build tree)
    # a copy with only the binary's path replaced by /bin/true is verified.
    # Nothing else about the unit depends on the binary.
    if [ -x /usr/local/bin/mizand ]; then
        target=$unit
    else
        target=$TMP/mizan.service
        sed 's#^ExecStart=/usr/local/bin/mizand #ExecStart=/bin/true #' "$unit" >"$target"
        grep -q '^ExecStart=/bin/true --config /etc/mizan/mizan.json$' "$target" ||
            fail "ExecStart of mizan.service is not '/usr/local/bin/mizand --config ...'"
        echo "(mizand is not installed: verifying a copy with ExecStart=/bin/true)"
    fi
    # verify exits 0 on unknown keys and unparsable values (it only warns),
    # so any output at all is a failure.
    run systemd-analyze verify "$target" || fail "systemd-analyze verify failed"
    [ -z "$OUT" ] || fail "systemd-analyze verify printed diagnostics"
    # Exposure score (0 = locked down, 10 = none); 2.0 is "OK" territory.
    # --threshold counts in tenths.
    echo "+ systemd-analyze security --offline=yes --threshold=20 $target"
    OUT=$(systemd-analyze security --offline=yes --threshold=20 --no-pager "$target" 2>&1)
    RC=$?
    printf '%s\n' "$OUT" | tail -n 1
    [ $RC = 0 ] || { printf '%s\n' "$OUT"; fail "the unit's exposure score is above 2.0"; }
}

# ------------------------------------------------------------------- json
# The gateway configs in deploy/: the systemd example and the one embedded
# in the Kubernetes ConfigMap.
check_json() {
    echo "+ python3: parse deploy/systemd/mizan.json and the ConfigMap's mizan.json"
    "$PY" - "$DEPLOY" <<'EOF' || fail "an example gateway config is not valid JSON"
import json, re, sys
deploy = sys.argv[1]
def load(name, text):
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise SystemExit("%s: not a JSON object" % name)
    print("  %s: %d fields" % (name, len(doc)))
    return doc
with open(deploy + "/systemd/mizan.json") as f:
    load("systemd/mizan.json", f.read())
k8s = open(deploy + "/k8s/mizan.yaml").read()
m = re.search(r"^  mizan\.json: \|\n((?:    .*\n|\n)+)", k8s, re.M)
if not m:
    raise SystemExit("k8s/mizan.yaml: no mizan.json block in the ConfigMap")
load("k8s/mizan.yaml ConfigMap mizan.json", m.group(1))
EOF
}

# ---------------------------------------------------------------- gateway
check_gateway() {
    local bin=${MIZAN_TEST_BIN:-$ROOT/build/mizand}
    local mods=${MIZAN_TEST_MODULE_DIR:-$(dirname "$bin")/modules}
    [ -x "$bin" ] || fail "no mizand at $bin: build it (cmake --build build) or set MIZAN_TEST_BIN"
    [ -r "$mods/blog.so" ] || fail "no blog.so in $mods: build the examples or set MIZAN_TEST_MODULE_DIR"
    echo "+ python3: extract the example configs, module_dir -> $mods, db -> $TMP"
    "$PY" - "$DEPLOY" "$mods" "$TMP" <<'EOF' || fail "cannot prepare the example configs"
import json, re, sys
deploy, mods, tmp = sys.argv[1:4]
k8s = open(deploy + "/k8s/mizan.yaml").read()
docs = {"systemd": open(deploy + "/systemd/mizan.json").read(),
        "k8s": re.search(r"^  mizan\.json: \|\n((?:    .*\n|\n)+)", k8s, re.M).group(1)}
for name, text in docs.items():
    doc = json.loads(text)
    # Only the installed paths change; every other field is checked as is.
    if doc.get("module_dir") != "/usr/local/lib/mizan/modules":
        raise SystemExit("%s: module_dir is not the installed /usr/local/lib/mizan/modules" % name)
    doc["module_dir"] = mods
    for m in doc.get("modules", []):
        if m.get("name") == "blog":
            m["config"]["db"] = "%s/%s-blog.db" % (tmp, name)
    with open("%s/%s.json" % (tmp, name), "w") as f:
        json.dump(doc, f)
EOF
    # PR_SET_MDWE (Linux >= 6.3) with PR_MDWE_REFUSE_EXEC_GAIN: no mapping
    # may become writable+executable or gain exec later; inherited by exec.
    cat >"$TMP/mdwe.py" <<'EOF'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    print("kernel refuses PR_SET_MDWE (%s); running without it" % os.strerror(ctypes.get_errno()))
else:
    print("PR_SET_MDWE: refusing W+X memory, as MemoryDenyWriteExecute=yes does")
sys.stdout.flush()
os.execv(sys.argv[1], sys.argv[1:])
EOF
    local name
    for name in systemd k8s; do
        # The environment must not override the files under test.
        echo "+ mizand --check-config --config $TMP/$name.json (under PR_SET_MDWE)"
        # The environment must not override the files under test.
        OUT=$(env -u MIZAN_LISTEN -u MIZAN_WORKERS -u MIZAN_TOKEN_SECRET -u MIZAN_CACHE_SECRET \
            -u MIZAN_REDIS_URL -u MIZAN_BLOG_DB \
            "$PY" "$TMP/mdwe.py" "$bin" --check-config --config "$TMP/$name.json" 2>&1)
        RC=$?
        # The registry dump that --check-config prints is left out.
        if [ $RC != 0 ] || ! printf '%s\n' "$OUT" | grep -q "is valid"; then
            printf '%s\n' "$OUT"
            fail "mizand --check-config refused the $name example config"
        fi
        printf '%s\n' "$OUT" | grep -E '^mizand:|MDWE|"level"' | sed 's/^/  /'
    done
}

# ------------------------------------------------------------------- yaml
check_yaml() {
    "$PY" -c 'import yaml' 2>/dev/null || fail "python3 yaml module missing: install the Debian package python3-yaml"
    echo "+ python3: parse compose.yaml and k8s/mizan.yaml, cross-check them"
    "$PY" - "$DEPLOY" <<'EOF' || fail "the container or Kubernetes files are inconsistent"
import json, sys, yaml
deploy = sys.argv[1]
gw = json.load(open(deploy + "/systemd/mizan.json"))
drain_s = gw["drain_timeout_ms"] / 1000.0
problems = []
def check(cond, what):
    print("  %s %s" % ("ok  " if cond else "FAIL", what))
    if not cond:
        problems.append(what)

compose = yaml.safe_load(open(deploy + "/container/compose.yaml"))
svc = compose["services"]
check(set(svc) == {"mizan1", "mizan2", "mizan3", "redis", "haproxy"}, "compose: services mizan1..3, redis, haproxy")
for n in ("mizan1", "mizan2", "mizan3"):
    s = svc[n]
    check(s["build"]["dockerfile"] == "deploy/container/Containerfile", n + ": built from the Containerfile")
    check("blog-data:/var/lib/mizan" in s["volumes"], n + ": shares the blog-data volume")
    grace = float(s["stop_grace_period"].rstrip("s"))
    check(grace > drain_s + 1, n + ": stop_grace_period %gs > drain %gs + 1s" % (grace, drain_s))
    check(s["env_file"] == [".env"], n + ": secrets from .env")
check("blog-data" in compose["volumes"], "compose: blog-data volume declared")

cl = yaml.safe_load(open(deploy + "/container/compose.cluster.yaml"))
csvc = cl["services"]
nodes = ["redis-node%d" % i for i in range(1, 7)]
check(set(csvc) == {"mizan1", "mizan2", "mizan3", "redis-cluster-create"} | set(nodes),
      "compose.cluster: gateways, six nodes and the creator")
for n in nodes:
    cmd = csvc[n]["command"]
    check(cmd[0] == "redis-server" and cmd[1].endswith("/redis-cluster.conf"), n + ": runs redis-cluster.conf")
    check("../redis/redis-cache.conf:/etc/redis/redis-cache.conf:ro" in csvc[n]["volumes"],
          n + ": redis-cache.conf where redis-cluster.conf includes it")
for n in ("mizan1", "mizan2", "mizan3"):
    url = csvc[n]["environment"]["MIZAN_REDIS_URL"]
    hosts = [h.split(":")[0] for h in url[len("redis-cluster://"):].split(",")]
    check(url.startswith("redis-cluster://") and set(hosts) <= set(nodes) and len(hosts) >= 2,
          n + ": MIZAN_REDIS_URL lists cluster nodes")
    check(csvc[n]["depends_on"] == ["redis-cluster-create"], n + ": starts after the cluster is created")
create = " ".join(csvc["redis-cluster-create"]["entrypoint"])
check("--cluster create" in create and "--cluster-replicas 1" in create, "compose.cluster: creates 3 + 3 replicas")

docs = {d["kind"]: d for d in yaml.safe_load_all(open(deploy + "/k8s/mizan.yaml")) if d}
check(set(docs) >= {"ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler"},
      "k8s: ConfigMap, Secret, Deployment, Service, HorizontalPodAutoscaler")
dep = docs["Deployment"]["spec"]
pod = dep["template"]["spec"]
c = pod["containers"][0]
cm = json.loads(docs["ConfigMap"]["data"]["mizan.json"])
check(dep["replicas"] == 3, "k8s: 3 replicas")
check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "k8s: readiness probe on /readyz")
check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "k8s: liveness probe on /healthz")
pre = c["lifecycle"]["preStop"]["exec"]["command"]
pre_s = float(pre[1]) if pre[0] == "sleep" else 0
k8s_drain = cm["drain_timeout_ms"] / 1000.0
check(pre_s > 0, "k8s: preStop sleeps %gs" % pre_s)
check(pod["terminationGracePeriodSeconds"] > pre_s + k8s_drain + 1,
      "k8s: grace %ss > preStop %gs + drain %gs + 1s" % (pod["terminationGracePeriodSeconds"], pre_s, k8s_drain))
port = int(cm["listen"].rsplit(":", 1)[1])
check(c["ports"][0]["containerPort"] == port, "k8s: containerPort %d = the config's listen port" % port)
check(pod["securityContext"]["runAsNonRoot"] is True, "k8s: runAsNonRoot")
check(c["securityContext"]["readOnlyRootFilesystem"] is True, "k8s: readOnlyRootFilesystem")
hpa = docs["HorizontalPodAutoscaler"]
check(hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu",
      "k8s: autoscaling/v2 HPA on CPU")
check(set(docs["Secret"]["stringData"]) == {"MIZAN_TOKEN_SECRET", "MIZAN_CACHE_SECRET", "MIZAN_REDIS_URL"},
      "k8s: Secret holds the token secret, cache secret and Redis URL")
if problems:
    raise SystemExit("%d problem(s)" % len(problems))
EOF
}

case "${1:-}" in
haproxy | nginx | redis | systemd | json | gateway | yaml) "check_$1" ;;
*)
    echo "usage: $0 haproxy|nginx|redis|systemd|json|gateway|yaml" >&2
    exit 2
    ;;
esac
echo "deploy $1: ok"
