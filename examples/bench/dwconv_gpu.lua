-- examples/bench/dwconv_gpu.lua: the depth-wise convolution on the GPU beside PyTorch, in one run.
--
--   build/bin/lark examples/bench/dwconv_gpu.lua [--R 32] [--K 31] [--reps 5] [--warmup 1]
--       [--table 0|1] [--slak 0|1] [--fwdbwd 0|1] [--layers 24] [--N 64] [--save 1] [--no-torch]
--       [--precision highest|high|medium]
--
-- Cases (shared/reference/GPU.md):
--   - RepLKNet Table 1: 24 depth-wise layers in a chain, input (64, 384, R, R) float32, K x K kernels,
--     stride 1, padding K//2, no bias; R in {16, 32, 64}, K in {3, 5, 7, 9, 13, 17, 21, 27, 29, 31}.
--   - SLaK: 3 blocks in a chain, each 51x5 + 5x51 + 5x5 on the same input, summed
--     (lark.dwconv2d_sum); (64, 124, 56, 56) (SLaK-T stage 1) and (64, 249, 28, 28) (stage 2).
-- --R / --K pick one map size / kernel size (a --K leaves SLaK out). PT/lark > 1: lark is faster.
-- Passes: "fwd", and "fwdbwd": the forward pass keeping every activation, then the backward pass
-- that autograd would run (each layer's weight gradient, the input gradient of every layer but the
-- first). PyTorch runs the same chain with F.conv2d and autograd (examples/bench/dwconv_gpu_torch.py,
-- started from here with /usr/bin/python3, else python3; its results are read back and printed
-- beside ours).
--
-- Timing: lark.cuda.synchronize() before and after each run, wall clock between, median of --reps
-- runs after --warmup runs; PyTorch the same with torch.cuda.synchronize(). TFLOP/s count 2 flops
-- per multiply-add over all taps, and (in-bounds) over the taps that touch the real map, as GPU.md
-- does; fwdbwd counts the passes it runs.
-- Precision: by default ("highest") both sides are exact FP32 (TF32 off in PyTorch). --precision high
-- runs lark's TF32 tensor-core kernels (lark.set_float32_matmul_precision("high")) and PyTorch with
-- TF32 allowed (its depth-wise kernel has no TF32 path, so it stays FP32); --precision medium runs
-- lark's BF16 tensor-core kernels (float32 tensors, BF16 products, float32 sums) and PyTorch under
-- torch.autocast(bfloat16), which is what a PyTorch user would run for speed (BF16 tensors).
-- --save 1 writes the rows, with the GPU and versions PyTorch reports, to
-- examples/bench/dwconv_gpu_results.json. Without a GPU it says so and exits 0.
local here = arg[0]:match("^(.*/)") or "./"
package.path = here .. "?.lua;" .. package.path
local lark = require "lark"
local util = require "bench_util"

local opts = util.options(arg, {reps = 5, warmup = 1, R = 0, K = 0, N = 64, C = 384, layers = 24, table = 1,
                                slak = 1, slak_N = 64, blocks = 3, fwdbwd = 1, save = 0, precision = "highest"})
lark.set_float32_matmul_precision(opts.precision) -- checks the name before any GPU work
if not lark.cuda.is_available() then
  print("dwconv_gpu: no CUDA device (lark.cuda.is_available() is false): nothing to measure on this machine")
  os.exit(0)
end

local RS = {16, 32, 64}
local KS = {3, 5, 7, 9, 13, 17, 21, 27, 29, 31}
local SLAK = {{56, 124}, {28, 249}}
local SLAK_KERNELS = {{51, 5}, {5, 51}, {5, 5}}

