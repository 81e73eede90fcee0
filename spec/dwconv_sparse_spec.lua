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

-- ---- on a GPU: the masked functions compose the GPU's dense kernels (dwconv_sparse.c's device
-- path); they must give the CPU's results, gradients and errors. Skipped without a CUDA device.

local function gpu_tol(dt) return dt == "float32" and 1e-5 or 1e-12 end

gpu_describe("lark.dwconv2d_masked on CUDA", function()
  -- cases of the table above: small and SLaK-sized kernels, uneven padding, strides, dilation, many
  -- channels, every tap masked
  for _, ci in ipairs({1, 2, 4, 7, 9, 10, 11, 12}) do
    local N, C, H, W, kh, kw, opts, d = table.unpack(cases[ci])
    for _, dt in ipairs({"float32", "float64"}) do
      it(string.format("case %d (%dx%d on %dx%d, density %.1f, %s): forward and both gradients equal the CPU's",
        ci, kh, kw, H, W, d, dt), function()
        local g = lark.Generator(300 + ci)
        local x = lark.randn({N, C, H, W}, {dtype = dt, generator = g})
        local w = lark.randn({C, 1, kh, kw}, {dtype = dt, generator = g})
        local b = lark.randn({C}, {dtype = dt, generator = g})
        local m = lark.rand({C, 1, kh, kw}, {generator = g}):lt(d)
        local xg, wg, bg, mg = x:cuda(), w:cuda(), b:cuda(), m:cuda()
        local y = lark.dwconv2d_masked(x, w, m, b, opts)
        expect_gpu_close("forward", lark.dwconv2d_masked(xg, wg, mg, bg, opts), y, gpu_tol(dt))
        local gy = lark.randn(y.shape, {dtype = dt, generator = g})
        expect_gpu_close("input gradient", lark.dwconv2d_masked_backward_input(gy:cuda(), wg, mg, x.shape, opts),
          lark.dwconv2d_masked_backward_input(gy, w, m, x.shape, opts), gpu_tol(dt))
        local gw = lark.dwconv2d_masked_backward_weight(gy:cuda(), xg, mg, opts)
        expect_gpu_close("weight gradient", gw, lark.dwconv2d_masked_backward_weight(gy, x, m, opts), gpu_tol(dt))
        assert.are.equal(0, gw:masked_fill(mg, 0):abs():sum():item(), "weight gradient off the mask")
      end)
    end
  end

  it("records its gradient on the GPU as on the CPU, with the masked and the dense weight gradient", function()
    for _, dt in ipairs({"float32", "float64"}) do
      for _, dense in ipairs({false, true}) do
        local g = lark.Generator(41)
        local x = lark.randn({2, 3, 11, 10}, {dtype = dt, generator = g})
        local w = lark.randn({3, 1, 9, 7}, {dtype = dt, generator = g})
        local b = lark.randn({3}, {dtype = dt, generator = g})
        local m = lark.rand({3, 1, 9, 7}, {generator = g}):lt(0.3)
        local gy = lark.randn({2, 3, 11, 10}, {dtype = dt, generator = g})
        local opts = {padding = {4, 3}, dense_grad = dense}
        local leaves = {}
        for side, dev in ipairs({"cpu", "cuda"}) do
          local l = {x = x:detach():to(dev):requires_grad_(), w = w:detach():to(dev):requires_grad_(),
            b = b:detach():to(dev):requires_grad_()}
          local y = lark.dwconv2d_masked(l.x, l.w, m:to(dev), l.b, opts)
          y:backward(gy:to(dev))
          l.y, leaves[side] = y, l
        end
        local what = string.format("%s dense_grad=%s: ", dt, tostring(dense))
        local c, gpu = leaves[1], leaves[2]
        expect_gpu_close(what .. "output", gpu.y:detach(), c.y:detach(), gpu_tol(dt))
        expect_gpu_close(what .. "input gradient", gpu.x.grad, c.x.grad, gpu_tol(dt))
        expect_gpu_close(what .. "weight gradient", gpu.w.grad, c.w.grad, gpu_tol(dt))
        expect_gpu_close(what .. "bias gradient", gpu.b.grad, c.b.grad, gpu_tol(dt))
        local off = gpu.w.grad:masked_fill(m:cuda(), 0):abs():sum():item()
        if dense then
          assert.is_true(off > 0, what .. "the dense weight gradient has values off the mask")
        else
          assert.are.equal(0, off, what .. "the masked weight gradient is zero off the mask")
        end
      end
    end
  end)

  it("sums masked kernels (SLaK's 51x5 + 5x51 + 5x5, one of them dense) as the CPU does", function()
    local g = lark.Generator(8)
    for _, dt in ipairs({"float32", "float64"}) do
      local x = lark.randn({2, 3, 14, 19}, {dtype = dt, generator = g})
      local ws = {lark.randn({3, 1, 15, 5}, {dtype = dt, generator = g}),
        lark.randn({3, 1, 5, 15}, {dtype = dt, generator = g}), lark.randn({3, 1, 5, 5}, {dtype = dt, generator = g})}
      local ms = {lark.rand({3, 1, 15, 5}, {generator = g}):lt(0.4), lark.rand({3, 1, 5, 15}, {generator = g}):lt(0.2), false}
      local b = lark.randn({3}, {dtype = dt, generator = g})
      local wsg = {ws[1]:cuda(), ws[2]:cuda(), ws[3]:cuda()}
      local msg = {ms[1]:cuda(), ms[2]:cuda(), false}
      local y = lark.dwconv2d_sum_masked(x, ws, ms, b)
      expect_gpu_close(dt .. " sum forward", lark.dwconv2d_sum_masked(x:cuda(), wsg, msg, b:cuda()), y, gpu_tol(dt))
      local gy = lark.randn(y.shape, {dtype = dt, generator = g})
      expect_gpu_close(dt .. " sum input gradient", lark.dwconv2d_sum_masked_backward_input(gy:cuda(), wsg, msg, x.shape),
        lark.dwconv2d_sum_masked_backward_input(gy, ws, ms, x.shape), gpu_tol(dt))
      local gws = lark.dwconv2d_sum_masked_backward_weight(gy:cuda(), x:cuda(), wsg, msg)
      local cws = lark.dwconv2d_sum_masked_backward_weight(gy, x, ws, ms)
      for k = 1, 3 do expect_gpu_close(dt .. " sum weight gradient " .. k, gws[k], cws[k], gpu_tol(dt)) end
    end
  end)

  it("gives the CPU's errors for bad arguments and names both devices for split operands", function()
    local x, w, b = lark.randn({1, 2, 5, 5}), lark.randn({2, 1, 3, 3}), lark.randn({2})
    local m = lark.rand({2, 1, 3, 3}):lt(0.5)
    local xg, wg, bg, mg = x:cuda(), w:cuda(), b:cuda(), m:cuda()
    local function same(fn, n, cpu_args, gpu_args) -- n arguments (some may be nil)
      local cpu_err = error_of(fn, table.unpack(cpu_args, 1, n))
      local gpu_err = error_of(fn, table.unpack(gpu_args, 1, n))
      assert.are.equal(cpu_err, gpu_err)
    end
    local o = {padding = 1}
    same(lark.dwconv2d_masked, 5, {x, w, lark.ones({2, 1, 3, 3}), b, o}, {xg, wg, lark.ones({2, 1, 3, 3}):cuda(), bg, o})
    same(lark.dwconv2d_masked, 5, {x, w, lark.ones({2, 1, 3, 2}, {dtype = "bool"}), b, o},
      {xg, wg, lark.ones({2, 1, 3, 2}, {dtype = "bool"}):cuda(), bg, o})
    same(lark.dwconv2d_masked, 5, {x, w:double(), m, nil, o}, {xg, wg:double(), mg, nil, o})
    same(lark.dwconv2d_masked_backward_weight, 4, {x, x, lark.ones({2, 1, 3, 3}), o},
      {xg, xg, lark.ones({2, 1, 3, 3}):cuda(), o})
    expect_error("dwconv2d (masked): input is on cuda:0 but mask is on cpu", lark.dwconv2d_masked, xg, wg, m, bg, o)
    expect_error("dwconv2d (masked): input is on cpu but weight is on cuda:0", lark.dwconv2d_masked, x, wg, mg, nil, o)
    expect_error("dwconv2d (masked): input is on cpu but mask is on cuda:0", lark.dwconv2d_masked, x, w, mg, b, o)
    expect_error("grad_out is on cuda:0 but mask is on cpu", lark.dwconv2d_masked_backward_weight, xg, xg, m, o)
    expect_error("dwconv2d_sum (masked): input is on cuda:0 but mask 2 is on cpu", lark.dwconv2d_sum_masked, xg,
      {wg, wg}, {mg, m}, nil, {o, o})
  end)
end)

