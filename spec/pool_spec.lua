-- pool_spec.lua: F.avg_pool2d, F.max_pool2d, F.adaptive_avg_pool2d and F.pad (core/ops/pool.c)
-- against Lua loops of their definitions and against PyTorch (outputs and input gradients),
-- float64 gradchecks and the argument errors; F.dropout and F.drop_path statistically, their
-- seeding and their edge cases.
local run_torch = run_python_numbers -- spec/helper.lua
local F = require "lark.nn.functional"





local function pair(v)
  if type(v) == "table" then return v[1], v[2] end
  return v, v
end

-- Lua references over (N, C, H, W) nested tables. kind: "avg" or "max".
local function ref_pool(x, kind, k, s, p)
  local kh, kw = pair(k)
  local sh, sw = pair(s or k)
  local ph, pw = pair(p or 0)
  local N, C, H, W = #x, #x[1], #x[1][1], #x[1][1][1]
  local Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
  return build_table({N, C, Ho, Wo}, function(c)
    local acc = kind == "max" and -math.huge or 0
    for i = 1, kh do
      for j = 1, kw do
        local ih, iw = (c[3] - 1) * sh - ph + i, (c[4] - 1) * sw - pw + j
        if ih >= 1 and ih <= H and iw >= 1 and iw <= W then
          local v = x[c[1]][c[2]][ih][iw]
          if kind == "max" then acc = math.max(acc, v) else acc = acc + v end
        end
      end
    end
    return kind == "max" and acc or acc / (kh * kw)
  end)
end

local function ref_adaptive(x, oh, ow)
  local N, C, H, W = #x, #x[1], #x[1][1], #x[1][1][1]
  return build_table({N, C, oh, ow}, function(c)
    local h0, h1 = math.floor((c[3] - 1) * H / oh), math.ceil(c[3] * H / oh)
    local w0, w1 = math.floor((c[4] - 1) * W / ow), math.ceil(c[4] * W / ow)
    local s = 0
    for ih = h0 + 1, h1 do
      for iw = w0 + 1, w1 do s = s + x[c[1]][c[2]][ih][iw] end
    end
    return s / ((h1 - h0) * (w1 - w0))
  end)
end

local pool_cases = { -- input shape, kernel, stride, padding
  {{2, 3, 7, 6}, 2, nil, nil},
  {{1, 2, 8, 9}, 3, 2, 1},
  {{2, 2, 7, 7}, {3, 2}, {2, 1}, {1, 0}},
  {{1, 3, 5, 6}, {2, 4}, 1, {1, 2}},
  {{3, 1, 4, 4}, 4, nil, nil},
  {{2, 4, 16, 16}, 3, 2, 1},
}

