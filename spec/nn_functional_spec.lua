-- nn_functional_spec.lua: the fused ops of lark.nn.functional written in C (batch_norm,
-- layer_norm and its channels-first form, softmax, log_softmax, cross_entropy, nll_loss, gelu,
-- and mse_loss): plain Lua references, float64 finite-difference gradient checks of every
-- differentiable input, PyTorch parity (outputs, every gradient and the running statistics) in
-- float64 and float32, and the error messages.
local run_torch = run_python -- spec/helper.lua
local F = require "lark.nn.functional"


local function leaf(t, dtype)
  local x = lark.is_tensor(t) and t or lark.tensor(t, {dtype = dtype or "float64"})
  x.requires_grad = true
  return x
end

local function randleaf(shape, lo, hi) return leaf(rand_tensor(shape, "float64", lo, hi)) end

local function check(fn, inputs)
  local ok, msg = lark.autograd.gradcheck(fn, inputs)
  assert(ok, msg)
end

local function longs(t) return lark.tensor(t, {dtype = "int64"}) end

-- ---- plain Lua references ------------------------------------------------------------------------

local function ref_softmax_rows(rows, log)
  local out = {}
  for i, r in ipairs(rows) do
    local mx, s = -math.huge, 0
    for _, v in ipairs(r) do mx = math.max(mx, v) end
    for _, v in ipairs(r) do s = s + math.exp(v - mx) end
    out[i] = {}
    for j, v in ipairs(r) do out[i][j] = log and (v - mx - math.log(s)) or math.exp(v - mx) / s end
  end
  return out
end

