-- shape_spec.lua: cat, stack, split and chunk against plain Lua references (float64 data, so
-- copies compare exactly), on non-contiguous views and with negative dims; views share storage;
-- and the error messages.

-- Reference cat of nested tables (all of `ndim` dims) along d.
local function cat_ref(tables, shapes, d)
  local out_shape = copy_list(shapes[1])
  out_shape[d] = 0
  for _, s in ipairs(shapes) do out_shape[d] = out_shape[d] + s[d] end
  return build_table(out_shape, function(c)
    local k, i = 1, c[d]
    while i > shapes[k][d] do
      i = i - shapes[k][d]
      k = k + 1
    end
    local sc = copy_list(c)
    sc[d] = i
    return get_at(tables[k], sc)
  end), out_shape
end

before_each(function() math.randomseed(4321) end)

describe("cat", function()
  it("matches a Lua reference along every dim, negative dims and views", function()
    for dim = -3, 3 do
      if dim ~= 0 then
        local d = dim_pos(dim, 3)
        local ts, tables, shapes = {}, {}, {}
        for k = 1, 3 do
          local s = {2, 3, 4}
          s[d] = k == 2 and 0 or math.random(1, 3) -- an empty piece in the middle
          local t = s[d] == 0 and lark.zeros(s, {dtype = "float64"}) or rand_tensor(s)
          if k == 3 then t = rand_tensor({s[3], s[2], s[1]}):transpose(1, 3) end -- a strided piece
          ts[k], tables[k], shapes[k] = t, t:table(), shape_of(t)
        end
        local want, want_shape = cat_ref(tables, shapes, d)
        local r = lark.cat(ts, dim)
        assert.are.same(want_shape, shape_of(r))
        assert.are.same(want, r:table())
        -- Torch7 forms
        assert.are.same(want, lark.cat(ts[1], ts[2], ts[3], dim):table())
        assert.are.same(want, ts[1]:cat(ts[2], ts[3], dim):table())
      end
    end
  end)

  it("defaults to dim 1 and returns a new tensor", function()
    local a, b = lark.tensor({{1, 2}}), lark.tensor({{3, 4}, {5, 6}})
    local r = lark.cat({a, b})
    assert.are.same({{1, 2}, {3, 4}, {5, 6}}, r:table())
    r:fill_(0)
    assert.are.same({{1, 2}}, a:table())
    assert.are.same({{1, 2}, {1, 2}}, lark.cat({a, a}):table())
    assert.are.same({{1, 2, 1, 2}}, a:cat(a, 2):table())
  end)

  it("promotes dtypes", function()
    local r = lark.cat({lark.tensor({1, 2}, {dtype = "int64"}), lark.tensor({0.5})})
    assert.are.equal("float32", r:dtype())
    assert.are.same({1, 2, 0.5}, r:table())
    r = lark.cat({lark.tensor({true}), lark.tensor({7}, {dtype = "uint8"})})
    assert.are.equal("uint8", r:dtype())
    assert.are.same({1, 7}, r:table())
    assert.are.equal("float64", lark.cat({lark.ones(1), lark.ones(1, {dtype = "float64"})}):dtype())
  end)

  it("skips empty 1-D tensors whatever their rank, as PyTorch does", function()
    local x = rand_tensor({2, 3})
    local e = lark.tensor({})
    assert.are.same(x:table(), lark.cat({e, x, e}, 2):table())
    assert.are.same(x:table(), lark.cat({e, x}, -1):table())
    local r = lark.cat({e, e})
    assert.are.same({0}, shape_of(r))
    -- an empty tensor of 2 dims is not skipped: it must fit
    assert.are.same({2, 3}, shape_of(lark.cat({lark.zeros(2, 0), lark.zeros(2, 3)}, 2)))
  end)

  it("names the offending tensor and the shapes in errors", function()
    local a, b = lark.zeros(2, 3), lark.zeros(2, 4)
    assert_error_match(function() lark.cat({a, a, b}, 1) end,
      "cat: tensor 3 has shape [2,4] but tensor 1 has shape [2,3]: sizes must match except along dim 1")
    assert_error_match(function() lark.cat({a, lark.zeros(3)}, 1) end,
      "cat: tensor 2 has 1 dims (shape [3]) but tensor 1 has 2 (shape [2,3])")
    assert_error_match(function() lark.cat({a, lark.tensor(1)}) end, "cat: tensor 2 is 0-d")
    assert_error_match(function() lark.cat({a, a}, 3) end, "cat: argument 2: dim 3 is out of range for a tensor of 2 dims")
    assert_error_match(function() lark.cat({a, a}, 0) end, "cat: argument 2: dim 0 is out of range")
    assert_error_match(function() lark.cat({}) end, "cat: argument 1: expected a non-empty list of tensors")
    assert_error_match(function() lark.cat({a, 5}) end, "cat: argument 1: element 2 is not a Tensor (got number)")
    assert_error_match(function() lark.cat(nil) end, "cat: argument 1: expected a list of tensors, got nil")
    assert_error_match(function() lark.cat({a}, "x") end, "cat: argument 2: expected a dim (integer), got string")
    assert_error_match(function() lark.cat({a}, 1.5) end, "cat: argument 2: dim must be an integer, got 1.5")
  end)
end)

