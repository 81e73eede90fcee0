--- recipes/slak.lua: SLaK (Liu et al., ICLR 2023, "More ConvNets in the 2020s: Scaling up Kernels Beyond
-- 51x51 using Sparsity") as ../shared/reference/MODELS.md section 2 describes the official PyTorch model
-- (`models/SLaK.py`, Decom = True): the same modules, parameter and buffer names, shapes, paddings, eps
-- values, initialisation and op order, so that the official state_dict loads with strict checking.
--
--   local S = require "recipes.slak"
--   local model = S.slak_t{num_classes = 1000}                    -- drop path 0.1 (README command)
--   local tiny = S.slak{dims = {16, 32}, depths = {1, 1}, kernel_size = {13, 9, 5}, width_factor = 1,
--                       in_channels = 1, num_classes = 10}
--
-- ConvNeXt macro design: stem Conv 4x4 s4 (bias) + LayerNorm (channels first), downsampling LayerNorm +
-- Conv 2x2 s2, then per block (dim C, stage kernel K, short side N = kernel_size[#kernel_size]):
--   large_kernel: BN(DW K x N) + BN(DW N x K) + BN(DW N x N), summed, no activation
--                 (children LoRA1, LoRA2, small_conv; "same" padding per dim: (K//2, N//2), ...)
--   x + DropPath(gamma * Linear_4C->C(GELU(Linear_C->4C(LayerNorm(large_kernel(x))))))   (channels last)
-- Head: mean over H, W -> LayerNorm -> Linear.
--
-- Deployment forms (neither exists in the official code, which cannot merge Decom kernels):
--   model:reparameterize()  every large kernel becomes ONE biased K x K depth-wise conv
--                           `large_kernel.lkb_reparam` (BN folded into each branch, the rectangular and
--                           small kernels zero-padded to K x K, centred). Exact in eval mode, but a K x K
--                           kernel costs K*K MACs per output where the three branches cost 2*K*N + N*N
--                           (51x51: 2601 vs 535), so on CPU it is the slower form.
--   model:fold_bn()         folds each branch's BN into a biased conv (BN replaced by Identity; names
--                           become LoRA1.conv.{weight,bias}) and, whenever no gradient is needed (eval
--                           under no_grad), runs the three branches through lark.dwconv2d_sum, the
--                           one-pass kernel of core/ops/dwconv.c; with gradients it takes the module
--                           path, so training still works (without BN statistics).
local lark = require "lark"
local nn = require "lark.nn"
local F = require "lark.nn.functional"
local init = require "lark.nn.init_fns"

local S = {}

local isinstance = nn.is_instance

-- ---- conv-BN ------------------------------------------------------------------------------------

--- ConvBN(C, kh, kw [, bn = true]): depth-wise Conv2d kh x kw (no bias, padding (kh//2, kw//2)) then
-- BatchNorm2d(C) (eps 1e-5) unless bn == false; children `conv`, `bn` as SLaK's conv_bn.
local ConvBN = nn.Module:extend("ConvBN")
S.ConvBN = ConvBN

function ConvBN:__init(channels, kh, kw, bn)
  self.conv = nn.Conv2d(channels, channels, {kh, kw}, {padding = {kh // 2, kw // 2}, groups = channels, bias = false})
  if bn ~= false then self.bn = nn.BatchNorm2d(channels) end
end

function ConvBN:forward(x)
  local y = self.conv(x)
  if self.bn then y = self.bn(y) end
  return y
end

--- cb:fused_kernel(): weight (C, 1, kh, kw) and bias (C) of the biased conv equal to this conv-BN in
-- eval mode (MODELS.md 1.3: s = gamma / sqrt(var + eps), W' = W * s, b' = beta - mean * s); after
-- fold_bn (or without BN) the conv's own weight and bias (zeros when it has none).
function ConvBN:fused_kernel()
  local w, bn = self.conv.weight, self.bn
  if bn and isinstance(bn, nn.BatchNorm2d) then
    local s = bn.weight / (bn.running_var + bn.eps):sqrt()
    return w * s:view(-1, 1, 1, 1), bn.bias - bn.running_mean * s
  end
  return w, self.conv.bias or lark.zeros({w:size(1)}, {dtype = w:dtype(), device = w:device()})
end

--- cb:fold_bn(): replaces conv + BN by one biased conv with the fused kernel and the BN by Identity
-- (as RepLKNet's deep_fuse_BN does); eval outputs are unchanged. Returns cb.
function ConvBN:fold_bn()
  if not (self.bn and isinstance(self.bn, nn.BatchNorm2d)) then return self end
  local g <close> = lark.no_grad()
  local w, b = self:fused_kernel()
  local c = self.conv
  local conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, {padding = c.padding, groups = c.groups,
    bias = true, dtype = w:dtype(), device = w:device()})
  conv.weight:copy_(w)
  conv.bias:copy_(b)
  self.conv = conv
  self.bn = nn.Identity()
  return self
end

-- ---- the decomposed large kernel ------------------------------------------------------------------

--- ReparamLargeKernelConv(C, K, N [, {decom = true, bn = true}]): with decom, LoRA1 (K x N) + LoRA2
-- (N x K) + small_conv (N x N, only when N < K), each depth-wise conv-BN, summed; without decom,
-- lkb_origin (K x K) + small_conv. After reparameterize(): one biased K x K conv `lkb_reparam`.
local LargeKernel = nn.Module:extend("ReparamLargeKernelConv")
S.ReparamLargeKernelConv = LargeKernel

function LargeKernel:__init(channels, kernel, small_kernel, opts)
  opts = opts or {}
  self.channels, self.kernel, self.small_kernel = channels, kernel, small_kernel
  self.decom = opts.decom ~= false
  if self.decom then
    self.LoRA1 = ConvBN(channels, kernel, small_kernel, opts.bn)
    self.LoRA2 = ConvBN(channels, small_kernel, kernel, opts.bn)
  else
    self.lkb_origin = ConvBN(channels, kernel, kernel, opts.bn)
  end
  if small_kernel < kernel then self.small_conv = ConvBN(channels, small_kernel, small_kernel, opts.bn) end
end

-- The ConvBN branches present, in the order their kernels are summed.
function LargeKernel:branches()
  local out = {}
  for _, name in ipairs{"LoRA1", "LoRA2", "lkb_origin", "small_conv"} do
    if rawget(self, name) then out[#out + 1] = rawget(self, name) end
  end
  return out
end

-- Whether the one-pass kernel may run: BNs folded, nothing needs a gradient (the raw kernel records
-- none), and the data on the CPU (the only device core/ops/dwconv.c serves).
function LargeKernel:use_fast_path(x)
  if not rawget(self, "_folded") or x:device() ~= "cpu" then return false end
  local branches = self:branches()
  if lark.is_grad_enabled() then
    if x.requires_grad then return false end
    for _, b in ipairs(branches) do
      local bias = b.conv.bias
      if b.conv.weight.requires_grad or (bias and bias.requires_grad) then return false end
    end
  end
  return true
end

function LargeKernel:forward(x)
  if self.lkb_reparam then return self.lkb_reparam(x) end
  local fast = self:use_fast_path(x)
  rawset(self, "_fast", fast) -- read by count_macs (lark.summary)
  if fast then
    local ws, b = {}, nil
    for i, br in ipairs(self:branches()) do
      ws[i] = br.conv.weight
      local bi = br.conv.bias -- nil for a model built with bn = false
      if bi then b = b and b + bi or bi end
    end
    -- default padding of dwconv2d_sum: (kh//2, kw//2) per kernel, the padding of every branch
    return lark.dwconv2d_sum(x, ws, b)
  end
  local y
  if self.decom then
    y = self.LoRA1(x) + self.LoRA2(x)
  else
    y = self.lkb_origin(x)
  end
  if self.small_conv then y = y + self.small_conv(x) end
  return y
end

--- lk:count_macs(input, output): the MACs of a forward that went through lark.dwconv2d_sum (the
-- branches' Conv2d modules did not run, so lark.summary asks the module); 0 otherwise.
function LargeKernel:count_macs(_, output)
  if not rawget(self, "_fast") then return 0 end
  local per = 0
  for _, b in ipairs(self:branches()) do
    local k = b.conv.kernel_size
    per = per + k[1] * k[2]
  end
  return output:numel() * per
end

--- lk:fold_bn(): folds each branch's BN into its conv (see ConvBN:fold_bn) and turns on the
-- one-pass eval path. Returns lk.
function LargeKernel:fold_bn()
  if self.lkb_reparam then return self end
  for _, b in ipairs(self:branches()) do b:fold_bn() end
  rawset(self, "_folded", true)
  return self
end

--- lk:reparameterize(): one biased K x K depth-wise conv `lkb_reparam` with
-- W = pad_cols(W'_LoRA1) + pad_rows(W'_LoRA2) + pad_all(W'_small), b = sum of the fused biases
-- (MODELS.md 2.1; W' = BN-folded kernel); the branches are removed. Eval outputs are unchanged.
function LargeKernel:reparameterize()
  if self.lkb_reparam then return self end
  local g <close> = lark.no_grad()
  local K, N = self.kernel, self.small_kernel
  local p = (K - N) // 2
  local w, b
  local function add(wi, bi, pads)
    if pads then wi = F.pad(wi, pads) end
    w = w and w + wi or wi
    b = b and b + bi or bi
  end
  if self.decom then
    local w1, b1 = self.LoRA1:fused_kernel()
    local w2, b2 = self.LoRA2:fused_kernel()
    add(w1, b1, {p, p, 0, 0}) -- K x N: (K - N) / 2 zero columns on each side
    add(w2, b2, {0, 0, p, p}) -- N x K: zero rows
  else
    add(self.lkb_origin:fused_kernel())
  end
  if self.small_conv then
    local ws, bs = self.small_conv:fused_kernel()
    add(ws, bs, {p, p, p, p})
  end
  local conv = nn.Conv2d(self.channels, self.channels, K, {padding = K // 2, groups = self.channels, bias = true,
    dtype = w:dtype(), device = w:device()})
  conv.weight:copy_(w)
  conv.bias:copy_(b)
  self.LoRA1, self.LoRA2, self.lkb_origin, self.small_conv = nil, nil, nil, nil
  rawset(self, "_folded", nil)
  self.lkb_reparam = conv
  return self
end

-- ---- block ----------------------------------------------------------------------------------------

--- Block(C, drop_path, layer_scale_init, K, N, lk_opts): gamma (when layer_scale_init > 0), then the
-- children large_kernel, norm (LayerNorm eps 1e-6), pwconv1, act, pwconv2, drop_path, as the official
-- Block registers them.
local Block = nn.Module:extend("Block")
S.Block = Block

function Block:__init(dim, drop_path, layer_scale_init, kernel, small_kernel, lk_opts)
  self.large_kernel = LargeKernel(dim, kernel, small_kernel, lk_opts)
  self.norm = nn.LayerNorm(dim, {eps = 1e-6})
  self.pwconv1 = nn.Linear(dim, 4 * dim)
  self.act = nn.GELU()
  self.pwconv2 = nn.Linear(4 * dim, dim)
  if layer_scale_init > 0 then
    self:register_parameter("gamma", lark.full({dim}, layer_scale_init))
  else
    self:register_parameter("gamma", nil)
  end
  self.drop_path = drop_path > 0 and nn.DropPath(drop_path) or nn.Identity()
end

function Block:forward(x)
  local y = self.large_kernel(x):permute(1, 3, 4, 2) -- (N, H, W, C)
  y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
  if self.gamma then y = y * self.gamma end
  return x + self.drop_path(y:permute(1, 4, 2, 3))
end

-- ---- the network ------------------------------------------------------------------------------------

local SLaK = nn.Module:extend("SLaK")
S.SLaK = SLaK

local function check_cfg(cfg)
  if type(cfg) ~= "table" then error("slak: expected a configuration table, got " .. type(cfg), 3) end
  local function ints(name, n)
    local v = cfg[name]
    if type(v) ~= "table" or #v == 0 or (n and #v ~= n) then
      error(string.format("slak: %s must be a list%s, got %s", name, n and (" of " .. n .. " integers") or "",
        tostring(v)), 4)
    end
    for i = 1, #v do
      if math.type(v[i]) ~= "integer" or v[i] < 1 then
        error(string.format("slak: %s[%d] must be a positive integer, got %s", name, i, tostring(v[i])), 4)
      end
    end
  end
  ints("dims")
  ints("depths", #cfg.dims)
  ints("kernel_size", #cfg.dims + 1)
  for i, k in ipairs(cfg.kernel_size) do
    if k % 2 == 0 then
      error(string.format("slak: kernel_size[%d] = %d must be odd (\"same\" padding keeps the size only for odd kernels)",
        i, k), 3)
    end
  end
  local wf = cfg.width_factor or 1
  if type(wf) ~= "number" or wf <= 0 then error("slak: width_factor must be a positive number, got " .. tostring(wf), 3) end
  for i, d in ipairs(cfg.dims) do
    if math.floor(d * wf) < 1 then
      error(string.format("slak: dims[%d] = %d times width_factor %s leaves no channel", i, d, tostring(wf)), 3)
    end
  end
  local dp = cfg.drop_path or 0
  if type(dp) ~= "number" or dp < 0 or dp >= 1 then
    error("slak: drop_path must be in [0, 1), got " .. tostring(dp), 3)
  end
  local nc = cfg.num_classes
  if nc ~= nil and (math.type(nc) ~= "integer" or nc < 0) then
    error("slak: num_classes must be a non-negative integer, got " .. tostring(nc), 3)
  end
  local known = {dims = true, depths = true, kernel_size = true, width_factor = true, num_classes = true,
                 drop_path = true, in_channels = true, layer_scale_init_value = true, head_init_scale = true,
                 decom = true, bn = true}
  for k in pairs(cfg) do
    if not known[k] then error(string.format("slak: unknown option '%s'", tostring(k)), 3) end
  end
end

--- SLaK(cfg): cfg = {dims, depths, kernel_size = {K_1, ..., K_n, N}, width_factor = 1, num_classes =
-- 1000 (0: no head; forward returns the pooled, normalised features), in_channels = 3, drop_path = 0,
-- layer_scale_init_value = 1e-6, head_init_scale = 1, decom = true, bn = true}. Widths are
-- int(d * width_factor) (truncated, as Python's int()); drop-path rates linspace(0, drop_path,
-- sum(depths)); Conv2d and Linear weights trunc_normal(std 0.02), biases 0.
function SLaK:__init(cfg)
  check_cfg(cfg)
  local wf = cfg.width_factor or 1
  local dims = {}
  for i, d in ipairs(cfg.dims) do dims[i] = math.floor(d * wf) end
  self.dims = dims
  local depths, ks = cfg.depths, cfg.kernel_size
  local n = #dims
  local N = ks[n + 1]
  local lk_opts = {decom = cfg.decom ~= false, bn = cfg.bn ~= false}
  local ls = cfg.layer_scale_init_value == nil and 1e-6 or cfg.layer_scale_init_value
  self.downsample_layers = nn.ModuleList()
  self.downsample_layers:append(nn.Sequential(
    nn.Conv2d(cfg.in_channels or 3, dims[1], 4, {stride = 4}),
    nn.LayerNorm(dims[1], {eps = 1e-6, channels_first = true})))
  for i = 2, n do
    self.downsample_layers:append(nn.Sequential(
      nn.LayerNorm(dims[i - 1], {eps = 1e-6, channels_first = true}),
      nn.Conv2d(dims[i - 1], dims[i], 2, {stride = 2})))
  end
  local total = 0
  for _, d in ipairs(depths) do total = total + d end
  local dp, cur = cfg.drop_path or 0, 0
  self.stages = nn.ModuleList()
  for i = 1, n do
    local blocks = {}
    for j = 1, depths[i] do
      local rate = total > 1 and dp * cur / (total - 1) or 0
      cur = cur + 1
      blocks[j] = Block(dims[i], rate, ls, ks[i], N, lk_opts)
    end
    self.stages:append(nn.Sequential(blocks))
  end
  local num_classes = cfg.num_classes == nil and 1000 or cfg.num_classes
  self.norm = nn.LayerNorm(dims[n], {eps = 1e-6})
  if num_classes > 0 then self.head = nn.Linear(dims[n], num_classes) end
  self:init_weights(cfg.head_init_scale or 1)
end

--- model:init_weights([head_init_scale = 1]): the official initialisation: trunc_normal_(std 0.02,
-- cut at +-2) for every Conv2d and Linear weight, zero biases, then the head scaled.
function SLaK:init_weights(head_init_scale)
  local g <close> = lark.no_grad()
  for _, m in ipairs(self:modules()) do
    if isinstance(m, nn.Conv2d) or isinstance(m, nn.Linear) then
      init.trunc_normal_(m.weight, 0, 0.02)
      if m.bias then m.bias:zero_() end
    end
  end
  if self.head and head_init_scale and head_init_scale ~= 1 then
    self.head.weight:mul_(head_init_scale)
    self.head.bias:mul_(head_init_scale)
  end
  return self
end

--- model:forward_map(x): the last stage's feature map (N, C_last, h, w) (what the ERF analysis reads).
function SLaK:forward_map(x)
  for i = 1, #self.stages do
    x = self.downsample_layers[i](x)
    x = self.stages[i](x)
  end
  return x
end

--- model:forward_features(x): global average of the last map, then the final LayerNorm: (N, C_last),
-- as the official forward_features.
function SLaK:forward_features(x)
  return self.norm(self:forward_map(x):mean({3, 4}))
end

function SLaK:forward(x)
  x = self:forward_features(x)
  if self.head then x = self.head(x) end
  return x
end

--- model:reparameterize(): every block's large kernel becomes one biased K x K depth-wise conv
-- `large_kernel.lkb_reparam` (see LargeKernel:reparameterize). Returns model.
function SLaK:reparameterize()
  for _, m in ipairs(self:modules()) do
    if getmetatable(m) == LargeKernel then m:reparameterize() end
  end
  return self
end

--- model:fold_bn(): folds the BNs of every large kernel into its branch convs and enables the
-- one-pass lark.dwconv2d_sum path for forwards that need no gradient (see the header). Returns model.
function SLaK:fold_bn()
  for _, m in ipairs(self:modules()) do
    if getmetatable(m) == LargeKernel then m:fold_bn() end
  end
  return self
end

-- ---- the official configurations ---------------------------------------------------------------------

local function with(base, opts)
  if opts ~= nil and type(opts) ~= "table" then error("slak: expected an options table, got " .. type(opts), 3) end
  local cfg = {}
  for k, v in pairs(base) do cfg[k] = v end
  for k, v in pairs(opts or {}) do cfg[k] = v end
  return cfg
end

--- S.slak(cfg): a SLaK of any configuration (see SLaK above).
function S.slak(cfg) return SLaK(cfg) end

--- S.slak_t{num_classes =, drop_path = 0.1, ...}: dims 96..768 x 1.3 = 124, 249, 499, 998; depths
-- 3, 3, 9, 3; kernels 51, 49, 47, 13 decomposed with N = 5. 50,703,838 parameters (dense).
function S.slak_t(opts)
  return SLaK(with({dims = {96, 192, 384, 768}, depths = {3, 3, 9, 3}, kernel_size = {51, 49, 47, 13, 5},
    width_factor = 1.3, drop_path = 0.1}, opts))
end

--- S.slak_s{...}: as T with depths 3, 3, 27, 3 and drop path 0.4.
function S.slak_s(opts)
  return SLaK(with({dims = {96, 192, 384, 768}, depths = {3, 3, 27, 3}, kernel_size = {51, 49, 47, 13, 5},
    width_factor = 1.3, drop_path = 0.4}, opts))
end

--- S.slak_b{...}: dims 128..1024 x 1.3 = 166, 332, 665, 1331; depths 3, 3, 27, 3; drop path 0.5.
function S.slak_b(opts)
  return SLaK(with({dims = {128, 256, 512, 1024}, depths = {3, 3, 27, 3}, kernel_size = {51, 49, 47, 13, 5},
    width_factor = 1.3, drop_path = 0.5}, opts))
end

return S