describe("nn.functional fused ops", function()
  it("softmax and log_softmax match a Lua reference on any dim and layout", function()
    local t = rand_table({3, 5}, -3, 3)
    local x = lark.tensor(t, {dtype = "float64"})
    assert_near(F.softmax(x, 2), ref_softmax_rows(t), 1e-12)
    assert_near(F.log_softmax(x, -1), ref_softmax_rows(t, true), 1e-12)
    -- along dim 1 is the same as along dim 2 of the transpose
    assert_near(F.softmax(x:transpose(1, 2), 1):transpose(1, 2), ref_softmax_rows(t), 1e-12)
    assert_near(x:log_softmax(2), ref_softmax_rows(t, true), 1e-12)
    -- huge values stay finite (the max is subtracted)
    local big = lark.tensor({{1000, 1001}, {-1000, -1002}}, {dtype = "float32"})
    assert_near(F.softmax(big, 2), ref_softmax_rows({{1000, 1001}, {-1000, -1002}}), 1e-6)
    assert_near(F.log_softmax(big, 2), ref_softmax_rows({{1000, 1001}, {-1000, -1002}}, true), 1e-6)
    -- the float32 fast path (last dim) against the plain loop (another dim) and float64
    for _, D in ipairs{1, 7, 33, 1000} do
      local z = rand_tensor({5, D}, "float32", -30, 30)
      z[2][1] = -math.huge
      for _, fn in ipairs{F.softmax, F.log_softmax} do
        assert_near(fn(z, 2), fn(z:t():contiguous(), 1):t(), 1e-6)
        assert_near(fn(z, 2), fn(z:double(), 2), 1e-5)
      end
    end
    -- awkward shapes: 0-d, empty, size-1 dims, expanded views
    assert_near(F.softmax(lark.tensor(3.5, {dtype = "float64"}), 1), 1, 0)
    assert.are.same({0, 4}, shape_of(F.softmax(lark.zeros(0, 4), 2)))
    assert_near(F.softmax(lark.zeros(2, 1, 3), 2), {{{1, 1, 1}}, {{1, 1, 1}}}, 0)
    local e = lark.tensor({{1, 2, 3}}, {dtype = "float64"}):expand(4, 3)
    assert_near(F.softmax(e, 2), ref_softmax_rows({{1, 2, 3}, {1, 2, 3}, {1, 2, 3}, {1, 2, 3}}), 1e-12)
  end)

  it("layer_norm (last dim and channels-first) matches a Lua reference", function()
    local N, C, H, W = 2, 3, 2, 2
    local t = rand_table({N, C, H, W})
    local w, b = rand_table({C}), rand_table({C})
    local x = lark.tensor(t, {dtype = "float64"})
    local y = F.layer_norm_channels_first(x, lark.tensor(w, {dtype = "float64"}), lark.tensor(b, {dtype = "float64"}), 1e-6)
    local expect = build_table({N, C, H, W}, function() return 0 end)
    for n = 1, N do
      for h = 1, H do
        for ww = 1, W do
          local u, s = 0, 0
          for c = 1, C do u = u + t[n][c][h][ww] / C end
          for c = 1, C do s = s + (t[n][c][h][ww] - u) ^ 2 / C end
          for c = 1, C do expect[n][c][h][ww] = (t[n][c][h][ww] - u) / math.sqrt(s + 1e-6) * w[c] + b[c] end
        end
      end
    end
    assert_near(y, expect, 1e-12)
    -- the last-dim form on the permuted input gives the same numbers
    local y2 = F.layer_norm(x:permute(1, 3, 4, 2), lark.tensor(w, {dtype = "float64"}), lark.tensor(b, {dtype = "float64"}),
      1e-6)
    assert_near(y2:permute(1, 4, 2, 3), expect, 1e-12)
    -- the blocked channels-first kernels against the per-row reference (the last-dim form on the
    -- permuted input), outputs and all three gradients, over several blocks of positions
    for _, dtype in ipairs{"float64", "float32"} do
      local xb = rand_tensor({2, 3, 10, 7}, dtype, -2, 2)
      local wb, bb = rand_tensor({3}, dtype), rand_tensor({3}, dtype)
      local gb = rand_tensor({2, 3, 10, 7}, dtype)
      local function run(cf)
        local xi, wi, bi = leaf(xb:clone()), leaf(wb:clone()), leaf(bb:clone())
        local out = cf and F.layer_norm_channels_first(xi, wi, bi)
          or F.layer_norm(xi:permute(1, 3, 4, 2), wi, bi):permute(1, 4, 2, 3)
        out:backward(gb)
        return {out, xi.grad, wi.grad, bi.grad}
      end
      local a, r = run(true), run(false)
      for k = 1, 4 do assert_near(a[k], r[k], dtype == "float64" and 1e-12 or 1e-5) end
    end
    -- PyTorch's form with normalized_shape, and no affine
    local y3 = F.layer_norm(x:permute(1, 3, 4, 2), {C}, nil, nil, 1e-6)
    local y4 = F.layer_norm(x:permute(1, 3, 4, 2), nil, nil, 1e-6)
    assert_near(y3, y4, 1e-12)
  end)

  it("batch_norm uses batch statistics in training and updates the running ones", function()
    local t = {{1, 10}, {2, 20}, {6, 30}}
    local x = lark.tensor(t, {dtype = "float64"})
    local rm, rv = lark.tensor({0.5, 1}, {dtype = "float64"}), lark.tensor({2, 3}, {dtype = "float64"})
    local y = F.batch_norm(x, rm, rv, nil, nil, true, 0.1, 0)
    -- channel 1: mean 3, biased var 14/3, unbiased 7
    local s1 = math.sqrt(14 / 3)
    assert_near(y:select(2, 1), {-2 / s1, -1 / s1, 3 / s1}, 1e-12)
    assert_near(rm, {0.9 * 0.5 + 0.1 * 3, 0.9 * 1 + 0.1 * 20}, 1e-12)
    assert_near(rv, {0.9 * 2 + 0.1 * 7, 0.9 * 3 + 0.1 * 100}, 1e-12)
    -- eval: the running statistics, weight and bias
    local w, b = lark.tensor({2, 3}, {dtype = "float64"}), lark.tensor({0.5, -1}, {dtype = "float64"})
    local ye = F.batch_norm(x, rm, rv, w, b, false, 0.1, 1e-5)
    local r = rm:table()
    local v = rv:table()
    for i = 1, 3 do
      assert_near(ye[i][1], (t[i][1] - r[1]) / math.sqrt(v[1] + 1e-5) * 2 + 0.5, 1e-12)
      assert_near(ye[i][2], (t[i][2] - r[2]) / math.sqrt(v[2] + 1e-5) * 3 - 1, 1e-12)
    end
    -- empty batches in eval mode, empty rows for layer_norm
    assert.are.same({0, 2}, shape_of(F.batch_norm(lark.zeros(0, 2, {dtype = "float64"}), rm, rv)))
    assert.are.same({0, 3}, shape_of(F.layer_norm(lark.zeros(0, 3))))
    assert.are.same({2, 3, 0}, shape_of(F.layer_norm_channels_first(lark.zeros(2, 3, 0))))
    -- running buffers may be views
    local buf = lark.zeros(2, 2, {dtype = "float64"})
    F.batch_norm(x, buf:select(2, 1), nil, nil, nil, true, 1.0, 1e-5)
    assert_near(buf, {{3, 0}, {20, 0}}, 1e-12)
  end)

  it("cross_entropy and nll_loss match the definitions", function()
    local t = {{1, 2, 3}, {0.5, -1, 2}}
    local x = lark.tensor(t, {dtype = "float64"})
    local lp = ref_softmax_rows(t, true)
    local target = longs{3, 1}
    local l1, l2 = -lp[1][3], -lp[2][1]
    assert_near(F.cross_entropy(x, target), (l1 + l2) / 2, 1e-12)
    assert_near(F.cross_entropy(x, target, "sum"), l1 + l2, 1e-12)
    assert_near(F.cross_entropy(x, target, {reduction = "none"}), {l1, l2}, 1e-12)
    assert_near(F.nll_loss(F.log_softmax(x, 2), target, {reduction = "none"}), {l1, l2}, 1e-12)
    -- label smoothing: (1 - e) * nll + e * mean over classes of -log p
    local e = 0.2
    local function smooth(i, l)
      local m = 0
      for c = 1, 3 do m = m - lp[i][c] / 3 end
      return (1 - e) * l + e * m
    end
    assert_near(F.cross_entropy(x, target, {label_smoothing = e, reduction = "none"}), {smooth(1, l1), smooth(2, l2)}, 1e-12)
    -- soft targets
    local q = {{0.2, 0.3, 0.5}, {1, 0, 0}}
    local soft = -(q[1][1] * lp[1][1] + q[1][2] * lp[1][2] + q[1][3] * lp[1][3]) - lp[2][1]
    assert_near(F.cross_entropy(x, lark.tensor(q, {dtype = "float64"}), "sum"), soft, 1e-12)
    -- an empty batch: the mean is nan (0 / 0), the sum 0
    local empty = lark.zeros(0, 3, {dtype = "float64"})
    assert.is_true(F.cross_entropy(empty, lark.zeros(0, {dtype = "int64"})):item() ~= F.cross_entropy(empty,
      lark.zeros(0, {dtype = "int64"})):item())
    assert_near(F.cross_entropy(empty, lark.zeros(0, {dtype = "int64"}), "sum"), 0, 0)
    -- non-contiguous logits
    assert_near(F.cross_entropy(x:t():contiguous():t(), target, "none"), {l1, l2}, 1e-12)
  end)

  it("gelu is exact and mse_loss reduces as asked", function()
    local vals = {-3, -1, -0.5, 0, 0.25, 1, 4}
    local erf_ref = {} -- erf through its Taylor series (fine for |x| <= 3)
    local function erf(z)
      local s, term, n = 0, z, 0
      repeat
        s = s + term / (2 * n + 1)
        n = n + 1
        term = -term * z * z / n
      until math.abs(term) < 1e-18 and n > 5
      return 2 / math.sqrt(math.pi) * s
    end
    for i, v in ipairs(vals) do erf_ref[i] = 0.5 * v * (1 + erf(v / math.sqrt(2))) end
    assert_near(F.gelu(lark.tensor(vals, {dtype = "float64"})), erf_ref, 1e-12)
    assert_near(lark.tensor(vals):gelu(), erf_ref, 1e-6)
    -- the vectorised float32 path against libm's erf in float64, densely over [-10, 10]
    local xs = lark.arange(-10, 10, 0.01, {dtype = "float64"})
    assert_near(F.gelu(xs:float()), F.gelu(xs:float():double()), 1e-6)
    local x32, x64 = xs:float(), xs:float():double()
    x32.requires_grad, x64.requires_grad = true, true
    F.gelu(x32):sum():backward()
    F.gelu(x64):sum():backward()
    assert_near(x32.grad, x64.grad, 1e-6)
    local a, b = lark.tensor({1, 2, 3}, {dtype = "float64"}), lark.tensor({0, 2, 5}, {dtype = "float64"})
    assert_near(F.mse_loss(a, b), 5 / 3, 1e-12)
    assert_near(F.mse_loss(a, b, {reduction = "sum"}), 5, 1e-12)
    assert_near(F.mse_loss(a, b, "none"), {1, 0, 4}, 1e-12)
  end)

  it("records one node per op, named after it, and only when an input needs it", function()
    local x = rand_tensor({4, 3})
    local w = leaf(lark.ones(3, {dtype = "float64"}))
    assert.are.equal("batch_norm", F.batch_norm(x, nil, nil, w, nil, true).grad_fn)
    assert.are.equal("layer_norm", F.layer_norm(x, w, nil).grad_fn)
    assert.is_nil(F.layer_norm(x, nil, nil).grad_fn)
    local xl = leaf(x:clone())
    assert.are.equal("softmax", F.softmax(xl, 1).grad_fn)
    assert.are.equal("log_softmax", F.log_softmax(xl, 1).grad_fn)
    assert.are.equal("cross_entropy", F.cross_entropy(xl, longs{1, 2, 3, 1}).grad_fn)
    assert.are.equal("nll_loss", F.nll_loss(xl, longs{1, 2, 3, 1}).grad_fn)
    assert.are.equal("gelu", F.gelu(xl).grad_fn)
    do
      local g <close> = lark.no_grad()
      assert.is_nil(F.gelu(xl).grad_fn)
    end
    -- a gradient for the weight alone: sum over rows of the normalised input
    local y = F.layer_norm(x, w, nil)
    y:sum():backward()
    local xhat = F.layer_norm(x, nil, nil)
    assert_near(w.grad, xhat:sum(1), 1e-12)
  end)

  describe("gradients (float64 finite differences)", function()
    it("batch_norm in training and eval, for input, weight and bias", function()
      local w, b = randleaf({3}), randleaf({3})
      check(function(x, ww, bb) return F.batch_norm(x, nil, nil, ww, bb, true, 0.1, 1e-5) end,
        {randleaf({4, 3, 2, 2}), w, b})
      check(function(x, ww, bb) return F.batch_norm(x, nil, nil, ww, bb, true) end, {randleaf({5, 3}), w, b})
      local rm, rv = rand_tensor({3}), rand_tensor({3}, "float64", 0.5, 2)
      check(function(x, ww, bb) return F.batch_norm(x, rm, rv, ww, bb, false) end, {randleaf({2, 3, 3}), w, b})
      check(function(x) return F.batch_norm(x, nil, nil, nil, nil, true) end, {randleaf({3, 3, 2})})
    end)

    it("layer_norm over the last dim and channels-first", function()
      check(F.layer_norm, {randleaf({4, 5}), randleaf({5}), randleaf({5})})
      check(function(x) return F.layer_norm(x, nil, nil) end, {randleaf({2, 3, 4})})
      check(F.layer_norm_channels_first, {randleaf({2, 3, 2, 3}), randleaf({3}), randleaf({3}), 1e-6})
      -- through a non-contiguous view
      check(function(x, w) return F.layer_norm(x:transpose(1, 2), w, nil) end, {randleaf({4, 3}), randleaf({4})})
    end)

    it("softmax, log_softmax and gelu", function()
      check(function(x) return F.softmax(x, 2) end, {randleaf({3, 4, 2})})
      check(function(x) return F.softmax(x, 1) end, {randleaf({3, 4})})
      check(function(x) return F.log_softmax(x, -1) end, {randleaf({3, 4})})
      check(function(x) return F.log_softmax(x:transpose(1, 2), 2) end, {randleaf({4, 3})})
      check(F.gelu, {randleaf({3, 4}, -3, 3)})
    end)

    it("cross_entropy with class indices, smoothing and soft targets, and nll_loss", function()
      local target = longs{2, 1, 3, 3}
      for _, red in ipairs{"mean", "sum", "none"} do
        check(function(x) return F.cross_entropy(x, target, {reduction = red}) end, {randleaf({4, 3}, -2, 2)})
        check(function(x) return F.cross_entropy(x, target, {reduction = red, label_smoothing = 0.1}) end,
          {randleaf({4, 3}, -2, 2)})
        check(function(x) return F.nll_loss(x, target, red) end, {randleaf({4, 3}, -3, 0)})
      end
      local q = F.softmax(rand_tensor({4, 3}), 2)
      check(function(x, t) return F.cross_entropy(x, t, {label_smoothing = 0.2}) end, {randleaf({4, 3}), leaf(q)})
      check(function(x, t) return F.cross_entropy(x, t, "none") end, {randleaf({4, 3}), leaf(q:clone())})
      check(function(x) return F.nll_loss(F.log_softmax(x, 2), target) end, {randleaf({4, 3})})
      check(function(a, b) return F.mse_loss(a, b) end, {randleaf({3, 2}), randleaf({3, 2})})
    end)
  end)

  describe("errors", function()
    local x = lark.zeros(4, 3)
    it("names the op, the argument and what was expected", function()
      expect_error("batch_norm: weight must have shape [3]", function() F.batch_norm(x, nil, nil, lark.ones(4), nil, true) end)
      expect_error("batch_norm: input must be float32 or float64, got int64",
        function() F.batch_norm(lark.zeros(4, 3, {dtype = "int64"}), nil, nil, nil, nil, true) end)
      expect_error("batch_norm: input must be (N, C, ...)", function() F.batch_norm(lark.zeros(3), nil, nil, nil, nil, true) end)
      expect_error("running_mean and running_var are required in eval mode", function() F.batch_norm(x, nil, nil) end)
      expect_error("expected more than 1 value per channel when training",
        function() F.batch_norm(lark.zeros(1, 3), nil, nil, nil, nil, true) end)
      expect_error("batch_norm: running_var must have the input's dtype float32, got float64",
        function() F.batch_norm(x, lark.zeros(3), lark.ones(3, {dtype = "float64"}), nil, nil, true) end)
      expect_error("batch_norm: running_mean is an expanded view",
        function() F.batch_norm(x, lark.zeros(1):expand(3), nil, nil, nil, true) end)
      expect_error("batch_norm: argument 4 (weight): expected a Tensor or nil, got string",
        function() F.batch_norm(x, nil, nil, "w") end)
      expect_error("layer_norm: weight must have shape [3]", function() F.layer_norm(x, lark.ones(4), nil) end)
      expect_error("layer_norm: bias must have the input's dtype float32, got float64",
        function() F.layer_norm(x, nil, lark.ones(3, {dtype = "float64"})) end)
      expect_error("layer_norm: normalized_shape must be {C}", function() F.layer_norm(x, {4}, nil, nil) end)
      expect_error("layer_norm_channels_first: input must be (N, C, ...)",
        function() F.layer_norm_channels_first(lark.zeros(3), nil, nil) end)
      expect_error("layer_norm: argument 1: expected a Tensor, got nil", function() F.layer_norm(nil) end)
      expect_error("softmax: argument 2: dim 3 is out of range", function() F.softmax(x, 3) end)
      expect_error("softmax: argument 2: expected a dim", function() F.softmax(x) end)
      expect_error("log_softmax: input must be float32 or float64, got int64",
        function() F.log_softmax(lark.zeros(2, {dtype = "int64"}), 1) end)
      expect_error("gelu: input must be float32 or float64, got bool", function() F.gelu(lark.zeros(2, {dtype = "bool"})) end)
    end)

    it("checks class indices in 1-based terms and target shapes", function()
      expect_error("cross_entropy: target 0 (at position 2) is out of range for 3 classes (expected 1..3)",
        function() F.cross_entropy(x, longs{1, 0, 2, 3}) end)
      expect_error("cross_entropy: target 4 (at position 4) is out of range for 3 classes (expected 1..3)",
        function() F.cross_entropy(x, longs{1, 1, 2, 4}) end)
      expect_error("nll_loss: target -1 (at position 1) is out of range for 3 classes (expected 1..3)",
        function() F.nll_loss(x, longs{-1, 1, 1, 1}) end)
      expect_error("cross_entropy: target of class indices must have shape [4]", function() F.cross_entropy(x, longs{1, 2}) end)
      expect_error("cross_entropy: target of probabilities must have the input's shape [4,3], got [4,2]",
        function() F.cross_entropy(x, lark.zeros(4, 2)) end)
      expect_error("cross_entropy: target must be int64 class indices or probabilities of the input's dtype float32, got float64",
        function() F.cross_entropy(x, lark.zeros(4, 3, {dtype = "float64"})) end)
      expect_error("nll_loss: target must be int64 class indices, got float32", function() F.nll_loss(x, lark.zeros(4, 3)) end)
      expect_error("cross_entropy: input must be 2-D (N, C), got shape [4,3,1]",
        function() F.cross_entropy(lark.zeros(4, 3, 1), longs{1, 1, 1, 1}) end)
      expect_error("cross_entropy: argument 3 (reduction): expected 'mean', 'sum' or 'none', got avg",
        function() F.cross_entropy(x, longs{1, 1, 1, 1}, "avg") end)
      expect_error("cross_entropy: label_smoothing must be in [0, 1], got 1.5",
        function() F.cross_entropy(x, longs{1, 1, 1, 1}, {label_smoothing = 1.5}) end)
      expect_error("cross_entropy: argument 2: expected a Tensor, got nil", function() F.cross_entropy(x) end)
    end)
  end)
end)

