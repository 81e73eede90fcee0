-- parity_spec.lua: lark against PyTorch (Debian's python3-torch, run as /usr/bin/python3) on the
-- same random inputs: every output and every input gradient, in float64 (relative error 1e-10)
-- and float32 (1e-5). Each case is a lark function and the same computation written for torch.
local run_torch = run_python -- spec/helper.lua



-- {name, shapes of the inputs, lark fn, torch expression over a, b, c; positive = inputs > 0}
local cases = {
  {"add broadcast", {{3, 1}, {4}}, function(a, b) return a + b end, "a + b"},
  {"sub", {{2, 3}, {2, 3}}, function(a, b) return a - b end, "a - b"},
  {"mul broadcast", {{2, 3, 4}, {3, 1}}, function(a, b) return a * b end, "a * b"},
  {"div", {{2, 3}, {2, 3}}, function(a, b) return a / b end, "a / b", positive = true},
  {"pow", {{2, 3}, {2, 3}}, function(a, b) return a ^ b end, "a ** b", positive = true},
  {"maximum", {{5}, {5}}, function(a, b) return lark.maximum(a, b) end, "torch.maximum(a, b)"},
  {"scalars", {{4}}, function(a) return 2 - a * 3 + a / 4 end, "2 - a * 3 + a / 4"},
  {"neg abs", {{6}}, function(a) return (-a):abs() end, "(-a).abs()"},
  {"exp log", {{2, 3}}, function(a) return a:exp() + a:log() end, "a.exp() + a.log()", positive = true},
  {"sqrt rsqrt", {{2, 3}}, function(a) return a:sqrt() * a:rsqrt() + a:sqrt() end, "a.sqrt() * a.rsqrt() + a.sqrt()",
    positive = true},
  {"sin cos tanh", {{7}}, function(a) return a:sin() + a:cos() * a:tanh() end, "a.sin() + a.cos() * a.tanh()"},
  {"sigmoid relu", {{7}}, function(a) return a:sigmoid() + a:relu() end, "a.sigmoid() + a.relu()"},
  {"clamp", {{9}}, function(a) return a:clamp(-0.5, 0.5) end, "a.clamp(-0.5, 0.5)"},
  {"where", {{3, 4}, {3, 4}}, function(a, b) return lark.where(a:gt(b), a, b * 2) end,
    "torch.where(a > b, a, b * 2)"},
  {"matmul batched", {{2, 3, 4}, {4, 5}}, function(a, b) return lark.matmul(a, b) end, "torch.matmul(a, b)"},
  {"matmul vec", {{4}, {3, 4, 2}}, function(a, b) return lark.matmul(a, b) end, "torch.matmul(a, b)"},
  {"sum dims", {{2, 3, 4}}, function(a) return a:sum({1, 3}) end, "a.sum((0, 2))"},
  {"mean keepdim", {{2, 3, 4}}, function(a) return a:mean(2, true) end, "a.mean(1, keepdim=True)"},
  {"var", {{3, 5}}, function(a) return a:var(2) end, "a.var(1)"},
  {"std biased", {{3, 5}}, function(a) return a:std(1, false) end, "a.std(0, unbiased=False)"},
  {"norm", {{3, 4}}, function(a) return a:norm() + a:norm(1) end, "a.norm() + a.norm(1)"},
  {"max dim", {{3, 5}}, function(a) local v = a:max(2); return v end, "a.max(1).values"},
  {"views", {{2, 3, 4}}, function(a) return a:transpose(1, 3):narrow(2, 2, 2):reshape(-1) end,
    "a.transpose(0, 2).narrow(1, 1, 2).reshape(-1)"},
  {"cat", {{2, 3}, {1, 3}}, function(a, b) return lark.cat({a, b, a}, 1) end, "torch.cat([a, b, a], 0)"},
  {"cumsum", {{3, 4}}, function(a) return a:cumsum(2) end, "a.cumsum(1)"},
  {"prod", {{3, 4}}, function(a) return a:prod(2) + a:prod() end, "a.prod(1) + a.prod()"},
  {"gather", {{3, 4}}, function(a)
    return a:gather(2, lark.tensor({{1, 4}, {2, 2}, {3, 1}}, {dtype = "int64"}))
  end, "a.gather(1, torch.tensor([[0, 3], [1, 1], [2, 0]]))"},
}



describe("parity with PyTorch", function()
  if not have_torch() then
    pending("python3-torch is not installed (apt-get install python3-torch): PyTorch parity skipped")
    return
  end

  for _, dtype in ipairs{"float64", "float32"} do
    it("matches outputs and gradients of " .. #cases .. " expressions in " .. dtype, function()
      local tol = dtype == "float64" and 1e-10 or 1e-5
      local script = {"import torch", "torch.set_printoptions(precision=17)", "out = []"}
      local lark_results = {}
      math.randomseed(7)
      for k, c in ipairs(cases) do
        local shapes, fn, expr = c[2], c[3], c[4]
        local inputs, names = {}, {"a", "b", "c"}
        for i, shape in ipairs(shapes) do
          local lo, hi = c.positive and 0.5 or -1, c.positive and 2 or 1
          local t = lark.tensor(rand_table(shape, lo, hi), {dtype = dtype})
          t.requires_grad = true
          inputs[i] = t
          script[#script + 1] = string.format("%s = torch.tensor([%s], dtype=torch.%s).reshape(%s).requires_grad_()",
            names[i], table.concat(values_of(t), ","), dtype, #shape > 0 and table.concat(shape, ",") or "()")
        end
        local y = fn(table.unpack(inputs))
        -- a fixed weighting of the output, so that every gradient depends on every output element
        local n = y:numel()
        local w, wn = {}, {}
        for i = 1, n do
          wn[i] = 0.5 + (i % 7) / 10
          w[i] = string.format("%.17g", wn[i])
        end
        local wt = lark.tensor(wn, {dtype = dtype}):view(y:size())
        local loss = (y * wt):sum()
        local grads = lark.autograd.grad(loss, inputs)
        lark_results[k] = {y = values_of(y), grads = {}}
        for i = 1, #inputs do lark_results[k].grads[i] = grads[i] and values_of(grads[i]) or nil end
        script[#script + 1] = string.format("y = %s", expr)
        script[#script + 1] = string.format("w = torch.tensor([%s], dtype=torch.%s).reshape(y.shape)",
          table.concat(w, ","), dtype)
        script[#script + 1] = string.format("gs = torch.autograd.grad((y * w).sum(), [%s], allow_unused=True)",
          table.concat(names, ",", 1, #inputs))
        script[#script + 1] = "print(' '.join(repr(v) for v in y.detach().double().reshape(-1).tolist()))"
        script[#script + 1] = "for g in gs: print(' '.join(repr(v) for v in (g.double().reshape(-1).tolist() if g is not None else [])))"
      end
      local lines = run_torch(table.concat(script, "\n") .. "\n")
      local li = 1
      for k, c in ipairs(cases) do
        local function compare(what, got)
          local line = lines[li]
          li = li + 1
          assert(line, "PyTorch printed too few lines (at " .. c[1] .. ")")
          local want = {}
          for v in line:gmatch("%S+") do want[#want + 1] = tonumber(v) end
          local have = {}
          for i, v in ipairs(got or {}) do have[i] = tonumber(v) end
          if #want == 0 and #have > 0 then
            for i = 1, #have do want[i] = 0 end
          end
          local ok, err = pcall(assert_near, have, want, tol)
          assert(ok, string.format("%s, %s (%s): %s", c[1], what, dtype, tostring(err)))
        end
        compare("output", lark_results[k].y)
        for i = 1, #c[2] do compare("gradient " .. i, lark_results[k].grads[i]) end
      end
    end)
  end
end)
