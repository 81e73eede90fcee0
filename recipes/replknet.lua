--- recipes/replknet.lua: RepLKNet (Ding et al., CVPR 2022) as ../shared/reference/MODELS.md section 1
-- describes the official PyTorch model: the same modules, parameter and buffer names, shapes,
-- paddings, eps values and op order, so that the official state_dict loads with strict checking.
--
--   local R = require "recipes.replknet"
--   local model = R.replknet31b{num_classes = 1000, drop_path = 0.5}
--   local tiny = R.replknet{channels = {32, 64}, layers = {1, 1}, kernels = {13, 13}, small_kernel = 5,
--                           in_channels = 1, num_classes = 10, stem_stride = 2}
--
-- Blocks (pre-BN residual):
--   RepLK block:  x + DropPath(pw2(ReLU(large_kernel(pw1(prelkb_bn(x))))))
--                 large_kernel = BN(DW K x K) + BN(DW k x k)   (two branches on the same input)
--   ConvFFN:      x + DropPath(pw2(GELU(pw1(preffn_bn(x)))))
-- Stem: conv-BN-ReLU 3x3 s2 (dense), 3x3 depth-wise, 1x1, 3x3 depth-wise s2 (total stride 4).
-- `stem_stride = 2` (lark's option for small images such as 28x28 Fashion-MNIST) makes the first
-- conv stride 1; names and shapes do not change.
local lark = require "lark"
local nn = require "lark.nn"
local F = require "lark.nn.functional"

local R = {}

-- ---- conv-BN ------------------------------------------------------------------------------------

--- ConvBN(cin, cout, k, {stride, padding, groups, relu}): Conv2d (no bias) then BatchNorm2d (eps
-- 1e-5), then ReLU when relu; children `conv`, `bn` (and `nonlinear`) as in the official conv_bn.
local ConvBN = nn.Module:extend("ConvBN")
R.ConvBN = ConvBN

function ConvBN:__init(cin, cout, k, opts)
  opts = opts or {}
  self.conv = nn.Conv2d(cin, cout, k, {stride = opts.stride or 1, padding = opts.padding or k // 2,
    groups = opts.groups or 1, bias = false})
  self.bn = nn.BatchNorm2d(cout)
  if opts.relu then self.nonlinear = nn.ReLU() end
end

function ConvBN:forward(x)
  local y = self.bn(self.conv(x))
  if self.nonlinear then y = self.nonlinear(y) end
  return y
end

--- ConvBN:fused_kernel(): weight and bias of the biased Conv2d computing the same as this conv-BN in
-- eval mode (MODELS.md 1.3: W' = W * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps));
-- after fuse_bn() the conv's own weight and bias.
function ConvBN:fused_kernel()
  local bn, w = self.bn, self.conv.weight
  if getmetatable(bn) ~= nn.BatchNorm2d then return w, self.conv.bias end
  local std = (bn.running_var + bn.eps):sqrt()
  local s = bn.weight / std
  return w * s:view(-1, 1, 1, 1), bn.bias - bn.running_mean * s
end

--- ConvBN:fuse_bn(): replaces `conv` by a biased conv with the fused kernel and `bn` by Identity, as
-- the official deep_fuse_BN does to every conv-BN (state-dict keys become conv.weight, conv.bias).
-- Eval outputs are unchanged. Returns self.
function ConvBN:fuse_bn()
  if getmetatable(self.bn) ~= nn.BatchNorm2d then return self end
  local g <close> = lark.no_grad()
  local w, b = self:fused_kernel()
  local c = self.conv
  local conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, {stride = c.stride, padding = c.padding,
    dilation = c.dilation, groups = c.groups, bias = true, dtype = w:dtype(), device = w:device()})
  conv.weight:copy_(w)
  conv.bias:copy_(b)
  self.conv = conv
  self.bn = nn.Identity()
  return self
end

-- ---- the large kernel ------------------------------------------------------------------------------

--- ReparamLargeKernelConv(C, K, k): BN(DW K x K) + BN(DW k x k) on the same input (k = nil: no
-- small branch); after reparameterize(), one biased K x K depth-wise conv `lkb_reparam`.
local ReparamLargeKernelConv = nn.Module:extend("ReparamLargeKernelConv")
R.ReparamLargeKernelConv = ReparamLargeKernelConv

function ReparamLargeKernelConv:__init(channels, kernel, small_kernel)
  self.channels, self.kernel, self.small_kernel = channels, kernel, small_kernel
  self.lkb_origin = ConvBN(channels, channels, kernel, {groups = channels})
  if small_kernel then
    assert(small_kernel <= kernel, "ReparamLargeKernelConv: the small kernel cannot be larger than the large one")
    self.small_conv = ConvBN(channels, channels, small_kernel, {groups = channels})
  end
end

function ReparamLargeKernelConv:forward(x)
  if self.lkb_reparam then return self.lkb_reparam(x) end
  local y = self.lkb_origin(x)
  if self.small_conv then y = y + self.small_conv(x) end
  return y
end

--- m:reparameterize(): folds both BNs and the small branch into `lkb_reparam` (MODELS.md 1.3);
-- lkb_origin and small_conv are removed. Eval-mode outputs are unchanged.
function ReparamLargeKernelConv:reparameterize()
  if self.lkb_reparam then return self end
  lark.no_grad(function()
    local w, b = self.lkb_origin:fused_kernel()
    if self.small_conv then
      local ws, bs = self.small_conv:fused_kernel()
      local p = (self.kernel - self.small_kernel) // 2
      w = w + F.pad(ws, {p, p, p, p})
      b = b + bs
    end
    local conv = nn.Conv2d(self.channels, self.channels, self.kernel,
      {padding = self.kernel // 2, groups = self.channels, bias = true, dtype = w:dtype(), device = w:device()})
    conv.weight:copy_(w)
    conv.bias:copy_(b)
    self.lkb_origin, self.small_conv = nil, nil
    self.lkb_reparam = conv
  end)()
  return self
end

-- ---- blocks -----------------------------------------------------------------------------------------

local RepLKBlock = nn.Module:extend("RepLKBlock")
R.RepLKBlock = RepLKBlock

--- RepLKBlock(C, D, K, k, drop_path): registration order pw1, pw2, large_kernel, lk_nonlinear,
-- prelkb_bn, drop_path, as in the official code (the state_dict order follows it).
function RepLKBlock:__init(in_channels, dw_channels, kernel, small_kernel, drop_path)
  self.pw1 = ConvBN(in_channels, dw_channels, 1, {padding = 0, relu = true})
  self.pw2 = ConvBN(dw_channels, in_channels, 1, {padding = 0})
  self.large_kernel = ReparamLargeKernelConv(dw_channels, kernel, small_kernel)
  self.lk_nonlinear = nn.ReLU()
  self.prelkb_bn = nn.BatchNorm2d(in_channels)
  self.drop_path = drop_path > 0 and nn.DropPath(drop_path) or nn.Identity()
end

function RepLKBlock:forward(x)
  local y = self.pw1(self.prelkb_bn(x))
  y = self.pw2(self.lk_nonlinear(self.large_kernel(y)))
  return x + self.drop_path(y)
end

local ConvFFN = nn.Module:extend("ConvFFN")
R.ConvFFN = ConvFFN

--- ConvFFN(C, hidden, drop_path): preffn_bn, pw1 (conv-BN 1x1 C -> hidden), GELU, pw2 (hidden -> C).
function ConvFFN:__init(channels, hidden, drop_path)
  self.preffn_bn = nn.BatchNorm2d(channels)
  self.pw1 = ConvBN(channels, hidden, 1, {padding = 0})
  self.pw2 = ConvBN(hidden, channels, 1, {padding = 0})
  self.nonlinear = nn.GELU()
  self.drop_path = drop_path > 0 and nn.DropPath(drop_path) or nn.Identity()
end

function ConvFFN:forward(x)
  local y = self.pw2(self.nonlinear(self.pw1(self.preffn_bn(x))))
  return x + self.drop_path(y)
end

local Stage = nn.Module:extend("RepLKNetStage")

function Stage:__init(channels, num_blocks, kernel, small_kernel, dw_ratio, ffn_ratio, rates)
  self.blocks = nn.ModuleList()
  for i = 1, num_blocks do
    self.blocks:append(RepLKBlock(channels, math.floor(channels * dw_ratio), kernel, small_kernel, rates[i]))
    self.blocks:append(ConvFFN(channels, math.floor(channels * ffn_ratio), rates[i]))
  end
  self.norm = nn.Identity()
end

function Stage:forward(x)
  for _, b in self.blocks:iter() do x = b(x) end
  return self.norm(x)
end

-- ---- the network ------------------------------------------------------------------------------------

local RepLKNet = nn.Module:extend("RepLKNet")
R.RepLKNet = RepLKNet

local function check_cfg(cfg)
  local function list(name, n)
    local v = cfg[name]
    if type(v) ~= "table" or (n and #v ~= n) or #v == 0 then
      error(string.format("replknet: %s must be a list%s, got %s", name, n and (" of " .. n .. " numbers") or "",
        tostring(v)), 3)
    end
    for i = 1, #v do
      if math.type(v[i]) ~= "integer" or v[i] < 1 then
        error(string.format("replknet: %s[%d] must be a positive integer, got %s", name, i, tostring(v[i])), 3)
      end
    end
    return v
  end
  local ch = list("channels")
  list("layers", #ch)
  list("kernels", #ch)
  for i, k in ipairs(cfg.kernels) do
    if k % 2 == 0 then error(string.format("replknet: kernels[%d] = %d must be odd ('same' padding)", i, k), 3) end
  end
  local sk = cfg.small_kernel
  if sk ~= nil and (math.type(sk) ~= "integer" or sk < 1 or sk % 2 == 0) then
    error("replknet: small_kernel must be an odd positive integer or nil, got " .. tostring(sk), 3)
  end
  local dp = cfg.drop_path or 0
  if type(dp) ~= "number" or dp < 0 or dp >= 1 then
    error("replknet: drop_path must be in [0, 1), got " .. tostring(dp), 3)
  end
  local ss = cfg.stem_stride or 4
  if ss ~= 2 and ss ~= 4 then error("replknet: stem_stride must be 2 or 4, got " .. tostring(ss), 3) end
end

--- RepLKNet(cfg): cfg = {channels, layers, kernels, small_kernel (nil: none), dw_ratio = 1,
-- ffn_ratio = 4, num_classes = 1000 (nil or 0: no head, returns the feature map), in_channels = 3,
-- drop_path = 0, stem_stride = 4}.
function RepLKNet:__init(cfg)
  check_cfg(cfg)
  self.cfg = cfg
  local ch, layers, kernels = cfg.channels, cfg.layers, cfg.kernels
  local dw_ratio, ffn_ratio = cfg.dw_ratio or 1, cfg.ffn_ratio or 4
  local c0, cin = ch[1], cfg.in_channels or 3
  self.stem = nn.ModuleList({
    ConvBN(cin, c0, 3, {stride = (cfg.stem_stride or 4) == 4 and 2 or 1, padding = 1, relu = true}),
    ConvBN(c0, c0, 3, {padding = 1, groups = c0, relu = true}),
    ConvBN(c0, c0, 1, {padding = 0, relu = true}),
    ConvBN(c0, c0, 3, {stride = 2, padding = 1, groups = c0, relu = true}),
  })
  -- drop-path rates: linspace(0, rate, sum(layers)), one per (RepLK, ConvFFN) pair
  local total, rates, at = 0, {}, 0
  for _, n in ipairs(layers) do total = total + n end
  local dp = cfg.drop_path or 0
  self.stages = nn.ModuleList() -- registered before transitions: the state_dict order is PyTorch's
  self.transitions = nn.ModuleList()
  for i = 1, #ch do
    local r = {}
    for j = 1, layers[i] do
      r[j] = total > 1 and dp * at / (total - 1) or 0
      at = at + 1
    end
    rates[i] = r
    self.stages:append(Stage(ch[i], layers[i], kernels[i], cfg.small_kernel, dw_ratio, ffn_ratio, r))
    if i < #ch then
      self.transitions:append(nn.Sequential(
        ConvBN(ch[i], ch[i + 1], 1, {padding = 0, relu = true}),
        ConvBN(ch[i + 1], ch[i + 1], 3, {stride = 2, padding = 1, groups = ch[i + 1], relu = true})))
    end
  end
  local num_classes = cfg.num_classes == nil and 1000 or cfg.num_classes
  if num_classes > 0 then
    self.norm = nn.BatchNorm2d(ch[#ch])
    self.avgpool = nn.AdaptiveAvgPool2d(1)
    self.head = nn.Linear(ch[#ch], num_classes)
  end
end

--- model:forward_features(x): the last stage's feature map (N, C_last, h, w).
function RepLKNet:forward_features(x)
  for _, s in self.stem:iter() do x = s(x) end
  for i, stage in self.stages:iter() do
    x = stage(x)
    if i < #self.stages then x = self.transitions[i](x) end
  end
  return x
end

function RepLKNet:forward(x)
  x = self:forward_features(x)
  if not self.head then return x end
  x = self.avgpool(self.norm(x))
  return self.head(x:flatten(2))
end

--- model:reparameterize(): merges every large kernel's two branches and BNs into one biased K x K
-- depth-wise conv (`large_kernel.lkb_reparam`), as the official structural_reparam(). Returns model.
function RepLKNet:reparameterize()
  for _, m in ipairs(self:modules()) do
    if getmetatable(m) == ReparamLargeKernelConv then m:reparameterize() end
  end
  return self
end

--- model:fuse_bn(): folds every conv-BN (stem, transitions, pw1/pw2, and the large-kernel branches
-- unless already re-parameterised) into a biased conv, BN replaced by Identity, as the official
-- deep_fuse_BN (MODELS.md 1.3). prelkb_bn, preffn_bn and the head norm are not conv-BN pairs and stay.
-- Returns model.
function RepLKNet:fuse_bn()
  for _, m in ipairs(self:modules()) do
    if getmetatable(m) == ConvBN then m:fuse_bn() end
  end
  return self
end

-- ---- the official configurations ---------------------------------------------------------------------

local function with(base, opts)
  opts = opts or {}
  local cfg = {}
  for k, v in pairs(base) do cfg[k] = v end
  for k, v in pairs(opts) do cfg[k] = v end
  return cfg
end

--- R.replknet(cfg): a RepLKNet of any configuration (see RepLKNet above).
function R.replknet(cfg) return RepLKNet(cfg) end

--- R.replknet31b{num_classes =, drop_path = 0.3, ...}: channels 128..1024, kernels 31, 29, 27, 13.
function R.replknet31b(opts)
  return RepLKNet(with({channels = {128, 256, 512, 1024}, layers = {2, 2, 18, 2}, kernels = {31, 29, 27, 13},
    small_kernel = 5, dw_ratio = 1, ffn_ratio = 4, drop_path = 0.3}, opts))
end

--- R.replknet31l{...}: channels 192..1536.
function R.replknet31l(opts)
  return RepLKNet(with({channels = {192, 384, 768, 1536}, layers = {2, 2, 18, 2}, kernels = {31, 29, 27, 13},
    small_kernel = 5, dw_ratio = 1, ffn_ratio = 4, drop_path = 0.3}, opts))
end

--- R.replknetxl{...}: channels 256..2048, kernels 27, 27, 27, 13, no small branch, dw_ratio 1.5.
function R.replknetxl(opts)
  return RepLKNet(with({channels = {256, 512, 1024, 2048}, layers = {2, 2, 18, 2}, kernels = {27, 27, 27, 13},
    small_kernel = nil, dw_ratio = 1.5, ffn_ratio = 4, drop_path = 0.3}, opts))
end

return R
