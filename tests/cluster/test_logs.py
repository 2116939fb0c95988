#!/usr/bin/python3
"""test_logs.py - what the gateway writes to its log, and what it must not.

    test_logs.py secrets

Two gateways share an ACL-protected Redis (the gateway's user from
deploy/redis/redis-cache.conf, with a password, default user off). Gateway
A has every secret in its config file (token secret, a second token key for
rotation, cache secret, Redis URL with the password); gateway B gets them
from the environment (MIZAN_TOKEN_SECRET, MIZAN_CACHE_SECRET,
MIZAN_REDIS_URL). Both get traffic with tokens as Bearer headers and as
cookies (valid, expired, tampered, in a malformed header), every error path
of support.exercise, and a Redis outage: Redis killed, back with a wrong
password (set-up refused), back with the right one.

Then, with both stopped (SIGTERM):
- every line of both logs is one JSON object;
- no token (nor its payload or signature part), token key, cache secret,
  Redis password or Redis URL appears anywhere in them, as is or in hex;
- every request line has ts (UTC, milliseconds), level, instance,
  request_id, route, status and duration_us; call lines name their
  function and ctx lines their context (never as "function") once the
  gateway has read them; answered ctx lines carry the cache outcome.

Registered with ctest by tests/cluster/tests.cmake.
"""

import json
import re
import secrets
import signal
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import support as s  # noqa: E402
from support import check, log

ROUTES = {"call", "ctx", "schema", "events", "healthz", "readyz", "metrics", "draining", "unknown"}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def test_secrets():
    token_secret = "tok-" + secrets.token_urlsafe(33)
    key2_secret = "k2-" + secrets.token_urlsafe(33)
    cache_secret = "cache-" + secrets.token_urlsafe(33)
    redis_password = "pw-" + secrets.token_urlsafe(24)
    with s.Run("logs-secrets") as run:
        redis = run.redis(password=redis_password)
        url = "redis://mizan:%s@127.0.0.1:%d/0" % (redis_password, redis.port)
        keys = {"keys": [{"kid": "k2", "secret": key2_secret}]}
        a = run.gateway("log-a", s.gateway_config(
            run, "log", instance="log-a", token=dict(keys, secret=token_secret),
            cache={"secret": cache_secret, "redis_url": url}))
        b = run.gateway("log-b", s.gateway_config(run, "log", token=dict(keys)), env={
            "MIZAN_TOKEN_SECRET": token_secret, "MIZAN_CACHE_SECRET": cache_secret, "MIZAN_REDIS_URL": url})
        for gw in (a, b):
            check(s.get(gw.port, "/readyz").status == 200, "%s is not ready (Redis with ACL)", gw.name)

        bearer = run.token(a.config_path, "alice", "--staff")
        cookie = run.token(a.config_path, "bob", "--perm", "blog.view_drafts")
        rotated = run.token(a.config_path, "carol", "--kid", "k2", "--staff")
        short = run.token(a.config_path, "dave", "--ttl", "1")
        short_minted = time.monotonic()
        tokens = [bearer, cookie, rotated, short]

        s.check_exercise(s.exercise(a.port, bearer, cookie_token=cookie), "log-a")
        s.check_exercise(s.exercise(b.port, rotated, cookie_token=cookie), "log-b")
        # Both ways at once: the header (bob, who may view drafts) wins over
        # the cookie (alice, who may not).
        r = s.get(a.port, "/api/mizan/ctx/drafts/", token=cookie, headers={"Cookie": "mwt=" + bearer})
        check(r.status == 200, "drafts with header and cookie: %r", r)
        r = s.get(b.port, "/api/mizan/ctx/drafts/", headers={"Cookie": "mwt=" + cookie})
        check(r.status == 200, "drafts with a cookie: %r", r)

        # Redis goes away, comes back refusing the gateways' password, then
        # comes back right: every connection log line is on the way.
        port = redis.port
        redis.stop(signal.SIGKILL)
        r = s.call(a.port, "update_post", {"post_id": 2, "title": "during the outage"}, token=bearer)
        check(r.status == 200, "update_post while Redis is down: %r", r)
        wrong = run.redis("redis-wrong", password="not-" + redis_password, port=port)
        s.wait_for(lambda: "set-up refused" in a.log_text() and "set-up refused" in b.log_text(), 20,
                   "both gateways to log a refused Redis set-up")
        wrong.stop()
        run.redis("redis-again", password=redis_password, port=port)
        for gw in (a, b):
            s.wait_for(lambda: s.get(gw.port, "/readyz").status == 200, 30, "%s to reconnect to Redis" % gw.name)

        # An expired token (whole seconds: wait past the next one).
        time.sleep(max(0.0, short_minted + 2.1 - time.monotonic()))
        r = s.call(a.port, "whoami", token=short)
        check(r.status == 401, "expired token: %r", r)
        r = s.get(b.port, "/api/mizan/ctx/me/", headers={"Cookie": "mwt=" + short})
        check(r.status == 401, "expired cookie token: %r", r)

        for gw in (a, b):
            rc = gw.stop(signal.SIGTERM, 30)
            check(rc == 0, "%s exited with status %d", gw.name, rc)

        needles = {"token secret": token_secret, "token key k2": key2_secret, "cache secret": cache_secret,
                   "Redis password": redis_password, "Redis URL": url}
        for i, t in enumerate(tokens):
            head, payload, sig = t.split(".")
            needles["token %d" % i] = t
            needles["token %d payload" % i] = payload
            needles["token %d signature" % i] = sig
        for name in list(needles):
            if "secret" in name or "password" in name or "key" in name:
                needles[name + " (hex)"] = needles[name].encode().hex()

        # Positive control: the needles are the strings the gateways were given.
        with open(a.config_path) as f:
            config_text = f.read()
        check(url in config_text and token_secret in config_text, "the secrets are not in log-a's config")

        counts = {}
        for gw in (a, b):
            text = gw.log_text()
            leaks = [name for name, n in needles.items() if n in text]
            check(not leaks, "%s's log contains: %s", gw.name, ", ".join(leaks))
            lines = [ln for ln in text.splitlines() if ln.strip()]
            bad = []
            requests = []
            for ln in lines:
                try:
                    doc = json.loads(ln)
                except ValueError:
                    bad.append(ln)
                    continue
                if not isinstance(doc, dict):
                    bad.append(ln)
                    continue
                for k in ("ts", "level", "msg", "instance"):
                    if k not in doc:
                        bad.append("no %s: %s" % (k, ln))
                if doc.get("msg") == "request":
                    requests.append(doc)
            check(not bad, "%s: %d line(s) that are not proper JSON log lines:\n%s", gw.name, len(bad),
                  "\n".join(bad[:10]))
            problems = []
            for doc in requests:
                why = request_line_problems(doc, "log-a" if gw is a else None)
                if why:
                    problems.append("%s: %s" % (why, json.dumps(doc)))
            check(not problems, "%s: %d malformed request line(s):\n%s", gw.name, len(problems),
                  "\n".join(problems[:15]))
            check(any(d.get("request_id") == "exercise-request-1" and d.get("function") == "ping" for d in requests),
                  "%s: the client's X-Request-Id is not in the request's log line", gw.name)
            routes = {d["route"] for d in requests}
            check({"call", "ctx", "schema", "events", "healthz", "readyz"} <= routes,
                  "%s: routes logged: %s", gw.name, routes)
            counts[gw.name] = (len(lines), len(requests))
        log("logs: %s lines (all JSON) and %s request lines checked; none holds any of %d secret strings "
            "(%d tokens, their parts, token keys, cache secret, Redis password and URL)",
            "+".join(str(c[0]) for c in counts.values()), "+".join(str(c[1]) for c in counts.values()),
            len(needles), len(tokens))


