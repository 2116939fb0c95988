// typecheck.test.mjs - the types as tests: the package and the generated
// blog client compile under `tsc --noEmit --strict`, a typed program using
// them compiles cleanly, and a file of deliberate misuses fails with
// exactly the expected compiler errors (code and line), no more, no fewer.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { CLIENT_DIR, SOURCE_DIR } from "./support.mjs";

const TSC = path.join(CLIENT_DIR, "node_modules", "typescript", "bin", "tsc");
const TYPES = path.join(CLIENT_DIR, "test", "types");

function tsc(...args) {
  const r = spawnSync(process.execPath, [TSC, ...args], { cwd: CLIENT_DIR, encoding: "utf8", timeout: 300000 });
  return { status: r.status, out: (r.stdout ?? "") + (r.stderr ?? "") };
}

test("the package compiles under tsc --noEmit --strict", () => {
  const r = tsc("-p", "tsconfig.json", "--noEmit", "--strict");
  assert.equal(r.status, 0, r.out);
});

test("the generated blog client and a program using it compile under --strict", () => {
  const generated = path.join(SOURCE_DIR, "examples", "blog", "web", "blog-client.ts");
  assert.ok(fs.existsSync(generated), `${generated} is missing`);
  const r = tsc("-p", path.join(TYPES, "tsconfig.json"), "--noEmit", "--strict");
  assert.equal(r.status, 0, r.out);
});

test("deliberate misuses fail to compile with the expected errors", () => {
  const file = path.join(TYPES, "misuse.ts");
  const expected = [];
  fs.readFileSync(file, "utf8")
    .split("\n")
    .forEach((line, i) => {
      const m = /\/\/ expect (TS\d+)/.exec(line);
      if (m) expected.push(`${i + 1} ${m[1]}`);
    });
  assert.ok(expected.length >= 10, "the misuse file lists its expected errors");
  const r = tsc("-p", path.join(TYPES, "tsconfig.misuse.json"), "--noEmit", "--strict", "--pretty", "false");
  assert.notEqual(r.status, 0, "misuse.ts compiled: the types accept what they must refuse");
  const got = [];
  for (const line of r.out.split("\n")) {
    const m = /misuse\.ts\((\d+),\d+\): error (TS\d+):/.exec(line);
    if (m) got.push(`${m[1]} ${m[2]}`);
    else if (/error TS\d+/.test(line)) assert.fail(`an error outside misuse.ts: ${line}`);
  }
  assert.deepEqual(got.sort(), expected.sort(), r.out);
  console.log(`misuse.ts: ${got.length} expected compiler errors, each on its line`);
});
