#!/usr/bin/python3
"""blog_api.py - a small JSON HTTP service holding the blog example's data.

It stands in for "your existing API" in the upstream example: Mizan serves
the blog's `post` and `feed` contexts by calling it (examples/upstream/
mizan.json, docs/upstream.md). Standard library only; run it with the
system Python:

    /usr/bin/python3 examples/upstream/blog_api.py --port 8081

Routes (JSON in and out):

    GET   /posts?limit=N          {"posts": [...]}     published, newest first
    GET   /posts/{id}             {"post": {...}}      or 404
    GET   /posts/{id}/comments    {"comments": [...]}  oldest first, or 404
    GET   /posts/{id}/author      {"author": {"name": ..., "posts": n}}
    PATCH /posts/{id}             {"title"?, "body"?} -> {"post": {...}}
    POST  /posts/{id}/comments    {"text"} -> {"comment": {...}}

Writes trust the identity headers the gateway sends (X-Mizan-Sub,
X-Mizan-Staff, X-Mizan-Superuser): no X-Mizan-Sub is 401, someone else's
post is 403 (unless staff or superuser), a bad title is 422 with a
FastAPI-style {"detail": [{"loc", "msg", "type"}]} list. A real service
would accept those headers only from the gateway (network policy, or a
shared secret the gateway sends as a configured header).

With --control-port, the service also serves test routes under /_test/ on
its main port (echo, fixed statuses, slow answers, RFC 6901's example
document) and, on the control port, GET /stats (connections accepted and
requests served on the main port) and POST /control ({"outage": bool}
answers 503 to everything; {"drop_connections": n} closes the next n
connections unanswered; {"reset": true} zeroes the counters). The end-to-end
tests use these to count connection reuse and to break the service on
purpose.
"""

import argparse
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SEED_AUTHOR = "alice"
SEED_POSTS = [
    ("Welcome to the Mizan blog",
     "This blog is the example module that ships with the Mizan gateway. Every "
     "page you see is a handful of C functions behind one HTTP endpoint: read "
     "blog.c to see how they are declared, validated and cached."),
    ("Contexts: one round trip for a whole page",
     "A post page needs the post, its comments and a line about its author. "
     "The post context runs get_post, list_comments and get_author side by "
     "side on the worker pool and answers with a single bundle."),
    ("Writes that never read stale",
     "Each mutation names the contexts it changes. The gateway bumps their "
     "revisions before it answers, so the next read on any instance is fresh "
     "while everything untouched stays cached."),
]
SEED_COMMENTS = [
    (1, "bob", "Congratulations on the launch! The schema endpoint saved me an afternoon."),
    (1, "carol", "Is there a guide for writing a first module? Asking for a friend."),
    (2, "bob", "The bundle for this page took 3 ms here, comments included."),
]

# RFC 6901 section 5's example document.
RFC6901 = {
    "foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3, "g|h": 4,
    "i\\j": 5, "k\"l": 6, " ": 7, "m~n": 8,
}


class Blog:
    """The data, guarded by one lock (requests run on several threads)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.posts = {}
        for i, (title, body) in enumerate(SEED_POSTS, start=1):
            self.posts[i] = {"id": i, "title": title, "body": body,
                             "author": SEED_AUTHOR, "published": True}
        self.comments = [{"id": i, "post_id": p, "author": a, "text": t}
                         for i, (p, a, t) in enumerate(SEED_COMMENTS, start=1)]


class Counters:
    """What the control port reports about the main port."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()
        self.outage = False
        self.drop = 0

    def reset(self):
        self.connections = 0
        self.requests = 0
        self.dropped = 0
        self.paths = {}


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, blog, counters, test_routes):
        super().__init__(addr, handler)
        self.blog = blog
        self.counters = counters
        self.test_routes = test_routes

    def verify_request(self, request, client_address):
        c = self.counters
        with c.lock:
            c.connections += 1
            if c.drop > 0:
                c.drop -= 1
                c.dropped += 1
                return False  # closed unanswered by the server
        return True


