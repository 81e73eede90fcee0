-- errors_spec.lua: bad input from Lua raises a Lua error that names the function, the argument
-- and what was expected; nothing crashes the process.

describe("errors", function()
  it("name both shapes when broadcasting fails", function()
    expect_error("add: shapes [2,3] and [4] cannot be broadcast", function() return lark.ones(2, 3) + lark.ones(4) end)
    expect_error("mul: shapes [5] and [2,3] cannot be broadcast", function() return lark.ones(5):mul(lark.ones(2, 3)) end)
    expect_error("add_: in place, the result of shape [2,3] would not fit the tensor of shape [3]",
      function() return lark.ones(3):add_(lark.ones(2, 3)) end)
  end)

  it("reject wrong argument types with the argument's position", function()
    expect_error("add: argument 2: expected a Tensor or a number, got string", function() return lark.ones(2):add("x") end)
    expect_error("argument 1: expected a Tensor, got nil", function() return lark.sqrt(nil) end)
    expect_error("expected a Tensor, got table", function() return lark.exp({1, 2}) end)
    expect_error("matmul: argument 2: expected a Tensor, got number", function() return lark.matmul(lark.ones(2, 2), 3) end)
    expect_error("tensor: argument 1: expected a table of numbers, a number or a Tensor, got string",
      function() return lark.tensor("abc") end)
    expect_error("tensor: expected numbers or booleans in the table, got string", function() return lark.tensor{1, "a"} end)
    expect_error("tensor: the table is not rectangular", function() return lark.tensor{{1, 2}, {3}} end)
  end)

  it("reject bad sizes, negative and absurdly large", function()
    expect_error("size -1 of dim 1 is negative", function() return lark.zeros(-1) end)
    expect_error("size -3 of dim 2 is negative", function() return lark.ones(2, -3) end)
    expect_error("too large to allocate", function() return lark.zeros(1 << 40, 1 << 40) end)
    expect_error("cannot allocate", function() return lark.empty(1 << 45) end)
    expect_error("size 1 must be an integer, got 2.5", function() return lark.zeros(2.5) end)
    expect_error("at most 16 dims", function() return lark.zeros(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1) end)
    expect_error("arange: a step of 1 never goes from 5 to 1", function() return lark.arange(5, 1) end)
    expect_error("arange: start, end and step must be finite and step non-zero", function() return lark.arange(0, 5, 0) end)
    expect_error("linspace: the number of points must be between 0 and 1e12", function() return lark.linspace(0, 1, -2) end)
  end)

  it("reject out-of-range dims and indices, in 1-based terms", function()
    local t = lark.zeros(2, 3)
    expect_error("dim 3 is out of range for a tensor of 2 dims", function() return t:size(3) end)
    expect_error("dim 0 is out of range", function() return t:transpose(0, 1) end)
    expect_error("index 3 is out of range for dim 1 of size 2 (indices are 1-based)", function() return t[3] end)
    expect_error("index 0 is out of range", function() return t[0] end)
    expect_error("index: index must be an integer, got 1.5", function() return t[1.5] end)
    expect_error("narrow: 3 elements from index 2 do not fit dim 2 of size 3", function() return t:narrow(2, 2, 3) end)
    expect_error("select: index 4 is out of range for dim 2 of size 3", function() return t:select(2, 4) end)
    expect_error("range {2, 5, 1} does not fit dim 2 of size 3", function() return t[{{}, {2, 5}}] end)
    expect_error("3 indices given for a tensor of 2 dims", function() return t[{1, 1, 1}] end)
    expect_error("cannot index a 0-d tensor", function() return lark.tensor(1)[1] end)
    expect_error("permute: dim 1 appears twice", function() return t:permute(1, 1) end)
    expect_error("unsqueeze: dim 4 is out of range for a result of 3 dims", function() return t:unsqueeze(4) end)
  end)

  it("reject impossible views and expansions", function()
    expect_error("view: cannot view a tensor of shape [2,3] (6 elements) as [4]", function() return lark.ones(2, 3):view(4) end)
    expect_error("cannot be viewed as [6] without a copy", function() return lark.ones(2, 3):t():view(6) end)
    expect_error("only one size may be -1", function() return lark.ones(2, 3):view(-1, -1) end)
    expect_error("expand: cannot expand shape [2,3] to [4,3] (dim 1 has size 2, not 1)",
      function() return lark.ones(2, 3):expand(4, 3) end)
  end)

  it("reject wrong dtypes with the dtypes named", function()
    expect_error("matmul: expected float32 or float64 tensors, got int64 and float32",
      function() return lark.matmul(lark.ones(2, 2, {dtype = "int64"}), lark.ones(2, 2)) end)
    expect_error("where: the condition must be a bool or uint8 tensor, got float32",
      function() return lark.where(lark.ones(2), lark.ones(2), lark.zeros(2)) end)
    expect_error("neg: not defined for bool tensors", function() return -lark.tensor{true} end)
    expect_error("sub: not defined for two bool tensors", function() return lark.tensor{true} - lark.tensor{false} end)
    expect_error("expected a dtype ('float32', 'float64', 'int64', 'uint8' or 'bool'), got float16",
      function() return lark.zeros(2, {dtype = "float16"}) end)
    expect_error("to: argument 2: 'gpu' is neither a dtype", function() return lark.ones(2):to("gpu") end)
  end)

  it("reject unknown or unavailable devices", function()
    expect_error("'tpu' is not a device", function() return lark.zeros(2, {device = "tpu"}) end)
    if not lark.cuda.is_available() then
      local e = error_of(function() return lark.zeros(2):to("cuda") end)
      assert.truthy(e:lower():find("cuda"), e)
    end
  end)

  it("reject matmul shapes that do not fit", function()
    expect_error("matmul: shapes [2,3] and [4,5] do not fit (inner sizes 3 and 4 differ)",
      function() return lark.matmul(lark.ones(2, 3), lark.ones(4, 5)) end)
    expect_error("matmul: both operands need at least 1 dim", function() return lark.matmul(lark.tensor(1), lark.ones(2)) end)
  end)

  it("reject use after free and after close", function()
    local t = lark.ones(4)
    t:free()
    expect_error("the tensor was freed with free()", function() return t + 1 end)
    expect_error("copy_: argument 1: the tensor was freed", function() return t:copy_(lark.ones(4)) end)
    expect_error("the tensor was freed", function() return t:numel() end)
    assert.are.equal("[freed tensor]", tostring(t))
    t:free() -- twice is fine
    local u
    do
      local c <close> = lark.ones(3)
      u = c
    end
    expect_error("the tensor was closed", function() return u + 1 end)
  end)

  it("keep the process alive through many errors", function()
    for _ = 1, 1000 do
      pcall(function() return lark.ones(2, 3) + lark.ones(4) end)
    end
    assert.are.equal(6, (lark.ones(2, 3) + 1):numel())
  end)
end)
