/*
 * app.ts - the blog page: the feed, one post with its author and comments,
 * a sign-in (a pasted token), editing a title and adding a comment.
 *
 * Everything goes through the generated client (blog-client.ts): the page
 * subscribes to the `feed` and `post` contexts and renders whatever bundle
 * arrives; it never refetches by hand. A mutation's invalidation list
 * refreshes this page, the gateway's events refresh every other page.
 *
 * Where the gateway is: `?api=URL`, else config.json beside the page (the
 * demo's static server writes it), else http://127.0.0.1:8080. Which post:
 * `?post=N` (default 1). A token may also arrive as `#token=...` (the demo
 * prints such a link); it is kept in sessionStorage, never in the URL.
 *
 * Cookie mode (`?cookie=1`): the token travels in the gateway's cookie
 * (PROTOCOL section 4), the client sends credentials, and the page learns
 * who is signed in from the user-scoped `me` context.
 *
 * For the browser test, window.__mizan records when invalidation events
 * arrive and when a title reaches the DOM (absolute milliseconds:
 * performance.timeOrigin + performance.now()).
 */
import { MizanError, NetworkError, type Bundle } from "@mizan/client";
import { createTypedClient, type PostData, type PostParams, type FeedData, type FeedParams, type TypedClient } from "./blog-client.js";

interface Probe {
  events: { context: string; params?: Record<string, unknown>; at: number }[];
  titles: { title: string; at: number }[];
  acks: { title: string; at: number }[];
  ready: boolean;
}
const probe: Probe = { events: [], titles: [], acks: [], ready: false };
(window as unknown as { __mizan: Probe }).__mizan = probe;
const now = () => performance.timeOrigin + performance.now();

function $(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`#${id} missing`);
  return el;
}
const input = (id: string) => $(id) as HTMLInputElement;
const button = (id: string) => $(id) as HTMLButtonElement;

const query = new URLSearchParams(location.search);
let postId = Math.max(1, Number.parseInt(query.get("post") ?? "1", 10) || 1);
let token: string | null = sessionStorage.getItem("mizan.token");
const cookieMode = query.get("cookie") === "1";
let client: TypedClient | null = null;
/** Unsubscribe functions of the page's other subscriptions (feed, me). */
let unsubscribe: (() => void)[] = [];
/** Unsubscribe function of the shown post. */
let postOff: (() => void) | null = null;
let liveTimer: ReturnType<typeof setInterval> | undefined;

function status(msg: string, ok = false): void {
  const el = $("status");
  el.textContent = msg;
  el.style.color = ok ? "#070" : "";
}

function describe(e: unknown): string {
  if (e instanceof MizanError) return `${e.code}: ${e.message}`;
  if (e instanceof NetworkError) return `network error: ${e.message}`;
  return String(e);
}

async function apiBase(): Promise<string> {
  const fromQuery = query.get("api");
  if (fromQuery) return fromQuery;
  try {
    const res = await fetch("config.json", { cache: "no-store" });
    if (res.ok) {
      const cfg = (await res.json()) as { api?: string };
      if (typeof cfg.api === "string") return cfg.api;
    }
  } catch {
    /* no config.json: the default */
  }
  return "http://127.0.0.1:8080";
}

function renderFeed(b: Bundle<"feed", FeedParams, FeedData>): void {
  const ul = $("feed");
  const posts = b.data.list_posts ?? [];
  ul.replaceChildren(
    ...posts.map((p) => {
      const li = document.createElement("li");
      li.dataset["postId"] = String(p.id);
      if (p.id === postId) li.className = "current";
      const a = document.createElement("a");
      a.href = `?post=${p.id}`;
      a.textContent = p.title;
      a.addEventListener("click", (ev) => {
        ev.preventDefault();
        show(p.id);
      });
      li.append(a);
      return li;
    }),
  );
  if (b.errors["list_posts"]) status(`feed: ${b.errors["list_posts"].code}`);
}

