-- elementwise_spec.lua: every binary and unary op, clamp and where, against references computed in
-- plain Lua (float64 arithmetic on the values t:table() returns; exact integer arithmetic for int64,
-- uint8 and bool): float32 within 1e-6 relative, float64 within 1e-12, integers and bools exact.
-- Also: the call forms, scalars on either side, in-place forms, alpha, dtype promotion, NaN,
-- division by zero, and big / non-contiguous inputs against contiguous ones.

math.randomseed(20261122)

local function num(v) -- booleans as 0/1, for arithmetic references
  if v == true then return 1 elseif v == false then return 0 end
  return v
end

local function isnan(x) return x ~= x end

-- Checks a result's dtype and values against the reference list `want`.
local function check(r, dtype, want, what)
  assert.are.equal(dtype, r:dtype(), what)
  local got = flat(r)
  if dtype == "float32" then
    assert_near(got, want, 1e-6)
  elseif dtype == "float64" then
    assert_near(got, want, 1e-12)
  else
    assert_same(got, want, what)
  end
end

local function map1(f, xs)
  local out = {}
  for i = 1, #xs do out[i] = f(xs[i]) end
  return out
end

local function map2(f, xs, ys)
  local out = {}
  for i = 1, #xs do out[i] = f(xs[i], ys[i]) end
  return out
end

-- ---- references ---------------------------------------------------------------------------------

local function round_half_even(x)
  if isnan(x) or x == math.huge or x == -math.huge then return x end
  local f = math.floor(x)
  local d = x - f
  if d > 0.5 then return f + 1 elseif d < 0.5 then return f end
  return f % 2 == 0 and f or f + 1
end

local function tanh(x)
  if x > 20 then return 1 elseif x < -20 then return -1 end
  local e = math.exp(2 * x)
  return (e - 1) / (e + 1)
end

local function sign(x)
  if isnan(x) then return x end
  return x > 0 and 1 or x < 0 and -1 or 0
end

local function nanmax(x, y)
  if isnan(x) or isnan(y) then return 0 / 0 end
  return x > y and x or y
end

local function nanmin(x, y)
  if isnan(x) or isnan(y) then return 0 / 0 end
  return x < y and x or y
end

-- integer power as lark computes it (negative exponents: 0 unless the base is 1 or -1)
local function ipow(x, e)
  if e < 0 then
    if x == 1 then return 1 elseif x == -1 then return e % 2 == 0 and 1 or -1 end
    return 0
  end
  local r = 1
  for _ = 1, e do r = r * x end
  return r
end

local FLOAT_BINARY = {
  add = function(x, y) return x + y end,
  sub = function(x, y) return x - y end,
  mul = function(x, y) return x * y end,
  div = function(x, y) return x / y end,
  pow = function(x, y) return x ^ y end,
  maximum = nanmax,
  minimum = nanmin,
  fmod = function(x, y) return math.fmod(x + 0.0, y + 0.0) end,
}
local COMPARE = {
  eq = function(x, y) return x == y end,
  ne = function(x, y) return x ~= y end,
  lt = function(x, y) return x < y end,
  le = function(x, y) return x <= y end,
  gt = function(x, y) return x > y end,
  ge = function(x, y) return x >= y end,
}
local LOGICAL = {
  logical_and = function(x, y) return x ~= 0 and y ~= 0 end,
  logical_or = function(x, y) return x ~= 0 or y ~= 0 end,
  logical_xor = function(x, y) return (x ~= 0) ~= (y ~= 0) end,
}
local INT64_BINARY = {
  add = function(x, y) return x + y end,
  sub = function(x, y) return x - y end,
  mul = function(x, y) return x * y end,
  pow = ipow,
  maximum = function(x, y) return math.max(x, y) end,
  minimum = function(x, y) return math.min(x, y) end,
  fmod = function(x, y) return y == 0 and 0 or math.fmod(x, y) end, -- C's truncated remainder
}

