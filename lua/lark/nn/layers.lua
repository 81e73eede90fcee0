--- lark.nn layers: convolutions, linear, normalisations, activations, dropout, pooling, flatten.
--
-- Parameter and buffer names, shapes, defaults and initialisations are PyTorch's (weights of
-- Conv2d and Linear: kaiming_uniform_ with a = sqrt(5); biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))),
-- so state dicts move between the two. Every constructor takes its optional arguments in one
-- table; `dtype` and `device` there choose where the parameters are made.
local lark = require "lark"
local F = require "lark.nn.functional"
local init = require "lark.nn.init_fns"
local Module = require("lark.nn.module").Module

local layers = {}

local function fmt_num(v)
  if math.type(v) == "integer" then return tostring(v) end
  if v == math.floor(v) and math.abs(v) < 1e15 then return string.format("%.1f", v) end
  return string.format("%g", v)
end

local function tuple_str(t)
  if type(t) ~= "table" then return fmt_num(t) end
  local parts = {}
  for i, v in ipairs(t) do parts[i] = fmt_num(v) end
  if #parts == 1 then return "(" .. parts[1] .. ",)" end
  return "(" .. table.concat(parts, ", ") .. ")"
end

local function factory(opts) return {dtype = opts.dtype or "float32", device = opts.device} end

