-- views_spec.lua: views never copy. Every view is checked three ways against plain Lua: its values
-- (each element equals the base element its coordinates map to), that it shares the base's storage,
-- and that writing through it changes exactly the mapped elements of the base. Then Torch7-style
-- indexing and assignment (t[i], t[{i, j}], t[{{a, b, step}, j}], t[mask] = v).

local function key(c) return table.concat(c, ",") end

-- A fresh float64 base 0, 1, 2, ... of the given shape.
local function base_of(...)
  local sh = {...}
  local n = 1
  for i = 1, #sh do n = n * sh[i] end
  return lark.arange(n, {dtype = "float64"}):view(sh)
end

-- Checks view v of base against map (view coords -> base coords): values, shared storage and
-- write-through. `opts.fill` writes one value (for views with stride-0 dims, where distinct values
-- cannot all land).
local function check_view(base, v, map, opts)
  opts = opts or {}
  assert.is_true(v:shares_storage(base), "the view must share the base's storage")
  local bt, vt = base:table(), v:table()
  local all = coords(shape_of(v))
  for _, c in ipairs(all) do
    local want = get_at(bt, map(c))
    assert.are.equal(want, #c == 0 and vt or get_at(vt, c), "view element " .. key(c))
  end
  -- write through the view: negative marks, which the base (0, 1, 2, ...) never holds
  local written = {}
  if opts.fill then
    v:fill_(-1)
    for _, c in ipairs(all) do written[key(map(c))] = -1 end
  else
    local marks = lark.arange(1, #all + 1, {dtype = "float64"}):neg()
    if #all > 0 then v:copy_(marks:view(shape_of(v))) end
    for i, c in ipairs(all) do
      local k = key(map(c))
      assert.is_nil(written[k], "two view elements map to base element " .. k)
      written[k] = -i
    end
  end
  local after = base:table()
  for _, c in ipairs(coords(shape_of(base))) do
    local k = key(c)
    assert.are.equal(written[k] or get_at(bt, c), get_at(after, c), "base element " .. k .. " after writing the view")
  end
  -- put the base back for the next check
  for _, c in ipairs(coords(shape_of(base))) do
    if written[key(c)] then base[c] = get_at(bt, c) end
  end
  assert.are.same(bt, base:table())
end

describe("view and reshape", function()
  it("view keeps the row-major order, with -1 inferred", function()
    local b = base_of(2, 3, 4)
    local v = b:view(6, 4)
    assert.are.same({6, 4}, shape_of(v))
    check_view(b, v, function(c) local i = (c[1] - 1) * 4 + c[2] - 1 return {i // 12 + 1, i // 4 % 3 + 1, i % 4 + 1} end)
    local w = b:view(-1, 2, 6)
    assert.are.same({2, 2, 6}, shape_of(w))
    check_view(b, w, function(c)
      local i = (c[1] - 1) * 12 + (c[2] - 1) * 6 + c[3] - 1
      return {i // 12 + 1, i // 4 % 3 + 1, i % 4 + 1}
    end)
    assert.are.same({24}, shape_of(b:view(-1)))
    assert.are.same({1, 24, 1}, shape_of(b:view(1, -1, 1)))
    assert.are.same({4, 6}, shape_of(b:view({4, -1})))
    assert.are.same({2, 3, 4}, shape_of(b:view(6, 4):view_as(b)))
  end)

  it("views a 0-d tensor as [1] and back", function()
    local s = lark.tensor(5, "float64")
    local v = s:view(1)
    assert.are.same({1}, shape_of(v))
    check_view(s, v, function() return {} end)
    assert.are.equal(0, v:view():dim())
  end)

  it("views non-contiguous tensors when the strides allow it", function()
    local b = base_of(4, 6)
    local n = b:narrow(2, 1, 3) -- rows of 3 with stride 6
    local v = n:view(2, 2, 3)
    check_view(b, v, function(c) return {(c[1] - 1) * 2 + c[2], c[3]} end)
    local t = base_of(2, 3, 4)
    local tt = t:transpose(1, 2) -- (3, 2, 4)
    local s = tt:view(3, 2, 2, 2) -- splitting the contiguous last dim is fine
    check_view(t, s, function(c) return {c[2], c[1], (c[3] - 1) * 2 + c[4]} end)
  end)

  it("refuses a view that would need a copy, and says so", function()
    local t = base_of(2, 3):t()
    expect_error("view: a tensor of shape [3,2] with these strides cannot be viewed as [6] without a copy " ..
      "(use reshape, or contiguous() first)", function() return t:view(6) end)
    expect_error("view: cannot view a tensor of shape [3,2] (6 elements) as [4]", function() return t:view(4) end)
    expect_error("view: shape [4,-1] is invalid for a tensor of 6 elements", function() return t:view(4, -1) end)
    expect_error("only one size may be -1", function() return t:view(-1, -1) end)
  end)

  it("reshape views when it can and copies when it must", function()
    local b = base_of(2, 3, 4)
    local r = b:reshape(4, -1)
    assert.are.same({4, 6}, shape_of(r))
    check_view(b, r, function(c) local i = (c[1] - 1) * 6 + c[2] - 1 return {i // 12 + 1, i // 4 % 3 + 1, i % 4 + 1} end)
    local t = b:transpose(2, 3) -- (2, 4, 3)
    local c = t:reshape(-1)
    assert.is_false(c:shares_storage(b))
    local want = {}
    for i = 1, 2 do for j = 1, 4 do for k = 1, 3 do want[#want + 1] = (i - 1) * 12 + (k - 1) * 4 + j - 1 end end end
    assert.are.same(want, c:table())
  end)

  it("flatten merges a range of dims, negative dims included", function()
    local b = base_of(2, 3, 4)
    local f = b:flatten()
    assert.are.same({24}, shape_of(f))
    check_view(b, f, function(c) local i = c[1] - 1 return {i // 12 + 1, i // 4 % 3 + 1, i % 4 + 1} end)
    local g = b:flatten(2)
    assert.are.same({2, 12}, shape_of(g))
    check_view(b, g, function(c) return {c[1], (c[2] - 1) // 4 + 1, (c[2] - 1) % 4 + 1} end)
    local h = b:flatten(1, -2)
    assert.are.same({6, 4}, shape_of(h))
    check_view(b, h, function(c) return {(c[1] - 1) // 3 + 1, (c[1] - 1) % 3 + 1, c[2]} end)
    assert.are.same({1}, shape_of(lark.tensor(3):flatten()))
    expect_error("flatten: start dim 3 comes after end dim 2", function() return b:flatten(3, 2) end)
  end)
end)

describe("narrow, select and slicing", function()
  it("narrow takes a 1-based start on any dim", function()
    local b = base_of(3, 4, 5)
    local n = b:narrow(2, 2, 2)
    assert.are.same({3, 2, 5}, shape_of(n))
    check_view(b, n, function(c) return {c[1], c[2] + 1, c[3]} end)
    local m = b:narrow(-1, 5, 1) -- negative dim: the last
    assert.are.same({3, 4, 1}, shape_of(m))
    check_view(b, m, function(c) return {c[1], c[2], 5} end)
    local k = b:narrow(2, -2, 2) -- negative start: the last two
    assert.are.same({3, 2, 5}, shape_of(k))
    check_view(b, k, function(c) return {c[1], c[2] + 2, c[3]} end)
    local e = b:narrow(1, 4, 0) -- empty, right after the end
    assert.are.equal(0, e:numel())
    expect_error("narrow: 2 elements from index 4 do not fit dim 2 of size 4", function() return b:narrow(2, 4, 2) end)
    expect_error("narrow: 1 elements from index 0 do not fit", function() return b:narrow(2, 0, 1) end)
  end)

  it("select drops the dim; negative indices count from the end", function()
    local b = base_of(3, 4, 5)
    local s = b:select(2, 3)
    assert.are.same({3, 5}, shape_of(s))
    check_view(b, s, function(c) return {c[1], 3, c[2]} end)
    local l = b:select(-1, -1)
    assert.are.same({3, 4}, shape_of(l))
    check_view(b, l, function(c) return {c[1], c[2], 5} end)
    local z = b:select(1, 2):select(1, 4):select(1, 5) -- down to 0-d
    assert.are.equal(0, z:dim())
    check_view(b, z, function() return {2, 4, 5} end)
    expect_error("select: index 6 is out of range for dim 3 of size 5 (indices are 1-based)", function() return b:select(3, 6) end)
    expect_error("select: index -6 is out of range for dim 3 of size 5", function() return b:select(3, -6) end)
  end)

  it("t[{{first, last, step}}] takes every step-th element, inclusive", function()
    local b = base_of(7, 3)
    local s = b[{{1, 7, 2}}]
    assert.are.same({4, 3}, shape_of(s))
    check_view(b, s, function(c) return {1 + (c[1] - 1) * 2, c[2]} end)
    local s2 = b[{{2, -1, 3}, {1, 3, 2}}]
    assert.are.same({2, 2}, shape_of(s2)) -- rows 2, 5; columns 1, 3
    check_view(b, s2, function(c) return {2 + (c[1] - 1) * 3, 1 + (c[2] - 1) * 2} end)
    local s3 = b[{{}, {3}}] -- a single-element range keeps the dim
    assert.are.same({7, 1}, shape_of(s3))
    check_view(b, s3, function(c) return {c[1], 3} end)
    local s4 = b[{{6, 7, 5}}] -- the step runs past the end
    assert.are.same({1, 3}, shape_of(s4))
    check_view(b, s4, function(c) return {6, c[2]} end)
    expect_error("range {1, 7, 0} does not fit dim 1 of size 7", function() return b[{{1, 7, 0}}] end)
    expect_error("a range has at most 3 entries", function() return b[{{1, 2, 1, 1}}] end)
    expect_error("range {-9, 2, 1} does not fit dim 1 of size 7", function() return b[{{-9, 2}}] end)
  end)

  it("rejects non-integer range entries without leaking the view it was building", function()
    collectgarbage()
    collectgarbage()
    local before = lark.bytes_allocated()
    do
      local t = lark.zeros(1000)
      expect_error("index: index 1: a range {first, last, step} takes integers", function() return t[{{1.5, 2}}] end)
      expect_error("index: index 1: a range {first, last, step} takes integers", function() return t[{{1, 2, "x"}}] end)
      expect_error("newindex: index 1: a range {first, last, step} takes integers", function() t[{{1, {}}}] = 0 end)
    end
    collectgarbage()
    collectgarbage()
    assert.are.equal(before, lark.bytes_allocated())
  end)
end)

describe("transpose, t and permute", function()
  it("transpose swaps two dims (negative dims too)", function()
    local b = base_of(2, 3, 4)
    local t = b:transpose(1, 3)
    assert.are.same({4, 3, 2}, shape_of(t))
    assert.are.same({1, 4, 12}, {t:stride(1), t:stride(2), t:stride(3)})
    check_view(b, t, function(c) return {c[3], c[2], c[1]} end)
    local u = b:transpose(-1, -2)
    check_view(b, u, function(c) return {c[1], c[3], c[2]} end)
    local same = b:transpose(2, 2)
    check_view(b, same, function(c) return c end)
    expect_error("transpose: argument 3: dim 4 is out of range", function() return b:transpose(1, 4) end)
  end)

  it("t transposes matrices and leaves vectors", function()
    local m = base_of(3, 5)
    check_view(m, m:t(), function(c) return {c[2], c[1]} end)
    local v = base_of(4)
    check_view(v, v:t(), function(c) return c end)
    expect_error("t: expected a tensor of at most 2 dims, got 3", function() return base_of(1, 1, 1):t() end)
  end)

  it("permute reorders every dim", function()
    local b = base_of(2, 3, 4)
    local p = b:permute(3, 1, 2)
    assert.are.same({4, 2, 3}, shape_of(p))
    assert.are.same({1, 12, 4}, {p:stride(1), p:stride(2), p:stride(3)})
    check_view(b, p, function(c) return {c[2], c[3], c[1]} end)
    local q = b:permute({-1, -3, -2})
    check_view(b, q, function(c) return {c[2], c[3], c[1]} end)
    local back = p:permute(2, 3, 1)
    assert.is_true(back:is_contiguous())
    check_view(b, back, function(c) return c end)
    expect_error("permute: 2 dims given for a tensor of 3 dims", function() return b:permute(1, 2) end)
    expect_error("permute: dim 2 appears twice", function() return b:permute(2, 2, 1) end)
  end)
end)

describe("expand", function()
  it("repeats size-1 dims with stride 0 and adds leading dims", function()
    local b = base_of(3, 1)
    local e = b:expand(2, 3, 4)
    assert.are.same({2, 3, 4}, shape_of(e))
    assert.are.same({0, 1, 0}, {e:stride(1), e:stride(2), e:stride(3)})
    check_view(b, e, function(c) return {c[2], 1} end, {fill = true})
    local k = b:expand(-1, 5) -- -1 keeps the size
    assert.are.same({3, 5}, shape_of(k))
    check_view(b, k, function(c) return {c[1], 1} end, {fill = true})
    local like = b:expand_as(lark.zeros(4, 3, 2))
    assert.are.same({4, 3, 2}, shape_of(like))
    check_view(b, like, function(c) return {c[2], 1} end, {fill = true})
    local z = lark.tensor(2.5, "float64"):expand(2, 2)
    assert.are.same({{2.5, 2.5}, {2.5, 2.5}}, z:table())
    assert.are.equal(0, lark.ones(1, 3):expand(0, 3):numel())
    expect_error("expand: cannot expand shape [3,1] to [4,2] (dim 1 has size 3, not 1)", function() return b:expand(4, 2) end)
  end)
end)

describe("squeeze and unsqueeze", function()
  it("squeeze drops size-1 dims (all, or one)", function()
    local b = base_of(1, 3, 1, 2)
    local s = b:squeeze()
    assert.are.same({3, 2}, shape_of(s))
    check_view(b, s, function(c) return {1, c[1], 1, c[2]} end)
    local s3 = b:squeeze(3)
    assert.are.same({1, 3, 2}, shape_of(s3))
    check_view(b, s3, function(c) return {1, c[2], 1, c[3]} end)
    local sn = b:squeeze(-4)
    assert.are.same({3, 1, 2}, shape_of(sn))
    check_view(b, sn, function(c) return {1, c[1], 1, c[3]} end)
    assert.are.same({1, 3, 1, 2}, shape_of(b:squeeze(2))) -- not size 1: unchanged
    assert.are.same({}, shape_of(lark.ones(1, 1):squeeze()))
  end)

  it("unsqueeze inserts a size-1 dim anywhere, negative from the end", function()
    local b = base_of(3, 2)
    local u = b:unsqueeze(1)
    assert.are.same({1, 3, 2}, shape_of(u))
    check_view(b, u, function(c) return {c[2], c[3]} end)
    local m = b:unsqueeze(2)
    assert.are.same({3, 1, 2}, shape_of(m))
    check_view(b, m, function(c) return {c[1], c[3]} end)
    local l = b:unsqueeze(-1)
    assert.are.same({3, 2, 1}, shape_of(l))
    check_view(b, l, function(c) return {c[1], c[2]} end)
    assert.are.same({1}, shape_of(lark.tensor(1):unsqueeze(1)))
    expect_error("unsqueeze: dim 4 is out of range for a result of 3 dims", function() return b:unsqueeze(4) end)
    expect_error("unsqueeze: dim -4 is out of range", function() return b:unsqueeze(-4) end)
  end)
end)

describe("unfold", function()
  it("makes overlapping windows as a view", function()
    local b = base_of(2, 7)
    local u = b:unfold(2, 3, 2) -- windows of 3 every 2: starts 1, 3, 5
    assert.are.same({2, 3, 3}, shape_of(u))
    assert.are.same({7, 2, 1}, {u:stride(1), u:stride(2), u:stride(3)})
    -- overlapping windows: check values and sharing, then write one element through the view
    local bt, ut = b:table(), u:table()
    for i = 1, 2 do for w = 1, 3 do for k = 1, 3 do
      assert.are.equal(bt[i][(w - 1) * 2 + k], ut[i][w][k])
    end end end
    assert.is_true(u:shares_storage(b))
    u[{2, 2, 3}] = -5 -- window 2 of row 2, element 3 = b[2][5], also window 3 element 1
    assert.are.equal(-5, b[{2, 5}])
    assert.are.equal(-5, u[{2, 3, 1}])
    local b6 = base_of(6)
    local v = b6:unfold(1, 2, 2) -- non-overlapping windows: every element once
    assert.are.same({3, 2}, shape_of(v))
    check_view(b6, v, function(c) return {(c[1] - 1) * 2 + c[2]} end)
    local w = base_of(2, 5)
    local uw = w:unfold(-1, 5, 1)
    assert.are.same({2, 1, 5}, shape_of(uw))
    check_view(w, uw, function(c) return {c[1], c[3]} end)
    local ur = w:unfold(1, 1, 1)
    assert.are.same({2, 5, 1}, shape_of(ur))
    check_view(w, ur, function(c) return {c[1], c[2]} end)
    expect_error("unfold: window 6 with step 1 does not fit dim 2 of size 5", function() return w:unfold(2, 6, 1) end)
    expect_error("unfold: window 2 with step 0", function() return w:unfold(2, 2, 0) end)
  end)
end)

describe("views of views", function()
  it("compose their maps and keep writing into the one base", function()
    local b = base_of(4, 5, 6)
    local v = b:narrow(3, 2, 4):transpose(1, 3):select(2, 3)[{{1, 4, 2}}]:unsqueeze(1)
    -- narrow: k -> k + 1; transpose: (k, j, i); select(2, 3): j = 3 -> (k, i); slice rows 1, 3
    assert.are.same({1, 2, 4}, shape_of(v))
    check_view(b, v, function(c) return {c[3], 3, 1 + (c[2] - 1) * 2 + 1} end)
    local w = b:permute(2, 3, 1):narrow(1, 2, 3):view(3, 6, 2, 2):select(4, 2)
    -- permute: (j, k, i); narrow j -> j + 1; split i (4) into (2, 2); select the second half
    assert.are.same({3, 6, 2}, shape_of(w))
    check_view(b, w, function(c) return {(c[3] - 1) * 2 + 2, c[1] + 1, c[2]} end)
  end)
end)

describe("Torch7 indexing", function()
  it("t[i] selects along dim 1: a view, or a number for 1-D", function()
    local b = base_of(3, 4)
    local r = b[2]
    assert.are.same({4}, shape_of(r))
    check_view(b, r, function(c) return {2, c[1]} end)
    assert.are.same({8, 9, 10, 11}, b[-1]:table())
    local v = base_of(5)
    assert.are.equal(3, v[4])
    assert.are.equal("float", math.type(v[4]))
    assert.are.equal(4, v[-1])
    assert.are.equal(7, lark.arange(10)[8])
    assert.are.equal("integer", math.type(lark.arange(10)[8]))
    assert.are.equal(true, lark.tensor({false, true})[2])
    expect_error("index: index 6 is out of range for dim 1 of size 5 (indices are 1-based)", function() return v[6] end)
    expect_error("index: index -6 is out of range", function() return v[-6] end)
  end)

  it("t[{i, j}] is a number; ranges and {} give views", function()
    local b = base_of(3, 4)
    assert.are.equal(6, b[{2, 3}])
    assert.are.equal(11, b[{-1, -1}])
    local col = b[{{1, 3}, 2}]
    assert.are.same({3}, shape_of(col))
    check_view(b, col, function(c) return {c[1], 2} end)
    local tail = b[{{}, {2, -1}}]
    assert.are.same({3, 3}, shape_of(tail))
    check_view(b, tail, function(c) return {c[1], c[2] + 1} end)
    local row = b[{2}] -- fewer indices than dims: the rest is kept
    check_view(b, row, function(c) return {2, c[1]} end)
    local mid = b[{{2, 3}, {2, 3}}]
    check_view(b, mid, function(c) return {c[1] + 1, c[2] + 1} end)
    local t3 = base_of(2, 3, 4)
    local x = t3[{2, {}, -2}]
    assert.are.same({3}, shape_of(x))
    check_view(t3, x, function(c) return {2, c[1], 3} end)
    assert.are.equal(0, b[{{3, 2}}]:numel()) -- last = first - 1: empty
    expect_error("3 indices given for a tensor of 2 dims", function() return b[{1, 1, 1}] end)
    expect_error("index: index 2: expected an integer or a range table, got string", function() return b[{1, "x"}] end)
  end)

  it("assigns numbers and tensors through any index", function()
    local t = base_of(3, 4)
    t[{{}, 2}] = 0
    assert.are.same({{0, 0, 2, 3}, {4, 0, 6, 7}, {8, 0, 10, 11}}, t:table())
    t[2] = 9
    assert.are.same({9, 9, 9, 9}, t[2]:table())
    t[{3, 4}] = -1
    assert.are.equal(-1, t[{3, 4}])
    t[{{1, 2}, {3, 4}}] = lark.tensor({{1, 2}, {3, 4}})
    assert.are.same({{0, 0, 1, 2}, {9, 9, 3, 4}, {8, 0, 10, -1}}, t:table())
    -- a tensor value broadcasts to the indexed view, and converts its dtype
    t[1] = lark.tensor({5, 6, 7, 8}, "int64")
    assert.are.same({5, 6, 7, 8}, t[1]:table())
    t[{{}, {1, 2}}] = lark.tensor({-1, -2})
    assert.are.same({{-1, -2, 7, 8}, {-1, -2, 3, 4}, {-1, -2, 10, -1}}, t:table())
    t[{{2, 3}}] = lark.tensor({{100}, {200}}, "float64")
    assert.are.same({{-1, -2, 7, 8}, {100, 100, 100, 100}, {200, 200, 200, 200}}, t:table())
    local v = lark.zeros(4, {dtype = "int64"})
    v[2] = 7.9 -- converted like any int64 store: truncated
    v[-1] = true
    assert.are.same({0, 7, 0, 1}, v:table())
    expect_error("copy: shape [3] cannot be broadcast to [4]", function() t[1] = lark.ones(3) end)
    expect_error("newindex: can only assign a number, a boolean or a Tensor, got string", function() t[1] = "x" end)
  end)

  it("t[mask] = v sets where the mask is true; t[mask] selects", function()
    local t = lark.tensor({{1, -2, 3}, {-4, 5, -6}})
    local neg = t:lt(0)
    assert.are.equal("bool", neg:dtype())
    t[neg] = 0
    assert.are.same({{1, 0, 3}, {0, 5, 0}}, t:table())
    local m = lark.tensor({{1, 0, 0}, {0, 0, 1}}, "uint8")
    t[m] = 9
    assert.are.same({{9, 0, 3}, {0, 5, 9}}, t:table())
    local row_mask = lark.tensor({true, false, true}) -- broadcast over the rows
    t[row_mask] = -1
    assert.are.same({{-1, 0, -1}, {-1, 5, -1}}, t:table())
    local sel = t[t:gt(-1)]
    assert.are.same({0, 5}, sel:table())
    assert.is_false(sel:shares_storage(t))
    -- through a view: only the view's elements change
    local b = base_of(3, 3)
    local col = b[{{}, 2}]
    col[col:ge(4)] = -7
    assert.are.same({{0, 1, 2}, {3, -7, 5}, {6, -7, 8}}, b:table())
  end)
end)
