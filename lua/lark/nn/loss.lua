--- lark.nn losses: modules over lark.nn.functional's losses, as torch.nn's. Calling one,
-- `crit(input, target)`, returns the loss tensor (0-d for the 'mean' and 'sum' reductions).
local lark = require "lark"
local F = require "lark.nn.functional"
local Module = require("lark.nn.module").Module

local loss = {}

local REDUCTIONS = {mean = true, sum = true, none = true}

local function reduction_of(name, opts, allowed)
  if opts == nil then opts = {} end
  if type(opts) == "string" then opts = {reduction = opts} end
  if type(opts) ~= "table" or lark.is_tensor(opts) then
    error(string.format("%s: the options must be a table, got %s", name, type(opts)), 3)
  end
  for k in pairs(opts) do
    if not allowed[k] then error(string.format("%s: unknown option '%s'", name, tostring(k)), 3) end
  end
  local r = opts.reduction or "mean"
  if not REDUCTIONS[r] then
    error(string.format("%s: reduction must be 'mean', 'sum' or 'none', got %s", name, tostring(r)), 3)
  end
  return opts, r
end

local CrossEntropyLoss = Module:extend("CrossEntropyLoss")

--- nn.CrossEntropyLoss([opts]): log-softmax over the classes then the negative log-likelihood.
-- crit(logits (N, C), target): target int64 class indices (N), 1-based, or class probabilities
-- (N, C) (soft targets, e.g. from mixup). opts: reduction = 'mean' | 'sum' | 'none',
-- label_smoothing = 0 (PyTorch 1.13's definition).
function CrossEntropyLoss:__init(opts)
  local o, r = reduction_of("CrossEntropyLoss", opts, {reduction = true, label_smoothing = true})
  self.reduction = r
  self.label_smoothing = o.label_smoothing or 0
  if type(self.label_smoothing) ~= "number" or self.label_smoothing < 0 or self.label_smoothing > 1 then
    error("CrossEntropyLoss: label_smoothing must be in [0, 1], got " .. tostring(self.label_smoothing), 2)
  end
end

function CrossEntropyLoss:forward(input, target)
  return F.cross_entropy(input, target, {reduction = self.reduction, label_smoothing = self.label_smoothing})
end

function CrossEntropyLoss:extra_repr()
  local parts = {}
  if self.reduction ~= "mean" then parts[#parts + 1] = "reduction='" .. self.reduction .. "'" end
  if self.label_smoothing ~= 0 then parts[#parts + 1] = string.format("label_smoothing=%g", self.label_smoothing) end
  return table.concat(parts, ", ")
end

loss.CrossEntropyLoss = CrossEntropyLoss

local MSELoss = Module:extend("MSELoss")

--- nn.MSELoss([opts]): crit(input, target) = the squared differences, averaged (reduction
-- 'mean'), summed ('sum') or kept ('none').
function MSELoss:__init(opts)
  local _, r = reduction_of("MSELoss", opts, {reduction = true})
  self.reduction = r
end

function MSELoss:forward(input, target)
  if not lark.is_tensor(input) or not lark.is_tensor(target) then
    error("MSELoss: expected two tensors (input, target)", 2)
  end
  if input:size() ~= target:size() then
    error(string.format("MSELoss: input and target must have the same shape, got %s and %s", tostring(input:size()),
      tostring(target:size())), 2)
  end
  return F.mse_loss(input, target, self.reduction)
end

function MSELoss:extra_repr() return self.reduction ~= "mean" and ("reduction='" .. self.reduction .. "'") or "" end

loss.MSELoss = MSELoss

return loss