gpu_describe("a depth-wise Conv2d under lark.sparse.Masking on CUDA", function()
  -- the same model, masks and data on the CPU and on the GPU, trained in lockstep
  local function build(dev, growth)
    lark.manual_seed(11)
    local model = lark.nn.Sequential(lark.nn.Conv2d(4, 4, 7, {padding = 3, groups = 4}), lark.nn.ReLU(),
      lark.nn.Conv2d(4, 3, 1))
    model:to(dev)
    local opt = require("lark.optim").SGD(model, {lr = 0.1, momentum = 0.9})
    local m = sparse.Masking(model, {density = 0.4, init = "ERK", growth = growth, exact_growth = true,
      update_frequency = 1, total_steps = 10, optimizer = opt, seed = 3, dense_threshold = false})
    return model, opt, m
  end
  local function count(mask) return math.tointeger(mask:sum():item()) end

  for _, growth in ipairs({"random", "gradient", "momentum"}) do
    it("trains with prune and " .. growth .. " growth every step, masks kept on the GPU, as on the CPU", function()
      local cm, copt, cmask = build("cpu", growth)
      local gm, gopt, gmask = build("cuda", growth)
      local conv = gm[1]
      assert.are.equal("cuda:0", conv.weight:device())
      assert.are.same(cmask.names, gmask.names)
      local counts = {}
      for _, name in ipairs(gmask.names) do
        assert.are.equal("cuda:0", gmask.masks[name]:device(), name)
        assert.is_true(gmask.masks[name]:cpu():eq(cmask.masks[name]):all():item(), name .. ": the initial masks differ")
        counts[name] = count(gmask.masks[name])
      end
      local g = lark.Generator(21)
      for step = 1, 3 do
        local x = lark.randn({2, 4, 10, 10}, {generator = g})
        local t = lark.randn({2, 3, 10, 10}, {generator = g})
        local losses, grads, before = {}, {}, {}
        for side, s in ipairs({{cm, copt, cmask, x, t}, {gm, gopt, gmask, x:cuda(), t:cuda()}}) do
          local model, opt, m, xs, ts = table.unpack(s)
          local d = model(xs) - ts
          local loss = (d * d):mean()
          opt:zero_grad()
          loss:backward()
          grads[side], before[side] = model[1].weight.grad:clone(), m.masks["0.weight"]
          m:after_backward()
          opt:step()
          m:step()
          losses[side] = loss:item()
        end
        assert.is_true(losses[2] == losses[2] and math.abs(losses[2] - losses[1]) <= 1e-3 * math.abs(losses[1]),
          string.format("step %d: loss %.9g on the GPU, %.9g on the CPU", step, losses[2], losses[1]))
        if step == 1 then -- same weights and masks so far: the gradients match closely
          expect_gpu_close("step 1 conv weight gradient", grads[2], grads[1], 1e-5)
          if growth == "random" then -- masked gradient (dense_gradients is off): zero off the mask
            assert.are.equal(0, grads[2]:masked_fill(before[2], 0):abs():sum():item())
          end
        end
        for _, name in ipairs(gmask.names) do
          local mask = gmask.masks[name]
          assert.are.equal("cuda:0", mask:device(), name .. " after the update")
          assert.are.equal(counts[name], count(mask), name .. ": prune and grow keep the count")
          local w = gmask.params[name]
          assert.are.equal(0, w:detach():masked_fill(mask, 0):abs():sum():item(), name .. ": weights off the mask")
          -- magnitudes a rounding apart may rank differently on the two devices: nearly all agree
          local agree = mask:cpu():eq(cmask.masks[name]):to("float64"):mean():item()
          assert.is_true(agree >= 0.95, string.format("%s: masks agree at %.3f of the taps", name, agree))
        end
        assert.are.equal(gmask.masks["0.weight"], conv.weight_mask, "the conv holds the current mask")
        assert.are.equal("cuda:0", conv.weight_mask:device())
      end
    end)
  end

  it("follows the model when it moves to the GPU after the optimizer and the Masking were made", function()
    lark.manual_seed(12)
    local model = lark.nn.Sequential(lark.nn.Conv2d(4, 4, 7, {padding = 3, groups = 4}), lark.nn.Conv2d(4, 3, 1))
    local opt = require("lark.optim").SGD(model, {lr = 0.1, momentum = 0.9})
    local m = sparse.Masking(model, {density = 0.4, init = "ERK", update_frequency = 1, total_steps = 10,
      optimizer = opt, seed = 3, dense_threshold = false})
    local w = model[1].weight
    model:cuda()
    assert.is_true(rawequal(model[1].weight, w), "the parameter was replaced, not moved")
    assert.are.equal("cuda:0", w:device())
    for step = 1, 2 do
      local d = model(lark.randn(2, 4, 10, 10):cuda()) - lark.randn(2, 3, 10, 10):cuda()
      opt:zero_grad()
      ;(d * d):mean():backward()
      m:after_backward()
      opt:step()
      m:step()
      local mask = m.masks["0.weight"]
      assert.are.equal("cuda:0", mask:device(), "step " .. step)
      assert.are.equal(0, w:detach():masked_fill(mask, 0):abs():sum():item(), "step " .. step .. ": weights off the mask")
    end
  end)
end)
