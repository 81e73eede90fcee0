-- reparam_spec.lua: structural re-parameterisation (MODELS.md 1.3 and 2.1). With random weights and
-- random, non-trivial BN statistics and affine parameters, the eval outputs of RepLKNet before and after
-- reparameterize() and fuse_bn(), and of SLaK before and after reparameterize() and fold_bn(), agree to
-- 1e-5 relative; the parameter names after the merge are the official ones, in PyTorch's order
-- (checked against torch: a module assigned after its siblings were deleted keeps its parent's place).
package.path = "./?.lua;" .. package.path
local R = require "recipes.replknet"
local S = require "recipes.slak"
local nn = require "lark.nn"

local function uniform(t, lo, hi)
  t:copy_(lark.rand(t:size(), {dtype = t:dtype()}) * (hi - lo) + lo)
end

-- Every BatchNorm2d gets random running statistics and affine parameters, every bias a random value,
-- depth-wise kernels order-0.1 values and SLaK's layer scales order-1 values (1e-6 would hide the blocks).
local function randomise(model)
  local g <close> = lark.no_grad()
  for _, m in ipairs(model:modules()) do
    if getmetatable(m) == nn.BatchNorm2d then
      uniform(m.running_mean, -0.5, 0.5)
      uniform(m.running_var, 0.5, 2)
      uniform(m.weight, 0.5, 1.5)
      uniform(m.bias, -0.5, 0.5)
    elseif getmetatable(m) == nn.LayerNorm then
      uniform(m.weight, 0.5, 1.5)
      uniform(m.bias, -0.2, 0.2)
    end
    if lark.is_tensor(rawget(m, "gamma")) then uniform(m.gamma, 0.5, 1.5) end
    -- SLaK's trunc_normal(0.02) kernels would leave the large kernels a small share of the output
    if getmetatable(m) == nn.Conv2d and m.groups > 1 then uniform(m.weight, -0.3, 0.3) end
    if lark.is_tensor(rawget(m, "bias")) and getmetatable(m) ~= nn.BatchNorm2d
      and getmetatable(m) ~= nn.LayerNorm then
      uniform(m.bias, -0.2, 0.2)
    end
  end
  return model
end

-- max |a - b| / max |b|
local function rel_err(a, b)
  return (a - b):abs():max():item() / b:abs():max():item()
end

local function eval_out(model, x)
  local g <close> = lark.no_grad()
  return model(x)
end

local function keys_of(model)
  local _, keys = model:state_dict()
  return keys
end

local function index_of(list, v)
  for i, x in ipairs(list) do
    if x == v then return i end
  end
end

local function small_replknet()
  return R.replknet{channels = {16, 32}, layers = {1, 2}, kernels = {13, 11}, small_kernel = 5, num_classes = 10,
    drop_path = 0.1}
end

describe("RepLKNet re-parameterisation", function()
  lark.manual_seed(11)

  it("reparameterize() keeps the eval outputs (random BN statistics) and renames as the official code", function()
    local m = randomise(small_replknet()):eval()
    local x = lark.randn(2, 3, 32, 32)
    local y = eval_out(m, x)
    local before = keys_of(m)
    local n_before = m:num_parameters()
    m:reparameterize()
    local y2 = eval_out(m, x)
    local err = rel_err(y2, y)
    assert.is_true(err < 1e-5, string.format("relative error %.3g", err))
    assert.is_true(y:abs():max():item() > 0.1, "the outputs are too small for the check to mean anything")

    local after = keys_of(m)
    assert.are.equal(#before - 3 * 10, #after) -- 3 RepLK blocks, 12 keys out and 2 in each
    local sd = m:state_dict()
    for _, blk in ipairs{"stages.0.blocks.0", "stages.1.blocks.0", "stages.1.blocks.2"} do
      local C = blk:sub(1, 8) == "stages.0" and 16 or 32
      local K = blk:sub(1, 8) == "stages.0" and 13 or 11
      local w, b = blk .. ".large_kernel.lkb_reparam.weight", blk .. ".large_kernel.lkb_reparam.bias"
      assert.are.same({C, 1, K, K}, shape_of(sd[w]))
      assert.are.same({C}, shape_of(sd[b]))
      -- in place of the branches: after pw2.*, before prelkb_bn.*
      local i = index_of(after, w)
      assert.are.equal(blk .. ".pw2.bn.num_batches_tracked", after[i - 1])
      assert.are.equal(b, after[i + 1])
      assert.are.equal(blk .. ".prelkb_bn.weight", after[i + 2])
      for _, k in ipairs(after) do
        assert.is_nil(k:find("lkb_origin", 1, true), k)
        assert.is_nil(k:find("small_conv", 1, true), k)
      end
    end
    -- per RepLK block: D*k^2 small kernel and two BN affines (4D) go, a D bias comes
    assert.are.equal(n_before - (16 * 28 + 2 * 32 * 28), m:num_parameters())
    -- idempotent
    m:reparameterize()
    assert.are.equal(#after, #keys_of(m))
  end)

  it("reparameterize() also works for XL-style blocks without a small kernel", function()
    local m = randomise(R.replknet{channels = {8, 16}, layers = {1, 1}, kernels = {9, 7}, dw_ratio = 1.5,
      num_classes = 5}):eval()
    local x = lark.randn(1, 3, 32, 32)
    local y = eval_out(m, x)
    m:reparameterize()
    assert.is_true(rel_err(eval_out(m, x), y) < 1e-5)
    assert.are.same({12, 1, 9, 9}, shape_of(m:state_dict()["stages.0.blocks.0.large_kernel.lkb_reparam.weight"]))
  end)

  it("fuse_bn() folds every conv-BN and keeps the eval outputs; pre-block BNs and the head norm stay", function()
    local m = randomise(small_replknet()):eval()
    local x = lark.randn(2, 3, 32, 32)
    local y = eval_out(m, x)
    m:fuse_bn()
    local err = rel_err(eval_out(m, x), y)
    assert.is_true(err < 1e-5, string.format("relative error %.3g", err))
    local keys = keys_of(m)
    local set = {}
    for _, k in ipairs(keys) do set[k] = true end
    for _, k in ipairs{"stem.0.conv.weight", "stem.0.conv.bias", "stem.3.conv.bias", "transitions.0.1.conv.bias",
                       "stages.0.blocks.0.pw1.conv.bias", "stages.0.blocks.0.large_kernel.lkb_origin.conv.bias",
                       "stages.0.blocks.0.large_kernel.small_conv.conv.bias", "stages.0.blocks.1.pw2.conv.bias",
                       "stages.0.blocks.0.prelkb_bn.running_var", "stages.0.blocks.1.preffn_bn.weight",
                       "norm.running_mean", "head.weight"} do
      assert.is_true(set[k], k)
    end
    for _, k in ipairs(keys) do
      assert.is_nil(k:find("%.bn%."), k) -- every ConvBN's bn is an Identity now
    end
    -- and the two deployment forms compose: fused, then re-parameterised
    m:reparameterize()
    assert.is_true(rel_err(eval_out(m, x), y) < 1e-5)
    assert.is_truthy(m:state_dict()["stages.1.blocks.2.large_kernel.lkb_reparam.bias"])
  end)

  it("reparameterize() after fuse_bn() equals reparameterize() alone", function()
    local a = randomise(small_replknet()):eval()
    local b = small_replknet()
    b:load_state_dict(a:state_dict())
    b:eval()
    a:reparameterize()
    b:fuse_bn():reparameterize()
    local wa = a:state_dict()["stages.1.blocks.0.large_kernel.lkb_reparam.weight"]
    local wb = b:state_dict()["stages.1.blocks.0.large_kernel.lkb_reparam.weight"]
    assert.is_true(rel_err(wb, wa) < 1e-6)
  end)
end)

describe("SLaK re-parameterisation", function()
  lark.manual_seed(12)

  local function small_slak(opts)
    local cfg = {dims = {8, 16}, depths = {1, 2}, kernel_size = {13, 9, 5}, width_factor = 1.5, num_classes = 10}
    for k, v in pairs(opts or {}) do cfg[k] = v end
    return randomise(S.slak(cfg)):eval()
  end

  it("reparameterize() merges LoRA1 + LoRA2 + small_conv into one K x K conv with equal eval outputs", function()
    local m = small_slak()
    local x = lark.randn(2, 3, 32, 32)
    local y = eval_out(m, x)
    assert.is_true(y:abs():max():item() > 0.01)
    local before = keys_of(m)
    m:reparameterize()
    local err = rel_err(eval_out(m, x), y)
    assert.is_true(err < 1e-5, string.format("relative error %.3g", err))
    local after = keys_of(m)
    assert.are.equal(#before - 3 * 16, #after) -- 3 blocks: 18 keys out, 2 in
    local sd = m:state_dict()
    for _, blk in ipairs{{"stages.0.0", 12, 13}, {"stages.1.0", 24, 9}, {"stages.1.1", 24, 9}} do
      local w = blk[1] .. ".large_kernel.lkb_reparam.weight"
      assert.are.same({blk[2], 1, blk[3], blk[3]}, shape_of(sd[w]))
      assert.are.same({blk[2]}, shape_of(sd[blk[1] .. ".large_kernel.lkb_reparam.bias"]))
      local i = index_of(after, w)
      assert.are.equal(blk[1] .. ".gamma", after[i - 1])
      assert.are.equal(blk[1] .. ".norm.weight", after[i + 2])
    end
    for _, k in ipairs(after) do assert.is_nil(k:find("LoRA", 1, true), k) end
  end)

  it("the merged kernel is the three fused kernels zero-padded and centred", function()
    local lk = S.ReparamLargeKernelConv(3, 7, 3)
    randomise(lk):eval()
    local w1, b1 = lk.LoRA1:fused_kernel()
    local w2, b2 = lk.LoRA2:fused_kernel()
    local w3, b3 = lk.small_conv:fused_kernel()
    lk:reparameterize()
    local W, B = lk.lkb_reparam.weight:double():table(), lk.lkb_reparam.bias:double():table()
    w1, w2, w3 = w1:double():table(), w2:double():table(), w3:double():table()
    b1, b2, b3 = b1:double():table(), b2:double():table(), b3:double():table()
    -- plain loops: (i, j) of the 7 x 7 kernel, 1-based; the 7 x 3 kernel covers columns 3..5
    for c = 1, 3 do
      for i = 1, 7 do
        for j = 1, 7 do
          local v = 0
          if j >= 3 and j <= 5 then v = v + w1[c][1][i][j - 2] end
          if i >= 3 and i <= 5 then v = v + w2[c][1][i - 2][j] end
          if i >= 3 and i <= 5 and j >= 3 and j <= 5 then v = v + w3[c][1][i - 2][j - 2] end
          assert.is_true(math.abs(W[c][1][i][j] - v) < 1e-6, string.format("W[%d][%d][%d]", c, i, j))
        end
      end
      assert.is_true(math.abs(B[c] - (b1[c] + b2[c] + b3[c])) < 1e-6)
    end
  end)

  it("Decom = false (lkb_origin + small_conv) and bn = false merge too", function()
    for _, opts in ipairs{{decom = false}, {bn = false}} do
      local m = small_slak(opts)
      local x = lark.randn(1, 3, 32, 32)
      local y = eval_out(m, x)
      m:reparameterize()
      assert.is_true(rel_err(eval_out(m, x), y) < 1e-5)
    end
  end)

  it("fold_bn() keeps the eval outputs and runs the one-pass kernel when no gradient is needed", function()
    local m = small_slak()
    local x = lark.randn(2, 3, 32, 32)
    local y = eval_out(m, x)
    local keys = keys_of(m)
    m:fold_bn()
    local lk = m.stages[2][1].large_kernel
    local y2 = eval_out(m, x)
    assert.is_true(rawget(lk, "_fast"), "no_grad eval did not take lark.dwconv2d_sum")
    local err = rel_err(y2, y)
    assert.is_true(err < 1e-5, string.format("relative error %.3g", err))
    -- names: each branch conv now has a bias, the BN keys are gone
    local set = {}
    for _, k in ipairs(keys_of(m)) do set[k] = true end
    assert.is_true(set["stages.1.1.large_kernel.LoRA2.conv.bias"])
    assert.is_nil(set["stages.1.1.large_kernel.LoRA2.bn.weight"])
    assert.are.equal(#keys - 3 * 3 * 4, #keys_of(m))
    -- with gradients the module path runs (same values), and backward reaches the folded kernels
    local xg = x:clone()
    xg.requires_grad = true
    local y3 = m(xg)
    assert.is_false(rawget(lk, "_fast"))
    assert.is_true(rel_err(y3:detach(), y2) < 1e-5)
    y3:sum():backward()
    assert.is_truthy(xg.grad)
    assert.is_truthy(lk.LoRA1.conv.weight.grad)
    -- reparameterize() after fold_bn() still merges exactly
    m:reparameterize()
    assert.is_true(rel_err(eval_out(m, x), y) < 1e-5)
  end)
end)
