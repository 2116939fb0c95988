-- gzip.lua - GET one fixed URL, with or without "Accept-Encoding: gzip":
-- the gzip_bundle scenario's script. The request is built once per thread.
--
-- Arguments after "--": MODE
--   gzip    every request carries Accept-Encoding: gzip (the gateway
--           compresses the bundle)
--   plain   no Accept-Encoding (the same bundle, uncompressed)
-- wrk counts the bytes it reads (headers and bodies), which the report
-- divides by the request count: the bytes on the wire per answer.

dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")

local req

function init(args)
   if args[1] == "gzip" then
      wrk.headers["Accept-Encoding"] = "gzip"
   end
   req = wrk.format()
end

function request()
   return req
end
