-- index_spec.lua: index_select, gather, scatter_add, masked_fill, masked_select, nonzero, sort,
-- topk and cumsum against plain Lua references on random data (float64, so that copies compare
-- exactly), on non-contiguous views and with negative dims; and their error messages.

-- ---- plain Lua helpers ----------------------------------------------------------------------

-- Random integers in lo..hi as a nested table of `shape`.
local function rand_ints(shape, lo, hi)
  return build_table(shape, function() return math.random(lo, hi) end)
end

local function long(tbl) return lark.tensor(tbl, {dtype = "int64"}) end

-- Lua's order with NaN as the largest number; ties are left to the caller (position).
local function gt(a, b) return a > b or (a ~= a and b == b) end

before_each(function() math.randomseed(1234) end)

-- ---- index_select ---------------------------------------------------------------------------

describe("index_select", function()
  it("matches a Lua reference for every dim, negative dims and non-contiguous inputs", function()
    for _, view in ipairs({false, true}) do
      for dim = -3, 3 do
        if dim ~= 0 then
          local base = rand_tensor({4, 3, 5})
          local t = view and base:transpose(1, 3) or base -- 5x3x4, strided
          local ref, shape = t:table(), shape_of(t)
          local d = dim_pos(dim, 3)
          local idx = rand_ints({6}, 1, shape[d])
          local r = t:index_select(dim, long(idx))
          local rshape = copy_list(shape)
          rshape[d] = 6
          local want = build_table(rshape, function(c)
            local sc = copy_list(c)
            sc[d] = idx[c[d]]
            return get_at(ref, sc)
          end)
          assert.are.same(rshape, shape_of(r))
          assert.are.same(want, r:table())
          -- a Lua table of indices, and the Torch7 name
          assert.are.same(want, t:index(dim, idx):table())
          assert.are.same(want, lark.index_select(t, dim, idx):table())
        end
      end
    end
  end)

  it("handles repeated, empty and 0-d indices, and 0-d inputs", function()
    local t = lark.tensor({{1, 2}, {3, 4}, {5, 6}})
    assert.are.same({{5, 6}, {5, 6}, {1, 2}}, t:index_select(1, {3, 3, 1}):table())
    local e = t:index_select(1, long({}))
    assert.are.same({0, 2}, shape_of(e))
    assert.are.same({{2}, {4}, {6}}, t:index_select(2, lark.tensor(2, {dtype = "int64"})):table())
    local s = lark.tensor(7.5):index_select(1, {1})
    assert.are.equal(0, s:dim())
    assert.are.equal(7.5, s:item())
  end)

  it("works on int64, bool and expanded inputs", function()
    local t = long({{1, 2, 3}, {4, 5, 6}})
    local r = t:index_select(2, {3, 1})
    assert.are.equal("int64", r:dtype())
    assert.are.same({{3, 1}, {6, 4}}, r:table())
    local b = lark.tensor({true, false, true})
    assert.are.same({false, true}, b:index_select(1, {2, 3}):table())
    local x = lark.tensor({{1, 2, 3}}):expand(4, 3) -- stride 0 rows
    assert.are.same({{3, 1}, {3, 1}, {3, 1}, {3, 1}}, x:index_select(2, {3, 1}):table())
  end)
end)

-- ---- gather ---------------------------------------------------------------------------------

describe("gather", function()
  it("matches a Lua reference for every dim, negative dims and non-contiguous inputs", function()
    for _, view in ipairs({false, true}) do
      for dim = -3, 3 do
        if dim ~= 0 then
          local base = rand_tensor({4, 3, 5})
          local t = view and base:transpose(1, 2) or base -- 3x4x5
          local ref, shape = t:table(), shape_of(t)
          local d = dim_pos(dim, 3)
          local ishape = {}
          for k = 1, 3 do ishape[k] = k == d and 7 or math.random(1, shape[k]) end
          local idx = rand_ints(ishape, 1, shape[d])
          local it = long(idx)
          if view then it = long(rand_ints({ishape[3], ishape[2], ishape[1]}, 1, shape[d])):transpose(1, 3) end
          local idx_t = it:table()
          local r = t:gather(dim, it)
          local want = build_table(ishape, function(c)
            local sc = copy_list(c)
            sc[d] = get_at(idx_t, c)
            return get_at(ref, sc)
          end)
          assert.are.same(ishape, shape_of(r))
          assert.are.same(want, r:table())
          assert.are.same(want, lark.gather(t, dim, it):table())
        end
      end
    end
  end)

  it("works on 0-d tensors and empty indices", function()
    local s = lark.tensor(3.5)
    assert.are.equal(3.5, s:gather(1, lark.tensor(1, {dtype = "int64"})):item())
    local t = rand_tensor({2, 3})
    assert.are.same({2, 0}, shape_of(t:gather(2, lark.zeros(2, 0, {dtype = "int64"}))))
  end)
end)