local FLOAT_UNARY = {
  neg = function(x) return -x end,
  abs = math.abs,
  exp = math.exp,
  log = function(x) return math.log(x) end,
  sqrt = math.sqrt,
  rsqrt = function(x) return 1 / math.sqrt(x) end,
  sin = math.sin,
  cos = math.cos,
  tanh = tanh,
  sigmoid = function(x) return 1 / (1 + math.exp(-x)) end,
  relu = function(x) return isnan(x) and x or (x > 0 and x or 0) end,
  floor = function(x) return isnan(x) and x or math.floor(x) end,
  ceil = function(x) return isnan(x) and x or math.ceil(x) end,
  round = round_half_even,
  sign = sign,
  reciprocal = function(x) return 1 / x end,
  square = function(x) return x * x end,
}
local NEEDS_FLOAT = {exp = true, log = true, sqrt = true, rsqrt = true, sin = true, cos = true, tanh = true,
  sigmoid = true, reciprocal = true}

local BINARY_OPS = {"add", "sub", "mul", "div", "pow", "maximum", "minimum", "fmod", "eq", "ne", "lt", "le", "gt", "ge",
  "logical_and", "logical_or", "logical_xor"}
local UNARY_OPS = {"neg", "abs", "exp", "log", "sqrt", "rsqrt", "sin", "cos", "tanh", "sigmoid", "relu", "floor", "ceil",
  "round", "sign", "reciprocal", "square", "logical_not"}

-- The expected dtype and values of a op b, for operands of one dtype dt.
local function binary_ref(op, dt, xs, ys)
  xs, ys = map1(num, xs), map1(num, ys)
  if COMPARE[op] then return "bool", map2(COMPARE[op], xs, ys) end
  if LOGICAL[op] then return "bool", map2(LOGICAL[op], xs, ys) end
  if dt == "float32" or dt == "float64" then return dt, map2(FLOAT_BINARY[op], xs, ys) end
  if op == "div" then return "float32", map2(FLOAT_BINARY.div, xs, ys) end -- true division
  if dt == "int64" then return dt, map2(INT64_BINARY[op], xs, ys) end
  if dt == "uint8" then return dt, map2(function(x, y) return INT64_BINARY[op](x, y) % 256 end, xs, ys) end
  -- bool: add and maximum are or, mul and minimum are and
  local f = ({add = LOGICAL.logical_or, maximum = LOGICAL.logical_or, mul = LOGICAL.logical_and,
    minimum = LOGICAL.logical_and})[op]
  return "bool", map2(f, xs, ys)
end

local function unary_ref(op, dt, xs)
  xs = map1(num, xs)
  if op == "logical_not" then return "bool", map1(function(x) return x == 0 end, xs) end
  if dt == "float32" or dt == "float64" then return dt, map1(FLOAT_UNARY[op], xs) end
  if NEEDS_FLOAT[op] then return "float32", map1(FLOAT_UNARY[op], xs) end
  if dt == "int64" then return dt, map1(FLOAT_UNARY[op], xs) end
  if dt == "uint8" then
    local f = ({neg = function(x) return (-x) % 256 end, abs = function(x) return x end,
      sign = function(x) return x > 0 and 1 or 0 end, square = function(x) return x * x % 256 end})[op]
    return dt, map1(f or FLOAT_UNARY[op], xs)
  end
  return "bool", map1(function(x) return x ~= 0 end, xs) -- bool: abs, relu, floor, ceil, round, sign, square
end

-- ---- operands -----------------------------------------------------------------------------------

-- Awkward float values: ties for round, zeros, negatives for log/sqrt/pow, then random ones.
local SPECIAL = {-3, -2.5, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3, 0.25, -0.75}

local function float_operands(n, dt)
  local a, b = {}, {}
  for i = 1, n do
    a[i] = i <= #SPECIAL and SPECIAL[i] or (math.random() * 6 - 3)
    b[i] = i <= #SPECIAL and SPECIAL[#SPECIAL + 1 - i] or (math.random() * 6 - 3)
  end
  b[3] = a[3] -- equal elements for the comparisons
  return lark.tensor(a, dt), lark.tensor(b, dt)
end

