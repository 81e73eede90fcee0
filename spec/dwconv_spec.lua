-- spec/dwconv_spec.lua: the depth-wise convolution passes from Lua (lua/bind_dwconv.c over
-- core/ops/dwconv.c), against a Lua-loop reference of the definition on small random cases, and the
-- argument errors. The C test spec/c/test_dwconv.c covers the fast paths against the C reference
-- on many more shapes.

-- Lua reference of the definition, on nested tables: x (N,C,H,W), w (C,1,kh,kw), b (C) or nil.
-- p = {sh, sw, pt, pb, pl, pr, dh, dw}; returns y, and the gradients for grad_out gy.
local function ref(x, w, b, gy, p)
  local N, C, H, W = #x, #x[1], #x[1][1], #x[1][1][1]
  local kh, kw = #w[1][1], #w[1][1][1]
  local sh, sw, pt, pb, pl, pr, dh, dw = table.unpack(p)
  local Ho = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
  local Wo = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
  local y = build_table({N, C, Ho, Wo}, function() return 0 end)
  local gx = build_table({N, C, H, W}, function() return 0 end)
  local gw = build_table({C, 1, kh, kw}, function() return 0 end)
  for n = 1, N do
    for c = 1, C do
      for oh = 1, Ho do
        for ow = 1, Wo do
          local s = b and b[c] or 0
          for i = 1, kh do
            for j = 1, kw do
              local iy, ix = (oh - 1) * sh - pt + (i - 1) * dh + 1, (ow - 1) * sw - pl + (j - 1) * dw + 1
              if iy >= 1 and iy <= H and ix >= 1 and ix <= W then
                s = s + w[c][1][i][j] * x[n][c][iy][ix]
                if gy then
                  local g = gy[n][c][oh][ow]
                  gx[n][c][iy][ix] = gx[n][c][iy][ix] + g * w[c][1][i][j]
                  gw[c][1][i][j] = gw[c][1][i][j] + g * x[n][c][iy][ix]
                end
              end
            end
          end
          y[n][c][oh][ow] = s
        end
      end
    end
  end
  return y, gx, gw, Ho, Wo
end

local cases = {
  -- {N, C, H, W, kh, kw, {sh, sw, pt, pb, pl, pr, dh, dw}, bias}
  {2, 3, 6, 7, 3, 3, {1, 1, 1, 1, 1, 1, 1, 1}, true},
  {1, 2, 5, 9, 5, 3, {1, 1, 2, 2, 1, 1, 1, 1}, false},
  {2, 1, 1, 1, 3, 3, {1, 1, 1, 1, 1, 1, 1, 1}, true},    -- 1x1 map
  {1, 2, 4, 3, 7, 5, {1, 1, 3, 3, 2, 2, 1, 1}, false},   -- kernel larger than the map
  {2, 2, 9, 8, 3, 3, {2, 2, 1, 1, 1, 1, 1, 1}, true},    -- stride 2
  {1, 2, 9, 10, 3, 3, {1, 1, 2, 2, 2, 2, 2, 2}, false},  -- dilation 2
  {1, 1, 6, 8, 4, 2, {1, 1, 1, 2, 0, 1, 1, 1}, false},   -- even kernel, asymmetric padding
  {1, 2, 6, 20, 3, 13, {1, 1, 1, 1, 6, 6, 1, 1}, true},  -- rectangular
}