describe("avg_pool2d and max_pool2d", function()
  it("match Lua loops in float64 and float32, 4-D and 3-D", function()
    math.randomseed(21)
    for _, dtype in ipairs{"float64", "float32"} do
      local tol = dtype == "float64" and 1e-12 or 1e-6
      for _, c in ipairs(pool_cases) do
        local x = rand_tensor(c[1], dtype)
        local xt = x:table()
        assert_near(F.avg_pool2d(x, c[2], c[3], c[4]), ref_pool(xt, "avg", c[2], c[3], c[4]), tol)
        assert_near(F.max_pool2d(x, c[2], c[3], c[4]), ref_pool(xt, "max", c[2], c[3], c[4]), tol)
        assert.are.equal(dtype, F.avg_pool2d(x, c[2], c[3], c[4]):dtype())
        -- unbatched (C, H, W)
        local x3 = x:select(1, 1)
        assert_near(F.avg_pool2d(x3, c[2], c[3], c[4]), ref_pool(xt, "avg", c[2], c[3], c[4])[1], tol)
        assert_near(F.max_pool2d(x3, c[2], c[3], c[4]), ref_pool(xt, "max", c[2], c[3], c[4])[1], tol)
      end
    end
  end)

  it("read non-contiguous views", function()
    local x = rand_tensor({5, 2, 6, 3}):transpose(1, 2) -- (2, 5, 6, 3)
    local xt = x:contiguous():table()
    assert_near(F.avg_pool2d(x, 2, 1), ref_pool(xt, "avg", 2, 1), 1e-12)
    assert_near(F.max_pool2d(x, {3, 2}, 1, {1, 1}), ref_pool(xt, "max", {3, 2}, 1, {1, 1}), 1e-12)
  end)

  it("pass float64 gradchecks", function()
    math.randomseed(2)
    local grad_cases = {{{1, 2, 5, 4}, 2, nil, nil}, {{1, 1, 6, 7}, 3, 2, 1}, {{1, 2, 5, 5}, {3, 2}, {2, 1}, {1, 0}},
      {{1, 1, 4, 6}, {2, 4}, 1, {1, 2}}}
    for _, c in ipairs(grad_cases) do
      local x = rand_tensor(c[1])
      x.requires_grad = true
      local ok, msg = lark.autograd.gradcheck(function(t) return F.avg_pool2d(t, c[2], c[3], c[4]) end, {x})
      assert(ok, msg)
      ok, msg = lark.autograd.gradcheck(function(t) return F.max_pool2d(t, c[2], c[3], c[4]) end, {x})
      assert(ok, msg)
    end
  end)

  it("max_pool2d sends the gradient to the first maximum of a tie and returns 1-based indices", function()
    local x = lark.ones({1, 1, 4, 4}, {dtype = "float64"})
    x.requires_grad = true
    local y, idx = F.max_pool2d(x, 2, 2, 0, true)
    assert_same(idx, {{{{1, 3}, {9, 11}}}})
    y:sum():backward()
    assert_same(x.grad, {{{{1, 0, 1, 0}, {0, 0, 0, 0}, {1, 0, 1, 0}, {0, 0, 0, 0}}}})
    -- overlapping windows add up at a shared maximum
    local z = lark.tensor({{{{0, 1, 0}, {0, 9, 0}, {0, 0, 0}}}}, {dtype = "float64"})
    z.requires_grad = true
    F.max_pool2d(z, 2, 1):sum():backward()
    assert_same(z.grad, {{{{0, 0, 0}, {0, 4, 0}, {0, 0, 0}}}})
    -- NaN wins, as in PyTorch
    local n = F.max_pool2d(lark.tensor({{{1, 0 / 0}, {3, 2}}}), 2)
    assert.is_true(n:item() ~= n:item())
  end)

  it("avg_pool2d counts the padding in the divisor", function()
    local y = F.avg_pool2d(lark.ones({1, 1, 2, 2}, {dtype = "float64"}), 3, 1, 1)
    assert_near(y, {{{{4 / 9, 4 / 9}, {4 / 9, 4 / 9}}}}, 1e-15)
  end)

  it("name the problem in their errors", function()
    local x = rand_tensor({1, 2, 5, 5})
    expect_error("avg_pool2d: padding must be >= 0 and at most half the kernel", function() F.avg_pool2d(x, 2, 1, 2) end)
    expect_error("max_pool2d: the kernel 6x6 is larger than the padded input 5x5", function() F.max_pool2d(x, 6) end)
    expect_error("input must be 3-D (C, H, W) or 4-D", function() F.avg_pool2d(rand_tensor({5, 5}), 2) end)
    expect_error("must be float32 or float64", function() F.max_pool2d(x:long(), 2) end)
    expect_error("kernel_size must be in [1,", function() F.avg_pool2d(x, 0) end)
    expect_error("stride must be in [1,", function() F.max_pool2d(x, 2, 0) end)
    expect_error("expected the kernel size", function() F.avg_pool2d(x) end)
    expect_error("kernel_size must be an integer", function() F.avg_pool2d(x, "2") end)
    expect_error("empty map", function() F.avg_pool2d(lark.zeros({1, 1, 0, 4}), 1) end)
    expect_error("expected a Tensor", function() F.max_pool2d(nil, 2) end)
  end)
end)

