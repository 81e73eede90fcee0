--- lark.nn.init: in-place initialisers of parameters, as torch.nn.init.
--
-- Each function fills its tensor without recording gradients and returns it. Arguments follow
-- PyTorch's order (`kaiming_uniform_(w, a, mode, nonlinearity)`), or come as one options table
-- after the tensor (`kaiming_uniform_(w, {a = math.sqrt(5), mode = "fan_out"})`); an options
-- table may also carry `generator` (a lark.Generator) to draw from instead of the global one.
-- Fans are PyTorch's: for a weight (out, in, k...) fan_in = in * prod(k), fan_out = out * prod(k).
local lark = require "lark"

local init = {}

local function check_tensor(fname, t)
  if not lark.is_tensor(t) then error(string.format("%s: argument 1: expected a Tensor, got %s", fname, type(t)), 3) end
end

-- The positional arguments of fname as a table keyed by names, or the options table given.
local function args(names, defaults, ...)
  local first = ...
  local o = {}
  if type(first) == "table" and not lark.is_tensor(first) then
    for i, k in ipairs(names) do
      local v = first[k]
      if v == nil then v = defaults[i] end
      o[k] = v
    end
    o.generator = first.generator
  else
    for i, k in ipairs(names) do
      local v = select(i, ...)
      if v == nil then v = defaults[i] end
      o[k] = v
    end
  end
  return o
end

local function fill_uniform(t, lo, hi, gen)
  if gen then t:uniform_(lo, hi, gen) else t:uniform_(lo, hi) end
  return t
end

local function fill_normal(t, mean, std, gen)
  if gen then t:normal_(mean, std, gen) else t:normal_(mean, std) end
  return t
end

--- init.calculate_gain(nonlinearity [, param]): the recommended gain: 1 for linear, conv* and
-- sigmoid, 5/3 for tanh, sqrt(2) for relu, sqrt(2 / (1 + a^2)) for leaky_relu (a = param,
-- default 0.01), 3/4 for selu.
function init.calculate_gain(nonlinearity, param)
  local linear = {linear = true, conv1d = true, conv2d = true, conv3d = true, conv_transpose1d = true,
                  conv_transpose2d = true, conv_transpose3d = true, sigmoid = true, identity = true}
  if linear[nonlinearity] then return 1 end
  if nonlinearity == "tanh" then return 5 / 3 end
  if nonlinearity == "relu" then return math.sqrt(2) end
  if nonlinearity == "selu" then return 3 / 4 end
  if nonlinearity == "leaky_relu" then
    local a = param == nil and 0.01 or param
    if type(a) ~= "number" then error("calculate_gain: negative_slope must be a number, got " .. type(a), 2) end
    return math.sqrt(2 / (1 + a * a))
  end
  error(string.format("calculate_gain: unsupported nonlinearity '%s' (linear, conv2d, sigmoid, tanh, relu, leaky_relu, selu)",
    tostring(nonlinearity)), 2)
end

--- init.calculate_fan_in_and_fan_out(t): fan_in, fan_out of a weight of at least 2 dims.
function init.calculate_fan_in_and_fan_out(t)
  check_tensor("calculate_fan_in_and_fan_out", t)
  if t:dim() < 2 then
    error(string.format("calculate_fan_in_and_fan_out: needs a tensor of at least 2 dims, got %d", t:dim()), 2)
  end
  local receptive = 1
  for d = 3, t:dim() do receptive = receptive * t:size(d) end
  return t:size(2) * receptive, t:size(1) * receptive
end

local function fan(fname, t, mode)
  if mode ~= "fan_in" and mode ~= "fan_out" then
    error(string.format("%s: mode must be 'fan_in' or 'fan_out', got %s", fname, tostring(mode)), 3)
  end
  if t:dim() < 2 then error(string.format("%s: needs a tensor of at least 2 dims, got %d", fname, t:dim()), 3) end
  local fi, fo = init.calculate_fan_in_and_fan_out(t)
  local f = mode == "fan_in" and fi or fo
  if f == 0 then error(fname .. ": cannot initialise a tensor with a zero-sized dim", 3) end
  return f
