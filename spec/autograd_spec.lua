-- autograd_spec.lua: reverse-mode gradients: the engine, every differentiable op so far against
-- finite differences (float64), grad mode, and the errors that protect the graph.

local function leaf(t, dtype)
  local x = lark.tensor(t, {dtype = dtype or "float64"})
  x.requires_grad = true
  return x
end

local function randleaf(shape, lo, hi)
  return leaf(rand_table(shape, lo or -1, hi or 1))
end

local function check(fn, inputs)
  local ok, msg = lark.autograd.gradcheck(fn, inputs)
  assert(ok, msg)
end

describe("autograd", function()
  it("computes the gradients of a small expression", function()
    local x = leaf{{1, 2}, {3, 4}}
    local w = leaf{0.5, -1}
    local y = (x * w):sum()
    assert.are.equal("sum", y.grad_fn)
    assert.is_true(x.is_leaf)
    assert.is_false(y.is_leaf)
    y:backward()
    assert_near(x.grad, {{0.5, -1}, {0.5, -1}}, 1e-12)
    assert_near(w.grad, {4, 6}, 1e-12)
  end)

  it("accumulates across backward calls and can be reset", function()
    local x = leaf{1, 2, 3}
    for _ = 1, 3 do local y = (x * x):sum(); y:backward() end
    assert_near(x.grad, {6, 12, 18}, 1e-12)
    x.grad = nil
    assert.is_nil(x.grad)
    local y2 = (x * 2):sum()
    y2:backward()
    assert_near(x.grad, {2, 2, 2}, 1e-12)
  end)

  it("frees the graph after backward unless asked to keep it", function()
    local x = leaf{1, 2}
    local y = (x * x):sum()
    y:backward({retain_graph = true})
    y:backward()
    assert_near(x.grad, {4, 8}, 1e-12)
    expect_error("already freed by an earlier backward", function() y:backward() end)
  end)

  it("takes an explicit gradient for non-scalar outputs and refuses to guess one", function()
    local x = leaf{1, 2, 3}
    local y = x * 3
    expect_error("a gradient can be implied only for a tensor of one element", function() y:backward() end)
    expect_error("the gradient has shape [2] but the tensor has shape [3]",
      function() y:backward(lark.ones(2, {dtype = "float64"})) end)
    y:backward(lark.tensor({1, 0, 2}, {dtype = "float64"}))
    assert_near(x.grad, {3, 0, 6}, 1e-12)
  end)

  it("sums gradients over broadcast dims back to each input's shape", function()
    local a = randleaf({3, 1})
    local b = randleaf({4})
    local s = lark.randn(3, 4, {dtype = "float64"})
    local y = ((a + b) * s):sum()
    y:backward()
    assert.are.same({3, 1}, {a.grad:size(1), a.grad:size(2)})
    local st = s:table()
    for i = 1, 3 do
      local acc = 0
      for j = 1, 4 do acc = acc + st[i][j] end
      assert_near(a.grad[{i, 1}], acc, 1e-12)
    end
    assert_near(b.grad, s:sum(1), 1e-12)
    check(function(p, q) return p * q - q / (p:abs() + 1) end, {randleaf({3, 1}), randleaf({4})})
  end)

  it("matches finite differences for every binary op", function()
    local pos = function(shape) return randleaf(shape, 0.5, 2) end
    check(function(a, b) return a + b end, {randleaf({2, 3}), randleaf({3})})
    check(function(a, b) return a - b end, {randleaf({2, 3}), randleaf({2, 3})})
    check(function(a, b) return a * b end, {randleaf({2, 3}), randleaf({2, 1})})
    check(function(a, b) return a / b end, {randleaf({2, 3}), pos({2, 3})})
    check(function(a, b) return a ^ b end, {pos({2, 3}), randleaf({2, 3})})
    check(function(a) return 2 - a * 3 + a / 4 - 1 / a end, {pos({4})})
    check(function(a) return a ^ 3 end, {randleaf({4})})
    local a = leaf{1, 5, -2}
    local b = leaf{2, 3, -4}
    check(function(p, q) return lark.maximum(p, q) end, {a, b})
    check(function(p, q) return lark.minimum(p, q) end, {a, b})
    check(function(p, q) return lark.fmod(p, q) end, {leaf{5.5, -7.25, 3.3}, leaf{2, 3, 1.5}})
  end)

  it("splits the gradient evenly on maximum ties, as PyTorch does", function()
    local a, b = leaf{1, 2}, leaf{1, 3}
    lark.maximum(a, b):sum():backward()
    assert_near(a.grad, {0.5, 0}, 1e-12)
    assert_near(b.grad, {0.5, 1}, 1e-12)
  end)

  it("matches finite differences for every unary op", function()
    local x = randleaf({2, 3})
    local pos = randleaf({2, 3}, 0.5, 2)
    local away = leaf{{-1.5, -0.5, 0.25}, {0.75, 1.25, -2}} -- no element near the kinks at 0
    for _, op in ipairs{"neg", "exp", "sin", "cos", "tanh", "sigmoid", "square"} do
      check(function(t) return t[op](t) end, {x})
    end
    for _, op in ipairs{"log", "sqrt", "rsqrt", "reciprocal"} do
      check(function(t) return t[op](t) end, {pos})
    end
    for _, op in ipairs{"abs", "relu"} do
      check(function(t) return t[op](t) end, {away})
    end
    check(function(t) return t:clamp(-1, 1) end, {away})
    check(function(t) return t:clamp(nil, 0.5) end, {away})
    check(function(t) return lark.where(t:gt(0), t * t, -t) end, {away})
  end)

  it("gives zero gradients through piecewise-constant ops", function()
    local x = leaf{1.5, -2.5}
    for _, op in ipairs{"floor", "ceil", "round", "sign"} do
      x.grad = nil
      x[op](x):sum():backward()
      assert_near(x.grad, {0, 0}, 0)
    end
  end)

  it("matches finite differences through views and copies", function()
    local x = randleaf({2, 3, 4})
    check(function(t) return t:view(6, 4) * 2 end, {x})
    check(function(t) return t:reshape(4, 6):t():contiguous() end, {x})
    check(function(t) return t:narrow(3, 2, 2) end, {x})
    check(function(t) return t:select(2, 3) end, {x})
    check(function(t) return t[{{}, {1, -1, 2}, 2}] end, {x})
    check(function(t) return t:transpose(1, 3) end, {x})
    check(function(t) return t:permute(3, 1, 2):flatten() end, {x})
    check(function(t) return t:unsqueeze(2):squeeze(2) end, {x})
    check(function(t) return t[1]:unsqueeze(1):expand(5, 3, 4) end, {x})
    check(function(t) return t:clone() * 2 + t:contiguous() end, {x})
    -- through a dtype conversion the gradient comes back in the input's dtype
    local y = (x:float() * 2):sum()
    y:backward()
    assert.are.equal("float64", x.grad:dtype())
    assert_near(x.grad, lark.full({2, 3, 4}, 2, {dtype = "float64"}), 1e-12)
  end)

  it("matches finite differences through matmul of every rank", function()
    check(function(a, b) return lark.matmul(a, b) end, {randleaf({3}), randleaf({3})})
    check(function(a, b) return lark.matmul(a, b) end, {randleaf({2, 3}), randleaf({3})})
    check(function(a, b) return lark.matmul(a, b) end, {randleaf({3}), randleaf({3, 2})})
    check(function(a, b) return lark.matmul(a, b) end, {randleaf({2, 3}), randleaf({3, 4})})
    check(function(a, b) return lark.matmul(a, b) end, {randleaf({2, 2, 3}), randleaf({2, 3, 4})})
    check(function(a, b) return lark.matmul(a, b) end, {randleaf({2, 1, 2, 3}), randleaf({3, 3, 2})})
    check(function(a, b) return lark.matmul(a, b:t()) end, {randleaf({4, 2, 3}), randleaf({5, 3})})
  end)

  it("matches finite differences through sum and mean", function()
    local x = randleaf({2, 3, 4})
    check(function(t) return t:sum() end, {x})
    check(function(t) return t:sum(2) end, {x})
    check(function(t) return t:sum({1, 3}, true) end, {x})
    check(function(t) return t:mean() end, {x})
    check(function(t) return t:mean(-1) end, {x})
    check(function(t) return (t * t):mean({1, 2}, true) end, {x})
  end)

  it("matches finite differences through var, std, max, min and norm", function()
    local x = randleaf({3, 4})
    check(function(t) return t:var() end, {x})
    check(function(t) return t:var(2, false) end, {x})
    check(function(t) return t:std(1, true, true) end, {x})
    check(function(t) return t:max() * t:min() end, {x})
    check(function(t) return t:norm() end, {x})
    check(function(t) return t:norm(1, 2) end, {x})
    check(function(t) return t:norm(3, {1, 2}) end, {x})
    check(function(t) return t:norm(math.huge, 1) end, {x})
  end)

  it("matches finite differences through indexing, sorting, cumsum and cat", function()
    local x = randleaf({3, 4})
    local idx = lark.tensor({{1, 3}, {2, 2}, {4, 1}}, {dtype = "int64"})
    check(function(t) return t:gather(2, idx) end, {x})
    check(function(t) return t:index_select(1, lark.tensor({3, 1, 3}, {dtype = "int64"})) end, {x})
    check(function(t) return t:masked_fill(t:gt(0), 2) end, {x})
    check(function(t) local v = t:max(2); return v end, {x})
    check(function(t) local v = t:min(1, true); return v end, {x})
    check(function(t) local v = t:sort(2, true); return v end, {x})
    check(function(t) local v = t:topk(2, 1); return v end, {x})
    check(function(t) return t:cumsum(2) end, {x})
    local y = randleaf({2, 4})
    check(function(a, b) return lark.cat({a, b, a}, 1) end, {x, y})
    check(function(a) return lark.stack({a, a * 2}, 2) end, {x})
    check(function(a) local p = a:split(1, 1); return p[2] * p[3] end, {x})
    check(function(a) local p = a:chunk(2, 2); return p[1] - p[2] end, {x})
  end)

  it("stores a leaf's gradient as a contiguous tensor of its own, even when it arrives as a view", function()
    local x, w = randleaf({3, 4}), randleaf({5, 4})
    local y = x:matmul(w:t())
    y:sum():backward()
    assert.is_true(w.grad:is_contiguous())
    assert_near(w.grad, lark.ones(3, 5, {dtype = "float64"}):t():matmul(x:detach()), 1e-12)
    local b = randleaf({4})
    b:expand(3, 4):sum():backward()
    assert.is_true(b.grad:is_contiguous())
    assert.are.same({3, 3, 3, 3}, b.grad:table())
  end)

  it("differentiates prod, with zeros in the input", function()
    local x = randleaf({3, 4})
    check(function(a) return a:prod() end, {x})
    check(function(a) return a:prod(2) end, {x})
    check(function(a) return a:prod(1, true) end, {x})
    -- one zero: its gradient is the product of the rest, the others get 0; two zeros: all 0
    local z = leaf{{2, 0, 3}, {0, 5, 0}, {1, 2, 4}}
    z:prod(2):sum():backward()
    assert.are.same({{0, 6, 0}, {0, 0, 0}, {8, 4, 2}}, z.grad:table())
    local w = leaf{0, 0}
    w:prod():backward()
    assert.are.same({0, 0}, w.grad:table())
  end)

  it("records nothing under no_grad, as a scope and as a wrapper", function()
    local x = leaf{1, 2}
    do
      local g <close> = lark.no_grad()
      assert.is_false(lark.is_grad_enabled())
      assert.is_false((x * 2).requires_grad)
      do
        local inner <close> = lark.enable_grad()
        assert.is_true((x * 2).requires_grad)
      end
      assert.is_false(lark.is_grad_enabled())
    end
    assert.is_true(lark.is_grad_enabled())
    local f = lark.no_grad(function(t) return t * 3, lark.is_grad_enabled() end)
    local y, enabled = f(x)
    assert.is_false(y.requires_grad)
    assert.is_false(enabled)
    assert.is_true(lark.is_grad_enabled())
    local bad = lark.no_grad(function() error("boom") end)
    assert.has_error(bad)
    assert.is_true(lark.is_grad_enabled(), "grad mode is restored after an error")
  end)

  it("detaches a tensor from its history", function()
    local x = leaf{1, 2}
    local y = (x * 2):detach()
    assert.is_false(y.requires_grad)
    assert.is_true(y:shares_storage(y))
    local z = (x * y):sum()
    z:backward()
    assert_near(x.grad, {2, 4}, 1e-12)
  end)

  it("returns gradients with autograd.grad without touching .grad", function()
    local x = leaf{1, 2, 3}
    local h = x * x
    local y = (h * 2):sum()
    local gx, gh = table.unpack(lark.autograd.grad(y, {x, h}))
    assert_near(gx, {4, 8, 12}, 1e-12)
    assert_near(gh, {2, 2, 2}, 1e-12)
    assert.is_nil(x.grad)
    local unrelated = leaf{5}
    local r = lark.autograd.grad((x * 1):sum(), {x, unrelated})
    assert_near(r[1], {1, 1, 1}, 1e-12)
    assert.is_nil(r[2])
  end)

  it("turns an in-place change of a saved tensor into a clear error", function()
    local w = leaf{1, 2}
    local a = lark.tensor({3, 4}, {dtype = "float64"})
    local y = (a * w):sum()
    a:add_(1)
    expect_error("a tensor that mul saved for its gradient was modified by an in-place op", function() y:backward() end)
  end)

  it("protects leaves and graph tensors from in-place ops while grad mode is on", function()
    local w = leaf{1, 2}
    expect_error("add_: a leaf tensor that requires grad cannot be changed in place", function() w:add_(1) end)
    expect_error("in-place ops on tensors that require grad are not supported", function() (w * 2):mul_(2) end)
    do
      local g <close> = lark.no_grad()
      w:sub_(lark.tensor({0.5, 0.5}, {dtype = "float64"})) -- what an optimizer does
    end
    assert_near(w, {0.5, 1.5}, 1e-12)
  end)

  it("refuses requires_grad on integer tensors and mis-shaped gradients", function()
    local i = lark.tensor({1, 2}, {dtype = "int64"})
    expect_error("only float32 and float64 tensors can require grad", function() i.requires_grad = true end)
    local x = leaf{1, 2}
    expect_error("a gradient of shape [3] does not fit a tensor of shape [2]",
      function() x.grad = lark.ones(3, {dtype = "float64"}) end)
    expect_error("the tensor does not require grad", function() lark.ones(2):sum():backward() end)
  end)

  it("takes requires_grad in the factories' options", function()
    local x = lark.zeros(2, 3, {dtype = "float64", requires_grad = true})
    assert.is_true(x.requires_grad)
    assert.are.equal("float64", x:dtype())
    assert.is_true(lark.tensor({1, 2}, {requires_grad = true}).requires_grad)
    assert.is_true(lark.randn(3, {requires_grad = true}).requires_grad)
    assert.is_false(lark.ones(2).requires_grad)
    local w = lark.ones(3):requires_grad_()
    assert.is_true(w.requires_grad and w.is_leaf)
  end)

  it("keeps float32 gradients in float32", function()
    local x = leaf({1, 2}, "float32")
    local y = (x * x):sum()
    y:backward()
    assert.are.equal("float32", x.grad:dtype())
    assert_near(x.grad, {2, 4}, 1e-6)
  end)

  it("frees the graph: memory stays flat over 1,000 training steps of a small model", function()
    lark.manual_seed(1)
    local X = lark.randn(64, 8)
    local Y = X:matmul(lark.linspace(-1, 1, 8):view(8, 1))
    local W = lark.zeros(8, 1)
    W.requires_grad = true
    collectgarbage()
    local start = lark.bytes_allocated()
    local peak, first_loss, loss = 0, nil, nil
    for step = 1, 1000 do
      local err = X:matmul(W) - Y
      local l = (err * err):mean()
      l:backward()
      do
        local g <close> = lark.no_grad()
        W:sub_(W.grad * 0.1)
      end
      W.grad = nil
      loss = l:item()
      first_loss = first_loss or loss
      if step % 100 == 0 then peak = math.max(peak, lark.bytes_allocated() - start) end
    end
    assert.is_true(loss < first_loss * 1e-3, "the model trains: loss " .. first_loss .. " -> " .. loss)
    assert.is_true(peak < 16 * 2 ^ 20, string.format("tensor memory peaked %.1f MB above the start", peak / 2 ^ 20))
  end)
end)
