-- spec/conv_gpu_spec.lua: conv2d and pooling on the GPU against the CPU.
--
-- conv2d on CUDA tensors runs core/ops/conv.c's device path (cuda/conv.cu's im2col and col2im
-- around cuBLAS; depth-wise shapes through cuda/dwconv.cu); pooling runs cuda/pool.cu. Every input
-- is made on the CPU (seeded), copied to the GPU, and compared after the same call on both:
--   - conv2d: the output and the gradients of input, weight and bias through autograd
--     (lark.conv2d then backward with a random grad_out), and the explicit backward functions, on
--     groups 1, 2 and C, 1x1 kernels (the no-im2col shortcut), 7x7 stride 2 padding 3, dilation
--     2, asymmetric padding, batch 1, float32 and float64; to 2e-5 (float32) and 1e-12 (float64)
--     of the largest result, as cuBLAS and OpenBLAS add in different orders;
--   - pooling: max, avg and adaptive avg, forward and the input gradient through autograd, on
--     small integers (ties everywhere) with a NaN and an infinity: exactly, values and indices,
--     as the kernels follow pool.c's loops in the same order.
-- Without a GPU everything is pending, with a message. (spec/c/test_conv_dispatch.c runs the same
-- front functions on a stand-in device backend without a GPU.)

local has_cuda = lark.cuda.is_available()
local TOL = {float32 = 2e-5, float64 = 1e-12}

-- max |got - want| over max(1, max |want|), both brought to the CPU in float64
local expect_close = expect_gpu_close -- spec/helper.lua

local function expect_exact(what, got, want)
  assert.is_not_nil(got, what .. ": no result")
  assert.are.equal("cuda:0", got:device(), what .. ": result not on the GPU")
  assert.are.equal(want:dtype(), got:dtype(), what .. ": dtype")
  assert.are.same(shape_of(want), shape_of(got), what .. ": shape")
  assert_same(got:cpu():table(), want:table(), what)
end

-- {label, N, Cin, H, W, Cout, kh, kw, options, bias}
local conv_cases = {
  {"3x3, groups 1", 2, 3, 12, 11, 8, 3, 3, {padding = 1}, true},
  {"3x3, groups 2, stride 2", 3, 4, 13, 12, 6, 3, 3, {padding = 1, stride = 2, groups = 2}, true},
  {"5x3, groups = C (depth-wise)", 2, 6, 11, 9, 6, 5, 3, {padding = {2, 1}, groups = 6}, true},
  {"3x3, groups = C, multiplier 2", 2, 4, 9, 9, 8, 3, 3, {padding = 1, groups = 4}, false},
  {"1x1", 3, 8, 7, 7, 16, 1, 1, {}, true},
  {"1x1, groups 2", 2, 8, 6, 5, 4, 1, 1, {groups = 2}, false},
  {"1x1 over a 40x32 map (weight gradient in place)", 2, 5, 40, 32, 7, 1, 1, {}, true},
  {"1x1, stride 2 (through im2col)", 2, 6, 9, 9, 5, 1, 1, {stride = 2}, true},
  {"7x7, stride 2, padding 3", 2, 3, 32, 29, 8, 7, 7, {stride = 2, padding = 3}, true},
  {"3x3, dilation 2", 2, 4, 14, 13, 6, 3, 3, {dilation = 2, padding = 2}, true},
  {"3x2, dilation (2, 1), groups 2, asymmetric padding", 2, 4, 10, 11, 4, 3, 2,
   {dilation = {2, 1}, padding = {2, 1, 0, 1}, groups = 2}, false},
  {"3x3, stride (1, 2), batch 1", 1, 5, 10, 10, 7, 3, 3, {padding = 1, stride = {1, 2}}, true},
  {"1x1, batch 1", 1, 6, 8, 8, 3, 1, 1, {}, false},
  {"5x5 = the padded map", 2, 2, 3, 3, 3, 5, 5, {padding = 1}, true},
}

