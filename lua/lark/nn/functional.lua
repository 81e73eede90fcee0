--- lark.nn.functional: stateless neural-network ops on tensors.
-- Each function takes tensors and returns a new tensor; autograd and the convolution, norm and
-- loss ops arrive with the autograd issue. Names follow torch.nn.functional.
local lark = require "lark"

local F = {}

--- F.relu(x): max(x, 0) elementwise.
function F.relu(x) return x:relu() end

--- F.sigmoid(x): 1 / (1 + exp(-x)).
function F.sigmoid(x) return x:sigmoid() end

--- F.tanh(x)
function F.tanh(x) return x:tanh() end

--- F.linear(x, weight [, bias]): x @ weight^T + bias, with weight of shape (out, in).
function F.linear(x, weight, bias)
  local y = lark.matmul(x, weight:t())
  if bias then y = y + bias end
  return y
end

--- F.mse_loss(input, target [, opts]): the squared differences, averaged (reduction 'mean', the
-- default), summed ('sum') or kept ('none'); opts = {reduction =} or the reduction string.
function F.mse_loss(input, target, opts)
  local reduction = type(opts) == "table" and opts.reduction or opts or "mean"
  local d = input - target
  if reduction == "mean" then return (d * d):mean() end
  if reduction == "sum" then return (d * d):sum() end
  if reduction == "none" then return d * d end
  error("mse_loss: reduction must be 'mean', 'sum' or 'none', got " .. tostring(reduction), 2)
end

-- ---- convolution, pooling, padding, dropout (conv section: lua/bind_conv.c, core/ops/conv.c,
-- core/ops/pool.c) ---------------------------------------------------------------------------------

--- F.conv2d(input, weight [, bias] [, opts]): 2-D cross-correlation of input (N, Cin, H, W) with
-- weight (Cout, Cin/groups, kh, kw), plus bias (Cout) or nil. opts: stride = s or {sh, sw};
-- padding = p, {ph, pw} or per side {top, bottom, left, right}; dilation = d or {dh, dw};
-- groups = g (dividing Cin and Cout; groups = Cin = Cout is depth-wise). Differentiable in input,
-- weight and bias. Output (N, Cout, Ho, Wo), Ho = (H + top + bottom - dh*(kh-1) - 1) // sh + 1.
function F.conv2d(input, weight, bias, opts)
  if opts == nil and type(bias) == "table" and not lark.is_tensor(bias) then bias, opts = nil, bias end
  return lark.conv2d(input, weight, bias, opts)
end

--- F.avg_pool2d(input, kernel_size [, stride [, padding]]): the mean of each window of input
-- (N, C, H, W) or (C, H, W); sizes are n or {h, w}; stride defaults to the kernel size; padding
-- (at most half the kernel) counts as zeros in the divisor kh*kw (PyTorch's count_include_pad).
function F.avg_pool2d(input, kernel_size, stride, padding)
  return lark.avg_pool2d(input, kernel_size, stride, padding)
end

--- F.max_pool2d(input, kernel_size [, stride [, padding [, return_indices]]]): the maximum of each
-- window (padding never wins; NaN does). The gradient goes to the first maximum of each window.
-- With return_indices, also the 1-based position (ih-1)*W + iw of that maximum in its plane.
function F.max_pool2d(input, kernel_size, stride, padding, return_indices)
  local out, indices = lark.max_pool2d(input, kernel_size, stride, padding)
  if return_indices then return out, indices end
  return out
end

--- F.adaptive_avg_pool2d(input, output_size): averages over PyTorch's adaptive windows so that
-- the output is (…, oh, ow); output_size n or {oh, ow}. Row window i covers
-- [floor((i-1)*H/oh), ceil(i*H/oh)) in 0-based terms.
function F.adaptive_avg_pool2d(input, output_size)
  return lark.adaptive_avg_pool2d(input, output_size)
end

--- F.pad(input, pads [, value]): constant padding as torch.nn.functional.pad orders it: pads =
-- {left, right} of the last dim, then {top, bottom} of the one before, and so on; value (default
-- 0) fills the new elements; negative pads crop. F.pad(x, pads, "constant", value) works too.
function F.pad(input, pads, value, value2)
  if type(value) == "string" then
    if value ~= "constant" then
      error(string.format("pad: mode '%s' is not supported (only 'constant')", value), 2)
    end
    value = value2
  end
  return lark.pad(input, pads, value)
end

local function check_p(fname, p)
  if type(p) ~= "number" or p ~= p or p < 0 or p > 1 then
    error(string.format("%s: p must be a probability in [0, 1], got %s", fname, tostring(p)), 3)
  end
end

--- F.dropout(input [, p = 0.5 [, training = true [, generator]]]): zeroes each element with
-- probability p and scales the kept ones by 1/(1-p), so the mean is preserved; the identity when
-- not training or p = 0, zeros when p = 1. The mask comes from lark's Philox generator (the
-- default one, or `generator`), so the same seed gives the same mask. Differentiable (the
-- gradient is masked and scaled the same way).
function F.dropout(input, p, training, generator)
  if p == nil then p = 0.5 end
  check_p("dropout", p)
  if not lark.is_tensor(input) then error("dropout: argument 1: expected a Tensor, got " .. type(input), 2) end
  if training == false or p == 0 then return input end
  if p == 1 then return input * 0 end
  local mask = lark.empty(input:size(), {dtype = input:dtype()})
  if generator then mask:bernoulli_(1 - p, generator) else mask:bernoulli_(1 - p) end
  return input * (mask * (1 / (1 - p)))
