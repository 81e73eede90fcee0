-- examples/bench/bench_util.lua: what every benchmark shares: options, medians, and running the PyTorch
-- twin of a benchmark in the same run.
local lark = require "lark"

local util = {}

--- util.options(arg, defaults): parses --threads N, --reps R, --no-torch and any --key V named in
-- defaults (a number where the default is one, else the string); sets lark's thread count. Unknown options are an error.
function util.options(args, defaults)
  local opts = {threads = lark.get_num_threads(), reps = 9, torch = true}
  for k, v in pairs(defaults or {}) do opts[k] = v end
  local i = 1
  while args and args[i] do
    local key = args[i]:match("^%-%-([%w_-]+)$")
    if key == "no-torch" then
      opts.torch = false
    elseif key and opts[key] ~= nil and type(opts[key]) == "number" and args[i + 1] then
      local v = tonumber(args[i + 1])
      if not v then error(string.format("option --%s: expected a number, got '%s'", key, args[i + 1]), 0) end
      opts[key] = math.tointeger(v) or v
      i = i + 1
    elseif key and type(opts[key]) == "string" and args[i + 1] then
      opts[key] = args[i + 1]
      i = i + 1
    else
      error("unknown option " .. tostring(args[i]) .. " (expected --threads N, --reps R, --no-torch)", 0)
    end
    i = i + 1
  end
  lark.set_num_threads(opts.threads)
  return opts
end

--- util.median(list)
function util.median(xs)
  table.sort(xs)
  local n = #xs
  return n % 2 == 1 and xs[(n + 1) // 2] or (xs[n // 2] + xs[n // 2 + 1]) / 2
end

--- util.time(fn, reps): median wall seconds of fn() over reps runs, after one warm-up run.
function util.time(fn, reps)
  fn()
  local ts = {}
  for r = 1, reps do
    local t0 = lark.clock()
    fn()
    ts[r] = lark.clock() - t0
  end
  return util.median(ts)
end

-- The Python prelude of every PyTorch twin: med(fn, reps) mirrors util.time.
local prelude = [[
import time, statistics, torch
torch.set_num_threads(%d)
def med(fn, reps):
    fn(); ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)
]]

--- util.torch(body, threads): runs a PyTorch script (Debian's python3-torch) and returns its
-- output lines, the last being torch's version; nil when PyTorch is not installed.
function util.torch(body, threads)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(string.format(prelude, threads), body, "\nprint(torch.__version__)\n")
  f:close()
  local p = io.popen("/usr/bin/python3 " .. path .. " 2>/dev/null")
  local lines = {}
  for line in p:lines() do lines[#lines + 1] = line end
  p:close()
  os.remove(path)
  return #lines > 0 and lines or nil
end

return util
