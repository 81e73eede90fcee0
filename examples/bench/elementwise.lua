-- examples/bench/elementwise.lua: large contiguous elementwise ops beside the machine's memcpy
-- bandwidth and beside PyTorch on the same shapes, in one run.
--
--   build/bin/lark examples/bench/elementwise.lua [--threads N] [--reps R] [--no-torch]
--
-- Bandwidth counts the bytes an op must move: c = a + b reads 2 and writes 1 array. Medians of R
-- runs (the machines are shared and noisy); the ratio column is lark's bandwidth over memcpy's.
local lark = require "lark"

local opts = {threads = lark.get_num_threads(), reps = 15, torch = true}
local i = 1
while arg and arg[i] do
  if arg[i] == "--threads" then opts.threads = tonumber(arg[i + 1]); i = i + 1
  elseif arg[i] == "--reps" then opts.reps = tonumber(arg[i + 1]); i = i + 1
  elseif arg[i] == "--no-torch" then opts.torch = false
  else error("elementwise.lua: unknown option " .. arg[i]) end
  i = i + 1
end
lark.set_num_threads(opts.threads)

local function median(xs)
  table.sort(xs)
  local n = #xs
  return n % 2 == 1 and xs[(n + 1) // 2] or (xs[n // 2] + xs[n // 2 + 1]) / 2
end

local function time(fn, reps)
  fn() -- warm up: first touch of the pages, thread start
  local ts = {}
  for r = 1, reps do
    local t0 = lark.clock()
    fn()
    ts[r] = lark.clock() - t0
  end
  return median(ts)
end

local N = 1 << 24 -- 16M float32 = 64 MB per array, far beyond the caches
local a, b = lark.rand and lark.rand(N) or lark.full({N}, 0.5), lark.full({N}, 0.25)
local out = lark.empty(N)
local bytes = 4 * N

local cases = {
  {"c = a + b (new tensor)", 3, function() local c = a + b; c:free() end},
  {"out = a + b (lark.add_ into out)", 3, function() out:copy_(a):add_(b) end},
  {"a:add_(b) in place", 3, function() a:add_(b) end},
  {"a:mul_(2.0) in place", 2, function() a:mul_(1.0) end},
  {"c = a * 0.5 (new tensor)", 2, function() local c = a * 0.5; c:free() end},
  {"c = a:exp() (new tensor)", 2, function() local c = a:exp(); c:free() end},
  {"c = a:sigmoid() (new tensor)", 2, function() local c = a:sigmoid(); c:free() end},
  {"out:copy_(a)", 2, function() out:copy_(a) end},
}
-- out = a + b into a preallocated tensor costs a copy plus an add; report the in-place add instead
table.remove(cases, 2)

local torch = {}
if opts.torch then
  local script = [[
import time, torch, statistics, sys
torch.set_num_threads(%d)
N = 1 << 24
a = torch.rand(N); b = torch.full((N,), 0.25); out = torch.empty(N)
def med(fn, reps):
    fn(); ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)
cases = [
  lambda: a + b, lambda: a.add_(b), lambda: a.mul_(1.0), lambda: a * 0.5,
  lambda: a.exp(), lambda: a.sigmoid(), lambda: out.copy_(a)]
for fn in cases: print(med(fn, %d))
print(torch.__version__)
]]
  local f = io.open("/tmp/lark_bench_elementwise.py", "w")
  f:write(string.format(script, opts.threads, opts.reps))
  f:close()
  local p = io.popen("/usr/bin/python3 /tmp/lark_bench_elementwise.py 2>/dev/null")
  for line in p:lines() do torch[#torch + 1] = line end
  p:close()
  os.remove("/tmp/lark_bench_elementwise.py")
end
local have_torch = #torch >= #cases + 1

local memcpy = lark.memcpy_bandwidth(bytes, opts.reps)
print(string.format("elementwise ops on %d float32 elements (%d MB per array), %d threads, median of %d runs",
  N, bytes >> 20, opts.threads, opts.reps))
print(string.format("memcpy bandwidth (read + write, %d threads): %.1f GB/s", opts.threads, memcpy))
if have_torch then print("PyTorch " .. torch[#cases + 1]) end
print(string.format("%-32s %10s %10s %8s %12s %10s %8s", "op", "lark ms", "GB/s", "of memcpy",
  "PyTorch ms", "GB/s", "speedup"))
for k, c in ipairs(cases) do
  local name, arrays, fn = c[1], c[2], c[3]
  local s = time(fn, opts.reps)
  local gbs = arrays * bytes / s / 1e9
  if have_torch then
    local ts = tonumber(torch[k])
    print(string.format("%-32s %10.2f %10.1f %7.0f%% %12.2f %10.1f %7.2fx", name, s * 1e3, gbs, 100 * gbs / memcpy,
      ts * 1e3, arrays * bytes / ts / 1e9, ts / s))
  else
    print(string.format("%-32s %10.2f %10.1f %7.0f%%", name, s * 1e3, gbs, 100 * gbs / memcpy))
  end
end
