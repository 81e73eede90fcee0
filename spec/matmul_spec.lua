-- matmul_spec.lua: lark.matmul (numpy.matmul semantics) against a plain Lua triple loop, for every
-- case of operand ranks, broadcast batches, transposed / narrowed / expanded operands, k = 0, both
-- float dtypes; the method aliases; and the errors.

math.randomseed(11)

-- numpy.matmul of two tensors, computed from their tables: returns the nested result table (a
-- number for a 0-d result) and its shape.
local function ref_matmul(a, b)
  local at, bt = a:table(), b:table()
  local sa, sb = shape_of(a), shape_of(b)
  -- 1-D operands: a becomes a row, b a column
  local a1, b1 = #sa == 1, #sb == 1
  if a1 then at, sa = {at}, {1, sa[1]} end
  if b1 then
    local col = {}
    for i = 1, #bt do col[i] = {bt[i]} end
    bt, sb = col, {sb[1], 1}
  end
  local m, k, n = sa[#sa - 1], sa[#sa], sb[#sb]
  assert(sb[#sb - 1] == k)
  local ba, bb = {}, {}
  for i = 1, #sa - 2 do ba[i] = sa[i] end
  for i = 1, #sb - 2 do bb[i] = sb[i] end
  local nb = math.max(#ba, #bb)
  local batch = {}
  for i = 1, nb do
    local x, y = ba[#ba - nb + i] or 1, bb[#bb - nb + i] or 1
    batch[i] = x == 1 and y or x
  end
  local function operand_batch(tab, bs, c)
    for d = 1, #bs do tab = tab[bs[d] == 1 and 1 or c[nb - #bs + d]] end
    return tab
  end
  local oshape = table.move(batch, 1, nb, 1, {})
  if not a1 then oshape[#oshape + 1] = m end
  if not b1 then oshape[#oshape + 1] = n end
  local out = {}
  local function set(c, v)
    if #c == 0 then out = v return end
    local t = out
    for d = 1, #c - 1 do
      t[c[d]] = t[c[d]] or {}
      t = t[c[d]]
    end
    t[c[#c]] = v
  end
  for _, c in ipairs(coords(batch)) do
    local A, B = operand_batch(at, ba, c), operand_batch(bt, bb, c)
    for i = 1, m do
      for j = 1, n do
        local s = 0
        for p = 1, k do s = s + A[i][p] * B[p][j] end -- the triple loop
        local oc = table.move(c, 1, nb, 1, {})
        if not a1 then oc[#oc + 1] = i end
        if not b1 then oc[#oc + 1] = j end
        set(oc, s)
      end
    end
  end
  -- empty dims leave holes: fill them as empty tables so shapes compare
  if #coords(oshape) == 0 and #oshape > 0 then out = {} end
  return out, oshape
end

local function check(a, b, tol)
  local want, wshape = ref_matmul(a, b)
  local r = lark.matmul(a, b)
  assert.are.same(wshape, shape_of(r))
  local dt = (a:dtype() == "float64" or b:dtype() == "float64") and "float64" or "float32"
  assert.are.equal(dt, r:dtype())
  tol = tol or (dt == "float64" and 1e-12 or 1e-5)
  if r:numel() == 0 then return r end
  if r:dim() == 0 then
    assert_near(r:item(), want, tol)
  else
    local rt = r:table()
    for _, c in ipairs(coords(wshape)) do assert_near(get_at(rt, c), get_at(want, c), tol) end
  end
  return r
end

describe("matmul", function()
  for _, dt in ipairs({"float64", "float32"}) do
    describe(dt, function()
      it("1-D . 1-D is a 0-d dot product", function()
        local a, b = rand_tensor({7}, dt), rand_tensor({7}, dt)
        local r = check(a, b)
        assert.are.equal(0, r:dim())
        local x = lark.tensor({1, 2, 3}, dt)
        assert.are.equal(14, lark.matmul(x, x):item())
      end)

      it("2-D . 1-D and 1-D . 2-D drop the vector's dim", function()
        assert.are.same({5}, shape_of(check(rand_tensor({5, 7}, dt), rand_tensor({7}, dt))))
        assert.are.same({3}, shape_of(check(rand_tensor({7}, dt), rand_tensor({7, 3}, dt))))
        assert.are.same({{17}, {39}}, lark.matmul(lark.tensor({{1, 2}, {3, 4}}, dt), lark.tensor({{5}, {6}}, dt)):table())
      end)

      it("2-D . 2-D", function()
        check(rand_tensor({5, 7}, dt), rand_tensor({7, 3}, dt))
        check(rand_tensor({1, 1}, dt), rand_tensor({1, 1}, dt))
        check(rand_tensor({33, 17}, dt), rand_tensor({17, 9}, dt))
        assert.are.same({{19, 22}, {43, 50}},
          lark.matmul(lark.tensor({{1, 2}, {3, 4}}, dt), lark.tensor({{5, 6}, {7, 8}}, dt)):table())
      end)

      it("batched 3-D . 3-D", function()
        check(rand_tensor({4, 5, 7}, dt), rand_tensor({4, 7, 3}, dt))
        check(rand_tensor({1, 5, 7}, dt), rand_tensor({4, 7, 3}, dt)) -- batch of 1 broadcast
      end)

      it("broadcasts batches: (2,1,m,k) . (3,k,n) -> (2,3,m,n)", function()
        local r = check(rand_tensor({2, 1, 4, 5}, dt), rand_tensor({3, 5, 6}, dt))
        assert.are.same({2, 3, 4, 6}, shape_of(r))
        check(rand_tensor({3, 1, 2, 5}, dt), rand_tensor({1, 4, 5, 2}, dt))
      end)

      it("N-D . 2-D, 2-D . N-D, N-D . 1-D and 1-D . N-D", function()
        assert.are.same({2, 3, 4, 6}, shape_of(check(rand_tensor({2, 3, 4, 5}, dt), rand_tensor({5, 6}, dt))))
        assert.are.same({2, 3, 4, 6}, shape_of(check(rand_tensor({4, 5}, dt), rand_tensor({2, 3, 5, 6}, dt))))
        assert.are.same({2, 3, 4}, shape_of(check(rand_tensor({2, 3, 4, 5}, dt), rand_tensor({5}, dt))))
        assert.are.same({2, 6}, shape_of(check(rand_tensor({5}, dt), rand_tensor({2, 5, 6}, dt))))
      end)

      it("reads transposed and non-contiguous operands", function()
        local a = rand_tensor({7, 5}, dt):t()                      -- (5, 7), column-major
        local b = rand_tensor({3, 7}, dt):t()                      -- (7, 3)
        check(a, b)
        check(rand_tensor({5, 10}, dt):narrow(2, 3, 7), rand_tensor({7, 8}, dt):narrow(2, 2, 3)) -- leading dims wider than cols
        check(rand_tensor({5, 14}, dt)[{{}, {1, 14, 2}}], b)        -- every other column: copied, still right
        check(rand_tensor({4, 7, 5}, dt):transpose(2, 3), rand_tensor({7, 4, 3}, dt):transpose(1, 2)) -- batch dim out of order
        check(rand_tensor({1, 7}, dt):expand(5, 7), b)             -- rows all the same: stride 0
        check(rand_tensor({5, 7}, dt), rand_tensor({7, 1}, dt):expand(7, 3)) -- columns all the same
        check(rand_tensor({5, 1}, dt):expand(5, 1), rand_tensor({1, 4}, dt)) -- k = 1
        check(lark.tensor({{2}}, dt):expand(3, 1), lark.tensor({{1, 2}}, dt)) -- a column expanded from one element
        check(rand_tensor({3, 1, 1}, dt):expand(3, 4, 1), rand_tensor({3, 1, 2}, dt))
        check(rand_tensor({6}, dt)[{{1, 6, 2}}], rand_tensor({3, 4}, dt))   -- strided vector
        check(rand_tensor({4, 3}, dt), rand_tensor({3}, dt):view(3, 1):expand(3, 1):squeeze(2))
      end)

      it("k = 0 gives zeros, m = 0 or n = 0 gives an empty result", function()
        local r = lark.matmul(lark.zeros(3, 0, {dtype = dt}), lark.zeros(0, 4, {dtype = dt}))
        assert.are.same({3, 4}, shape_of(r))
        assert.are.same({{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}}, r:table())
        assert.are.equal(0, lark.matmul(lark.zeros(0, {dtype = dt}), lark.zeros(0, {dtype = dt})):item())
        assert.are.same({0, 4}, shape_of(lark.matmul(lark.zeros(0, 3, {dtype = dt}), lark.ones(3, 4, {dtype = dt}))))
        assert.are.same({2, 5, 0}, shape_of(lark.matmul(lark.ones(2, 5, 3, {dtype = dt}), lark.ones(3, 0, {dtype = dt}))))
        assert.are.same({0, 2, 2}, shape_of(lark.matmul(lark.ones(0, 2, 3, {dtype = dt}), lark.ones(3, 2, {dtype = dt}))))
      end)
    end)
  end

  it("promotes float32 . float64 to float64", function()
    check(rand_tensor({4, 3}, "float32"), rand_tensor({3, 2}, "float64"), 1e-12)
  end)

  it("has the method forms t:matmul, mm, bmm, mv and dot", function()
    local a, b = rand_tensor({3, 4}), rand_tensor({4, 2})
    local want = lark.matmul(a, b):table()
    assert.are.same(want, a:matmul(b):table())
    assert.are.same(want, a:mm(b):table())
    assert.are.same(want, lark.mm(a, b):table())
    local x, y = rand_tensor({2, 3, 4}), rand_tensor({2, 4, 5})
    assert.are.same(lark.matmul(x, y):table(), x:bmm(y):table())
    local v = rand_tensor({4})
    assert.are.same(lark.matmul(a, v):table(), a:mv(v):table())
    local u = rand_tensor({4})
    assert_near(v:dot(u):item(), ref_matmul(v, u), 1e-12)
    expect_error("dot: expected two 1-D tensors, got 2-D and 1-D", function() return a:dot(v) end)
  end)

  it("does not modify its operands and returns fresh storage", function()
    local a, b = rand_tensor({3, 4}), rand_tensor({4, 2})
    local at, bt = a:table(), b:table()
    local r = lark.matmul(a, b)
    assert.is_false(r:shares_storage(a))
    assert.is_false(r:shares_storage(b))
    assert.are.same(at, a:table())
    assert.are.same(bt, b:table())
    assert.is_true(r:is_contiguous())
  end)

  it("rejects inner sizes that differ, integer dtypes and 0-d operands", function()
    expect_error("matmul: shapes [2,3] and [4,5] do not fit (inner sizes 3 and 4 differ)",
      function() return lark.matmul(lark.ones(2, 3), lark.ones(4, 5)) end)
    expect_error("matmul: shapes [3] and [4] do not fit (inner sizes 3 and 4 differ)",
      function() return lark.matmul(lark.ones(3), lark.ones(4)) end)
    expect_error("matmul: shapes [2,3] and [2] do not fit", function() return lark.ones(2, 3):matmul(lark.ones(2)) end)
    expect_error("matmul: expected float32 or float64 tensors, got int64 and float32 (convert with :float())",
      function() return lark.matmul(lark.ones(2, 2, {dtype = "int64"}), lark.ones(2, 2)) end)
    expect_error("matmul: expected float32 or float64 tensors, got float32 and bool",
      function() return lark.matmul(lark.ones(2, 2), lark.ones(2, 2, {dtype = "bool"})) end)
    expect_error("got uint8 and uint8", function() return lark.matmul(lark.ones(2, 2, "uint8"), lark.ones(2, 2, "uint8")) end)
    expect_error("matmul: both operands need at least 1 dim, got shapes [] and [2]",
      function() return lark.matmul(lark.tensor(1), lark.ones(2)) end)
    expect_error("matmul: both operands need at least 1 dim, got shapes [2,2] and []",
      function() return lark.matmul(lark.ones(2, 2), lark.tensor(1)) end)
    expect_error("matmul: shapes [2] and [3] cannot be broadcast",
      function() return lark.matmul(lark.ones(2, 4, 5), lark.ones(3, 5, 6)) end)
    expect_error("matmul: argument 2: expected a Tensor, got number", function() return lark.matmul(lark.ones(2, 2), 2) end)
  end)
end)
