-- conv_spec.lua: F.conv2d (im2col + GEMM, core/ops/conv.c) against its plain 7-deep reference
-- loops and against PyTorch (outputs and the gradients of input, weight and bias), float64
-- gradchecks, awkward inputs (views, empty batch, 1x1 kernels), the argument errors; and F.linear.
local run_torch = run_python_numbers -- spec/helper.lua
local F = require "lark.nn.functional"



-- A Python list literal of a tensor's values (nested like its shape), exact in float64.

-- Runs a Python script; returns its output lines, each parsed as a list of numbers.

-- {input shape, weight shape, opts, bias?}
local cases = {
  {{2, 3, 7, 6}, {4, 3, 3, 3}, {}, true},
  {{2, 4, 9, 8}, {6, 4, 3, 2}, {stride = 2, padding = 1}, true},
  {{1, 4, 8, 9}, {4, 2, 3, 3}, {dilation = 2, padding = {2, 1}, groups = 2}, false},
  {{3, 2, 6, 7}, {3, 2, 2, 4}, {padding = {1, 0, 2, 1}, stride = {1, 2}}, true},
  {{2, 5, 7, 7}, {5, 1, 5, 3}, {padding = {2, 2, 1, 1}, groups = 5}, true},           -- depth-wise
  {{2, 4, 10, 9}, {4, 1, 3, 3}, {stride = 2, dilation = 2, padding = {3, 0, 1, 2}, groups = 4}, false},
  {{2, 6, 5, 5}, {4, 3, 1, 1}, {groups = 2}, true},                                  -- 1x1, no im2col
  {{1, 2, 3, 3}, {3, 2, 5, 5}, {padding = 1}, true},                                 -- kernel = padded map
  {{4, 3, 4, 6}, {6, 1, 2, 3}, {groups = 3, stride = {2, 1}, dilation = {1, 2}, padding = {0, 1, 2, 0}}, true},
  {{4, 8, 12, 11}, {8, 4, 3, 3}, {groups = 2, padding = {1, 2, 0, 1}}, true},        -- big enough for threads
  {{3, 6, 9, 9}, {6, 6, 1, 1}, {}, false},                                           -- 1x1, threads
  -- depth-wise through the direct kernels: large, larger than the map, SLaK's strips, even sizes
  {{2, 4, 11, 10}, {4, 1, 13, 13}, {padding = 6, groups = 4}, true},
  {{1, 3, 6, 5}, {3, 1, 15, 15}, {padding = 7, groups = 3}, false},
  {{2, 3, 12, 9}, {3, 1, 13, 3}, {padding = {6, 1}, groups = 3}, true},
  {{2, 3, 9, 12}, {3, 1, 3, 13}, {padding = {1, 6}, groups = 3}, false},
  {{1, 5, 8, 8}, {5, 1, 4, 6}, {padding = {2, 1, 3, 2}, groups = 5}, true},
  {{2, 16, 9, 9}, {16, 1, 7, 7}, {padding = 3, groups = 16}, true},                  -- big enough for threads
}

local function make_case(c, dtype)
  local x = rand_tensor(c[1], dtype)
  local w = rand_tensor(c[2], dtype)
  local b = c[4] and rand_tensor({c[2][1]}, dtype) or nil
  return x, w, b
end

-- torch's padding argument for opts: symmetric pads go to conv2d, others through F.pad first.
local function torch_conv_expr(c)
  local o = c[3]
  local function pair(v, d)
    if v == nil then return d, d end
    if type(v) == "number" then return v, v end
    return v[1], v[2]
  end
  local sh, sw = pair(o.stride, 1)
  local dh, dw = pair(o.dilation, 1)
  local pt, pb, pl, pr = 0, 0, 0, 0
  if type(o.padding) == "number" then pt, pb, pl, pr = o.padding, o.padding, o.padding, o.padding
  elseif o.padding and #o.padding == 2 then pt, pb, pl, pr = o.padding[1], o.padding[1], o.padding[2], o.padding[2]
  elseif o.padding then pt, pb, pl, pr = table.unpack(o.padding) end
  return string.format("torch.nn.functional.conv2d(torch.nn.functional.pad(x, (%d, %d, %d, %d)), w, b, stride=(%d, %d), dilation=(%d, %d), groups=%d)",
    pl, pr, pt, pb, sh, sw, dh, dw, o.groups or 1)
