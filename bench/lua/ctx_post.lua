-- ctx_post.lua - GET the post context, /api/mizan/ctx/post/?post_id=N, on
-- the path given in the URL (which must end with the context's slash).
--
-- Arguments after "--": MODE POSTS THREADS
--   random  N uniform in 1..POSTS: with a warmed cache, every fetch a hit.
--   scan    N cycles through 1..POSTS in order, each thread from its own
--           offset: against a least-recently-used cache smaller than POSTS
--           bundles, every key is evicted before it comes round again, so
--           every fetch is a miss.
-- POSTS defaults to 1000, THREADS (wrk's -t, to spread the offsets) to 1.

dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

local mode, posts, nthreads, n, prefix

function init(args)
   mode = args[1] or "random"
   posts = tonumber(args[2]) or 1000
   nthreads = tonumber(args[3]) or 1
   math.randomseed(os.time() * 1000 + (id or 0) * 7919)
   n = math.floor((id or 0) * posts / nthreads)
   prefix = wrk.path .. "?post_id="
end

function request()
   local post
   if mode == "scan" then
      post = n % posts + 1
      n = n + 1
   else
      post = math.random(1, posts)
   end
   return wrk.format(nil, prefix .. post)
end
