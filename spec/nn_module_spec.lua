-- nn_module_spec.lua: lark.nn's Module base class, containers, layers, losses and initialisers:
-- names and order against hand-written lists, state dict round trips and strict-load errors,
-- modes, printing, error paths, dtype conversion, each layer against lark.nn.functional and
-- against PyTorch (when python3-torch is installed), the default initialisation's statistics,
-- and a small MLP trained by SGD.
local nn = require "lark.nn"
local F = nn.functional

-- ---- helpers ---------------------------------------------------------------------------------------



-- A Python expression building tensor t (float64 unless dtype says otherwise).
local function py_tensor(t, dtype)
  local shape = {}
  for i = 1, t:dim() do shape[i] = tostring(t:size(i)) end
  return string.format("torch.tensor([%s], dtype=torch.%s).reshape([%s])", table.concat(values_of(t), ","),
    dtype or "float64", table.concat(shape, ","))
end

-- Runs Python lines after a torch prelude with out(key, t); every printed line "key v1 v2 ..." becomes
-- result[key] = {v1, v2, ...} (spec/helper.lua's run_python_keyed).
local function run_torch(lines)
  return run_python_keyed("import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n" ..
    "torch.set_printoptions(precision=17)\n" ..
    "def out(key, t):\n    print(key, ' '.join(repr(float(e)) for e in torch.as_tensor(t).detach().reshape(-1).tolist()))\n" ..
    table.concat(lines, "\n") .. "\n")
end

local function expect_key(res, text, key)
  if not res[key] then error("PyTorch gave no '" .. key .. "'; its output:\n" .. text, 2) end
  return res[key]
end

local function collect(iter)
  local names, values = {}, {}
  for n, v in iter do
    names[#names + 1] = n
    values[#values + 1] = v
  end
  return names, values
end

local function same_tensor(a, b) return rawequal(a, b) end

-- The nested model of the naming tests: own parameters, a ModuleList of Sequentials of blocks with
-- a parameter of their own, a buffer, a non-persistent buffer and a head.
local Block = nn.Module:extend("Block")
function Block:__init(d)
  self.conv = nn.Conv2d(d, d, 3, {padding = 1, bias = false})
  self.bn = nn.BatchNorm2d(d)
  self:register_parameter("gamma", lark.ones(d))
end
function Block:forward(x) return x + self.bn(self.conv(x)) * self.gamma:view(1, -1, 1, 1) end

local Net = nn.Module:extend("Net")
function Net:__init()
  self.stem = nn.Conv2d(3, 4, 3, {padding = 1})
  self:register_parameter("scale", lark.ones(1))
  self.stages = nn.ModuleList{nn.Sequential(Block(4), Block(4)), nn.Sequential(Block(4))}
  self:register_buffer("step", lark.zeros({}, {dtype = "int64"}))
  self:register_buffer("cache", lark.zeros(2), {persistent = false})
  self.head = nn.Linear(4, 5)
end
function Net:forward(x)
  x = self.stem(x) * self.scale
  for _, s in self.stages:iter() do x = s(x) end
  return self.head(x:mean(4):mean(3))
end

local EXPECTED_PARAMS = {
  "scale", "stem.weight", "stem.bias",
  "stages.0.0.gamma", "stages.0.0.conv.weight", "stages.0.0.bn.weight", "stages.0.0.bn.bias",
  "stages.0.1.gamma", "stages.0.1.conv.weight", "stages.0.1.bn.weight", "stages.0.1.bn.bias",
  "stages.1.0.gamma", "stages.1.0.conv.weight", "stages.1.0.bn.weight", "stages.1.0.bn.bias",
  "head.weight", "head.bias",
}
local EXPECTED_BUFFERS = {
  "step", "cache",
  "stages.0.0.bn.running_mean", "stages.0.0.bn.running_var", "stages.0.0.bn.num_batches_tracked",
  "stages.0.1.bn.running_mean", "stages.0.1.bn.running_var", "stages.0.1.bn.num_batches_tracked",
  "stages.1.0.bn.running_mean", "stages.1.0.bn.running_var", "stages.1.0.bn.num_batches_tracked",
}
local EXPECTED_STATE = {
  "scale", "step", "stem.weight", "stem.bias",
  "stages.0.0.gamma", "stages.0.0.conv.weight", "stages.0.0.bn.weight", "stages.0.0.bn.bias",
  "stages.0.0.bn.running_mean", "stages.0.0.bn.running_var", "stages.0.0.bn.num_batches_tracked",
  "stages.0.1.gamma", "stages.0.1.conv.weight", "stages.0.1.bn.weight", "stages.0.1.bn.bias",
  "stages.0.1.bn.running_mean", "stages.0.1.bn.running_var", "stages.0.1.bn.num_batches_tracked",
  "stages.1.0.gamma", "stages.1.0.conv.weight", "stages.1.0.bn.weight", "stages.1.0.bn.bias",
  "stages.1.0.bn.running_mean", "stages.1.0.bn.running_var", "stages.1.0.bn.num_batches_tracked",
  "head.weight", "head.bias",
}
local EXPECTED_MODULES = {
  "", "stem", "stages", "stages.0", "stages.0.0", "stages.0.0.conv", "stages.0.0.bn", "stages.0.1",
  "stages.0.1.conv", "stages.0.1.bn", "stages.1", "stages.1.0", "stages.1.0.conv", "stages.1.0.bn", "head",
}

-- ---- names, order and registration -------------------------------------------------------------

describe("nn.Module names and registration", function()
  it("names parameters, buffers, modules and state-dict keys with dotted paths in PyTorch's order", function()
    local m = Net()
    local names, params = collect(m:named_parameters())
    assert.are.same(EXPECTED_PARAMS, names)
    local arr = m:parameters()
    assert.are.equal(#params, #arr)
    for i = 1, #arr do assert.is_true(same_tensor(arr[i], params[i]), "parameters()[" .. i .. "]") end
    assert.is_true(same_tensor(m.stages[1][2].conv.weight, params[9]))
    assert.are.same(EXPECTED_BUFFERS, (collect(m:named_buffers())))
    assert.are.equal(#EXPECTED_BUFFERS, #m:buffers())
    local sd, keys = m:state_dict()
    assert.are.same(EXPECTED_STATE, keys)
    local via_pairs = {}
    for k in pairs(sd) do via_pairs[#via_pairs + 1] = k end
    assert.are.same(EXPECTED_STATE, via_pairs)
    assert.are.same(EXPECTED_STATE, nn.state_dict_keys(sd))
    assert.is_nil(sd.cache) -- non-persistent
    local mods, modv = collect(m:named_modules())
    assert.are.same(EXPECTED_MODULES, mods)
    assert.is_true(rawequal(modv[1], m))
    assert.are.equal(#EXPECTED_MODULES, #m:modules())
    assert.are.same({"stem", "stages", "head"}, (collect(m:named_children())))
    assert.are.equal(3, #m:children())
    -- prefix and recurse options
    assert.are.same({"net.scale"}, (collect(m:named_parameters({prefix = "net", recurse = false}))))
    -- num_parameters: 1 + stem (3*4*9 + 4) + 3 blocks (4 + 144 + 8) + head (20 + 5)
    assert.are.equal(1 + 112 + 3 * 156 + 25, m:num_parameters())
    m.head.bias.requires_grad = false
    assert.are.equal(1 + 112 + 3 * 156 + 20, m:num_parameters({trainable = true}))
  end)

  it("counts a shared parameter and a shared module once, as PyTorch does", function()
    local lin = nn.Linear(3, 3)
    local seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert.are.same({"0.weight", "0.bias"}, (collect(seq:named_parameters())))
    assert.are.equal(12, seq:num_parameters())
    local tied = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    tied[2].weight = tied[1].weight
    assert.are.same({"0.weight", "0.bias", "1.bias"}, (collect(tied:named_parameters())))
    -- the state dict keeps both names, as PyTorch's does
    local _, keys = tied:state_dict()
    assert.are.same({"0.weight", "0.bias", "1.weight", "1.bias"}, keys)
  end)

  it("indexes Sequential and ModuleList 1-based with names from 0, and keeps ModuleDict's order", function()
    local a, b, c = nn.ReLU(), nn.GELU(), nn.Identity()
    local seq = nn.Sequential(a, b)
    assert.is_true(rawequal(seq[1], a))
    assert.is_true(rawequal(seq[2], b))
    assert.is_true(rawequal(seq[-1], b))
    assert.is_true(rawequal(seq:get(1), a))
    assert.is_nil(seq[3])
    assert.are.equal(2, #seq)
    seq:add(c)
    assert.are.equal(3, #seq)
    assert.is_true(rawequal(seq["2"], c))
    local seen = {}
    for i, m in ipairs(seq) do seen[i] = m end
    assert.are.equal(3, #seen)
    assert.is_true(rawequal(seen[3], c))
    local seq2 = nn.Sequential({a, b})
    assert.are.equal(2, #seq2)

    local ml = nn.ModuleList()
    ml:append(a):append(b)
    ml:extend({c})
    assert.are.equal(3, #ml)
    local order = {}
    for i, m in ml:iter() do order[i] = m end
    assert.is_true(rawequal(order[1], a) and rawequal(order[2], b) and rawequal(order[3], c))
    ml[2] = nn.Tanh()
    assert.are.equal("Tanh", ml[2].__name)
    ml[#ml + 1] = nn.ReLU()
    assert.are.same({"0", "1", "2", "3"}, (collect(ml:named_children())))
    expect_error("ModuleList has no forward", function() ml(lark.ones(1)) end)

    local d = nn.ModuleDict({{"zeta", nn.ReLU()}, {"alpha", nn.GELU()}})
    d.mid = nn.Identity()
    d:add("beta", nn.Tanh())
    assert.are.same({"zeta", "alpha", "mid", "beta"}, d:keys())
    assert.are.equal(4, #d)
    local via = {}
    for k in pairs(d) do via[#via + 1] = k end
    assert.are.same({"zeta", "alpha", "mid", "beta"}, via)
    assert.are.equal("GELU", d.alpha.__name)
    assert.is_true(d:contains("mid"))
    assert.is_false(d:contains("nope"))
    local sorted = nn.ModuleDict({b = nn.ReLU(), a = nn.ReLU()})
    assert.are.same({"a", "b"}, sorted:keys())
  end)

  it("rejects bad names and values with clear errors", function()
    local m = nn.Module()
    expect_error("must not contain \".\"", function() m:register_parameter("a.b", lark.ones(1)) end)
    expect_error("is already an attribute or method", function() m:register_parameter("train", lark.ones(1)) end)
    expect_error("expected a tensor or nil", function() m:register_buffer("b", 3) end)
    expect_error("float32 or float64", function() m:register_parameter("c", lark.ones(2, {dtype = "int64"})) end)
    local x = lark.ones(2, {requires_grad = true})
    expect_error("register t:detach()", function() m:register_parameter("d", x * 2) end)
    m:register_buffer("e", lark.ones(1))
    expect_error("already registered as a buffer", function() m:register_parameter("e", lark.ones(1)) end)
    expect_error("expected a module", function() nn.Sequential(nn.ReLU(), 5) end)
    expect_error("forward is not implemented", function() m(lark.ones(1)) end)
    expect_error("cannot assign a module to \"f\"", function()
      m:register_parameter("f", nil)
      m.f = nn.ReLU()
    end)
    -- a registered parameter is made to require grad, and assigning a module makes a child
    local p = m:register_parameter("w", lark.zeros(3))
    assert.is_true(p.requires_grad)
    m.child = nn.ReLU()
    assert.are.same({"child"}, (collect(m:named_children())))
    -- extend checks its receiver and its name
    expect_error("expected a class name", function() nn.Module:extend() end)
    local Sub = nn.Linear:extend("MyLinear")
    local s = Sub(2, 3)
    assert.are.equal("MyLinear", s.__name)
    assert.are.same({"weight", "bias"}, (collect(s:named_parameters())))
    assert.is_true(nn.is_module(s))
    assert.is_false(nn.is_module(Sub))
    assert.is_false(nn.is_module(lark.ones(1)))
  end)
end)

-- ---- state dict ------------------------------------------------------------------------------------

local function snapshot(m)
  local out = {}
  local sd, keys = m:state_dict()
  for _, k in ipairs(keys) do out[k] = flat_numbers(sd[k]) end
  return out
end

describe("nn.Module state_dict", function()
  it("round-trips every parameter and buffer into a fresh model", function()
    lark.manual_seed(1)
    local a = Net()
    a(lark.randn(2, 3, 6, 6)) -- moves the running statistics and num_batches_tracked
    local b = Net()
    assert.are_not.same(snapshot(a), snapshot(b))
    local res = b:load_state_dict(a:state_dict())
    assert.are.same({}, res.missing_keys)
    assert.are.same({}, res.unexpected_keys)
    assert.are.same(snapshot(a), snapshot(b))
    assert.are.equal(1, b.stages[1][1].bn.num_batches_tracked:item())
    -- b got copies: changing a does not reach b; a's state dict shares a's storage
    local sd = a:state_dict()
    assert.is_true(sd["head.weight"]:shares_storage(a.head.weight))
    assert.is_false(sd["head.weight"].requires_grad)
    a.head.weight:detach():fill_(7)
    assert.are_not.equal(7, b.head.weight[1][1])
    assert.are.equal(7, sd["head.weight"][1][1])
    -- parameters of b are the same tensors as before and still require grad
    assert.is_true(b.head.weight.requires_grad)
    local kv = a:state_dict({keep_vars = true})
    assert.is_true(rawequal(kv["head.weight"], a.head.weight))
    -- dtype converts on load
    local c = Net():double()
    c:load_state_dict(a:state_dict())
    assert_near(c.head.bias, a.head.bias, 1e-7)
    assert.are.equal("float64", c.head.bias:dtype())
  end)

  it("lists missing, unexpected and mis-shaped keys in one error and leaves the model untouched", function()
    local m = Net()
    local before = snapshot(m)
    local sd = Net():state_dict()
    sd["stem.bias"] = nil
    sd["stages.1.0.bn.running_var"] = nil
    sd["extra.weight"] = lark.ones(2)
    sd["head.weight"] = lark.ones(3, 4)
    sd["stages.0.0.gamma"] = lark.ones(5)
    sd["scale"] = "not a tensor"
    local err = error_of(function() m:load_state_dict(sd) end)
    assert.truthy(err:find("error(s) in loading state_dict for Net", 1, true), err)
    assert.truthy(err:find("missing key(s) in state_dict: \"stem.bias\", \"stages.1.0.bn.running_var\".", 1, true), err)
    assert.truthy(err:find("unexpected key(s) in state_dict: \"extra.weight\".", 1, true), err)
    assert.truthy(err:find("size mismatch for head.weight: copying a tensor of shape [3, 4] from the state dict, " ..
      "the shape in the current model is [5, 4].", 1, true), err)
    assert.truthy(err:find("size mismatch for stages.0.0.gamma", 1, true), err)
    assert.truthy(err:find("value for scale: expected a tensor, got string", 1, true), err)
    assert.are.same(before, snapshot(m))
    -- strict = false: missing and unexpected are reported, not raised; shapes still are
    local ok_sd = Net():state_dict()
    ok_sd["stem.bias"] = nil
    ok_sd["extra"] = lark.ones(1)
    local res = m:load_state_dict(ok_sd, {strict = false})
    assert.are.same({"stem.bias"}, res.missing_keys)
    assert.are.same({"extra"}, res.unexpected_keys)
    assert.are.same(before["stem.bias"], snapshot(m)["stem.bias"])
    assert_near(m.head.weight, ok_sd["head.weight"], 0)
    ok_sd["head.weight"] = lark.ones(1)
    expect_error("size mismatch for head.weight", function() m:load_state_dict(ok_sd, {strict = false}) end)
  end)
end)

-- ---- modes, gradients, conversion ----------------------------------------------------------------

describe("nn.Module modes", function()
  it("train() and eval() reach every descendant", function()
    local m = Net()
    for _, mod in ipairs(m:modules()) do assert.is_true(mod.training) end
    assert.is_true(rawequal(m:eval(), m))
    for _, mod in ipairs(m:modules()) do assert.is_false(mod.training) end
    m.stages:train()
    assert.is_false(m.training)
    assert.is_true(m.stages[2][1].bn.training)
    m:train()
    for _, mod in ipairs(m:modules()) do assert.is_true(mod.training) end
    -- apply visits children first, then the module
    local visited = {}
    m.stages[1]:apply(function(x) visited[#visited + 1] = x.__name end)
    assert.are.same({"Conv2d", "BatchNorm2d", "Block", "Conv2d", "BatchNorm2d", "Block", "Sequential"}, visited)
  end)

  it("Dropout and DropPath act in training and are the identity in eval", function()
    lark.manual_seed(3)
    local x = lark.ones(64, 32)
    local d = nn.Dropout(0.25)
    local y = d(x)
    local zeros = y:eq(0):sum():item()
    assert.is_true(zeros > 0.15 * 2048 and zeros < 0.35 * 2048, "zeros: " .. zeros)
    -- kept values are scaled by 1/(1-p)
    assert_near(y:max(), 1 / 0.75, 1e-6)
    d:eval()
    assert.is_true(rawequal(d(x), x) or d(x):eq(x):all():item())
    local dp = nn.DropPath(0.5)
    local z = dp(lark.ones(200, 3, 2, 2))
    local dropped = 0
    for i = 1, 200 do
      local s = z[i]
      local mn, mx = s:min():item(), s:max():item()
      assert.are.equal(mn, mx) -- the whole sample is kept or dropped
      assert.is_true(mx == 0 or math.abs(mx - 2) < 1e-6)
      if mx == 0 then dropped = dropped + 1 end
    end
    assert.is_true(dropped > 60 and dropped < 140, "dropped " .. dropped)
    dp:eval()
    assert_near(dp(lark.ones(4, 3)), lark.ones(4, 3), 0)
    expect_error("p must be a probability", function() nn.Dropout(1.5) end)
  end)

  it("BatchNorm2d uses batch statistics in training and running ones in eval", function()
    lark.manual_seed(4)
    local bn = nn.BatchNorm2d(3, {dtype = "float64"})
    local x = lark.randn(4, 3, 5, 5, {dtype = "float64"}) * 3 + 2
    local y = bn(x)
    -- per-channel mean 0 and biased variance 1 in training
    assert_near(y:mean(4):mean(3):mean(1):view(3), {0, 0, 0}, 1e-10)
    assert.are.equal(1, bn.num_batches_tracked:item())
    assert.are.equal("int64", bn.num_batches_tracked:dtype())
    local mean = x:permute(2, 1, 3, 4):reshape(3, -1):mean(2)
    assert_near(bn.running_mean, mean * 0.1, 1e-12)
    bn:eval()
    local ye = bn(x)
    local rm, rv = bn.running_mean:view(1, 3, 1, 1), bn.running_var:view(1, 3, 1, 1)
    assert_near(ye, (x - rm) / (rv + 1e-5):sqrt(), 1e-10)
    assert.are.equal(1, bn.num_batches_tracked:item()) -- eval does not count
    -- momentum = false: cumulative average (PyTorch's momentum=None)
    local cum = nn.BatchNorm2d(2, {momentum = false, dtype = "float64"})
    local a, b = lark.randn(3, 2, 2, 2, {dtype = "float64"}), lark.randn(3, 2, 2, 2, {dtype = "float64"})
    cum(a)
    cum(b)
    local ma = a:permute(2, 1, 3, 4):reshape(2, -1):mean(2)
    local mb = b:permute(2, 1, 3, 4):reshape(2, -1):mean(2)
    assert_near(cum.running_mean, (ma + mb) / 2, 1e-12)
    -- without running statistics: no buffers, batch statistics in eval too
    local nt = nn.BatchNorm2d(3, {track_running_stats = false, affine = false})
    assert.are.same({}, (collect(nt:named_buffers())))
    assert.are.same({}, (collect(nt:named_parameters())))
    nt:eval()
    assert_near(nt(x:float()):mean(4):mean(3):mean(1):view(3), {0, 0, 0}, 1e-5)
    expect_error("BatchNorm2d: expected 3 channels", function() bn(lark.ones(1, 4, 2, 2, {dtype = "float64"})) end)
    expect_error("expected a 4-D input", function() bn(lark.ones(3, 3)) end)
  end)
end)

describe("nn.Module gradients and conversion", function()
  it("zero_grad drops the gradients (or zeroes them in place)", function()
    local m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    m(lark.randn(5, 3)):sum():backward()
    for name, p in m:named_parameters() do assert.is_not_nil(p.grad, name) end
    m:zero_grad({set_to_none = false})
    for _, p in ipairs(m:parameters()) do assert_near(p.grad, lark.zeros_like(p), 0) end
    assert.is_true(rawequal(m:zero_grad(), m))
    for name, p in m:named_parameters() do assert.is_nil(p.grad, name) end
    m:requires_grad_(false)
    for _, p in ipairs(m:parameters()) do assert.is_false(p.requires_grad) end
  end)

  it("to, float and double convert parameters and float buffers and keep requires_grad", function()
    local m = Net()
    m.head.bias.requires_grad = false
    m.stages[1][1].conv.weight.grad = lark.ones(4, 4, 3, 3)
    local shared = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    shared[2].weight = shared[1].weight
    assert.is_true(rawequal(m:double(), m))
    for name, p in m:named_parameters() do
      assert.are.equal("float64", p:dtype(), name)
      assert.is_true(p.is_leaf, name)
      assert.are.equal(name ~= "head.bias", p.requires_grad, name)
    end
    assert.are.equal("float64", m.stages[1][1].conv.weight.grad:dtype())
    assert.are.equal("float64", m.stages[1][1].bn.running_var:dtype())
    assert.are.equal("int64", m.stages[1][1].bn.num_batches_tracked:dtype())
    assert.are.equal("int64", m.step:dtype())
    assert.are.equal("float64", m(lark.randn(1, 3, 4, 4, {dtype = "float64"})):dtype())
    m:float()
    for _, p in ipairs(m:parameters()) do assert.are.equal("float32", p:dtype()) end
    m:to({dtype = "float64"})
    assert.are.equal("float64", m.scale:dtype())
    m:to(lark.ones(1))
    assert.are.equal("float32", m.scale:dtype())
    assert.is_true(rawequal(m:to("cpu"), m))
    shared:double()
    assert.is_true(rawequal(shared[1].weight, shared[2].weight))
    expect_error("float dtypes only", function() m:to("int64") end)
  end)

  it("keeps each parameter's identity, so an optimizer made before a conversion still trains it", function()
    lark.manual_seed(4)
    local m = nn.Linear(3, 2)
    local w, b = m.weight, m.bias
    local opt = lark.optim.SGD(m:parameters(), {lr = 0.1})
    m(lark.randn(4, 3)):sum():backward()
    m:double()
    assert.is_true(rawequal(m.weight, w) and rawequal(m.bias, b), "the parameters were replaced")
    assert.are.equal("float64", w:dtype())
    assert.are.equal("float64", w.grad:dtype())
    assert.is_true(w.requires_grad and w.is_leaf)
    local before = w:clone()
    m:zero_grad()
    m(lark.randn(4, 3, {dtype = "float64"})):sum():backward()
    opt:step()
    assert.is_true((w - before):abs():sum():item() > 0, "the optimizer did not update the converted weight")
  end)

  it("set_data gives a leaf new data in place and refuses a tensor with history", function()
    local p = lark.zeros(2, 2):requires_grad_()
    p.grad = lark.ones(2, 2)
    p:set_data(lark.full({3}, 7, {dtype = "float64"}))
    assert.are.same({3}, shape_of(p))
    assert.are.equal("float64", p:dtype())
    assert.is_true(p.requires_grad)
    assert.are.equal(7, p:sum():item() / 3)
    local y = p * 2
    expect_error("only a leaf tensor", function() y:set_data(lark.ones(3)) end)
    expect_error("set_data: argument 2: expected a Tensor, got number", function() p:set_data(3) end)
  end)

  it("cuda() moves the model and it computes the same", function()
    if not lark.cuda.is_available() then
      pending("no CUDA device")
      return
    end
    lark.manual_seed(5)
    local m = Net()
    local x = lark.randn(2, 3, 6, 6)
    local y = m(x)
    m:cuda()
    for name, p in m:named_parameters() do assert.are.equal("cuda:0", p:device(), name) end
    assert.are.equal("cuda:0", m.stages[1][1].bn.num_batches_tracked:device())
    local m2 = Net():cuda()
    m2:load_state_dict(m:state_dict())
    assert_near(m(x:cuda()):cpu(), y, 1e-4)
    m:cpu()
    assert.are.equal("cpu", m.head.weight:device())
  end)
end)

-- ---- printing and errors ---------------------------------------------------------------------------

describe("nn.Module printing and error paths", function()
  it("prints the module tree in PyTorch's layout with the layer arguments", function()
    local m = nn.Sequential(
      nn.Conv2d(3, 16, 3, {stride = 1, padding = 1, bias = false}),
      nn.BatchNorm2d(16),
      nn.ReLU(),
      nn.DepthwiseConv2d(16, {51, 5}),
      nn.LayerNorm(16, {eps = 1e-6, channels_first = true}),
      nn.AdaptiveAvgPool2d(1),
      nn.Flatten(),
      nn.Dropout(0.1),
      nn.Linear(16, 10))
    local expected = table.concat({
      "Sequential(",
      "  (0): Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=false)",
      "  (1): BatchNorm2d(16, eps=1e-05, momentum=0.1, affine=true, track_running_stats=true)",
      "  (2): ReLU()",
      "  (3): DepthwiseConv2d(16, 16, kernel_size=(51, 5), stride=(1, 1), padding=(25, 2), groups=16)",
      "  (4): LayerNorm((16,), eps=1e-06, elementwise_affine=true, channels_first=true)",
      "  (5): AdaptiveAvgPool2d(output_size=1)",
      "  (6): Flatten(start_dim=2, end_dim=-1)",
      "  (7): Dropout(p=0.1)",
      "  (8): Linear(in_features=16, out_features=10, bias=true)",
      ")"}, "\n")
    assert.are.equal(expected, tostring(m))
    local net = tostring(Net())
    assert.truthy(net:find("Net(\n  (stem): Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))\n" ..
      "  (stages): ModuleList(\n    (0): Sequential(\n      (0): Block(\n        (conv): Conv2d(4, 4,", 1, true), net)
    assert.are.equal("Conv2d(2, 4, kernel_size=(1, 3), stride=(2, 1), padding=(0, 1, 2, 3), dilation=(2, 2))",
      tostring(nn.Conv2d(2, 4, {1, 3}, {stride = {2, 1}, padding = {0, 1, 2, 3}, dilation = 2})))
    assert.are.equal("CrossEntropyLoss(label_smoothing=0.1)", tostring(nn.CrossEntropyLoss({label_smoothing = 0.1})))
    assert.are.equal("Identity()", tostring(nn.Identity()))
  end)

  it("prefixes an error from a descendant's forward with its path, once", function()
    local m = Net()
    -- the conv of the first block of the second stage gets a weight for 3 input channels
    m.stages[2][1].conv.weight = lark.randn(4, 3, 3, 3)
    local err = error_of(m, lark.randn(1, 3, 6, 6))
    assert.truthy(err:find("^stages%.1%.0%.conv: conv2d: "), err)
    local _, count = err:gsub("stages", "")
    assert.are.equal(1, count)
    -- from the outermost module called, whatever it is
    err = error_of(m.stages[2], lark.randn(1, 4, 6, 6))
    assert.truthy(err:find("^0%.conv: conv2d: "), err)
    -- a leaf called directly gives the message unchanged; an error in the root's own code too
    err = error_of(nn.Linear(3, 2), lark.randn(2, 4))
    assert.truthy(err:find("^Linear: expected an input whose last dim is in_features = 3"), err)
    local Boom = nn.Module:extend("Boom")
    function Boom:__init() self.inner = nn.ReLU() end
    function Boom:forward() error("boom", 0) end
    assert.are.equal("boom", error_of(nn.Sequential(nn.Identity(), Boom()), 1):match("^1: (.*)$"))
    assert.are.equal("boom", error_of(Boom(), 1))
    -- the same model works again after an error
    m.stages[2][1].conv.weight = lark.randn(4, 4, 3, 3)
    assert.are.same({1, 5}, shape_of(m(lark.randn(1, 3, 6, 6))))
    -- two errors in a row each get their own path
    local seq = nn.Sequential(nn.ReLU(), nn.Sequential(nn.Identity(), nn.Linear(2, 2)))
    for _ = 1, 2 do
      err = error_of(seq, lark.randn(2, 3))
      assert.truthy(err:find("^1%.1: Linear: expected"), err)
    end
  end)
end)

-- ---- layers against lark.nn.functional -------------------------------------------------------------

describe("nn layers", function()
  it("Conv2d, DepthwiseConv2d and Linear compute F.conv2d and F.linear with their parameters", function()
    lark.manual_seed(6)
    local x = lark.randn(2, 4, 9, 8, {dtype = "float64"})
    local c = nn.Conv2d(4, 6, {3, 2}, {stride = {2, 1}, padding = {1, 0, 2, 1}, dilation = {1, 2}, groups = 2,
                                       dtype = "float64"})
    assert.are.same({6, 2, 3, 2}, shape_of(c.weight))
    assert_near(c(x), F.conv2d(x, c.weight, c.bias, {stride = {2, 1}, padding = {1, 0, 2, 1}, dilation = {1, 2},
                                                     groups = 2}), 1e-12)
    local same = nn.Conv2d(4, 4, 4, {padding = "same", bias = false, dtype = "float64"})
    assert.are.same({2, 4, 9, 8}, shape_of(same(x)))
    local dw = nn.DepthwiseConv2d(4, {7, 3}, {dtype = "float64"})
    assert.are.same({4, 1, 7, 3}, shape_of(dw.weight))
    assert.are.same({3, 1}, dw.padding)
    assert.are.equal(4, dw.groups)
    assert.are.same({2, 4, 9, 8}, shape_of(dw(x)))
    assert_near(dw(x), F.conv2d(x, dw.weight, dw.bias, {padding = {3, 1}, groups = 4}), 1e-12)
    local big = nn.DepthwiseConv2d(3, {51, 5}, {bias = false})
    assert.are.same({25, 2}, big.padding)
    assert.are.same({1, 3, 60, 20}, shape_of(big(lark.randn(1, 3, 60, 20))))
    assert.are.same({1, 3, 30, 10}, shape_of(nn.DepthwiseConv2d(3, 5, {stride = 2})(lark.randn(1, 3, 60, 20))))
    local lin = nn.Linear(8, 3, {dtype = "float64"})
    local v = lark.randn(2, 5, 8, {dtype = "float64"})
    assert_near(lin(v), F.linear(v, lin.weight, lin.bias), 1e-12)
    local nb = nn.Linear(8, 3, {bias = false})
    assert.is_nil(nb.bias)
    assert.are.same({"weight"}, (collect(nb:named_parameters())))
    expect_error("in_channels (4) must be divisible by groups (3)", function() nn.Conv2d(4, 6, 3, {groups = 3}) end)
    expect_error("kernel_size must be an integer >= 1", function() nn.Conv2d(4, 6, 0) end)
    expect_error("unknown option 'strid'", function() nn.Conv2d(4, 6, 3, {strid = 2}) end)
    expect_error("positive integer", function() nn.Linear(0, 3) end)
  end)

  it("LayerNorm (both layouts), activations, pooling, Flatten and Identity match lark.nn.functional", function()
    lark.manual_seed(7)
    local x = lark.randn(2, 5, 3, 4, {dtype = "float64"})
    local cf = nn.LayerNorm(5, {channels_first = true, eps = 1e-6, dtype = "float64"})
    cf.weight:detach():uniform_(0.5, 1.5)
    cf.bias:detach():uniform_(-1, 1)
    assert_near(cf(x), F.layer_norm_channels_first(x, cf.weight, cf.bias, 1e-6), 1e-12)
    -- channels-first equals the last-dim form on the permuted input
    local cl = nn.LayerNorm({5}, {eps = 1e-6, dtype = "float64"})
    cl:load_state_dict(cf:state_dict())
    assert_near(cl(x:permute(1, 3, 4, 2)):permute(1, 4, 2, 3), cf(x), 1e-12)
    assert_near(cl(x:permute(1, 3, 4, 2)), F.layer_norm(x:permute(1, 3, 4, 2), cl.weight, cl.bias, 1e-6), 1e-12)
    expect_error("expected the last dim to be 5", function() cl(x) end)
    assert_near(nn.ReLU()(x), F.relu(x), 0)
    assert_near(nn.GELU()(x), F.gelu(x), 0)
    assert_near(nn.AdaptiveAvgPool2d(1)(x), x:mean(4):mean(3):view(2, 5, 1, 1), 1e-12)
    assert_near(nn.MaxPool2d(2)(x), F.max_pool2d(x, 2), 0)
    assert_near(nn.AvgPool2d(2, 1)(x), F.avg_pool2d(x, 2, 1), 0)
    assert.are.same({2, 60}, shape_of(nn.Flatten()(x)))
    assert.are.same({2, 5, 12}, shape_of(nn.Flatten(3)(x)))
    local a, b = nn.Identity(1, 2)(x, 3)
    assert.is_true(rawequal(a, x))
    assert.are.equal(3, b)
  end)

  it("losses compute F.cross_entropy and F.mse_loss", function()
    lark.manual_seed(8)
    local logits = lark.randn(6, 4, {dtype = "float64"})
    local target = lark.tensor({1, 4, 2, 3, 3, 1}, {dtype = "int64"})
    local ce = nn.CrossEntropyLoss()
    -- hand-computed: mean over rows of logsumexp - logit[target]
    local expected = 0
    local rows = logits:table()
    for i, r in ipairs(rows) do
      local s = 0
      for _, v in ipairs(r) do s = s + math.exp(v) end
      expected = expected + math.log(s) - r[target[i]]
    end
    assert_near(ce(logits, target), expected / 6, 1e-12)
    local smooth = nn.CrossEntropyLoss({label_smoothing = 0.2, reduction = "sum"})
    assert_near(smooth(logits, target), F.cross_entropy(logits, target, {label_smoothing = 0.2, reduction = "sum"}), 0)
    local soft = F.softmax(lark.randn(6, 4, {dtype = "float64"}), 2)
    assert_near(ce(logits, soft), F.cross_entropy(logits, soft), 0)
    local y = lark.randn(6, 4, {dtype = "float64"})
    assert_near(nn.MSELoss()(logits, y), ((logits - y) * (logits - y)):mean(), 1e-12)
    assert_near(nn.MSELoss({reduction = "none"})(logits, y), (logits - y) * (logits - y), 1e-12)
    expect_error("reduction must be", function() nn.MSELoss({reduction = "avg"}) end)
    expect_error("same shape", function() nn.MSELoss()(logits, lark.ones(6)) end)
  end)
end)

-- ---- initialisation --------------------------------------------------------------------------------

-- mean, (biased) variance, min and max of a tensor's values, as Lua numbers
local function stats(t)
  local d = t:double():reshape(-1)
  local mean = d:mean():item()
  local c = d - mean
  return mean, (c * c):mean():item(), d:min():item(), d:max():item()
end

describe("nn.init", function()
  it("gives Conv2d and Linear PyTorch's default initialisation (kaiming_uniform with a = sqrt(5))", function()
    lark.manual_seed(9)
    for _, case in ipairs{{nn.Conv2d(16, 32, 3), 16 * 9}, {nn.Linear(300, 200), 300},
                          {nn.Conv2d(8, 16, {5, 3}, {groups = 4}), 2 * 15}, {nn.DepthwiseConv2d(64, 7), 49}} do
      local m, fan_in = case[1], case[2]
      local bound = 1 / math.sqrt(fan_in)
      local mean, var, mn, mx = stats(m.weight)
      assert.is_true(mn >= -bound and mx <= bound, string.format("%s: [%g, %g] outside %g", m.__name, mn, mx, bound))
      assert.is_true(mx > 0.95 * bound and mn < -0.95 * bound, m.__name .. ": the bound is not reached")
      assert.is_true(math.abs(mean) < 0.05 * bound, m.__name .. " mean " .. mean)
      assert.is_true(math.abs(var / (bound * bound / 3) - 1) < 0.1, m.__name .. " var " .. var)
      local _, _, bmn, bmx = stats(m.bias)
      assert.is_true(bmn >= -bound and bmx <= bound, m.__name .. " bias")
    end
    -- BatchNorm and LayerNorm start at weight 1, bias 0
    local bn = nn.BatchNorm2d(3)
    assert_near(bn.weight, {1, 1, 1}, 0)
    assert_near(bn.bias, {0, 0, 0}, 0)
    assert_near(bn.running_var, {1, 1, 1}, 0)
  end)

  it("kaiming, xavier, normal, uniform, constant and trunc_normal_ have the right statistics", function()
    lark.manual_seed(10)
    local init = nn.init
    local w = lark.empty(256, 128, 3, 3)
    assert.is_true(rawequal(init.kaiming_normal_(w, 0, "fan_out", "relu"), w))
    local _, var = stats(w)
    assert.is_true(math.abs(var / (2 / (256 * 9)) - 1) < 0.03, "kaiming_normal_ fan_out var " .. var)
    init.kaiming_normal_(w, {mode = "fan_in", nonlinearity = "relu"})
    _, var = stats(w)
    assert.is_true(math.abs(var / (2 / (128 * 9)) - 1) < 0.03, "kaiming_normal_ fan_in var " .. var)
    init.kaiming_uniform_(w, {nonlinearity = "relu"})
    local _, _, mn, mx = stats(w)
    local b = math.sqrt(2) * math.sqrt(3 / (128 * 9))
    assert.is_true(mn >= -b and mx <= b and mx > 0.99 * b, "kaiming_uniform_ bounds")
    local xw = lark.empty(300, 100)
    init.xavier_uniform_(xw, 2)
    _, _, mn, mx = stats(xw)
    b = 2 * math.sqrt(6 / 400)
    assert.is_true(mn >= -b and mx <= b and mx > 0.99 * b, "xavier_uniform_ bounds")
    init.normal_(xw, 3, 0.5)
    local mean
    mean, var = stats(xw)
    assert.is_true(math.abs(mean - 3) < 0.01 and math.abs(var / 0.25 - 1) < 0.03, "normal_")
    init.uniform_(xw, -2, 4)
    _, _, mn, mx = stats(xw)
    assert.is_true(mn >= -2 and mx < 4 and mn < -1.99 and mx > 3.99, "uniform_")
    init.constant_(xw, 0.25)
    assert_near(xw:min(), 0.25, 0)
    assert_near(xw:max(), 0.25, 0)
    init.zeros_(xw)
    assert.are.equal(0, xw:abs():max():item())
    init.ones_(xw)
    assert.are.equal(30000, xw:sum():item())
    assert_near(init.calculate_gain("leaky_relu", math.sqrt(5)), math.sqrt(1 / 3), 1e-15)
    assert_near(init.calculate_gain("tanh"), 5 / 3, 1e-15)
    local fi, fo = init.calculate_fan_in_and_fan_out(lark.empty(8, 4, 3, 5))
    assert.are.same({60, 120}, {fi, fo})
    expect_error("at least 2 dims", function() init.kaiming_uniform_(lark.empty(5)) end)
    expect_error("mode must be 'fan_in' or 'fan_out'", function() init.kaiming_uniform_(w, 0, "fan") end)

    -- trunc_normal_: timm's use (std 0.02, bounds +-2 absolute) and a standard one whose
    -- truncated variance is known: for [-2, 2] it is 1 - 4 phi(2) / (2 Phi(2) - 1) = 0.7737413
    local t = lark.empty(200, 300)
    init.trunc_normal_(t, {std = 0.02})
    mean, var, mn, mx = stats(t)
    assert.is_true(math.abs(var / 0.0004 - 1) < 0.03, "trunc_normal_ std 0.02 var " .. var)
    init.trunc_normal_(t, 0, 1, -2, 2)
    mean, var, mn, mx = stats(t)
    assert.is_true(mn >= -2 and mx <= 2 and mx > 1.99 and mn < -1.99, "trunc_normal_ bounds")
    assert.is_true(math.abs(mean) < 0.01, "trunc_normal_ mean " .. mean)
    assert.is_true(math.abs(var - 0.7737413) < 0.015, "trunc_normal_ var " .. var)
    -- far in the tail: [2, 3] of N(0, 1); the truncated mean is (phi(2) - phi(3)) / (Phi(3) - Phi(2))
    local tail = lark.empty(20000, {dtype = "float64"})
    init.trunc_normal_(tail, 0, 1, 2, 3)
    mean, var, mn, mx = stats(tail)
    local phi = function(z) return math.exp(-z * z / 2) / math.sqrt(2 * math.pi) end
    local cdf = init._norm_cdf
    local tmean = (phi(2) - phi(3)) / (cdf(3) - cdf(2))
    assert.is_true(mn >= 2 and mx <= 3, "tail bounds")
    assert.is_true(math.abs(mean - tmean) < 0.01, string.format("tail mean %g, expected %g", mean, tmean))
    assert_near(init._norm_ppf(cdf(1.3)), 1.3, 1e-6)
    expect_error("need a < b", function() init.trunc_normal_(t, 0, 1, 2, 1) end)
  end)
end)

-- ---- PyTorch parity --------------------------------------------------------------------------------

describe("nn layers against PyTorch", function()
  if not have_torch() then
    pending("python3-torch is not installed (apt-get install python3-torch): PyTorch parity skipped")
    return
  end

  it("Conv2d, DepthwiseConv2d, Linear and LayerNorm: outputs and parameter gradients", function()
    lark.manual_seed(11)
    local py = {}
    local checks = {}
    local function case(key, m, tm, x, extra_py)
      x.requires_grad = true
      local y = m(x)
      local d = lark.randn(y:size(), {dtype = "float64"})
      local _, ps = collect(m:named_parameters())
      local names = collect(m:named_parameters())
      local grads = lark.autograd.grad((y * d):sum(), {x, table.unpack(ps)})
      py[#py + 1] = "m = " .. tm .. ".double()"
      py[#py + 1] = "with torch.no_grad():"
      for i, n in ipairs(names) do py[#py + 1] = string.format("    m.%s.copy_(%s)", n, py_tensor(ps[i])) end
      py[#py + 1] = "x = " .. py_tensor(x:detach()) .. ".requires_grad_()"
      py[#py + 1] = extra_py or "y = m(x)"
      py[#py + 1] = string.format("out('%s.y', y)", key)
      py[#py + 1] = string.format("(y * %s).sum().backward()", py_tensor(d))
      py[#py + 1] = string.format("out('%s.gx', x.grad)", key)
      checks[#checks + 1] = {key .. ".y", y}
      checks[#checks + 1] = {key .. ".gx", grads[1]}
      for i, n in ipairs(names) do
        py[#py + 1] = string.format("out('%s.g.%s', m.%s.grad)", key, n, n)
        checks[#checks + 1] = {key .. ".g." .. n, grads[i + 1]}
      end
    end
    local o = {dtype = "float64"}
    case("conv", nn.Conv2d(4, 6, {3, 2}, {stride = {2, 1}, padding = {1, 2}, dilation = {1, 2}, groups = 2, dtype = "float64"}),
      "nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)",
      lark.randn(2, 4, 9, 8, o))
    case("dw", nn.DepthwiseConv2d(3, {7, 3}, {bias = false, dtype = "float64"}),
      "nn.Conv2d(3, 3, (7, 3), padding=(3, 1), groups=3, bias=False)", lark.randn(2, 3, 10, 6, o))
    case("lin", nn.Linear(5, 3, o), "nn.Linear(5, 3)", lark.randn(2, 4, 5, o))
    local ln = nn.LayerNorm(6, {eps = 1e-6, dtype = "float64"})
    ln.weight:detach():uniform_(0.5, 1.5)
    ln.bias:detach():uniform_(-1, 1)
    case("ln", ln, "nn.LayerNorm(6, eps=1e-6)", lark.randn(2, 3, 6, o))
    local lncf = nn.LayerNorm(6, {eps = 1e-6, channels_first = true, dtype = "float64"})
    lncf:load_state_dict(ln:state_dict())
    -- SLaK's and ConvNeXt's channels_first LayerNorm, written out
    case("lncf", lncf, "nn.LayerNorm(6, eps=1e-6)", lark.randn(2, 6, 3, 4, o), table.concat({
      "u = x.mean(1, keepdim=True)",
      "s = (x - u).pow(2).mean(1, keepdim=True)",
      "y = m.weight[:, None, None] * ((x - u) / torch.sqrt(s + 1e-6)) + m.bias[:, None, None]"}, "\n"))
    local res, text = run_torch(py)
    for _, c in ipairs(checks) do assert_near(c[2]:reshape(-1), expect_key(res, text, c[1]), 1e-10) end
  end)

  it("BatchNorm2d: outputs, gradients and running statistics over 2 training steps, then eval", function()
    lark.manual_seed(12)
    for _, dtype in ipairs{"float64", "float32"} do
      local bn = nn.BatchNorm2d(3, {momentum = 0.3, eps = 1e-4, dtype = dtype})
      bn.weight:detach():uniform_(0.5, 1.5)
      bn.bias:detach():uniform_(-1, 1)
      local py = {"m = nn.BatchNorm2d(3, momentum=0.3, eps=1e-4)." .. (dtype == "float64" and "double()" or "float()"),
                  "with torch.no_grad():",
                  "    m.weight.copy_(" .. py_tensor(bn.weight, dtype) .. ")",
                  "    m.bias.copy_(" .. py_tensor(bn.bias, dtype) .. ")"}
      local checks = {}
      for step = 1, 3 do
        if step == 3 then
          bn:eval()
          py[#py + 1] = "m.eval()"
        end
        local x = (lark.randn(4, 3, 5, 5, {dtype = dtype}) * 2 + 1)
        x.requires_grad = true
        local y = bn(x)
        local d = lark.randn(y:size(), {dtype = dtype})
        local g = lark.autograd.grad((y * d):sum(), {x, bn.weight, bn.bias})
        py[#py + 1] = string.format("x = %s.requires_grad_()", py_tensor(x:detach(), dtype))
        py[#py + 1] = "m.weight.grad = None; m.bias.grad = None"
        py[#py + 1] = "y = m(x)"
        py[#py + 1] = string.format("(y * %s).sum().backward()", py_tensor(d, dtype))
        for _, k in ipairs{"y", "x.grad", "m.weight.grad", "m.bias.grad", "m.running_mean", "m.running_var",
                           "m.num_batches_tracked"} do
          py[#py + 1] = string.format("out('%d.%s', %s)", step, k, k)
        end
        checks[#checks + 1] = {step .. ".y", y}
        checks[#checks + 1] = {step .. ".x.grad", g[1]}
        checks[#checks + 1] = {step .. ".m.weight.grad", g[2]}
        checks[#checks + 1] = {step .. ".m.bias.grad", g[3]}
        checks[#checks + 1] = {step .. ".m.running_mean", bn.running_mean:clone()}
        checks[#checks + 1] = {step .. ".m.running_var", bn.running_var:clone()}
        checks[#checks + 1] = {step .. ".m.num_batches_tracked", bn.num_batches_tracked:clone()}
      end
      local res, text = run_torch(py)
      local tol = dtype == "float64" and 1e-10 or 2e-5
      for _, c in ipairs(checks) do assert_near(c[2]:reshape(-1), expect_key(res, text, c[1]), tol) end
      assert.are.equal(2, bn.num_batches_tracked:item())
    end
  end)

  it("state-dict keys and a loaded model's output equal PyTorch's for the same architecture", function()
    lark.manual_seed(13)
    local m = nn.Sequential(nn.Conv2d(3, 4, 3, {padding = 1}), nn.BatchNorm2d(4), nn.ReLU(),
      nn.Sequential(nn.DepthwiseConv2d(4, 5), nn.LayerNorm(4, {channels_first = true})),
      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)):double()
    m(lark.randn(2, 3, 6, 6, {dtype = "float64"})) -- moves the running statistics
    m:eval()
    local x = lark.randn(2, 3, 6, 6, {dtype = "float64"})
    local y = m(x)
    local sd, keys = m:state_dict()
    local py = {
      "class LN(nn.Module):",
      "    def __init__(self, c):",
      "        super().__init__()",
      "        self.weight = nn.Parameter(torch.ones(c)); self.bias = nn.Parameter(torch.zeros(c))",
      "    def forward(self, x):",
      "        u = x.mean(1, keepdim=True); s = (x - u).pow(2).mean(1, keepdim=True)",
      "        return self.weight[:, None, None] * ((x - u) / torch.sqrt(s + 1e-5)) + self.bias[:, None, None]",
      "m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),",
      "    nn.Sequential(nn.Conv2d(4, 4, 5, padding=2, groups=4), LN(4)),",
      "    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).double().eval()",
      "for i, k in enumerate(m.state_dict().keys()): print('name%d' % i, k)",
      "sd = {}",
    }
    for _, k in ipairs(keys) do
      local t = sd[k]
      py[#py + 1] = string.format("sd['%s'] = %s", k, py_tensor(t, t:dtype() == "int64" and "int64" or "float64"))
    end
    py[#py + 1] = "m.load_state_dict(sd, strict=True)"
    py[#py + 1] = "out('y', m(" .. py_tensor(x) .. "))"
    local res, text = run_torch(py)
    local torch_keys = {}
    for line in text:gmatch("[^\n]+") do
      local i, name = line:match("^name(%d+) (.+)$")
      if i then torch_keys[tonumber(i) + 1] = name end
    end
    assert.are.same(torch_keys, keys)
    assert_near(y:reshape(-1), expect_key(res, text, "y"), 1e-10)
  end)
end)

-- ---- end to end ------------------------------------------------------------------------------------

describe("nn end to end", function()
  it("a 2-layer MLP trained by plain SGD for 50 steps reduces the loss", function()
    lark.manual_seed(14)
    -- two classes separated by the sign of x1 * x2, a task a linear model cannot solve
    local N = 128
    local x = lark.rand(N, 2) * 2 - 1
    local labels = {}
    local xs = x:table()
    for i = 1, N do labels[i] = xs[i][1] * xs[i][2] > 0 and 1 or 2 end
    local y = lark.tensor(labels, {dtype = "int64"})
    local model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2))
    local crit = nn.CrossEntropyLoss()
    local params = model:parameters()
    assert.are.equal(4, #params)
    local first, last
    for step = 1, 50 do
      model:zero_grad()
      local loss = crit(model(x), y)
      loss:backward()
      do
        local g <close> = lark.no_grad()
        for _, p in ipairs(params) do p:sub_(p.grad * 0.5) end
      end
      if step == 1 then first = loss:item() end
      last = loss:item()
    end
    assert.is_true(last < 0.7 * first, string.format("loss %g -> %g", first, last))
    -- the parameters are the model's own: the same tensors, still leaves requiring grad
    for name, p in model:named_parameters() do assert.is_true(p.is_leaf and p.requires_grad, name) end
  end)
end)
