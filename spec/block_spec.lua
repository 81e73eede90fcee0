-- block_spec.lua: one RepLKNet pair (a RepLK block with its 27x27 + 5x5 depth-wise branches, then a
-- ConvFFN block; ../shared/reference/MODELS.md section 1, training-mode batch norms) built from
-- lark.nn.functional, against the same pair in torch.nn.functional with the same weights: the
-- output, the gradients of the input and of the 27x27, 5x5 and first ConvFFN weights, and the
-- running statistics of the large kernel's batch norm, in float64 and float32. This is the pair
-- examples/bench/block.lua times.
local F = require "lark.nn.functional"

-- "[v1,v2,...]": a tensor's values in row-major order, exact in float64 (and so for float32).
local function pyvals(t)
  local v = t:double():contiguous():view(-1):table()
  for i = 1, #v do v[i] = string.format("%.17g", v[i]) end
  return "[" .. table.concat(v, ",") .. "]"
end

-- max |a - e| / max |e| over all elements: the error relative to the tensor's scale. A weight
-- gradient sums hundreds of products that partly cancel, so some of its elements are small beside
-- the rounding of the sum (PyTorch's own float32 result is 1.5e-5 off the float64 one there,
-- element by element, but 3e-7 off on this scale). Fails naming the worst element.
local function assert_rel(actual, expected, tol, what)
  local a, e = flat_numbers(actual), flat_numbers(expected)
  assert.are.equal(#e, #a, what .. ": number of elements")
  local scale, worst, wi = 0, -1, 0
  for i = 1, #e do scale = math.max(scale, math.abs(e[i])) end
  for i = 1, #e do
    local d = math.abs(a[i] - e[i])
    if d ~= d then d = math.huge end
    if d > worst then worst, wi = d, i end
  end
  local rel = worst / (scale > 0 and scale or 1)
  if not (rel <= tol) then
    error(string.format("%s: element %d is %.17g, expected %.17g (error %.3g relative to the largest |value| %.3g, "
      .. "more than %.3g)", what, wi, a[wi], e[wi], rel, scale, tol), 2)
  end
end

local N, C, R, K, k = 2, 16, 14, 27, 5
local H = 4 * C

-- The pair's parameters as leaves (uniform values, convs scaled by 1/sqrt(fan in) as PyTorch
-- initialises them, so activations stay near unit size) and running buffers.
local function make_params(dtype)
  local function leaf(shape, scale, shift)
    local t = rand_tensor(shape, dtype) * scale + (shift or 0)
    t.requires_grad = true
    return t
  end
  local function conv(co, ci, kh, kw) return leaf({co, ci, kh, kw}, 1 / math.sqrt(ci * kh * kw)) end
  local function bn(c)
    return {w = leaf({c}, 0.2, 1), b = leaf({c}, 0.2), rm = rand_tensor({c}, dtype) * 0.1,
      rv = rand_tensor({c}, dtype, 0.5, 1.5)}
  end
  return {
    prelkb_bn = bn(C), pw1_w = conv(C, C, 1, 1), pw1_bn = bn(C), lk_w = conv(C, 1, K, K), lk_bn = bn(C),
    sk_w = conv(C, 1, k, k), sk_bn = bn(C), pw2_w = conv(C, C, 1, 1), pw2_bn = bn(C),
    preffn_bn = bn(C), f1_w = conv(H, C, 1, 1), f1_bn = bn(H), f2_w = conv(C, H, 1, 1), f2_bn = bn(C),
  }
end

