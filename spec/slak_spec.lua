-- slak_spec.lua: recipes/slak.lua against MODELS.md section 2 and 4: widths, state-dict names, shapes
-- and order, initialisation, drop-path rates, bad configurations, and the outputs of a small model
-- against an independent PyTorch implementation of the same description (eval and train mode,
-- float64, with random BN statistics and layer scales).
package.path = "./?.lua;" .. package.path
local S = require "recipes.slak"
local nn = require "lark.nn"

local function uniform(t, lo, hi)
  t:copy_(lark.rand(t:size(), {dtype = t:dtype()}) * (hi - lo) + lo)
end

local function keys_of(model)
  local _, keys = model:state_dict()
  return keys
end

-- The official names of MODELS.md section 4 for dims, depths, kernels (K per stage, N) in order, with
-- shapes (nil: BN buffers and scalars, checked by name only).
local function expected_keys(dims, depths, ks, in_ch, classes)
  local out = {}
  local function add(k, shape) out[#out + 1] = {k, shape} end
  local function bn(p, C)
    add(p .. ".weight", {C})
    add(p .. ".bias", {C})
    add(p .. ".running_mean", {C})
    add(p .. ".running_var", {C})
    add(p .. ".num_batches_tracked", {})
  end
  local N = ks[#ks]
  add("downsample_layers.0.0.weight", {dims[1], in_ch, 4, 4})
  add("downsample_layers.0.0.bias", {dims[1]})
  add("downsample_layers.0.1.weight", {dims[1]})
  add("downsample_layers.0.1.bias", {dims[1]})
  for i = 2, #dims do
    local p = "downsample_layers." .. (i - 1)
    add(p .. ".0.weight", {dims[i - 1]})
    add(p .. ".0.bias", {dims[i - 1]})
    add(p .. ".1.weight", {dims[i], dims[i - 1], 2, 2})
    add(p .. ".1.bias", {dims[i]})
  end
  for s = 1, #dims do
    local C, K = dims[s], ks[s]
    for j = 1, depths[s] do
      local p = string.format("stages.%d.%d", s - 1, j - 1)
      add(p .. ".gamma", {C})
      add(p .. ".large_kernel.LoRA1.conv.weight", {C, 1, K, N})
      bn(p .. ".large_kernel.LoRA1.bn", C)
      add(p .. ".large_kernel.LoRA2.conv.weight", {C, 1, N, K})
      bn(p .. ".large_kernel.LoRA2.bn", C)
      add(p .. ".large_kernel.small_conv.conv.weight", {C, 1, N, N})
      bn(p .. ".large_kernel.small_conv.bn", C)
      add(p .. ".norm.weight", {C})
      add(p .. ".norm.bias", {C})
      add(p .. ".pwconv1.weight", {4 * C, C})
      add(p .. ".pwconv1.bias", {4 * C})
      add(p .. ".pwconv2.weight", {C, 4 * C})
      add(p .. ".pwconv2.bias", {C})
    end
  end
  add("norm.weight", {dims[#dims]})
  add("norm.bias", {dims[#dims]})
  add("head.weight", {classes, dims[#dims]})
  add("head.bias", {classes})
  return out
end

describe("recipes/slak.lua", function()
  lark.manual_seed(5)

  it("truncates the widths as Python's int(d * width_factor)", function()
    local m = S.slak{dims = {96, 192, 384, 768}, depths = {1, 1, 1, 1}, kernel_size = {7, 7, 7, 7, 5},
      width_factor = 1.3, num_classes = 3}
    assert.are.same({124, 249, 499, 998}, m.dims)
    local b = S.slak{dims = {128, 256, 512, 1024}, depths = {1, 1, 1, 1}, kernel_size = {7, 7, 7, 7, 5},
      width_factor = 1.3, num_classes = 3}
    assert.are.same({166, 332, 665, 1331}, b.dims)
    assert.are.same({1331, 1, 7, 5}, shape_of(b:state_dict()["stages.3.0.large_kernel.LoRA1.conv.weight"]))
  end)

  it("has the official state-dict names, shapes and order", function()
    local m = S.slak{dims = {8, 16, 32}, depths = {2, 1, 2}, kernel_size = {13, 11, 9, 5}, in_channels = 1,
      num_classes = 7}
    local sd, keys = m:state_dict()
    local want = expected_keys({8, 16, 32}, {2, 1, 2}, {13, 11, 9, 5}, 1, 7)
    assert.are.equal(#want, #keys)
    for i, kv in ipairs(want) do
      assert.are.equal(kv[1], keys[i])
      assert.are.same(kv[2], shape_of(sd[kv[1]]))
    end
    assert.are.equal("int64", sd["stages.0.0.large_kernel.LoRA1.bn.num_batches_tracked"]:dtype())
  end)

  it("initialises as the official code: trunc_normal(0.02) weights, zero biases, gamma 1e-6", function()
    local m = S.slak{dims = {64, 128}, depths = {1, 1}, kernel_size = {13, 9, 5}, num_classes = 10,
      head_init_scale = 0.5}
    local sd = m:state_dict()
    local w = sd["stages.1.0.pwconv1.weight"]
    local std = w:std():item()
    assert.is_true(math.abs(std - 0.02) < 0.001, "std " .. std)
    assert.is_true(math.abs(w:mean():item()) < 0.001)
    local lk = sd["stages.0.0.large_kernel.LoRA2.conv.weight"]
    assert.is_true(math.abs(lk:std():item() - 0.02) < 0.002)
    assert.is_true(math.abs(sd["stages.0.0.large_kernel.small_conv.conv.weight"]:std():item() - 0.02) < 0.004)
    assert.is_true(math.abs(sd["downsample_layers.1.1.weight"]:std():item() - 0.02) < 0.002)
    for _, k in ipairs{"downsample_layers.0.0.bias", "downsample_layers.1.1.bias", "stages.1.0.pwconv1.bias",
                       "stages.1.0.pwconv2.bias", "head.bias", "stages.0.0.norm.bias",
                       "stages.0.0.large_kernel.LoRA1.bn.bias", "stages.0.0.large_kernel.LoRA1.bn.running_mean"} do
      assert.are.equal(0, sd[k]:abs():max():item(), k)
    end
    assert_near(sd["stages.1.0.gamma"], lark.full({128}, 1e-6), 1e-12)
    assert_near(sd["stages.0.0.norm.weight"], lark.ones(64))
    assert_near(sd["norm.weight"], lark.ones(128))
    assert_near(sd["stages.0.0.large_kernel.LoRA1.bn.running_var"], lark.ones(64))
    -- head_init_scale 0.5 halves the head's std
    assert.is_true(math.abs(sd["head.weight"]:std():item() - 0.01) < 0.001)
  end)

  it("spreads the drop-path rates linearly over all blocks", function()
    local m = S.slak{dims = {4, 8}, depths = {2, 3}, kernel_size = {7, 7, 5}, drop_path = 0.4, num_classes = 2}
    local rates = {}
    for _, stage in m.stages:iter() do
      for _, blk in stage:iter() do rates[#rates + 1] = blk.drop_path.p or 0 end
    end
    assert_near(rates, {0, 0.1, 0.2, 0.3, 0.4}, 1e-12)
    assert.are.equal("Identity", m.stages[1][1].drop_path.__name)
  end)

  it("rejects bad configurations with clear messages", function()
    local ok = {dims = {4, 8}, depths = {1, 1}, kernel_size = {7, 7, 5}}
    local function with(k, v)
      local c = {}
      for a, b in pairs(ok) do c[a] = b end
      c[k] = v
      return c
    end
    expect_error("kernel_size must be a list of 3 integers", S.slak, with("kernel_size", {7, 5}))
    expect_error("kernel_size[2] = 8 must be odd", S.slak, with("kernel_size", {7, 8, 5}))
    expect_error("depths must be a list of 2 integers", S.slak, with("depths", {1}))
    expect_error("dims[1] must be a positive integer, got 0", S.slak, with("dims", {0, 8}))
    expect_error("drop_path must be in [0, 1)", S.slak, with("drop_path", 1))
    expect_error("unknown option 'drop_path_rate'", S.slak, with("drop_path_rate", 0.1))
    expect_error("width_factor must be a positive number", S.slak, with("width_factor", 0))
  end)

  it("matches an independent PyTorch implementation of MODELS.md (eval and train mode)", function()
    if not have_torch() then
      pending("PyTorch is not installed for /usr/bin/python3")
      return
    end
    local dims, depths, ks = {6, 12}, {1, 2}, {13, 9, 5}
    local m = S.slak{dims = {4, 8}, depths = depths, kernel_size = ks, width_factor = 1.5, num_classes = 5}
    assert.are.same(dims, m.dims)
    m:double()
    do -- everything random and of order 1 where it matters (gamma = 1e-6 would hide the blocks)
      local g <close> = lark.no_grad()
      for k, t in pairs(m:state_dict()) do
        if k:find("running_var") then
          uniform(t, 0.5, 2)
        elseif k:find("gamma") or (k:find("norm") or k:find("bn")) and k:find("weight") then
          uniform(t, 0.5, 1.5)
        elseif t:is_floating_point() and not k:find("conv%.weight") then
          uniform(t, -0.3, 0.3)
        elseif t:is_floating_point() then
          uniform(t, -0.5, 0.5)
        end
      end
    end
    local x = lark.rand({2, 3, 32, 32}, {dtype = "float64"}) * 2 - 1
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    local sd, keys = m:state_dict()
    for _, k in ipairs(keys) do
      local t = sd[k]
      f:write(k, " ", t:dtype(), " ", table.concat(shape_of(t), ","), " ", table.concat(values_of(t), " "), "\n")
    end
    f:write("input float64 2,3,32,32 ", table.concat(values_of(x), " "), "\n")
    f:close()
    m:eval()
    local y_eval = lark.no_grad(function() return m(x) end)()
    m:train()
    local y_train = lark.no_grad(function() return m(x) end)()

    local lines = run_python([[
import torch, torch.nn as nn, torch.nn.functional as F
torch.set_default_dtype(torch.float64)
dims, depths, ks, classes = ]] .. string.format("[%d, %d], [%d, %d], [%d, %d, %d], 5", dims[1], dims[2],
      depths[1], depths[2], ks[1], ks[2], ks[3]) .. [[

class ChannelsFirstLN(nn.Module):
    def __init__(self, c, eps):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c)), eps
    def forward(self, x):
        u = x.mean(1, keepdim=True)
        v = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - u) / torch.sqrt(v + self.eps)) + self.bias[:, None, None]

def dw_bn(c, kh, kw):
    s = nn.Sequential()
    s.add_module("conv", nn.Conv2d(c, c, (kh, kw), padding=(kh // 2, kw // 2), groups=c, bias=False))
    s.add_module("bn", nn.BatchNorm2d(c))
    return s

class LargeKernel(nn.Module):
    def __init__(self, c, k, n):
        super().__init__()
        self.LoRA1, self.LoRA2, self.small_conv = dw_bn(c, k, n), dw_bn(c, n, k), dw_bn(c, n, n)
    def forward(self, x):
        return self.LoRA1(x) + self.LoRA2(x) + self.small_conv(x)

class Block(nn.Module):
    def __init__(self, c, k, n):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((c,), 1e-6))
        self.large_kernel = LargeKernel(c, k, n)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pwconv1, self.pwconv2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
    def forward(self, x):
        y = self.large_kernel(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.downsample_layers = nn.ModuleList([nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), ChannelsFirstLN(dims[0], 1e-6))])
        for i in range(1, len(dims)):
            self.downsample_layers.append(nn.Sequential(ChannelsFirstLN(dims[i - 1], 1e-6), nn.Conv2d(dims[i - 1], dims[i], 2, stride=2)))
        self.stages = nn.ModuleList([nn.Sequential(*[Block(dims[i], ks[i], ks[-1]) for _ in range(depths[i])]) for i in range(len(dims))])
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], classes)
    def forward(self, x):
        for d, s in zip(self.downsample_layers, self.stages):
            x = s(d(x))
        return self.head(self.norm(x.mean([-2, -1])))

sd, order, x = {}, [], None
for line in open("]] .. path .. [["):
    name, dtype, shape, *vals = line.split(" ")
    shape = [int(v) for v in shape.split(",")] if shape else []
    t = torch.tensor([float(v) for v in vals], dtype=torch.int64 if dtype == "int64" else torch.float64).reshape(shape)
    if name == "input":
        x = t
    else:
        sd[name] = t
        order.append(name)
net = Net()
print("order", list(net.state_dict().keys()) == order)
net.load_state_dict(sd, strict=True)
with torch.no_grad():
    net.eval()
    print("eval", " ".join("%.17g" % v for v in net(x).flatten().tolist()))
    net.train()
    print("train", " ".join("%.17g" % v for v in net(x).flatten().tolist()))
]])
    os.remove(path)
    local got = {}
    for _, l in ipairs(lines) do
      local tag, rest = l:match("^(%a+) (.*)$")
      if tag then got[tag] = rest end
    end
    assert.are.equal("True", got.order, table.concat(lines, "\n"))
    local function nums(s)
      local t = {}
      for w in s:gmatch("%S+") do t[#t + 1] = tonumber(w) end
      return t
    end
    assert_near(y_eval:view(-1), nums(got.eval), 1e-10)
    assert_near(y_train:view(-1), nums(got.train), 1e-10)
    assert.is_true(y_eval:abs():max():item() > 0.05)
  end)

  it("builds the official T configuration with the counted parameter total", function()
    if os.getenv("LARK_SKIP_SLOW") == "1" then
      pending("LARK_SKIP_SLOW=1")
      return
    end
    local m = S.slak_t{num_classes = 1000}
    assert.are.equal(50703838, m:num_parameters())
    local lk, dense = 0, 0
    for k, t in pairs(m:state_dict()) do
      if k:find("large_kernel", 1, true) and k:find("conv.weight", 1, true) then lk = lk + t:numel() end
      if t:dim() == 2 or t:dim() == 4 then dense = dense + t:numel() end
    end
    assert.are.equal(3270840, lk)      -- MODELS.md 2.2: LK conv weights only
    assert.are.equal(50576524, dense)  -- params in 2-D/4-D tensors (maskable)
    assert.are.equal(0.1, m.stages[4][3].drop_path.p)
  end)

  it("is found by `require \"recipes.slak\"` from any directory: -e, a script and the REPL", function()
    local bin = os.getenv("LARK_BIN") or "build/bin/lark"
    if bin:sub(1, 1) ~= "/" then bin = os.getenv("PWD") .. "/" .. bin end
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p '" .. dir .. "'"))
    local script = dir .. "/use_recipes.lua"
    local f = assert(io.open(script, "w"))
    f:write([[local R = require "recipes.replknet"
local S = require "recipes.slak"
print("found", package.searchpath("recipes.slak", package.path), type(R.replknet31b), type(S.slak_t))
]])
    f:close()
    local function run(cmd)
      local p = io.popen("cd '" .. dir .. "' && " .. cmd .. " 2>&1")
      local out = p:read("a")
      p:close()
      return out
    end
    local out_e = run("'" .. bin .. "' -e 'local S = require \"recipes.slak\"; require \"recipes.replknet\"; " ..
      "print(\"found\", package.searchpath(\"recipes.slak\", package.path))'")
    local out_script = run("'" .. bin .. "' use_recipes.lua")
    local out_repl = run("printf 'S = require \"recipes.slak\"\\nprint(\"found\", type(S.slak))\\n' | '" .. bin .. "' -i")
    os.remove(script)
    os.remove(dir)
    assert.truthy(out_e:find("found\t/"), out_e)
    assert.truthy(out_script:find("function\tfunction", 1, true), out_script)
    assert.truthy(out_repl:find("found\tfunction", 1, true), out_repl)
    -- the copy the binary loads is the source's (the build copies recipes/ on every build)
    local used = out_e:match("found\t(%S+)")
    local a, b = assert(io.open(used)):read("a"), assert(io.open("recipes/slak.lua")):read("a")
    assert.is_true(a == b, used .. " differs from recipes/slak.lua: rebuild (cmake --build) to refresh the copy")
  end)
end)
