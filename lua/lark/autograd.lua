--- lark.autograd: gradients of Lua code.
--
-- Every differentiable op records itself when one of its inputs requires grad; `t:backward()`
-- accumulates gradients into the `.grad` of the leaves, and `lark.autograd.grad` returns them
-- instead. Grad mode can be switched off for a scope (`local g <close> = lark.no_grad()`) or for a
-- function (`f = lark.no_grad(f)`).
local core = require "lark.core"

local autograd = {}

-- A scope guard: its __close puts grad mode back as it was when the guard was made.
local Guard = {}
Guard.__index = Guard
Guard.__name = "lark.GradMode"
Guard.__close = function(g) core.set_grad_enabled(g.previous) end
Guard.__tostring = function(g) return "lark.GradMode(" .. tostring(g.mode) .. ")" end

local function mode(enabled)
  return function(fn)
    if fn == nil then
      local g = setmetatable({previous = core.is_grad_enabled(), mode = enabled}, Guard)
      core.set_grad_enabled(enabled)
      return g
    end
    if type(fn) ~= "function" then
      error(string.format("%s: expected nothing (for a <close> scope) or a function to wrap, got %s",
        enabled and "enable_grad" or "no_grad", type(fn)), 2)
    end
    return function(...)
      local previous = core.is_grad_enabled()
      core.set_grad_enabled(enabled)
      local results = table.pack(pcall(fn, ...))
      core.set_grad_enabled(previous)
      if not results[1] then error(results[2], 0) end
      return table.unpack(results, 2, results.n)
    end
  end
end

--- lark.no_grad([fn]): with no argument, a guard for `local g <close> = lark.no_grad()` that turns
-- grad mode off until the scope ends; with a function, that function wrapped to run without grad.
autograd.no_grad = mode(false)
--- lark.enable_grad([fn]): the same, turning grad mode on.
autograd.enable_grad = mode(true)

--- lark.autograd.grad(outputs, inputs [, {grad_outputs =, retain_graph =}]): the gradients of
-- outputs (a tensor, or a list summed) with respect to each tensor of inputs (a tensor or a list),
-- without touching any .grad. Returns a list (or one tensor when inputs was one tensor); an input
-- that outputs does not depend on gets nil.
function autograd.grad(outputs, inputs, opts)
  opts = opts or {}
  local single = core.is_tensor(inputs)
  if single then inputs = {inputs} end
  if core.is_tensor(outputs) then outputs = {outputs} end
  if type(outputs) ~= "table" or #outputs == 0 then error("autograd.grad: expected a tensor or a list of outputs", 2) end
  local result = {}
  for k = 1, #outputs do
    local go = opts.grad_outputs and opts.grad_outputs[k] or nil
    local retain = opts.retain_graph or k < #outputs
    local grads = core._autograd_grad(outputs[k], inputs, go, retain)
    for i = 1, #inputs do
      if grads[i] then result[i] = result[i] and result[i] + grads[i] or grads[i] end
    end
  end
  if single then return result[1] end
  return result
end

--- lark.autograd.gradcheck(fn, inputs [, {eps = 1e-6, atol = 1e-7, rtol = 1e-5}]): compares the
-- gradients autograd gives for fn(table.unpack(inputs)) with central finite differences, in
-- float64. inputs are tensors (those requiring grad are checked) or other values passed through.
-- The output is projected on a fixed random direction, so one backward checks the whole Jacobian
-- against that direction. Returns true, or false and a message naming the worst element.
function autograd.gradcheck(fn, inputs, opts)
  opts = opts or {}
  local eps, atol, rtol = opts.eps or 1e-6, opts.atol or 1e-7, opts.rtol or 1e-5
  local checked = {}
  for i, x in ipairs(inputs) do
    if core.is_tensor(x) and x.requires_grad then
      if x:dtype() ~= "float64" then
        error(string.format("gradcheck: input %d is %s; gradcheck needs float64 inputs", i, x:dtype()), 2)
      end
      checked[#checked + 1] = i
    end
  end
  if #checked == 0 then error("gradcheck: no input requires grad", 2) end
  local out = fn(table.unpack(inputs))
  if not core.is_tensor(out) then error("gradcheck: fn must return a tensor", 2) end
  -- a fixed direction v, so that the check does not depend on lark's random state
  local n = out:numel()
  local vt = {}
  for i = 1, n do vt[i] = math.sin(i * 12.9898) * 0.5 + 0.75 end
  local v = core.tensor(vt, {dtype = "float64"}):view(out:size())
  local function project(o) return (o:double() * v):sum() end
  local grads = autograd.grad(project(out), (function()
    local l = {}
    for k, i in ipairs(checked) do l[k] = inputs[i] end
    return l
  end)())
  local previous = core.is_grad_enabled()
  core.set_grad_enabled(false)
  local ok, msg = true, nil
  for k, i in ipairs(checked) do
    local x = inputs[i]
    local flat = x:view(-1)
    local analytic = grads[k] and grads[k]:contiguous():view(-1) or core.zeros(x:numel(), {dtype = "float64"})
    for e = 1, x:numel() do
      local orig = flat[e]
      flat[e] = orig + eps
      local fp = project(fn(table.unpack(inputs))):item()
      flat[e] = orig - eps
      local fm = project(fn(table.unpack(inputs))):item()
      flat[e] = orig
      local numeric = (fp - fm) / (2 * eps)
      local a = analytic[e]
      if not (math.abs(a - numeric) <= atol + rtol * math.abs(numeric)) then
        ok = false
        msg = string.format("gradcheck: input %d, element %d: autograd gives %.10g, finite differences %.10g", i, e, a,
          numeric)
        break
      end
    end
    if not ok then break end
  end
  core.set_grad_enabled(previous)
  return ok, msg
end

return autograd
