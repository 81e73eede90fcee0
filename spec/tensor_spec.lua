-- tensor_spec.lua: the Tensor itself: construction, dtypes, factories, queries, item/table,
-- conversions, copy_/clone/contiguous/fill_, free() and <close>, and printing.
-- References are plain Lua: nested tables, string.pack for float32 rounding, integer arithmetic.

local function f32(x) return (string.unpack("f", string.pack("f", x))) end

describe("lark.tensor", function()
  it("builds from nested tables with the table's shape and row-major values", function()
    local t = lark.tensor({{1, 2, 3}, {4, 5, 6}})
    assert.are.same({2, 3}, shape_of(t))
    assert.are.equal("float32", t:dtype()) -- Torch7's default tensor type, even for integers
    assert.are.same({{1, 2, 3}, {4, 5, 6}}, t:table())
    local c = lark.tensor({{{1, 2}}, {{3, 4}}, {{5, 6}}})
    assert.are.same({3, 1, 2}, shape_of(c))
    assert.are.same({1, 2, 3, 4, 5, 6}, flat(c))
  end)

  it("rounds to float32 by default and keeps float64 exactly", function()
    local x = 0.1
    assert.are.equal(f32(x), lark.tensor({x}):table()[1])
    assert.are_not.equal(x, lark.tensor({x}):table()[1])
    assert.are.equal(x, lark.tensor({x}, {dtype = "float64"}):table()[1])
    assert.are.equal(x, lark.tensor({x}, "double"):table()[1]) -- a bare dtype string works too
  end)

  it("builds 0-d tensors from numbers and booleans", function()
    local s = lark.tensor(2.5)
    assert.are.equal(0, s:dim())
    assert.are.same({}, shape_of(s))
    assert.are.equal(1, s:numel())
    assert.are.equal(2.5, s:item())
    local b = lark.tensor(true)
    assert.are.equal("bool", b:dtype())
    assert.are.equal(true, b:item())
    local i = lark.tensor(-7, {dtype = "int64"})
    assert.are.equal(-7, i:item())
    assert.are.equal("integer", math.type(i:item()))
  end)

  it("makes bool tensors from booleans", function()
    local b = lark.tensor({{true, false}, {false, true}})
    assert.are.equal("bool", b:dtype())
    assert.are.same({{true, false}, {false, true}}, b:table())
  end)

  it("builds an empty 1-D tensor from {}", function()
    local e = lark.tensor({})
    assert.are.same({0}, shape_of(e))
    assert.are.equal(0, e:numel())
    assert.are.same({}, e:table())
  end)

  it("copies a tensor (never shares) and converts its dtype on request", function()
    local a = lark.tensor({1.5, -2.5, 3})
    local b = lark.tensor(a)
    assert.is_false(a:shares_storage(b))
    b:fill_(0)
    assert.are.same({1.5, -2.5, 3}, a:table())
    local c = lark.tensor(a, {dtype = "int64"})
    assert.are.equal("int64", c:dtype())
    assert.are.same({1, -2, 3}, c:table())
    -- a non-contiguous source copies its logical order
    local m = lark.tensor({{1, 2}, {3, 4}}):t()
    assert.are.same({{1, 3}, {2, 4}}, lark.tensor(m):table())
  end)

  it("rejects ragged tables and non-numbers", function()
    expect_error("tensor: the table is not rectangular", function() return lark.tensor({{1, 2}, {3}}) end)
    expect_error("tensor: expected numbers or booleans in the table, got string", function() return lark.tensor({1, "x"}) end)
    expect_error("tensor: argument 1: expected a table of numbers, a number or a Tensor, got nil",
      function() return lark.tensor(nil) end)
  end)
end)