local function int_operands(n, dt)
  local a, b = {}, {}
  for i = 1, n do
    if dt == "int64" then
      a[i], b[i] = math.random(-6, 6), math.random(-6, 6)
    elseif dt == "uint8" then
      a[i], b[i] = math.random(0, 15), math.random(0, 15)
    else
      a[i], b[i] = math.random(0, 1) == 1, math.random(0, 1) == 1
    end
  end
  b[1] = 0 -- a zero divisor
  if dt == "bool" then b[1] = false end
  b[2] = a[2]
  return lark.tensor(a, dt), lark.tensor(b, dt)
end

local function operands(n, dt)
  if dt == "float32" or dt == "float64" then return float_operands(n, dt) end
  return int_operands(n, dt)
end

local DTYPES = {"float32", "float64", "int64", "uint8", "bool"}
local BOOL_INVALID = {sub = true, pow = true, fmod = true}

-- ---- specs --------------------------------------------------------------------------------------

describe("binary ops", function()
  it("match the reference for every op and dtype", function()
    for _, dt in ipairs(DTYPES) do
      local a, b = operands(40, dt)
      local xs, ys = flat(a), flat(b)
      for _, op in ipairs(BINARY_OPS) do
        if dt == "bool" and BOOL_INVALID[op] then
          expect_error(op .. ": not defined for two bool tensors", function() return lark[op](a, b) end)
        else
          local rdt, want = binary_ref(op, dt, xs, ys)
          check(lark[op](a, b), rdt, want, op .. " on " .. dt)
        end
      end
    end
  end)

  it("agree across the call forms lark.f(a, b), a:f(b) and the operators", function()
    local a, b = float_operands(30, "float64")
    for _, op in ipairs(BINARY_OPS) do
      assert_same(flat(a[op](a, b)), flat(lark[op](a, b)), op)
    end
    assert_same(flat(a + b), flat(lark.add(a, b)), "+")
    assert_same(flat(a - b), flat(lark.sub(a, b)), "-")
    assert_same(flat(a * b), flat(lark.mul(a, b)), "*") -- elementwise, as in PyTorch
    assert_same(flat(a / b), flat(lark.div(a, b)), "/")
    assert_same(flat(a ^ b), flat(lark.pow(a, b)), "^")
    assert_same(flat(-a), flat(lark.neg(a)), "unary -")
    assert_same(flat(a:cmul(b)), flat(a * b), "cmul")
    assert_same(flat(a:cdiv(b)), flat(a / b), "cdiv")
  end)

  it("take a number on either side", function()
    local t = lark.tensor({1, 2, 4, -0.5}, "float64")
    local xs = flat(t)
    check(2 - t, "float64", map1(function(x) return 2 - x end, xs), "2 - t")
    check(2 / t, "float64", map1(function(x) return 2 / x end, xs), "2 / t")
    check(t ^ 2, "float64", map1(function(x) return x * x end, xs), "t ^ 2")
    check(2 ^ t, "float64", map1(function(x) return 2 ^ x end, xs), "2 ^ t")
    check(t + 1.5, "float64", map1(function(x) return x + 1.5 end, xs), "t + 1.5")
    check(3 * t, "float64", map1(function(x) return 3 * x end, xs), "3 * t")
    check(t / 4, "float64", map1(function(x) return x / 4 end, xs), "t / 4")
    check(lark.sub(1, t), "float64", map1(function(x) return 1 - x end, xs), "lark.sub(1, t)")
    check(t:maximum(1.5), "float64", map1(function(x) return math.max(x, 1.5) end, xs), "maximum(t, 1.5)")
    check(lark.minimum(0, t), "float64", map1(function(x) return math.min(0, x) end, xs), "minimum(0, t)")
    check(t:fmod(1.5), "float64", map1(function(x) return math.fmod(x, 1.5) end, xs), "fmod(t, 1.5)")
    check(t:gt(1), "bool", map1(function(x) return x > 1 end, xs), "t > 1")
    check(lark.lt(1, t), "bool", map1(function(x) return 1 < x end, xs), "1 < t")
    check(t:eq(4), "bool", map1(function(x) return x == 4 end, xs), "t == 4")
    check(t:logical_and(true), "bool", map1(function(x) return x ~= 0 end, xs), "t and true")
    -- integer tensors keep their dtype with integer scalars
    local i = lark.tensor({-3, 0, 5}, "int64")
    check(10 - i, "int64", {13, 10, 5}, "10 - i")
    check(i * 3, "int64", {-9, 0, 15}, "i * 3")
    check(i ^ 2, "int64", {9, 0, 25}, "i ^ 2")
    check(2 ^ i, "int64", {0, 1, 32}, "2 ^ i") -- 2^-3 is 0 in integers
    check(i / 2, "float32", {-1.5, 0, 2.5}, "i / 2")
    expect_error("add: argument 2: expected a Tensor or a number, got string", function() return i + "1" end)
    expect_error("maximum: argument 1: expected a Tensor or a number, got nil", function() return lark.maximum(nil, i) end)
    expect_error("mul: expected at least one Tensor, got two numbers", function() return lark.mul(2, 3) end)
  end)

  it("have in-place forms that return self and cast to its dtype", function()
    for _, dt in ipairs({"float32", "float64", "int64"}) do
      local a0, b = operands(24, dt)
      for _, op in ipairs(BINARY_OPS) do
        local a = a0:clone()
        local r = a[op .. "_"](a, b)
        assert.are.equal(a, r, op .. "_ returns self")
        assert.are.equal(dt, a:dtype())
        local want = lark[op](a0, b):to(dt)
        assert_same(flat(a), flat(want), op .. "_ on " .. dt)
      end
    end
    -- with a number
    local t = lark.tensor({1, 2, 3}, "int64")
    assert.are.equal(t, t:mul_(4))
    assert.are.same({4, 8, 12}, t:table())
    t:sub_(1):div_(2) -- integer in place: the true quotient truncated back to int64
    assert.are.same({1, 3, 5}, t:table())
    local f = lark.tensor({1, 2, 3})
    f:pow_(2):add_(0.5)
    assert.are.same({1.5, 4.5, 9.5}, f:table())
    -- int64 stays exact past 2^53 (where doubles skip odd integers), in place as out of place
    local big = lark.tensor({2 ^ 53}, "int64") + 1
    assert.are.equal(9007199254740993, big:item())
    assert.are.equal(9007199254740993, big[1])
    local c = big:clone()
    c:add_(1)
    assert.are.equal(9007199254740994, c:item())
    c:mul_(3):sub_(1):fmod_(1000000007)
    assert.are.equal((9007199254740994 * 3 - 1) % 1000000007, c:item())
    assert.are.equal((big * 3):item(), big:clone():mul_(3):item())
    assert.are.equal(math.mininteger, (lark.tensor({2}, "int64") ^ 63):item()) -- wraps, like t ^ 63
    assert.are.equal(math.mininteger, lark.tensor({2}, "int64"):pow_(63):item())
    local u = lark.tensor({250, 3}, "uint8")
    u:add_(10) -- wraps like the out-of-place op
    assert.are.same({4, 13}, u:table())
    -- the in-place result has the left operand's shape; broadcasting the right one is fine
    local m = lark.ones(2, 3)
    m:mul_(lark.tensor({1, 2, 3}))
    assert.are.same({{1, 2, 3}, {1, 2, 3}}, m:table())
  end)

  it("refuse to write into an expanded view, whose elements share memory", function()
    local base = lark.zeros(1, 3)
    local e = base:expand(4, 3)
    expect_error("add_: the tensor is an expanded view whose elements share memory (dim 1 has stride 0)",
      function() return e:add_(lark.ones(4, 3)) end)
    expect_error("mul_: the tensor is an expanded view", function() return e:mul_(2) end)
    expect_error("exp_: the tensor is an expanded view", function() return e:exp_() end)
    expect_error("clamp_: the tensor is an expanded view", function() return e:clamp_(0, 1) end)
    assert.are.same({{0, 0, 0}}, base:table())
    -- out-of-place ops read expanded views freely, and size-1 dims are fine to write
    assert.are.same({{1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}}, (e + 1):table())
    base:add_(lark.ones(1, 3))
    assert.are.same({{1, 1, 1}}, base:table())
  end)

  it("scale the second operand by alpha in add and sub", function()
    local a = lark.tensor({1, 2, 3}, "float64")
    local b = lark.tensor({10, 20, 30}, "float64")
    assert.are.same({21, 42, 63}, lark.add(a, b, 2):table())
    assert.are.same({-4, -8, -12}, a:sub(b, 0.5):table())
    assert.are.same({7, 8, 9}, a:add(3, 2):table())
    local c = a:clone()
    assert.are.equal(c, c:add_(b, -1))
    assert.are.same({-9, -18, -27}, c:table())
    c:sub_(b, -0.1)
    assert_near(c, {-8, -16, -24}, 1e-14)
    -- an integer alpha keeps integer tensors integer
    local i = lark.tensor({1, 2}, "int64")
    local r = i:add(i, 3)
    assert.are.equal("int64", r:dtype())
    assert.are.same({4, 8}, r:table())
    assert.are.equal("int64", i:sub(5, 2):dtype())
    assert.are.same({-9, -8}, i:sub(5, 2):table())
    assert.are.equal("float32", i:add(i, 0.5):dtype())
    assert.are.same({1.5, 3}, i:add(i, 0.5):table())
  end)
end)

