-- examples/bench/sparse_dwconv.lua: the masked (sparse) depth-wise convolution at densities 1.0,
-- 0.6, 0.3 and 0.1 beside lark's dense kernel and PyTorch, forward, input gradient and weight
-- gradient, in one run.
--
--   build/bin/lark examples/bench/sparse_dwconv.lua [--threads N] [--reps R] [--R 32] [--K 31] [--no-torch]
--
-- Input (8, 384, R, R) float32, padding K//2, stride 1, R in {32, 56}, K in {13, 31, 51} and the
-- SLaK triple (51x5 + 5x51 + 5x5, each with its own mask, merged into one pass). Masks are
-- Bernoulli draws at the density (as lark.sparse draws them). "dense" is lark.dwconv2d (or
-- lark.dwconv2d_sum and three weight gradients) on the same weights; each density column is
-- lark.dwconv2d_masked* in its default ("auto") mode, which runs the sparse kernels where they are
-- faster, and its speedup over dense. "sparse@1.0" forces the sparse kernels on a full mask: the
-- price of the sparse tile itself. PyTorch runs what SLaK's official code runs at any density: the
-- dense F.conv2d on weight * mask (and its backward). Medians of --reps runs after a warm-up.
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local lark = require "lark"
local util = require "bench_util"

local opts = util.options(arg, {reps = 5, threads = 2, R = 0, K = 0, N = 8, C = 384})
local N, C = opts.N, opts.C
local densities = {1.0, 0.6, 0.3, 0.1}

local cases = {}
for _, R in ipairs({32, 56}) do
  if opts.R == 0 or opts.R == R then
    for _, K in ipairs({13, 31, 51}) do
      if opts.K == 0 or opts.K == K then cases[#cases + 1] = {string.format("%dx%d", K, K), R, {{K, K}}} end
    end
    if opts.K == 0 then cases[#cases + 1] = {"SLaK 51x5+5x51+5x5", R, {{51, 5}, {5, 51}, {5, 5}}} end
  end
end
local passes = {"fwd", "bwd_d", "bwd_w"}

local torch
if opts.torch then
  local body = {string.format("import torch.nn.functional as F\nN, C = %d, %d\ntorch.manual_seed(0)", N, C)}
  for _, c in ipairs(cases) do
    local R = c[2]
    body[#body + 1] = string.format("x = torch.randn(N, C, %d, %d); gy = torch.randn(N, C, %d, %d); ks = []", R, R, R, R)
    for _, k in ipairs(c[3]) do
      body[#body + 1] = string.format("ks.append((torch.randn(C, 1, %d, %d) * (torch.rand(C, 1, %d, %d) < 0.6), (%d, %d)))",
        k[1], k[2], k[1], k[2], k[1] // 2, k[2] // 2)
    end
    body[#body + 1] = string.format([[
def fwd():
    y = None
    for w, p in ks:
        o = F.conv2d(x, w, None, 1, p, 1, C); y = o if y is None else y + o
def bwd(mask):
    for w, p in ks:
        torch.ops.aten.convolution_backward(gy, x, w, None, [1, 1], list(p), [1, 1], False, [0, 0], C, mask)
reps = %d
print(med(fwd, reps)); print(med(lambda: bwd([True, False, False]), reps))
print(med(lambda: bwd([False, True, False]), reps))]], opts.reps)
  end
  torch = util.torch(table.concat(body, "\n"), opts.threads)
end

print(string.format("masked depth-wise conv2d, input (%d, %d, R, R) float32, %d threads, median of %d runs%s", N, C,
  opts.threads, opts.reps, torch and (";  PyTorch " .. torch[#torch]) or ""))
local head = string.format("%-19s %3s %-5s %8s", "kernel", "R", "pass", "dense ms")
for _, d in ipairs(densities) do head = head .. string.format(" %15s", string.format("d=%.1f ms (x)", d)) end
head = head .. string.format(" %10s", "sparse@1.0")
if torch then head = head .. string.format(" %11s", "PyTorch ms") end
print(head)

local line_no = 0
for _, c in ipairs(cases) do
  local R = c[2]
  local x, gy = lark.randn(N, C, R, R), lark.randn(N, C, R, R)
  local size = {N, C, R, R}
  local ws, ps, kss = {}, {}, {}
  for i, k in ipairs(c[3]) do
    ws[i], ps[i], kss[i] = lark.randn(C, 1, k[1], k[2]), {padding = {k[1] // 2, k[2] // 2}}, {k[1], k[2]}
  end
  local one = #ws == 1
  local dense = {
    function() if one then lark.dwconv2d(x, ws[1], nil, ps[1]):free() else lark.dwconv2d_sum(x, ws, nil, ps):free() end end,
    function()
      if one then lark.dwconv2d_backward_input(gy, ws[1], size, ps[1]):free()
      else lark.dwconv2d_sum_backward_input(gy, ws, size, ps):free() end
    end,
    function() for i = 1, #ws do lark.dwconv2d_backward_weight(gy, x, kss[i], ps[i]):free() end end,
  }
  local function masked(ms)
    return {
      function()
        if one then lark.dwconv2d_masked(x, ws[1], ms[1], nil, ps[1]):free()
        else lark.dwconv2d_sum_masked(x, ws, ms, nil, ps):free() end
      end,
      function()
        if one then lark.dwconv2d_masked_backward_input(gy, ws[1], ms[1], size, ps[1]):free()
        else lark.dwconv2d_sum_masked_backward_input(gy, ws, ms, size, ps):free() end
      end,
      function()
        if one then lark.dwconv2d_masked_backward_weight(gy, x, ms[1], ps[1]):free()
        else for _, g in ipairs(lark.dwconv2d_sum_masked_backward_weight(gy, x, ws, ms, ps)) do g:free() end end
      end,
    }
  end
  local per_density = {}
  for di, d in ipairs(densities) do
    local ms = {}
    for i, w in ipairs(ws) do ms[i] = lark.rand(w.shape):lt(d) end
    per_density[di] = masked(ms)
  end
  local full = {}
  for i, w in ipairs(ws) do full[i] = lark.ones(w.shape, {dtype = "bool"}) end
  local forced = masked(full)
  for pi, name in ipairs(passes) do
    local td = util.time(dense[pi], opts.reps)
    local line = string.format("%-19s %3d %-5s %8.2f", c[1], R, name, td * 1e3)
    for di = 1, #densities do
      local t = util.time(per_density[di][pi], opts.reps)
      line = line .. string.format(" %15s", string.format("%.2f (%.2fx)", t * 1e3, td / t))
    end
    local before = lark.dwconv2d_sparse_path("sparse")
    local tf = util.time(forced[pi], opts.reps)
    lark.dwconv2d_sparse_path(before)
    line = line .. string.format(" %10.2f", tf * 1e3)
    line_no = line_no + 1
    local ts = torch and tonumber(torch[line_no])
    if ts then line = line .. string.format(" %11.2f", ts * 1e3) end
    print(line)
  end
  x:free(); gy:free()
end
