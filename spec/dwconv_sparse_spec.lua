-- spec/dwconv_sparse_spec.lua: the masked depth-wise convolution (core/ops/dwconv_sparse.c, SLaK's
-- sparse kernels): both of its paths (the sparse kernels that skip masked-out taps, and the dense
-- kernels on weight * mask) against the dense reference loops on weight * mask, on awkward shapes;
-- the summed (merged) kernels; autograd; the argument errors; and a depth-wise Conv2d of a model
-- under lark.sparse.Masking running the sparse kernel.
local sparse = require "lark.sparse"

local function masked(w, m) return w * m:to(w:dtype()) end

-- runs fn under each path, putting the mode back
local function each_path(fn)
  for _, mode in ipairs({"sparse", "dense", "auto"}) do
    local before = lark.dwconv2d_sparse_path(mode)
    local ok, err = pcall(fn, mode)
    lark.dwconv2d_sparse_path(before)
    if not ok then error(mode .. " path: " .. tostring(err), 0) end
  end
end

-- {N, C, H, W, kh, kw, opts, density}
local cases = {
  {2, 3, 9, 7, 3, 3, {padding = 1}, 0.5},
  {1, 2, 16, 16, 13, 13, {padding = 6}, 0.3},
  {2, 2, 12, 20, 31, 31, {padding = 15}, 0.6},       -- kernel larger than the map
  {1, 3, 17, 40, 5, 51, {padding = {2, 25}}, 0.4},   -- SLaK's wide kernel
  {1, 2, 33, 9, 51, 5, {padding = {25, 2}}, 0.2},
  {2, 1, 1, 1, 3, 3, {padding = 1}, 0.7},            -- 1x1 map
  {1, 4, 10, 11, 4, 6, {padding = {1, 2, 3, 2}}, 0.5}, -- even kernel, uneven padding
  {2, 3, 8, 8, 3, 3, {}, 0.5},                       -- no padding
  {1, 2, 15, 15, 5, 5, {padding = 2, stride = 2}, 0.5}, -- strides: the dense route
  {1, 2, 15, 15, 3, 3, {padding = 2, dilation = 2}, 0.5},
  {3, 17, 18, 18, 7, 7, {padding = 3}, 0.1},          -- many channels, threaded
  {1, 2, 6, 6, 5, 5, {padding = 2}, 0.0},             -- every tap masked
  {1, 2, 6, 6, 5, 5, {padding = 2}, 1.0},             -- none masked
}