describe("dtype promotion", function()
  local function t(dt) return lark.ones(2, {dtype = dt}) end

  it("follows bool < uint8 < int64 < float32 < float64", function()
    assert.are.equal("float32", (t("int64") + t("float32")):dtype())
    assert.are.equal("float64", (t("float32") + t("float64")):dtype())
    assert.are.equal("int64", (t("uint8") + t("int64")):dtype())
    assert.are.equal("uint8", (t("bool") + t("uint8")):dtype())
    assert.are.equal("float64", (t("bool") * t("float64")):dtype())
    assert.are.equal("float32", lark.maximum(t("uint8"), t("float32")):dtype())
  end)

  it("gives float32 for division of integers, bool for comparisons and logical ops", function()
    assert.are.equal("float32", (t("int64") / t("int64")):dtype())
    assert.are.equal("float32", (t("uint8") / t("uint8")):dtype())
    assert.are.equal("float32", (t("bool") / t("bool")):dtype())
    assert.are.equal("float64", (t("float64") / t("int64")):dtype())
    for _, op in ipairs({"eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor"}) do
      assert.are.equal("bool", lark[op](t("float64"), t("int64")):dtype(), op)
      assert.are.equal("bool", lark[op](t("uint8"), 1):dtype(), op)
    end
  end)

  it("keeps the tensor's dtype for a number of its kind", function()
    assert.are.equal("uint8", (t("uint8") + 1):dtype())
    assert.are.same({2, 2}, (t("uint8") + 257):table()) -- the number wraps into uint8 too
    assert.are.equal("int64", (t("int64") * 2):dtype())
    assert.are.equal("float32", (t("int64") + 2.5):dtype())
    assert.are.same({3.5, 3.5}, (t("int64") + 2.5):table())
    assert.are.equal("float32", (t("uint8") * 0.5):dtype())
    assert.are.equal("float64", (t("float64") + 1):dtype())
    assert.are.equal("float32", (t("float32") + 1e300):dtype())
    assert.are.equal("bool", (t("bool") + t("bool")):dtype())
    assert.are.equal("int64", (t("bool") + 1):dtype())
    assert.are.same({2, 2}, (t("bool") + 1):table())
    assert.are.equal("float32", (t("bool") * 1.5):dtype())
  end)

  it("computes mixed dtypes in the promoted dtype", function()
    local i = lark.tensor({7, -7, 3}, "int64")
    local f = lark.tensor({2, 2, 0.5}, "float64")
    check(i / f, "float64", {3.5, -3.5, 6}, "int64 / float64")
    check(i:fmod(f), "float64", {1, -1, 0}, "int64 fmod float64")
    local u = lark.tensor({200, 100}, "uint8")
    check(u + lark.tensor({100, -200}, "int64"), "int64", {300, -100}, "uint8 + int64 does not wrap")
    check(u + u, "uint8", {144, 200}, "uint8 + uint8 wraps")
  end)
end)