end

--- init.uniform_(t [, a = 0 [, b = 1]]): U(a, b).
function init.uniform_(t, ...)
  check_tensor("uniform_", t)
  local o = args({"a", "b"}, {0, 1}, ...)
  local g <close> = lark.no_grad()
  return fill_uniform(t, o.a, o.b, o.generator)
end

--- init.normal_(t [, mean = 0 [, std = 1]]): N(mean, std^2).
function init.normal_(t, ...)
  check_tensor("normal_", t)
  local o = args({"mean", "std"}, {0, 1}, ...)
  local g <close> = lark.no_grad()
  return fill_normal(t, o.mean, o.std, o.generator)
end

--- init.constant_(t, val): every element val.
function init.constant_(t, val)
  check_tensor("constant_", t)
  if type(val) ~= "number" then error("constant_: argument 2: expected a number, got " .. type(val), 2) end
  local g <close> = lark.no_grad()
  return t:fill_(val)
end

--- init.zeros_(t), init.ones_(t)
function init.zeros_(t)
  check_tensor("zeros_", t)
  local g <close> = lark.no_grad()
  return t:fill_(0)
end
function init.ones_(t)
  check_tensor("ones_", t)
  local g <close> = lark.no_grad()
  return t:fill_(1)
end

--- init.xavier_uniform_(t [, gain = 1]): U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)).
function init.xavier_uniform_(t, ...)
  check_tensor("xavier_uniform_", t)
  local o = args({"gain"}, {1}, ...)
  if t:dim() < 2 then error(string.format("xavier_uniform_: needs a tensor of at least 2 dims, got %d", t:dim()), 2) end
  local fi, fo = init.calculate_fan_in_and_fan_out(t)
  local b = o.gain * math.sqrt(6 / (fi + fo))
  local g <close> = lark.no_grad()
  return fill_uniform(t, -b, b, o.generator)
end

--- init.xavier_normal_(t [, gain = 1]): N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)).
function init.xavier_normal_(t, ...)
  check_tensor("xavier_normal_", t)
  local o = args({"gain"}, {1}, ...)
  if t:dim() < 2 then error(string.format("xavier_normal_: needs a tensor of at least 2 dims, got %d", t:dim()), 2) end
  local fi, fo = init.calculate_fan_in_and_fan_out(t)
  local g <close> = lark.no_grad()
  return fill_normal(t, 0, o.gain * math.sqrt(2 / (fi + fo)), o.generator)
end

--- init.kaiming_uniform_(t [, a = 0 [, mode = 'fan_in' [, nonlinearity = 'leaky_relu']]]):
-- U(-b, b), b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a). With a = sqrt(5)
-- this is PyTorch's default for Conv2d and Linear weights: b = 1 / sqrt(fan_in).
function init.kaiming_uniform_(t, ...)
  check_tensor("kaiming_uniform_", t)
  local o = args({"a", "mode", "nonlinearity"}, {0, "fan_in", "leaky_relu"}, ...)
  local f = fan("kaiming_uniform_", t, o.mode)
  local b = init.calculate_gain(o.nonlinearity, o.a) * math.sqrt(3 / f)
  local g <close> = lark.no_grad()
  return fill_uniform(t, -b, b, o.generator)
end

--- init.kaiming_normal_(t [, a = 0 [, mode = 'fan_in' [, nonlinearity = 'leaky_relu']]]):
-- N(0, std^2), std = gain / sqrt(fan).
function init.kaiming_normal_(t, ...)
  check_tensor("kaiming_normal_", t)
  local o = args({"a", "mode", "nonlinearity"}, {0, "fan_in", "leaky_relu"}, ...)
  local f = fan("kaiming_normal_", t, o.mode)
  local std = init.calculate_gain(o.nonlinearity, o.a) / math.sqrt(f)
  local g <close> = lark.no_grad()
  return fill_normal(t, 0, std, o.generator)
end