-- {label, function, input shape, arguments after the input}
local pool_cases = {
  {"avg 3x3, stride 2, padding 1", "avg_pool2d", {2, 3, 13, 12}, {3, 2, 1}},
  {"avg 2x2", "avg_pool2d", {2, 4, 8, 9}, {2}},
  {"avg 3x2, stride (1, 2), padding 1, 3-D input", "avg_pool2d", {3, 9, 8}, {{3, 2}, {1, 2}, {1, 1}}},
  {"max 3x3, stride 2, padding 1 (the ResNet stem)", "max_pool2d", {2, 3, 16, 15}, {3, 2, 1}},
  {"max 2x2", "max_pool2d", {2, 4, 8, 9}, {2}},
  {"max 2x3, stride 1, padding 1 (overlapping windows)", "max_pool2d", {2, 2, 7, 8}, {{2, 3}, 1, {1, 1}}},
  {"max 3x3, 3-D input", "max_pool2d", {3, 6, 7}, {3, 1}},
  {"adaptive 1x1 (global average)", "adaptive_avg_pool2d", {2, 8, 7, 7}, {1}},
  {"adaptive 3x4", "adaptive_avg_pool2d", {2, 3, 10, 9}, {{3, 4}}},
  {"adaptive 7x6 from 5x4 (larger than the input)", "adaptive_avg_pool2d", {1, 2, 5, 4}, {{7, 6}}},
}

-- a nested table of shape with small integers (ties in every window), a NaN and a -inf in it
local function tie_table(shape)
  local n = 0
  return build_table(shape, function()
    n = n + 1
    if n == 6 then return 0 / 0 end
    if n == 11 then return -math.huge end
    return math.random(-2, 2)
  end)
end