describe("NaN", function()
  local nan = 0 / 0

  it("propagates through maximum and minimum from either side", function()
    local a = lark.tensor({nan, 1, nan, -2}, "float64")
    local b = lark.tensor({1, nan, nan, 3}, "float64")
    check(lark.maximum(a, b), "float64", {nan, nan, nan, 3})
    check(lark.minimum(a, b), "float64", {nan, nan, nan, -2})
    check(lark.maximum(a:float(), b:float()), "float32", {nan, nan, nan, 3})
    check(lark.minimum(b:float(), a:float()), "float32", {nan, nan, nan, -2})
  end)

  it("passes through relu and clamp, and compares false", function()
    local a = lark.tensor({nan, -1, 2})
    check(a:relu(), "float32", {nan, 0, 2})
    check(a:clamp(0, 1), "float32", {nan, 0, 1})
    check(a:clamp(nil, 0), "float32", {nan, -1, 0})
    check(a:sign(), "float32", {nan, -1, 1})
    check(a:eq(a), "bool", {false, true, true})
    check(a:ne(a), "bool", {true, false, false})
    check(a:lt(5), "bool", {false, true, true})
    check(a:ge(-5), "bool", {false, true, true})
  end)
end)

describe("division and fmod by zero", function()
  it("give 0 for integer fmod, without crashing", function()
    local i = lark.tensor({7, -7, 0}, "int64")
    check(i:fmod(lark.zeros(3, {dtype = "int64"})), "int64", {0, 0, 0})
    check(i:fmod(0), "int64", {0, 0, 0})
    check(lark.tensor({5, 0}, "uint8"):fmod(lark.tensor({0, 0}, "uint8")), "uint8", {0, 0})
    local min = lark.tensor({math.mininteger, 7}, "int64")
    check(min:fmod(-1), "int64", {0, 0}) -- INT64_MIN % -1 traps in C
    local j = i:clone()
    j:fmod_(0)
    assert.are.same({0, 0, 0}, j:table())
  end)

  it("divide integers truly: x / 0 is inf or nan in float32", function()
    local i = lark.tensor({7, -7, 0}, "int64")
    check(i / 0, "float32", {math.huge, -math.huge, 0 / 0})
    check(i / lark.zeros(3, {dtype = "int64"}), "float32", {math.huge, -math.huge, 0 / 0})
    check(lark.tensor({1.5, -1.5, 0}) / 0, "float32", {math.huge, -math.huge, 0 / 0})
    check(lark.tensor({1, 0}):fmod(0), "float32", {0 / 0, 0 / 0})
    -- in place on an integer tensor the quotient is converted back: inf saturates, nan is 0
    local j = i:clone()
    j:div_(0)
    assert.are.same({math.maxinteger, math.mininteger, 0}, j:table())
  end)

  it("raises integer powers without overflow traps", function()
    check(lark.tensor({2, -1, 1, 0, 3}, "int64") ^ lark.tensor({-1, -3, -2, -1, 40}, "int64"), "int64",
      {0, -1, 1, 0, ipow(3, 40)}) -- 3^40 wraps modulo 2^64 in both
    check(lark.tensor({2}, "int64") ^ 64, "int64", {0}) -- wraps modulo 2^64
    check(lark.tensor({3}, "uint8") ^ 5, "uint8", {243})
    check(lark.tensor({3}, "uint8") ^ 6, "uint8", {729 % 256})
  end)
end)

