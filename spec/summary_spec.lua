-- summary_spec.lua: lark.summary counts parameters and MACs as MODELS.md defines them (Conv2d: output
-- elements x Cin/groups x kh x kw; Linear: output elements x in; nothing else), reports the shapes and
-- paths of the module calls, and leaves the model as it found it. The counted figures of MODELS.md
-- (RepLKNet-31B before and after re-parameterisation, SLaK-T) are checked against both the published
-- values and closed-form counts written from the architecture description; these build the full models
-- and run one 224 x 224 forward each (about 25 s on 2 cores): LARK_SKIP_SLOW=1 skips them.
package.path = "./?.lua;" .. package.path
local nn = require "lark.nn"

local SLOW = os.getenv("LARK_SKIP_SLOW") ~= "1"

local function tiny()
  return nn.Sequential(
    nn.Conv2d(3, 4, 3, {padding = 1}),
    nn.BatchNorm2d(4),
    nn.ReLU(),
    nn.Conv2d(4, 4, 3, {stride = 2, padding = 1, groups = 4, bias = false}),
    nn.Flatten(),
    nn.Sequential(nn.Linear(64, 10), nn.Dropout(0.5)))
end

local function collect()
  local lines = {}
  return lines, function(l) lines[#lines + 1] = l end
end

local function gmacs(n) return math.floor(n / 1e6 + 0.5) / 1e3 end -- G to three decimals, as MODELS.md

describe("lark.summary", function()
  it("is lark.summary, loaded on first use", function()
    assert.are.equal("function", type(lark.summary))
    assert.are.equal(require "lark.summary", lark.summary)
  end)

  it("counts Conv2d (grouped too) and Linear MACs over the batch, and nothing else", function()
    local m = tiny()
    local lines, out = collect()
    local t = lark.summary(m, {2, 3, 8, 8}, {out = out})
    -- conv 3->4 3x3 on 8x8: 2*4*8*8 outputs x 3*9; depth-wise s2: 2*4*4*4 x 1*9; linear 2*10 x 64
    local want = 2 * 4 * 64 * 27 + 2 * 4 * 16 * 9 + 2 * 10 * 64
    assert.are.equal(want, t.macs)
    assert.are.equal(112 + 8 + 36 + 650, t.params)
    assert.are.equal(t.params, t.trainable)
    assert.are.equal(4 + 4 + 1, t.buffers)
    assert.are.same({2, 10}, t.output_shape)
    local by = {}
    for _, r in ipairs(t.rows) do by[r.path] = r end
    assert.are.equal("[2, 4, 8, 8]", by["0"].shape)
    assert.are.equal("Conv2d", by["0"].type)
    assert.are.equal(2 * 4 * 64 * 27, by["0"].macs)
    assert.are.equal("[2, 4, 4, 4]", by["3"].shape)
    assert.are.equal(0, by["1"].macs)
    assert.are.equal("[2, 64]", by["4"].shape)
    assert.are.equal(2 * 10 * 64, by["5"].macs) -- a container's MACs include its children's
    assert.are.equal(650, by["5"].params)
    assert.are.equal(2, by["5.0"].depth)
    -- printed: header, one row per call below the root, totals
    local text = table.concat(lines, "\n")
    assert.truthy(text:find("Layer (path)", 1, true))
    assert.truthy(text:find("5.0 +Linear +%[2, 10%] +650"))
    assert.truthy(text:find("Total params: 806", 1, true))
    assert.truthy(text:find("Total MACs (Conv2d + Linear): 16,256", 1, true))
    -- depth = 1 hides "5.0" and "5.1"
    lines, out = collect()
    lark.summary(m, {2, 3, 8, 8}, {out = out, depth = 1})
    text = table.concat(lines, "\n")
    assert.falsy(text:find("\n5%.0 "))
    assert.truthy(text:find("\n5 "))
  end)

  it("runs in eval mode without gradients and restores every module's mode and the grad mode", function()
    local m = tiny()
    m:train()
    m[2]:eval() -- a mixed state must come back as it was
    local seen = {}
    local orig = m[6][2].forward
    m[6][2].forward = function(self, x) -- an instance override must survive too
      seen.training, seen.grad = self.training, lark.is_grad_enabled()
      return orig(self, x)
    end
    local rm = m[2].running_mean:clone()
    local t = lark.summary(m, lark.randn(1, 3, 8, 8), {print = false})
    assert.are.same({1, 10}, t.output_shape)
    assert.is_false(seen.training)
    assert.is_false(seen.grad)
    assert.is_true(lark.is_grad_enabled())
    assert.is_true(m.training)
    assert.is_false(m[2].training)
    assert.is_true(m[6][2].training)
    assert_near(m[2].running_mean, rm, 0) -- eval: no statistics update
    assert.are.equal("function", type(rawget(m[6][2], "forward")))
    assert.is_nil(rawget(m[1], "forward"))
  end)

  it("restores the model when the forward fails, and says what was wrong with its arguments", function()
    local m = tiny()
    expect_error("Linear: expected an input whose last dim is in_features = 64", lark.summary, m, {1, 3, 6, 6},
      {print = false})
    for _, mod in ipairs(m:modules()) do assert.is_nil(rawget(mod, "forward")) end
    assert.is_true(m.training)
    assert.is_true(lark.is_grad_enabled())
    expect_error("summary: argument 1: expected a lark.nn module", lark.summary, {}, {1, 3, 8, 8})
    expect_error("size 2 of the input shape must be a positive integer, got 0", lark.summary, m, {1, 0, 8, 8})
    expect_error("expected an input shape such as {1, 3, 224, 224} or a tensor", lark.summary, m, "1x3x8x8")
  end)

  it("adds what a module's count_macs reports (kernels run without Conv2d children)", function()
    local Fused = nn.Module:extend("Fused")
    function Fused:__init() self:register_parameter("weight", lark.randn(4, 1, 5, 5)) end
    function Fused:forward(x) return lark.dwconv2d(x, self.weight, nil, {padding = 2}) end
    function Fused:count_macs(input, output)
      assert(lark.is_tensor(input))
      return output:numel() * 25
    end
    local t = lark.summary(nn.Sequential(Fused(), nn.Conv2d(4, 2, 1)), {1, 4, 6, 6}, {print = false})
    assert.are.equal(4 * 36 * 25 + 2 * 36 * 4, t.macs)
  end)
end)

-- ---- the figures of MODELS.md ----------------------------------------------------------------------

-- Closed-form RepLKNet MACs at a square input of side `size` (MODELS.md 1.1; 'merged': one K x K kernel).
local function replknet_macs(cfg, size, merged)
  local ch, layers, ks, k = cfg.channels, cfg.layers, cfg.kernels, cfg.small_kernel
  local c0 = ch[1]
  local s = size // 2
  local m = s * s * c0 * 27 + s * s * c0 * 9 + s * s * c0 * c0
  s = s // 2
  m = m + s * s * c0 * 9
  for i, C in ipairs(ch) do
    local D = C -- dw_ratio 1
    local lk = ks[i] * ks[i] + ((k and not merged) and k * k or 0)
    local pair = s * s * (D * C + D * lk + C * D) + s * s * 8 * C * C
    m = m + layers[i] * pair
    if i < #ch then
      m = m + s * s * ch[i + 1] * C
      s = s // 2
      m = m + s * s * ch[i + 1] * 9
    end
  end
  return m + ch[#ch] * cfg.num_classes
end

-- The per-block parameter formula of MODELS.md 1.2.
local function replknet_params(cfg)
  local ch, layers, ks, k = cfg.channels, cfg.layers, cfg.kernels, cfg.small_kernel
  local c0 = ch[1]
  local p = 27 * c0 + 9 * c0 + c0 * c0 + 9 * c0 + 8 * c0
  for i, C in ipairs(ch) do
    local D, K = C, ks[i]
    local replk = C * D + D * K * K + D * k * k + D * C + 2 * (C + D + D + D + C)
    local ffn = 8 * C * C + 2 * (C + 4 * C + C)
    p = p + layers[i] * (replk + ffn)
    if i < #ch then p = p + C * ch[i + 1] + 9 * ch[i + 1] + 4 * ch[i + 1] end
  end
  return p + 2 * ch[#ch] + (ch[#ch] + 1) * cfg.num_classes
end

-- Closed-form SLaK MACs (MODELS.md 2.1).
local function slak_macs(dims, depths, ks, size, classes)
  local N = ks[#ks]
  local s = size // 4
  local m = s * s * dims[1] * 3 * 16
  for i, C in ipairs(dims) do
    if i > 1 then
      s = s // 2
      m = m + s * s * C * dims[i - 1] * 4
    end
    m = m + depths[i] * (s * s * C * (2 * ks[i] * N + N * N) + s * s * 8 * C * C)
  end
  return m + dims[#dims] * classes
end

describe("lark.summary reproduces MODELS.md's counted figures", function()
  local R = require "recipes.replknet"
  local S = require "recipes.slak"
  local b31 = {channels = {128, 256, 512, 1024}, layers = {2, 2, 18, 2}, kernels = {31, 29, 27, 13}, small_kernel = 5,
               num_classes = 1000}

  it("closed forms agree with the published figures (no model built)", function()
    assert.are.equal(79864168, replknet_params(b31))
    assert.are.equal(15.431, gmacs(replknet_macs(b31, 224, false)))
    assert.are.equal(15.354, gmacs(replknet_macs(b31, 224, true)))
    assert.are.equal(45.347, gmacs(replknet_macs(b31, 384, false)))
    assert.are.equal(45.119, gmacs(replknet_macs(b31, 384, true)))
    local l31 = {channels = {192, 384, 768, 1536}, layers = {2, 2, 18, 2}, kernels = {31, 29, 27, 13}, small_kernel = 5,
                 num_classes = 1000}
    assert.are.equal(172671016, replknet_params(l31))
    assert.are.equal(96.332, gmacs(replknet_macs(l31, 384, false)))
    assert.are.equal(8.705, gmacs(slak_macs({124, 249, 499, 998}, {3, 3, 9, 3}, {51, 49, 47, 13, 5}, 224, 1000)))
    assert.are.equal(16.604, gmacs(slak_macs({124, 249, 499, 998}, {3, 3, 27, 3}, {51, 49, 47, 13, 5}, 224, 1000)))
    assert.are.equal(28.509, gmacs(slak_macs({166, 332, 665, 1331}, {3, 3, 27, 3}, {51, 49, 47, 13, 5}, 224, 1000)))
  end)

  it("a small RepLKNet: summary, the parameter formula and the closed form agree exactly", function()
    local cfg = {channels = {16, 32, 48}, layers = {1, 2, 1}, kernels = {13, 11, 7}, small_kernel = 3, num_classes = 10}
    local m = R.replknet(cfg)
    local t = lark.summary(m, {1, 3, 64, 64}, {print = false})
    assert.are.equal(replknet_params(cfg), t.params)
    assert.are.equal(replknet_macs(cfg, 64, false), t.macs)
    m:reparameterize()
    t = lark.summary(m, {1, 3, 64, 64}, {print = false})
    assert.are.equal(replknet_macs(cfg, 64, true), t.macs)
  end)

  it("a small SLaK: plain, fold_bn (one-pass kernel, counted by count_macs) and reparameterize", function()
    local m = S.slak{dims = {8, 16}, depths = {2, 1}, kernel_size = {13, 9, 5}, num_classes = 10}
    local want = slak_macs({8, 16}, {2, 1}, {13, 9, 5}, 64, 10)
    assert.are.equal(want, lark.summary(m, {1, 3, 64, 64}, {print = false}).macs)
    m:fold_bn()
    assert.are.equal(want, lark.summary(m, {1, 3, 64, 64}, {print = false}).macs)
    m:reparameterize()
    local merged = want - 16 * 16 * 8 * 2 * (2 * 13 * 5 + 25 - 169) - 8 * 8 * 16 * (2 * 9 * 5 + 25 - 81)
    assert.are.equal(merged, lark.summary(m, {1, 3, 64, 64}, {print = false}).macs)
  end)

  it("RepLKNet-31B at 224: 79,864,168 params and 15.431 G MACs; after reparameterize 79,527,272 and 15.354 G",
    function()
      if not SLOW then
        pending("LARK_SKIP_SLOW=1")
        return
      end
      local m = R.replknet31b{num_classes = 1000}
      local t = lark.summary(m, {1, 3, 224, 224}, {print = false})
      assert.are.equal(79864168, t.params)
      assert.are.equal(15.431, gmacs(t.macs))
      assert.are.equal(replknet_macs(b31, 224, false), t.macs)
      assert.are.same({1, 1000}, t.output_shape)
      m:reparameterize()
      t = lark.summary(m, {1, 3, 224, 224}, {print = false})
      assert.are.equal(79527272, t.params)
      assert.are.equal(15.354, gmacs(t.macs))
      assert.are.equal(replknet_macs(b31, 224, true), t.macs)
    end)

  it("SLaK-T at 224: 50,703,838 params and 8.705 G MACs (dense)", function()
    if not SLOW then
      pending("LARK_SKIP_SLOW=1")
      return
    end
    local m = S.slak_t{num_classes = 1000}
    local t = lark.summary(m, {1, 3, 224, 224}, {print = false})
    assert.are.equal(50703838, t.params)
    assert.are.equal(8.705, gmacs(t.macs))
    assert.are.equal(slak_macs({124, 249, 499, 998}, {3, 3, 9, 3}, {51, 49, 47, 13, 5}, 224, 1000), t.macs)
  end)
end)