-- ---- scatter_add ----------------------------------------------------------------------------

local function scatter_ref(ref, dim, idx, src)
  each_coord((function()
    local s, t = {}, idx
    while type(t) == "table" do
      s[#s + 1] = #t
      t = t[1]
    end
    return s
  end)(), function(c)
    local dc = copy_list(c)
    dc[dim] = get_at(idx, c)
    set_at(ref, dc, get_at(ref, dc) + get_at(src, c))
  end)
  return ref
end

describe("scatter_add", function()
  it("adds with repeated indices along every dim, like a Lua loop", function()
    for dim = -2, 2 do
      if dim ~= 0 then
        local d = dim_pos(dim, 2)
        local t = rand_tensor({4, 5})
        local ishape = d == 1 and {9, 5} or {4, 9}
        local idx = rand_ints(ishape, 1, d == 1 and 2 or 3) -- few targets: many repeats
        local src = rand_tensor({9, 9}):narrow(3 - d, 1, d == 1 and 5 or 4)
        if d == 2 then src = rand_tensor({4, 9}) end
        local want = scatter_ref(t:table(), d, idx, src:table())
        local before = t:table()
        local r = t:scatter_add(dim, long(idx), src)
        assert_near(r, want, 1e-12)
        assert.are.same(before, t:table()) -- the copying form leaves t alone
        local same = t:scatter_add_(dim, long(idx), src)
        assert.are.equal(t, same)
        assert_near(t, want, 1e-12)
      end
    end
  end)

  it("writes through a transposed view into its base", function()
    local base = lark.zeros(3, 2, {dtype = "float64"})
    local v = base:t() -- 2x3 view
    v:scatter_add_(2, long({{1, 1, 3}, {2, 2, 2}}), lark.tensor({{1, 2, 3}, {4, 5, 6}}, {dtype = "float64"}))
    assert.are.same({{3, 0}, {0, 15}, {3, 0}}, base:table())
  end)

  it("converts src to the tensor's dtype and adds int64 exactly", function()
    local t = long({0, 0, 0})
    t:scatter_add_(1, long({3, 3, 1, 3}), long({1, 2, 3, 4}))
    assert.are.same({3, 0, 7}, t:table())
    local f = lark.zeros(2)
    f:scatter_add_(1, long({2, 2}), lark.tensor({0.5, 0.25}, {dtype = "float64"}))
    assert.are.equal("float32", f:dtype())
    assert_near(f, {0, 0.75})
  end)

  it("leaves the tensor untouched when an index is out of range", function()
    local t = lark.tensor({1, 2, 3})
    assert_error_match(function() t:scatter_add_(1, long({1, 2, 4}), lark.ones(3)) end,
      "scatter_add_: argument 3: index 4 is out of range for dim 1 of size 3")
    assert.are.same({1, 2, 3}, t:table())
    assert_error_match(function() t:scatter_add_(1, long({3, 0}), lark.ones(2)) end, "index 0 is out of range")
    assert.are.same({1, 2, 3}, t:table())
  end)

  it("rejects bad shapes, dtypes and expanded destinations", function()
    local t = lark.zeros(2, 3)
    assert_error_match(function() t:scatter_add(1, long({1, 2}), lark.ones(2)) end, "scatter_add: the index has 1 dims")
    assert_error_match(function() t:scatter_add(2, long({{1, 2, 3, 1}}), lark.ones(1, 3)) end,
      "scatter_add: the index has shape [1,4] but the source has shape [1,3]")
    assert_error_match(function() t:scatter_add(2, long({{1}, {2}, {1}}), lark.ones(3, 1)) end,
      "the index has shape [3,1] but the tensor has shape [2,3]")
    assert_error_match(function() t:scatter_add(1, lark.ones(1, 1), lark.ones(1, 1)) end,
      "scatter_add: argument 3: expected an int64 index tensor, got float32")
    assert_error_match(function() t:scatter_add(1, long({{1}})) end, "scatter_add: argument 4: expected a Tensor")
    local e = lark.zeros(1, 3):expand(2, 3)
    assert_error_match(function() e:scatter_add_(1, long({{1, 1, 1}}), lark.ones(1, 3)) end, "expanded")
  end)
end)

-- ---- masked_fill / masked_select ------------------------------------------------------------

describe("masked_fill", function()
  it("fills where a broadcast bool or uint8 mask is set", function()
    local t = rand_tensor({3, 4})
    local ref = t:table()
    local m = {true, false, false, true}
    local want = build_table({3, 4}, function(c) return m[c[2]] and -7 or ref[c[1]][c[2]] end)
    assert.are.same(want, t:masked_fill(lark.tensor(m), -7):table())
    assert.are.same(want, t:masked_fill(lark.tensor({{1, 0, 0, 1}}, {dtype = "uint8"}), -7):table())
    assert.are.same(ref, t:table())
    t:masked_fill_(lark.tensor(m), -7)
    assert.are.same(want, t:table())
  end)

  it("matches a Lua loop on a transposed tensor with a full mask", function()
    local base = rand_tensor({5, 3})
    local t = base:t()
    local mt = build_table({3, 5}, function() return math.random() < 0.5 end)
    local ref = t:table()
    local want = build_table({3, 5}, function(c) return get_at(mt, c) and 2.5 or get_at(ref, c) end)
    t:masked_fill_(lark.tensor(mt), 2.5)
    assert.are.same(want, t:table())
    assert.are.same(want, base:t():table()) -- wrote through the view
  end)

  it("converts the value to the tensor's dtype", function()
    local t = long({1, 2, 3})
    assert.are.same({1, 9, 3}, t:masked_fill(lark.tensor({false, true, false}), 9.7):table())
    local b = lark.tensor({false, false})
    assert.are.same({true, false}, b:masked_fill(lark.tensor({true, false}), 1):table())
    assert.are.same({5, 2, 3}, t:masked_fill(lark.tensor({true, false, false}), lark.tensor(5)):table())
  end)

  it("rejects wrong mask dtypes and shapes", function()
    local t = lark.zeros(2, 3)
    assert_error_match(function() t:masked_fill(lark.ones(2, 3), 1) end,
      "masked_fill: argument 2: expected a bool or uint8 mask tensor, got float32")
    assert_error_match(function() t:masked_fill_(lark.tensor({true, false}), 1) end,
      "masked_fill: the mask of shape [2] cannot be broadcast to the tensor's shape [2,3]")
    assert_error_match(function() t:masked_fill(lark.tensor({true, false}), 1) end, "cannot be broadcast")
    assert_error_match(function() t:masked_fill(lark.tensor({true, false, true}), "x") end,
      "masked_fill: argument 3: expected a number, got string")
    assert_error_match(function() t:masked_fill(nil, 1) end, "masked_fill: argument 2: expected a bool or uint8 mask")
  end)
end)

describe("masked_select", function()
  it("picks the set elements in row-major order", function()
    local t = rand_tensor({4, 3}):t() -- 3x4 view
    local ref = t:table()
    local mt = build_table({3, 4}, function() return math.random() < 0.4 end)
    local want = {}
    each_coord({3, 4}, function(c)
      if get_at(mt, c) then want[#want + 1] = get_at(ref, c) end
    end)
    local r = t:masked_select(lark.tensor(mt))
    assert.are.equal(1, r:dim())
    assert.are.same(want, #want > 0 and r:table() or {})
  end)

  it("broadcasts the mask and gives an empty result for an all-false mask", function()
    local t = lark.tensor({{1, 2, 3}, {4, 5, 6}})
    assert.are.same({1, 3, 4, 6}, t:masked_select(lark.tensor({true, false, true})):table())
    assert.are.same({0}, shape_of(t:masked_select(lark.tensor({false, false, false}))))
    assert_error_match(function() t:masked_select(lark.tensor({1, 0, 1})) end,
      "masked_select: argument 2: expected a bool or uint8 mask tensor, got float32")
  end)
end)

-- ---- nonzero --------------------------------------------------------------------------------

describe("nonzero", function()
  it("gives 1-based coordinates in row-major order", function()
    local tbl = build_table({3, 4, 2}, function() return math.random() < 0.3 and math.random(1, 9) or 0 end)
    local t = lark.tensor(tbl, {dtype = "int64"})
    local want = {}
    each_coord({3, 4, 2}, function(c)
      if get_at(tbl, c) ~= 0 then want[#want + 1] = copy_list(c) end
    end)
    local r = t:nonzero()
    assert.are.equal("int64", r:dtype())
    assert.are.same({#want, 3}, shape_of(r))
    if #want > 0 then assert.are.same(want, r:table()) end
    -- a transposed view: coordinates of the view
    local tt = t:transpose(1, 3)
    local want_t = {}
    each_coord({2, 4, 3}, function(c)
      if tbl[c[3]][c[2]][c[1]] ~= 0 then want_t[#want_t + 1] = copy_list(c) end
    end)
    assert.are.same(want_t, tt:nonzero():table())
  end)

  it("handles all-false, empty and 0-d tensors; NaN counts as non-zero", function()
    assert.are.same({0, 2}, shape_of(lark.zeros(3, 4):nonzero()))
    assert.are.same({0, 3}, shape_of(lark.zeros(2, 0, 3):nonzero()))
    assert.are.same({0, 1}, shape_of(lark.tensor({}):nonzero()))
    assert.are.same({1, 0}, shape_of(lark.tensor(5):nonzero()))
    assert.are.same({0, 0}, shape_of(lark.tensor(0):nonzero()))
    assert.are.same({{1}, {3}}, lark.tensor({0 / 0, 0, 1}):nonzero():table())
    assert.are.same({{2}}, lark.tensor({false, true}):nonzero():table())
  end)
end)

-- ---- sort and topk --------------------------------------------------------------------------

-- Reference stable sort of one Lua list: returns values and 1-based positions.
local function sort_ref(list, descending)
  local pos = {}
  for i = 1, #list do pos[i] = i end
  table.sort(pos, function(a, b)
    local x, y = list[a], list[b]
    if gt(x, y) then return descending end
    if gt(y, x) then return not descending end
    return a < b -- ties keep their order: stable
  end)
  local vals = {}
  for i = 1, #pos do vals[i] = list[pos[i]] end
  return vals, pos
end

-- Applies sort_ref to every line along dim d of a nested table of `shape`; keeps the first k.
local function lines_ref(tbl, shape, d, descending, k)
  local vshape = copy_list(shape)
  vshape[d] = k
  local vals, idx = build_table(vshape, function() return 0 end), build_table(vshape, function() return 0 end)
  local oshape = copy_list(shape)
  oshape[d] = 1
  each_coord(oshape, function(c)
    local line = {}
    for i = 1, shape[d] do
      local lc = copy_list(c)
      lc[d] = i
      line[i] = get_at(tbl, lc)
    end
    local v, p = sort_ref(line, descending)
    for i = 1, k do
      local lc = copy_list(c)
      lc[d] = i
      set_at(vals, lc, v[i])
      set_at(idx, lc, p[i])
    end
  end)
  return vals, idx
end

describe("sort", function()
  it("is a stable sort along every dim, ascending and descending, with many ties", function()
    for _, view in ipairs({false, true}) do
      for dim = -3, 3 do
        if dim ~= 0 then
          for _, descending in ipairs({false, true}) do
            local tbl = rand_ints({3, 4, 5}, 1, 3)
            local t = lark.tensor(tbl, {dtype = "float64"})
            if view then t = t:transpose(1, 3) end -- 5x4x3
            local ref, shape = t:table(), shape_of(t)
            local d = dim_pos(dim, 3)
            local v, i = t:sort(dim, descending)
            local wv, wi = lines_ref(ref, shape, d, descending, shape[d])
            assert.are.same(wv, v:table())
            assert.are.same(wi, i:table())
            assert.are.equal("int64", i:dtype())
          end
        end
      end
    end
  end)

  it("defaults to the last dim, ascending; t:sort(true) is descending", function()
    local t = lark.tensor({{3, 1, 2}, {0, 5, 5}})
    local v, i = t:sort()
    assert.are.same({{1, 2, 3}, {0, 5, 5}}, v:table())
    assert.are.same({{2, 3, 1}, {1, 2, 3}}, i:table())
    v, i = t:sort(true)
    assert.are.same({{3, 2, 1}, {5, 5, 0}}, v:table())
    assert.are.same({{1, 3, 2}, {2, 3, 1}}, i:table())
    v, i = lark.sort(t, 1, true)
    assert.are.same({{3, 5, 5}, {0, 1, 2}}, v:table())
  end)

  it("orders NaN as the largest value", function()
    local nan = 0 / 0
    local t = lark.tensor({2, nan, -1, nan, 7}, {dtype = "float64"})
    local v, i = t:sort()
    assert.is_true(same_nan({-1, 2, 7, nan, nan}, v:table()))
    assert.are.same({3, 1, 5, 2, 4}, i:table())
    v, i = t:sort(1, true)
    assert.is_true(same_nan({nan, nan, 7, 2, -1}, v:table()))
    assert.are.same({2, 4, 5, 1, 3}, i:table())
    -- -0 and +0 are equal: a tie kept in order, both ways
    local _, zi = lark.tensor({0.0, -0.0, 0.0}):sort()
    assert.are.same({1, 2, 3}, zi:table())
    _, zi = lark.tensor({-0.0, 0.0, -1}):sort(1, true)
    assert.are.same({1, 2, 3}, zi:table())
  end)

  it("sorts float32, int64, uint8 and bool, 0-d and empty tensors", function()
    local tbl = rand_ints({40}, -5, 5)
    local want_v, want_i = sort_ref(tbl, false)
    for _, dt in ipairs({"float32", "int64"}) do
      local v, i = lark.tensor(tbl, {dtype = dt}):sort()
      assert.are.same(want_v, v:table())
      assert.are.same(want_i, i:table())
    end
    local v, i = lark.tensor({3, 1, 2}, {dtype = "uint8"}):sort(1, true)
    assert.are.same({3, 2, 1}, v:table())
    v, i = lark.tensor({true, false, true}):sort()
    assert.are.same({false, true, true}, v:table())
    assert.are.same({2, 1, 3}, i:table())
    v, i = lark.tensor(4):sort()
    assert.are.equal(0, v:dim())
    assert.are.equal(1, i:item())
    v, i = lark.zeros(0, 3):sort(1)
    assert.are.same({0, 3}, shape_of(v))
  end)
end)

describe("topk", function()
  it("equals the first k of the stable sort, largest and smallest, on views and negative dims", function()
    for _, dim in ipairs({1, 2, -1, -2}) do
      for _, largest in ipairs({true, false}) do
        local t = lark.tensor(rand_ints({6, 7}, 1, 4), {dtype = "float64"}):t() -- 7x6 view
        local d = dim_pos(dim, 2)
        local n = t:size(d)
        for _, k in ipairs({0, 1, 3, n}) do
          local v, i = t:topk(k, dim, largest)
          local sv, si = t:sort(dim, largest)
          assert.are.same(sv:narrow(d, 1, k):table(), v:table())
          assert.are.same(si:narrow(d, 1, k):table(), i:table())
          assert.are.equal(k, v:size(d))
        end
      end
    end
  end)

  it("defaults to the largest along the last dim; sorted=false keeps the order of the input", function()
    local t = lark.tensor({5, 1, 9, 3, 9, 7})
    local v, i = t:topk(3)
    assert.are.same({9, 9, 7}, v:table())
    assert.are.same({3, 5, 6}, i:table())
    v, i = t:topk(3, 1, false)
    assert.are.same({1, 3, 5}, v:table())
    assert.are.same({2, 4, 1}, i:table())
    v, i = t:topk(3, 1, true, false)
    assert.are.same({9, 9, 7}, v:table())
    assert.are.same({3, 5, 6}, i:table())
    v, i = t:topk(2, -1, false, false)
    assert.are.same({1, 3}, v:table())
    assert.are.same({2, 4}, i:table())
  end)

  it("agrees with sort on a long line of ties (the selection path)", function()
    local t = lark.tensor(rand_ints({3000}, 1, 20), {dtype = "int64"})
    local sv, si = t:sort(1, true)
    local v, i = t:topk(250)
    assert.are.same(sv:narrow(1, 1, 250):table(), v:table())
    assert.are.same(si:narrow(1, 1, 250):table(), i:table())
  end)

  it("rejects k out of range and bad arguments", function()
    local t = lark.zeros(3, 4)
    assert_error_match(function() t:topk(5) end, "topk: argument 2: k = 5 is out of range for dim 2 of size 4")
    assert_error_match(function() t:topk(-1) end, "k = -1 is out of range")
    assert_error_match(function() t:topk(4, 1) end, "k = 4 is out of range for dim 1 of size 3")
    assert_error_match(function() t:topk(1.5) end, "topk: argument 2: expected k (an integer), got 1.5")
    assert_error_match(function() t:topk() end, "topk: argument 2: expected k (an integer), got no value")
    assert_error_match(function() t:topk(1, 3) end, "topk: argument 3: dim 3 is out of range")
    assert_error_match(function() t:topk(1, 1, "yes") end, "topk: argument 4: expected largest (a boolean), got string")
    assert_error_match(function() t:sort(1, 1) end, "sort: argument 3: expected descending (a boolean), got number")
    assert_error_match(function() t:sort(0) end, "sort: argument 2: dim 0 is out of range")
    assert_error_match(function() lark.sort("x") end, "sort: argument 1: expected a Tensor, got string")
  end)
end)

-- ---- cumsum ---------------------------------------------------------------------------------

describe("cumsum", function()
  it("matches running sums in Lua along every dim of a view", function()
    for dim = -3, 3 do
      if dim ~= 0 then
        local t = rand_tensor({3, 4, 5}):transpose(2, 3) -- 3x5x4
        local ref, shape = t:table(), shape_of(t)
        local d = dim_pos(dim, 3)
        local want = build_table(shape, function(c)
          local s = 0
          for i = 1, c[d] do
            local lc = copy_list(c)
            lc[d] = i
            s = s + get_at(ref, lc)
          end
          return s
        end)
        assert_near(t:cumsum(dim), want, 1e-12)
      end
    end
  end)

  it("gives int64 for integer and bool inputs, keeps float dtypes", function()
    local r = lark.tensor({{1, 2}, {3, 4}}, {dtype = "int64"}):cumsum(1)
    assert.are.equal("int64", r:dtype())
    assert.are.same({{1, 2}, {4, 6}}, r:table())
    local b = lark.tensor({true, false, true, true}):cumsum()
    assert.are.equal("int64", b:dtype())
    assert.are.same({1, 1, 2, 3}, b:table())
    local u = lark.tensor({200, 100}, {dtype = "uint8"}):cumsum(1)
    assert.are.same({200, 300}, u:table()) -- no uint8 overflow
    assert.are.equal("float32", lark.ones(3):cumsum(1):dtype())
    assert.are.equal(2.5, lark.tensor(2.5):cumsum():item())
    assert.are.same({0, 2}, shape_of(lark.zeros(0, 2):cumsum(1)))
  end)

  it("accumulates float32 accurately", function()
    local n = 100000
    local r = lark.full({n}, 0.1):cumsum(1)
    assert_near(r:narrow(1, n, 1):item(), n * 0.1, 1e-6)
  end)

  it("asks for a dim on tensors of several dims", function()
    assert_error_match(function() lark.zeros(2, 2):cumsum() end,
      "cumsum: argument 2: expected a dim (integer) for a tensor of 2 dims")
    assert_error_match(function() lark.zeros(2, 2):cumsum(3) end, "cumsum: argument 2: dim 3 is out of range")
  end)
end)

-- ---- index arguments ------------------------------------------------------------------------

describe("index arguments", function()
  local t = lark.tensor({{1, 2, 3}, {4, 5, 6}})

  it("are 1-based: 0 and size + 1 are out of range, with the value and the size in the message", function()
    assert_error_match(function() t:index_select(2, {0}) end,
      "index_select: argument 3: index 0 is out of range for dim 2 of size 3 (indices are 1-based)")
    assert_error_match(function() t:index_select(2, long({1, 4})) end,
      "index_select: argument 3: index 4 is out of range for dim 2 of size 3")
    assert_error_match(function() t:index_select(-2, {-1}) end, "index -1 is out of range for dim 1 of size 2")
    assert_error_match(function() t:gather(1, long({{3, 1, 1}})) end,
      "gather: argument 3: index 3 is out of range for dim 1 of size 2")
    assert_error_match(function() t:gather(2, long({{0}})) end, "gather: argument 3: index 0 is out of range")
  end)

  it("must be int64 tensors (or, for index_select, lists of integers)", function()
    assert_error_match(function() t:gather(2, lark.ones(2, 2)) end,
      "gather: argument 3: expected an int64 index tensor, got float32")
    assert_error_match(function() t:index_select(1, lark.tensor({1}, {dtype = "uint8"})) end,
      "index_select: argument 3: expected an int64 index tensor, got uint8")
    assert_error_match(function() t:index_select(1, {1, 1.5}) end,
      "index_select: argument 3: element 2 of the index list is not an integer (got 1.5)")
    assert_error_match(function() t:index_select(1, "1") end,
      "index_select: argument 3: expected an int64 index tensor or a list of integers, got string")
    assert_error_match(function() t:gather(1, {{1}}) end, "gather: argument 3: expected an int64 index tensor, got table")
    assert_error_match(function() t:index_select(1, long({{1}})) end, "index_select: the index must be 0-d or 1-D")
    assert_error_match(function() t:gather(1, long({1, 2})) end, "gather: the index has 1 dims")
    assert_error_match(function() t:gather(3, long({{1}})) end, "gather: argument 2: dim 3 is out of range")
    assert_error_match(function() t:gather(nil, long({{1}})) end, "gather: argument 2: expected a dim")
  end)
end)

-- ---- inputs above the parallel grain --------------------------------------------------------

describe("large inputs (the threaded paths)", function()
  it("give the same answers as the Lua references", function()
    local R, C = 300, 200 -- 60000 elements, above LARK_PARALLEL_GRAIN
    local tbl = rand_ints({R, C}, -3, 3)
    local t = lark.tensor(tbl, {dtype = "float64"})
    -- nonzero and masked_select
    local nz, vals = {}, {}
    for i = 1, R do
      for j = 1, C do
        if tbl[i][j] ~= 0 then
          nz[#nz + 1] = {i, j}
          vals[#vals + 1] = tbl[i][j]
        end
      end
    end
    assert.are.same(nz, t:nonzero():table())
    assert.are.same(vals, t:masked_select(t:ne(0)):table())
    -- sort of every column (threads take whole lines), checked on a few columns
    local v, ix = t:sort(1, true)
    for _, j in ipairs({1, 77, C}) do
      local col = {}
      for i = 1, R do col[i] = tbl[i][j] end
      local wv, wi = sort_ref(col, true)
      assert.are.same(wv, v:select(2, j):table())
      assert.are.same(wi, ix:select(2, j):table())
    end
    -- cumsum down the columns (tiled) and along the rows
    local cs, rs = t:cumsum(1), t:cumsum(2)
    for _, j in ipairs({1, 64, 65, C}) do
      local s = 0
      for i = 1, R do s = s + tbl[i][j] end
      assert.are.equal(s, cs:select(2, j):select(1, R):item())
    end
    local s = 0
    for j = 1, C do s = s + tbl[R][j] end
    assert.are.equal(s, rs:select(1, R):select(1, C):item())
    -- gather along dim 1 and scatter_add back
    local idx = rand_ints({R, C}, 1, R)
    local g = t:gather(1, long(idx))
    for _, i in ipairs({1, 150, R}) do
      for _, j in ipairs({1, 99, C}) do assert.are.equal(tbl[idx[i][j]][j], g:select(1, i):select(1, j):item()) end
    end
    local acc = lark.zeros(R, C, {dtype = "float64"}):scatter_add_(1, long(idx), t)
    local want = {}
    for i = 1, R do
      for j = 1, C do
        local r = idx[i][j]
        want[r] = want[r] or {}
        want[r][j] = (want[r][j] or 0) + tbl[i][j]
      end
    end
    for _, j in ipairs({1, 64, 65, C}) do
      for _, i in ipairs({1, 2, R}) do
        assert.are.equal(want[i] and want[i][j] or 0, acc:select(1, i):select(1, j):item())
      end
    end
  end)
end)

describe("in-place ops whose arguments share the tensor's memory", function()
  it("read the index, the source and the mask as they were before the writes", function()
    local t = long({1, 2, 3, 1})
    -- t is its own index and source: t[t[i]] += t[i], with t read before any write
    t:scatter_add_(1, t, t)
    assert.are.same({3, 4, 6, 1}, t:table())
    local s = lark.tensor({1, 2, 3, 4}, {dtype = "float64"})
    s:scatter_add_(1, long({4, 4, 4, 4}), s)
    assert.are.same({1, 2, 3, 14}, s:table())
    local b = lark.tensor({{true, false}, {true, true}})
    b:masked_fill_(b:select(1, 1), false) -- the mask is row 1 of b, broadcast over both rows
    assert.are.same({{false, false}, {false, true}}, b:table())
  end)
end)
