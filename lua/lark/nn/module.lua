--- lark.nn.Module: the base class of every layer and model, as torch.nn.Module.
--
-- Classes are plain metatables. `nn.Module:extend("Name")` returns a new class (and its parent);
-- `__init(self, ...)` is the constructor and `forward(self, ...)` the computation; calling an
-- instance calls `forward`:
--
--   local Block = nn.Module:extend("Block")
--   function Block:__init(dim)
--     self.conv = nn.Conv2d(dim, dim, 3, {padding = 1})   -- a module assigned to a field is a child
--     self:register_parameter("gamma", lark.ones(dim))    -- tensors are registered explicitly
--     self:register_buffer("step", lark.zeros({}, {dtype = "int64"}))
--   end
--   function Block:forward(x) return x + self.conv(x) * self.gamma:view(1, -1, 1, 1) end
--   local b = Block(64)
--
-- Parameters, buffers and children live in ordinary fields (`self.weight`, `self.conv`), so reading
-- and replacing them is plain Lua; the module keeps their names in registration order, and that
-- order gives the dotted names of named_parameters() and state_dict(), as in PyTorch: a module's
-- own parameters first, then each child's, recursively. Names follow PyTorch's, so a state dict
-- here has the keys the same model has in PyTorch.
--
-- Iteration: the `named_*` methods return iterators (`for name, p in m:named_parameters() do`);
-- parameters(), buffers(), children() and modules() return arrays.
--
-- Errors raised in a child's forward reach the caller prefixed once with the child's dotted path
-- from the outermost module called, e.g. `stages.2.blocks.3.conv: conv2d: ...`.
local lark = require "lark"

local nn_module = {}

-- ---- classes ---------------------------------------------------------------------------------------

local classes = setmetatable({}, {__mode = "k"}) -- every module class, to tell instances apart

--- nn.is_module(x): whether x is an instance of a module class.
local function is_module(x)
  if type(x) ~= "table" then return false end
  local mt = getmetatable(x)
  return mt ~= nil and classes[mt] == true
end
nn_module.is_module = is_module

--- nn.is_instance(m, cls): whether module m is an instance of class cls or of a class derived from
-- it (walks the chain of classes made by extend).
function nn_module.is_instance(m, cls)
  local c = getmetatable(m)
  while c do
    if c == cls then return true end
    local mt = getmetatable(c)
    c = mt and rawget(mt, "__index")
  end
  return false
end

local Module = {}
Module.__name = "Module"
Module.__index = Module
classes[Module] = true

-- Metamethods are looked up raw in the metatable, so each class carries its own copies.
local METAMETHODS = {"__newindex", "__call", "__tostring", "__len", "__pairs", "__close"}

local function init_state(obj)
  if rawget(obj, "_param_names") then return end -- a subclass __init calling its parent's
  rawset(obj, "_param_names", {})
  rawset(obj, "_buffer_names", {})
  rawset(obj, "_module_names", {})
  rawset(obj, "_non_persistent", {})
  rawset(obj, "_kind", {}) -- name -> "parameter" | "buffer" | "module"
  rawset(obj, "training", true)
end

local function construct(cls, ...)
  local obj = setmetatable({}, cls)
  init_state(obj)
  cls.__init(obj, ...)
  return obj
end

local function class_tostring(cls) return "lark.nn." .. rawget(cls, "__name") .. " (class)" end

