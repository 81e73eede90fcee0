-- examples/bench/matmul.lua: lark.matmul beside OpenBLAS called directly (the same library, no
-- lark in between) and beside PyTorch, float32, in one run.
--
--   build/bin/lark examples/bench/matmul.lua [--threads N] [--reps R] [--no-torch]
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local lark = require "lark"
local util = require "bench_util"

local opts = util.options(arg, {reps = 9})

-- {name, batch, m, k, n, b transposed?}
local cases = {
  {"square 256", 1, 256, 256, 256},
  {"square 1024", 1, 1024, 1024, 1024},
  {"square 2048", 1, 2048, 2048, 2048},
  {"linear (8*196) x 512 -> 2048", 1, 1568, 512, 2048},
  {"linear, weight transposed", 1, 1568, 512, 2048, true},
  {"batched 64 x (128x64 @ 64x128)", 64, 128, 64, 128},
}

local function shapes(c)
  local b, m, k, n, tb = c[2], c[3], c[4], c[5], c[6]
  if b > 1 then return {b, m, k}, {b, k, n}, false end
  return {m, k}, tb and {n, k} or {k, n}, tb
end

-- OpenBLAS alone: examples/bench/openblas_gemm.c, built beside the lark executable
local bindir = (arg[-1] or "build/bin/lark"):match("^(.*)/[^/]*$") or "."
local function openblas(m, n, k)
  local p = io.popen(string.format("%s/bench_openblas_gemm %d %d %d %d %d 2>/dev/null", bindir, m, n, k, opts.reps,
    opts.threads))
  local line = p and p:read("l")
  if p then p:close() end
  local ms, gf = (line or ""):match("^(%S+) (%S+)$")
  return tonumber(ms), tonumber(gf)
end

local torch
if opts.torch then
  local body = {}
  for _, c in ipairs(cases) do
    local sa, sb, tb = shapes(c)
    body[#body + 1] = string.format("A = torch.rand(%s); B = torch.rand(%s)%s; print(med(lambda: A @ B, %d))",
      table.concat(sa, ","), table.concat(sb, ","), tb and ".t()" or "", opts.reps)
  end
  torch = util.torch(table.concat(body, "\n"), opts.threads)
end

print(string.format("float32 matmul, %d threads, median of %d runs%s", opts.threads, opts.reps,
  torch and (", PyTorch " .. torch[#torch]) or ""))
print(string.format("%-32s %9s %8s %12s %8s %11s %8s", "case", "lark ms", "GFLOP/s", "OpenBLAS ms", "GFLOP/s",
  "PyTorch ms", "GFLOP/s"))
for ci, c in ipairs(cases) do
  local sa, sb, tb = shapes(c)
  local A, B = lark.rand(sa), lark.rand(sb)
  if tb then B = B:t() end
  local s = util.time(function() lark.matmul(A, B):free() end, opts.reps)
  local flops = 2.0 * c[2] * c[3] * c[4] * c[5]
  local oms, ogf
  if c[2] == 1 then oms, ogf = openblas(c[3], c[5], c[4]) end
  local ts = torch and tonumber(torch[ci])
  print(string.format("%-32s %9.2f %8.1f %12s %8s %11s %8s", c[1], s * 1e3, flops / s / 1e9,
    oms and string.format("%.2f", oms) or "-", ogf and string.format("%.1f", ogf) or "-",
    ts and string.format("%.2f", ts * 1e3) or "-", ts and string.format("%.1f", flops / ts / 1e9) or "-"))
end