describe("unary ops", function()
  it("match the reference for every op and dtype", function()
    for _, dt in ipairs(DTYPES) do
      local a = operands(40, dt)
      local xs = flat(a)
      for _, op in ipairs(UNARY_OPS) do
        if dt == "bool" and op == "neg" then
          expect_error("neg: not defined for bool tensors (use logical_not)", function() return a:neg() end)
        else
          local rdt, want = unary_ref(op, dt, xs)
          check(lark[op](a), rdt, want, op .. " on " .. dt)
          check(a[op](a), rdt, want, op .. " method on " .. dt)
        end
      end
    end
  end)

  it("round half to even and keep the sign of zero", function()
    check(lark.tensor({0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 2.5001}, "float64"):round(), "float64",
      {0, 2, 2, 0, -2, -2, 2, 3})
    local z = lark.tensor({-0.4}, "float64"):round():item()
    assert.are.equal(-math.huge, 1 / z) -- -0.0
  end)

  it("have in-place forms that return self", function()
    for _, op in ipairs(UNARY_OPS) do
      local a0 = float_operands(20, "float64")
      local a = a0:clone()
      assert.are.equal(a, a[op .. "_"](a), op .. "_ returns self")
      assert.are.equal("float64", a:dtype())
      assert_same(flat(a), flat(lark[op](a0):double()), op .. "_")
    end
    -- an integer tensor gets the float result converted back
    local i = lark.tensor({1, 4, 9}, "int64")
    i:sqrt_()
    assert.are.same({1, 2, 3}, i:table())
    local e = lark.tensor({0, 1, 2}, "int64")
    e:exp_()
    assert.are.same({1, 2, 7}, e:table())
    local b = lark.tensor({0, 2, -1}, "float64")
    b:logical_not_()
    assert.are.same({1, 0, 0}, b:table())
  end)
end)