def violation(where, field, msg, kind):
    return {"detail": [{"loc": [where, field], "msg": msg, "type": kind}]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "blog-api/1"

    def log_message(self, fmt, *args):  # quiet: the tests read stdout
        pass

    # ---- plumbing --------------------------------------------------------
    def send_json(self, status, doc, content_type="application/json"):
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status != 204:
            self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n > 0 else b""
        return raw

    def identity(self):
        sub = self.headers.get("X-Mizan-Sub")
        staff = self.headers.get("X-Mizan-Staff") == "true"
        superuser = self.headers.get("X-Mizan-Superuser") == "true"
        return sub, staff or superuser

    def handle_any(self, method):
        url = urlsplit(self.path)
        raw = self.read_body()
        c = self.server.counters
        with c.lock:
            c.requests += 1
            c.paths[url.path] = c.paths.get(url.path, 0) + 1
            outage = c.outage
        if outage:
            return self.send_json(503, {"error": "down for maintenance at 10.9.8.7"})
        if url.path.startswith("/_test/") and self.server.test_routes:
            return self.test_route(method, url, raw)
        return self.api_route(method, url, raw)

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")

    # ---- the blog API ------------------------------------------------------
    def api_route(self, method, url, raw):
        blog = self.server.blog
        query = parse_qs(url.query, keep_blank_values=True)
        m = re.fullmatch(r"/posts/(\d+)(/comments|/author)?", url.path)
        if url.path == "/posts" and method == "GET":
            try:
                limit = int(query.get("limit", ["20"])[0])
            except ValueError:
                limit = 0
            if not 1 <= limit <= 100:
                return self.send_json(422, violation("query", "limit", "must be 1..100", "range"))
            with blog.lock:
                posts = sorted((p for p in blog.posts.values() if p["published"]),
                               key=lambda p: -p["id"])[:limit]
                return self.send_json(200, {"posts": [dict(p) for p in posts]})
        if m is None:
            return self.send_json(404, {"error": "no such route"})
        post_id, tail = int(m.group(1)), m.group(2)
        with blog.lock:
            post = blog.posts.get(post_id)
            if post is None:
                return self.send_json(404, {"error": "post not found"})
            if tail is None and method == "GET":
                return self.send_json(200, {"post": dict(post)})
            if tail == "/comments" and method == "GET":
                mine = [dict(x) for x in blog.comments if x["post_id"] == post_id]
                return self.send_json(200, {"comments": mine})
            if tail == "/author" and method == "GET":
                n = sum(1 for p in blog.posts.values() if p["author"] == post["author"])
                return self.send_json(200, {"author": {"name": post["author"], "posts": n}})
        if tail is None and method == "PATCH":
            return self.update_post(post_id, raw)
        if tail == "/comments" and method == "POST":
            return self.add_comment(post_id, raw)
        return self.send_json(405, {"error": "method not allowed"})

    def update_post(self, post_id, raw):
        sub, moderator = self.identity()
        if not sub:
            return self.send_json(401, {"error": "sign in first"})
        try:
            change = json.loads(raw or b"{}")
        except ValueError:
            return self.send_json(400, {"error": "the body must be JSON"})
        title = change.get("title")
        if title is not None and (not isinstance(title, str) or not 1 <= len(title) <= 200):
            return self.send_json(422, violation("body", "title", "must be 1..200 characters", "length"))
        blog = self.server.blog
        with blog.lock:
            post = blog.posts.get(post_id)
            if post is None:
                return self.send_json(404, {"error": "post not found"})
            if post["author"] != sub and not moderator:
                return self.send_json(403, {"error": "only the author or a moderator may edit"})
            for key in ("title", "body"):
                if isinstance(change.get(key), str):
                    post[key] = change[key]
            return self.send_json(200, {"post": dict(post)})

    def add_comment(self, post_id, raw):
        sub, _ = self.identity()
        if not sub:
            return self.send_json(401, {"error": "sign in first"})
        try:
            text = json.loads(raw or b"{}").get("text")
        except (ValueError, AttributeError):
            return self.send_json(400, {"error": "the body must be a JSON object"})
        if not isinstance(text, str) or not 1 <= len(text) <= 2000:
            return self.send_json(422, violation("body", "text", "must be 1..2000 characters", "length"))
        blog = self.server.blog
        with blog.lock:
            cid = max((x["id"] for x in blog.comments), default=0) + 1
            comment = {"id": cid, "post_id": post_id, "author": sub, "text": text}
            blog.comments.append(comment)
            return self.send_json(200, {"comment": dict(comment)})

    # ---- test routes ---------------------------------------------------------
    def test_route(self, method, url, raw):
        query = parse_qs(url.query, keep_blank_values=True)
        if url.path.startswith("/_test/echo"):
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = {"not_json": raw.decode("utf-8", "replace")}
            return self.send_json(200, {
                "method": method, "path": url.path, "query": url.query,
                "args": query, "body": body,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            })
        m = re.fullmatch(r"/_test/status/(\d{3})", url.path)
        if m:
            code = int(m.group(1))
            if "text" in query:
                return self.send_json(code, b"Traceback at 10.9.8.7:5432 secret-upstream-detail\n",
                                      "text/plain")
            if "violations" in query:
                return self.send_json(code, violation("body", "title", "too short", "value_error"))
            doc = {"error": {"message": "upstream says no", "status": code}}
            if code >= 500:
                doc["trace"] = "at 10.9.8.7:5432 secret-upstream-detail"
            return self.send_json(code, doc)
        if url.path == "/_test/slow":
            ms = int(query.get("ms", ["0"])[0])
            time.sleep(ms / 1000.0)
            return self.send_json(200, {"slept_ms": ms})
        if url.path == "/_test/rfc6901":
            return self.send_json(200, RFC6901)
        if url.path == "/_test/notjson":
            return self.send_json(200, b"hello, not json", "text/plain")
        if url.path == "/_test/empty":
            return self.send_json(204, b"")
        return self.send_json(404, {"error": "no such test route"})


class ControlHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, doc):
        data = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stats(self):
        c = self.server.counters
        with c.lock:
            return {"connections": c.connections, "requests": c.requests,
                    "dropped": c.dropped, "paths": dict(c.paths),
                    "outage": c.outage, "drop_pending": c.drop}

    def do_GET(self):
        self.reply(self.stats())

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        change = json.loads(self.rfile.read(n) or b"{}")
        c = self.server.counters
        with c.lock:
            if change.get("reset"):
                c.reset()
            if "outage" in change:
                c.outage = bool(change["outage"])
            if "drop_connections" in change:
                c.drop = int(change["drop_connections"])
        self.reply(self.stats())


class ControlServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, counters):
        super().__init__(addr, ControlHandler)
        self.counters = counters


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    ap.add_argument("--control-port", type=int, default=None,
                    help="enable the /_test/ routes and serve /stats and /control here (0: free port)")
    args = ap.parse_args()

    counters = Counters()
    api = ApiServer((args.host, args.port), Handler, Blog(), counters, args.control_port is not None)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    ready = {"msg": "listening", "port": api.server_address[1]}
    if args.control_port is not None:
        control = ControlServer((args.host, args.control_port), counters)
        threading.Thread(target=control.serve_forever, daemon=True).start()
        ready["control_port"] = control.server_address[1]
    print(json.dumps(ready), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
