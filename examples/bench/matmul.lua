-- examples/bench/matmul.lua: lark.matmul beside OpenBLAS called directly (the same library, no
-- lark in between) and beside PyTorch, float32, in one run.
--
--   build/bin/lark examples/bench/matmul.lua [--threads N] [--reps R] [--no-torch]
local lark = require "lark"

local opts = {threads = lark.get_num_threads(), reps = 9, torch = true}
local i = 1
while arg and arg[i] do
  if arg[i] == "--threads" then opts.threads = tonumber(arg[i + 1]); i = i + 1
  elseif arg[i] == "--reps" then opts.reps = tonumber(arg[i + 1]); i = i + 1
  elseif arg[i] == "--no-torch" then opts.torch = false
  else error("matmul.lua: unknown option " .. arg[i]) end
  i = i + 1
end
lark.set_num_threads(opts.threads)

local function median(xs)
  table.sort(xs)
  local n = #xs
  return n % 2 == 1 and xs[(n + 1) // 2] or (xs[n // 2] + xs[n // 2 + 1]) / 2
end

-- (name, batch, m, k, n, transpose b?)
local cases = {
  {"square 256", 1, 256, 256, 256},
  {"square 1024", 1, 1024, 1024, 1024},
  {"square 2048", 1, 2048, 2048, 2048},
  {"linear (8*196) x 512 -> 2048", 1, 1568, 512, 2048},
  {"linear, weight transposed", 1, 1568, 512, 2048, true},
  {"batched 64 x (128x64 @ 64x128)", 64, 128, 64, 128},
}

local bindir = (arg and arg[-1] or "build/bin/lark"):match("^(.*)/[^/]*$") or "."
local function openblas(m, n, k)
  local p = io.popen(string.format("%s/bench_openblas_gemm %d %d %d %d %d 2>/dev/null", bindir, m, n, k, opts.reps,
    opts.threads))
  local line = p and p:read("l")
  if p then p:close() end
  local ms, gf = (line or ""):match("^(%S+) (%S+)$")
  return tonumber(ms), tonumber(gf)
end

local torch = {}
if opts.torch then
  local lines = {"import time, torch, statistics", "torch.set_num_threads(" .. opts.threads .. ")"}
  lines[#lines + 1] = [[
def med(fn, reps):
    fn(); ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)]]
  for _, c in ipairs(cases) do
    local b, m, k, n, tb = c[2], c[3], c[4], c[5], c[6]
    local A = b > 1 and string.format("torch.rand(%d,%d,%d)", b, m, k) or string.format("torch.rand(%d,%d)", m, k)
    local B = b > 1 and string.format("torch.rand(%d,%d,%d)", b, k, n)
      or (tb and string.format("torch.rand(%d,%d).t()", n, k) or string.format("torch.rand(%d,%d)", k, n))
    lines[#lines + 1] = string.format("A = %s; B = %s; print(med(lambda: torch.matmul(A, B), %d))", A, B, opts.reps)
  end
  lines[#lines + 1] = "print(torch.__version__)"
  local f = io.open("/tmp/lark_bench_matmul.py", "w")
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
  local p = io.popen("/usr/bin/python3 /tmp/lark_bench_matmul.py 2>/dev/null")
  for line in p:lines() do torch[#torch + 1] = line end
  p:close()
  os.remove("/tmp/lark_bench_matmul.py")
end
local have_torch = #torch == #cases + 1

print(string.format("float32 matmul, %d threads, median of %d runs%s", opts.threads, opts.reps,
  have_torch and (", PyTorch " .. torch[#torch]) or ""))
print(string.format("%-34s %9s %8s %12s %8s %11s %8s", "case", "lark ms", "GFLOP/s", "OpenBLAS ms", "GFLOP/s",
  "PyTorch ms", "GFLOP/s"))
for ci, c in ipairs(cases) do
  local name, b, m, k, n, tb = c[1], c[2], c[3], c[4], c[5], c[6]
  local A = b > 1 and lark.rand(b, m, k) or lark.rand(m, k)
  local B = b > 1 and lark.rand(b, k, n) or (tb and lark.rand(n, k):t() or lark.rand(k, n))
  lark.matmul(A, B)
  local ts = {}
  for r = 1, opts.reps do
    local t0 = lark.clock()
    local C = lark.matmul(A, B)
    ts[r] = lark.clock() - t0
    C:free()
  end
  local s = median(ts)
  local flops = 2.0 * b * m * n * k
  local oms, ogf
  if b == 1 then oms, ogf = openblas(m, n, k) end
  local tms = have_torch and tonumber(torch[ci]) or nil
  print(string.format("%-34s %9.2f %8.1f %12s %8s %11s %8s", name, s * 1e3, flops / s / 1e9,
    oms and string.format("%.2f", oms) or "-", ogf and string.format("%.1f", ogf) or "-",
    tms and string.format("%.2f", tms * 1e3) or "-", tms and string.format("%.1f", flops / tms / 1e9) or "-"))
end