-- ---- truncated normal ----------------------------------------------------------------------------

-- The standard normal CDF (W. J. Cody's erfc rational approximation via Numerical Recipes'
-- Chebyshev fit, relative error below 1.2e-7): enough to pick a sampling method and map bounds.
local function norm_cdf(x)
  local z = math.abs(x) / math.sqrt(2)
  local t = 1 / (1 + 0.5 * z)
  local r = t * math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 +
    t * 0.17087277)))))))))
  -- r = erfc(z)
  return x >= 0 and 1 - 0.5 * r or 0.5 * r
end

-- The inverse standard normal CDF (P. J. Acklam's rational approximation, relative error 1.15e-9).
local function norm_ppf(p)
  local a = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
             -3.066479806614716e+01, 2.506628277459239e+00}
  local b = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
             -1.328068155288572e+01}
  local c = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
             4.374664141464968e+00, 2.938163982698783e+00}
  local d = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00}
  local lo = 0.02425
  if p <= 0 then return -math.huge end
  if p >= 1 then return math.huge end
  if p < lo then
    local q = math.sqrt(-2 * math.log(p))
    return (((((c[1] * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) * q + c[6]) /
      ((((d[1] * q + d[2]) * q + d[3]) * q + d[4]) * q + 1)
  elseif p <= 1 - lo then
    local q = p - 0.5
    local r = q * q
    return (((((a[1] * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * r + a[6]) * q /
      (((((b[1] * r + b[2]) * r + b[3]) * r + b[4]) * r + b[5]) * r + 1)
  else
    local q = math.sqrt(-2 * math.log(1 - p))
    return -(((((c[1] * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) * q + c[6]) /
      ((((d[1] * q + d[2]) * q + d[3]) * q + d[4]) * q + 1)
  end
end
init._norm_cdf, init._norm_ppf = norm_cdf, norm_ppf

--- init.trunc_normal_(t [, mean = 0 [, std = 1 [, a = -2 [, b = 2]]]]): N(mean, std^2) restricted
-- to [a, b] (a and b are absolute bounds, as in PyTorch and timm). When [a, b] holds most of the
-- mass, out-of-range values are redrawn until none is left; otherwise every value is drawn by
-- inverting the normal CDF between the bounds.
function init.trunc_normal_(t, ...)
  check_tensor("trunc_normal_", t)
  local o = args({"mean", "std", "a", "b"}, {0, 1, -2, 2}, ...)
  if not (o.std > 0) then error("trunc_normal_: std must be positive, got " .. tostring(o.std), 2) end
  if not (o.a < o.b) then
    error(string.format("trunc_normal_: need a < b, got a = %s, b = %s", tostring(o.a), tostring(o.b)), 2)
  end
  if not t:is_floating_point() then error("trunc_normal_: needs a float tensor, got " .. t:dtype(), 2) end
  local g <close> = lark.no_grad()
  local lo, hi = norm_cdf((o.a - o.mean) / o.std), norm_cdf((o.b - o.mean) / o.std)
  if hi - lo > 0.3 then
    fill_normal(t, o.mean, o.std, o.generator)
    for _ = 1, 200 do
      local bad = t:lt(o.a):logical_or(t:gt(o.b))
      if not bad:any():item() then return t end
      local fresh = fill_normal(lark.empty_like(t), o.mean, o.std, o.generator)
      t:copy_(lark.where(bad, fresh, t))
    end
    -- 200 rounds at >= 30% acceptance leave nothing in practice; clamp as a last resort
    return t:clamp_(o.a, o.b)
  end
  local n = t:numel()
  local u = lark.empty({n}, {dtype = "float64"})
  fill_uniform(u, 0, 1, o.generator)
  local vals = u:table()
  for i = 1, n do
    local x = o.mean + o.std * norm_ppf(lo + (hi - lo) * vals[i])
    vals[i] = math.min(math.max(x, o.a), o.b)
  end
  t:copy_(lark.tensor(vals, {dtype = "float64"}):view(t:size()))
  return t
end

return init