end

--- F.drop_path(input [, p = 0 [, training = false [, generator]]]): stochastic depth as timm's
-- drop_path with scale_by_keep: one keep decision per sample (along dim 1), kept samples scaled
-- by 1/(1-p), dropped ones zero. The identity when not training or p = 0.
function F.drop_path(input, p, training, generator)
  if p == nil then p = 0 end
  check_p("drop_path", p)
  if not lark.is_tensor(input) then error("drop_path: argument 1: expected a Tensor, got " .. type(input), 2) end
  if not training or p == 0 then return input end
  if p == 1 then return input * 0 end
  local shape = {input:size(1)}
  for i = 2, input:dim() do shape[i] = 1 end
  local mask = lark.empty(shape, {dtype = input:dtype()})
  if generator then mask:bernoulli_(1 - p, generator) else mask:bernoulli_(1 - p) end
  return input * (mask * (1 / (1 - p)))
end

-- ---- end of the conv section ---------------------------------------------------------------------

-- ---- norm, softmax, losses and gelu (core/ops/norm.c, softmax.c, activation.c via lua/bind_nn.c)

local function is_shape_arg(v) return type(v) == "number" or (type(v) == "table" and not lark.is_tensor(v)) end

local function loss_opts(fname, opts)
  if opts == nil then return {} end
  if type(opts) == "string" then return {reduction = opts} end
  if type(opts) ~= "table" or lark.is_tensor(opts) then
    error(string.format("%s: argument 3: expected an options table {reduction =, label_smoothing =}, got %s", fname,
      type(opts)), 3)
  end
  return opts
end

--- F.batch_norm(input, running_mean, running_var [, weight [, bias [, training = false
-- [, momentum = 0.1 [, eps = 1e-5]]]]]): input (N, C, ...) normalised per channel. Training uses
-- the batch statistics (biased variance) and updates running_mean and running_var in place with
-- running = (1 - momentum) * running + momentum * stat, the variance unbiased (either may be nil);
-- eval uses running_mean and running_var. weight, bias (C) may be nil. Gradients for input,
-- weight and bias.
function F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
  return lark.batch_norm(input, running_mean, running_var, weight, bias, training or false, momentum, eps)
end

--- F.layer_norm(input [, normalized_shape], weight, bias [, eps = 1e-5]): input (..., C)
-- normalised over its last dim (mean and biased variance), then scaled by weight (C) and shifted
-- by bias (C) (either may be nil). normalized_shape, as PyTorch takes it, may be given as C or
-- {C}; only the last dim is supported.
function F.layer_norm(input, ...)
  local a = table.pack(...)
  if is_shape_arg(a[1]) then
    local ns = type(a[1]) == "number" and {a[1]} or a[1]
    if not lark.is_tensor(input) then error("layer_norm: argument 1: expected a Tensor, got " .. type(input), 2) end
    local last = input:dim() >= 1 and input:size(input:dim()) or nil
    if #ns ~= 1 or ns[1] ~= last then
      error(string.format("layer_norm: normalized_shape must be {C}, the size of the last dim (%s), got {%s}",
        tostring(last), table.concat(ns, ",")), 2)
    end
    return lark.layer_norm(input, a[2], a[3], a[4])
  end
  return lark.layer_norm(input, a[1], a[2], a[3])
end

--- F.layer_norm_channels_first(input, weight, bias [, eps = 1e-5]): input (N, C, ...) normalised
-- over dim 2 (the channels) at every other position, as ConvNeXt's and SLaK's
-- LayerNorm(data_format = "channels_first"): u = mean over C, s = mean (x - u)^2 over C,
-- y = (x - u) / sqrt(s + eps) * weight[c] + bias[c].
function F.layer_norm_channels_first(input, weight, bias, eps)
  return lark.layer_norm_channels_first(input, weight, bias, eps)
end

--- F.softmax(input, dim): exp(x) / sum exp(x) along dim (1-based, negative from the end),
-- computed stably (shifted by the max).
function F.softmax(input, dim) return lark.softmax(input, dim) end

--- F.log_softmax(input, dim): x - log sum exp(x) along dim, computed stably.
function F.log_softmax(input, dim) return lark.log_softmax(input, dim) end

--- F.cross_entropy(logits, target [, opts]): logits (N, C); target either int64 1-based class
-- indices (N) or class probabilities (N, C) of logits' dtype (soft targets, for mixup).
-- opts = {reduction = 'mean' | 'sum' | 'none', label_smoothing = 0} (or just the reduction
-- string). As PyTorch 1.13: with smoothing e the loss of a row is (1 - e) * nll + e * mean over
-- classes of -log p; 'mean' divides the sum by N. Gradients for logits and soft targets.
function F.cross_entropy(logits, target, opts)
  opts = loss_opts("cross_entropy", opts)
  return lark.cross_entropy(logits, target, opts.reduction, opts.label_smoothing)
end

--- F.nll_loss(log_probs, target [, opts]): -log_probs[n][target[n]] with target int64 1-based
-- class indices (N) and log_probs (N, C); opts = {reduction = 'mean' | 'sum' | 'none'}.
function F.nll_loss(log_probs, target, opts)
  opts = loss_opts("nll_loss", opts)
  return lark.nll_loss(log_probs, target, opts.reduction)
end

--- F.gelu(input): the exact GELU, 0.5 x (1 + erf(x / sqrt 2)).
function F.gelu(input) return lark.gelu(input) end

-- ---- end of the norm, softmax, losses and gelu section ------------------------------------------

return F
