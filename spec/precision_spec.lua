-- spec/precision_spec.lua: lark.set_float32_matmul_precision, the switch to tensor cores.
--
-- Everywhere: the setting's argument checks, that it reports what it was, and that the CPU stays
-- exact whatever it says. On a GPU: the depth-wise convolution's tensor-core passes
-- (cuda/dwconv_tc.cu, TF32 under "high", BF16 under "medium") and the cuBLAS products against the
-- CPU, within what 10-bit (TF32) and 8-bit (BF16) mantissas allow, and measurably not the exact
-- kernels (so the switch is known to reach them). Without a GPU that half is pending.

-- Runs fn with the precision set to p, and puts the old one back whatever happens.
local function with_precision(p, fn)
  local old = lark.set_float32_matmul_precision(p)
  local ok, err = pcall(fn)
  lark.set_float32_matmul_precision(old)
  if not ok then error(err, 0) end
end

describe("set_float32_matmul_precision", function()
  it("defaults to highest, returns the previous setting and reports the current one", function()
    assert.are.equal("highest", lark.get_float32_matmul_precision())
    assert.are.equal("highest", lark.set_float32_matmul_precision("high"))
    assert.are.equal("high", lark.get_float32_matmul_precision())
    assert.are.equal("high", lark.set_float32_matmul_precision("medium"))
    assert.are.equal("medium", lark.set_float32_matmul_precision("highest"))
    assert.are.equal("highest", lark.get_float32_matmul_precision())
  end)

  it("rejects anything but highest, high and medium, and keeps the setting", function()
    lark.set_float32_matmul_precision("high")
    expect_error("expected 'highest', 'high' or 'medium', got 'tf32'", lark.set_float32_matmul_precision, "tf32")
    expect_error("expected 'highest', 'high' or 'medium', got 'HIGH'", lark.set_float32_matmul_precision, "HIGH")
    expect_error("expected 'highest', 'high' or 'medium', got nothing", lark.set_float32_matmul_precision)
    expect_error("expected 'highest', 'high' or 'medium', got a nil", lark.set_float32_matmul_precision, nil)
    expect_error("expected 'highest', 'high' or 'medium', got a number", lark.set_float32_matmul_precision, 1)
    assert.are.equal("high", lark.get_float32_matmul_precision())
    lark.set_float32_matmul_precision("highest")
  end)

  it("leaves the CPU exact: the same bits under every setting", function()
    lark.manual_seed(3)
    local x, w, b = lark.randn({2, 3, 20, 20}), lark.randn({3, 1, 13, 13}), lark.randn({3})
    local a, m = lark.randn({33, 40}), lark.randn({40, 17})
    local y0, p0 = lark.dwconv2d(x, w, b, {padding = 6}), lark.matmul(a, m)
    for _, p in ipairs({"high", "medium"}) do
      with_precision(p, function()
        assert.is_true(lark.dwconv2d(x, w, b, {padding = 6}):eq(y0):all():item(), p .. ": dwconv2d changed")
        assert.is_true(lark.matmul(a, m):eq(p0):all():item(), p .. ": matmul changed")
      end)
    end
  end)
end)

