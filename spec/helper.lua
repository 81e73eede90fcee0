-- spec/helper.lua: loaded by busted (--helper) before every spec file.
-- Gives the specs `lark`, a few assertions on tensors in the spirit of torch.Tester, and the plain
-- Lua helpers that references are built with (shapes, coordinates, nested tables, random data).
-- Coordinates, dims and indices here are 1-based, as everywhere in Lua.
lark = lark or require "lark"
-- busted gives the specs luassert as `assert`, but not this file: take the same module.
local assert = require "luassert"

-- ---- shapes, coordinates and nested tables ------------------------------------------------------

--- shape_of(x): the shape of a tensor (t:size() as a plain list), of a nested table (its lengths
-- along the first elements) or of a number ({}).
function shape_of(x)
  if lark.is_tensor(x) then
    local s, r = x:size(), {}
    for i = 1, #s do r[i] = s[i] end
    return r
  end
  local s = {}
  while type(x) == "table" do
    s[#s + 1] = #x
    x = x[1]
  end
  return s
end

--- dim_pos(d, n): the positive position of dim d (negative counts from the end) among n dims.
function dim_pos(d, n) return d < 0 and d + n + 1 or d end

--- copy_list(c): a fresh copy of a list (a coordinate or a shape), to change without aliasing.
function copy_list(c) return table.move(c, 1, #c, 1, {}) end

--- coords(shape): every coordinate of shape in row-major order, each a fresh list ({{}} for a 0-d
-- shape, {} when a size is 0).
function coords(shape)
  local out, c = {}, {}
  for i = 1, #shape do
    if shape[i] == 0 then return out end
    c[i] = 1
  end
  while true do
    out[#out + 1] = copy_list(c)
    local d = #shape
    while d >= 1 do
      c[d] = c[d] + 1
      if c[d] <= shape[d] then break end
      c[d] = 1
      d = d - 1
    end
    if d < 1 then return out end
  end
end

--- each_coord(shape, f): calls f(c) for every coordinate c of shape, in row-major order.
function each_coord(shape, f)
  for _, c in ipairs(coords(shape)) do f(c) end
end

--- get_at(tab, c): the element of nested table tab at coordinate c (tab itself for c = {}).
function get_at(tab, c)
  for i = 1, #c do tab = tab[c[i]] end
  return tab
end

--- set_at(tab, c, v): stores v in nested table tab at coordinate c (#c >= 1).
function set_at(tab, c, v)
  for i = 1, #c - 1 do tab = tab[c[i]] end
  tab[c[#c]] = v
end

--- build_table(shape, f): a nested table of shape whose element at c is f(c) (f's value for 0-d);
-- c is reused between calls, copy it to keep it.
function build_table(shape, f)
  local function rec(d, c)
    if d > #shape then return f(c) end
    local t = {}
    for i = 1, shape[d] do
      c[d] = i
      t[i] = rec(d + 1, c)
    end
    c[d] = nil
    return t
  end
  return rec(1, {})
end

--- flat(x): the values of a tensor (as t:table() gives them: booleans stay booleans; a 0-d
-- tensor's item), of a nested table (tensors inside included) or of a number, in row-major order.
function flat(x, out)
  out = out or {}
  if lark.is_tensor(x) then
    if x:dim() == 0 then
      out[#out + 1] = x:item()
      return out
    end
    x = x:reshape(-1):table()
  end
  if type(x) ~= "table" then
    out[#out + 1] = x
    return out
  end
  for i = 1, #x do flat(x[i], out) end
  return out
end

--- flat_numbers(x): flat(x) as Lua numbers: tensors read through :double(), booleans as 0/1.
function flat_numbers(x)
  if lark.is_tensor(x) then x = x:double() end
  local out = flat(x)
  for i = 1, #out do
    if type(out[i]) == "boolean" then out[i] = out[i] and 1 or 0 end
  end
  return out
end

-- ---- random data (Lua's own generator: references that do not depend on lark's) --------------

--- rand_table(shape [, lo, hi]): a nested table of uniform numbers in [lo, hi) (default [-1, 1)).
function rand_table(shape, lo, hi)
  lo, hi = lo or -1, hi or 1
  return build_table(shape, function() return lo + (hi - lo) * math.random() end)
end

--- rand_tensor(shape [, dtype [, lo, hi]]): a tensor (float64 by default) of rand_table values;
-- zeros when a size is 0.
function rand_tensor(shape, dtype, lo, hi)
  dtype = dtype or "float64"
  for i = 1, #shape do
    if shape[i] == 0 then return lark.zeros(shape, {dtype = dtype}) end
  end
  return lark.tensor(rand_table(shape, lo, hi), {dtype = dtype})
end

-- ---- assertions ---------------------------------------------------------------------------------

--- assert_near(actual, expected [, tol]): same shape (when both carry one) and every element
-- within tol * (1 + |expected|) (NaN matches NaN, infinities must match exactly). Tables and
-- tensors mix freely. The failure message names the worst element.
function assert_near(actual, expected, tol)
  tol = tol or 1e-6
  local sa, se = shape_of(actual), shape_of(expected)
  if lark.is_tensor(actual) and (lark.is_tensor(expected) or type(expected) == "table") then
    local same = #sa == #se
    for i = 1, math.min(#sa, #se) do same = same and sa[i] == se[i] end
    if not same and not (#se == 0 and #sa == 0) then
      error(string.format("assert_near: shapes differ: actual [%s], expected [%s]", table.concat(sa, ","),
        table.concat(se, ",")), 2)
    end
  end
  local a, e = flat_numbers(actual), flat_numbers(expected)
  if #a ~= #e then error(string.format("assert_near: %d elements vs %d expected", #a, #e), 2) end
  local worst, wi = -1, 0
  for i = 1, #a do
    local x, y = a[i], e[i]
    local bad
    if y ~= y then
      bad = x == x and math.huge or 0
    elseif y == math.huge or y == -math.huge then
      bad = x == y and 0 or math.huge
    else
      bad = math.abs(x - y) / (1 + math.abs(y))
      if x ~= x then bad = math.huge end
    end
    if bad > worst then worst, wi = bad, i end
  end
  if worst > tol then
    error(string.format("assert_near: element %d is %s, expected %s (relative error %.3g > %.3g)", wi,
      tostring(a[wi]), tostring(e[wi]), worst, tol), 2)
  end
  return true
end

--- same_nan(a, b): a and b (nested tables or values) are equal element by element with the same
-- nesting, NaN matching NaN.
function same_nan(a, b)
  if type(a) == "table" then
    if type(b) ~= "table" or #a ~= #b then return false end
    for i = 1, #a do
      if not same_nan(a[i], b[i]) then return false end
    end
    return true
  end
  return a == b or (a ~= a and b ~= b)
end

--- assert_same(actual, expected [, what]): flat(actual) and flat(expected) are the same values
-- (exactly, booleans and numbers not mixed, NaN matching NaN); the message names the first
-- difference.
function assert_same(actual, expected, what)
  local a, e = flat(actual), flat(expected)
  assert.are.equal(#e, #a, what)
  for i = 1, #a do
    local x, y = a[i], e[i]
    if not (x == y or (x ~= x and y ~= y)) then
      error(string.format("%s: element %d is %s, expected %s", what or "values", i, tostring(x), tostring(y)), 2)
    end
  end
  return true
end

--- error_of(fn, ...): the message of the error fn(...) raises; fails the test if fn returns.
function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(err)
end

--- expect_error(pattern, fn, ...): fn(...) raises an error whose message contains pattern (plain
-- text, not a Lua pattern); returns the message.
function expect_error(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error containing: " .. pattern)
  err = tostring(err)
  assert.truthy(err:find(pattern, 1, true), string.format("error %q does not contain %q", err, pattern))
  return err
end

--- assert_error_match(fn, pattern): expect_error with the arguments the other way round.
function assert_error_match(fn, pattern) return expect_error(pattern, fn) end

-- ---- PyTorch, for parity specs (Debian's python3-torch, run as /usr/bin/python3) --------------------

PYTHON = "/usr/bin/python3"

local torch_checked, torch_present
--- have_torch(): whether /usr/bin/python3 can import torch (checked once per run). Parity specs call
-- pending() and return when it cannot.
function have_torch()
  if not torch_checked then
    local p = io.popen(PYTHON .. " -c 'import torch; print(torch.__version__)' 2>/dev/null")
    local v = p and p:read("l")
    if p then p:close() end
    torch_checked, torch_present = true, v ~= nil
  end
  return torch_present
end

local h5py_checked, h5py_present
--- have_h5py(): whether /usr/bin/python3 can import h5py and numpy (checked once per run).
function have_h5py()
  if not h5py_checked then
    local p = io.popen(PYTHON .. " -c 'import h5py, numpy; print(h5py.__version__)' 2>/dev/null")
    local v = p and p:read("l")
    if p then p:close() end
    h5py_checked, h5py_present = true, v ~= nil
  end
  return h5py_present
end

--- pylist(t): a Python list literal of a tensor's values, nested like its shape, exact in float64.
function pylist(t)
  local function rec(x)
    if type(x) ~= "table" then return string.format("%.17g", x) end
    local parts = {}
    for i = 1, #x do parts[i] = rec(x[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  return rec(t:double():table())
end

--- values_of(t): a tensor's values, flattened, as exact decimal strings ("%.17g").
function values_of(t)
  local out = {}
  local f = t:double():contiguous():view(-1):table()
  for i = 1, #f do out[i] = string.format("%.17g", f[i]) end
  return out
end

--- run_python(script): runs a Python script with /usr/bin/python3; returns its output lines (stdout
-- and stderr together, so a Python error shows up in the assertion that reads them).
function run_python(script)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(script)
  f:close()
  local p = io.popen(PYTHON .. " " .. path .. " 2>&1")
  local lines = {}
  for line in p:lines() do lines[#lines + 1] = line end
  p:close()
  os.remove(path)
  return lines
end

--- run_python_numbers(script): run_python, each line split on spaces into numbers (words that are
-- not numbers kept as strings).
function run_python_numbers(script)
  local lines = run_python(script)
  for i, line in ipairs(lines) do
    local nums = {}
    for w in line:gmatch("%S+") do nums[#nums + 1] = tonumber(w) or w end
    lines[i] = nums
  end
  return lines
end

--- run_python_keyed(script): run_python, each line "key v1 v2 ..." becoming result[key] = {v1, v2, ...}
-- (numbers); returns result and the whole output (for failure messages).
function run_python_keyed(script)
  local lines = run_python(script)
  local res = {}
  for _, line in ipairs(lines) do
    local key, rest = line:match("^(%S+)%s?(.*)$")
    if key then
      local vals = {}
      for v in rest:gmatch("%S+") do vals[#vals + 1] = tonumber(v) end
      res[key] = vals
    end
  end
  return res, table.concat(lines, "\n")
end

-- ---- GPU parity ---------------------------------------------------------------------------------

--- gpu_describe(name, body): describe(name, body) where a CUDA device answers; without one, a
-- pending entry naming the block, so a CPU-only run shows what it skipped.
function gpu_describe(name, body)
  local busted = require "busted" -- describe and pending live in the specs' environment, not here
  busted.describe(name, function()
    if not lark.cuda.is_available() then
      busted.pending("no CUDA device (lark.cuda.is_available() is false): GPU parity specs of " .. name .. " skipped")
      return
    end
    body()
  end)
end

--- gpu_rel_err(got, want): the largest |got - want| over max(1, the largest finite |want|), any
-- devices; NaN where want is NaN must be NaN in got (else the result is NaN), equal infinities count 0.
function gpu_rel_err(got, want)
  local g, w = got:cpu():double(), want:cpu():double()
  if w:numel() == 0 then return 0 end
  local gn, wn = g:ne(g), w:ne(w)
  if not gn:eq(wn):all():item() then return 0 / 0 end
  local zero = lark.zeros({}, {dtype = "float64"})
  g, w = lark.where(wn, zero, g), lark.where(wn, zero, w)
  local diff = lark.where(g:eq(w), zero, (g - w):abs())
  local wa = w:abs()
  local scale = math.max(1, lark.where(wa:eq(math.huge), zero, wa):max():item())
  return diff:max():item() / scale
end

--- expect_gpu_close(what, got, want, tol): got (a GPU tensor) matches want (its CPU twin): on
-- cuda:0, same dtype and shape, gpu_rel_err within tol.
function expect_gpu_close(what, got, want, tol)
  assert.is_not_nil(got, what .. ": no result")
  assert.are.equal("cuda:0", got:device(), what .. ": result not on the GPU")
  assert.are.equal(want:dtype(), got:dtype(), what .. ": dtype")
  assert.are.same(shape_of(want), shape_of(got), what .. ": shape")
  local e = gpu_rel_err(got, want)
  assert.is_true(e <= tol, string.format("%s: relative error %.3g > %.3g", what, e, tol))
end
