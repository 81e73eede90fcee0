-- examples/bench/dwconv.lua: the depth-wise convolution (forward, input gradient, weight gradient and
-- all three) beside PyTorch on the same shapes, in one run.
--
--   build/bin/lark examples/bench/dwconv.lua [--threads N] [--reps R] [--R 32] [--K 31] [--no-torch]
--
-- Input (8, 384, R, R) float32, NCHW, groups = channels, padding K//2, stride 1, no bias; R in
-- {16, 32, 56} and K in {3, 5, 7, 13, 31, 51} unless --R / --K pick one; the SLaK triple
-- (51x5 + 5x51 + 5x5 on the same input, summed: lark.dwconv2d_sum) at R in {32, 56}. GFLOP/s count every tap (2 flops per
-- multiply-add, as CPU-ANCHORS.md does); "floor" is the time at the 2-core FMA peak (204 GFLOP/s)
-- for the taps that touch real input. PyTorch runs F.conv2d and aten.convolution_backward (what
-- autograd calls) with the same thread count. Medians of --reps runs after a warm-up.
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local lark = require "lark"
local util = require "bench_util"

local opts = util.options(arg, {reps = 5, threads = 2, R = 0, K = 0, N = 8, C = 384})
if not lark.dwconv2d then
  error("lark.dwconv2d is missing: lua/module.c must call lb_register_dwconv (lua/bind_dwconv.c)", 0)
end
local N, C = opts.N, opts.C
local PEAK = 204e9

-- the taps of a kh x kw kernel, padded (kh//2, kw//2), that touch a real element of an R x R map
local function real_taps(R, kh, kw)
  local function line(n, k)
    local s, p = 0, k // 2
    for o = 0, n - 1 do s = s + math.max(0, math.min(k, n + p - o) - math.max(0, p - o)) end
    return s
  end
  return line(R, kh) * line(R, kw)
end

-- cases: {label, R, list of kernels {kh, kw}}
local cases = {}
for _, R in ipairs({16, 32, 56}) do
  for _, K in ipairs({3, 5, 7, 13, 31, 51}) do
    if (opts.R == 0 or opts.R == R) and (opts.K == 0 or opts.K == K) then
      cases[#cases + 1] = {string.format("%dx%d", K, K), R, {{K, K}}}
    end
  end
end
for _, R in ipairs({32, 56}) do
  if (opts.R == 0 or opts.R == R) and opts.K == 0 then
    cases[#cases + 1] = {"SLaK 51x5+5x51+5x5", R, {{51, 5}, {5, 51}, {5, 5}}}
  end
end
local passes = {"fwd", "bwd_d", "bwd_w", "fwdbwd"}

-- PyTorch: one line per (case, pass), in the same order
local torch
if opts.torch then
  local body = {string.format("import torch.nn.functional as F\nN, C = %d, %d\ntorch.manual_seed(0)", N, C)}
  for _, c in ipairs(cases) do
    local R = c[2]
    body[#body + 1] = string.format("x = torch.randn(N, C, %d, %d); ks = []", R, R)
    for _, k in ipairs(c[3]) do
      body[#body + 1] = string.format("ks.append((torch.randn(C, 1, %d, %d), (%d, %d)))", k[1], k[2], k[1] // 2, k[2] // 2)
    end
    body[#body + 1] = string.format([[
gy = torch.randn(N, C, %d, %d)
def fwd():
    y = None
    for w, p in ks:
        o = F.conv2d(x, w, None, 1, p, 1, C); y = o if y is None else y + o
def bwd(mask):
    for w, p in ks:
        torch.ops.aten.convolution_backward(gy, x, w, None, [1, 1], list(p), [1, 1], False, [0, 0], C, mask)
def all3():
    fwd(); bwd([True, True, False])
reps = %d
print(med(fwd, reps)); print(med(lambda: bwd([True, False, False]), reps))
print(med(lambda: bwd([False, True, False]), reps)); print(med(all3, reps))]], R, R, opts.reps)
  end
  torch = util.torch(table.concat(body, "\n"), opts.threads)
end

print(string.format("depth-wise conv2d, input (%d, %d, R, R) float32, %d threads, median of %d runs%s", N, C,
  opts.threads, opts.reps, torch and (";  PyTorch " .. torch[#torch]) or ""))
print(string.format("%-20s %3s %-6s %10s %8s %9s %7s %11s %8s %8s", "kernel", "R", "pass", "lark ms", "GFLOP/s",
  "floor ms", "of peak", "PyTorch ms", "GFLOP/s", "speedup"))
local line_no = 0
for _, c in ipairs(cases) do
  local R = c[2]
  local x = lark.randn(N, C, R, R)
  local gy = lark.randn(N, C, R, R)
  local ks, flops, floor_flops = {}, 0, 0
  for _, k in ipairs(c[3]) do
    local p = {padding = {k[1] // 2, k[2] // 2}}
    ks[#ks + 1] = {w = lark.randn(C, 1, k[1], k[2]), p = p, kh = k[1], kw = k[2]}
    flops = flops + 2 * N * C * R * R * k[1] * k[2]
    floor_flops = floor_flops + 2 * N * C * real_taps(R, k[1], k[2])
  end
  local size = {N, C, R, R}
  local ws, ps = {}, {}
  for i, k in ipairs(ks) do ws[i], ps[i] = k.w, k.p end
  -- several kernels: the fused sum (one pass over each plane, one output)
  local function fwd()
    if #ks > 1 then return lark.dwconv2d_sum(x, ws, nil, ps):free() end
    lark.dwconv2d(x, ks[1].w, nil, ks[1].p):free()
  end
  local function bwd_d()
    if #ks > 1 then return lark.dwconv2d_sum_backward_input(gy, ws, size, ps):free() end
    lark.dwconv2d_backward_input(gy, ks[1].w, size, ks[1].p):free()
  end
  local function bwd_w()
    for _, k in ipairs(ks) do lark.dwconv2d_backward_weight(gy, x, {k.kh, k.kw}, k.p):free() end
  end
  local fns = {fwd, bwd_d, bwd_w, function() fwd(); bwd_d(); bwd_w() end}
  for pi, name in ipairs(passes) do
    local mult = name == "fwdbwd" and 3 or 1
    local s = util.time(fns[pi], opts.reps)
    local floor = mult * floor_flops / PEAK
    local line = string.format("%-20s %3d %-6s %10.2f %8.1f %9.2f %6.0f%%", c[1], R, name, s * 1e3,
      mult * flops / s / 1e9, floor * 1e3, 100 * floor / s)
    line_no = line_no + 1
    local ts = torch and tonumber(torch[line_no])
    if ts then line = line .. string.format(" %11.2f %8.1f %7.1fx", ts * 1e3, mult * flops / ts / 1e9, ts / s) end
    print(line)
  end
  x:free(); gy:free()
end