describe("clamp", function()
  it("bounds below, above or both, in place too", function()
    local t = lark.tensor({-2, -0.5, 0.5, 2}, "float64")
    check(t:clamp(-1, 1), "float64", {-1, -0.5, 0.5, 1})
    check(lark.clamp(t, 0), "float64", {0, 0, 0.5, 2})
    check(t:clamp(nil, 0), "float64", {-2, -0.5, 0, 0})
    check(t:clamp(1, -1), "float64", {-1, -1, -1, -1}) -- min(max(x, lo), hi): hi wins
    local c = t:clone()
    assert.are.equal(c, c:clamp_(-1, 0))
    assert.are.same({-1, -0.5, 0, 0}, c:table())
    expect_error("clamp: at least one of min and max must be given", function() return t:clamp() end)
    expect_error("clamp: not defined for bool tensors", function() return lark.tensor({true}):clamp(0, 1) end)
  end)

  it("keeps integer dtypes, rounding the bounds inward", function()
    local i = lark.tensor({-5, -1, 0, 3, 9}, "int64")
    check(i:clamp(-1.5, 3.7), "int64", {-1, -1, 0, 3, 3})
    check(lark.tensor({0, 100, 255}, "uint8"):clamp(10, 300), "uint8", {10, 100, 255})
    check(lark.tensor({0, 100, 255}, "uint8"):clamp(-5, 50), "uint8", {0, 50, 50})
  end)

  it("works on non-contiguous views without touching the rest", function()
    local m = lark.tensor({{-3, 3}, {-4, 4}, {5, -5}}, "float64")
    local c = m:t():clamp(-1, 1)
    assert.are.same({{-1, -1, 1}, {1, 1, -1}}, c:table())
    m:select(2, 1):clamp_(0, 1)
    assert.are.same({{0, 3}, {0, 4}, {1, -5}}, m:table())
  end)
end)

describe("where", function()
  it("picks from a where the condition holds and from b elsewhere, broadcasting all three", function()
    local cond = lark.tensor({{true, false, true}, {false, false, true}})
    local a = lark.tensor({{1, 2, 3}, {4, 5, 6}})
    local b = lark.tensor({-1, -2, -3})
    check(lark.where(cond, a, b), "float32", {1, -2, 3, -1, -2, 6})
    check(lark.where(lark.tensor({true, false}):view(2, 1), a, b), "float32", {1, 2, 3, -1, -2, -3})
    check(lark.where(cond, a, 0), "float32", {1, 0, 3, 0, 0, 6})
    check(lark.where(cond, 7, b), "float32", {7, -2, 7, -1, -2, 7})
    check(lark.where(lark.tensor({2, 0}, "uint8"), 1, 2), "float32", {1, 2}) -- uint8 condition: non-zero
    check(lark.where(cond:narrow(1, 1, 1), lark.tensor({1, 2, 3}, "int64"), lark.tensor({0, 0, 0}, "int64")), "int64",
      {1, 0, 3})
    check(lark.where(cond, a:double(), b:long()), "float64", {1, -2, 3, -1, -2, 6})
    check(lark.where(lark.tensor({true, false}), lark.tensor({1, 2}, "int64"), 2.5), "float32", {1, 2.5})
    expect_error("where: the condition must be a bool or uint8 tensor, got float32", function() return lark.where(a, a, b) end)
    expect_error("where: shapes [2] and [2,3] cannot be broadcast",
      function() return lark.where(lark.tensor({true, false}), a, b) end)
  end)
end)