describe("adaptive_avg_pool2d", function()
  it("matches PyTorch's floor/ceil windows, shrinking and growing", function()
    math.randomseed(4)
    for _, c in ipairs{{{2, 3, 7, 5}, {3, 4}}, {{1, 2, 5, 5}, {7, 7}}, {{2, 2, 6, 8}, {1, 1}}, {{1, 1, 9, 4}, {4, 4}}} do
      local x = rand_tensor(c[1])
      assert_near(F.adaptive_avg_pool2d(x, c[2]), ref_adaptive(x:table(), c[2][1], c[2][2]), 1e-12)
      x.requires_grad = true
      local ok, msg = lark.autograd.gradcheck(function(t) return F.adaptive_avg_pool2d(t, c[2]) end, {x})
      assert(ok, msg)
    end
    local x = rand_tensor({2, 3, 6, 6}, "float32")
    assert_near(F.adaptive_avg_pool2d(x, 1), ref_adaptive(x:table(), 1, 1), 1e-6)
    assert_near(F.adaptive_avg_pool2d(x:select(1, 2), 2), ref_adaptive(x:table(), 2, 2)[2], 1e-6)
    expect_error("output_size must be in [1,", function() F.adaptive_avg_pool2d(x, 0) end)
    expect_error("expected the output size", function() F.adaptive_avg_pool2d(x) end)
  end)
end)

describe("pad", function()
  local function ref_pad2(x, l, r, t, b, v) -- x (N, C, H, W) table
    local N, C, H, W = #x, #x[1], #x[1][1], #x[1][1][1]
    return build_table({N, C, H + t + b, W + l + r}, function(c)
      local ih, iw = c[3] - t, c[4] - l
      if ih >= 1 and ih <= H and iw >= 1 and iw <= W then return x[c[1]][c[2]][ih][iw] end
      return v
    end)
  end

  it("pads and crops like torch.nn.functional.pad, with gradients", function()
    local x = rand_tensor({2, 3, 4, 5})
    local xt = x:table()
    assert_near(F.pad(x, {1, 2, 3, 0}), ref_pad2(xt, 1, 2, 3, 0, 0), 0)
    assert_near(F.pad(x, {1, 2, 3, 0}, 1.5), ref_pad2(xt, 1, 2, 3, 0, 1.5), 0)
    assert_near(F.pad(x, {-1, 2, 0, -3}, "constant", -2), ref_pad2(xt, -1, 2, 0, -3, -2), 0)
    assert_near(F.pad(x, {-2, -3}), ref_pad2(xt, -2, -3, 0, 0, 0), 0)
    assert.are.same({2, 5, 4, 0}, shape_of(F.pad(x, {-2, -3, 0, 0, 1, 1})))
    -- three dims, any dtype, views
    local y = F.pad(lark.tensor({{{1, 2}, {3, 4}}}, {dtype = "int64"}), {0, 1, 1, 0, 1, 0}, 7)
    assert.are.same({2, 3, 3}, shape_of(y))
    assert.are.equal("int64", y:dtype())
    assert_same(y, {{{7, 7, 7}, {7, 7, 7}, {7, 7, 7}}, {{7, 7, 7}, {1, 2, 7}, {3, 4, 7}}})
    y = F.pad(lark.tensor({{1, 2}, {3, 4}}, {dtype = "int64"}), {0, 1, 1, 0}, 7)
    assert_same(y, {{7, 7, 7}, {1, 2, 7}, {3, 4, 7}})
    local v = x:transpose(3, 4)
    assert_near(F.pad(v, {1, 1, 1, 1}), ref_pad2(v:contiguous():table(), 1, 1, 1, 1, 0), 0)
    assert_near(F.pad(x, {}), x, 0)
    x.requires_grad = true
    for _, p in ipairs{{1, 2, 3, 0}, {-1, 2, 0, -3}, {2, -1, 1, 1, -1, 0}} do
      local ok, msg = lark.autograd.gradcheck(function(t) return F.pad(t, p, 0.5) end, {x})
      assert(ok, msg)
    end
  end)

  it("names the problem in its errors", function()
    local x = rand_tensor({2, 3})
    expect_error("pad: argument 2: expected an even number of pads", function() F.pad(x, {1, 2, 3}) end)
    expect_error("at most 2 per dim (4 for 2 dims), got 6", function() F.pad(x, {1, 1, 1, 1, 1, 1}) end)
    expect_error("give a negative size", function() F.pad(x, {-2, -2}) end)
    expect_error("pad 2 must be an integer", function() F.pad(x, {1, 0.5}) end)
    expect_error("expected a table of pads", function() F.pad(x, 1) end)
    expect_error("mode 'reflect' is not supported", function() F.pad(x, {1, 1}, "reflect") end)
  end)
end)

