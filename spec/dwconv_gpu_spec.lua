-- spec/dwconv_gpu_spec.lua: the depth-wise convolution on the GPU (cuda/dwconv.cu, reached through
-- lark.dwconv2d and friends when the tensors live on a CUDA device) against the CPU.
--
-- For each case and dtype, all three passes: the GPU's fast kernels and its reference kernels
-- (the `_reference` functions on CUDA tensors) against the CPU reference loops, to 2e-5 (float32)
-- and 1e-12 (float64) of the largest result. Then SLaK's summed triple, a larger map (several tiles
-- per plane, the weight gradient split over blocks) against the CPU's fast path, run-to-run
-- determinism of the weight gradient, and the errors. Without a GPU everything is pending, with a
-- message. (spec/c/test_dwconv_cuda.c checks the same kernels from C, on more shapes.)

local has_cuda = lark.cuda.is_available()
local TOL = {float32 = 2e-5, float64 = 1e-12}

-- max |got - want| over max(1, max |want|), both brought to the CPU in float64
local expect_close = expect_gpu_close -- spec/helper.lua

-- {label, N, C, H, W, kh, kw, options}
local cases = {
  {"3x3", 2, 3, 17, 19, 3, 3, {padding = 1}},
  {"13x13", 2, 3, 17, 19, 13, 13, {padding = 6}},
  {"31x31", 2, 2, 33, 30, 31, 31, {padding = 15}},
  {"51x51, batch 1", 1, 2, 32, 32, 51, 51, {padding = 25}},
  {"51x5 (SLaK)", 2, 3, 28, 28, 51, 5, {padding = {25, 2}}},
  {"5x51 (SLaK)", 2, 3, 28, 28, 5, 51, {padding = {2, 25}}},
  {"stride 2", 2, 3, 11, 13, 3, 3, {padding = 1, stride = 2}},
  {"dilation 2", 2, 2, 12, 11, 5, 3, {padding = {4, 2}, dilation = 2}},
  {"stride (2, 3), dilation (2, 1), odd sizes", 1, 2, 13, 15, 7, 5,
   {padding = {3, 2, 2, 1}, stride = {2, 3}, dilation = {2, 1}}},
  {"even 4x6, asymmetric padding", 2, 3, 10, 12, 4, 6, {padding = {1, 2, 3, 2}}},
  {"1x1 map, one channel, batch 1", 1, 1, 1, 1, 3, 3, {padding = 1}},
}