def request_line_problems(doc, instance):
    """Why a request line falls short (empty string when it does not)."""
    why = []
    if not TS.match(str(doc.get("ts"))):
        why.append("ts")
    if doc.get("level") != "info":
        why.append("level")
    inst = doc.get("instance")
    if not isinstance(inst, str) or not inst or (instance is not None and inst != instance):
        why.append("instance")
    if not RID.match(str(doc.get("request_id"))):
        why.append("request_id")
    route = doc.get("route")
    if route not in ROUTES:
        why.append("route")
    status = doc.get("status")
    if not isinstance(status, int) or not 100 <= status <= 599:
        why.append("status")
    if not isinstance(doc.get("duration_us"), int) or doc["duration_us"] < 0:
        why.append("duration_us")
    # Once the gateway has read the target (the call's body, the context's
    # path) and answered past the token and method checks, it is logged.
    if route == "call":
        if "context" in doc:
            why.append("a call logged with a context")
        if status not in (400, 401, 405, 413) and not isinstance(doc.get("function"), str):
            why.append("call without function")
    if route == "ctx":
        if "function" in doc:
            why.append("a context logged as \"function\"")
        if status in (200, 404, 422) and not isinstance(doc.get("context"), str):
            why.append("ctx without context")
        if status == 200 and doc.get("cache") not in ("HIT", "MISS", "BYPASS"):
            why.append("ctx without cache outcome")
    return ", ".join(why)


if __name__ == "__main__":
    s.main({"secrets": test_secrets})