describe("dtypes", function()
  it("accepts every name and alias", function()
    local names = {float32 = "float32", float = "float32", float64 = "float64", double = "float64", int64 = "int64",
      long = "int64", uint8 = "uint8", byte = "uint8", bool = "bool"}
    for alias, name in pairs(names) do
      assert.are.equal(name, lark.zeros(2, {dtype = alias}):dtype())
      assert.are.equal(name, lark.tensor({1, 0}, alias):dtype())
    end
    expect_error("expected a dtype ('float32', 'float64', 'int64', 'uint8' or 'bool'), got half",
      function() return lark.zeros(2, {dtype = "half"}) end)
  end)

  it("stores each dtype with its own range", function()
    assert.are.same({1, 2, 3}, lark.tensor({1, 2, 3}, "int64"):table())
    assert.are.same({0, 255, 1}, lark.tensor({256, -1, 257}, "uint8"):table()) -- wraps modulo 256
    assert.are.same({true, false, true}, lark.tensor({2, 0, -0.5}, "bool"):table())
    assert.are.equal(2 ^ 40, lark.tensor({2 ^ 40}, "int64"):table()[1])
    assert.is_true(lark.ones(1):is_floating_point())
    assert.is_true(lark.ones(1, {dtype = "float64"}):is_floating_point())
    assert.is_false(lark.ones(1, {dtype = "int64"}):is_floating_point())
  end)
end)

