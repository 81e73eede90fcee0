-- examples/bench/block.lua: one RepLKNet stage-3 pair (a RepLK block, then a ConvFFN block) built
-- from lark.nn.functional, forward and forward+backward, beside the same pair in
-- torch.nn.functional in the same run; then the pair's ops one family at a time, so we see where
-- the time goes.
--
--   build/bin/lark examples/bench/block.lua [--threads N] [--reps R] [--N 8] [--C 512] [--R 14]
--                                           [--K 27] [--k 5] [--no-torch]
--
-- The pair is ../shared/reference/MODELS.md section 1 with dw_ratio 1 and ffn_ratio 4, input
-- (N, C, R, R) float32, batch norms in training mode (batch statistics, running buffers updated):
--   RepLK:   y = BN_pre(x); y = relu(BN(conv1x1 C->C (y))); y = BN(dw KxK (y)) + BN(dw kxk (y));
--            y = relu(y); x = x + BN(conv1x1 C->C (y))
--   ConvFFN: y = BN_pre(x); y = gelu(BN(conv1x1 C->4C (y))); x = x + BN(conv1x1 4C->C (y))
-- The input and every weight require grad; forward records the graph (as in training), backward
-- takes a fixed random gradient of the output (the gradient of sum(output) would be constant, and
-- a training-mode batch norm sends a constant gradient back as zero). Medians of --reps runs after
-- a warm-up; ratios are lark / PyTorch (below 1: lark is faster).
--
-- The breakdown runs each op of the pair alone on inputs of its shape (input and parameters
-- requiring grad), forward and forward+backward; "bwd" is the difference. The rows of one family
-- add up all its instances in the pair (e.g. four 1x1 convs, eight batch norms).
package.path = (arg[0]:match("^(.*/)") or "./") .. "?.lua;" .. package.path
local lark = require "lark"
local F = require "lark.nn.functional"
local util = require "bench_util"

local opts = util.options(arg, {reps = 5, threads = 2, N = 8, C = 512, R = 14, K = 27, k = 5})
local N, C, R, K, k = opts.N, opts.C, opts.R, opts.K, opts.k
local H = 4 * C

-- ---- lark ---------------------------------------------------------------------------------------

local function leaf(t) t.requires_grad = true; return t end

-- conv weight (cout, cin/groups, kh, kw), scaled like PyTorch's default init (1/sqrt(fan in))
local function conv_weight(cout, cin, kh, kw)
  return leaf(lark.randn(cout, cin, kh, kw) * (1 / math.sqrt(cin * kh * kw)))
end

-- a batch norm's affine parameters (leaves) and running buffers
local function bn(c)
  return {w = leaf(lark.randn(c) * 0.1 + 1), b = leaf(lark.randn(c) * 0.1), rm = lark.zeros(c), rv = lark.ones(c)}
end

local function bn_apply(p, x) return F.batch_norm(x, p.rm, p.rv, p.w, p.b, true, 0.1, 1e-5) end

local P = {
  prelkb_bn = bn(C), pw1_w = conv_weight(C, C, 1, 1), pw1_bn = bn(C),
  lk_w = conv_weight(C, 1, K, K), lk_bn = bn(C), sk_w = conv_weight(C, 1, k, k), sk_bn = bn(C),
  pw2_w = conv_weight(C, C, 1, 1), pw2_bn = bn(C),
  preffn_bn = bn(C), f1_w = conv_weight(H, C, 1, 1), f1_bn = bn(H), f2_w = conv_weight(C, H, 1, 1), f2_bn = bn(C),
}