--- Module:extend(name): a new module class deriving from this one; returns the class and its
-- parent. Define `__init` (the constructor; registries are ready before it runs, so calling the
-- parent's `__init` is optional for Module itself) and `forward`; `extra_repr` adds the
-- arguments shown by tostring. Instantiate by calling the class: `Name(...)`.
function Module:extend(name)
  if type(name) ~= "string" or name == "" then
    error("Module:extend: expected a class name (a non-empty string), got " .. tostring(name), 2)
  end
  if not classes[self] then error("Module:extend: call it on a class, as nn.Module:extend(\"" .. name .. "\")", 2) end
  local parent = self
  local cls = {}
  for _, k in ipairs(METAMETHODS) do cls[k] = rawget(parent, k) end
  local pindex = rawget(parent, "__index")
  cls.__index = pindex == parent and cls or pindex
  cls.__name = name
  classes[cls] = true
  setmetatable(cls, {__index = parent, __call = construct, __tostring = class_tostring})
  return cls, parent
end

setmetatable(Module, {__call = construct, __tostring = class_tostring})

--- Module:__init(): the base constructor (registries and `training = true`).
function Module:__init() init_state(self) end

--- m:forward(...): the computation; subclasses define it.
function Module:forward()
  error(self.__name .. ": forward is not implemented (define " .. self.__name .. ":forward)", 2)
end

-- ---- registration ------------------------------------------------------------------------------

local function check_name(self, fname, name, kind)
  if type(name) ~= "string" then
    error(string.format("%s: the name must be a string, got %s", fname, type(name)), 3)
  end
  if name == "" then error(fname .. ": the name must not be empty", 3) end
  if name:find(".", 1, true) then
    error(string.format("%s: the name must not contain \".\", got \"%s\"", fname, name), 3)
  end
  local known = self._kind[name]
  if known and known ~= kind then
    error(string.format("%s: \"%s\" is already registered as a %s of this %s", fname, name, known, self.__name), 3)
  end
  if not known and (rawget(self, name) ~= nil or getmetatable(self)[name] ~= nil) then
    error(string.format("%s: \"%s\" is already an attribute or method of %s", fname, name, self.__name), 3)
  end
  if name:sub(1, 2) == "__" then
    error(string.format("%s: names starting with \"__\" are reserved, got \"%s\"", fname, name), 3)
  end
end

local function append_name(list, name)
  for _, n in ipairs(list) do
    if n == name then return end
  end
  list[#list + 1] = name
end

--- m:register_parameter(name, t [, opts]): registers tensor t (a float leaf, or nil for an absent
-- optional parameter such as `bias = false`) as a parameter stored in `m[name]`. It is made to
-- require grad unless opts.requires_grad == false. Returns t.
function Module:register_parameter(name, t, opts)
  check_name(self, "register_parameter", name, "parameter")
  if t ~= nil then
    if not lark.is_tensor(t) then
      error(string.format("register_parameter: \"%s\": expected a tensor or nil, got %s", name, type(t)), 2)
    end
    if not t:is_floating_point() then
      error(string.format("register_parameter: \"%s\": parameters must be float32 or float64, got %s", name,
        t:dtype()), 2)
    end
    if not t.is_leaf then
      error(string.format("register_parameter: \"%s\": the tensor is the result of %s; register t:detach()", name,
        t.grad_fn), 2)
    end
    local rg = not (type(opts) == "table" and opts.requires_grad == false)
    if t.requires_grad ~= rg then t.requires_grad = rg end
  end
  self._kind[name] = "parameter"
  append_name(self._param_names, name)
  rawset(self, name, t)
  return t
end

--- m:register_buffer(name, t [, opts]): registers tensor t (or nil) as a buffer stored in
-- `m[name]`: state that is not trained (running statistics, counters). opts.persistent = false
-- keeps it out of state_dict(). Returns t.
function Module:register_buffer(name, t, opts)
  check_name(self, "register_buffer", name, "buffer")
  if t ~= nil and not lark.is_tensor(t) then
    error(string.format("register_buffer: \"%s\": expected a tensor or nil, got %s", name, type(t)), 2)
  end
  self._kind[name] = "buffer"
  append_name(self._buffer_names, name)
  self._non_persistent[name] = (type(opts) == "table" and opts.persistent == false) or nil
  rawset(self, name, t)
  return t
end

--- m:add_module(name, child): registers child (a module, or nil) as `m[name]`. Assigning a
-- module to a new field (`self.conv = nn.Conv2d(...)`) does the same. Returns child.
function Module:add_module(name, child)
  check_name(self, "add_module", name, "module")
  if child ~= nil and not is_module(child) then
    error(string.format("add_module: \"%s\": expected a module or nil, got %s", name, type(child)), 2)
  end
  self._kind[name] = "module"
  append_name(self._module_names, name)
  rawset(self, name, child)
  return child
end
Module.register_module = Module.add_module

-- A module assigned to a new field becomes a child, as in PyTorch's __setattr__.
function Module.__newindex(self, k, v)
  if type(k) == "string" and is_module(v) then
    local kind = self._kind[k]
    if kind and kind ~= "module" then
      error(string.format("cannot assign a module to \"%s\": it is registered as a %s", k, kind), 2)
    end
    if not kind and getmetatable(self)[k] ~= nil then
      error(string.format("cannot assign a module to \"%s\": it is a method of %s", k, self.__name), 2)
    end
    self._kind[k] = "module"
    append_name(self._module_names, k)
  end
  rawset(self, k, v)
end

-- ---- iteration ---------------------------------------------------------------------------------

local function own(self, list, kind)
  local out = {}
  for _, name in ipairs(list) do
    local v = rawget(self, name)
    if v ~= nil then
      local ok = kind == "module" and is_module(v) or kind ~= "module" and lark.is_tensor(v)
      if not ok then
        error(string.format("%s: the %s \"%s\" holds a %s", self.__name, kind, name, type(v)), 3)
      end
      out[#out + 1] = {name, v}
    end
  end
  return out
end

-- All (prefix, module) pairs, pre-order from self; each module once unless keep_duplicates.
local function walk_modules(self, prefix, keep_duplicates)
  local out, seen = {}, {}
  local function rec(m, p)
    if not keep_duplicates then
      if seen[m] then return end
      seen[m] = true
    end
    out[#out + 1] = {p, m}
    for _, c in ipairs(own(m, m._module_names, "module")) do rec(c[2], p == "" and c[1] or (p .. "." .. c[1])) end
  end
  rec(self, prefix or "")
  return out
end

local function list_iter(list)
  local i = 0
  return function()
    i = i + 1
    local e = list[i]
    if e then return e[1], e[2] end
  end
end

local function opts_of(opts)
  if opts == nil then return {} end
  if type(opts) == "string" then return {prefix = opts} end
  return opts
end

-- (name, tensor) pairs of parameters or buffers across the tree, each tensor once.
local function named_members(self, which, opts)
  opts = opts_of(opts)
  local prefix, recurse = opts.prefix or "", opts.recurse ~= false
  local mods = recurse and walk_modules(self, prefix) or {{prefix, self}}
  local out, seen = {}, {}
  for _, pm in ipairs(mods) do
    local p, m = pm[1], pm[2]
    for _, e in ipairs(own(m, m[which], which == "_param_names" and "parameter" or "buffer")) do
      local t = e[2]
      if opts.remove_duplicate == false or not seen[t] then
        seen[t] = true
        out[#out + 1] = {p == "" and e[1] or (p .. "." .. e[1]), t}
      end
    end
  end
  return out
end

--- m:named_parameters([opts]): an iterator of (dotted name, tensor) over every parameter, each
-- shared tensor once, in registration order (own parameters, then each child's recursively).
-- opts: prefix (string), recurse (default true), remove_duplicate (default true); a string is the
-- prefix.
function Module:named_parameters(opts) return list_iter(named_members(self, "_param_names", opts)) end

--- m:parameters([opts]): the parameters as an array, in named_parameters() order.
function Module:parameters(opts)
  local out = {}
  for i, e in ipairs(named_members(self, "_param_names", opts)) do out[i] = e[2] end
  return out
end

--- m:named_buffers([opts]): an iterator of (dotted name, tensor) over every buffer (persistent or
-- not); the options of named_parameters.
function Module:named_buffers(opts) return list_iter(named_members(self, "_buffer_names", opts)) end

--- m:buffers([opts]): the buffers as an array.
function Module:buffers(opts)
  local out = {}
  for i, e in ipairs(named_members(self, "_buffer_names", opts)) do out[i] = e[2] end
  return out
end

--- m:named_children(): an iterator of (name, module) over the direct children, in order.
function Module:named_children()
  local out, seen = {}, {}
  for _, e in ipairs(own(self, self._module_names, "module")) do
    if not seen[e[2]] then
      seen[e[2]] = true
      out[#out + 1] = e
    end
  end
  return list_iter(out)
end

--- m:children(): the direct children as an array.
function Module:children()
  local out = {}
  for _, c in self:named_children() do out[#out + 1] = c end
  return out
end

--- m:named_modules([opts]): an iterator of (dotted name, module) over the tree, pre-order, m
-- itself first with the name "" (or opts.prefix); each module once.
function Module:named_modules(opts)
  opts = opts_of(opts)
  return list_iter(walk_modules(self, opts.prefix or "", opts.remove_duplicate == false))
end

--- m:modules(): every module of the tree as an array, m first.
function Module:modules()
  local out = {}
  for i, e in ipairs(walk_modules(self, "")) do out[i] = e[2] end
  return out
end

--- m:apply(fn): calls fn(module) on every child (recursively) and then on m; returns m.
function Module:apply(fn)
  for _, c in ipairs(self:children()) do c:apply(fn) end
  fn(self)
  return self
end

--- m:num_parameters([opts]): the number of parameter elements (shared tensors counted once);
-- opts.trainable = true counts only those that require grad.
function Module:num_parameters(opts)
  local n = 0
  for _, p in ipairs(self:parameters()) do
    if not (opts and opts.trainable) or p.requires_grad then n = n + p:numel() end
  end
  return n
end

-- ---- modes and gradients -------------------------------------------------------------------------

--- m:train([mode = true]): sets `training` on m and every descendant (Dropout and BatchNorm read
-- it); returns m.
function Module:train(mode)
  if mode == nil then mode = true end
  if type(mode) ~= "boolean" then error("train: expected a boolean mode, got " .. type(mode), 2) end
  for _, m in ipairs(self:modules()) do rawset(m, "training", mode) end
  return self
end

--- m:eval(): m:train(false).
function Module:eval() return self:train(false) end

--- m:requires_grad_([on = true]): sets requires_grad on every parameter (freezing when false);
-- returns m.
function Module:requires_grad_(on)
  if on == nil then on = true end
  for _, p in ipairs(self:parameters()) do p.requires_grad = on end
  return self
end

--- m:zero_grad([opts]): drops every parameter's .grad (sets it to nil); with
-- opts.set_to_none = false zeroes the existing gradients in place instead.
function Module:zero_grad(opts)
  local to_none = not (type(opts) == "table" and opts.set_to_none == false)
  for _, p in ipairs(self:parameters()) do
    if to_none then
      p.grad = nil
    else
      local g = p.grad
      if g then g:zero_() end
    end
  end
  return self
end

-- ---- state dict ----------------------------------------------------------------------------------

-- State dicts are plain tables name -> tensor; this metatable makes pairs() follow the order of
-- the model (then any keys added later, sorted).
local StateDictMT = {__name = "lark.StateDict"}
local sd_order = setmetatable({}, {__mode = "k"})

StateDictMT.__pairs = function(sd)
  local keys, seen = {}, {}
  for _, k in ipairs(sd_order[sd] or {}) do
    if rawget(sd, k) ~= nil then
      keys[#keys + 1] = k
      seen[k] = true
    end
  end
  local extra = {}
  for k in next, sd do
    if not seen[k] then extra[#extra + 1] = k end
  end
  table.sort(extra, function(a, b) return tostring(a) < tostring(b) end)
  table.move(extra, 1, #extra, #keys + 1, keys)
  local i = 0
  return function()
    i = i + 1
    local k = keys[i]
    if k ~= nil then return k, rawget(sd, k) end
  end, sd, nil
end

--- m:state_dict([opts]): returns sd, keys: sd maps each dotted name to its tensor (parameters and
-- persistent buffers, PyTorch's keys and order: per module its parameters, then its buffers, then
-- its children), keys lists the names in that order, and pairs(sd) follows it too. The tensors
-- are detached views sharing the model's storage (opts.keep_vars = true gives the parameters
-- themselves); opts.prefix prefixes every key.
function Module:state_dict(opts)
  opts = opts_of(opts)
  local sd, keys = setmetatable({}, StateDictMT), {}
  local function rec(m, p)
    for _, e in ipairs(own(m, m._param_names, "parameter")) do
      keys[#keys + 1] = p .. e[1]
      sd[p .. e[1]] = opts.keep_vars and e[2] or e[2]:detach()
    end
    for _, e in ipairs(own(m, m._buffer_names, "buffer")) do
      if not m._non_persistent[e[1]] then
        keys[#keys + 1] = p .. e[1]
        sd[p .. e[1]] = opts.keep_vars and e[2] or e[2]:detach()
      end
    end
    for _, c in ipairs(own(m, m._module_names, "module")) do rec(c[2], p .. c[1] .. ".") end
  end
  rec(self, opts.prefix or "")
  sd_order[sd] = keys
  return sd, keys
end

--- nn.state_dict_keys(sd): the keys of a state dict in its order (pairs() order).
function nn_module.state_dict_keys(sd)
  local keys = {}
  for k in pairs(sd) do keys[#keys + 1] = k end
  return keys
end

local function shape_str(t)
  local s = t:size()
  local parts = {}
  for i = 1, #s do parts[i] = tostring(s[i]) end
  return "[" .. table.concat(parts, ", ") .. "]"
end

local function quoted(list)
  local q = {}
  for i, k in ipairs(list) do q[i] = "\"" .. tostring(k) .. "\"" end
  return table.concat(q, ", ")
end

--- m:load_state_dict(sd [, opts]): copies every tensor of sd into the parameter or buffer of the
-- same name, in place and without recording gradients (dtype and device are converted). Keys
-- of the model missing from sd and keys of sd the model lacks are errors unless
-- opts.strict == false; a shape that differs or a value that is not a tensor is always an error.
-- All problems are listed in one error, and on error nothing is copied. Returns
-- {missing_keys = {...}, unexpected_keys = {...}}.
function Module:load_state_dict(sd, opts)
  if type(sd) ~= "table" or lark.is_tensor(sd) then
    error("load_state_dict: expected a table name -> tensor, got " .. type(sd), 2)
  end
  local strict = not (type(opts) == "table" and opts.strict == false)
  local own_sd, keys = self:state_dict({keep_vars = true})
  local missing, unexpected, problems = {}, {}, {}
  for _, k in ipairs(keys) do
    local v = sd[k]
    local t = own_sd[k]
    if v == nil then
      missing[#missing + 1] = k
    elseif not lark.is_tensor(v) then
      problems[#problems + 1] = string.format("  value for %s: expected a tensor, got %s.", k, type(v))
    elseif v:size() ~= t:size() then
      problems[#problems + 1] = string.format(
        "  size mismatch for %s: copying a tensor of shape %s from the state dict, the shape in the current model is %s.",
        k, shape_str(v), shape_str(t))
    end
  end
  local given = {}
  for k in pairs(sd) do given[#given + 1] = k end
  if getmetatable(sd) ~= StateDictMT then table.sort(given, function(a, b) return tostring(a) < tostring(b) end) end
  for _, k in ipairs(given) do
    if own_sd[k] == nil then unexpected[#unexpected + 1] = k end
  end
  local lines = {}
  if strict and #missing > 0 then lines[#lines + 1] = "  missing key(s) in state_dict: " .. quoted(missing) .. "." end
  if strict and #unexpected > 0 then
    lines[#lines + 1] = "  unexpected key(s) in state_dict: " .. quoted(unexpected) .. "."
  end
  for _, p in ipairs(problems) do lines[#lines + 1] = p end
  if #lines > 0 then
    error(string.format("load_state_dict: error(s) in loading state_dict for %s (nothing was loaded):\n%s",
      self.__name, table.concat(lines, "\n")), 2)
  end
  local guard <close> = lark.no_grad()
  for _, k in ipairs(keys) do
    local v = sd[k]
    if v ~= nil then own_sd[k]:copy_(v) end
  end
  return {missing_keys = missing, unexpected_keys = unexpected}
end

-- ---- dtype and device --------------------------------------------------------------------------

local DTYPES = {float32 = true, float64 = true, int64 = true, uint8 = true, bool = true, float16 = true,
                bfloat16 = true}
local FLOAT_DTYPES = {float32 = true, float64 = true, float16 = true, bfloat16 = true}

--- m:_apply(fn): replaces every parameter, its gradient, and every buffer t by fn(t); a
-- parameter replaced keeps requires_grad (the new one is a fresh leaf). Tensors shared between
-- modules stay shared. Returns m.
function Module:_apply(fn)
  local cache = {}
  local function conv(t)
    if cache[t] == nil then
      local guard <close> = lark.no_grad()
      cache[t] = fn(t)
    end
    return cache[t]
  end
  for _, m in ipairs(self:modules()) do
    for _, name in ipairs(m._param_names) do
      local p = rawget(m, name)
      if p ~= nil then
        local q = conv(p)
        if not rawequal(q, p) then
          -- the parameter keeps its identity and takes q's data (PyTorch's p.data = q), so what
          -- holds it (an optimizer, lark.sparse.Masking, a tied module) follows the move
          local g = p.grad
          p.grad = nil
          p:set_data(q)
          if g ~= nil then p.grad = conv(g) end
          cache[p] = p
        end
      end
    end
    for _, name in ipairs(m._buffer_names) do
      local b = rawget(m, name)
      if b ~= nil then rawset(m, name, conv(b)) end
    end
  end
  return self
end

--- m:to(...): converts parameters and buffers: a device ("cpu", "cuda", "cuda:N"), a float dtype
-- ("float32", "float64"; integer buffers such as num_batches_tracked keep their dtype), an options
-- table {dtype =, device =} or a tensor to match. Parameters are replaced by converted leaves
-- that keep requires_grad (optimizers built before must be rebuilt). Returns m.
function Module:to(...)
  local dtype, device
  for i = 1, select("#", ...) do
    local a = select(i, ...)
    if type(a) == "string" then
      if DTYPES[a] then dtype = a else device = a end
    elseif lark.is_tensor(a) then
      dtype, device = a:dtype(), a:device()
    elseif type(a) == "table" then
      dtype, device = a.dtype or dtype, a.device or device
    else
      error(string.format("to: argument %d: expected a dtype, a device, an options table or a tensor, got %s", i,
        type(a)), 2)
    end
  end
  if dtype and not FLOAT_DTYPES[dtype] then
    error("to: modules convert to float dtypes only (float32, float64), got " .. dtype, 2)
  end
  return self:_apply(function(t)
    local r = t
    if device then r = r:to(device) end
    if dtype and r:is_floating_point() then r = r:to(dtype) end
    return r
  end)
end

--- m:float(), m:double(): float parameters and buffers to float32 / float64; returns m.
function Module:float() return self:to("float32") end
function Module:double() return self:to("float64") end
--- m:cuda([index]), m:cpu(): moves parameters and buffers; returns m.
function Module:cuda(index) return self:to(index and ("cuda:" .. index) or "cuda") end
function Module:cpu() return self:to("cpu") end

-- ---- calling, with the module path on errors -------------------------------------------------------

-- The error passing through module calls right now: its original message, the module it was last
-- seen leaving, and the path from there down to where it was raised. Errors stay strings; a
-- parent recognises the string its child raised and prefixes the child's name.
local last_error = nil

local function path_to(self, target)
  for name, m in self:named_modules() do
    if rawequal(m, target) and name ~= "" then return name end
  end
end

local function call_forward(self, ok, ...)
  if ok then return ... end
  local err = ...
  if type(err) ~= "string" then error(err, 0) end
  local e = last_error
  if e and e.rendered == err then
    if not rawequal(e.from, self) then
      local name = path_to(self, e.from)
      if name then
        e.path = e.path == "" and name or (name .. "." .. e.path)
        e.rendered = e.path .. ": " .. e.msg
      end
      e.from = self
    end
  else
    -- weak values: a model that failed once is not kept alive by its error
    e = setmetatable({msg = err, path = "", from = self, rendered = err}, {__mode = "v"})
    last_error = e
  end
  error(e.rendered, 0)
end

--- m(...): calls m:forward(...). An error from a descendant is re-raised prefixed with its path.
function Module.__call(self, ...)
  return call_forward(self, pcall(self.forward, self, ...))
end

-- ---- printing ------------------------------------------------------------------------------------

--- m:extra_repr(): the arguments shown between the parentheses by tostring (override it).
function Module:extra_repr() return "" end

local function add_indent(s, n)
  local pad = string.rep(" ", n)
  return (s:gsub("\n", "\n" .. pad))
end

--- tostring(m): the module tree in PyTorch's layout, `Name(args)` with each child on its own line
-- as `(name): ...`.
function Module.__tostring(self)
  local extra = self:extra_repr()
  local lines = {}
  if extra ~= "" then
    for l in (extra .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
  end
  local nextra = #lines
  for _, name in ipairs(self._module_names) do
    local c = rawget(self, name)
    lines[#lines + 1] = "(" .. name .. "): " .. (c and add_indent(tostring(c), 2) or "nil")
  end
  local s = self.__name .. "("
  if #lines > 0 then
    if nextra == 1 and #lines == 1 then
      s = s .. lines[1]
    else
      s = s .. "\n  " .. table.concat(lines, "\n  ") .. "\n"
    end
  end
  return s .. ")"
end

nn_module.Module = Module
return nn_module