describe("big and non-contiguous inputs", function()
  -- 200 x 200 = 40000 elements: above the 32768 threshold, so the OpenMP kernels run
  local N = 200
  local a = lark.tensor(rand_table({N, N}, -3, 3))
  local b = lark.tensor(rand_table({N, N}, -3, 3))
  local ai = (a * 3):long()
  local bi = (b * 3):long()

  it("match the reference on a big contiguous tensor", function()
    local xs, ys = flat(a), flat(b)
    for _, op in ipairs(BINARY_OPS) do
      local rdt, want = binary_ref(op, "float32", xs, ys)
      check(lark[op](a, b), rdt, want, op .. " big")
    end
    for _, op in ipairs(UNARY_OPS) do
      local rdt, want = unary_ref(op, "float32", xs)
      check(lark[op](a), rdt, want, op .. " big")
    end
    local is, js = flat(ai), flat(bi)
    for _, op in ipairs({"add", "sub", "mul", "maximum", "fmod", "lt"}) do
      local rdt, want = binary_ref(op, "int64", is, js)
      check(lark[op](ai, bi), rdt, want, op .. " big int64")
    end
    check(a:clamp(-1, 1), "float32", map1(function(x) return math.max(-1, math.min(1, x)) end, xs), "clamp big")
  end)

  -- Each layout gives exactly the values of the same op on contiguous copies of the operands. The
  -- layout only changes the shared strided loop, not the per-element expression, so a few ops of
  -- each output kind (same dtype, bool; binary, unary) cover it.
  local function same_as_contiguous(x, y, what)
    local xc, yc = x:contiguous(), y:contiguous()
    assert.is_true(xc:is_contiguous())
    for _, op in ipairs({"add", "div", "pow", "maximum", "le", "logical_xor"}) do
      assert_same(flat(lark[op](x, y)), flat(lark[op](xc, yc)), op .. " on " .. what)
    end
    for _, op in ipairs({"neg", "exp", "relu", "logical_not"}) do
      assert_same(flat(lark[op](x)), flat(lark[op](xc)), op .. " on " .. what)
    end
    assert_same(flat(x:clamp(-1, 0.5)), flat(xc:clamp(-1, 0.5)), "clamp on " .. what)
    assert_same(flat(lark.where(x:gt(y), x, y)), flat(lark.where(xc:gt(yc), xc, yc)), "where on " .. what)
    -- in place into a non-contiguous destination
    local d, dc = x:clone():t(), xc:t():contiguous()
    d:mul_(y:t())
    dc:mul_(yc:t())
    assert_same(flat(d), flat(dc), "mul_ into a transposed tensor, " .. what)
  end

  it("give the same results on transposed inputs", function()
    assert.is_false(a:t():is_contiguous())
    same_as_contiguous(a:t(), b, "a transposed and a contiguous operand")
    same_as_contiguous(a:t(), b:t(), "two transposed operands")
  end)

  it("give the same results on narrowed inputs", function()
    local wide = lark.tensor(rand_table({N + 30, N + 50}, -3, 3))
    local n = wide:narrow(1, 11, N):narrow(2, 21, N)
    assert.is_false(n:is_contiguous())
    same_as_contiguous(n, b, "a narrowed operand")
    local every_other = lark.tensor(rand_table({N, 2 * N}, -3, 3))[{{}, {1, 2 * N, 2}}]
    assert.are.same({N, N}, {every_other:size(1), every_other:size(2)})
    same_as_contiguous(every_other, a:t(), "a step-2 slice and a transposed operand")
  end)

  it("give the same results on expanded inputs", function()
    local row = lark.tensor(rand_table({1, N}, -3, 3)):expand(N, N)
    local col = lark.tensor(rand_table({N, 1}, -3, 3)):expand(N, N)
    assert.are.equal(0, row:stride(1))
    same_as_contiguous(row, b, "an expanded row")
    same_as_contiguous(col, row, "an expanded column and row")
    local s = lark.tensor(0.25):expand(N, N)
    same_as_contiguous(s, a:t(), "an expanded 0-d tensor")
    same_as_contiguous(ai:t():double(), bi:double(), "converted integers")
  end)
end)
