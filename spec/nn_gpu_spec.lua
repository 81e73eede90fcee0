-- nn_gpu_spec.lua: the fused neural-network ops on the GPU against the CPU backend, their reference:
-- batch norm (training with the running statistics, eval), layer norm (last dim and channels
-- first), softmax and log_softmax along every dim, nll_loss and cross_entropy (class indices, soft
-- targets, label smoothing, every reduction), the exact GELU, and the unary activations relu,
-- sigmoid and tanh; each forward and backward through autograd, then through lark.nn modules moved
-- with :cuda(). The kernels are cuda/norm.cu, cuda/softmax.cu and cuda/activation.cu (core/ops/norm.c,
-- softmax.c, activation.c send them CUDA tensors).
--
-- Every input is made on the CPU (seeded) and copied to the GPU; results and gradients come back
-- and are compared with the CPU's within a tolerance relative to the largest value of the result:
-- both backends sum in float64 but in different orders, and float32 rounds once at the end (the
-- CPU's float32 softmax and GELU also use their own exp and erfc). Without a CUDA device every
-- describe below is pending with a message saying so. (spec/c/test_nn_dispatch.c checks the
-- device half of the front functions without a GPU, through a stand-in backend.)

local nn = require "lark.nn"
local F = nn.functional


-- every move to the GPU goes through these (one place to read what "the GPU copy" means)
local function to_gpu(t) return t:cuda() end
local function is_gpu(t) return t:device() ~= "cpu" end
local function model_to_gpu(m) return m:cuda() end

local FLOATS = {"float32", "float64"}
local TOL = {float32 = 2e-5, float64 = 1e-11}

-- max |got - want| over max(1, max finite |want|), both in float64 on the CPU: NaN must meet NaN
-- (else the error is NaN) and an infinity the same infinity (else it is infinite)
local expect_close = expect_gpu_close -- spec/helper.lua

-- A CPU leaf of shape (normal values, seeded by gen) and its GPU copy, both requiring grad when
-- grad is true (each is a leaf of its own graph).
local function pair(shape, dtype, gen, grad, scale)
  local c = lark.randn(shape, {dtype = dtype, generator = gen})
  if scale then c = c * scale end
  local g = to_gpu(c)
  if grad then c.requires_grad, g.requires_grad = true, true end
  return c, g
end

-- Runs fn on the CPU inputs and on the GPU inputs, compares the results, then backpropagates the
-- same random direction through both and compares every input's gradient. inputs: a list of
-- {cpu, gpu, name} (nil entries allowed: fn receives nil on both sides).
local function parity(what, inputs, fn, tol, gen)
  local cargs, gargs = {}, {}
  for i = 1, #inputs do
    cargs[i], gargs[i] = inputs[i] and inputs[i][1], inputs[i] and inputs[i][2]
  end
  local yc, yg = fn(table.unpack(cargs, 1, #inputs)), fn(table.unpack(gargs, 1, #inputs))
  expect_close(what .. " forward", yg, yc, tol)
  local wants_grad = false
  for i = 1, #inputs do wants_grad = wants_grad or (inputs[i] and inputs[i][1].requires_grad) end
  if not wants_grad then return end
  local dir = lark.randn(shape_of(yc), {dtype = yc:dtype(), generator = gen})
  ;(yc * dir):sum():backward()
  ;(yg * to_gpu(dir)):sum():backward()
  for i = 1, #inputs do
    local inp = inputs[i]
    if inp and inp[1].requires_grad then
      assert.is_not_nil(inp[2].grad, what .. ": no gradient for " .. inp[3])
      expect_close(what .. " grad of " .. inp[3], inp[2].grad, inp[1].grad, tol)
    end
  end
end

gpu_describe("layer norm on the GPU", function()
  -- last-dim shapes: short rows (a warp each), a long row (a block each), a 1-D input, an empty batch
  local last_shapes = {{7, 33}, {2, 3, 5}, {3, 1500}, {40}, {0, 6}, {5, 1}}
  -- channels-first shapes: columns of 32 lines, few lines with many channels, H = W = 1 (rows)
  local cf_shapes = {{2, 8, 5, 7}, {3, 300, 2, 2}, {2, 5, 1, 1}, {1, 4, 40, 40}, {2, 3}}

  it("matches the CPU over the last dim, with and without affine parameters, forward and backward", function()
    local gen = lark.Generator(101)
    for _, dtype in ipairs(FLOATS) do
      for _, shape in ipairs(last_shapes) do
        for _, affine in ipairs{true, false} do
          local C = shape[#shape]
          local x = {pair(shape, dtype, gen, true)}
          x[3] = "x"
          local w, b
          if affine then
            w = {pair({C}, dtype, gen, true)}
            b = {pair({C}, dtype, gen, true)}
            w[3], b[3] = "weight", "bias"
          end
          local what = string.format("layer_norm %s [%s] affine %s", dtype, table.concat(shape, ","), tostring(affine))
          parity(what, {x, w, b}, function(xi, wi, bi) return F.layer_norm(xi, wi, bi, 1e-5) end, TOL[dtype], gen)
        end
      end
    end
  end)

  it("matches the CPU channels-first (ConvNeXt's LayerNorm), forward and backward", function()
    local gen = lark.Generator(102)
    for _, dtype in ipairs(FLOATS) do
      for _, shape in ipairs(cf_shapes) do
        local C = shape[2]
        local x, w, b = {pair(shape, dtype, gen, true)}, {pair({C}, dtype, gen, true)}, {pair({C}, dtype, gen, true)}
        x[3], w[3], b[3] = "x", "weight", "bias"
        local what = string.format("layer_norm_channels_first %s [%s]", dtype, table.concat(shape, ","))
        parity(what, {x, w, b}, function(xi, wi, bi) return F.layer_norm_channels_first(xi, wi, bi, 1e-6) end,
          TOL[dtype], gen)
      end
    end
  end)

  it("reads non-contiguous inputs as the CPU does", function()
    local gen = lark.Generator(103)
    local c = lark.randn({6, 9, 4}, {generator = gen})
    local g = to_gpu(c)
    expect_close("layer_norm of a transposed view", F.layer_norm(g:transpose(1, 3), nil, nil),
      F.layer_norm(c:transpose(1, 3), nil, nil), TOL.float32)
    expect_close("channels-first of a narrowed view", F.layer_norm_channels_first(g:narrow(2, 2, 5), nil, nil),
      F.layer_norm_channels_first(c:narrow(2, 2, 5), nil, nil), TOL.float32)
  end)
end)

gpu_describe("batch norm on the GPU", function()
  -- (N, C, ...) shapes: small, per-channel runs of 1 (BatchNorm1d), a map big enough that a channel
  -- is cut into chunks, few channels
  local shapes = {{8, 3, 5, 5}, {16, 7}, {2, 16, 70, 70}, {4, 2, 9}, {3, 130, 3, 3}}

  it("training: output, gradients and the updated running statistics match the CPU", function()
    local gen = lark.Generator(201)
    for _, dtype in ipairs(FLOATS) do
      for _, shape in ipairs(shapes) do
        for _, affine in ipairs{true, false} do
          for _, momentum in ipairs{0.1, 1} do
            local C = shape[2]
            local x = {pair(shape, dtype, gen, true, 3)}
            x[3] = "x"
            local w, b
            if affine then
              w, b = {pair({C}, dtype, gen, true)}, {pair({C}, dtype, gen, true)}
              w[3], b[3] = "weight", "bias"
            end
            local rm_c = lark.randn({C}, {dtype = dtype, generator = gen})
            local rv_c = lark.rand({C}, {dtype = dtype, generator = gen}) + 0.5
            local rm_g, rv_g = to_gpu(rm_c), to_gpu(rv_c)
            local what = string.format("batch_norm train %s [%s] affine %s momentum %g", dtype,
              table.concat(shape, ","), tostring(affine), momentum)
            parity(what, {x, w, b}, function(xi, wi, bi)
              local on_gpu = is_gpu(xi)
              return F.batch_norm(xi, on_gpu and rm_g or rm_c, on_gpu and rv_g or rv_c, wi, bi, true, momentum, 1e-5)
            end, TOL[dtype], gen)
            expect_close(what .. " running_mean", rm_g, rm_c, TOL[dtype])
            expect_close(what .. " running_var", rv_g, rv_c, TOL[dtype])
          end
        end
      end
    end
  end)

  it("training without running statistics, and eval with them, match the CPU", function()
    local gen = lark.Generator(202)
    for _, dtype in ipairs(FLOATS) do
      for _, shape in ipairs(shapes) do
        local C = shape[2]
        local x, w, b = {pair(shape, dtype, gen, true)}, {pair({C}, dtype, gen, true)}, {pair({C}, dtype, gen, true)}
        x[3], w[3], b[3] = "x", "weight", "bias"
        local what = string.format("%s [%s]", dtype, table.concat(shape, ","))
        parity("batch_norm train, no running stats " .. what, {x, w, b},
          function(xi, wi, bi) return F.batch_norm(xi, nil, nil, wi, bi, true, 0.1, 1e-5) end, TOL[dtype], gen)
        local rm_c = lark.randn({C}, {dtype = dtype, generator = gen})
        local rv_c = lark.rand({C}, {dtype = dtype, generator = gen}) + 0.5
        local rm_g, rv_g = to_gpu(rm_c), to_gpu(rv_c)
        local x2 = {pair(shape, dtype, gen, true)}
        local w2, b2 = {pair({C}, dtype, gen, true)}, {pair({C}, dtype, gen, true)}
        x2[3], w2[3], b2[3] = "x", "weight", "bias"
        parity("batch_norm eval " .. what, {x2, w2, b2}, function(xi, wi, bi)
          local on_gpu = is_gpu(xi)
          return F.batch_norm(xi, on_gpu and rm_g or rm_c, on_gpu and rv_g or rv_c, wi, bi, false, 0.1, 1e-3)
        end, TOL[dtype], gen)
        -- eval leaves the running statistics alone
        assert_same(rm_g:cpu(), rm_c, "eval running_mean")
        assert_same(rv_g:cpu(), rv_c, "eval running_var")
      end
    end
  end)

  it("refuses what the CPU refuses, with its messages", function()
    local c = lark.randn({1, 4})
    local g = to_gpu(c)
    local rm, rv = to_gpu(lark.zeros({4})), to_gpu(lark.ones({4}))
    local cpu_err = error_of(function() return F.batch_norm(c, nil, nil, nil, nil, true) end)
    expect_error(cpu_err:match("batch_norm: .*"), function() return F.batch_norm(g, rm, rv, nil, nil, true) end)
    expect_error("running_mean and running_var are required in eval mode",
      function() return F.batch_norm(to_gpu(lark.randn({2, 4})), nil, nil, nil, nil, false) end)
    expect_error("must be on the input's device",
      function() return F.batch_norm(to_gpu(lark.randn({2, 4})), lark.zeros({4}), lark.ones({4}), nil, nil, true) end)
  end)
end)

gpu_describe("softmax and log_softmax on the GPU", function()
  local shapes = {{}, {7}, {3, 4, 5}, {2, 2000}, {5, 40, 3}, {2, 3, 33, 4}, {0, 5}, {3, 0}, {1, 1100, 2}}

  it("match the CPU along every dim, forward and backward", function()
    local gen = lark.Generator(301)
    for _, dtype in ipairs(FLOATS) do
      for _, shape in ipairs(shapes) do
        local dims = {}
        for d = 1, #shape do dims[#dims + 1] = d end
        if #shape == 0 then dims = {1} end
        if #shape >= 2 then dims[#dims + 1] = -1 end
        for _, d in ipairs(dims) do
          for _, fname in ipairs{"softmax", "log_softmax"} do
            local x = {pair(shape, dtype, gen, true, 4)}
            x[3] = "x"
            local what = string.format("%s %s [%s] dim %d", fname, dtype, table.concat(shape, ","), d)
            parity(what, {x}, function(xi) return F[fname](xi, d) end, TOL[dtype], gen)
          end
        end
      end
    end
  end)

  it("give the CPU's results on lines of -inf, with a NaN, and with large values", function()
    for _, dtype in ipairs(FLOATS) do
      local c = lark.randn({4, 6}, {dtype = dtype, generator = lark.Generator(302)})
      for j = 1, 6 do c[1][j] = -math.huge end
      c[2][3] = 0 / 0
      c[3][2] = -math.huge
      c[4][1] = 1e30
      local g = to_gpu(c)
      for _, fname in ipairs{"softmax", "log_softmax"} do
        for d = 1, 2 do
          expect_close(fname .. " special values " .. dtype .. " dim " .. d, F[fname](g, d), F[fname](c, d), TOL[dtype])
        end
      end
    end
  end)
end)

gpu_describe("losses on the GPU", function()
  local sizes = {{6, 10}, {1, 3}, {33, 1500}, {0, 4}}

  it("cross_entropy matches the CPU: class indices and soft targets, smoothing, every reduction", function()
    local gen = lark.Generator(401)
    for _, dtype in ipairs(FLOATS) do
      for _, nc in ipairs(sizes) do
        local N, C = nc[1], nc[2]
        for _, reduction in ipairs{"mean", "sum", "none"} do
          for _, smoothing in ipairs{0, 0.1} do
            local what = string.format("cross_entropy %s [%d,%d] %s smoothing %g", dtype, N, C, reduction, smoothing)
            local opts = {reduction = reduction, label_smoothing = smoothing}
            local z = {pair({N, C}, dtype, gen, true, 3)}
            z[3] = "logits"
            local tc = N > 0 and lark.randint(1, C + 1, {N}, {dtype = "int64", generator = gen})
              or lark.zeros({0}, {dtype = "int64"})
            local tg = to_gpu(tc)
            parity(what .. " (indices)", {z}, function(zi)
              return F.cross_entropy(zi, is_gpu(zi) and tg or tc, opts)
            end, TOL[dtype], gen)
            local z2 = {pair({N, C}, dtype, gen, true, 3)}
            z2[3] = "logits"
            local qc = F.softmax(lark.randn({N, C}, {dtype = dtype, generator = gen}), 2)
            local q = {qc, to_gpu(qc), "target"}
            q[1].requires_grad, q[2].requires_grad = true, true
            parity(what .. " (probabilities)", {z2, q}, function(zi, qi) return F.cross_entropy(zi, qi, opts) end,
              TOL[dtype], gen)
          end
        end
      end
    end
  end)

  it("nll_loss matches the CPU after log_softmax, every reduction", function()
    local gen = lark.Generator(402)
    for _, dtype in ipairs(FLOATS) do
      for _, nc in ipairs(sizes) do
        local N, C = nc[1], nc[2]
        local tc = N > 0 and lark.randint(1, C + 1, {N}, {dtype = "int64", generator = gen})
          or lark.zeros({0}, {dtype = "int64"})
        local tg = to_gpu(tc)
        for _, reduction in ipairs{"mean", "sum", "none"} do
          local z = {pair({N, C}, dtype, gen, true)}
          z[3] = "input"
          parity(string.format("nll_loss %s [%d,%d] %s", dtype, N, C, reduction), {z}, function(zi)
            local on_gpu = is_gpu(zi)
            return F.nll_loss(F.log_softmax(zi, 2), on_gpu and tg or tc, {reduction = reduction})
          end, TOL[dtype], gen)
        end
      end
    end
  end)

  it("reports a class out of range like the CPU, naming the first bad position", function()
    local z = lark.randn({5, 4})
    local t = lark.tensor({1, 2, 9, 0, 3}, {dtype = "int64"})
    local cpu_err = error_of(function() return F.cross_entropy(z, t) end)
    local gpu_err = error_of(function() return F.cross_entropy(to_gpu(z), to_gpu(t)) end)
    assert.are.equal(cpu_err:match("cross_entropy: .*"), gpu_err:match("cross_entropy: .*"))
    cpu_err = error_of(function() return F.nll_loss(z, t) end)
    gpu_err = error_of(function() return F.nll_loss(to_gpu(z), to_gpu(t)) end)
    assert.are.equal(cpu_err:match("nll_loss: .*"), gpu_err:match("nll_loss: .*"))
    -- the device still works afterwards
    expect_close("cross_entropy after an error", F.cross_entropy(to_gpu(z), to_gpu(t:clamp(1, 4))),
      F.cross_entropy(z, t:clamp(1, 4)), TOL.float32)
  end)

  it("mse_loss (composite) matches the CPU", function()
    local gen = lark.Generator(403)
    for _, dtype in ipairs(FLOATS) do
      local a = {pair({4, 7}, dtype, gen, true)}
      local b = {pair({4, 7}, dtype, gen, true)}
      a[3], b[3] = "input", "target"
      for _, reduction in ipairs{"mean", "sum", "none"} do
        parity("mse_loss " .. dtype .. " " .. reduction, {a, b},
          function(ai, bi) return F.mse_loss(ai, bi, reduction) end, TOL[dtype], gen)
        a[1].grad, a[2].grad, b[1].grad, b[2].grad = nil, nil, nil, nil
      end
    end
  end)
end)

gpu_describe("activations on the GPU", function()
  it("gelu, relu, sigmoid and tanh match the CPU, forward and backward", function()
    local gen = lark.Generator(501)
    local fns = {gelu = F.gelu, relu = F.relu, sigmoid = F.sigmoid, tanh = F.tanh}
    for _, dtype in ipairs(FLOATS) do
      for _, shape in ipairs{{1000}, {3, 4, 5}, {0}, {}} do
        for _, name in ipairs{"gelu", "relu", "sigmoid", "tanh"} do
          local x = {pair(shape, dtype, gen, true, 4)}
          x[3] = "x"
          parity(string.format("%s %s [%s]", name, dtype, table.concat(shape, ",")), {x}, fns[name], TOL[dtype], gen)
        end
      end
    end
  end)

  it("gelu keeps its accuracy in the tails and reads views", function()
    for _, dtype in ipairs(FLOATS) do
      local c = lark.linspace(-30, 30, 241, {dtype = dtype})
      local g = to_gpu(c)
      assert_near(F.gelu(g):cpu(), F.gelu(c), dtype == "float32" and 1e-5 or 1e-12)
      if dtype == "float32" then
        -- relative to each value: both compute 1 + erf as erfc in float32, so the tiny results at
        -- large negative x keep their accuracy (down to x = -9, where they are still normal floats)
        local cs = lark.linspace(-9, 9, 181)
        local want, got = F.gelu(cs):double(), F.gelu(to_gpu(cs)):cpu():double()
        local nonzero = want:ne(0)
        local rel = lark.where(nonzero, (got - want):abs() / lark.where(nonzero, want:abs(), lark.ones({})),
          lark.zeros({}, {dtype = "float64"}))
        assert.is_true(rel:max():item() < 1e-5, "float32 gelu: relative error " .. rel:max():item())
      end
      local m = lark.randn({6, 8}, {dtype = dtype, generator = lark.Generator(502)})
      expect_close("gelu of a transposed view " .. dtype, F.gelu(to_gpu(m):t()), F.gelu(m:t()), TOL[dtype])
    end
  end)
end)

gpu_describe("lark.nn modules moved with :cuda()", function()
  -- two copies of one model: the second loaded from the first's state dict, then moved
  local function twins(make)
    lark.manual_seed(7)
    local cpu_model = make()
    local gpu_model = make()
    gpu_model:load_state_dict(cpu_model:state_dict())
    model_to_gpu(gpu_model)
    return cpu_model, gpu_model
  end

  local function compare_params(what, cm, gm, tol)
    local gp = {}
    for name, p in gm:named_parameters() do gp[name] = p end
    for name, p in cm:named_parameters() do
      expect_close(what .. " " .. name, gp[name], p, tol)
      if p.grad then expect_close(what .. " grad of " .. name, gp[name].grad, p.grad, tol) end
    end
    local gb = {}
    for name, b in gm:named_buffers() do gb[name] = b end
    for name, b in cm:named_buffers() do
      if b:dtype() == "int64" then assert_same(gb[name]:cpu(), b, what .. " " .. name)
      else expect_close(what .. " " .. name, gb[name], b, tol) end
    end
  end

  it("an MLP with LayerNorm, GELU and cross entropy: loss, gradients and an SGD step", function()
    for _, dtype in ipairs(FLOATS) do
      local make = function()
        return nn.Sequential(nn.Linear(12, 32, {dtype = dtype}), nn.LayerNorm(32, {dtype = dtype}), nn.GELU(),
          nn.Linear(32, 10, {dtype = dtype}))
      end
      local cm, gm = twins(make)
      local gen = lark.Generator(601)
      local x = lark.randn({16, 12}, {dtype = dtype, generator = gen})
      local t = lark.randint(1, 11, {16}, {dtype = "int64", generator = gen})
      local crit = nn.CrossEntropyLoss({label_smoothing = 0.1})
      local lc = crit(cm(x), t)
      local lg = crit(gm(to_gpu(x)), to_gpu(t))
      expect_close("mlp loss " .. dtype, lg, lc, TOL[dtype])
      lc:backward()
      lg:backward()
      compare_params("mlp " .. dtype, cm, gm, TOL[dtype] * 10)
      local oc, og = lark.optim.SGD(cm:parameters(), {lr = 0.1}), lark.optim.SGD(gm:parameters(), {lr = 0.1})
      oc:step()
      og:step()
      compare_params("mlp after a step " .. dtype, cm, gm, TOL[dtype] * 10)
    end
  end)

  it("BatchNorm2d and channels-first LayerNorm: train steps update the running statistics, eval uses them", function()
    for _, dtype in ipairs(FLOATS) do
      local make = function()
        return nn.Sequential(nn.BatchNorm2d(6, {dtype = dtype}), nn.ReLU(),
          nn.LayerNorm(6, {channels_first = true, dtype = dtype}), nn.Sigmoid(), nn.BatchNorm2d(6, {momentum = false,
          dtype = dtype}), nn.Tanh())
      end
      local cm, gm = twins(make)
      local gen = lark.Generator(602)
      for step = 1, 3 do
        local x = lark.randn({4, 6, 9, 7}, {dtype = dtype, generator = gen}) * 2 + 1
        local yc, yg = cm(x), gm(to_gpu(x))
        expect_close("bn model train step " .. step .. " " .. dtype, yg, yc, TOL[dtype])
        local dir = lark.randn(shape_of(yc), {dtype = dtype, generator = gen})
        ;(yc * dir):sum():backward()
        ;(yg * to_gpu(dir)):sum():backward()
        compare_params("bn model step " .. step .. " " .. dtype, cm, gm, TOL[dtype] * 10)
        cm:zero_grad()
        gm:zero_grad()
      end
      cm:eval()
      gm:eval()
      local x = lark.randn({3, 6, 5, 5}, {dtype = dtype, generator = gen})
      local xc, xg = x:clone(), to_gpu(x)
      xc.requires_grad, xg.requires_grad = true, true
      local yc, yg = cm(xc), gm(xg)
      expect_close("bn model eval " .. dtype, yg, yc, TOL[dtype])
      yc:sum():backward()
      yg:sum():backward()
      expect_close("bn model eval grad of x " .. dtype, xg.grad, xc.grad, TOL[dtype])
      compare_params("bn model eval " .. dtype, cm, gm, TOL[dtype] * 10)
    end
  end)
end)