describe("dwconv2d", function()
  if not lark.dwconv2d then
    pending("lark.dwconv2d is not registered (lua/module.c must call lb_register_dwconv)")
    return
  end

  for k, cs in ipairs(cases) do
    for _, dtype in ipairs({"float64", "float32"}) do
      it(string.format("case %d (%dx%d kernel on %dx%d) in %s matches the definition", k, cs[5], cs[6], cs[3], cs[4],
        dtype), function()
        local N, C, H, W, kh, kw, p, bias = table.unpack(cs)
        local xt, wt = rand_table({N, C, H, W}), rand_table({C, 1, kh, kw})
        local bt = bias and rand_table({C}) or nil
        local sh, sw, pt, pb, pl, pr, dh, dw = table.unpack(p)
        local Ho = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
        local Wo = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
        local gyt = rand_table({N, C, Ho, Wo})
        local y, gx, gw = ref(xt, wt, bt, gyt, p)
        local o = {dtype = dtype}
        local x, w, gy = lark.tensor(xt, o), lark.tensor(wt, o), lark.tensor(gyt, o)
        local b = bt and lark.tensor(bt, o) or nil
        local opts = {stride = {sh, sw}, padding = {pt, pb, pl, pr}, dilation = {dh, dw}}
        local tol = dtype == "float64" and 1e-12 or 1e-5
        assert_near(lark.dwconv2d(x, w, b, opts), y, tol)
        assert_near(x:dwconv2d(w, b, opts), y, tol)
        assert_near(lark.dwconv2d_reference(x, w, b, opts), y, tol)
        assert_near(lark.dwconv2d_backward_input(gy, w, {N, C, H, W}, opts), gx, tol)
        assert_near(lark.dwconv2d_backward_input_reference(gy, w, {N, C, H, W}, opts), gx, tol)
        assert_near(lark.dwconv2d_backward_weight(gy, x, {kh, kw}, opts), gw, tol)
        assert_near(lark.dwconv2d_backward_weight_reference(gy, x, {kh, kw}, opts), gw, tol)
      end)
    end
  end

  it("takes non-contiguous views and a single number for padding, stride, kernel size", function()
    local xt = rand_table({1, 2, 5, 6})
    local x = lark.tensor(xt, {dtype = "float64"}):transpose(3, 4):contiguous():transpose(3, 4) -- same values, strided
    local wt = rand_table({2, 1, 3, 3})
    local w = lark.tensor(wt, {dtype = "float64"})
    local y = ref(xt, wt, nil, nil, {1, 1, 1, 1, 1, 1, 1, 1})
    assert.is_false(x:is_contiguous())
    assert_near(lark.dwconv2d(x, w, nil, {padding = 1}), y, 1e-12)
    local gw = lark.dwconv2d_backward_weight(lark.ones(1, 2, 5, 6, {dtype = "float64"}), x, 3, {padding = 1})
    assert.are.same({2, 1, 3, 3}, shape_of(gw))
  end)

  it("names the function and the argument in its errors", function()
    local x, w = lark.randn(2, 3, 6, 6), lark.randn(3, 1, 3, 3)
    expect_error("dwconv2d: argument 2", lark.dwconv2d, x, "w")
    expect_error("weight must have shape [3,1,3,3]", lark.dwconv2d, x, lark.randn(4, 1, 3, 3))
    expect_error("input must be 4-D", lark.dwconv2d, lark.randn(3, 6, 6), w)
    expect_error("same dtype", lark.dwconv2d, x, w:double())
    expect_error("bias must have 3 elements", lark.dwconv2d, x, w, lark.randn(2))
    expect_error("stride must be in [1,", lark.dwconv2d, x, w, nil, {stride = 0})
    expect_error("padding must have 2 or 4 integers", lark.dwconv2d, x, w, nil, {padding = {1, 2, 3}})
    expect_error("padding must be an integer", lark.dwconv2d, x, w, nil, {padding = 1.5})
    expect_error("expected an options table", lark.dwconv2d, x, w, nil, 3)
    expect_error("smaller than the dilated kernel", lark.dwconv2d, lark.randn(1, 3, 2, 2), w)
    expect_error("grad_out must have shape", lark.dwconv2d_backward_input, lark.randn(2, 3, 5, 6), w, {2, 3, 6, 6},
      {padding = 1})
    expect_error("input size must have 4 entries", lark.dwconv2d_backward_input, x, w, {2, 3, 6})
    expect_error("expected the kernel size", lark.dwconv2d_backward_weight, x, x, "3")
    expect_error("kernel_size must be in [1,", lark.dwconv2d_backward_weight, x, x, 0)
  end)

  it("sums SLaK's decomposed kernels in one pass, equal to the convolutions one at a time", function()
    math.randomseed(11)
    -- {N, C, H, W, kernels, per-kernel padding or nil for "same"}
    local sum_cases = {
      {2, 3, 12, 11, {{9, 3}, {3, 9}, {3, 3}}},                                 -- a small SLaK triple
      {1, 2, 32, 32, {{51, 5}, {5, 51}, {5, 5}}},                               -- the real one, 32x32
      {2, 2, 5, 7, {{7, 3}, {3, 7}}},                                            -- kernels larger than the map
      {1, 3, 9, 9, {{5, 5}}},                                                    -- one kernel
      {1, 2, 10, 10, {{3, 3}, {1, 1}}, {{padding = 2, dilation = 2}, {padding = 0}}}, -- dilation: the general path
    }
    for _, dtype in ipairs{"float32", "float64"} do
      -- float32 sums of hundreds of taps in another order: relative errors of 1e-5 where they cancel
      local tol = dtype == "float64" and 1e-12 or 1e-4
      for ci, c in ipairs(sum_cases) do
        local N, C, H, W = c[1], c[2], c[3], c[4]
        local x = lark.randn(N, C, H, W, {dtype = dtype})
        local b = lark.randn(C, {dtype = dtype})
        local ws, opts = {}, {}
        for k, kk in ipairs(c[5]) do
          ws[k] = lark.randn(C, 1, kk[1], kk[2], {dtype = dtype})
          opts[k] = c[6] and c[6][k] or {padding = {kk[1] // 2, kk[2] // 2}}
        end
        local y = lark.dwconv2d_sum(x, ws, b, c[6])
        local expect = lark.dwconv2d_reference(x, ws[1], b, opts[1])
        for k = 2, #ws do expect = expect + lark.dwconv2d_reference(x, ws[k], nil, opts[k]) end
        assert_near(y, expect, tol, "forward, case " .. ci .. " " .. dtype)
        assert_near(lark.dwconv2d_sum_reference(x, ws, b, c[6]), expect, tol)
        local gy = lark.randn(N, C, y:size(3), y:size(4), {dtype = dtype})
        local gx = lark.dwconv2d_sum_backward_input(gy, ws, {N, C, H, W}, c[6])
        local gexpect = lark.dwconv2d_backward_input_reference(gy, ws[1], {N, C, H, W}, opts[1])
        for k = 2, #ws do gexpect = gexpect + lark.dwconv2d_backward_input_reference(gy, ws[k], {N, C, H, W}, opts[k]) end
        assert_near(gx, gexpect, tol, "input gradient, case " .. ci .. " " .. dtype)
      end
    end
  end)

  it("says what is wrong with the kernels of a sum", function()
    local x = lark.randn(1, 2, 8, 8)
    local w1, w2 = lark.randn(2, 1, 5, 3), lark.randn(2, 1, 3, 5)
    expect_error("expected a table of kernels", lark.dwconv2d_sum, x, w1)
    expect_error("expected 1 to 8 kernels, got 0", lark.dwconv2d_sum, x, {})
    expect_error("every kernel must give the same output size", lark.dwconv2d_sum, x, {w1, w2}, nil,
      {{padding = {2, 1}}, {padding = 0}})
    expect_error("expected one options table per kernel (2), got 1", lark.dwconv2d_sum, x, {w1, w2}, nil, {{padding = 1}})
    expect_error("kernel 2 is float64, expected float32", lark.dwconv2d_sum, x, {w1, w2:double()})
    expect_error("weight must have shape [2,1,", lark.dwconv2d_sum, x, {w1, lark.randn(3, 1, 3, 5)})
  end)
end)
