// misuse.ts - deliberate mistakes that must NOT compile. Each line marked
// `expect TSnnnn` must produce exactly that error code on that line, and no
// other line may produce one (test/typecheck.test.mjs checks both ways).
import { createTypedClient } from "../../../../examples/blog/web/blog-client.js";

export async function misuse(): Promise<void> {
  const c = createTypedClient({ baseUrl: "http://127.0.0.1:8080" });
  await c.call("add", { a: "2", b: 3 }); // expect TS2322 (wrong arg type)
  await c.call("add", { a: 1 }); // expect TS2345 (missing required arg)
  await c.call("add"); // expect TS2554 (args required, none given)
  await c.call("no_such_function", {}); // expect TS2345 (unknown function)
  await c.context("no_such_context", {}); // expect TS2345 (unknown context)
  await c.context("post", { post_id: "1" }); // expect TS2322 (wrong param type)
  await c.context("post", {}); // expect TS2345 (missing required param)
  await c.fn.update_post({ title: "x" }); // expect TS2345 (missing post_id)
  await c.fn.no_such_function(); // expect TS2339 (unknown typed wrapper)
  const n: string = await c.fn.add({ a: 1, b: 2 }); // expect TS2322 (result is a number)
  const b = await c.context("post", { post_id: 1 });
  const t: string = b.data.get_post.title; // expect TS18048 (a function of the bundle may have failed)
  await c.call("update_post", { post_id: 1, titel: "typo" }); // expect TS2561 (unknown member, with a suggestion)
  createTypedClient({ baseUrl: "x", credentials: "always" }); // expect TS2322 (bad credentials mode)
  void n;
  void t;
}
