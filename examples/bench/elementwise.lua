-- examples/bench/elementwise.lua: large contiguous elementwise ops beside the machine's memcpy
-- bandwidth and beside PyTorch on the same shapes, in one run.
--
--   build/bin/lark examples/bench/elementwise.lua [--threads N] [--reps R] [--n ELEMENTS] [--no-torch]
--
-- Bandwidth counts the bytes an op must move: c = a + b reads 2 arrays and writes 1. The default
-- 2^27 float32 elements (512 MB per array) is beyond the 260 MB L3 of these machines, so this is
-- DRAM. Medians of R runs; "of memcpy" is lark's bandwidth over the median memcpy bandwidth.
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local lark = require "lark"
local util = require "bench_util"

local opts = util.options(arg, {reps = 11, n = 1 << 27})
local N, bytes = opts.n, 4 * opts.n
local a, b, out = lark.rand(N), lark.full({N}, 0.25), lark.empty(N)

-- {name, arrays moved, lark, the PyTorch expression}
local cases = {
  {"c = a + b (new tensor)", 3, function() local c = a + b; c:free() end, "a + b"},
  {"a:add_(b) in place", 3, function() a:add_(b) end, "a.add_(b)"},
  {"a:mul_(1.0) in place", 2, function() a:mul_(1.0) end, "a.mul_(1.0)"},
  {"c = a * 0.5 (new tensor)", 2, function() local c = a * 0.5; c:free() end, "a * 0.5"},
  {"c = a:exp() (new tensor)", 2, function() local c = a:exp(); c:free() end, "a.exp()"},
  {"c = a:sigmoid() (new tensor)", 2, function() local c = a:sigmoid(); c:free() end, "a.sigmoid()"},
  {"c = a:tanh() (new tensor)", 2, function() local c = a:tanh(); c:free() end, "a.tanh()"},
  {"out:copy_(a)", 2, function() out:copy_(a) end, "out.copy_(a)"},
}

local torch
if opts.torch then
  local body = {string.format("N = %d\na = torch.rand(N); b = torch.full((N,), 0.25); out = torch.empty(N)", N)}
  for _, c in ipairs(cases) do body[#body + 1] = string.format("print(med(lambda: %s, %d))", c[4], opts.reps) end
  torch = util.torch(table.concat(body, "\n"), opts.threads)
end

local memcpy = {}
for r = 1, opts.reps do memcpy[r] = lark.memcpy_bandwidth(bytes, 1) end
memcpy = util.median(memcpy)
print(string.format("elementwise ops on %d float32 elements (%d MB per array), %d threads, median of %d runs",
  N, bytes >> 20, opts.threads, opts.reps))
print(string.format("memcpy bandwidth (read + write): %.1f GB/s%s", memcpy,
  torch and (";  PyTorch " .. torch[#torch]) or ""))
print(string.format("%-30s %9s %7s %9s %11s %7s %8s", "op", "lark ms", "GB/s", "of memcpy", "PyTorch ms", "GB/s",
  "speedup"))
for k, c in ipairs(cases) do
  local s = util.time(c[3], opts.reps)
  local gbs = c[2] * bytes / s / 1e9
  local line = string.format("%-30s %9.2f %7.1f %8.0f%%", c[1], s * 1e3, gbs, 100 * gbs / memcpy)
  local ts = torch and tonumber(torch[k])
  if ts then line = line .. string.format(" %11.2f %7.1f %7.2fx", ts * 1e3, c[2] * bytes / ts / 1e9, ts / s) end
  print(line)
end
