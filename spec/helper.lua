-- spec/helper.lua: loaded by busted (--helper) before every spec file.
-- Gives the specs `lark` and a few assertions on tensors, in the spirit of torch.Tester.
lark = lark or require "lark"

local function flatten(x, out)
  out = out or {}
  if type(x) == "table" then
    for i = 1, #x do flatten(x[i], out) end
  elseif type(x) == "boolean" then
    out[#out + 1] = x and 1 or 0
  else
    out[#out + 1] = x
  end
  return out
end

local function shape_of(x)
  if lark.is_tensor(x) then
    local s = x:size()
    local r = {}
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

local function values(x)
  if lark.is_tensor(x) then
    if x:dim() == 0 then return {x:double():item()} end
    return flatten(x:double():table())
  end
  if type(x) == "number" then return {x} end
  return flatten(x)
end

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
  local a, e = values(actual), values(expected)
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

--- rand_table(shape [, lo, hi]): a nested table of uniform numbers from Lua's own generator, for
-- references that do not depend on lark's random numbers.
function rand_table(shape, lo, hi)
  lo, hi = lo or -1, hi or 1
  local function build(d)
    local t = {}
    for i = 1, shape[d] do
      if d == #shape then t[i] = lo + (hi - lo) * math.random() else t[i] = build(d + 1) end
    end
    return t
  end
  if #shape == 0 then return lo + (hi - lo) * math.random() end
  return build(1)
end

--- assert_error_match(fn, pattern): fn raises an error whose message contains `pattern` (plain).
function assert_error_match(fn, pattern)
  local ok, err = pcall(fn)
  if ok then error("expected an error matching '" .. pattern .. "', but the call succeeded", 2) end
  if not tostring(err):find(pattern, 1, true) then
    error(string.format("expected an error containing '%s', got: %s", pattern, tostring(err)), 2)
  end
  return true
end