function renderPost(b: Bundle<"post", PostParams, PostData>): void {
  const post = b.data.get_post;
  const title = $("post-title");
  if (post === undefined) {
    title.textContent = b.errors["get_post"]?.code === "NOT_FOUND" ? "No such post" : "Unavailable";
  } else if (title.textContent !== post.title) {
    title.textContent = post.title;
    probe.titles.push({ title: post.title, at: now() });
  }
  $("post-body").textContent = post?.body ?? "";
  const author = b.data.get_author;
  $("post-author").textContent = author ? `by ${author.name} (${author.posts} post${author.posts === 1 ? "" : "s"})` : "";
  const comments = b.data.list_comments ?? [];
  $("comment-count").textContent = String(comments.length);
  $("comments").replaceChildren(
    ...comments.map((c) => {
      const li = document.createElement("li");
      li.dataset["commentId"] = String(c.id);
      const who = document.createElement("span");
      who.className = "author";
      who.textContent = c.author;
      li.append(who, document.createTextNode(c.text));
      return li;
    }),
  );
  probe.ready = true;
  document.body.dataset["ready"] = "1";
}

function signedIn(sub: string | null): void {
  $("whoami").textContent = sub ? `signed in as ${sub}` : "not signed in";
  button("signout").hidden = !sub;
  for (const id of ["title-input", "comment-input"]) input(id).disabled = !sub;
  for (const id of ["title-save", "comment-add"]) button(id).disabled = !sub;
}

function subscribePost(): void {
  if (client === null) return;
  postOff?.();
  postOff = client.subscribe("post", { post_id: postId }, (b) => renderPost(b), (e) => status(describe(e)));
}

function show(id: number): void {
  postId = id;
  history.pushState(null, "", `?${new URLSearchParams({ ...Object.fromEntries(query), post: String(id) })}`);
  $("post-title").textContent = "…";
  subscribePost();
  for (const li of Array.from($("feed").children) as HTMLElement[]) {
    li.className = li.dataset["postId"] === String(id) ? "current" : "";
  }
}

async function start(): Promise<void> {
  for (const off of unsubscribe) off();
  unsubscribe = [];
  postOff?.();
  postOff = null;
  client?.close();
  const base = await apiBase();
  $("api").textContent = base;
  const c = createTypedClient({
    baseUrl: base,
    token: () => token,
    ...(cookieMode ? { credentials: "include" as const } : {}),
    onInvalidate: (t, source) => {
      if (source === "event") probe.events.push({ context: t.context, ...(t.params ? { params: t.params } : {}), at: now() });
    },
  });
  client = c;
  unsubscribe.push(c.subscribe("feed", {}, renderFeed, (e) => status(describe(e))));
  subscribePost();
  signedIn(null);
  if (cookieMode && token === null) {
    unsubscribe.push(
      c.subscribe("me", {}, (b) => signedIn(b.data.whoami?.sub ?? null), () => signedIn(null)),
    );
  } else if (token !== null) {
    try {
      const me = await c.fn.whoami();
      signedIn(me.sub);
    } catch (e) {
      status(`sign-in: ${describe(e)}`);
      token = null;
      sessionStorage.removeItem("mizan.token");
    }
  }
  const live = () => {
    $("live").textContent = c.stats.streamConnected ? "connected" : "reconnecting…";
  };
  clearInterval(liveTimer);
  liveTimer = setInterval(live, 500);
  live();
}

$("signin-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const t = input("token").value.trim();
  if (t === "") return;
  token = t;
  sessionStorage.setItem("mizan.token", t);
  input("token").value = "";
  status("");
  void start();
});

button("signout").addEventListener("click", () => {
  token = null;
  sessionStorage.removeItem("mizan.token");
  void start();
});

$("edit-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (client === null) return;
  const title = input("title-input").value.trim();
  if (title === "") return;
  try {
    const post = await client.fn.update_post({ post_id: postId, title });
    probe.acks.push({ title: post.title, at: now() });
    status("title saved", true);
  } catch (e) {
    status(describe(e));
  }
});

$("comment-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (client === null) return;
  const text = input("comment-input").value.trim();
  if (text === "") return;
  try {
    await client.fn.add_comment({ post_id: postId, text });
    input("comment-input").value = "";
    status("comment added", true);
  } catch (e) {
    status(describe(e));
  }
});

const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) {
  token = fromHash;
  sessionStorage.setItem("mizan.token", fromHash);
  history.replaceState(null, "", location.pathname + location.search);
}
void start();
