// usage.ts - what a typed program does with the generated blog client: it
// must compile under --strict with no error (the counterpart of misuse.ts).
import { createTypedClient, type PostData } from "../../../../examples/blog/web/blog-client.js";
import { MizanError, NetworkError, createClient, type Bundle } from "@mizan/client";

export async function usage(): Promise<string[]> {
  const c = createTypedClient({ baseUrl: "http://127.0.0.1:8080", token: () => "t" });
  const sum: number = await c.call("add", { a: 1, b: 2 });
  const pong: "pong" = await c.call("ping");
  const pong2 = await c.fn.ping();
  const post = await c.fn.update_post({ post_id: 1, title: "x" });
  const title: string = post.title;
  const feed = await c.call("list_posts", {});
  const b: Bundle<"post", { post_id: number }, PostData> = await c.context("post", { post_id: 1 });
  const comments = b.data.list_comments ?? [];
  const off = c.subscribe("feed", {}, (x) => x.data.list_posts?.map((p) => p.id));
  off();
  try {
    await c.fn.boom();
  } catch (e) {
    if (e instanceof MizanError) return [e.code, String(e.status)];
    if (e instanceof NetworkError) return [e.message];
  }
  // The untyped client accepts any name.
  const any = createClient({ baseUrl: "http://127.0.0.1:8080" });
  await any.call("whatever", { x: 1 });
  await any.call("whatever");
  c.close();
  return [String(sum), pong, pong2, title, String(feed.length), String(comments.length)];
}