local function pair(P, x)
  local function bn(p, t) return F.batch_norm(t, p.rm, p.rv, p.w, p.b, true, 0.1, 1e-5) end
  -- RepLK block
  local y = bn(P.prelkb_bn, x)
  y = F.relu(bn(P.pw1_bn, F.conv2d(y, P.pw1_w)))
  y = bn(P.lk_bn, F.conv2d(y, P.lk_w, nil, {padding = K // 2, groups = C}))
    + bn(P.sk_bn, F.conv2d(y, P.sk_w, nil, {padding = k // 2, groups = C}))
  x = x + bn(P.pw2_bn, F.conv2d(F.relu(y), P.pw2_w))
  -- ConvFFN block
  y = bn(P.preffn_bn, x)
  y = F.gelu(bn(P.f1_bn, F.conv2d(y, P.f1_w)))
  return x + bn(P.f2_bn, F.conv2d(y, P.f2_w))
end

-- The same pair in PyTorch, its tensors filled from lark's values (before the forward, since the
-- running buffers change in place); prints the compared results one per line.
local function torch_script(P, x, gy, dtype)
  local s = {"import torch", "import torch.nn.functional as F", "torch.set_num_threads(1)",
    string.format("dt = torch.%s", dtype),
    "def T(v, *shape, grad=False): return torch.tensor(v, dtype=dt).reshape(shape).requires_grad_(grad)"}
  local function def(name, t, grad)
    local sz = shape_of(t)
    s[#s + 1] = string.format("%s = T(%s, %s, grad=%s)", name, pyvals(t), table.concat(sz, ", "), grad and "True" or "False")
  end
  local names = {}
  for name in pairs(P) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local v = P[name]
    if lark.is_tensor(v) then
      def(name, v, true)
    else
      def(name .. "_w", v.w, true); def(name .. "_b", v.b, true); def(name .. "_rm", v.rm); def(name .. "_rv", v.rv)
    end
  end
  def("x", x, true)
  def("gy", gy)
  s[#s + 1] = string.format([[
K, k, C = %d, %d, %d
def bn(p, t): return F.batch_norm(t, globals()[p + '_rm'], globals()[p + '_rv'], globals()[p + '_w'], globals()[p + '_b'], True, 0.1, 1e-5)
y = bn('prelkb_bn', x)
y = F.relu(bn('pw1_bn', F.conv2d(y, pw1_w)))
y = bn('lk_bn', F.conv2d(y, lk_w, None, 1, K // 2, 1, C)) + bn('sk_bn', F.conv2d(y, sk_w, None, 1, k // 2, 1, C))
x1 = x + bn('pw2_bn', F.conv2d(F.relu(y), pw2_w))
y = bn('preffn_bn', x1)
y = F.gelu(bn('f1_bn', F.conv2d(y, f1_w)))
out = x1 + bn('f2_bn', F.conv2d(y, f2_w))
out.backward(gy)
def show(name, t): print(name, ' '.join('%%.17g' %% v for v in t.detach().double().flatten().tolist()))
show('out', out); show('x.grad', x.grad); show('lk_w.grad', lk_w.grad); show('sk_w.grad', sk_w.grad)
show('f1_w.grad', f1_w.grad); show('lk_bn.running_mean', lk_bn_rm); show('lk_bn.running_var', lk_bn_rv)]], K, k, C)
  return table.concat(s, "\n")
end

describe("RepLKNet pair (RepLK 27x27 + 5x5, ConvFFN) against PyTorch", function()
  if not have_torch() then
    pending("python3-torch is not installed (apt-get install python3-torch): PyTorch parity skipped")
    return
  end

  for _, case in ipairs{{"float64", 1e-10}, {"float32", 1e-5}} do
    local dtype, tol = case[1], case[2]
    it(string.format("gives PyTorch's output and gradients in %s (N=%d, C=%d, %dx%d maps)", dtype, N, C, R, R), function()
      math.randomseed(27)
      local P = make_params(dtype)
      local x = rand_tensor({N, C, R, R}, dtype)
      x.requires_grad = true
      local gy = rand_tensor({N, C, R, R}, dtype)
      local expected, text = run_python_keyed(torch_script(P, x, gy, dtype))
      assert.truthy(expected.out, "PyTorch gave no output:\n" .. text:sub(1, 2000))

      local out = pair(P, x)
      assert.are.equal(dtype, out:dtype())
      assert.are.same({N, C, R, R}, shape_of(out))
      out:backward(gy)
      local got = {
        ["out"] = out, ["x.grad"] = x.grad, ["lk_w.grad"] = P.lk_w.grad, ["sk_w.grad"] = P.sk_w.grad,
        ["f1_w.grad"] = P.f1_w.grad, ["lk_bn.running_mean"] = P.lk_bn.rm, ["lk_bn.running_var"] = P.lk_bn.rv,
      }
      for _, name in ipairs{"out", "x.grad", "lk_w.grad", "sk_w.grad", "f1_w.grad", "lk_bn.running_mean",
          "lk_bn.running_var"} do
        local t = got[name]
        assert.truthy(t, name .. " is missing on the lark side")
        assert.truthy(expected[name], name .. " is missing in PyTorch's output")
        assert_rel(t:detach():reshape(-1), expected[name], tol, name)
      end
      -- the comparison can fail: a gradient that is not the expected one is caught
      local wrong = P.lk_w.grad:detach():reshape(-1) * 1.001
      assert.is_false(pcall(assert_rel, wrong, expected["lk_w.grad"], tol, "lk_w.grad * 1.001"))
    end)
  end
end)

-- The pair's eight batch norms run in float32 on core/ops/norm.c's fast path (lane-wise sums);
-- float64 runs the plain reference loops. Same values in both dtypes must give the same results
-- at float32 accuracy, at sizes around the 16-lane blocks (inner 1, 7, 16, 51 and 196), with a
-- mean far from zero (the variance is taken around the mean, not as E[x^2] - E[x]^2).
describe("float32 batch norm against the float64 reference kernels", function()
  local shapes = {{6, 3}, {3, 5, 7}, {2, 3, 4, 4}, {2, 4, 17, 3}, {2, 8, 14, 14}}
  for _, training in ipairs{true, false} do
    it(string.format("agrees in %s mode, output, running statistics and gradients", training and "training" or "eval"),
      function()
        math.randomseed(5)
        for _, shape in ipairs(shapes) do
          local C = shape[2]
          local x32 = rand_tensor(shape, "float32") * 3 + 50
          local w32, b32 = rand_tensor({C}, "float32", 0.5, 1.5), rand_tensor({C}, "float32")
          local rm32, rv32 = rand_tensor({C}, "float32") + 50, rand_tensor({C}, "float32", 1, 4)
          local g32 = rand_tensor(shape, "float32")
          local function run(dtype)
            local function cv(t) return dtype == "float64" and t:double() or t:clone() end
            local x, w, b, rm, rv = cv(x32), cv(w32), cv(b32), cv(rm32), cv(rv32)
            x.requires_grad, w.requires_grad, b.requires_grad = true, true, true
            local y = F.batch_norm(x, rm, rv, w, b, training, 0.1, 1e-5)
            y:backward(cv(g32))
            return {y = y:detach(), rm = rm, rv = rv, gx = x.grad, gw = w.grad, gb = b.grad}
          end
          local got, want = run("float32"), run("float64")
          for _, key in ipairs{"y", "rm", "rv", "gx", "gw", "gb"} do
            local ok, err = pcall(assert_near, got[key], want[key], 2e-6)
            assert(ok, string.format("shape {%s} %s: %s", table.concat(shape, ","), key, tostring(err)))
          end
        end
      end)
  end
end)