describe("stack", function()
  it("matches a Lua reference at every position, negative dims included", function()
    local a, b = rand_tensor({2, 3}), rand_tensor({3, 2}):t() -- b is a strided view
    local ta, tb = a:table(), b:table()
    for dim = -3, 3 do
      if dim ~= 0 then
        local d = dim_pos(dim, 3)
        local r = lark.stack({a, b}, dim)
        local want_shape = {2, 3}
        table.insert(want_shape, d, 2)
        assert.are.same(want_shape, shape_of(r))
        local want = build_table(want_shape, function(c)
          local sc = copy_list(c)
          local k = table.remove(sc, d)
          return get_at(k == 1 and ta or tb, sc)
        end)
        assert.are.same(want, r:table())
      end
    end
    assert.are.same({2, 2, 3}, shape_of(lark.stack({a, b})))
    assert.are.same({3, 2, 3}, shape_of(a:stack(a, b)))
  end)

  it("stacks 0-d tensors into a vector and promotes dtypes", function()
    local r = lark.stack({lark.tensor(1, {dtype = "int64"}), lark.tensor(2.5)})
    assert.are.same({1, 2.5}, r:table())
    assert.are.equal("float32", r:dtype())
  end)

  it("needs equal shapes", function()
    assert_error_match(function() lark.stack({lark.zeros(2), lark.zeros(2), lark.zeros(3)}) end,
      "stack: tensor 3 has shape [3] but tensor 1 has shape [2]")
    assert_error_match(function() lark.stack({lark.zeros(2)}, 3) end, "stack: argument 2: dim 3 is out of range")
  end)
end)