describe("lark.dwconv2d_masked", function()
  for ci, c in ipairs(cases) do
    local N, C, H, W, kh, kw, opts, d = table.unpack(c)
    for _, dt in ipairs({"float64", "float32"}) do
      it(string.format("case %d (%dx%d on %dx%d, density %.1f, %s) equals the dense reference on weight * mask",
        ci, kh, kw, H, W, d, dt), function()
        local g = lark.Generator(100 + ci)
        local x = lark.randn({N, C, H, W}, {dtype = dt, generator = g})
        local w = lark.randn({C, 1, kh, kw}, {dtype = dt, generator = g})
        local b = lark.randn({C}, {dtype = dt, generator = g})
        local m = lark.rand({C, 1, kh, kw}, {generator = g}):lt(d)
        local wm = masked(w, m)
        local y_ref = lark.dwconv2d_reference(x, wm, b, opts)
        local gy = lark.randn(y_ref.shape, {dtype = dt, generator = g})
        local gx_ref = lark.dwconv2d_backward_input_reference(gy, wm, x.shape, opts)
        local gw_ref = lark.dwconv2d_backward_weight_reference(gy, x, {kh, kw}, opts) * m:to(dt)
        local tol = dt == "float32" and 2e-5 or 1e-12
        each_path(function()
          assert_near(lark.dwconv2d_masked(x, w, m, b, opts), y_ref, tol)
          assert_near(lark.dwconv2d_masked_backward_input(gy, w, m, x.shape, opts), gx_ref, tol)
          local gw = lark.dwconv2d_masked_backward_weight(gy, x, m, opts)
          assert_near(gw, gw_ref, tol)
          -- exactly zero where the mask is off
          assert.are.equal(0, gw:masked_fill(m, 0):abs():sum():item())
        end)
      end)
    end
  end

  it("records its gradient: masked weight gradient, or the dense one with dense_grad", function()
    local x = lark.randn({2, 3, 9, 9}, {dtype = "float64"}):requires_grad_()
    local w = lark.randn({3, 1, 7, 7}, {dtype = "float64"}):requires_grad_()
    local b = lark.randn({3}, {dtype = "float64"}):requires_grad_()
    local m = lark.rand({3, 1, 7, 7}):lt(0.3)
    local opts = {padding = 3}
    local gy = lark.randn({2, 3, 9, 9}, {dtype = "float64"})
    each_path(function()
      x.grad, w.grad, b.grad = nil, nil, nil
      local y = lark.dwconv2d_masked(x, w, m, b, opts)
      y:backward(gy)
      local wm = masked(w:detach(), m)
      assert_near(x.grad, lark.dwconv2d_backward_input_reference(gy, wm, x.shape, opts), 1e-12)
      assert_near(w.grad, lark.dwconv2d_backward_weight_reference(gy, x:detach(), 7, opts) * m:to("float64"), 1e-12)
      assert_near(b.grad, gy:sum({1, 3, 4}), 1e-12)
      w.grad = nil
      lark.dwconv2d_masked(x, w, m, b, {padding = 3, dense_grad = true}):backward(gy)
      assert_near(w.grad, lark.dwconv2d_backward_weight_reference(gy, x:detach(), 7, opts), 1e-12)
    end)
  end)

  it("sums several masked kernels in one pass (SLaK's 51x5 + 5x51 + 5x5, one of them dense)", function()
    local g = lark.Generator(7)
    for _, dt in ipairs({"float64", "float32"}) do
      local x = lark.randn({2, 3, 14, 19}, {dtype = dt, generator = g})
      local ws = {lark.randn({3, 1, 15, 5}, {dtype = dt, generator = g}), lark.randn({3, 1, 5, 15}, {dtype = dt, generator = g}),
        lark.randn({3, 1, 5, 5}, {dtype = dt, generator = g})}
      local ms = {lark.rand({3, 1, 15, 5}, {generator = g}):lt(0.4), lark.rand({3, 1, 5, 15}, {generator = g}):lt(0.2), false}
      local b = lark.randn({3}, {dtype = dt, generator = g})
      local wm = {masked(ws[1], ms[1]), masked(ws[2], ms[2]), ws[3]}
      local y_ref = lark.dwconv2d_sum_reference(x, wm, b)
      local gy = lark.randn(y_ref.shape, {dtype = dt, generator = g})
      local gx_ref = lark.dwconv2d_sum_backward_input_reference(gy, wm, x.shape)
      local tol = dt == "float32" and 2e-5 or 1e-12
      each_path(function()
        assert_near(lark.dwconv2d_sum_masked(x, ws, ms, b), y_ref, tol)
        assert_near(lark.dwconv2d_sum_masked_backward_input(gy, ws, ms, x.shape), gx_ref, tol)
        local gws = lark.dwconv2d_sum_masked_backward_weight(gy, x, ws, ms)
        for k = 1, 3 do
          local kh, kw = ws[k].shape[3], ws[k].shape[4]
          local ref = lark.dwconv2d_backward_weight_reference(gy, x, {kh, kw}, {padding = {kh // 2, kw // 2}})
          if ms[k] then ref = ref * ms[k]:to(dt) end
          assert_near(gws[k], ref, tol)
        end
      end)
    end
  end)

  it("rejects bad masks and arguments with clear errors", function()
    local x, w = lark.randn({1, 2, 5, 5}), lark.randn({2, 1, 3, 3})
    expect_error("mask must be bool", lark.dwconv2d_masked, x, w, lark.ones({2, 1, 3, 3}), nil, {padding = 1})
    expect_error("mask must have the kernel's shape [2,1,3,3]", lark.dwconv2d_masked, x, w,
      lark.ones({2, 1, 3, 2}, {dtype = "bool"}), nil, {padding = 1})
    expect_error("is float64, expected float32 like the input", lark.dwconv2d_masked, x, w:to("float64"),
      lark.ones({2, 1, 3, 3}, {dtype = "bool"}))
    expect_error("expected one mask per kernel (1), got 2", lark.dwconv2d_sum_masked, x, {w}, {false, false})
    expect_error("expected \"auto\", \"sparse\" or \"dense\"", lark.dwconv2d_sparse_path, "fast")
    assert.are.equal("auto", lark.dwconv2d_sparse_path())
  end)
end)

describe("a depth-wise Conv2d under lark.sparse.Masking", function()
  it("holds its mask and runs the sparse kernel, equal to the dense conv of the masked weight", function()
    lark.manual_seed(5)
    local model = lark.nn.Sequential(lark.nn.Conv2d(4, 4, 7, {padding = 3, groups = 4}), lark.nn.ReLU(),
      lark.nn.Conv2d(4, 2, 1))
    local m = sparse.Masking(model, {density = 0.3, init = "uniform", total_steps = 10, which = {"0.weight"},
      dense_threshold = false})
    local conv = model[1]
    assert.truthy(conv.weight_mask, "the depth-wise conv carries its mask")
    assert.are.equal(m.masks["0.weight"], conv.weight_mask)
    assert.is_nil(rawget(model[3], "weight_mask"))
    local x = lark.randn({2, 4, 12, 12})
    local y = model(x)
    local dense = lark.conv2d(x, conv.weight * conv.weight_mask:to("float32"), conv.bias, {padding = 3, groups = 4})
    assert_near(model[1](x), dense, 1e-5)
    y:sum():backward()
    -- masked-out weights get no gradient (random growth needs none)
    assert.are.equal(0, conv.weight.grad:masked_fill(conv.weight_mask, 0):abs():sum():item())
  end)
end)