local function check_opts(cls, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" or lark.is_tensor(opts) then
    error(string.format("%s: the options must be a table, got %s", cls, type(opts)), 3)
  end
  for k in pairs(opts) do
    if not allowed[k] then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      table.sort(names)
      error(string.format("%s: unknown option '%s' (expected %s)", cls, tostring(k), table.concat(names, ", ")), 3)
    end
  end
  return opts
end

local function positive_int(cls, what, v)
  if math.type(v) ~= "integer" or v < 1 then
    error(string.format("%s: %s must be a positive integer, got %s", cls, what, tostring(v)), 3)
  end
  return v
end

-- n or {a, b} as {a, b} of integers >= lo.
local function pair(cls, what, v, lo)
  local p = type(v) == "table" and v or {v, v}
  if #p ~= 2 or math.type(p[1]) ~= "integer" or math.type(p[2]) ~= "integer" or p[1] < lo or p[2] < lo then
    error(string.format("%s: %s must be an integer >= %d or a pair {h, w} of them, got %s", cls, what, lo,
      type(v) == "table" and tuple_str(v) or tostring(v)), 3)
  end
  return {p[1], p[2]}
end

local function check_input(cls, x, dims)
  if not lark.is_tensor(x) then error(string.format("%s: expected a Tensor input, got %s", cls, type(x)), 3) end
  if dims and x:dim() ~= dims then
    error(string.format("%s: expected a %d-D input, got a %d-D one", cls, dims, x:dim()), 3)
  end
end

-- ---- Conv2d ----------------------------------------------------------------------------------------

local Conv2d = Module:extend("Conv2d")
local CONV_OPTS = {stride = true, padding = true, dilation = true, groups = true, bias = true, dtype = true,
                   device = true}

--- nn.Conv2d(in_channels, out_channels, kernel_size [, opts]): 2-D convolution of (N, Cin, H, W)
-- inputs. kernel_size k or {kh, kw}; opts: stride = 1 (s or {sh, sw}), padding = 0 (p, {ph, pw},
-- {top, bottom, left, right}, or "same" for stride 1), dilation = 1, groups = 1, bias = true.
-- Parameters weight (Cout, Cin/groups, kh, kw) and bias (Cout) or nil.
function Conv2d:__init(in_channels, out_channels, kernel_size, opts)
  local name = self.__name
  opts = check_opts(name, opts, CONV_OPTS)
  positive_int(name, "in_channels", in_channels)
  positive_int(name, "out_channels", out_channels)
  local groups = positive_int(name, "groups", opts.groups or 1)
  if in_channels % groups ~= 0 then
    error(string.format("%s: in_channels (%d) must be divisible by groups (%d)", name, in_channels, groups), 3)
  end
  if out_channels % groups ~= 0 then
    error(string.format("%s: out_channels (%d) must be divisible by groups (%d)", name, out_channels, groups), 3)
  end
  self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
  self.kernel_size = pair(name, "kernel_size", kernel_size, 1)
  self.stride = pair(name, "stride", opts.stride or 1, 1)
  self.dilation = pair(name, "dilation", opts.dilation or 1, 1)
  local padding = opts.padding or 0
  if padding == "same" then
    if self.stride[1] ~= 1 or self.stride[2] ~= 1 then
      error(name .. ": padding = 'same' needs stride 1", 3)
    end
    local th = self.dilation[1] * (self.kernel_size[1] - 1)
    local tw = self.dilation[2] * (self.kernel_size[2] - 1)
    padding = (th % 2 == 0 and tw % 2 == 0) and {th // 2, tw // 2} or {th // 2, th - th // 2, tw // 2, tw - tw // 2}
  elseif type(padding) == "table" and #padding == 4 then
    for i = 1, 4 do
      if math.type(padding[i]) ~= "integer" or padding[i] < 0 then
        error(string.format("%s: padding {top, bottom, left, right} must hold integers >= 0, got %s", name,
          tuple_str(padding)), 3)
      end
    end
    padding = {padding[1], padding[2], padding[3], padding[4]}
  else
    padding = pair(name, "padding", padding, 0)
  end
  self.padding = padding
  local kh, kw = self.kernel_size[1], self.kernel_size[2]
  local f = factory(opts)
  self:register_parameter("weight", lark.empty({out_channels, in_channels // groups, kh, kw}, f))
  if opts.bias == false then
    self:register_parameter("bias", nil)
  else
    self:register_parameter("bias", lark.empty({out_channels}, f))
  end
  self:reset_parameters()
end

--- conv:reset_parameters(): PyTorch's default initialisation.
function Conv2d:reset_parameters()
  init.kaiming_uniform_(self.weight, math.sqrt(5))
  if self.bias then
    local fan_in = init.calculate_fan_in_and_fan_out(self.weight)
    local b = fan_in > 0 and 1 / math.sqrt(fan_in) or 0
    init.uniform_(self.bias, -b, b)
  end
end

function Conv2d:forward(x)
  local m = self.weight_mask
  -- a mask from lark.sparse on a depth-wise conv: the masked kernel (on the CPU it skips inactive
  -- taps, on a GPU it runs the dense kernels on weight * mask), on every device; operands split
  -- between devices get its error naming both
  if m and self.groups == self.in_channels and self.groups == self.out_channels and lark.is_tensor(x)
      and x:dtype() == self.weight:dtype() then
    if m:device() ~= self.weight:device() then -- the model moved after its Masking was made
      m = m:to(self.weight:device())
      rawset(self, "weight_mask", m)
    end
    return lark.dwconv2d_masked(x, self.weight, m, self.bias, {stride = self.stride, padding = self.padding,
      dilation = self.dilation, dense_grad = self.weight_mask_dense_grad})
  end
  return F.conv2d(x, self.weight, self.bias,
    {stride = self.stride, padding = self.padding, dilation = self.dilation, groups = self.groups})
end

function Conv2d:extra_repr()
  local s = string.format("%d, %d, kernel_size=%s, stride=%s", self.in_channels, self.out_channels,
    tuple_str(self.kernel_size), tuple_str(self.stride))
  local p = self.padding
  local zero = true
  for i = 1, #p do zero = zero and p[i] == 0 end
  if not zero then s = s .. ", padding=" .. tuple_str(p) end
  if self.dilation[1] ~= 1 or self.dilation[2] ~= 1 then s = s .. ", dilation=" .. tuple_str(self.dilation) end
  if self.groups ~= 1 then s = s .. ", groups=" .. self.groups end
  if self.bias == nil then s = s .. ", bias=false" end
  return s
end

layers.Conv2d = Conv2d

-- ---- DepthwiseConv2d -------------------------------------------------------------------------------

local DepthwiseConv2d = Conv2d:extend("DepthwiseConv2d")
local DW_OPTS = {stride = true, padding = true, dilation = true, bias = true, dtype = true, device = true}

--- nn.DepthwiseConv2d(channels, kernel_size [, opts]): Conv2d(channels, channels, kernel_size)
-- with groups = channels; padding defaults to dilation * (k - 1) / 2 per dim (k // 2 without
-- dilation), which keeps H and W for odd kernels of any shape, e.g. {51, 5} (the fast
-- depth-wise kernels of core/ops/dwconv.c run it). opts as Conv2d's without groups.
function DepthwiseConv2d:__init(channels, kernel_size, opts)
  opts = check_opts("DepthwiseConv2d", opts, DW_OPTS)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.groups = channels
  if o.padding == nil then
    local k = pair("DepthwiseConv2d", "kernel_size", kernel_size, 1)
    local d = pair("DepthwiseConv2d", "dilation", opts.dilation or 1, 1)
    o.padding = {d[1] * (k[1] - 1) // 2, d[2] * (k[2] - 1) // 2}
  end
  Conv2d.__init(self, channels, channels, kernel_size, o)
end

layers.DepthwiseConv2d = DepthwiseConv2d

-- ---- Linear ----------------------------------------------------------------------------------------

local Linear = Module:extend("Linear")

--- nn.Linear(in_features, out_features [, opts]): y = x W^T + b on the last dim. opts: bias = true.
-- Parameters weight (out, in) and bias (out) or nil.
function Linear:__init(in_features, out_features, opts)
  opts = check_opts("Linear", opts, {bias = true, dtype = true, device = true})
  positive_int("Linear", "in_features", in_features)
  positive_int("Linear", "out_features", out_features)
  self.in_features, self.out_features = in_features, out_features
  local f = factory(opts)
  self:register_parameter("weight", lark.empty({out_features, in_features}, f))
  if opts.bias == false then
    self:register_parameter("bias", nil)
  else
    self:register_parameter("bias", lark.empty({out_features}, f))
  end
  self:reset_parameters()
end

Linear.reset_parameters = Conv2d.reset_parameters

function Linear:forward(x)
  check_input("Linear", x)
  if x:dim() == 0 or x:size(x:dim()) ~= self.in_features then
    error(string.format("Linear: expected an input whose last dim is in_features = %d, got shape %s",
      self.in_features, tostring(x:size())), 2)
  end
  return F.linear(x, self.weight, self.bias)
end

function Linear:extra_repr()
  return string.format("in_features=%d, out_features=%d, bias=%s", self.in_features, self.out_features,
    tostring(self.bias ~= nil))
end

layers.Linear = Linear

-- ---- BatchNorm2d -----------------------------------------------------------------------------------

local BatchNorm2d = Module:extend("BatchNorm2d")

--- nn.BatchNorm2d(num_features [, opts]): batch normalisation of (N, C, H, W) per channel.
-- opts: eps = 1e-5, momentum = 0.1 (false for a cumulative average, PyTorch's None), affine =
-- true (parameters weight = 1, bias = 0), track_running_stats = true (buffers running_mean = 0,
-- running_var = 1 and num_batches_tracked, int64). Training uses the batch statistics and updates
-- the running ones; eval uses the running ones.
function BatchNorm2d:__init(num_features, opts)
  opts = check_opts("BatchNorm2d", opts, {eps = true, momentum = true, affine = true, track_running_stats = true,
                                          dtype = true, device = true})
  positive_int("BatchNorm2d", "num_features", num_features)
  self.num_features = num_features
  self.eps = opts.eps or 1e-5
  if opts.momentum == nil then self.momentum = 0.1 else self.momentum = opts.momentum end
  self.affine = opts.affine ~= false
  self.track_running_stats = opts.track_running_stats ~= false
  local f = factory(opts)
  if self.affine then
    self:register_parameter("weight", lark.ones({num_features}, f))
    self:register_parameter("bias", lark.zeros({num_features}, f))
  else
    self:register_parameter("weight", nil)
    self:register_parameter("bias", nil)
  end
  if self.track_running_stats then
    self:register_buffer("running_mean", lark.zeros({num_features}, f))
    self:register_buffer("running_var", lark.ones({num_features}, f))
    self:register_buffer("num_batches_tracked", lark.zeros({}, {dtype = "int64", device = opts.device}))
  else
    self:register_buffer("running_mean", nil)
    self:register_buffer("running_var", nil)
    self:register_buffer("num_batches_tracked", nil)
  end
end

--- bn:reset_running_stats(): running_mean = 0, running_var = 1, num_batches_tracked = 0.
function BatchNorm2d:reset_running_stats()
  if self.track_running_stats then
    local g <close> = lark.no_grad()
    self.running_mean:zero_()
    self.running_var:fill_(1)
    self.num_batches_tracked:zero_()
  end
end

function BatchNorm2d:forward(x)
  check_input("BatchNorm2d", x, 4)
  if x:size(2) ~= self.num_features then
    error(string.format("BatchNorm2d: expected %d channels (dim 2), got input of shape %s", self.num_features,
      tostring(x:size())), 2)
  end
  local factor = self.momentum or 0
  if self.training and self.track_running_stats and self.num_batches_tracked ~= nil then
    local g <close> = lark.no_grad()
    self.num_batches_tracked:add_(1)
    if self.momentum == false then factor = 1 / self.num_batches_tracked:item() end
  end
  local use_batch = self.training or self.running_mean == nil
  local keep = not self.training or self.track_running_stats
  return F.batch_norm(x, keep and self.running_mean or nil, keep and self.running_var or nil, self.weight, self.bias,
    use_batch, factor, self.eps)
end

function BatchNorm2d:extra_repr()
  return string.format("%d, eps=%s, momentum=%s, affine=%s, track_running_stats=%s", self.num_features,
    fmt_num(self.eps), self.momentum == false and "nil" or fmt_num(self.momentum), tostring(self.affine),
    tostring(self.track_running_stats))
end

layers.BatchNorm2d = BatchNorm2d

-- ---- LayerNorm -------------------------------------------------------------------------------------

local LayerNorm = Module:extend("LayerNorm")

--- nn.LayerNorm(C [, opts]): normalises over the last dim (size C), or with
-- opts.channels_first = true over dim 2 of (N, C, H, W) inputs, as ConvNeXt's and SLaK's
-- LayerNorm(data_format = "channels_first"). opts: eps = 1e-5, elementwise_affine = true
-- (parameters weight = 1, bias = 0 of shape (C)). C may be given as {C}.
function LayerNorm:__init(normalized_shape, opts)
  opts = check_opts("LayerNorm", opts, {eps = true, channels_first = true, elementwise_affine = true, dtype = true,
                                        device = true})
  local C = normalized_shape
  if type(C) == "table" then
    if #C ~= 1 then
      error(string.format("LayerNorm: only a normalized_shape of one dim {C} is supported, got %s", tuple_str(C)), 2)
    end
    C = C[1]
  end
  positive_int("LayerNorm", "normalized_shape", C)
  self.normalized_shape = {C}
  self.eps = opts.eps or 1e-5
  self.channels_first = opts.channels_first == true
  self.elementwise_affine = opts.elementwise_affine ~= false
  local f = factory(opts)
  if self.elementwise_affine then
    self:register_parameter("weight", lark.ones({C}, f))
    self:register_parameter("bias", lark.zeros({C}, f))
  else
    self:register_parameter("weight", nil)
    self:register_parameter("bias", nil)
  end
end

function LayerNorm:forward(x)
  check_input("LayerNorm", x)
  local C = self.normalized_shape[1]
  if self.channels_first then
    if x:dim() < 2 or x:size(2) ~= C then
      error(string.format("LayerNorm (channels_first): expected %d channels in dim 2, got input of shape %s", C,
        tostring(x:size())), 2)
    end
    return F.layer_norm_channels_first(x, self.weight, self.bias, self.eps)
  end
  if x:dim() < 1 or x:size(x:dim()) ~= C then
    error(string.format("LayerNorm: expected the last dim to be %d, got input of shape %s", C, tostring(x:size())), 2)
  end
  return lark.layer_norm(x, self.weight, self.bias, self.eps)
end

function LayerNorm:extra_repr()
  local s = string.format("%s, eps=%s, elementwise_affine=%s", tuple_str(self.normalized_shape), fmt_num(self.eps),
    tostring(self.elementwise_affine))
  if self.channels_first then s = s .. ", channels_first=true" end
  return s
end

layers.LayerNorm = LayerNorm

-- ---- activations and identity ----------------------------------------------------------------------

local function simple(name, fn, doc)
  local cls = Module:extend(name)
  cls.forward = function(_, x)
    check_input(name, x)
    return fn(x)
  end
  layers[name] = cls
  return cls
end

--- nn.ReLU(), nn.GELU() (exact, erf form), nn.Sigmoid(), nn.Tanh(): elementwise activations.
simple("ReLU", F.relu)
simple("GELU", F.gelu)
simple("Sigmoid", F.sigmoid)
simple("Tanh", F.tanh)

--- nn.Identity(...): returns its input(s) unchanged; constructor arguments are ignored.
local Identity = Module:extend("Identity")
function Identity:__init() end
function Identity:forward(...) return ... end
layers.Identity = Identity

-- ---- dropout -----------------------------------------------------------------------------------------

local function check_p(name, p)
  if type(p) ~= "number" or p ~= p or p < 0 or p > 1 then
    error(string.format("%s: p must be a probability in [0, 1], got %s", name, tostring(p)), 3)
  end
  return p
end

local Dropout = Module:extend("Dropout")

--- nn.Dropout([p = 0.5]): in training, zeroes each element with probability p and scales the rest
-- by 1/(1-p); the identity in eval mode.
function Dropout:__init(p)
  if p == nil then p = 0.5 end
  self.p = check_p("Dropout", p)
end
function Dropout:forward(x) return F.dropout(x, self.p, self.training) end
function Dropout:extra_repr() return "p=" .. fmt_num(self.p) end
layers.Dropout = Dropout

local DropPath = Module:extend("DropPath")

--- nn.DropPath([p = 0]): stochastic depth (timm's drop_path): in training each sample (dim 1)
-- is zeroed with probability p and kept ones are scaled by 1/(1-p); the identity in eval mode.
function DropPath:__init(p)
  if p == nil then p = 0 end
  self.p = check_p("DropPath", p)
end
function DropPath:forward(x) return F.drop_path(x, self.p, self.training) end
function DropPath:extra_repr() return "p=" .. fmt_num(self.p) end
layers.DropPath = DropPath

-- ---- pooling and flatten ---------------------------------------------------------------------------

local AdaptiveAvgPool2d = Module:extend("AdaptiveAvgPool2d")

--- nn.AdaptiveAvgPool2d(output_size): averages (N, C, H, W) or (C, H, W) down to output_size
-- (n or {oh, ow}) with PyTorch's windows.
function AdaptiveAvgPool2d:__init(output_size)
  if output_size == nil then error("AdaptiveAvgPool2d: output_size is required (n or {oh, ow})", 2) end
  self.output_size = output_size
end
function AdaptiveAvgPool2d:forward(x) return F.adaptive_avg_pool2d(x, self.output_size) end
function AdaptiveAvgPool2d:extra_repr() return "output_size=" .. tuple_str(self.output_size) end
layers.AdaptiveAvgPool2d = AdaptiveAvgPool2d

local MaxPool2d = Module:extend("MaxPool2d")

--- nn.MaxPool2d(kernel_size [, stride = kernel_size [, padding = 0]]): window maxima.
function MaxPool2d:__init(kernel_size, stride, padding)
  self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding or 0
end
function MaxPool2d:forward(x) return F.max_pool2d(x, self.kernel_size, self.stride, self.padding) end
function MaxPool2d:extra_repr()
  return string.format("kernel_size=%s, stride=%s, padding=%s", tuple_str(self.kernel_size), tuple_str(self.stride),
    tuple_str(self.padding))
end
layers.MaxPool2d = MaxPool2d

local AvgPool2d = Module:extend("AvgPool2d")

--- nn.AvgPool2d(kernel_size [, stride = kernel_size [, padding = 0]]): window means (padding
-- counted as zeros).
function AvgPool2d:__init(kernel_size, stride, padding)
  self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding or 0
end
function AvgPool2d:forward(x) return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding) end
AvgPool2d.extra_repr = MaxPool2d.extra_repr
layers.AvgPool2d = AvgPool2d

local Flatten = Module:extend("Flatten")

--- nn.Flatten([start_dim = 2 [, end_dim = -1]]): merges dims start_dim..end_dim (1-based, as
-- everywhere in lark: the default keeps the batch dim 1, PyTorch's start_dim = 1).
function Flatten:__init(start_dim, end_dim)
  self.start_dim, self.end_dim = start_dim or 2, end_dim or -1
  if math.type(self.start_dim) ~= "integer" or math.type(self.end_dim) ~= "integer" then
    error("Flatten: start_dim and end_dim must be integers (1-based dims)", 2)
  end
end
function Flatten:forward(x)
  check_input("Flatten", x)
  return x:flatten(self.start_dim, self.end_dim)
end
function Flatten:extra_repr() return string.format("start_dim=%d, end_dim=%d", self.start_dim, self.end_dim) end
layers.Flatten = Flatten

return layers