describe("factories", function()
  it("zeros, ones and empty take sizes as varargs or a table, then options", function()
    local z = lark.zeros(2, 3)
    assert.are.same({2, 3}, shape_of(z))
    assert.are.equal("float32", z:dtype())
    assert.are.same({0, 0, 0, 0, 0, 0}, flat(z))
    local o = lark.ones({3, 1, 2}, {dtype = "int64"})
    assert.are.same({3, 1, 2}, shape_of(o))
    assert.are.same({1, 1, 1, 1, 1, 1}, flat(o))
    assert.are.equal("int64", o:dtype())
    assert.are.equal("uint8", lark.ones(4, "uint8"):dtype())
    local e = lark.empty(4, 5, {dtype = "float64"})
    assert.are.same({4, 5}, shape_of(e))
    assert.are.equal("float64", e:dtype())
    assert.is_true(e:is_contiguous())
    -- no sizes: a 0-d tensor
    assert.are.equal(0, lark.zeros():dim())
    assert.are.equal(0, lark.ones():dim())
    assert.are.equal(1, lark.ones():item())
    -- size-0 dims
    assert.are.equal(0, lark.zeros(3, 0, 2):numel())
    assert.are.same({3, 0, 2}, shape_of(lark.zeros(3, 0, 2)))
  end)

  it("full infers the dtype from the value unless told", function()
    local a = lark.full({2, 2}, 3)
    assert.are.equal("int64", a:dtype())
    assert.are.same({3, 3, 3, 3}, flat(a))
    assert.are.equal("float32", lark.full({2}, 3.5):dtype())
    assert.are.equal("bool", lark.full({2}, true):dtype())
    local b = lark.full({3}, -1.75, {dtype = "float64"})
    assert.are.same({-1.75, -1.75, -1.75}, b:table())
    assert.are.same({-1, -1}, lark.full({2}, -1.75, {dtype = "int64"}):table()) -- truncated toward zero
  end)

  it("arange is [start, end) by step, int64 for integer arguments", function()
    local a = lark.arange(5)
    assert.are.equal("int64", a:dtype())
    assert.are.same({0, 1, 2, 3, 4}, a:table())
    assert.are.same({2, 3, 4}, lark.arange(2, 5):table())
    assert.are.same({10, 7, 4, 1}, lark.arange(10, 0, -3):table())
    local f = lark.arange(0, 1, 0.25)
    assert.are.equal("float32", f:dtype())
    assert.are.same({0, 0.25, 0.5, 0.75}, f:table())
    assert.are.equal("float64", lark.arange(3, {dtype = "float64"}):dtype())
    assert.are.same({}, lark.arange(3, 3):table())
    -- 0.1 steps: computed as start + i * step, not by repeated addition
    local g = lark.arange(0, 1, 0.1, {dtype = "float64"}):table()
    assert.are.equal(10, #g)
    for i = 1, 10 do assert.are.equal((i - 1) * 0.1, g[i]) end
  end)

  it("range is Torch7's inclusive range", function()
    assert.are.same({1, 2, 3, 4, 5}, lark.range(1, 5):table())
    assert.are.equal("int64", lark.range(1, 5):dtype())
    assert.are.same({5, 3, 1}, lark.range(5, 1, -2):table())
    assert.are.same({0, 0.25, 0.5, 0.75, 1}, lark.range(0, 1, 0.25):table())
    assert.are.same({2}, lark.range(2, 2):table())
    -- options after the ends, or after the step
    assert.are.equal("float64", lark.range(1, 3, {dtype = "float64"}):dtype())
    assert.are.same({1, 2, 3}, lark.range(1, 3, "float64"):table())
    assert.are.same({1, 3}, lark.range(1, 4, 2, {dtype = "uint8"}):table())
    expect_error("range: a step of 1 never goes from 1 to 0", function() return lark.range(1, 0) end)
    expect_error("range: a step of -1 never goes from 1 to 2", function() return lark.range(1, 2, -1) end)
    expect_error("range: step must be non-zero", function() return lark.range(1, 2, 0) end)
  end)

  it("linspace hits both ends exactly", function()
    local l = lark.linspace(-1, 1, 5, {dtype = "float64"}):table()
    assert.are.same({-1, -0.5, 0, 0.5, 1}, l)
    local m = lark.linspace(0, 1, 7, {dtype = "float64"}):table()
    assert.are.equal(0, m[1])
    assert.are.equal(1, m[7])
    for i = 1, 7 do assert_near(m[i], (i - 1) / 6, 1e-15) end
    assert.are.same({3}, lark.linspace(3, 9, 1):table())
    assert.are.same({}, lark.linspace(3, 9, 0):table())
    assert.are.equal("float32", lark.linspace(0, 1, 3):dtype())
  end)

  it("eye puts ones on the diagonal", function()
    assert.are.same({{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}, lark.eye(3):table())
    assert.are.same({{1, 0, 0, 0}, {0, 1, 0, 0}}, lark.eye(2, 4):table())
    assert.are.same({{1, 0}, {0, 1}, {0, 0}}, lark.eye(3, 2):table())
    assert.are.equal("int64", lark.eye(2, {dtype = "int64"}):dtype())
    assert.are.equal(0, lark.eye(0):numel())
  end)

  it("*_like copy shape, dtype and device, and take overrides", function()
    local t = lark.ones(2, 3, {dtype = "int64"}):t() -- non-contiguous: the result is fresh and contiguous
    for _, f in ipairs({lark.zeros_like, lark.ones_like, lark.empty_like}) do
      local u = f(t)
      assert.are.same({3, 2}, shape_of(u))
      assert.are.equal("int64", u:dtype())
      assert.are.equal("cpu", u:device())
      assert.is_false(u:shares_storage(t))
    end
    assert.are.same({0, 0, 0, 0, 0, 0}, flat(lark.zeros_like(t)))
    assert.are.same({1, 1, 1, 1, 1, 1}, flat(lark.ones_like(t)))
    assert.are.equal("float64", lark.zeros_like(t, {dtype = "float64"}):dtype())
    local f = lark.full_like(t, 2.5, {dtype = "float32"})
    assert.are.same({2.5, 2.5, 2.5, 2.5, 2.5, 2.5}, flat(f))
    assert.are.same({2, 2, 2, 2, 2, 2}, flat(lark.full_like(t, 2.5))) -- keeps int64: truncates
    assert.are.equal(0, lark.zeros_like(lark.tensor(3)):dim())
  end)
end)

describe("queries", function()
  local t = lark.zeros(2, 3, 4)

  it("size, stride, dim, numel", function()
    assert.are.same({2, 3, 4}, shape_of(t))
    assert.are.equal(lark.zeros(2, 3, 4):size(), t:size()) -- sizes compare by value
    assert.are_not.equal(lark.zeros(2, 4, 3):size(), t:size())
    assert.are.equal(2, t:size(1))
    assert.are.equal(4, t:size(-1))
    assert.are.equal(3, t:size(-2))
    assert.are.equal(24, t:size():numel())
    assert.are.same({12, 4, 1}, {t:stride(1), t:stride(2), t:stride(3)})
    assert.are.equal(1, t:stride(-1))
    local st = t:stride()
    assert.are.same({12, 4, 1}, {st[1], st[2], st[3]})
    assert.are.equal(3, t:dim())
    assert.are.equal(24, t:numel())
    assert.are.equal(3, t:nDimension())
    assert.are.equal(24, t:nElement())
    assert.are.same({2, 3, 4}, {t.shape[1], t.shape[2], t.shape[3]})
    assert.are.equal(2, (#t)[1]) -- #t is the size, as in Torch7
    expect_error("size: argument 2: dim 4 is out of range for a tensor of 3 dims", function() return t:size(4) end)
    expect_error("dim 0 is out of range", function() return t:stride(0) end)
  end)

  it("is_same_size compares shapes only", function()
    assert.is_true(t:is_same_size(lark.ones(2, 3, 4, {dtype = "int64"})))
    assert.is_false(t:is_same_size(lark.ones(2, 4, 3)))
    assert.is_false(t:is_same_size(lark.ones(2, 3)))
    assert.is_true(t:size() == {2, 3, 4}) -- a size equals a plain table of the same sizes
    assert.are.equal("lark.Size{2, 3, 4}", tostring(t:size()))
  end)

  it("dtype, device, contiguity and storage offset", function()
    assert.are.equal("float32", t:dtype())
    assert.are.equal("cpu", t:device())
    assert.is_true(t:is_contiguous())
    assert.is_false(t:transpose(1, 3):is_contiguous())
    assert.is_true(t:narrow(1, 2, 1):is_contiguous())
    assert.is_false(t:narrow(3, 2, 2):is_contiguous())
    assert.is_true(t:select(1, 2):is_contiguous())
    assert.are.equal(1, t:storage_offset()) -- 1-based, as in Torch7
    assert.are.equal(1 + 12, t:select(1, 2):storage_offset())
    assert.are.equal(1 + 12 + 4 * 2 + 3, t:narrow(1, 2, 1):narrow(2, 3, 1):narrow(3, 4, 1):storage_offset())
    local s = lark.tensor(1)
    assert.are.equal(0, s:dim())
    assert.are.equal(1, s:numel())
    assert.is_true(s:is_contiguous())
    assert.are.equal(0, #s:size())
    assert.is_true(lark.is_tensor(t))
    assert.is_false(lark.is_tensor({}))
    assert.is_false(lark.is_tensor(3))
  end)
end)

describe("item and table", function()
  it("item gives the Lua type of the dtype", function()
    local v = lark.tensor({2.75}):item()
    assert.are.equal(2.75, v)
    assert.are.equal("float", math.type(v))
    assert.are.equal("float", math.type(lark.tensor({3}, "float64"):item()))
    local i = lark.tensor({{-12}}, "int64"):item()
    assert.are.equal(-12, i)
    assert.are.equal("integer", math.type(i))
    assert.are.equal(200, lark.tensor({200}, "uint8"):item())
    assert.are.equal("integer", math.type(lark.tensor({200}, "uint8"):item()))
    assert.are.equal(false, lark.tensor({false}):item())
    assert.are.equal(f32(0.3), lark.tensor(0.3):item())
    -- through views
    local m = lark.arange(12):view(3, 4)
    assert.are.equal(7, m:narrow(1, 2, 1):narrow(2, 4, 1):item())
    assert.are.equal(9, m:t()[{2, 3}])
  end)

  it("item refuses anything but one element", function()
    expect_error("item: expected a tensor of one element, got shape [2] (2 elements)", function() return lark.ones(2):item() end)
    expect_error("item: expected a tensor of one element, got shape [0]", function() return lark.ones(0):item() end)
  end)

  it("table nests by dim and reads views in their logical order", function()
    local m = lark.arange(6):view(2, 3)
    assert.are.same({{0, 1, 2}, {3, 4, 5}}, m:table())
    assert.are.same({{0, 3}, {1, 4}, {2, 5}}, m:t():table())
    assert.are.same({{1, 2}, {4, 5}}, m:narrow(2, 2, 2):table())
    assert.are.same({{0, 0, 0}, {0, 0, 0}}, lark.zeros(1, 3):expand(2, 3):table())
    assert.are.equal(5, lark.tensor(5):table()) -- 0-d: the number
    assert.are.same({{}, {}}, lark.zeros(2, 0):table())
    local tab = lark.ones(2, 2, {dtype = "int64"}):table()
    assert.are.equal("integer", math.type(tab[1][1]))
  end)
end)

describe("conversions", function()
  local x = lark.tensor({1.7, -1.7, 2.5, -2.5, 0.2, 300.9, -0.9}, {dtype = "float64"})

  it("float -> integer truncates toward zero", function()
    assert.are.same({1, -1, 2, -2, 0, 300, 0}, x:long():table())
    assert.are.equal("int64", x:long():dtype())
    -- uint8 wraps the truncated integer modulo 256
    assert.are.same({1, 255, 2, 254, 0, 44, 0}, x:byte():table())
    assert.are.equal("uint8", x:byte():dtype())
  end)

  it("NaN becomes 0 in integer dtypes, and infinities saturate", function()
    local n = lark.tensor({0 / 0, 1 / 0, -1 / 0, 1e30}, "float64")
    local l = n:long():table()
    assert.are.equal(0, l[1])
    assert.are.equal(math.maxinteger, l[2])
    assert.are.equal(math.mininteger, l[3])
    assert.are.equal(math.maxinteger, l[4])
    assert.are.equal(0, n:byte():table()[1])
    assert.are.equal(0, lark.tensor(0 / 0):long():item())
  end)

  it("bool is 'not zero' (NaN is true)", function()
    local b = lark.tensor({0, 0.1, -3, 0 / 0, -0.0}):bool()
    assert.are.equal("bool", b:dtype())
    assert.are.same({false, true, true, true, false}, b:table())
    assert.are.same({0, 1, 1, 1, 0}, b:long():table())
    assert.are.same({0, 1, 1, 1, 0}, b:float():table())
  end)

  it("float and double round and widen", function()
    local d = lark.tensor({0.1, 1 / 3, 1e-40, 3.4e38 * 10}, "float64")
    local f = d:float():table()
    assert.are.equal(f32(0.1), f[1])
    assert.are.equal(f32(1 / 3), f[2])
    assert.are.equal(f32(1e-40), f[3]) -- a float32 subnormal
    assert.are.equal(math.huge, f[4]) -- overflow rounds to inf
    assert.are.same(f, d:float():double():table())
    assert.are.equal(2 ^ 40 + 1, lark.tensor({2 ^ 40 + 1}, "int64"):double():table()[1])
  end)

  it("to takes a dtype, a device, an options table or a tensor; same dtype returns self", function()
    local t = lark.tensor({1.5, 2.5})
    assert.are.equal(t, t:to("float32"))
    assert.are.equal(t, t:float())
    assert.are.equal(t, t:to("cpu"))
    assert.are.equal(t, t:type("float32"))
    assert.are.equal("float32", t:type())
    local d = t:to("float64")
    assert.are.equal("float64", d:dtype())
    assert.is_false(d:shares_storage(t))
    assert.are.same({1, 2}, t:to({dtype = "int64"}):table())
    assert.are.equal("uint8", t:to(lark.zeros(1, {dtype = "uint8"})):dtype())
    assert.are.equal("int64", t:type("long"):dtype())
    assert.are.same({1.5, 2.5}, t:type("double"):table())
    expect_error("to: argument 2: 'gpu' is neither a dtype", function() return t:to("gpu") end)
  end)

  it("convert views in their logical order", function()
    local m = lark.tensor({{1.5, 2.5, 3.5}, {4.5, 5.5, 6.5}}):t()
    assert.are.same({{1, 4}, {2, 5}, {3, 6}}, m:long():table())
    assert.is_true(m:long():is_contiguous())
  end)
end)

describe("copy_, clone, contiguous", function()
  it("copy_ converts dtypes, broadcasts the source and returns self", function()
    local dst = lark.zeros(2, 3)
    local r = dst:copy_(lark.tensor({1, 2, 3}, "int64"))
    assert.are.equal(dst, r)
    assert.are.same({{1, 2, 3}, {1, 2, 3}}, dst:table())
    dst:copy_(lark.tensor({{-1.9}, {2.9}}, "float64"))
    assert.are.same({{f32(-1.9), f32(-1.9), f32(-1.9)}, {f32(2.9), f32(2.9), f32(2.9)}}, dst:table())
    local l = lark.zeros(2, 3, {dtype = "int64"})
    l:copy_(lark.tensor({{-1.9}, {2.9}}, "float64"))
    assert.are.same({{-1, -1, -1}, {2, 2, 2}}, l:table())
    local b = lark.zeros(3, {dtype = "bool"}):copy_(lark.tensor({0, 5, -0.5}))
    assert.are.same({false, true, true}, b:table())
    local u = lark.zeros(3, {dtype = "uint8"}):copy_(lark.tensor({true, false, true}))
    assert.are.same({1, 0, 1}, u:table())
    local s = lark.zeros(2, 2):copy_(lark.tensor(7)) -- a 0-d source fills everything
    assert.are.same({7, 7, 7, 7}, flat(s))
  end)

  it("copy_ writes through a non-contiguous destination", function()
    local base = lark.zeros(3, 4, {dtype = "float64"})
    base:t():copy_(lark.arange(12):view(4, 3))
    -- base:t()[i][j] = 3 * (i - 1) + (j - 1)  =>  base[j][i] = 3 * (i - 1) + (j - 1)
    local want = {}
    for j = 1, 3 do
      want[j] = {}
      for i = 1, 4 do want[j][i] = 3 * (i - 1) + (j - 1) end
    end
    assert.are.same(want, base:table())
    local part = lark.zeros(4, 4, {dtype = "int64"})
    part:narrow(2, 2, 2):copy_(lark.tensor({5, 6}, "int64"))
    assert.are.same({{0, 5, 6, 0}, {0, 5, 6, 0}, {0, 5, 6, 0}, {0, 5, 6, 0}}, part:table())
  end)

  it("copy_ refuses shapes that do not broadcast to the destination", function()
    expect_error("copy: shape [4] cannot be broadcast to [2,3]", function() return lark.zeros(2, 3):copy_(lark.ones(4)) end)
    expect_error("copy: shape [2,3] cannot be broadcast to [3]", function() return lark.zeros(3):copy_(lark.ones(2, 3)) end)
  end)

  it("clone copies into fresh contiguous storage", function()
    local a = lark.arange(6):view(2, 3):t()
    local c = a:clone()
    assert.is_false(c:shares_storage(a))
    assert.is_true(c:is_contiguous())
    assert.are.same(a:table(), c:table())
    assert.are.equal(a:dtype(), c:dtype())
    c:fill_(0)
    assert.are.same({{0, 3}, {1, 4}, {2, 5}}, a:table())
  end)

  it("contiguous shares when already contiguous and copies otherwise", function()
    local a = lark.arange(6):view(2, 3)
    local c = a:contiguous()
    assert.is_true(c:shares_storage(a))
    local t = a:t()
    local tc = t:contiguous()
    assert.is_false(tc:shares_storage(a))
    assert.is_true(tc:is_contiguous())
    assert.are.same({{0, 3}, {1, 4}, {2, 5}}, tc:table())
    assert.are.same({2, 1}, {tc:stride(1), tc:stride(2)})
  end)
end)

describe("fill_ and zero_", function()
  it("fill every element, convert the value to the dtype and return self", function()
    local t = lark.ones(2, 3)
    assert.are.equal(t, t:fill_(2.5))
    assert.are.same({2.5, 2.5, 2.5, 2.5, 2.5, 2.5}, flat(t))
    assert.are.equal(t, t:zero_())
    assert.are.same({0, 0, 0, 0, 0, 0}, flat(t))
    assert.are.same({-2, -2}, lark.zeros(2, {dtype = "int64"}):fill_(-2.7):table())
    assert.are.same({true, true}, lark.zeros(2, {dtype = "bool"}):fill_(0.5):table())
    assert.are.same({false}, lark.ones(1, {dtype = "bool"}):fill_(false):table())
    assert.are.same({44}, lark.zeros(1, {dtype = "uint8"}):fill_(300):table())
    assert.are.same({9}, {lark.tensor(1):fill_(9):item()})
  end)

  it("fill only the view they are called on", function()
    local t = lark.zeros(3, 4, {dtype = "int64"})
    t:narrow(1, 2, 1):fill_(1)
    t:select(2, 4):fill_(2)
    t[{{}, {1, 3, 2}}]:fill_(3) -- columns 1 and 3
    assert.are.same({{3, 0, 3, 2}, {3, 1, 3, 2}, {3, 0, 3, 2}}, t:table())
    -- a large strided fill (more than the parallel grain) leaves the other half alone
    local big = lark.zeros(300, 300)
    big:t():narrow(1, 1, 150):fill_(1)
    local s = big:table()
    local ok = true
    for i = 1, 300 do
      for j = 1, 300 do
        if s[i][j] ~= (j <= 150 and 1 or 0) then ok = false end
      end
    end
    assert.is_true(ok)
  end)
end)

describe("free and <close>", function()
  it("free() releases the storage now and leaves a freed tensor", function()
    collectgarbage()
    collectgarbage()
    local t = lark.zeros(1000, {dtype = "float64"})
    local before = lark.bytes_allocated()
    t:free()
    assert.are.equal(before - 8000, lark.bytes_allocated())
    assert.are.equal("[freed tensor]", tostring(t))
    expect_error("the tensor was freed", function() return t:numel() end)
    expect_error("the tensor was freed", function() return t + 1 end)
    t:free() -- a second free is harmless
  end)

  it("free() of a tensor keeps the storage of its views", function()
    collectgarbage()
    collectgarbage()
    local before = lark.bytes_allocated()
    local t = lark.arange(10, {dtype = "float64"})
    local v = t:narrow(1, 3, 2)
    t:free()
    assert.are.equal(before + 80, lark.bytes_allocated()) -- the view holds all 10 elements
    assert.are.same({2, 3}, v:table())
    v:free()
    assert.are.equal(before, lark.bytes_allocated())
  end)

  it("<close> releases at the end of the scope", function()
    collectgarbage()
    collectgarbage()
    local before = lark.bytes_allocated()
    local escaped
    do
      local c <close> = lark.ones(256, {dtype = "int64"})
      assert.are.equal(before + 2048, lark.bytes_allocated())
      assert.are.equal(256, c:numel())
      escaped = c
    end
    assert.are.equal(before, lark.bytes_allocated())
    expect_error("the tensor was closed", function() return escaped:numel() end)
  end)
end)

describe("printing", function()
  local function str(t) return tostring(t) end

  it("prints float32 matrices with one format and the footer", function()
    assert.are.equal(table.concat({
      "  1.5000  2.0000  3.0000",
      "  4.0000  5.0000 -6.2500",
      "[float32 tensor of size 2x3]"}, "\n"), str(lark.tensor({{1.5, 2, 3}, {4, 5, -6.25}})))
    assert.are.equal(table.concat({
      " 1 2 3",
      " 4 5 6",
      "[float32 tensor of size 2x3]"}, "\n"), str(lark.tensor({{1, 2, 3}, {4, 5, 6}})))
  end)

  it("prints each dtype", function()
    assert.are.equal(" 0.1250\n10.5000\n[float64 tensor of size 2]", str(lark.tensor({0.125, 10.5}, "float64")))
    assert.are.equal("   -3   10\n  200    0\n[int64 tensor of size 2x2]", str(lark.tensor({{-3, 10}, {200, 0}}, "int64")))
    assert.are.equal("  7\n255\n  0\n[uint8 tensor of size 3]", str(lark.tensor({7, 255, 0}, "uint8")))
    assert.are.equal("  true false\n[bool tensor of size 1x2]", str(lark.tensor({{true, false}})))
  end)

  it("prints 0-d and empty tensors", function()
    assert.are.equal("3.2500\n[float32 tensor with no dimension]", str(lark.tensor(3.25)))
    assert.are.equal("-4\n[int64 tensor with no dimension]", str(lark.tensor(-4, "int64")))
    assert.are.equal(" true\n[bool tensor with no dimension]", str(lark.tensor(true)))
    assert.are.equal("[float32 tensor of size 0x3]", str(lark.zeros(0, 3)))
    assert.are.equal("[float32 tensor of size 0]", str(lark.tensor({})))
    assert.are.equal("[int64 tensor of size 2x0]", str(lark.zeros(2, 0, {dtype = "int64"})))
  end)

  it("prints 1-D tensors one value per line", function()
    assert.are.equal("1\n2\n3\n[int64 tensor of size 3]", str(lark.tensor({1, 2, 3}, "int64")))
    assert.are.equal("    nan\n    inf\n   -inf\n 1.5000\n[float32 tensor of size 4]",
      str(lark.tensor({0 / 0, 1 / 0, -1 / 0, 1.5})))
  end)

  it("prints a common scale or scientific notation for wide ranges", function()
    assert.are.equal("1e-03 *\n 1.0000\n 2.0000\n-0.5000\n[float32 tensor of size 3]",
      str(lark.tensor({0.001, 0.002, -0.0005})))
    assert.are.equal(" 1.0000e-03\n 5.0000e+03\n[float32 tensor of size 2]", str(lark.tensor({1e-3, 5e3})))
  end)

  it("prints 3-D tensors as 2-D slices headed (i,.,.)", function()
    assert.are.equal(table.concat({
      "(1,.,.) = ",
      " 0 1",
      " 2 3",
      "",
      "(2,.,.) = ",
      " 4 5",
      " 6 7",
      "[int64 tensor of size 2x2x2]"}, "\n"), str(lark.arange(8):view(2, 2, 2)))
    local four = str(lark.zeros(2, 1, 1, 2, {dtype = "int64"}))
    assert.truthy(four:find("(1,1,.,.) = \n 0 0\n\n(2,1,.,.) = \n 0 0\n[int64 tensor of size 2x1x1x2]", 1, true), four)
  end)

  it("wraps wide matrices in blocks of columns", function()
    assert.are.equal(table.concat({
      "Columns 1 to 11",
      " 0.0000 0.2500 0.5000 0.7500 1.0000 1.2500 1.5000 1.7500 2.0000 2.2500 2.5000",
      " 3.7500 4.0000 4.2500 4.5000 4.7500 5.0000 5.2500 5.5000 5.7500 6.0000 6.2500",
      "",
      "Columns 12 to 15",
      " 2.7500 3.0000 3.2500 3.5000",
      " 6.5000 6.7500 7.0000 7.2500",
      "[float32 tensor of size 2x15]"}, "\n"), str(lark.arange(30):view(2, 15):float() / 4))
    for line in str(lark.arange(30):view(2, 15):float() / 4):gmatch("[^\n]+") do assert.is_true(#line <= 80) end
  end)

  it("summarizes big tensors with ... around the edges", function()
    assert.are.equal("   0\n   1\n   2\n...\n1997\n1998\n1999\n[int64 tensor of size 2000]", str(lark.arange(2000)))
    assert.are.equal(table.concat({
      "    0    1    2  ...   97   98   99",
      "  100  101  102  ...  197  198  199",
      "  200  201  202  ...  297  298  299",
      " ...",
      " 9700 9701 9702  ... 9797 9798 9799",
      " 9800 9801 9802  ... 9897 9898 9899",
      " 9900 9901 9902  ... 9997 9998 9999",
      "[int64 tensor of size 100x100]"}, "\n"), str(lark.arange(10000):view(100, 100)))
    local s3 = str(lark.arange(8000):view(20, 20, 20))
    assert.truthy(s3:find("(3,.,.) = ", 1, true))
    assert.truthy(s3:find("\n\n...\n\n(18,.,.) = \n 6800 6801 6802  ... 6817 6818 6819\n", 1, true))
    assert.is_nil(s3:find("(4,.,.)", 1, true))
    local tail = " 7980 7981 7982  ... 7997 7998 7999\n[int64 tensor of size 20x20x20]"
    assert.are.equal(tail, s3:sub(-#tail))
  end)

  it("follows lark.print_options", function()
    local saved = lark.print_options.threshold
    lark.print_options.threshold = 4
    local ok, s = pcall(tostring, lark.arange(8))
    lark.print_options.threshold = saved
    assert.is_true(ok, s)
    assert.are.equal("0\n1\n2\n...\n5\n6\n7\n[int64 tensor of size 8]", s)
    assert.are.equal("0\n1\n2\n3\n4\n5\n6\n7\n[int64 tensor of size 8]", tostring(lark.arange(8)))
    assert.are.equal(tostring(lark.arange(3)), lark.tostring(lark.arange(3)))
  end)

  it("prints views in their logical order", function()
    assert.are.equal(" 0 3\n 1 4\n 2 5\n[int64 tensor of size 3x2]", str(lark.arange(6):view(2, 3):t()))
    assert.are.equal(" 0 0 0\n 0 0 0\n[float32 tensor of size 2x3]", str(lark.zeros(3):expand(2, 3)))
  end)
end)
