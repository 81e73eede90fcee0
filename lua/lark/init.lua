--- lark: tensors, autograd and large-kernel ConvNets for Lua 5.4.
--
-- `local lark = require "lark"` gives the tensor library. Dims and indices are 1-based, as in
-- Torch7; sizes are plain Lua integers. The C module `lark.core` does the work; this file adds what
-- reads better in Lua: printing, conversions and the small conveniences users type at the REPL.
local core = require "lark.core"

local lark = {}
for k, v in pairs(core) do lark[k] = v end
lark._VERSION = "0.1.0"

local Tensor = core._methods      -- methods shared by every tensor
local Size = core._size_metatable -- metatable of the shape tables that size() returns

-- Sizes ----------------------------------------------------------------------------------------

Size.__name = "lark.Size"
Size.__index = {
  --- Number of elements a tensor of this size holds.
  numel = function(s)
    local n = 1
    for i = 1, #s do n = n * s[i] end
    return n
  end,
}
Size.__tostring = function(s)
  local parts = {}
  for i = 1, #s do parts[i] = tostring(s[i]) end
  return "lark.Size{" .. table.concat(parts, ", ") .. "}"
end
Size.__eq = function(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    if a[i] ~= b[i] then return false end
  end
  return true
end

-- Conversions ------------------------------------------------------------------------------------

--- t:float(), t:double(), t:long(), t:byte(), t:bool(): convert the dtype (self when unchanged).
function Tensor:float() return self:to("float32") end
function Tensor:double() return self:to("float64") end
function Tensor:long() return self:to("int64") end
function Tensor:byte() return self:to("uint8") end
function Tensor:bool() return self:to("bool") end
--- t:cuda([index]) and t:cpu(): move between devices (self when already there).
function Tensor:cuda(index) return self:to(index and ("cuda:" .. index) or "cuda") end
function Tensor:cpu() return self:to("cpu") end

--- t:type(): the dtype name; t:type(dtype): the tensor converted to it (Torch7's form).
function Tensor:type(dtype)
  if dtype == nil then return self:dtype() end
  return self:to(dtype)
end

--- t:is_same_size(u): whether both have the same shape.
function Tensor:is_same_size(other) return self:size() == other:size() end

--- t:is_floating_point()
function Tensor:is_floating_point()
  local d = self:dtype()
  return d == "float32" or d == "float64"
end

local function like(fill)
  return function(t, opts)
    opts = opts or {}
    local o = {dtype = opts.dtype or t:dtype(), device = opts.device or t:device()}
    return fill(t:size(), o)
  end
end
--- lark.zeros_like(t [, opts]), lark.ones_like, lark.empty_like: same shape, dtype and device.
lark.zeros_like = like(lark.zeros)
lark.ones_like = like(lark.ones)
lark.empty_like = like(lark.empty)
--- lark.full_like(t, value [, opts])
function lark.full_like(t, value, opts)
  opts = opts or {}
  return lark.full(t:size(), value, {dtype = opts.dtype or t:dtype(), device = opts.device or t:device()})
end

-- Printing, in Torch7's style ----------------------------------------------------------------------
-- One number format for the whole tensor, chosen from the values shown; matrices wrap at 80
-- columns; N-d tensors print as 2-d slices headed (i,j,.,.); a footer gives dtype, size and device.
-- Tensors of more than `print_threshold` elements show their first and last 3 entries per dim.

lark.print_options = {threshold = 1000, edgeitems = 3, linewidth = 80, precision = 4}

local function size_str(t)
  local s = t:size()
  if #s == 0 then return "" end
  local parts = {}
  for i = 1, #s do parts[i] = tostring(s[i]) end
  return table.concat(parts, "x")
end

local function footer(t)
  local dev = t:device()
  local where = dev == "cpu" and "" or (" on " .. dev)
  if t:dim() == 0 then return string.format("[%s tensor with no dimension%s]", t:dtype(), where) end
  return string.format("[%s tensor of size %s%s]", t:dtype(), size_str(t), where)
end

-- The indices shown along a dim of size n: all, or the edges around an ellipsis (0 marks it).
local function shown(n, summarize)
  local e = lark.print_options.edgeitems
  local idx = {}
  if not summarize or n <= 2 * e then
    for i = 1, n do idx[#idx + 1] = i end
  else
    for i = 1, e do idx[#idx + 1] = i end
    idx[#idx + 1] = 0
    for i = n - e + 1, n do idx[#idx + 1] = i end
  end
  return idx
end

-- Picks the format for a list of numbers: returns fmt, scale (or nil) and the field width.
local function number_format(vals, dtype)
  local prec = lark.print_options.precision
  if dtype == "bool" then return "%s", nil, 5 end
  local maxabs, minabs, neg, allint, finite = 0, math.huge, false, true, 0
  for _, v in ipairs(vals) do
    if v ~= v or v == math.huge or v == -math.huge then
      allint = allint -- nan and inf print as words
    else
      finite = finite + 1
      local a = math.abs(v)
      if a > maxabs then maxabs = a end
      if a ~= 0 and a < minabs then minabs = a end
      if v ~= math.floor(v) then allint = false end
    end
    if v < 0 or (1 / v) < 0 then neg = true end
  end
  if finite == 0 then return "%g", nil, 5 end
  if dtype == "int64" or dtype == "uint8" or (allint and maxabs < 1e9) then
    local w = #string.format("%.0f", maxabs) + (neg and 1 or 0)
    return "%" .. w .. ".0f", nil, w
  end
  local emax = maxabs > 0 and math.floor(math.log(maxabs, 10)) or 0
  local emin = minabs < math.huge and math.floor(math.log(minabs, 10)) or emax
  if emax - emin > 4 or emax > 8 or emax < -8 then
    local w = 7 + prec + (neg and 1 or 0)
    return "%" .. w .. "." .. prec .. "e", nil, w
  end
  if emax > 4 or emax < -2 then -- a common scale factor line, as Torch7 prints "1e-03 *"
    local scale = 10.0 ^ emax
    local w = 2 + prec + (neg and 1 or 0)
    return "%" .. w .. "." .. prec .. "f", scale, w
  end
  local w = math.max(emax, 0) + 2 + prec + (neg and 1 or 0)
  return "%" .. w .. "." .. prec .. "f", nil, w
end

local function fmt_value(v, fmt, scale, width)
  if type(v) == "boolean" then return string.format("%" .. width .. "s", tostring(v)) end
  if v ~= v then return string.format("%" .. width .. "s", "nan") end
  if v == math.huge then return string.format("%" .. width .. "s", "inf") end
  if v == -math.huge then return string.format("%" .. width .. "s", "-inf") end
  if scale then v = v / scale end
  return string.format(fmt, v)
end

-- Collects the values shown of a CPU tensor as rows of a 2-d layout.
local function gather_values(t, summarize)
  local vals = {}
  local function walk(x)
    local d = x:dim()
    if d == 0 then
      vals[#vals + 1] = x:item()
      return
    end
    for _, i in ipairs(shown(x:size(1), summarize)) do
      if i > 0 then walk(x:select(1, i)) end
    end
  end
  walk(t)
  return vals
end

local function matrix_lines(m, fmt, scale, width, summarize, lines)
  -- m is 2-d; columns wrap at the line width
  local rows, cols = shown(m:size(1), summarize), shown(m:size(2), summarize)
  local per_line = math.max(1, (lark.print_options.linewidth - 1) // (width + 1))
  local cells = {}
  for r, i in ipairs(rows) do
    cells[r] = {}
    if i > 0 then
      local row = m:select(1, i)
      for c, j in ipairs(cols) do
        cells[r][c] = j > 0 and fmt_value(row:select(1, j):item(), fmt, scale, width) or string.rep(" ", width - 3) .. "..."
      end
    end
  end
  local ncol = #cols
  for c0 = 1, ncol, per_line do
    local c1 = math.min(ncol, c0 + per_line - 1)
    if ncol > per_line then
      local a, b = cols[c0], cols[c1]
      lines[#lines + 1] = string.format("Columns %s to %s", a > 0 and a or "...", b > 0 and b or "...")
    end
    for r = 1, #rows do
      if rows[r] == 0 then
        lines[#lines + 1] = " ..."
      else
        lines[#lines + 1] = " " .. table.concat(cells[r], " ", c0, c1)
      end
    end
    if c1 < ncol then lines[#lines + 1] = "" end
  end
end

local function tensor_tostring(t)
  local alive, n = pcall(t.numel, t)
  if not alive then
    return tostring(n):find("closed") and "[closed tensor]" or "[freed tensor]"
  end
  if n == 0 then
    return string.format("[%s tensor of size %s%s]", t:dtype(), size_str(t) ~= "" and size_str(t) or "0",
      t:device() == "cpu" and "" or (" on " .. t:device()))
  end
  local host = t:device() == "cpu" and t or t:cpu()
  local summarize = host:numel() > lark.print_options.threshold
  local vals = gather_values(host, summarize)
  local fmt, scale, width = number_format(vals, host:dtype())
  local lines = {}
  if scale then lines[#lines + 1] = string.format("%.0e *", scale) end
  local d = host:dim()
  if d == 0 then
    lines[#lines + 1] = fmt_value(host:item(), fmt, scale, width)
  elseif d == 1 then
    for _, i in ipairs(shown(host:size(1), summarize)) do
      lines[#lines + 1] = i > 0 and fmt_value(host:select(1, i):item(), fmt, scale, width) or "..."
    end
  elseif d == 2 then
    matrix_lines(host, fmt, scale, width, summarize, lines)
  else
    -- every combination of the leading d-2 indices, as Torch7's (i,j,.,.) = headers
    local function walk(x, prefix)
      if x:dim() == 2 then
        if #lines > 0 and lines[#lines] ~= "" then lines[#lines + 1] = "" end
        lines[#lines + 1] = "(" .. table.concat(prefix, ",") .. ",.,.) = "
        matrix_lines(x, fmt, scale, width, summarize, lines)
        return
      end
      for _, i in ipairs(shown(x:size(1), summarize)) do
        if i == 0 then
          lines[#lines + 1] = ""
          lines[#lines + 1] = "..."
        else
          prefix[#prefix + 1] = i
          walk(x:select(1, i), prefix)
          prefix[#prefix] = nil
        end
      end
    end
    walk(host, {})
  end
  lines[#lines + 1] = footer(t)
  return table.concat(lines, "\n")
end

core._metatable.__tostring = tensor_tostring
lark.tostring = tensor_tostring

-- Library tables ---------------------------------------------------------------------------------

lark.autograd = require "lark.autograd"

-- Factories take `requires_grad = true` in their options table, as in PyTorch:
-- lark.zeros(3, 4, {requires_grad = true}), lark.tensor({1, 2}, {dtype = "float64", requires_grad = true}).
for _, name in ipairs{"tensor", "zeros", "ones", "full", "empty", "rand", "randn", "arange", "range", "linspace",
                      "eye", "zeros_like", "ones_like", "full_like", "empty_like"} do
  local make = lark[name]
  if make then
    lark[name] = function(...)
      local t = make(...)
      local n = select("#", ...)
      local opts = n > 0 and select(n, ...) or nil
      if type(opts) == "table" and rawget(opts, "requires_grad") then t.requires_grad = true end
      return t
    end
  end
end
lark.no_grad = lark.autograd.no_grad
lark.enable_grad = lark.autograd.enable_grad

lark.cuda = lark.cuda or {
  --- Whether a CUDA device can be used (lark built with CUDA and a GPU answers).
  is_available = function() return false end,
  device_count = function() return 0 end,
  synchronize = function() end,
}

-- lark.nn (and lark.nn.functional) load on first use, so `require "lark"` stays light.
setmetatable(lark, {
  __index = function(t, k)
    if k == "optim" then rawset(t, k, require "lark.optim") return rawget(t, k) end -- lark.optim, on first use
    if k == "data" then rawset(t, k, require "lark.data") return rawget(t, k) end -- lark.data, on first use
    if k == "h5" or k == "save" or k == "load" or k == "load_into" then local c = require "lark.checkpoint" for _, n in ipairs{"save", "load", "load_into"} do rawset(t, n, c[n]) end rawset(t, "h5", c.h5) return rawget(t, k) end -- lark.h5, lark.save/load/load_into (lark/checkpoint.lua), on first use
    if k == "summary" then rawset(t, k, require "lark.summary") return rawget(t, k) end -- lark.summary, on first use
    if k == "sparse" then rawset(t, k, require "lark.sparse") return rawget(t, k) end -- lark.sparse (dynamic sparsity), on first use
    if k == "nn" then
      local nn = require "lark.nn"
      rawset(t, "nn", nn)
      return nn
    end
  end,
})

return lark
