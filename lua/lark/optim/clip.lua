--- lark.optim.clip_grad_norm: gradient clipping by the total norm (torch.nn.utils.clip_grad_norm_).
local core = require "lark.core"
local optimizer = require "lark.optim.optimizer"

-- The gradients (non-nil) of params: a model, a tensor, an array of tensors or of groups.
local function grads_of(params, what)
  local groups = params
  if not (type(params) == "table" and type(params[1]) == "table" and not core.is_tensor(params[1])
          and rawget(params[1], "params") ~= nil) then
    groups = {{params = params}}
  end
  local gs = {}
  for _, g in ipairs(groups) do
    local _, ts = optimizer.named_tensors(g.params, what)
    for _, p in ipairs(ts) do
      local grad = p.grad
      if grad then gs[#gs + 1] = grad end
    end
  end
  return gs
end

--- lark.optim.clip_grad_norm(params, max_norm [, {norm_type = 2, error_if_nonfinite = false}]):
-- the norm of all gradients taken together (norm_type a number > 0, or math.huge / "inf" for the
-- largest absolute value); when it exceeds max_norm, every gradient is scaled in place by
-- max_norm / (norm + 1e-6). Returns the norm before clipping (a number). Parameters without a
-- gradient are ignored.
local function clip_grad_norm(params, max_norm, opts)
  local what = "clip_grad_norm"
  opts = opts or {}
  if type(opts) ~= "table" then error(what .. ": options must be a table, got " .. type(opts), 2) end
  for k in pairs(opts) do
    if k ~= "norm_type" and k ~= "error_if_nonfinite" then
      error(string.format("%s: unknown option '%s' (expected norm_type or error_if_nonfinite)", what, tostring(k)), 2)
    end
  end
  if type(max_norm) ~= "number" then error(what .. ": max_norm must be a number, got " .. type(max_norm), 2) end
  local p = opts.norm_type or 2
  local gs = grads_of(params, what)
  if #gs == 0 then return 0 end
  if opts.error_if_nonfinite then
    local total = core.total_norm(gs, p)
    if total ~= total or total == math.huge then
      error(string.format("%s: the total norm of order %s of the gradients is %s, so they cannot be clipped "
        .. "(set error_if_nonfinite = false to scale them anyway)", what, tostring(p), tostring(total)), 2)
    end
  end
  return core.clip_grad_norm_(gs, max_norm, p)
end

return clip_grad_norm
