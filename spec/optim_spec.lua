-- optim_spec.lua: lark.optim. The fused C updates against their plain reference loops and a Lua
-- transcription of the update rules; SGD, AdamW, the schedules and clip_grad_norm against PyTorch
-- 1.13 on the same 20-step gradient sequence (float32 within 1e-5, float64 within 1e-10);
-- state_dict round trips; ModelEma; parameter groups; the error messages.
local optim = lark.optim

-- ---- a stand-in for a lark.nn model: named_parameters() and named_buffers() iterators --------------

local SHAPES = {
  {"fc1.weight", {5, 4}}, {"fc1.bias", {5}}, {"norm.weight", {5}}, {"fc2.weight", {3, 5}}, {"fc2.bias", {3}},
}

local function iter(names, by_name)
  local i = 0
  return function()
    i = i + 1
    local n = names[i]
    if n then return n, by_name[n] end
  end
end

--- A model whose parameters are SHAPES (values from `init`, name -> tensor, or random), plus a
-- float buffer and an int64 counter.
local function Model(dtype, init)
  local m = {names = {}, params = {}, buffer_names = {"norm.running_mean", "norm.num_batches_tracked"}, buffers = {}}
  for _, s in ipairs(SHAPES) do
    local name, shape = s[1], s[2]
    local t = init and init[name]:clone() or rand_tensor(shape, dtype)
    t.requires_grad = true
    m.names[#m.names + 1], m.params[name] = name, t
  end
  m.buffers["norm.running_mean"] = rand_tensor({5}, dtype)
  m.buffers["norm.num_batches_tracked"] = lark.tensor(3, {dtype = "int64"})
  function m:named_parameters() return iter(self.names, self.params) end
  function m:named_buffers() return iter(self.buffer_names, self.buffers) end
  function m:values()
    local v = {}
    for _, n in ipairs(self.names) do v[n] = self.params[n]:detach():clone() end
    return v
  end
  return m
end

--- grads[s][i]: the gradient of parameter i at step s, or false when it has none that step
-- (norm.weight on step 1, fc2.bias on steps 5 and 6: their step counts lag behind the others').
local function grad_sequence(nsteps, dtype)
  local seq = {}
  for s = 1, nsteps do
    seq[s] = {}
    for i, sh in ipairs(SHAPES) do
      local skip = (sh[1] == "norm.weight" and s == 1) or (sh[1] == "fc2.bias" and (s == 5 or s == 6))
      seq[s][i] = not skip and rand_tensor(sh[2], dtype, -1, 1) or false
    end
  end
  return seq
end

local function run(opt, model, seq, from, to, after_step)
  for s = from, to do
    for i, name in ipairs(model.names) do model.params[name].grad = seq[s][i] or nil end
    opt:step()
    if after_step then after_step(s) end
  end
end

-- ---- a Lua transcription of the update rules (double precision), for the small cases ----------

local function lua_sgd(p, g, buf, o)
  local out, nb = {}, {}
  for i = 1, #p do
    local gi = o.maximize and -g[i] or g[i]
    local d = gi + (o.weight_decay or 0) * p[i]
    if (o.momentum or 0) ~= 0 then
      nb[i] = buf and buf[i] * o.momentum + (1 - (o.dampening or 0)) * d or d
      d = o.nesterov and d + o.momentum * nb[i] or nb[i]
    end
    out[i] = p[i] - o.lr * d
  end
  return out, nb
end

local function lua_adamw(p, g, m, v, vmax, t, o)
  local b1, b2 = o.betas[1], o.betas[2]
  local out = {}
  for i = 1, #p do
    local pi = p[i] * (1 - o.lr * o.weight_decay)
    m[i] = b1 * m[i] + (1 - b1) * g[i]
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
    local d = v[i]
    if vmax then
      vmax[i] = math.max(vmax[i], v[i])
      d = vmax[i]
    end
    out[i] = pi - o.lr / (1 - b1 ^ t) * m[i] / (math.sqrt(d) / math.sqrt(1 - b2 ^ t) + o.eps)
  end
  return out
end

describe("optim kernels", function()
  it("SGD and AdamW match a Lua transcription of their rules (float64, 3 steps)", function()
    math.randomseed(1)
    local n = 7
    local p0 = flat_numbers(rand_tensor({n}))
    for _, o in ipairs{{lr = 0.1}, {lr = 0.1, momentum = 0.9, weight_decay = 0.01},
                       {lr = 0.05, momentum = 0.8, nesterov = true, weight_decay = 0.1},
                       {lr = 0.05, momentum = 0.5, dampening = 0.25, maximize = true}} do
      local p = lark.tensor(p0, {dtype = "float64"})
      local bufs = o.momentum and {false} or nil
      local ref, rbuf = p0, nil
      for _ = 1, 3 do
        local g = rand_tensor({n})
        lark.sgd_step_({p}, {g}, bufs, o)
        ref, rbuf = lua_sgd(ref, flat_numbers(g), rbuf, o)
      end
      assert_near(p, ref, 1e-14)
      if bufs then assert_near(bufs[1], rbuf, 1e-14) end
    end
    for _, ams in ipairs{false, true} do
      local o = {lr = 0.01, betas = {0.9, 0.99}, eps = 1e-8, weight_decay = 0.05, amsgrad = ams}
      local p = lark.tensor(p0, {dtype = "float64"})
      local m, v, w = {false}, {false}, ams and {false} or nil
      local ref, rm, rv, rw = p0, {}, {}, ams and {} or nil
      for i = 1, n do rm[i], rv[i] = 0, 0 if rw then rw[i] = 0 end end
      for t = 1, 4 do
        local g = rand_tensor({n}, "float64", -2, 2)
        lark.adamw_step_({p}, {g}, m, v, w, {t}, o)
        ref = lua_adamw(ref, flat_numbers(g), rm, rv, rw, t, o)
      end
      assert_near(p, ref, 1e-14)
      assert_near(m[1], rm, 1e-14)
      assert_near(v[1], rv, 1e-14)
      if ams then assert_near(w[1], rw, 1e-14) end
    end
  end)

  it("the fast kernels match the reference loops on big (threaded) and odd-sized tensors", function()
    math.randomseed(2)
    for _, dtype in ipairs{"float32", "float64"} do
      local tol = dtype == "float64" and 1e-13 or 2e-6
      local shapes = {{37}, {3, 5}, {200, 201}} -- 40200 elements: past the OpenMP grain
      local function tensors()
        local ts = {}
        for i, s in ipairs(shapes) do ts[i] = lark.randn(s, {dtype = dtype}) end
        return ts
      end
      local function clones(ts)
        local c = {}
        for i, t in ipairs(ts) do c[i] = t:clone() end
        return c
      end
      -- SGD, every option combination that matters
      for _, o in ipairs{{lr = 0.1, weight_decay = 0.01}, {lr = 0.1, momentum = 0.9, dampening = 0.1},
                         {lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 1e-3, maximize = true}} do
        local pa = tensors()
        local pb = clones(pa)
        local ba = o.momentum and {false, false, false} or nil
        local bb = o.momentum and {false, false, false} or nil
        for _ = 1, 3 do
          local gs = tensors()
          lark.sgd_step_(pa, gs, ba, o)
          lark.sgd_step_reference_(pb, gs, bb, o)
        end
        for i = 1, #pa do
          assert_near(pa[i], pb[i], tol)
          if ba then assert_near(ba[i], bb[i], tol) end
        end
      end
      -- AdamW, with and without amsgrad; the step counts differ per tensor
      for _, ams in ipairs{false, true} do
        local o = {lr = 1e-2, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0.05, amsgrad = ams}
        local pa = tensors()
        local pb = clones(pa)
        local sa = {{false, false, false}, {false, false, false}, ams and {false, false, false} or nil}
        local sb = {{false, false, false}, {false, false, false}, ams and {false, false, false} or nil}
        for t = 1, 3 do
          local gs = tensors()
          local steps = {t, t + 5, 2 * t}
          lark.adamw_step_(pa, gs, sa[1], sa[2], sa[3], steps, o)
          lark.adamw_step_reference_(pb, gs, sb[1], sb[2], sb[3], steps, o)
        end
        for i = 1, #pa do
          assert_near(pa[i], pb[i], tol)
          assert_near(sa[1][i], sb[1][i], tol)
          assert_near(sa[2][i], sb[2][i], tol)
          if ams then assert_near(sa[3][i], sb[3][i], tol) end
        end
      end
      -- lerp, both branches of torch's formula
      for _, w in ipairs{1e-4, 0.3, 0.7, 1} do
        local da = tensors()
        local db = clones(da)
        local src = tensors()
        lark.lerp_list_(da, src, w)
        lark.lerp_list_reference_(db, src, w)
        for i = 1, #da do
          assert_near(da[i], db[i], tol)
        end
        if w == 1 then assert_same(da[3], src[3], "lerp with weight 1") end
      end
    end
  end)

  it("lerp_list_ is dst + w * (src - dst) and copies integer tensors", function()
    local d = lark.tensor({1, 2, 3}, {dtype = "float64"})
    local s = lark.tensor({3, 2, -1}, {dtype = "float64"})
    local i1, i2 = lark.tensor({1, 2}, {dtype = "int64"}), lark.tensor({7, 9}, {dtype = "int64"})
    lark.lerp_list_({d, i1}, {s, i2}, 0.25)
    assert_near(d, {1.5, 2, 2}, 1e-15)
    assert_same(i1, {7, 9}, "integer tensor copied")
  end)

  it("total_norm and clip_grad_norm_ follow their definitions", function()
    local a = lark.tensor({3, -4}, {dtype = "float64"})
    local b = lark.tensor({{12}}, {dtype = "float32"})
    assert_near(lark.total_norm({a, b}), 13, 1e-15)
    assert_near(lark.total_norm({a, b}, 1), 19, 1e-15)
    assert_near(lark.total_norm({a, b}, math.huge), 12, 1e-15)
    assert_near(lark.total_norm({a, b}, "inf"), 12, 1e-15)
    assert_near(lark.total_norm({a, b}, 3), (27 + 64 + 1728) ^ (1 / 3), 1e-14)
    assert.is_true(lark.total_norm({lark.tensor({1, 0 / 0})}) ~= lark.total_norm({lark.tensor({1, 0 / 0})}))
    local total = lark.clip_grad_norm_({a, b}, 6.5)
    assert_near(total, 13, 1e-15)
    assert_near(a, {3 * 6.5 / (13 + 1e-6), -4 * 6.5 / (13 + 1e-6)}, 1e-15)
    -- under the limit: untouched
    local c = lark.tensor({0.3, 0.4}, {dtype = "float64"})
    assert_near(lark.clip_grad_norm_({c}, 1), 0.5, 1e-15)
    assert_same(c, {0.3, 0.4}, "grad under the limit")
    assert.are.equal(0, lark.total_norm({}))
  end)
end)

-- ---- PyTorch parity ------------------------------------------------------------------------------

-- Python source for the model's initial values and the gradient sequence.
local function py_setup(init, seq, dtype)
  local lines = {"dt = torch." .. dtype}
  local ps = {}
  for i, s in ipairs(SHAPES) do ps[i] = string.format("torch.tensor(%s, dtype=dt).requires_grad_()", pylist(init[s[1]])) end
  lines[#lines + 1] = "ps = [" .. table.concat(ps, ", ") .. "]"
  local steps = {}
  for s = 1, #seq do
    local gs = {}
    for i = 1, #SHAPES do gs[i] = seq[s][i] and string.format("torch.tensor(%s, dtype=dt)", pylist(seq[s][i])) or "None" end
    steps[s] = "[" .. table.concat(gs, ", ") .. "]"
  end
  lines[#lines + 1] = "G = [" .. table.concat(steps, ",\n") .. "]"
  return table.concat(lines, "\n")
end

-- {label, lark constructor (model) -> optimizer, PyTorch constructor over ps}
local OPT_CASES = {
  {"SGD momentum + nesterov + weight decay",
    function(m) return optim.SGD(m, {lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 1e-2}) end,
    "torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)"},
  {"SGD dampening, two groups",
    function(m)
      local groups = optim.param_groups(m, {weight_decay = 0.05})
      groups[2].lr = 0.02
      return optim.SGD(groups, {lr = 0.1, momentum = 0.9, dampening = 0.3, weight_decay = 1e-3})
    end,
    "torch.optim.SGD([{'params': [ps[0], ps[3]], 'weight_decay': 0.05}, "
      .. "{'params': [ps[1], ps[2], ps[4]], 'weight_decay': 0.0, 'lr': 0.02}], lr=0.1, momentum=0.9, dampening=0.3, weight_decay=1e-3)"},
  {"SGD plain, maximize",
    function(m) return optim.SGD(m, {lr = 0.1, weight_decay = 0.01, maximize = true}) end,
    "torch.optim.SGD(ps, lr=0.1, weight_decay=0.01, maximize=True)"},
  {"AdamW, two groups",
    function(m)
      local groups = optim.param_groups(m, {weight_decay = 0.05})
      groups[2].lr = 5e-3
      return optim.AdamW(groups, {lr = 1e-2, betas = {0.9, 0.99}})
    end,
    "torch.optim.AdamW([{'params': [ps[0], ps[3]], 'weight_decay': 0.05}, "
      .. "{'params': [ps[1], ps[2], ps[4]], 'weight_decay': 0.0, 'lr': 5e-3}], lr=1e-2, betas=(0.9, 0.99))"},
  {"AdamW amsgrad",
    function(m) return optim.AdamW(m, {lr = 2e-2, weight_decay = 1e-2, eps = 1e-6, amsgrad = true}) end,
    "torch.optim.AdamW(ps, lr=2e-2, weight_decay=1e-2, eps=1e-6, amsgrad=True)"},
}

describe("optim parity with PyTorch", function()
  if not have_torch() then
    pending("python3-torch is not installed (apt-get install python3-torch): PyTorch parity skipped")
    return
  end

  it("SGD and AdamW match torch.optim over 20 steps in float32 and float64", function()
    local script = {"import torch"}
    local expected = {}
    math.randomseed(5)
    for _, dtype in ipairs{"float64", "float32"} do
      for k, c in ipairs(OPT_CASES) do
        local model = Model(dtype)
        local init = model:values()
        local seq = grad_sequence(20, dtype)
        run(c[2](model), model, seq, 1, 20)
        expected[#expected + 1] = {label = c[1] .. " " .. dtype, model = model, tol = dtype == "float64" and 1e-10 or 1e-5}
        script[#script + 1] = "def case():"
        for line in (py_setup(init, seq, dtype) .. "\nopt = " .. c[3] .. "\n"
            .. "for gs in G:\n    for p, g in zip(ps, gs): p.grad = g\n    opt.step()\n"
            .. "for p in ps: print(' '.join(repr(v) for v in p.detach().double().reshape(-1).tolist()))"):gmatch("[^\n]+") do
          script[#script + 1] = "    " .. line
        end
        script[#script + 1] = "case()"
        assert(k > 0)
      end
    end
    local lines = run_python_numbers(table.concat(script, "\n") .. "\n")
    local li = 1
    for _, e in ipairs(expected) do
      for _, name in ipairs(e.model.names) do
        local want = lines[li]
        li = li + 1
        assert(want and type(want[1]) == "number", "PyTorch printed: " .. table.concat(want or {"nothing"}, " "))
        local ok, err = pcall(assert_near, flat_numbers(e.model.params[name]), want, e.tol)
        assert(ok, e.label .. ", " .. name .. ": " .. tostring(err))
      end
    end
  end)

  it("the schedules match LambdaLR, CosineAnnealingLR and StepLR; clip_grad_norm matches torch's", function()
    local function two_groups()
      local a, b = lark.zeros(2, {requires_grad = true}), lark.zeros(3, {requires_grad = true})
      return optim.SGD({{params = {a}, lr = 0.1}, {params = {b}, lr = 0.01}}, {lr = 1})
    end
    local function lrs_over(sched, n)
      local out = {}
      for s = 0, n do
        local lr = sched:get_lr()
        out[#out + 1] = lr[1]
        out[#out + 1] = lr[2]
        if s < n then sched:step() end
      end
      return out
    end
    local S = optim.lr_scheduler
    local got = {
      lrs_over(S.cosine(two_groups(), {warmup_steps = 5, total_steps = 25, min_lr = 1e-3, warmup_start_lr = 1e-4}), 30),
      lrs_over(S.cosine(two_groups(), {total_steps = 25, min_lr = 1e-3}), 25),
      lrs_over(S.step(two_groups(), {step_size = 7, gamma = 0.5}), 30),
    }
    local script = [[
import math, torch, warnings
warnings.filterwarnings('ignore')
def groups():
    return torch.optim.SGD([{'params': [torch.zeros(2, requires_grad=True)], 'lr': 0.1},
                            {'params': [torch.zeros(3, requires_grad=True)], 'lr': 0.01}], lr=1)
def show(opt, sched, n):
    out = []
    for s in range(n + 1):
        out += [g['lr'] for g in opt.param_groups]
        if s < n:
            opt.step()
            sched.step()
    print(' '.join(repr(v) for v in out))
def cosine(base, warm, total, min_lr, start):
    def f(s):
        if s < warm:
            return (start + (base - start) * s / warm) / base
        prog = min(1.0, (s - warm) / (total - warm))
        return (min_lr + (base - min_lr) * 0.5 * (1 + math.cos(math.pi * prog))) / base
    return f
o = groups(); show(o, torch.optim.lr_scheduler.LambdaLR(o, [cosine(0.1, 5, 25, 1e-3, 1e-4), cosine(0.01, 5, 25, 1e-3, 1e-4)]), 30)
o = groups(); show(o, torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=25, eta_min=1e-3), 25)
o = groups(); show(o, torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5), 30)
]]
    -- clip_grad_norm: three gradients, every norm type, clipping and not clipping
    math.randomseed(9)
    local clip_cases = {}
    for _, dtype in ipairs{"float64", "float32"} do
      for _, nt in ipairs{2, 1, 3, math.huge} do
        for _, max_norm in ipairs{0.5, 100} do
          local ps = {}
          local py = {}
          for i, shape in ipairs{{4, 3}, {5}, {2, 2, 2}} do
            ps[i] = lark.zeros(shape, {dtype = dtype, requires_grad = true})
            ps[i].grad = rand_tensor(shape, dtype, -2, 2)
            py[i] = string.format("torch.tensor(%s, dtype=torch.%s)", pylist(ps[i].grad), dtype)
          end
          local total = optim.clip_grad_norm(ps, max_norm, {norm_type = nt})
          clip_cases[#clip_cases + 1] = {ps = ps, total = total, tol = dtype == "float64" and 1e-10 or 1e-5,
                                         label = string.format("%s norm_type %s max_norm %s", dtype, nt, max_norm)}
          script = script .. string.format([==[
ps = [torch.zeros(g.shape, dtype=g.dtype, requires_grad=True) for g in [%s]]
for p, g in zip(ps, [%s]): p.grad = g
t = torch.nn.utils.clip_grad_norm_(ps, %s, norm_type=%s)
print(repr(float(t)))
print(' '.join(repr(v) for p in ps for v in p.grad.double().reshape(-1).tolist()))
]==], table.concat(py, ", "), table.concat(py, ", "), max_norm, nt == math.huge and "float('inf')" or nt)
        end
      end
    end
    local lines = run_python_numbers(script)
    for i, lrs in ipairs(got) do
      assert(lines[i] and type(lines[i][1]) == "number", "PyTorch printed: " .. table.concat(lines[i] or {"nothing"}, " "))
      local ok, err = pcall(assert_near, lrs, lines[i], 1e-12)
      assert(ok, "schedule " .. i .. ": " .. tostring(err))
    end
    local li = #got + 1
    for _, c in ipairs(clip_cases) do
      local ok, err = pcall(assert_near, c.total, lines[li][1], c.tol)
      assert(ok, c.label .. ", total norm: " .. tostring(err))
      local grads = {}
      for _, p in ipairs(c.ps) do
        for _, v in ipairs(flat_numbers(p.grad)) do grads[#grads + 1] = v end
      end
      ok, err = pcall(assert_near, grads, lines[li + 1], c.tol)
      assert(ok, c.label .. ", clipped grads: " .. tostring(err))
      li = li + 2
    end
  end)
end)

-- ---- state dicts, groups, schedulers, EMA ----------------------------------------------------------

describe("optimizer state", function()
  for _, c in ipairs{
    {"AdamW amsgrad", function(m) return optim.AdamW(optim.param_groups(m, {weight_decay = 0.1}), {lr = 1e-2, amsgrad = true}) end},
    {"SGD nesterov", function(m) return optim.SGD(m, {lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 1e-3}) end},
  } do
    it(c[1] .. ": 10 steps, state_dict, a fresh optimizer, 10 more steps equal 20 uninterrupted steps", function()
      math.randomseed(13)
      local a = Model("float32")
      local init = a:values()
      local seq = grad_sequence(20, "float32")
      local opt_a = c[2](a)
      local sched_a = optim.lr_scheduler.cosine(opt_a, {warmup_steps = 3, total_steps = 20})
      run(opt_a, a, seq, 1, 20, function() sched_a:step() end)

      local b = Model("float32", init)
      local opt_b = c[2](b)
      local sched_b = optim.lr_scheduler.cosine(opt_b, {warmup_steps = 3, total_steps = 20})
      run(opt_b, b, seq, 1, 10, function() sched_b:step() end)
      local sd, ssd = opt_b:state_dict(), sched_b:state_dict()
      -- a fresh model holding b's weights, a fresh optimizer and scheduler loading the dicts
      local fresh = Model("float32", b:values())
      local opt_c = c[2](fresh)
      local sched_c = optim.lr_scheduler.cosine(opt_c, {warmup_steps = 3, total_steps = 20})
      opt_c:load_state_dict(sd)
      sched_c:load_state_dict(ssd)
      -- loading copies: b's optimizer going on does not touch c's state
      run(opt_b, b, seq, 11, 11)
      run(opt_c, fresh, seq, 11, 20, function() sched_c:step() end)
      for _, name in ipairs(a.names) do assert_same(fresh.params[name], a.params[name], name) end
      assert.are.same(sched_a:get_lr(), sched_c:get_lr())
      -- the state is keyed by name, with per-parameter step counts where the optimizer keeps them
      if opt_a.type == "AdamW" then
        assert.are.equal(20, opt_a.state["fc1.weight"].step)
        assert.are.equal(19, opt_a.state["norm.weight"].step)
        assert.are.equal(18, opt_a.state["fc2.bias"].step)
        assert.truthy(opt_a.state["fc1.weight"].max_exp_avg_sq)
      else
        assert.truthy(opt_a.state["fc1.bias"].momentum_buffer)
      end
    end)
  end

  it("state_dict holds group hyper-parameters and names; a 0-d tensor step loads", function()
    local m = Model("float64")
    local opt = optim.AdamW(optim.param_groups(m, {weight_decay = 0.05}), {lr = 3e-3, betas = {0.8, 0.9}})
    run(opt, m, grad_sequence(2, "float64"), 1, 2)
    local sd = opt:state_dict()
    assert.are.equal("AdamW", sd.type)
    assert.are.same({"fc1.weight", "fc2.weight"}, sd.param_groups[1].params)
    assert.are.same({"fc1.bias", "norm.weight", "fc2.bias"}, sd.param_groups[2].params)
    assert.are.equal(0.05, sd.param_groups[1].weight_decay)
    assert.are.equal(0, sd.param_groups[2].weight_decay)
    assert.are.same({0.8, 0.9}, sd.param_groups[1].betas)
    assert.are.equal(2, sd.state["fc1.weight"].step)
    assert.are.equal(1, sd.state["norm.weight"].step)
    sd.param_groups[1].lr = 1e-4
    sd.state["fc1.weight"].step = lark.tensor(7, {dtype = "float32"})
    local opt2 = optim.AdamW(optim.param_groups(m, {weight_decay = 0.05}), {lr = 3e-3})
    opt2:load_state_dict(sd)
    assert.are.equal(1e-4, opt2.param_groups[1].lr)
    assert.are.equal(7, opt2.state["fc1.weight"].step)
    assert.are.same({0.8, 0.9}, opt2.param_groups[2].betas)
    assert.are_not.equal(sd.state["fc1.weight"].exp_avg, opt2.state["fc1.weight"].exp_avg)
    assert_same(opt2.state["fc1.weight"].exp_avg, sd.state["fc1.weight"].exp_avg, "exp_avg copied")
  end)

  it("step skips parameters without a gradient; zero_grad drops the gradients", function()
    local m = Model("float32")
    local before = m:values()
    local opt = optim.SGD(m, {lr = 0.1, momentum = 0.9})
    m.params["fc1.weight"].grad = lark.ones(5, 4)
    opt:step()
    assert.is_nil(opt.state["fc1.bias"])
    assert.truthy(opt.state["fc1.weight"].momentum_buffer)
    assert_same(m.params["fc1.bias"], before["fc1.bias"], "fc1.bias untouched")
    assert_near(m.params["fc1.weight"], before["fc1.weight"] - 0.1, 1e-6)
    opt:zero_grad()
    assert.is_nil(m.params["fc1.weight"].grad)
    m.params["fc1.weight"].grad = lark.ones(5, 4)
    opt:zero_grad(false)
    assert_same(m.params["fc1.weight"].grad, lark.zeros(5, 4), "zeroed in place")
    -- the lr of a group can be changed between steps
    opt.param_groups[1].lr = 0
    local now = m.params["fc1.weight"]:clone()
    m.params["fc1.weight"].grad = lark.ones(5, 4)
    opt:step()
    assert_same(m.params["fc1.weight"], now, "lr 0")
    -- a closure is called and its value returned
    assert.are.equal(42, opt:step(function() return 42 end))
  end)

  it("accepts a tensor, an array of tensors and groups without names", function()
    local a, b, c = lark.zeros(2), lark.zeros(3), lark.zeros(4)
    local o1 = optim.SGD(a, {lr = 1})
    assert.are.same({"1"}, o1.param_groups[1].names)
    local o2 = optim.AdamW({{params = {a, b}}, {params = {c}, lr = 5, weight_decay = 0}})
    assert.are.same({"1", "2"}, o2.param_groups[1].names)
    assert.are.same({"3"}, o2.param_groups[2].names)
    assert.are.equal(1e-3, o2.param_groups[1].lr)
    assert.are.equal(5, o2.param_groups[2].lr)
    assert.are.equal(1e-2, o2.param_groups[1].weight_decay)
    local o3 = optim.SGD({{params = {a}, names = {"w"}}}, {lr = 1})
    assert.are.same({"w"}, o3.param_groups[1].names)
    o3:add_param_group({params = {b}, names = {"v"}, lr = 2})
    assert.are.equal(2, o3.param_groups[2].lr)
    assert.are.equal(0, o3.param_groups[2].momentum)
  end)

  it("param_groups splits decay from no-decay parameters", function()
    local m = Model("float32")
    m.params["fc2.bias"] = lark.zeros(3, 3)     -- 2-D but named .bias: no decay
    m.params["fc2.bias"].requires_grad = true
    local frozen = lark.zeros(2, 2)              -- requires_grad false: left out
    table.insert(m.names, "frozen.weight")
    m.params["frozen.weight"] = frozen
    local g = optim.param_groups(m, {weight_decay = 0.05})
    assert.are.same({"fc1.weight", "fc2.weight"}, g[1].names)
    assert.are.equal(0.05, g[1].weight_decay)
    assert.are.same({"fc1.bias", "norm.weight", "fc2.bias"}, g[2].names)
    assert.are.equal(0, g[2].weight_decay)
    local custom = optim.param_groups(m, {no_decay = function(name) return name:find("norm") ~= nil end})
    assert.are.same({"norm.weight"}, custom[2].names)
    assert.is_nil(custom[1].weight_decay) -- the optimizer's default then
    assert.are.equal(1e-2, optim.AdamW(custom).param_groups[1].weight_decay)
  end)

  it("schedules: the pure functions and the scheduler objects", function()
    local S = optim.lr_scheduler
    local o = {warmup_steps = 4, total_steps = 14, min_lr = 0.01, warmup_start_lr = 0}
    assert_near(S.cosine_lr(0, 1, o), 0, 1e-15)
    assert_near(S.cosine_lr(2, 1, o), 0.5, 1e-15)
    assert_near(S.cosine_lr(4, 1, o), 1, 1e-15)
    assert_near(S.cosine_lr(9, 1, o), 0.01 + 0.99 * 0.5, 1e-15)
    assert_near(S.cosine_lr(14, 1, o), 0.01, 1e-15)
    assert_near(S.cosine_lr(100, 1, o), 0.01, 1e-15)
    assert_near(S.step_lr(13, 2, {step_size = 5, gamma = 0.5}), 0.5, 1e-15)
    assert_near(S.constant_lr(1, 2, {warmup_steps = 4}), 0.5, 1e-15)
    assert_near(S.constant_lr(9, 2, {}), 2, 1e-15)
    local opt = optim.SGD(lark.zeros(1), {lr = 0.4})
    local sched = S.constant(opt)
    sched:step()
    assert.are.same({0.4}, sched:get_lr())
    local lam = S.lambda(opt, function(step, base) return base / (step + 1) end)
    lam:step()
    assert.are.same({0.2}, lam:get_lr())
    assert.are.equal(0.2, opt.param_groups[1].lr)
  end)

  it("ModelEma averages parameters and buffers, round-trips its state and copies into a model", function()
    local m = Model("float64")
    local ema = optim.ModelEma(m, {decay = 0.9})
    local e0 = m:values()
    -- the model moves; the EMA follows by 10% per update
    for _, name in ipairs(m.names) do m.params[name]:detach():add_(1) end
    m.buffers["norm.running_mean"]:add_(2)
    m.buffers["norm.num_batches_tracked"]:fill_(11)
    ema:update(m)
    for _, name in ipairs(m.names) do
      assert_near(ema.tensors[name], e0[name] * 0.9 + m.params[name] * 0.1, 1e-14)
    end
    assert_same(ema.tensors["norm.num_batches_tracked"], {11}, "integer buffer copied")
    ema:update(m, 0) -- decay 0: a copy
    assert_same(ema.tensors["fc1.weight"], m.params["fc1.weight"], "decay 0")
    local sd = ema:state_dict()
    assert.truthy(sd["norm.running_mean"])
    local other = optim.ModelEma(Model("float64"))
    other:load_state_dict(sd)
    assert_same(other.tensors["fc2.weight"], m.params["fc2.weight"], "loaded")
    local target = Model("float64")
    other:copy_to(target)
    assert_same(target.params["norm.weight"], m.params["norm.weight"], "copied to a model")
    assert_same(target.buffers["norm.num_batches_tracked"], {11}, "buffer copied to a model")
    assert.is_true(target.params["norm.weight"].requires_grad)
    -- float32 model, the default decay
    local m32 = Model("float32")
    local e32 = optim.ModelEma(m32)
    local start = m32.params["fc1.weight"]:double()
    m32.params["fc1.weight"]:detach():add_(1)
    e32:update(m32)
    assert_near(e32.tensors["fc1.weight"], start + 1e-4, 1e-6)
  end)
end)

-- ---- errors ------------------------------------------------------------------------------------------

describe("optim errors", function()
  it("names what is wrong in the constructors", function()
    local p = lark.zeros(3)
    expect_error("SGD: option lr is required", optim.SGD, {p})
    expect_error("SGD: lr is -1 (expected a number >= 0)", optim.SGD, {p}, {lr = -1})
    expect_error("SGD: nesterov needs momentum > 0 and dampening == 0", optim.SGD, {p}, {lr = 1, nesterov = true})
    expect_error("AdamW: unknown option 'lrr' (expected one of", optim.AdamW, {p}, {lrr = 1})
    expect_error("AdamW: betas[2] is 1 (expected 0 <= beta2 < 1)", optim.AdamW, {p}, {betas = {0.9, 1}})
    expect_error("AdamW: got an empty parameter list", optim.AdamW, {})
    expect_error("AdamW: parameter '2' appears more than once (also as '1')", optim.AdamW, {p, p})
    expect_error("AdamW: parameter '1' is int64 (expected float32 or float64)", optim.AdamW, {lark.zeros(2, {dtype = "int64"})})
    expect_error("AdamW: two parameters are named 'w'", optim.AdamW, {{params = {p, lark.zeros(1)}, names = {"w", "w"}}})
    expect_error("entry 2 of the parameters is a string (expected a Tensor)", optim.SGD, {p, "x"}, {lr = 1})
    expect_error("lr_scheduler.cosine: total_steps is nil (expected an integer >= 1)", optim.lr_scheduler.cosine,
      optim.SGD(p, {lr = 1}), {warmup_steps = 2})
    expect_error("lr_scheduler.cosine: warmup_steps (5) is more than total_steps (3)", optim.lr_scheduler.cosine,
      optim.SGD(p, {lr = 1}), {warmup_steps = 5, total_steps = 3})
    expect_error("ModelEma: decay is 2 (expected a number in [0, 1])", optim.ModelEma, Model("float32"), {decay = 2})
    expect_error("clip_grad_norm: unknown option 'norm'", optim.clip_grad_norm, {p}, 1, {norm = 2})
  end)

  it("names the parameter in the update errors", function()
    local m = Model("float32")
    local opt = optim.AdamW(m)
    m.params["fc1.bias"].grad = lark.zeros(5, {dtype = "float64"})
    expect_error("adamw_step: parameter 'fc1.bias': its grad is float64 but the parameter is float32", opt.step, opt)
    assert.is_nil(opt.state["fc1.bias"]) -- a failed step changes nothing
    local a, g = lark.zeros(3), lark.zeros(4)
    expect_error("sgd_step: parameter 'w': its grad has shape [4] but the parameter has shape [3]",
      lark.sgd_step_, {a}, {g}, nil, {lr = 1}, {"w"})
    expect_error("sgd_step: parameter 0: the parameter is not contiguous",
      lark.sgd_step_, {lark.zeros(3, 4):t()}, {lark.zeros(4, 3)}, nil, {lr = 1})
    expect_error("adamw_step: parameter 'w': its exp_avg has shape [4] but the parameter has shape [3]",
      lark.adamw_step_, {a}, {a:clone()}, {g}, {false}, nil, {1}, {lr = 1}, {"w"})
    expect_error("adamw_step: parameter 0: step 0 (expected the count of this update, >= 1)",
      lark.adamw_step_, {a}, {a:clone()}, {false}, {false}, nil, {0}, {lr = 1})
    expect_error("sgd_step_: argument 2 (grads): 2 tensors for 1 parameters", lark.sgd_step_, {a}, {a, a}, nil, {lr = 1})
    expect_error("lerp_list_: parameter 'x': the source is float64 but the destination float32", lark.lerp_list_,
      {a}, {a:double()}, 0.5, {"x"})
    expect_error("clip_grad_norm: norm_type is -1 (expected a number > 0 or inf)", optim.clip_grad_norm, m, 1,
      {norm_type = -1})
    m.params["fc1.bias"].grad = lark.tensor({1, 0 / 0, 0, 0, 0})
    expect_error("the total norm of order 2 of the gradients is", optim.clip_grad_norm, m, 1, {error_if_nonfinite = true})
    if lark.cuda.is_available() then
      local c = lark.zeros(3):cuda()
      expect_error("sgd_step: not implemented for cuda", lark.sgd_step_, {c}, {c}, nil, {lr = 1})
    end
  end)

  it("load_state_dict refuses unknown names, other shapes and other group layouts", function()
    local m = Model("float32")
    local opt = optim.AdamW(m)
    run(opt, m, grad_sequence(1, "float32"), 1, 1)
    local sd = opt:state_dict()
    sd.state["nope"] = {step = 1}
    expect_error("AdamW:load_state_dict: state for unknown parameter 'nope'", opt.load_state_dict, opt, sd)
    sd.state["nope"] = nil
    sd.state["fc1.weight"] = {step = 1, exp_avg = lark.zeros(2)}
    expect_error("AdamW:load_state_dict: exp_avg of 'fc1.weight' has shape [2] but the parameter has shape [5,4]",
      opt.load_state_dict, opt, sd)
    local two = optim.AdamW(optim.param_groups(m))
    expect_error("AdamW:load_state_dict: the state dict has 1 parameter groups, this optimizer 2",
      two.load_state_dict, two, opt:state_dict())
    local other = optim.AdamW({{params = {m.params["fc1.weight"]}, names = {"x"}}})
    expect_error("lists parameter 'fc1.weight', which is not in this optimizer's group 1", other.load_state_dict, other,
      optim.AdamW({{params = {m.params["fc1.weight"]}, names = {"fc1.weight"}}}):state_dict())
    expect_error("AdamW:load_state_dict: the state dict is for SGD, this optimizer is AdamW", opt.load_state_dict, opt,
      optim.SGD(m, {lr = 1}):state_dict())
    local ema = optim.ModelEma(m)
    expect_error("ModelEma:load_state_dict: 'fc1.weight' is missing", ema.load_state_dict, ema, {})
    expect_error("ModelEma:load_state_dict: unknown name 'zzz'", ema.load_state_dict, ema, {zzz = lark.zeros(1)})
  end)
end)
