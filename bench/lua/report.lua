-- report.lua - shared by the bench harness's wrk scripts (loaded with
-- dofile from each of them).
--
-- setup() numbers the wrk threads: every thread's Lua state gets a global
-- `id` (0, 1, ...) before its init() runs, so scripts can seed their random
-- generators and split key ranges per thread.
--
-- done() prints the whole run as one line, "BENCH_JSON {...}", that the
-- harness picks out of wrk's output: request and byte counts, wrk's error
-- counters (status counts responses with a status of 400 or more) and the
-- latency distribution in microseconds, with the percentiles the report
-- uses (p50, p90, p99, p99.9). A script that keeps per-thread counters
-- names them in the global table `bench_counters`; their sums over all
-- threads appear under "counters".

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

local function num(x)
   return string.format("%.0f", tonumber(x) or 0)
end

function done(summary, latency, requests)
   local counters = {}
   for _, name in ipairs(bench_counters or {}) do
      local total = 0
      for _, t in ipairs(threads) do
         total = total + (tonumber(t:get(name)) or 0)
      end
      table.insert(counters, string.format('"%s":%s', name, num(total)))
   end
   local e = summary.errors
   io.write("BENCH_JSON {",
      '"requests":', num(summary.requests),
      ',"duration_us":', num(summary.duration),
      ',"bytes":', num(summary.bytes),
      ',"threads":', num(#threads),
      ',"errors":{"connect":', num(e.connect), ',"read":', num(e.read),
      ',"write":', num(e.write), ',"status":', num(e.status),
      ',"timeout":', num(e.timeout), '}',
      ',"latency_us":{"min":', num(latency.min),
      ',"mean":', string.format("%.1f", latency.mean),
      ',"stdev":', string.format("%.1f", latency.stdev),
      ',"max":', num(latency.max),
      ',"p50":', num(latency:percentile(50)),
      ',"p90":', num(latency:percentile(90)),
      ',"p99":', num(latency:percentile(99)),
      ',"p99_9":', num(latency:percentile(99.9)), '}',
      ',"counters":{', table.concat(counters, ","), '}',
      "}\n")
end