describe("PyTorch parity of the pools and pad", function()
  it("matches outputs and input gradients in float64 and float32", function()
    if not have_torch() then
      pending("python3-torch is not installed: PyTorch parity skipped")
      return
    end
    math.randomseed(9)
    local ops = {}
    for _, c in ipairs(pool_cases) do
      local ks, ss, ps = pylist(lark.tensor({pair(c[2])}):long()), c[3] and pylist(lark.tensor({pair(c[3])}):long()) or "None",
        pylist(lark.tensor({pair(c[4] or 0)}):long())
      ops[#ops + 1] = {c[1], function(t) return F.avg_pool2d(t, c[2], c[3], c[4]) end,
        string.format("torch.nn.functional.avg_pool2d(x, %s, %s, %s)", ks, ss, ps)}
      ops[#ops + 1] = {c[1], function(t) return F.max_pool2d(t, c[2], c[3], c[4]) end,
        string.format("torch.nn.functional.max_pool2d(x, %s, %s, %s)", ks, ss, ps)}
    end
    ops[#ops + 1] = {{2, 3, 7, 5}, function(t) return F.adaptive_avg_pool2d(t, {3, 4}) end,
      "torch.nn.functional.adaptive_avg_pool2d(x, (3, 4))"}
    ops[#ops + 1] = {{1, 2, 5, 6}, function(t) return F.adaptive_avg_pool2d(t, {7, 4}) end,
      "torch.nn.functional.adaptive_avg_pool2d(x, (7, 4))"}
    ops[#ops + 1] = {{2, 3, 4, 5}, function(t) return F.pad(t, {-1, 2, 3, -2}, 0.25) end,
      "torch.nn.functional.pad(x, (-1, 2, 3, -2), value=0.25)"}
    -- one Python run for both dtypes (importing torch takes most of the time)
    local script = {"import torch",
      "def pr(t):\n  print(' '.join('%.17g' % v for v in t.detach().double().reshape(-1).tolist()))"}
    local mine = {}
    for _, dtype in ipairs{"float64", "float32"} do
      local tdt = dtype == "float64" and "torch.float64" or "torch.float32"
      for _, op in ipairs(ops) do
        local x = rand_tensor(op[1], dtype)
        x.requires_grad = true
        local y = op[2](x)
        local gy = rand_tensor(shape_of(y), dtype)
        y:backward(gy)
        mine[#mine + 1] = {y, x.grad, dtype == "float64" and 1e-10 or 1e-5}
        script[#script + 1] = string.format("x = torch.tensor(%s, dtype=%s, requires_grad=True)", pylist(x:detach()), tdt)
        script[#script + 1] = "y = " .. op[3]
        script[#script + 1] = string.format("y.backward(torch.tensor(%s, dtype=%s))", pylist(gy), tdt)
        script[#script + 1] = "pr(y); pr(x.grad)"
      end
    end
    local lines = run_torch(table.concat(script, "\n") .. "\n")
    assert.are.equal(2 * #mine, #lines, table.concat(lines[1] or {}, " "))
    for i = 1, #mine do
      assert_near(flat_numbers(mine[i][1]), lines[2 * i - 1], mine[i][3])
      assert_near(flat_numbers(mine[i][2]), lines[2 * i], mine[i][3])
    end
  end)
end)

describe("dropout", function()
  it("keeps the mean, zeroes a fraction p and scales the rest by 1/(1-p)", function()
    local n, p = 200000, 0.3
    local x = lark.ones({n})
    local y = F.dropout(x, p)
    local zeros = (y:eq(0)):double():sum():item()
    assert.is_true(math.abs(zeros / n - p) < 0.01, "fraction dropped " .. zeros / n)
    assert.is_true(math.abs(y:double():mean():item() - 1) < 0.02)
    local kept = y:double():max():item()
    assert_near(kept, 1 / (1 - p), 1e-6)
    assert_near(y:double():min():item(), 0, 0)
  end)

  it("gives the same mask for the same seed, and gradients through the mask", function()
    local x = rand_tensor({8, 50})
    lark.manual_seed(123)
    local a = F.dropout(x, 0.5)
    lark.manual_seed(123)
    local b = F.dropout(x, 0.5)
    assert_same(a, b)
    local c = F.dropout(x, 0.5)
    assert.is_false(same_nan(a:table(), c:table()))
    local g = lark.Generator and lark.Generator(77)
    if g then
      local d = F.dropout(x, 0.5, true, lark.Generator(77))
      assert_same(d, F.dropout(x, 0.5, true, lark.Generator(77)))
    end
    x.requires_grad = true
    lark.manual_seed(9)
    local y = F.dropout(x, 0.25)
    y:sum():backward()
    -- the gradient is the mask times 1/(1-p): y / x where kept
    local yt, xt, gt = y:table(), x:detach():table(), x.grad:table()
    for i = 1, 8 do
      for j = 1, 50 do
        local want = yt[i][j] == 0 and 0 or 1 / 0.75
        assert_near(gt[i][j], want, 1e-12)
        if yt[i][j] ~= 0 then assert_near(yt[i][j], xt[i][j] / 0.75, 1e-12) end
      end
    end
  end)

  it("is the identity for p = 0 and in eval mode, and zeroes everything for p = 1", function()
    local x = rand_tensor({3, 4})
    assert_same(F.dropout(x, 0), x)
    assert_same(F.dropout(x, 0.7, false), x)
    assert_same(F.dropout(x, 1), lark.zeros({3, 4}, {dtype = "float64"}))
    x.requires_grad = true
    F.dropout(x, 1):sum():backward()
    assert_same(x.grad, lark.zeros({3, 4}, {dtype = "float64"}))
    assert.are.same({0, 3}, shape_of(F.dropout(lark.zeros({0, 3}), 0.5)))
    expect_error("dropout: p must be a probability in [0, 1], got 1.5", function() F.dropout(x, 1.5) end)
    expect_error("dropout: p must be a probability", function() F.dropout(x, -0.1) end)
    expect_error("dropout: argument 1: expected a Tensor", function() F.dropout(3, 0.1) end)
  end)
end)

describe("drop_path", function()
  it("drops whole samples with probability p and scales the kept ones", function()
    local n, p = 4000, 0.25
    local x = lark.ones({n, 3, 2})
    local y = F.drop_path(x, p, true)
    local per = y:double():sum({2, 3}):table()
    local dropped = 0
    for i = 1, n do
      if per[i] == 0 then dropped = dropped + 1 else assert_near(per[i], 6 / (1 - p), 1e-6) end
    end
    assert.is_true(math.abs(dropped / n - p) < 0.03, "fraction dropped " .. dropped / n)
    -- every element of a sample shares its decision
    local t = y:table()
    for i = 1, 50 do
      for c = 1, 3 do
        for k = 1, 2 do assert.are.equal(t[i][1][1], t[i][c][k]) end
      end
    end
    assert.is_true(math.abs(y:double():mean():item() - 1) < 0.05)
  end)

  it("is the identity in eval mode or for p = 0, reproducible, with gradients", function()
    local x = rand_tensor({6, 4})
    assert_same(F.drop_path(x, 0.5), x) -- training defaults to false, as in timm
    assert_same(F.drop_path(x, 0.5, false), x)
    assert_same(F.drop_path(x, 0, true), x)
    assert_same(F.drop_path(x, 1, true), lark.zeros({6, 4}, {dtype = "float64"}))
    lark.manual_seed(42)
    local a = F.drop_path(x, 0.5, true)
    lark.manual_seed(42)
    assert_same(F.drop_path(x, 0.5, true), a)
    x.requires_grad = true
    lark.manual_seed(1)
    local y = F.drop_path(x, 0.5, true)
    y:sum():backward()
    local yt, gt = y:table(), x.grad:table()
    for i = 1, 6 do
      local kept = yt[i][1] ~= 0
      for j = 1, 4 do assert_near(gt[i][j], kept and 2 or 0, 1e-12) end
    end
    expect_error("drop_path: p must be a probability", function() F.drop_path(x, 2, true) end)
  end)
end)
