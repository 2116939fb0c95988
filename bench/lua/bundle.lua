-- bundle.lua - GET one fixed URL (a static wrk request) and, on request,
-- check every answer: the upstream_bundle scenarios' script.
--
-- Arguments after "--": MODE PATH...
--   check    every response is checked: a good bundle has status 200, an
--            empty "errors" object and, for each PATH, the upstream's own
--            answer to that path ("uri":"PATH", which the ceiling server
--            echoes), so a bundle with a missing, failed or misrouted
--            function counts as bad
--   nocheck  no response hook at all (wrk then skips reading headers and
--            bodies into Lua): the ceiling side, whose answer is not a
--            bundle and which must not be slowed down by the check
-- The per-thread counters "bundles_ok" and "bundles_bad" are summed in
-- the report; with nocheck both stay 0.

dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

bench_counters = {"bundles_ok", "bundles_bad"}

local marks

function init(args)
   bundles_ok = 0
   bundles_bad = 0
   marks = {'"errors":{}'}
   for i = 2, #args do
      table.insert(marks, string.format('"uri":"%s"', args[i]))
   end
   if args[1] ~= "check" then
      -- wrk looks for a response function after init(): none, no body parsing.
      response = nil
   end
end

function response(status, headers, body)
   if status ~= 200 or body == nil then
      bundles_bad = bundles_bad + 1
      return
   end
   for _, m in ipairs(marks) do
      if not string.find(body, m, 1, true) then
         bundles_bad = bundles_bad + 1
         return
      end
   end
   bundles_ok = bundles_ok + 1
end