-- taps of a kh x kw kernel, padded (kh//2, kw//2), that touch a real element of an R x R map
local function real_taps(R, kh, kw)
  local function line(n, k)
    local s, p = 0, k // 2
    for o = 0, n - 1 do s = s + math.max(0, math.min(k, n + p - o) - math.max(0, p - o)) end
    return s
  end
  return line(R, kh) * line(R, kw)
end

-- ---- PyTorch, first (the two never share the GPU) ------------------------------------------------

local torch_res, torch_info = {}, nil
if opts.torch then
  local args = string.format("--N %d --C %d --layers %d --R %d --K %d --reps %d --warmup %d --table %d --slak %d " ..
                             "--slak_N %d --blocks %d --fwdbwd %d --precision %s", opts.N, opts.C, opts.layers, opts.R,
                             opts.K, opts.reps, opts.warmup, opts.table, opts.slak, opts.slak_N, opts.blocks,
                             opts.fwdbwd, opts.precision)
  for _, py in ipairs({"/usr/bin/python3", "python3"}) do
    local p = io.popen(py .. " " .. here .. "dwconv_gpu_torch.py " .. args .. " 2>&1")
    local got, why = false, nil
    for line in p:lines() do
      local kind, R, K, pass, s = line:match("^result (%S+) (%d+) (%d+) (%S+) (%S+)$")
      if kind then
        torch_res[kind .. "/" .. R .. "/" .. K .. "/" .. pass] = tonumber(s)
        got = true
      elseif line:match("^info no%-torch") then
        why = line:sub(6)
      elseif line:match("^info ") then
        torch_info = line:sub(6)
      end
    end
    p:close()
    if got then break end
    print(string.format("PyTorch via %s: %s", py, why or "no results"))
  end
end

-- ---- timing -------------------------------------------------------------------------------------

local function time_gpu(fn)
  for _ = 1, opts.warmup do fn() end
  lark.cuda.synchronize()
  local ts = {}
  for r = 1, opts.reps do
    lark.cuda.synchronize()
    local t0 = lark.clock()
    fn()
    lark.cuda.synchronize()
    ts[r] = lark.clock() - t0
  end
  return util.median(ts)
end

local rows = {}
local function report(kind, R, K, pass, s, flops, inb_flops)
  local ts = torch_res[kind .. "/" .. R .. "/" .. K .. "/" .. pass]
  local line = string.format("%4d %4s %-7s %10.3f %8.2f %8.2f", R, kind == "slak" and "51x5" or tostring(K), pass,
    s * 1e3, flops / s / 1e12, inb_flops / s / 1e12)
  if ts then line = line .. string.format(" %11.3f %8.2f %9.2fx", ts * 1e3, flops / ts / 1e12, ts / s) end
  print(line)
  rows[#rows + 1] = {kind = kind, R = R, K = K, pass = pass, lark_ms = s * 1e3, torch_ms = ts and ts * 1e3,
                     tflops = flops / s / 1e12, tflops_inbounds = inb_flops / s / 1e12}
end

local HEADER = string.format("%4s %4s %-7s %10s %8s %8s %11s %8s %10s", "R", "K", "pass", "lark ms", "TFLOP/s",
  "in-bnds", "PyTorch ms", "TFLOP/s", "PT/lark")

local PRECISION = {highest = "exact FP32", high = "TF32 tensor cores (PyTorch: TF32 allowed)",
                   medium = "BF16 tensor cores (PyTorch: autocast to bfloat16)"}
print(string.format("depth-wise conv2d on the GPU, float32 tensors, %s, median of %d runs after %d warm-up%s",
  PRECISION[opts.precision], opts.reps, opts.warmup, torch_info and ("; PyTorch " .. torch_info) or (opts.torch and "; PyTorch: not available" or "")))

-- a randn tensor made on the CPU and moved (random fills on the GPU are another backend's business)
local function randn_gpu(...) return lark.randn(...):cuda() end

-- ---- RepLKNet Table 1 ---------------------------------------------------------------------------

local function picked(list, v)
  for _, x in ipairs(list) do if v == 0 or v == x then return true end end
  return false
end

if opts.table == 1 and picked(RS, opts.R) and picked(KS, opts.K) then
  local N, C, L = opts.N, opts.C, opts.layers
  print(string.format("\nRepLKNet Table 1: %d layers, input (%d, %d, R, R), K x K, padding K//2", L, N, C))
  print(HEADER)
  for _, R in ipairs(RS) do
    if opts.R == 0 or opts.R == R then
      for _, K in ipairs(KS) do
        if opts.K == 0 or opts.K == K then
          local p = {padding = K // 2}
          local x = randn_gpu(N, C, R, R)
          local ws = {}
          for l = 1, L do ws[l] = randn_gpu(C, 1, K, K) end
          local fwd_flops = 2 * L * N * C * R * R * K * K
          local inb = 2 * L * N * C * real_taps(R, K, K)
          local function fwd()
            local y = x
            for l = 1, L do
              local z = lark.dwconv2d(y, ws[l], nil, p)
              if not rawequal(y, x) then y:free() end
              y = z
            end
            y:free()
          end
          report("replk", R, K, "fwd", time_gpu(fwd), fwd_flops, inb)
          if opts.fwdbwd == 1 then
            local gy = randn_gpu(N, C, R, R)
            local size = {N, C, R, R}
            local function fwdbwd()
              local acts = {x}
              for l = 1, L do acts[l + 1] = lark.dwconv2d(acts[l], ws[l], nil, p) end
              local g = gy
              for l = L, 1, -1 do
                lark.dwconv2d_backward_weight(g, acts[l], K, p):free()
                local gi = l > 1 and lark.dwconv2d_backward_input(g, ws[l], size, p) or nil
                if not rawequal(g, gy) then g:free() end
                acts[l + 1]:free()
                g = gi
              end
            end
            local mult = 2 + (L - 1) / L -- forward, weight gradients, input gradients but the first
            report("replk", R, K, "fwdbwd", time_gpu(fwdbwd), mult * fwd_flops, mult * inb)
            gy:free()
          end
          x:free()
          for l = 1, L do ws[l]:free() end
          collectgarbage()
        end
      end
    end
  end
end

-- ---- SLaK: 51x5 + 5x51 + 5x5 --------------------------------------------------------------------

if opts.slak == 1 and picked({56, 28}, opts.R) and opts.K == 0 then
  local N, B = opts.slak_N, opts.blocks
  print(string.format("\nSLaK: %d blocks of 51x5 + 5x51 + 5x5 (summed, one lark.dwconv2d_sum), input (%d, C, R, R)",
    B, N))
  print(HEADER)
  for _, sc in ipairs(SLAK) do
    local R, C = sc[1], sc[2]
    if opts.R == 0 or opts.R == R then
      local x = randn_gpu(N, C, R, R)
      local blocks = {}
      local fwd_flops, inb = 0, 0
      for b = 1, B do
        blocks[b] = {}
        for k, kk in ipairs(SLAK_KERNELS) do
          blocks[b][k] = randn_gpu(C, 1, kk[1], kk[2])
          fwd_flops = fwd_flops + 2 * N * C * R * R * kk[1] * kk[2]
          inb = inb + 2 * N * C * real_taps(R, kk[1], kk[2])
        end
      end
      local size = {N, C, R, R}
      local function fwd()
        local y = x
        for b = 1, B do
          local z = lark.dwconv2d_sum(y, blocks[b]) -- no options: (kh//2, kw//2) padding each
          if not rawequal(y, x) then y:free() end
          y = z
        end
        y:free()
      end
      report("slak", R, 51, "fwd", time_gpu(fwd), fwd_flops, inb)
      if opts.fwdbwd == 1 then
        local gy = randn_gpu(N, C, R, R)
        local function fwdbwd()
          local acts = {x}
          for b = 1, B do acts[b + 1] = lark.dwconv2d_sum(acts[b], blocks[b]) end
          local g = gy
          for b = B, 1, -1 do
            for k, kk in ipairs(SLAK_KERNELS) do
              lark.dwconv2d_backward_weight(g, acts[b], kk, {padding = {kk[1] // 2, kk[2] // 2}}):free()
            end
            local gi = b > 1 and lark.dwconv2d_sum_backward_input(g, blocks[b], size) or nil
            if not rawequal(g, gy) then g:free() end
            acts[b + 1]:free()
            g = gi
          end
        end
        local mult = 2 + (B - 1) / B
        report("slak", R, 51, "fwdbwd", time_gpu(fwdbwd), mult * fwd_flops, mult * inb)
        gy:free()
      end
      x:free()
      for b = 1, B do for k = 1, #SLAK_KERNELS do blocks[b][k]:free() end end
      collectgarbage()
    end
  end
end

-- ---- results as JSON ----------------------------------------------------------------------------

if opts.save == 1 then
  local function num(v) return v and string.format("%.6g", v) or "null" end
  local parts = {}
  for i, r in ipairs(rows) do
    parts[i] = string.format('    {"kind": "%s", "R": %d, "K": %d, "pass": "%s", "lark_ms": %s, "torch_ms": %s, ' ..
                             '"tflops": %s, "tflops_inbounds": %s}', r.kind, r.R, r.K, r.pass, num(r.lark_ms),
                             num(r.torch_ms), num(r.tflops), num(r.tflops_inbounds))
  end
  local path = here .. "dwconv_gpu_results.json"
  local f = assert(io.open(path, "w"))
  f:write(string.format('{\n  "torch_info": %s,\n  "precision": "%s", "N": %d, "C": %d, "layers": %d, "reps": %d,\n' ..
    '  "rows": [\n%s\n  ]\n}\n', torch_info or "null", opts.precision, opts.N, opts.C, opts.layers, opts.reps,
    table.concat(parts, ",\n")))
  f:close()
  print("\nwrote " .. path)
end
