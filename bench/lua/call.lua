-- call.lua - POST /api/mizan/call/ with one fixed body, as a static request
-- (wrk builds it once per thread: its cheapest path, so the load generator
-- costs as little as it can).
--
-- Arguments after "--": the function ("ping" or "add").
--   ping  {"function":"ping"}
--   add   {"function":"add","args":{"a":40,"b":2}}

dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function init(args)
   local fn = args[1] or "ping"
   if fn == "add" then
      wrk.body = '{"function":"add","args":{"a":40,"b":2}}'
   else
      wrk.body = string.format('{"function":"%s"}', fn)
   end
end