end

describe("conv2d", function()
  it("matches the reference loops, outputs and both backward passes, float32 and float64", function()
    math.randomseed(11)
    for _, dtype in ipairs{"float64", "float32"} do
      local tol = dtype == "float64" and 1e-12 or 1e-5
      for i, c in ipairs(cases) do
        local x, w, b = make_case(c, dtype)
        local y = lark.conv2d(x, w, b, c[3])
        local r = lark.conv2d_reference(x, w, b, c[3])
        assert.are.equal(dtype, y:dtype())
        assert_near(y, r, tol)
        local gy = rand_tensor(shape_of(y), dtype)
        assert_near(lark.conv2d_backward_input(gy, w, c[1], c[3]), lark.conv2d_backward_input_reference(gy, w, c[1], c[3]), tol)
        assert_near(lark.conv2d_backward_weight(gy, x, c[2], c[3]), lark.conv2d_backward_weight_reference(gy, x, c[2], c[3]), tol)
        -- the functional form records autograd and gives the same gradients
        x.requires_grad, w.requires_grad = true, true
        if b then b.requires_grad = true end
        local out = F.conv2d(x, w, b, c[3])
        assert.are.equal("conv2d", out.grad_fn)
        out:backward(gy)
        assert_near(x.grad, lark.conv2d_backward_input_reference(gy, w:detach(), c[1], c[3]), tol)
        assert_near(w.grad, lark.conv2d_backward_weight_reference(gy, x:detach(), c[2], c[3]), tol)
        if b then assert_near(b.grad, gy:sum({1, 3, 4}), tol) end
      end
    end
  end)

  it("matches a Lua loop of the definition on a small grouped case", function()
    local x = lark.tensor(rand_table({1, 4, 4, 5}), {dtype = "float64"})
    local w = lark.tensor(rand_table({2, 2, 2, 3}), {dtype = "float64"})
    local xt, wt = x:table(), w:table()
    local y = F.conv2d(x, w, nil, {stride = {2, 1}, padding = {1, 0, 0, 2}, groups = 2})
    local Ho, Wo = (4 + 1 - 2) // 2 + 1, (5 + 2 - 3) + 1
    assert.are.same({1, 2, Ho, Wo}, shape_of(y))
    local expect = build_table({1, 2, Ho, Wo}, function(cc)
      local co, oh, ow = cc[2], cc[3], cc[4]
      local s = 0
      for ci = 1, 2 do
        for i = 1, 2 do
          for j = 1, 3 do
            local ih, iw = (oh - 1) * 2 - 1 + i, (ow - 1) + j
            if ih >= 1 and ih <= 4 and iw >= 1 and iw <= 5 then
              s = s + wt[co][ci][i][j] * xt[1][(co - 1) * 2 + ci][ih][iw]
            end
          end
        end
      end
      return s
    end)
    assert_near(y, expect, 1e-12)
  end)

  it("passes float64 gradchecks with stride, dilation, asymmetric padding and groups", function()
    math.randomseed(3)
    local configs = {
      {{2, 2, 5, 4}, {3, 2, 2, 3}, {stride = 2, padding = {1, 0, 2, 1}}},
      {{1, 4, 6, 6}, {4, 2, 3, 2}, {dilation = 2, padding = 1, groups = 2}},
      {{2, 3, 5, 5}, {3, 1, 3, 3}, {padding = {1, 1}, groups = 3, stride = {1, 2}}},
      {{1, 2, 6, 5}, {2, 1, 7, 3}, {padding = {3, 1}, groups = 2}},                -- direct depth-wise kernels
      {{2, 2, 4, 4}, {2, 1, 6, 6}, {padding = {2, 3, 3, 2}, groups = 2}},
    }
    for _, c in ipairs(configs) do
      local x, w, b = rand_tensor(c[1]), rand_tensor(c[2]), rand_tensor({c[2][1]})
      x.requires_grad, w.requires_grad, b.requires_grad = true, true, true
      local ok, msg = lark.autograd.gradcheck(function(x_, w_, b_) return F.conv2d(x_, w_, b_, c[3]) end, {x, w, b})
      assert(ok, msg)
    end
  end)

  it("reads non-contiguous views and mixed dtypes, and handles an empty batch", function()
    local base = rand_tensor({3, 2, 6, 5})
    local x = base:transpose(1, 2) -- (2, 3, 6, 5) view
    local w = rand_tensor({4, 3, 3, 3}):transpose(3, 4) -- (4, 3, 3, 3) view
    assert_near(lark.conv2d(x, w, nil, {padding = 1}), lark.conv2d_reference(x:contiguous(), w:contiguous(), nil, {padding = 1}), 1e-12)
    local xe = rand_tensor({2, 3, 6, 5}):narrow(4, 2, 3)
    assert_near(lark.conv2d(xe, w), lark.conv2d_reference(xe:contiguous(), w:contiguous()), 1e-12)
    -- float32 input, float64 weight: promoted to float64
    local y = lark.conv2d(rand_tensor({1, 3, 4, 4}, "float32"), w)
    assert.are.equal("float64", y:dtype())
    -- an expanded (stride-0) input
    local xb = rand_tensor({1, 3, 1, 5}):expand(2, 3, 4, 5)
    assert_near(lark.conv2d(xb, w), lark.conv2d_reference(xb:contiguous(), w:contiguous()), 1e-12)
    -- N = 0
    local y0 = lark.conv2d(lark.zeros({0, 3, 5, 5}, {dtype = "float64"}), w, nil, {stride = 2})
    assert.are.same({0, 4, 2, 2}, shape_of(y0))
  end)

  it("matches PyTorch: outputs and the gradients of input, weight and bias", function()
    if not have_torch() then
      pending("python3-torch is not installed: PyTorch parity skipped")
      return
    end
    math.randomseed(5)
    -- one Python run for both dtypes (importing torch takes most of the time)
    local script = {"import torch", "torch.set_num_threads(1)",
      "def pr(t):\n  print(' '.join('%.17g' % v for v in t.detach().double().reshape(-1).tolist()))"}
    local mine = {}
    for _, dtype in ipairs{"float64", "float32"} do
      local tol = dtype == "float64" and 1e-10 or 1e-5
      local tdt = dtype == "float64" and "torch.float64" or "torch.float32"
      for _, c in ipairs(cases) do
        local x, w, b = make_case(c, dtype)
        x.requires_grad, w.requires_grad = true, true
        if b then b.requires_grad = true end
        local y = F.conv2d(x, w, b, c[3])
        local gy = rand_tensor(shape_of(y), dtype)
        y:backward(gy)
        mine[#mine + 1] = {y, x.grad, w.grad, b and b.grad, tol = tol}
        script[#script + 1] = string.format("x = torch.tensor(%s, dtype=%s, requires_grad=True)", pylist(x:detach()), tdt)
        script[#script + 1] = string.format("w = torch.tensor(%s, dtype=%s, requires_grad=True)", pylist(w:detach()), tdt)
        script[#script + 1] = b and string.format("b = torch.tensor(%s, dtype=%s, requires_grad=True)", pylist(b:detach()), tdt)
          or "b = None"
        script[#script + 1] = "y = " .. torch_conv_expr(c)
        script[#script + 1] = string.format("y.backward(torch.tensor(%s, dtype=%s))", pylist(gy), tdt)
        script[#script + 1] = "pr(y); pr(x.grad); pr(w.grad)"
        script[#script + 1] = b and "pr(b.grad)" or "print('nobias')"
      end
    end
    local lines = run_torch(table.concat(script, "\n") .. "\n")
    assert.are.equal(4 * #mine, #lines, table.concat(lines[1] or {}, " "))
    for i = 1, #mine do
      for k = 1, 4 do
        if mine[i][k] then assert_near(flat_numbers(mine[i][k]), lines[4 * (i - 1) + k], mine[i].tol) end
      end
    end
  end)

  it("names the problem in its errors", function()
    local x = rand_tensor({2, 4, 6, 6})
    expect_error("weight has 3 input channels per group", function() F.conv2d(x, rand_tensor({2, 3, 3, 3})) end)
    expect_error("weight has 4 input channels per group (dim 2) but the input has 4 channels / 2 groups = 2",
      function() F.conv2d(x, rand_tensor({2, 4, 3, 3}), nil, {groups = 2}) end)
    expect_error("groups (3) must divide the input channels (4)",
      function() F.conv2d(x, rand_tensor({3, 1, 3, 3}), nil, {groups = 3}) end)
    expect_error("groups (2) must divide the output channels (3",
      function() F.conv2d(x, rand_tensor({3, 2, 3, 3}), nil, {groups = 2}) end)
    expect_error("is larger than the padded input 6x6", function() F.conv2d(x, rand_tensor({1, 4, 7, 3})) end)
    expect_error("the (dilated) kernel 9x3 is larger than the padded input 8x6",
      function() F.conv2d(x, rand_tensor({1, 4, 3, 3}), nil, {dilation = {4, 1}, padding = {1, 0}}) end)
    expect_error("bias has 3 elements", function() F.conv2d(x, rand_tensor({2, 4, 3, 3}), rand_tensor({3})) end)
    expect_error("input must be 4-D", function() F.conv2d(rand_tensor({4, 6, 6}), rand_tensor({2, 4, 3, 3})) end)
    expect_error("weight must be 4-D", function() F.conv2d(x, rand_tensor({2, 4, 3})) end)
    expect_error("must be float32 or float64", function() F.conv2d(x:long(), rand_tensor({2, 4, 3, 3})) end)
    expect_error("stride must be in [1,", function() F.conv2d(x, rand_tensor({2, 4, 3, 3}), nil, {stride = 0}) end)
    expect_error("padding must be in [0,", function() F.conv2d(x, rand_tensor({2, 4, 3, 3}), nil, {padding = -1}) end)
    expect_error("padding must have 2 or 4 integers", function() F.conv2d(x, rand_tensor({2, 4, 3, 3}), nil, {padding = {1, 2, 3}}) end)
    expect_error("groups must be an integer", function() F.conv2d(x, rand_tensor({2, 4, 3, 3}), nil, {groups = "two"}) end)
    expect_error("expected a Tensor", function() F.conv2d(x, nil) end)
    expect_error("expected an options table", function() lark.conv2d(x, rand_tensor({2, 4, 3, 3}), 5) end)
    expect_error("grad_out has shape", function()
      lark.conv2d_backward_input(rand_tensor({2, 2, 3, 3}), rand_tensor({2, 4, 3, 3}), {2, 4, 6, 6})
    end)
  end)
end)

describe("linear", function()
  it("computes x @ w^T + b with gradients", function()
    local x, w, b = rand_tensor({3, 4}), rand_tensor({2, 4}), rand_tensor({2})
    local xt, wt, bt = x:table(), w:table(), b:table()
    local y = F.linear(x, w, b)
    assert_near(y, build_table({3, 2}, function(c)
      local s = bt[c[2]]
      for k = 1, 4 do s = s + xt[c[1]][k] * wt[c[2]][k] end
      return s
    end), 1e-12)
    assert_near(F.linear(x, w), build_table({3, 2}, function(c)
      local s = 0
      for k = 1, 4 do s = s + xt[c[1]][k] * wt[c[2]][k] end
      return s
    end), 1e-12)
    x.requires_grad, w.requires_grad, b.requires_grad = true, true, true
    F.linear(x, w, b):sum():backward()
    -- d/dx = sum over outputs of w, d/dw = sum over rows of x, d/db = number of rows
    assert_near(x.grad, build_table({3, 4}, function(c) return wt[1][c[2]] + wt[2][c[2]] end), 1e-12)
    assert_near(w.grad, build_table({2, 4}, function(c) return xt[1][c[2]] + xt[2][c[2]] + xt[3][c[2]] end), 1e-12)
    assert_near(b.grad, {3, 3}, 1e-12)
    local x2, w2, b2 = rand_tensor({2, 3, 4}), rand_tensor({5, 4}), rand_tensor({5})
    x2.requires_grad, w2.requires_grad, b2.requires_grad = true, true, true
    local ok, msg = lark.autograd.gradcheck(function(a, m, v) return F.linear(a, m, v) end, {x2, w2, b2})
    assert(ok, msg)
  end)
end)
