-- wrk script for the overload cell: POST one body, count the answers by status and the Retry-After values
-- answered, print one JSON line.
-- wrk -s bench/overload.lua URL -- BODY_FILE CONTENT_TYPE [honour]
-- honour: a connection answered 503 or 429 waits its Retry-After plus a random 0-50 % more before its next
-- request, as docs/overload.md asks of clients (and modelapi's own client does): without the jitter, clients
-- refused together come back together, a second later, as one burst. wrk's Lua state is per thread, not per
-- connection: response() runs for the answer a connection read and delay() for the next connection about to
-- write, and several answers may be read before the first of those writes. So every answer's wait is queued (0
-- for a success) and each write takes the oldest: wrk registers a connection's next write as it reads its
-- answer, and the writes come in that order, so each connection takes its own answer's wait. (Queuing the
-- refusals' waits alone, a served connection whose write came first took a refused one's wait, and that one
-- retried at once: after a burst of refusals, the served clients slept too. docs/overload-log.md, 2026-12-06.)
-- The pairing assumes connections stay open: a reconnect calls delay() once more (bench/overload.py keeps the
-- server's idle connections 60 s, past the longest Retry-After).

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   math.randomseed(os.time() + math.floor(os.clock() * 1e6))
   local f = assert(io.open(args[1], "rb"))
   wrk.body = f:read("*a")
   f:close()
   wrk.method = "POST"
   wrk.headers["Content-Type"] = args[2]
   honour = args[3] == "honour"
   waits = {}  -- queued Retry-After waits, ms: first in, first out
   first, last = 1, 0
   statuses = {}
   retry_after = {}  -- the Retry-After values answered (seconds, as sent), counted
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   local wait = 0
   if status == 503 or status == 429 then
      local given = tonumber(headers["retry-after"] or headers["Retry-After"])
      if given then
         retry_after[given] = (retry_after[given] or 0) + 1
      end
      wait = (given or 1) * 1000 * (1 + 0.5 * math.random())
   end
   if honour then
      last = last + 1
      waits[last] = wait
   end
end

function delay()
   if first > last then
      return 0
   end
   local ms = waits[first]
   waits[first] = nil
   first = first + 1
   return ms
end

-- a per-thread table of counts (statuses, Retry-After values), summed over the threads, as JSON members
local function summed(name)
   local total = {}
   for _, thread in ipairs(threads) do
      for key, n in pairs(thread:get(name)) do
         total[key] = (total[key] or 0) + n
      end
   end
   local parts = {}
   for key, n in pairs(total) do
      table.insert(parts, string.format('"%d": %d', key, n))
   end
   return table.concat(parts, ", ")
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "errors_connect": %d, "errors_read": %d, "errors_write": %d, '
      .. '"errors_timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, "statuses": {%s}, "retry_after": {%s}}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.max, summed("statuses"), summed("retry_after")))
end
