-- broadcast_spec.lua: NumPy broadcasting of binary ops, where and copy_, against a reference that
-- maps every output coordinate back to each operand in plain Lua; in-place ops that must fit their
-- left operand; size-0 dims; and the error messages.

math.randomseed(7)

-- The element of tensor table `tab` (of shape sh) that output coordinate c reads when broadcast.
local function bget(tab, sh, c)
  local n = #c
  for d = 1, #sh do
    tab = tab[sh[d] == 1 and 1 or c[n - #sh + d]]
  end
  return tab
end

-- The broadcast shape of two shapes, as NumPy defines it (nil if they do not broadcast).
local function bshape(sa, sb)
  local n = math.max(#sa, #sb)
  local out = {}
  for i = 1, n do
    local x = sa[#sa - n + i] or 1
    local y = sb[#sb - n + i] or 1
    if x ~= y and x ~= 1 and y ~= 1 then return nil end
    out[i] = x == 1 and y or x
  end
  return out
end

-- lark.<op>(a, b) against f applied to the broadcast elements.
local function check_binary(op, a, b, f, tol)
  local sa, sb = shape_of(a), shape_of(b)
  local want_shape = bshape(sa, sb)
  local r = lark[op](a, b)
  assert.are.same(want_shape, shape_of(r), op .. " result shape")
  local at, bt, rt = a:table(), b:table(), r:table()
  for _, c in ipairs(coords(want_shape)) do
    local want = f(bget(at, sa, c), bget(bt, sb, c))
    local got = #c == 0 and rt or bget(rt, want_shape, c)
    if tol then
      assert_near(got, want, tol)
    else
      assert.are.equal(want, got, op .. " at " .. table.concat(c, ","))
    end
  end
  return r
end

local function add(x, y) return x + y end
local function mul(x, y) return x * y end

-- Small whole numbers (-9 .. 9) of dtype dt, so that every op below is exact.
local function rand_int_tensor(sh, dt) return rand_tensor(sh, dt, -9, 9):round() end

describe("broadcasting", function()
  it("[3,1] + [1,4] -> [3,4]", function()
    local a = lark.tensor({{1}, {2}, {3}})
    local b = lark.tensor({{10, 20, 30, 40}})
    local r = check_binary("add", a, b, add)
    assert.are.same({{11, 21, 31, 41}, {12, 22, 32, 42}, {13, 23, 33, 43}}, r:table())
    check_binary("sub", b, a, function(x, y) return x - y end)
  end)

  it("[2,3,4] + [4] and [4] + [2,3,4]", function()
    local a = rand_int_tensor({2, 3, 4}, "float64")
    local b = lark.tensor({1, 2, 3, 4}, "float64")
    check_binary("add", a, b, add)
    check_binary("add", b, a, add)
    check_binary("mul", a, b:view(1, 1, 4), mul)
    check_binary("gt", a, b, function(x, y) return x > y end)
  end)

  it("[5,1,3] + [4,1] -> [5,4,3]", function()
    local a = rand_int_tensor({5, 1, 3}, "int64")
    local b = rand_int_tensor({4, 1}, "int64")
    local r = check_binary("add", a, b, add)
    assert.are.same({5, 4, 3}, shape_of(r))
    assert.are.equal("int64", r:dtype())
    check_binary("maximum", b, a, math.max)
  end)

  it("a 0-d tensor goes with anything", function()
    local s = lark.tensor(2.5, "float64")
    local m = rand_int_tensor({2, 3}, "float64")
    check_binary("add", s, m, add)
    check_binary("mul", m, s, mul)
    local r = s + lark.tensor(4, "float64")
    assert.are.equal(0, r:dim())
    assert.are.equal(6.5, r:item())
    assert.are.same({0}, shape_of(s + lark.zeros(0, {dtype = "float64"})))
    assert.are.same({1, 1, 1}, shape_of(s * lark.ones(1, 1, 1, {dtype = "float64"})))
    assert.are.same({3}, shape_of(lark.where(lark.tensor(true), lark.ones(3), 0)))
  end)

  it("handles size-0 dims", function()
    assert.are.same({0, 3}, shape_of(lark.zeros(0, 3) + lark.ones(1, 3)))
    assert.are.same({0, 3}, shape_of(lark.ones(1, 3) * lark.zeros(0, 3)))
    assert.are.same({0, 3}, shape_of(lark.zeros(0, 3) + lark.ones(3)))
    assert.are.same({2, 0}, shape_of(lark.zeros(2, 0) + lark.ones(2, 1)))
    assert.are.same({4, 0, 3}, shape_of(lark.zeros(0, 1):lt(lark.ones(4, 1, 3))))
    assert.are.same({0}, shape_of(lark.zeros(0) - lark.tensor({7})))
    assert.are.equal(0, (lark.zeros(0, 3) + lark.ones(1, 3)):numel())
    expect_error("add: shapes [0,3] and [2,3] cannot be broadcast", function() return lark.zeros(0, 3) + lark.ones(2, 3) end)
    local e = lark.zeros(0, 3)
    assert.are.equal(e, e:add_(lark.ones(3))) -- in place on nothing is fine
  end)

  it("matches the reference for random broadcastable shapes, dtypes and ops", function()
    local ops = {
      {"add", add}, {"mul", mul}, {"sub", function(x, y) return x - y end},
      {"minimum", math.min}, {"ge", function(x, y) return x >= y end},
    }
    for _ = 1, 60 do
      local n = math.random(0, 4)
      local full = {}
      for i = 1, n do full[i] = math.random(1, 4) end
      local function part()
        local k = math.random(0, n)
        local s = {}
        for i = 1, k do s[i] = math.random(1, 3) == 1 and 1 or full[n - k + i] end
        return s
      end
      local sa, sb = part(), part()
      if math.random(1, 2) == 1 then sa = table.move(full, 1, n, 1, {}) end
      local dt = ({"float64", "int64", "float32"})[math.random(1, 3)]
      local a, b = rand_int_tensor(sa, dt), rand_int_tensor(sb, dt)
      -- sometimes a transposed operand of the same shape
      if #sa >= 2 and math.random(1, 2) == 1 then
        local rev = {}
        for i = 1, #sa do rev[i] = sa[#sa + 1 - i] end
        local perm = {}
        for i = 1, #sa do perm[i] = #sa + 1 - i end
        a = rand_int_tensor(rev, dt):permute(perm)
        assert.are.same(sa, shape_of(a))
      end
      local op = ops[math.random(1, #ops)]
      check_binary(op[1], a, b, op[2])
    end
  end)

  it("works with expanded, transposed and narrowed operands", function()
    local base = rand_int_tensor({4, 6}, "float64")
    local t = base:t()                          -- [6,4], non-contiguous
    local col = base:narrow(2, 2, 1)            -- [4,1], stride 6
    local row = base:select(2, 3):view(1, 4)    -- [1,4], stride 6 along the row
    check_binary("add", t, row, add)
    check_binary("mul", col:t(), t, mul)          -- [1,4] * [6,4]
    check_binary("sub", col, row, function(x, y) return x - y end) -- [4,1] - [1,4]
    local e = lark.tensor({1, 2, 3}, "float64"):view(3, 1):expand(3, 5)
    check_binary("add", e, lark.tensor({10, 20, 30, 40, 50}, "float64"), add)
  end)
end)

describe("in-place broadcasting", function()
  it("broadcasts the right operand into the left one", function()
    local a = lark.ones(2, 3)
    assert.are.equal(a, a:add_(lark.tensor({1, 2, 3})))
    assert.are.same({{2, 3, 4}, {2, 3, 4}}, a:table())
    a:mul_(lark.tensor({{2}, {-1}}))
    assert.are.same({{4, 6, 8}, {-2, -3, -4}}, a:table())
    a:sub_(lark.tensor(1))
    assert.are.same({{3, 5, 7}, {-3, -4, -5}}, a:table())
    local v = lark.zeros(3, 4)
    v:narrow(2, 2, 2):add_(lark.tensor({{1}, {2}, {3}}))
    assert.are.same({{0, 1, 1, 0}, {0, 2, 2, 0}, {0, 3, 3, 0}}, v:table())
  end)

  it("refuses a result bigger than the left operand", function()
    expect_error("add_: in place, the result of shape [2,3] would not fit the tensor of shape [1,3]",
      function() return lark.ones(1, 3):add_(lark.ones(2, 3)) end)
    expect_error("mul_: in place, the result of shape [2,3] would not fit the tensor of shape [3]",
      function() return lark.ones(3):mul_(lark.ones(2, 1)) end)
    expect_error("add_: in place, the result of shape [3] would not fit the tensor of shape []",
      function() return lark.tensor(1):add_(lark.ones(3)) end)
    local a = lark.ones(1, 3)
    pcall(function() return a:add_(lark.ones(2, 3)) end)
    assert.are.same({{1, 1, 1}}, a:table()) -- untouched by the failed op
  end)
end)

describe("broadcasting errors", function()
  it("name the op and both shapes", function()
    expect_error("add: shapes [2,3] and [4] cannot be broadcast", function() return lark.ones(2, 3) + lark.ones(4) end)
    expect_error("add: shapes [2,3] and [4] cannot be broadcast", function() return lark.add(lark.ones(2, 3), lark.ones(4)) end)
    expect_error("sub: shapes [3] and [2] cannot be broadcast", function() return lark.ones(3):sub(lark.ones(2)) end)
    expect_error("lt: shapes [2,1,3] and [4,2] cannot be broadcast", function() return lark.ones(2, 1, 3):lt(lark.ones(4, 2)) end)
    expect_error("logical_and: shapes [2] and [3] cannot be broadcast",
      function() return lark.ones(2):logical_and(lark.ones(3)) end)
    expect_error("copy: shape [2,3] cannot be broadcast to [3,2]", function() return lark.zeros(3, 2):copy_(lark.ones(2, 3)) end)
  end)
end)

describe("broadcasting in where and copy_", function()
  it("where broadcasts condition and values together", function()
    local cond = lark.tensor({{true}, {false}})       -- [2,1]
    local a = lark.tensor({1, 2, 3}, "float64")       -- [3]
    local b = lark.tensor(-1, "float64")              -- []
    local r = lark.where(cond, a, b)
    assert.are.same({{1, 2, 3}, {-1, -1, -1}}, r:table())
    local r2 = lark.where(lark.tensor({true, false, true}), lark.ones(2, 1, {dtype = "float64"}), a)
    assert.are.same({{1, 2, 1}, {1, 2, 1}}, r2:table())
  end)

  it("copy_ broadcasts the source to the destination", function()
    local d = lark.zeros(2, 3, 2, {dtype = "int64"})
    d:copy_(lark.tensor({{5}, {6}, {7}}, "int64"))
    assert.are.same({{{5, 5}, {6, 6}, {7, 7}}, {{5, 5}, {6, 6}, {7, 7}}}, d:table())
  end)
end)