describe("split", function()
  it("gives views of the given size, the last one smaller", function()
    local t = rand_tensor({7, 4})
    local ref = t:table()
    local parts = t:split(3)
    assert.are.equal(3, #parts)
    assert.are.same({3, 4}, shape_of(parts[1]))
    assert.are.same({1, 4}, shape_of(parts[3]))
    assert.are.same({ref[7]}, parts[3]:table())
    -- views: writing into a piece writes the original
    parts[2]:fill_(5)
    assert.are.same({5, 5, 5, 5}, t:select(1, 4):table())
    assert.is_true(parts[1]:shares_storage(t))
  end)

  it("splits along negative dims and strided views", function()
    local base = rand_tensor({5, 6})
    local t = base:t() -- 6x5
    local parts = t:split(2, -1)
    assert.are.equal(3, #parts)
    local ref = t:table()
    for k, p in ipairs(parts) do
      local want = build_table(shape_of(p), function(c) return ref[c[1]][c[2] + 2 * (k - 1)] end)
      assert.are.same(want, p:table())
    end
    parts[3]:fill_(-1)
    assert.are.same({-1, -1, -1, -1, -1, -1}, base:select(1, 5):table())
  end)

  it("takes a table of sizes that must sum to the dim's size", function()
    local t = lark.arange(1, 11)
    local parts = t:split({2, 0, 5, 3})
    assert.are.equal(4, #parts)
    assert.are.same({1, 2}, parts[1]:table())
    assert.are.same({0}, shape_of(parts[2]))
    assert.are.same({3, 4, 5, 6, 7}, parts[3]:table())
    assert.are.same({8, 9, 10}, parts[4]:table())
    assert.are.same({{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}}, lark.arange(1, 11):view(1, 10):split({10}, 2)[1]:table())
    assert_error_match(function() t:split({2, 3}) end, "split: the sizes sum to 5 but dim 1 has size 10")
    assert_error_match(function() t:split({2, -1, 9}) end, "split: argument 2: size 2 is negative")
    assert_error_match(function() t:split({2, "a"}) end, "split: argument 2: size 2 is not an integer")
  end)

  it("handles sizes beyond the dim and empty dims", function()
    local t = lark.zeros(3)
    assert.are.equal(1, #t:split(10))
    local e = lark.zeros(0, 2)
    local parts = e:split(2)
    assert.are.equal(1, #parts)
    assert.are.same({0, 2}, shape_of(parts[1]))
  end)

  it("rejects bad sizes and dims", function()
    local t = lark.zeros(4)
    assert_error_match(function() t:split(0) end, "split: argument 2: the split size must be positive, got 0")
    assert_error_match(function() t:split(-2) end, "the split size must be positive, got -2")
    assert_error_match(function() t:split(1.5) end, "split: argument 2: expected a split size (integer) or a table of sizes, got 1.5")
    assert_error_match(function() t:split() end, "split: argument 2: expected a split size")
    assert_error_match(function() t:split(2, 2) end, "split: argument 3: dim 2 is out of range")
    assert_error_match(function() lark.tensor(1):split(1) end, "split: cannot split a 0-d tensor")
  end)
end)

describe("chunk", function()
  it("uses chunks of ceil(n / chunks), like PyTorch, and may return fewer", function()
    local function sizes(n, chunks)
      local r = {}
      for i, p in ipairs(lark.zeros(n):chunk(chunks)) do r[i] = p:size(1) end
      return r
    end
    assert.are.same({2, 2, 1}, sizes(5, 3))
    assert.are.same({2, 2, 2}, sizes(6, 4)) -- 3 chunks, not 4
    assert.are.same({2, 2, 1}, sizes(5, 4))
    assert.are.same({1, 1}, sizes(2, 5))
    assert.are.same({3}, sizes(3, 1))
    assert.are.same({0, 0, 0}, sizes(0, 3)) -- an empty dim: chunks empty pieces
  end)

  it("gives views along any dim, writing through to the original", function()
    local t = rand_tensor({3, 5})
    local ref = t:table()
    local parts = t:chunk(2, -1)
    assert.are.equal(2, #parts)
    assert.are.same({3, 3}, shape_of(parts[1]))
    assert.are.same({{ref[1][4], ref[1][5]}, {ref[2][4], ref[2][5]}, {ref[3][4], ref[3][5]}}, parts[2]:table())
    parts[2]:fill_(9)
    assert.are.same({ref[2][1], ref[2][2], ref[2][3], 9, 9}, t:select(1, 2):table())
    local rows = t:t():chunk(5, 1) -- a strided view, one row each
    assert.are.equal(5, #rows)
    assert.are.same({{ref[1][1], ref[2][1], ref[3][1]}}, rows[1]:table())
  end)

  it("rejects bad counts", function()
    assert_error_match(function() lark.zeros(3):chunk(0) end, "chunk: argument 2: the number of chunks must be positive, got 0")
    assert_error_match(function() lark.zeros(3):chunk("2") end, "chunk: argument 2: expected the number of chunks")
    assert_error_match(function() lark.zeros(3):chunk(2, 0) end, "chunk: argument 3: dim 0 is out of range")
  end)
end)