local function replk(x)
  local y = bn_apply(P.prelkb_bn, x)
  y = F.relu(bn_apply(P.pw1_bn, F.conv2d(y, P.pw1_w)))
  y = bn_apply(P.lk_bn, F.conv2d(y, P.lk_w, nil, {padding = K // 2, groups = C}))
    + bn_apply(P.sk_bn, F.conv2d(y, P.sk_w, nil, {padding = k // 2, groups = C}))
  y = bn_apply(P.pw2_bn, F.conv2d(F.relu(y), P.pw2_w))
  return x + y
end

local function convffn(x)
  local y = bn_apply(P.preffn_bn, x)
  y = F.gelu(bn_apply(P.f1_bn, F.conv2d(y, P.f1_w)))
  y = bn_apply(P.f2_bn, F.conv2d(y, P.f2_w))
  return x + y
end

local leaves = {}
for _, v in pairs(P) do
  if lark.is_tensor(v) then leaves[#leaves + 1] = v else leaves[#leaves + 1] = v.w; leaves[#leaves + 1] = v.b end
end

local function clear_grads(list)
  for _, t in ipairs(list) do t.grad = nil end
end

local x = leaf(lark.randn(N, C, R, R))
local gy = lark.randn(N, C, R, R)
leaves[#leaves + 1] = x

local function block_fwd() return convffn(replk(x)) end
local function block_fwdbwd()
  block_fwd():backward(gy)
  clear_grads(leaves)
end

-- The ops of the pair one family at a time: {family, list of {setup = fn -> (run, leaves, out shape)}}.
-- Each instance is a function making its inputs and returning a closure computing the op.
local function rin(c) return leaf(lark.randn(N, c, R, R)) end
local function conv1x1(cin, cout)
  return function()
    local xi, w = rin(cin), conv_weight(cout, cin, 1, 1)
    return function() return F.conv2d(xi, w) end, {xi, w}, cout
  end
end
local function dw(ks)
  return function()
    local xi, w = rin(C), conv_weight(C, 1, ks, ks)
    return function() return F.conv2d(xi, w, nil, {padding = ks // 2, groups = C}) end, {xi, w}, C
  end
end
local function bn_op(c)
  return function()
    local xi, p = rin(c), bn(c)
    return function() return bn_apply(p, xi) end, {xi, p.w, p.b}, c
  end
end
local function unary(c, name)
  return function()
    local xi = rin(c)
    if name == "relu" then return function() return F.relu(xi) end, {xi}, c end
    return function() return F.gelu(xi) end, {xi}, c
  end
end
local function add_op(c)
  return function()
    local a, b = rin(c), rin(c)
    return function() return a + b end, {a, b}, c
  end
end

-- the torch expression of each family's instances is built from the same list (see torch_parts)
local families = {
  {"1x1 conv", {conv1x1(C, C), conv1x1(C, C), conv1x1(C, H), conv1x1(H, C)},
    {{"conv", C, C}, {"conv", C, C}, {"conv", C, H}, {"conv", H, C}}},
  {string.format("dw %dx%d", K, K), {dw(K)}, {{"dw", K}}},
  {string.format("dw %dx%d", k, k), {dw(k)}, {{"dw", k}}},
  {"batch norm", {bn_op(C), bn_op(C), bn_op(C), bn_op(C), bn_op(C), bn_op(C), bn_op(H), bn_op(C)},
    {{"bn", C}, {"bn", C}, {"bn", C}, {"bn", C}, {"bn", C}, {"bn", C}, {"bn", H}, {"bn", C}}},
  {"relu", {unary(C, "relu"), unary(C, "relu")}, {{"relu", C}, {"relu", C}}},
  {"gelu", {unary(H, "gelu")}, {{"gelu", H}}},
  {"add", {add_op(C), add_op(C), add_op(C)}, {{"add", C}, {"add", C}, {"add", C}}},
}

-- ---- PyTorch: the same pair and the same op list, printing one time per line -------------------

local torch
if opts.torch then
  local parts = {}
  for _, fam in ipairs(families) do
    local inst = {}
    for _, d in ipairs(fam[3]) do
      inst[#inst + 1] = d[1] == "conv" and string.format("mk_conv(%d, %d)", d[2], d[3])
        or d[1] == "dw" and string.format("mk_dw(%d)", d[2])
        or string.format("mk_%s(%d)", d[1], d[2])
    end
    parts[#parts + 1] = "[" .. table.concat(inst, ", ") .. "]"
  end
  local body = string.format([==[
import torch.nn.functional as F
N, C, R, K, k, H, reps = %d, %d, %d, %d, %d, %d, %d
torch.manual_seed(0)
def leaf(t): return t.requires_grad_()
def conv_weight(co, ci, kh, kw): return leaf(torch.randn(co, ci, kh, kw) / (ci * kh * kw) ** 0.5)
def bn(c): return dict(w=leaf(torch.randn(c) * 0.1 + 1), b=leaf(torch.randn(c) * 0.1), rm=torch.zeros(c), rv=torch.ones(c))
def bn_apply(p, x): return F.batch_norm(x, p['rm'], p['rv'], p['w'], p['b'], True, 0.1, 1e-5)
P = dict(prelkb_bn=bn(C), pw1_w=conv_weight(C, C, 1, 1), pw1_bn=bn(C), lk_w=conv_weight(C, 1, K, K), lk_bn=bn(C),
         sk_w=conv_weight(C, 1, k, k), sk_bn=bn(C), pw2_w=conv_weight(C, C, 1, 1), pw2_bn=bn(C),
         preffn_bn=bn(C), f1_w=conv_weight(H, C, 1, 1), f1_bn=bn(H), f2_w=conv_weight(C, H, 1, 1), f2_bn=bn(C))
def replk(x):
    y = bn_apply(P['prelkb_bn'], x)
    y = F.relu(bn_apply(P['pw1_bn'], F.conv2d(y, P['pw1_w'])))
    y = bn_apply(P['lk_bn'], F.conv2d(y, P['lk_w'], None, 1, K // 2, 1, C)) + \
        bn_apply(P['sk_bn'], F.conv2d(y, P['sk_w'], None, 1, k // 2, 1, C))
    y = bn_apply(P['pw2_bn'], F.conv2d(F.relu(y), P['pw2_w']))
    return x + y
def convffn(x):
    y = bn_apply(P['preffn_bn'], x)
    y = F.gelu(bn_apply(P['f1_bn'], F.conv2d(y, P['f1_w'])))
    y = bn_apply(P['f2_bn'], F.conv2d(y, P['f2_w']))
    return x + y
leaves = []
for v in P.values():
    leaves += [v] if torch.is_tensor(v) else [v['w'], v['b']]
x = leaf(torch.randn(N, C, R, R)); gy = torch.randn(N, C, R, R); leaves.append(x)
def clear(ls):
    for t in ls: t.grad = None
def fwd(): convffn(replk(x))
def fwdbwd(): convffn(replk(x)).backward(gy); clear(leaves)
print(med(fwd, reps)); print(med(fwdbwd, reps))
def rin(c): return leaf(torch.randn(N, c, R, R))
def mk_conv(ci, co):
    xi, w = rin(ci), conv_weight(co, ci, 1, 1); return (lambda: F.conv2d(xi, w)), [xi, w], co
def mk_dw(ks):
    xi, w = rin(C), conv_weight(C, 1, ks, ks); return (lambda: F.conv2d(xi, w, None, 1, ks // 2, 1, C)), [xi, w], C
def mk_bn(c):
    xi, p = rin(c), bn(c); return (lambda: bn_apply(p, xi)), [xi, p['w'], p['b']], c
def mk_relu(c):
    xi = rin(c); return (lambda: F.relu(xi)), [xi], c
def mk_gelu(c):
    xi = rin(c); return (lambda: F.gelu(xi)), [xi], c
def mk_add(c):
    a, b = rin(c), rin(c); return (lambda: a + b), [a, b], c
for fam in [%s]:
    tf = tfb = 0.0
    for run, ls, co in fam:
        g = torch.randn(N, co, R, R)
        def fb():
            run().backward(g); clear(ls)
        tf += med(run, reps); tfb += med(fb, reps)
    print(tf, tfb)
]==], N, C, R, K, k, H, opts.reps, table.concat(parts, ", "))
  torch = util.torch(body, opts.threads)
end

-- ---- run and print ------------------------------------------------------------------------------

-- The 1x1 convs are OpenBLAS sgemm calls, so their speed is the speed of the kernels OpenBLAS chose
-- for this CPU (it names them when OPENBLAS_VERBOSE=2). OpenBLAS 0.3.21 (Debian 12) does not know
-- CPUs newer than itself and falls back to its SSE3 "Prescott" kernels, ~4x slower than its
-- AVX-512 ones; OPENBLAS_CORETYPE picks the kernels by hand.
local function openblas_core()
  local exe = (arg[-1] or "lark"):gsub("'", "'\\''")
  local p = io.popen("OPENBLAS_VERBOSE=2 '" .. exe .. "' -e '' 2>&1")
  local core = p and p:read("a"):match("Core: (%S+)")
  if p then p:close() end
  local f = io.open("/proc/cpuinfo")
  local info = f and f:read("a") or ""
  if f then f:close() end
  local isa = info:find(" avx512f") and "SkylakeX" or info:find(" avx2") and "Haswell" or nil
  return core, (core == "Prescott" or core == "Core2" or core == "Nehalem") and isa or nil
end
local blas_core, better_core = openblas_core()

local function ms(s) return s and string.format("%10.2f", s * 1e3) or string.format("%10s", "-") end
local function ratio(l, t) return (l and t) and string.format("%8.2fx", l / t) or string.format("%9s", "-") end

print(string.format("RepLKNet stage-3 pair (RepLK K=%d + %dx%d, ConvFFN 4C), input (%d, %d, %d, %d) float32, "
  .. "training BN, %d threads, median of %d runs%s", K, k, k, N, C, R, R, opts.threads, opts.reps,
  torch and (";  PyTorch " .. torch[#torch]) or ""))
print(string.format("OpenBLAS kernels: %s%s", blas_core or "unknown", os.getenv("OPENBLAS_CORETYPE")
  and " (OPENBLAS_CORETYPE=" .. os.getenv("OPENBLAS_CORETYPE") .. ")" or ""))
if better_core then
  print(string.format("  note: OpenBLAS did not recognise this CPU and runs its %s kernels, which leaves the 1x1 convs\n"
    .. "  ~4x slower than they can be here; rerun with OPENBLAS_CORETYPE=%s", blas_core, better_core))
end
print(string.format("%-14s %10s %10s %9s", "pass", "lark ms", "torch ms", "lark/torch"))
local t_fwd = util.time(block_fwd, opts.reps)
local t_fb = util.time(block_fwdbwd, opts.reps)
local tt_fwd = torch and tonumber(torch[1])
local tt_fb = torch and tonumber(torch[2])
print(string.format("%-14s %s %s %s", "forward", ms(t_fwd), ms(tt_fwd), ratio(t_fwd, tt_fwd)))
print(string.format("%-14s %s %s %s", "fwd+bwd", ms(t_fb), ms(tt_fb), ratio(t_fb, tt_fb)))
print(string.format("%-14s %s %s %s", "  backward", ms(t_fb - t_fwd), ms(tt_fb and tt_fb - tt_fwd),
  ratio(t_fb - t_fwd, tt_fb and tt_fb - tt_fwd)))

print()
print("per op family, each op alone on inputs of its shape, summed over its instances in the pair")
print(string.format("%-14s %3s %10s %10s %10s %10s %9s %9s", "family", "n", "lark fwd", "lark bwd", "torch fwd",
  "torch bwd", "fwd l/t", "bwd l/t"))
local sum_f, sum_b, sum_tf, sum_tb = 0, 0, 0, 0
for fi, fam in ipairs(families) do
  local tf, tfb = 0, 0
  for _, setup in ipairs(fam[2]) do
    local run, ls, cout = setup()
    local g = lark.randn(N, cout, R, R)
    tf = tf + util.time(run, opts.reps)
    tfb = tfb + util.time(function() run():backward(g); clear_grads(ls) end, opts.reps)
  end
  local line = torch and torch[2 + fi]
  local ttf, ttfb
  if line then ttf, ttfb = line:match("^(%S+)%s+(%S+)$"); ttf, ttfb = tonumber(ttf), tonumber(ttfb) end
  local tb, ttb = tfb - tf, ttfb and ttfb - ttf
  sum_f, sum_b = sum_f + tf, sum_b + tb
  if ttf then sum_tf, sum_tb = sum_tf + ttf, sum_tb + ttb end
  print(string.format("%-14s %3d %s %s %s %s %s %s", fam[1], #fam[2], ms(tf), ms(tb), ms(ttf), ms(ttb),
    ratio(tf, ttf), ratio(tb, ttb)))
end
print(string.format("%-14s %3s %s %s %s %s %s %s", "sum of ops", "", ms(sum_f), ms(sum_b),
  ms(torch and sum_tf), ms(torch and sum_tb), ratio(sum_f, torch and sum_tf), ratio(sum_b, torch and sum_tb)))
print(string.format("%-14s %3s %s %s %s %s", "whole pair", "", ms(t_fwd), ms(t_fb - t_fwd), ms(tt_fwd),
  ms(tt_fb and tt_fb - tt_fwd)))
