-- mixed.lua - the mixed workload: reads of the post context with, now and
-- then, an update_post mutation that makes one post's bundle stale.
--
-- The URL is the gateway's base (http://host:port); paths are built here.
-- Arguments after "--": WRITE_PERCENT READ_POSTS WRITE_POSTS TAG
--   WRITE_PERCENT  share of requests that are update_post (default 5)
--   READ_POSTS     reads pick a post in 1..READ_POSTS (default 1000)
--   WRITE_POSTS    writes pick a post in 1..WRITE_POSTS (default 900); the
--                  posts above it are left to the read-after-write checker,
--                  whose titles must not be overwritten by this load
--   TAG            goes into every written title (one per wrk process)
-- The bearer token comes from the environment variable BENCH_TOKEN.
-- Per-thread counters "reads" and "writes" are summed in the report.

dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

bench_counters = {"reads", "writes"}

local write_pct, read_posts, write_posts, tag, seq, post_headers

function init(args)
   write_pct = tonumber(args[1]) or 5
   read_posts = tonumber(args[2]) or 1000
   write_posts = tonumber(args[3]) or 900
   tag = args[4] or "mixed"
   math.randomseed(os.time() * 1000 + (id or 0) * 7919)
   seq = 0
   reads = 0
   writes = 0
   post_headers = {}
   for k, v in pairs(wrk.headers) do
      post_headers[k] = v
   end
   post_headers["Content-Type"] = "application/json"
   post_headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "")
end

function request()
   if math.random() * 100 < write_pct then
      writes = writes + 1
      seq = seq + 1
      local body = string.format(
         '{"function":"update_post","args":{"post_id":%d,"title":"%s %d %d"}}',
         math.random(1, write_posts), tag, id or 0, seq)
      return wrk.format("POST", "/api/mizan/call/", post_headers, body)
   end
   reads = reads + 1
   return wrk.format("GET", "/api/mizan/ctx/post/?post_id=" .. math.random(1, read_posts))
end
