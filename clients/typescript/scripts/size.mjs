// size.mjs - the size of the built client (dist/*.js, the ESM a browser
// loads), measured with Node built-ins only: raw bytes, gzip -9 of the
// plain tsc output, and gzip -9 of a stripped estimate (block and line
// comments removed, indentation and blank lines dropped). A real minifier
// (renaming, dead code) would do better than the estimate.
//
//   node scripts/size.mjs          (after npm run build)
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";

const dist = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "dist");
const files = fs.readdirSync(dist).filter((f) => f.endsWith(".js")).sort();
if (files.length === 0) {
  console.error("no dist/*.js: run npm run build first");
  process.exit(1);
}
const plain = files.map((f) => fs.readFileSync(path.join(dist, f), "utf8")).join("\n");

/* Drops comments outside string, template and regex literals (a small
   scanner: enough for tsc's output of this package) and indentation. */
function strip(src) {
  let out = "";
  for (let i = 0; i < src.length; ) {
    const c = src[i];
    const n = src[i + 1];
    if (c === "/" && n === "*") {
      const end = src.indexOf("*/", i + 2);
      i = end < 0 ? src.length : end + 2;
    } else if (c === "/" && n === "/") {
      const end = src.indexOf("\n", i);
      i = end < 0 ? src.length : end;
    } else if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < src.length && src[j] !== c) j += src[j] === "\\" ? 2 : 1;
      out += src.slice(i, j + 1);
      i = j + 1;
    } else if (c === "/" && /[(,=:[!&|?{};]\s*$/.test(out)) {
      let j = i + 1;
      let cls = false;
      while (j < src.length && (src[j] !== "/" || cls)) {
        if (src[j] === "[") cls = true;
        else if (src[j] === "]") cls = false;
        j += src[j] === "\\" ? 2 : 1;
      }
      out += src.slice(i, j + 1);
      i = j + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "")
    .join("\n");
}

const stripped = strip(plain);
const gz = (s) => zlib.gzipSync(Buffer.from(s), { level: 9 }).length;
const kib = (n) => `${n} B (${(n / 1024).toFixed(2)} KiB)`;
console.log(`client bundle: ${files.length} ESM modules in dist/ (${files.join(", ")})`);
console.log(`  raw:                      ${kib(Buffer.byteLength(plain))}`);
console.log(`  gzip -9:                  ${kib(gz(plain))}`);
console.log(`  stripped (no comments/indentation): ${kib(Buffer.byteLength(stripped))}, gzip -9 ${kib(gz(stripped))}`);