-- ---- PyTorch parity ------------------------------------------------------------------------------




-- Each case: inputs {name, shape, kind} with kind "grad" (random, requires grad), "pos" (positive
-- buffer), "buf" (buffer), "class:C" (1-based classes in [1, C]), "prob" (rows summing to 1,
-- requires grad); `lark` computes the output from the inputs by name, `torch` is the same in
-- Python (classes arrive 0-based there); `extras` names buffers compared after the forward.
local cases = {
  {"batch_norm train", {{"x", {6, 3, 4, 5}, "grad"}, {"w", {3}, "grad"}, {"b", {3}, "grad"}, {"rm", {3}, "buf"},
    {"rv", {3}, "pos"}},
    function(v) return F.batch_norm(v.x, v.rm, v.rv, v.w, v.b, true, 0.3, 1e-5) end,
    "F.batch_norm(x, rm, rv, w, b, True, 0.3, 1e-5)", extras = {"rm", "rv"}},
  {"batch_norm train 2-D", {{"x", {7, 4}, "grad"}, {"w", {4}, "grad"}, {"b", {4}, "grad"}, {"rm", {4}, "buf"},
    {"rv", {4}, "pos"}},
    function(v) return F.batch_norm(v.x, v.rm, v.rv, v.w, v.b, true) end,
    "F.batch_norm(x, rm, rv, w, b, True)", extras = {"rm", "rv"}},
  {"batch_norm eval", {{"x", {3, 4, 3}, "grad"}, {"w", {4}, "grad"}, {"b", {4}, "grad"}, {"rm", {4}, "buf"},
    {"rv", {4}, "pos"}},
    function(v) return F.batch_norm(v.x, v.rm, v.rv, v.w, v.b, false) end,
    "F.batch_norm(x, rm, rv, w, b, False)"},
  {"layer_norm", {{"x", {3, 5, 8}, "grad"}, {"w", {8}, "grad"}, {"b", {8}, "grad"}},
    function(v) return F.layer_norm(v.x, {8}, v.w, v.b) end, "F.layer_norm(x, (8,), w, b)"},
  {"layer_norm channels_first", {{"x", {2, 6, 3, 4}, "grad"}, {"w", {6}, "grad"}, {"b", {6}, "grad"}},
    function(v) return F.layer_norm_channels_first(v.x, v.w, v.b, 1e-6) end,
    "(lambda u, s: (x - u) / torch.sqrt(s + 1e-6) * w[:, None, None] + b[:, None, None])"
      .. "(x.mean(1, keepdim=True), (x - x.mean(1, keepdim=True)).pow(2).mean(1, keepdim=True))"},
  {"softmax", {{"x", {3, 4, 5}, "grad"}}, function(v) return F.softmax(v.x, 2) end, "F.softmax(x, 1)"},
  {"log_softmax", {{"x", {4, 7}, "grad"}}, function(v) return F.log_softmax(v.x, -1) end, "F.log_softmax(x, -1)"},
  {"cross_entropy", {{"x", {6, 5}, "grad"}, {"t", {6}, "class:5"}},
    function(v) return F.cross_entropy(v.x, v.t) end, "F.cross_entropy(x, t)"},
  {"cross_entropy smoothing sum", {{"x", {6, 5}, "grad"}, {"t", {6}, "class:5"}},
    function(v) return F.cross_entropy(v.x, v.t, {label_smoothing = 0.1, reduction = "sum"}) end,
    "F.cross_entropy(x, t, label_smoothing=0.1, reduction='sum')"},
  {"cross_entropy smoothing none", {{"x", {5, 4}, "grad"}, {"t", {5}, "class:4"}},
    function(v) return F.cross_entropy(v.x, v.t, {label_smoothing = 0.25, reduction = "none"}) end,
    "F.cross_entropy(x, t, label_smoothing=0.25, reduction='none')"},
  {"cross_entropy soft", {{"x", {5, 4}, "grad"}, {"q", {5, 4}, "prob"}},
    function(v) return F.cross_entropy(v.x, v.q, {label_smoothing = 0.1}) end,
    "F.cross_entropy(x, q, label_smoothing=0.1)"},
  {"nll_loss", {{"x", {6, 3}, "grad"}, {"t", {6}, "class:3"}},
    function(v) return F.nll_loss(F.log_softmax(v.x, 2), v.t, "sum") end,
    "F.nll_loss(F.log_softmax(x, 1), t, reduction='sum')"},
  {"gelu", {{"x", {4, 6}, "grad"}}, function(v) return F.gelu(v.x * 3) end, "F.gelu(x * 3)"},
  {"mse_loss", {{"x", {4, 3}, "grad"}, {"y", {4, 3}, "grad"}}, function(v) return F.mse_loss(v.x, v.y) end,
    "F.mse_loss(x, y)"},
}

