// serve.mjs - a tiny static server for the blog page (Node built-ins only).
//
// Serves this folder at /, the built client package (clients/typescript/
// dist) at /client/, and /config.json ({"api": URL}) so the page knows
// where the gateway is. GET and HEAD only; nothing outside the two folders
// is reachable. The page lives on this server's origin, the gateway on
// another: the browser talks to the gateway cross-origin (CORS).
//
//   node examples/blog/web/serve.mjs --port 8081 --api http://127.0.0.1:8080
//
// Also imported by the browser test: startServer({port, host, api}).
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const CLIENT_DIST = path.resolve(here, "..", "..", "..", "clients", "typescript", "dist");
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".ts": "text/plain; charset=utf-8",
  ".map": "application/json",
  ".png": "image/png",
  ".svg": "image/svg+xml",
};

/* The file a URL path names inside root, or null when it would leave it. */
function resolveIn(root, rel) {
  const p = path.resolve(root, "." + path.posix.normalize("/" + rel));
  return p === root || p.startsWith(root + path.sep) ? p : null;
}

/** Starts the server; resolves with {server, port, url, close()}. */
export function startServer({ port = 8081, host = "127.0.0.1", api = "http://127.0.0.1:8080" } = {}) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { Allow: "GET, HEAD" });
      res.end();
      return;
    }
    if (url.pathname === "/config.json") {
      res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-store" });
      res.end(JSON.stringify({ api }));
      return;
    }
    let file = null;
    try {
      const pathname = decodeURIComponent(url.pathname);
      if (pathname.startsWith("/client/")) file = resolveIn(CLIENT_DIST, pathname.slice("/client/".length));
      else file = resolveIn(here, pathname === "/" ? "index.html" : pathname.slice(1));
    } catch {
      file = null;
    }
    if (file === null || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, { "Content-Type": "text/plain" });
      res.end("not found\n");
      return;
    }
    res.writeHead(200, { "Content-Type": TYPES[path.extname(file)] ?? "application/octet-stream", "Cache-Control": "no-store" });
    if (req.method === "HEAD") res.end();
    else fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      const p = server.address().port;
      resolve({
        server,
        port: p,
        url: `http://${host}:${p}`,
        close: () => new Promise((r) => server.close(() => r())),
      });
    });
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
  };
  const s = await startServer({
    port: Number(opt("--port", "8081")),
    host: opt("--host", "127.0.0.1"),
    api: opt("--api", "http://127.0.0.1:8080"),
  });
  console.log(`serving the blog page on ${s.url}/ (gateway ${opt("--api", "http://127.0.0.1:8080")})`);
  const stop = () => s.close().then(() => process.exit(0));
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