describe("dwconv2d on the GPU", function()
  if not has_cuda then
    pending("no CUDA device: the GPU depth-wise convolution specs are skipped")
    return
  end

  lark.manual_seed(7)

  for _, dtype in ipairs({"float32", "float64"}) do
    for _, c in ipairs(cases) do
      local label, N, C, H, W, kh, kw, opts = table.unpack(c)
      it(string.format("%s %s: forward and both gradients match the CPU", label, dtype), function()
        local o = {dtype = dtype}
        local x, w, b = lark.randn({N, C, H, W}, o), lark.randn({C, 1, kh, kw}, o), lark.randn({C}, o)
        local y = lark.dwconv2d_reference(x, w, b, opts)
        local gy = lark.randn(shape_of(y), o)
        local gx = lark.dwconv2d_backward_input_reference(gy, w, {N, C, H, W}, opts)
        local gw = lark.dwconv2d_backward_weight_reference(gy, x, {kh, kw}, opts)
        local xg, wg, bg, gyg = x:cuda(), w:cuda(), b:cuda(), gy:cuda()
        local tol = TOL[dtype]
        for _, ref in ipairs({false, true}) do
          local sfx = ref and "_reference" or ""
          local what = label .. " " .. dtype .. (ref and " (GPU reference)" or " (GPU fast)")
          expect_close(what .. " forward", lark["dwconv2d" .. sfx](xg, wg, bg, opts), y, tol)
          expect_close(what .. " input gradient",
            lark["dwconv2d_backward_input" .. sfx](gyg, wg, {N, C, H, W}, opts), gx, tol)
          expect_close(what .. " weight gradient",
            lark["dwconv2d_backward_weight" .. sfx](gyg, xg, {kh, kw}, opts), gw, tol)
        end
        -- without a bias too (the bias is added in the kernel's epilogue)
        expect_close(label .. " no bias", lark.dwconv2d(xg, wg, nil, opts), lark.dwconv2d_reference(x, w, nil, opts), tol)
      end)
    end

    it("the SLaK triple (51x5 + 5x51 + 5x5, summed) " .. dtype, function()
      local o = {dtype = dtype}
      local N, C, H, W = 2, 4, 23, 26
      local x, b, gy = lark.randn({N, C, H, W}, o), lark.randn({C}, o), lark.randn({N, C, H, W}, o)
      local ws = {lark.randn({C, 1, 51, 5}, o), lark.randn({C, 1, 5, 51}, o), lark.randn({C, 1, 5, 5}, o)}
      local wgs = {ws[1]:cuda(), ws[2]:cuda(), ws[3]:cuda()}
      local tol = TOL[dtype]
      -- no options: each kernel padded (kh//2, kw//2), SLaK's "same" padding
      expect_close("sum forward", lark.dwconv2d_sum(x:cuda(), wgs, b:cuda()), lark.dwconv2d_sum_reference(x, ws, b), tol)
      expect_close("sum forward (GPU reference)", lark.dwconv2d_sum_reference(x:cuda(), wgs, b:cuda()),
        lark.dwconv2d_sum_reference(x, ws, b), tol)
      expect_close("sum input gradient", lark.dwconv2d_sum_backward_input(gy:cuda(), wgs, {N, C, H, W}),
        lark.dwconv2d_sum_backward_input_reference(gy, ws, {N, C, H, W}), tol)
      -- each kernel's weight gradient
      for i, k in ipairs({{51, 5}, {5, 51}, {5, 5}}) do
        local opts = {padding = {k[1] // 2, k[2] // 2}}
        expect_close("weight gradient " .. i, lark.dwconv2d_backward_weight(gy:cuda(), x:cuda(), k, opts),
          lark.dwconv2d_backward_weight_reference(gy, x, k, opts), tol)
      end
    end)
  end

  it("larger maps (several tiles per plane, the weight gradient split over blocks) match the CPU", function()
    local N, C, H, W, K = 4, 8, 70, 140, 31
    local opts = {padding = K // 2}
    local x, w, b = lark.randn(N, C, H, W), lark.randn(C, 1, K, K), lark.randn(C)
    local gy = lark.randn(N, C, H, W)
    local xg, wg, gyg = x:cuda(), w:cuda(), gy:cuda()
    -- the CPU's fast path (tested against its reference in dwconv_spec and test_dwconv.c)
    expect_close("forward", lark.dwconv2d(xg, wg, b:cuda(), opts), lark.dwconv2d(x, w, b, opts), 1e-4)
    expect_close("input gradient", lark.dwconv2d_backward_input(gyg, wg, {N, C, H, W}, opts),
      lark.dwconv2d_backward_input(gy, w, {N, C, H, W}, opts), 1e-4)
    expect_close("weight gradient", lark.dwconv2d_backward_weight(gyg, xg, K, opts),
      lark.dwconv2d_backward_weight(gy, x, K, opts), 1e-4)
  end)

  it("gives the same weight gradient bits on every run (no atomics)", function()
    local x, gy = lark.randn(16, 3, 32, 32):cuda(), lark.randn(16, 3, 32, 32):cuda()
    local a = lark.dwconv2d_backward_weight(gy, x, 31, {padding = 15}):cpu():table()
    for _ = 1, 3 do
      assert_same(lark.dwconv2d_backward_weight(gy, x, 31, {padding = 15}):cpu():table(), a, "weight gradient")
    end
  end)

  it("accepts non-contiguous GPU tensors", function()
    local x, w = lark.randn(2, 3, 12, 9), lark.randn(3, 1, 5, 5)
    local xt = x:cuda():transpose(3, 4) -- (2, 3, 9, 12), a view
    expect_close("transposed input", lark.dwconv2d(xt, w:cuda(), nil, {padding = 2}),
      lark.dwconv2d_reference(x:transpose(3, 4), w, nil, {padding = 2}), 2e-5)
  end)

  it("reports mixed devices and bad arguments like the CPU path", function()
    local x, w = lark.randn(1, 2, 5, 5), lark.randn(2, 1, 3, 3)
    local err = expect_error("cuda", lark.dwconv2d, x:cuda(), w, nil, {padding = 1})
    assert.truthy(err:find("cpu", 1, true), err)
    expect_error("cuda", lark.dwconv2d_backward_weight, lark.randn(1, 2, 5, 5):cuda(), x, 3, {padding = 1})
    local bad = lark.randn(3, 1, 3, 3)
    local cpu_err = error_of(lark.dwconv2d, x, bad)
    local gpu_err = error_of(lark.dwconv2d, x:cuda(), bad:cuda())
    local msg = "dwconv2d: weight must have shape [2,1,3,3], got [3,1,3,3]"
    assert.truthy(cpu_err:find(msg, 1, true), cpu_err)
    assert.truthy(gpu_err:find(msg, 1, true), gpu_err)
    expect_error("must have the same dtype", lark.dwconv2d, x:cuda(), w:double():cuda())
    expect_error("smaller than the dilated kernel", lark.dwconv2d, x:cuda(), lark.randn(2, 1, 9, 9):cuda())
  end)
end)