describe("nn.functional parity with PyTorch", function()
  if not have_torch() then
    pending("python3-torch is not installed (apt-get install python3-torch): PyTorch parity skipped")
    return
  end

  for _, dtype in ipairs{"float64", "float32"} do
    it("matches outputs, gradients and running statistics of " .. #cases .. " cases in " .. dtype, function()
      local tol = dtype == "float64" and 1e-10 or 1e-5
      local script = {"import torch", "import torch.nn.functional as F"}
      local expected = {}
      math.randomseed(11)
      for k, c in ipairs(cases) do
        local v = {}
        for _, inp in ipairs(c[2]) do
          local name, shape, kind = inp[1], inp[2], inp[3]
          local t, py
          if kind:sub(1, 6) == "class:" then
            local C = tonumber(kind:sub(7))
            local vals = {}
            for i = 1, shape[1] do vals[i] = math.random(1, C) end
            t = lark.tensor(vals, {dtype = "int64"})
            py = string.format("%s = torch.tensor([%s]) - 1", name, table.concat(vals, ","))
          else
            if kind == "prob" then
              t = F.softmax(rand_tensor(shape, dtype, -2, 2), 2)
            else
              t = rand_tensor(shape, dtype, kind == "pos" and 0.5 or -1, kind == "pos" and 2 or 1)
            end
            local grad = kind == "grad" or kind == "prob"
            if grad then t.requires_grad = true end
            py = string.format("%s = torch.tensor([%s], dtype=torch.%s).reshape(%s)%s", name,
              table.concat(values_of(t), ","), dtype, table.concat(shape, ","), grad and ".requires_grad_()" or "")
          end
          v[name] = t
          script[#script + 1] = py
        end
        local out = c[3](v)
        local dir = rand_tensor(out:size(), dtype, 0.5, 1.5)
        script[#script + 1] = string.format("o = %s", c[4])
        script[#script + 1] = string.format("d = torch.tensor([%s], dtype=torch.%s).reshape(o.shape)",
          table.concat(values_of(dir), ","), dtype)
        local function emit(label, expr)
          script[#script + 1] = string.format("print('%d %s', ' '.join(repr(float(e)) for e in (%s).detach().reshape(-1).tolist()))",
            k, label, expr)
        end
        emit("out", "o")
        for _, name in ipairs(c.extras or {}) do emit(name, name) end
        script[#script + 1] = "(o * d).sum().backward()"
        local ours = {out = out}
        for _, name in ipairs(c.extras or {}) do ours[name] = v[name] end
        local grads = {}
        for _, inp in ipairs(c[2]) do
          if v[inp[1]].requires_grad then grads[#grads + 1] = inp[1] end
        end
        local lg = lark.autograd.grad((out * dir):sum(), (function()
          local l = {}
          for i, name in ipairs(grads) do l[i] = v[name] end
          return l
        end)())
        for i, name in ipairs(grads) do
          ours["grad " .. name] = lg[i]
          emit("grad " .. name, name .. ".grad")
        end
        expected[k] = ours
      end
      local lines = run_torch(table.concat(script, "\n") .. "\n")
      local seen = 0
      for _, line in ipairs(lines) do
        local k, label, rest = line:match("^(%d+) ([%a_ ]-[%a_]) ?([-%d.e+ nainf]*)$")
        k = tonumber(k)
        assert(k and expected[k] and expected[k][label], "unexpected output from torch: " .. line)
        local nums = {}
        for num in rest:gmatch("%S+") do nums[#nums + 1] = tonumber(num) end
        local ok, err = pcall(assert_near, flat_numbers(expected[k][label]), nums, tol)
        assert(ok, string.format("%s, %s: %s", cases[k][1], label, tostring(err)))
        seen = seen + 1
      end
      local want = 0
      for k = 1, #cases do
        for _ in pairs(expected[k]) do want = want + 1 end
      end
      assert.are.equal(want, seen, "torch printed " .. seen .. " of " .. want .. " results:\n" .. table.concat(lines, "\n"))
    end)
  end
end)
