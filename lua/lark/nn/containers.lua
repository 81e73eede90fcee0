--- lark.nn containers: Sequential, ModuleList and ModuleDict, as in PyTorch.
--
-- Children of Sequential and ModuleList are named "0", "1", ... (PyTorch's state-dict keys) while
-- Lua indexing stays 1-based: seq[1] is the child named "0"; negative indices count from the end.
local lark = require "lark"
local M = require "lark.nn.module"
local Module, is_module = M.Module, M.is_module

local containers = {}

-- __index of the list containers: integers reach the children (1-based), anything else the class.
local function list_index(self, k)
  if math.type(k) == "integer" then
    local names = rawget(self, "_module_names")
    local n = #names
    if k < 0 then k = n + k + 1 end
    if k >= 1 and k <= n then return rawget(self, names[k]) end
    return nil
  end
  return getmetatable(self)[k]
end

local function list_len(self) return #rawget(self, "_module_names") end

local function check_module(fname, i, m)
  if not is_module(m) then
    error(string.format("%s: argument %d: expected a module, got %s", fname, i, type(m)), 3)
  end
end

-- ml[i] = m replaces the i-th child (1-based, keeping its name); ml[#ml + 1] = m appends.
local function list_newindex(self, k, v)
  if math.type(k) == "integer" then
    local names = self._module_names
    local n = #names
    if k < 0 then k = n + k + 1 end
    check_module(self.__name, 2, v)
    if k == n + 1 then return self:add_module(tostring(n), v) end
    if k < 1 or k > n then
      error(string.format("%s: index %d is out of range (%d children)", self.__name, k, n), 2)
    end
    rawset(self, names[k], v)
    return
  end
  return Module.__newindex(self, k, v)
end

local function list_iter(self)
  local i, names = 0, self._module_names
  return function()
    i = i + 1
    if names[i] then return i, rawget(self, names[i]) end
  end
end

-- ---- Sequential ----------------------------------------------------------------------------------

local Sequential = Module:extend("Sequential")
Sequential.__index = list_index
Sequential.__newindex = list_newindex
Sequential.__len = list_len

--- nn.Sequential(m1, m2, ...) or nn.Sequential({m1, m2, ...}): runs its children in order, each
-- on the previous one's output. Children are named "0", "1", ...; seq[i] is the i-th (1-based).
function Sequential:__init(...)
  local mods = {...}
  if select("#", ...) == 1 and type(mods[1]) == "table" and not is_module(mods[1]) then mods = mods[1] end
  for i, m in ipairs(mods) do
    check_module("Sequential", i, m)
    self:add_module(tostring(i - 1), m)
  end
end

--- seq:add(m) (Torch7) / seq:append(m): appends a child; returns seq.
function Sequential:append(m)
  check_module("Sequential:append", 1, m)
  self:add_module(tostring(#self._module_names), m)
  return self
end
Sequential.add = Sequential.append

--- seq:get(i): the i-th child (1-based), as Torch7's get.
function Sequential:get(i) return self[i] end

--- seq:iter(): an iterator of (i, child), 1-based; ipairs(seq) works as well.
Sequential.iter = list_iter

function Sequential:forward(x, ...)
  local names = self._module_names
  if #names == 0 then return x end
  x = rawget(self, names[1])(x, ...)
  for i = 2, #names do x = rawget(self, names[i])(x) end
  return x
end

containers.Sequential = Sequential

-- ---- ModuleList ------------------------------------------------------------------------------------

local ModuleList = Module:extend("ModuleList")
ModuleList.__index = list_index
ModuleList.__newindex = list_newindex
ModuleList.__len = list_len

--- nn.ModuleList([{m1, m2, ...}]): a list of children named "0", "1", ... with no forward of its
-- own. ml[i] (1-based), #ml, ml:iter() or ipairs(ml).
function ModuleList:__init(mods)
  if mods ~= nil then self:extend(mods) end
end

--- ml:append(m): appends a child; returns ml.
function ModuleList:append(m)
  check_module("ModuleList:append", 1, m)
  self:add_module(tostring(#self._module_names), m)
  return self
end

--- ml:extend(list): appends each module of an array (or of another ModuleList); returns ml.
function ModuleList:extend(mods)
  if type(mods) ~= "table" then error("ModuleList:extend: expected an array of modules, got " .. type(mods), 2) end
  for i = 1, #mods do
    check_module("ModuleList:extend", i, mods[i])
    self:add_module(tostring(#self._module_names), mods[i])
  end
  return self
end

--- ml:iter(): an iterator of (i, child), 1-based.
ModuleList.iter = list_iter

function ModuleList:forward()
  error("ModuleList has no forward: call its children (for i, m in ml:iter() do ... end)", 2)
end

containers.ModuleList = ModuleList

-- ---- ModuleDict ------------------------------------------------------------------------------------

local ModuleDict = Module:extend("ModuleDict")
ModuleDict.__len = list_len

--- nn.ModuleDict([mods]): children under string keys, kept in insertion order. mods is an array
-- of {name, module} pairs (the order kept) or a table name -> module (added in sorted key order).
-- d[name] reads a child; d[name] = m or d:add(name, m) adds one.
function ModuleDict:__init(mods)
  if mods == nil then return end
  if type(mods) ~= "table" then error("ModuleDict: expected a table of modules, got " .. type(mods), 2) end
  if #mods > 0 then
    for i, kv in ipairs(mods) do
      if type(kv) ~= "table" or type(kv[1]) ~= "string" or not is_module(kv[2]) then
        error(string.format("ModuleDict: entry %d: expected a {name, module} pair", i), 2)
      end
      self:add_module(kv[1], kv[2])
    end
  else
    local keys = {}
    for k in pairs(mods) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
      if type(k) ~= "string" or not is_module(mods[k]) then
        error(string.format("ModuleDict: key %s: expected a string key and a module", tostring(k)), 2)
      end
      self:add_module(k, mods[k])
    end
  end
end

--- d:add(name, m): adds (or replaces) a child; returns d.
function ModuleDict:add(name, m)
  check_module("ModuleDict:add", 2, m)
  self:add_module(name, m)
  return self
end

--- d:keys(): the names in insertion order (an array).
function ModuleDict:keys()
  local out = {}
  for name in self:named_children() do out[#out + 1] = name end
  return out
end

--- d:values(): the children in insertion order (an array).
function ModuleDict:values() return self:children() end

--- d:items(): an iterator of (name, child) in insertion order; pairs(d) gives the same.
function ModuleDict:items() return self:named_children() end
ModuleDict.__pairs = function(self) return self:named_children() end

--- d:contains(name): whether a child of that name exists.
function ModuleDict:contains(name) return self._kind[name] == "module" and rawget(self, name) ~= nil end

function ModuleDict:forward()
  error("ModuleDict has no forward: call its children (d[name](x))", 2)
end

containers.ModuleDict = ModuleDict

return containers