gpu_describe("tensor cores under set_float32_matmul_precision", function()
  -- largest error over the largest result: TF32 keeps 10 mantissa bits (2^-11 relative per
  -- product), BF16 8 (2^-9); sums of up to a few thousand products stay within these
  local TOL = {high = 2e-3, medium = 1.5e-2}
  local cases = {
    {"31x31 on 32x32", 2, 3, 32, 32, 31, 31, {padding = 15}},
    {"13x13 on 16x16", 2, 3, 16, 16, 13, 13, {padding = 6}},
    {"51x5 (SLaK)", 2, 2, 30, 28, 51, 5, {padding = {25, 2}}},
    {"5x51 (SLaK)", 2, 2, 28, 30, 5, 51, {padding = {2, 25}}},
    {"7x7 on 56x60, asymmetric padding", 1, 2, 56, 60, 7, 7, {padding = {3, 2, 1, 3}}},
    {"3x3 on a 7x7 map", 2, 4, 7, 7, 3, 3, {padding = 1}},
  }
  for _, p in ipairs({"high", "medium"}) do
    for _, c in ipairs(cases) do
      local label, N, C, H, W, kh, kw, opts = table.unpack(c)
      it(string.format("%s: dwconv2d's three passes (%s) match the CPU", label, p), function()
        lark.manual_seed(11)
        local x, w, b = lark.randn({N, C, H, W}), lark.randn({C, 1, kh, kw}), lark.randn({C})
        local y = lark.dwconv2d(x, w, b, opts)
        local gy = lark.randn(shape_of(y))
        local gx = lark.dwconv2d_backward_input(gy, w, {N, C, H, W}, opts)
        local gw = lark.dwconv2d_backward_weight(gy, x, {kh, kw}, opts)
        local xg, wg, bg, gyg = x:cuda(), w:cuda(), b:cuda(), gy:cuda()
        with_precision(p, function()
          local yt = lark.dwconv2d(xg, wg, bg, opts)
          expect_gpu_close(label .. " forward", yt, y, TOL[p])
          expect_gpu_close(label .. " input gradient", lark.dwconv2d_backward_input(gyg, wg, {N, C, H, W}, opts), gx, TOL[p])
          expect_gpu_close(label .. " weight gradient", lark.dwconv2d_backward_weight(gyg, xg, {kh, kw}, opts), gw, TOL[p])
          if kh * kw >= 100 then
            -- the exact kernels agree with the CPU to about 1e-7: this far off means tensor cores ran
            assert.is_true(gpu_rel_err(yt, y) > 1e-5, label .. ": the forward looks exact, not " .. p)
          end
        end)
      end)
    end

    it("the SLaK triple summed, and autograd through a Conv2d (" .. p .. ")", function()
      lark.manual_seed(12)
      local x, b = lark.randn({2, 4, 23, 26}), lark.randn({4})
      local ws = {lark.randn({4, 1, 51, 5}), lark.randn({4, 1, 5, 51}), lark.randn({4, 1, 5, 5})}
      local want = lark.dwconv2d_sum(x, ws, b)
      with_precision(p, function()
        expect_gpu_close("sum forward", lark.dwconv2d_sum(x:cuda(), {ws[1]:cuda(), ws[2]:cuda(), ws[3]:cuda()}, b:cuda()),
          want, TOL[p])
        local conv = lark.nn.Conv2d(4, 4, 31, {padding = 15, groups = 4})
        local xc = lark.randn({2, 4, 32, 32})
        local yc = conv:forward(xc)
        yc:sum():backward()
        local gcpu = conv.weight.grad:clone()
        conv:zero_grad()
        conv:cuda()
        local yg = conv:forward(xc:cuda())
        expect_gpu_close("Conv2d forward", yg, yc, TOL[p])
        yg:sum():backward()
        expect_gpu_close("Conv2d weight gradient", conv.weight.grad, gcpu, TOL[p])
      end)
    end)

    it("matmul and a dense conv2d on cuBLAS (" .. p .. ")", function()
      lark.manual_seed(13)
      local a, m = lark.randn({3, 64, 96}), lark.randn({3, 96, 40})
      local x, w = lark.randn({2, 8, 12, 12}), lark.randn({16, 8, 3, 3})
      local want, wantc = lark.matmul(a, m), lark.conv2d(x, w, nil, {padding = 1})
      with_precision(p, function()
        expect_gpu_close("matmul", lark.matmul(a:cuda(), m:cuda()), want, TOL[p])
        expect_gpu_close("conv2d", lark.conv2d(x:cuda(), w:cuda(), nil, {padding = 1}), wantc, TOL[p])
      end)
    end)
  end

  it("keeps float64 exact under medium", function()
    lark.manual_seed(14)
    local x, w = lark.randn({1, 2, 20, 20}, {dtype = "float64"}), lark.randn({2, 1, 31, 31}, {dtype = "float64"})
    local want = lark.dwconv2d(x, w, nil, {padding = 15})
    with_precision("medium", function()
      expect_gpu_close("float64 forward", lark.dwconv2d(x:cuda(), w:cuda(), nil, {padding = 15}), want, 1e-12)
    end)
  end)
end)