describe("conv2d on the GPU", function()
  if not has_cuda then
    pending("no CUDA device (lark.cuda.is_available() is false): the GPU conv2d parity specs are skipped")
    return
  end

  lark.manual_seed(11)

  for _, dtype in ipairs({"float32", "float64"}) do
    for _, c in ipairs(conv_cases) do
      local label, N, Cin, H, W, Cout, kh, kw, opts, with_bias = table.unpack(c)
      it(string.format("%s %s: output and the gradients of input, weight and bias match the CPU", label, dtype),
        function()
          local o = {dtype = dtype}
          local groups = opts.groups or 1
          local x, w = lark.randn({N, Cin, H, W}, o), lark.randn({Cout, Cin // groups, kh, kw}, o)
          local b = with_bias and lark.randn({Cout}, o) or nil
          local xg, wg, bg = x:cuda(), w:cuda(), b and b:cuda() or nil
          for _, t in pairs({x, w, b, xg, wg, bg}) do t.requires_grad = true end -- pairs: b may be nil
          local y, yg = lark.conv2d(x, w, b, opts), lark.conv2d(xg, wg, bg, opts)
          local tol = TOL[dtype]
          local what = label .. " " .. dtype
          expect_close(what .. " forward", yg, y, tol)
          local gy = lark.randn(shape_of(y), o)
          y:backward(gy)
          yg:backward(gy:cuda())
          expect_close(what .. " input gradient", xg.grad, x.grad, tol)
          expect_close(what .. " weight gradient", wg.grad, w.grad, tol)
          if b then expect_close(what .. " bias gradient", bg.grad, b.grad, tol) end
          -- the explicit backward functions (no autograd)
          local gyg = gy:cuda()
          expect_close(what .. " conv2d_backward_input", lark.conv2d_backward_input(gyg, wg, {N, Cin, H, W}, opts),
            x.grad, tol)
          expect_close(what .. " conv2d_backward_weight",
            lark.conv2d_backward_weight(gyg, xg, {Cout, Cin // groups, kh, kw}, opts), w.grad, tol)
        end)
    end
  end

  it("promotes mixed dtypes and reads non-contiguous inputs as the CPU does", function()
    local x, w = lark.randn(2, 4, 9, 7), lark.randn({6, 2, 3, 3}, {dtype = "float64"})
    local opts = {padding = 1, groups = 2}
    expect_close("float32 input, float64 weight", lark.conv2d(x:cuda(), w:cuda(), nil, opts),
      lark.conv2d(x, w, nil, opts), 1e-12)
    local xt = x:transpose(3, 4) -- (2, 4, 7, 9), a view
    expect_close("transposed input", lark.conv2d(x:cuda():transpose(3, 4), w:cuda(), nil, opts),
      lark.conv2d(xt, w, nil, opts), 1e-12)
  end)

  it("handles an empty batch and no output channels", function()
    local x, w = lark.randn(0, 3, 6, 6), lark.randn(4, 3, 3, 3)
    local y = lark.conv2d(x:cuda(), w:cuda(), nil, {padding = 1})
    assert.are.same({0, 4, 6, 6}, shape_of(y))
    assert.are.equal("cuda:0", y:device())
    local x2 = lark.randn(2, 3, 6, 6)
    local w0 = lark.zeros(0, 3, 3, 3)
    assert.are.same({2, 0, 4, 4}, shape_of(lark.conv2d(x2:cuda(), w0:cuda())))
    local gx = lark.conv2d_backward_input(lark.zeros(2, 0, 4, 4):cuda(), w0:cuda(), {2, 3, 6, 6})
    assert_same(gx:cpu():table(), lark.zeros(2, 3, 6, 6):table(), "no output channels: input gradient")
  end)

  it("reports mixed devices and the CPU-only reference loops", function()
    local x, w = lark.randn(1, 2, 5, 5), lark.randn(3, 2, 3, 3)
    local err = expect_error("conv2d: input is on cuda:0 but weight is on cpu", lark.conv2d, x:cuda(), w)
    assert.truthy(err:find("cpu", 1, true), err)
    expect_error("the reference loops run on CPU tensors only", lark.conv2d_reference, x:cuda(), w:cuda())
    expect_error("weight has 2 input channels per group", lark.conv2d, lark.randn(1, 4, 5, 5):cuda(), w:cuda())
  end)
end)

describe("pooling on the GPU", function()
  if not has_cuda then
    pending("no CUDA device (lark.cuda.is_available() is false): the GPU pooling parity specs are skipped")
    return
  end

  math.randomseed(5)

  for _, dtype in ipairs({"float32", "float64"}) do
    for _, c in ipairs(pool_cases) do
      local label, fname, shape, args = table.unpack(c)
      it(string.format("%s %s: output, indices and input gradient equal the CPU's", label, dtype), function()
        local x = lark.tensor(tie_table(shape), {dtype = dtype})
        local xg = x:cuda()
        x.requires_grad, xg.requires_grad = true, true
        local y, idx = lark[fname](x, table.unpack(args))
        local yg, idxg = lark[fname](xg, table.unpack(args))
        local what = label .. " " .. dtype
        expect_exact(what .. " forward", yg, y)
        if idx then expect_exact(what .. " indices", idxg, idx) end
        local gy = lark.randn(shape_of(y), {dtype = dtype})
        y:backward(gy)
        yg:backward(gy:cuda())
        expect_exact(what .. " input gradient", xg.grad, x.grad)
      end)
    end
  end

  it("matches the CPU on random values over a larger map", function()
    local x = lark.randn(4, 16, 57, 61)
    local xg = x:cuda()
    expect_exact("max_pool2d", lark.max_pool2d(xg, 3, 2, 1), lark.max_pool2d(x, 3, 2, 1))
    expect_exact("avg_pool2d", lark.avg_pool2d(xg, 3, 2, 1), lark.avg_pool2d(x, 3, 2, 1))
    expect_exact("adaptive_avg_pool2d", lark.adaptive_avg_pool2d(xg, {5, 7}), lark.adaptive_avg_pool2d(x, {5, 7}))
  end)

  it("pads and crops (lark.pad, built from views and copies) with its gradient as the CPU does", function()
    local x = lark.randn(2, 3, 5, 6)
    local xg = x:cuda()
    x.requires_grad, xg.requires_grad = true, true
    local pads = {1, 2, -1, 3}
    local y, yg = lark.pad(x, pads, 0.5), lark.pad(xg, pads, 0.5)
    expect_exact("pad", yg, y)
    local gy = lark.randn(shape_of(y))
    y:backward(gy)
    yg:backward(gy:cuda())
    expect_exact("pad gradient", xg.grad, x.grad)
  end)

  it("reports bad arguments as the CPU does", function()
    local x = lark.randn(1, 2, 4, 4)
    local msg = "padding must be >= 0 and at most half the kernel"
    expect_error(msg, lark.max_pool2d, x, 2, 1, 2)
    expect_error(msg, lark.max_pool2d, x:cuda(), 2, 1, 2)
    expect_error("input must be 3-D (C, H, W) or 4-D", lark.avg_pool2d, lark.randn(4, 4):cuda(), 2)
  end)
end)
