-- wrk script: replays prepared requests, one per line as "<path> <signature-or-key> <json body>".
-- Each wrk thread takes every n-th line, so no two threads send the same request.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local file, mode, nthreads = args[1], args[2], tonumber(args[3])
  requests = {}
  local n = 0
  for line in io.lines(file) do
    if n % nthreads == id then
      local path, credential, body = line:match("^(%S+) (%S+) (.*)$")
      local headers = { ["Content-Type"] = "application/json" }
      if mode == "callback" then
        headers["x-seismic-signature"] = credential
      else
        headers["Authorization"] = "Bearer " .. credential
      end
      table.insert(requests, wrk.format("POST", path, headers, body))
    end
    n = n + 1
  end
  position = 0
end

function request()
  position = position + 1
  if position > #requests then
    position = 1
    wrapped = true
  end
  return requests[position]
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
