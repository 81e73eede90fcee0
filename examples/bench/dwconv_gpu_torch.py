#!/usr/bin/env python3
"""examples/bench/dwconv_gpu_torch.py: the PyTorch twin of dwconv_gpu.lua (which runs it in the same
run and prints both). Usable alone:

    python3 examples/bench/dwconv_gpu_torch.py [--R 32] [--K 31] [--reps 5] [--table 0|1] [--slak 0|1]

Cases, exactly those of dwconv_gpu.lua:
  - RepLKNet Table 1: `layers` (24) depth-wise layers in a chain, input (N, C, R, R) = (64, 384, R, R),
    float32, K x K kernels, stride 1, padding K//2, no bias; R in {16, 32, 64}, K in --Ks.
  - SLaK: `blocks` (3) blocks in a chain, each 51x5 + 5x51 + 5x5 depth-wise on the same input, summed
    (paddings (25, 2), (2, 25), (2, 2)); (N, 124, 56, 56) (SLaK-T stage 1) and (N, 249, 28, 28) (stage 2).
Passes: "fwd" (under no_grad) and "fwdbwd" (forward, then backward of y with a random gradient:
weight gradients of every layer, input gradients of all but the first layer, the input itself
needing none).

Timing: torch.cuda.synchronize() before and after each run, wall clock between, median of --reps
runs after --warmup runs. cudnn.benchmark on, TF32 off (an exact FP32 comparison; PyTorch sends
FP32 depth-wise convolutions to its own kernel anyway, not to cuDNN) unless --precision high
(TF32 allowed) or medium (every chain under torch.autocast to bfloat16).

Output, one line each: "info <json>" (GPU, versions), then "result <kind> <R> <K> <pass> <seconds>"
(kind "replk" or "slak"; K is 51 for SLaK). Without torch or CUDA: "info no-torch <why>" and exit 0.
"""
import argparse
import contextlib
import json
import statistics
import sys
import time


def parse_list(s):
    return [int(v) for v in s.split(",") if v]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=64)
    ap.add_argument("--C", type=int, default=384)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--Rs", default="16,32,64")
    ap.add_argument("--Ks", default="3,5,7,9,13,17,21,27,29,31")
    ap.add_argument("--R", type=int, default=0, help="one R only (0: all)")
    ap.add_argument("--K", type=int, default=0, help="one K only (0: all)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--table", type=int, default=1, help="run the RepLKNet Table 1 cases")
    ap.add_argument("--slak", type=int, default=1, help="run the SLaK cases")
    ap.add_argument("--slak_N", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--fwdbwd", type=int, default=1, help="also time forward + backward")
    ap.add_argument("--precision", default="highest", choices=["highest", "high", "medium"],
                    help="highest: exact FP32; high: TF32 allowed; medium: autocast to bfloat16")
    args = ap.parse_args()

    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001 - any import failure means "no torch here"
        print("info no-torch %s" % str(e).replace("\n", " "))
        return 0
    if not torch.cuda.is_available():
        print("info no-torch torch %s has no CUDA device" % torch.__version__)
        return 0

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    tf32 = args.precision != "highest"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    # medium: the chains run under autocast to bfloat16 (what a PyTorch user runs for speed)
    def amp():
        if args.precision == "medium":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()
    props = torch.cuda.get_device_properties(dev)
    print("info " + json.dumps({
        "gpu": props.name, "sms": props.multi_processor_count, "memory_gb": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }), flush=True)

    def timeit(fn):
        for _ in range(args.warmup):
            with amp():
                fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(args.reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with amp():
                fn()
            torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    def report(kind, R, K, name, seconds):
        print("result %s %d %d %s %.9f" % (kind, R, K, name, seconds), flush=True)

    g = torch.Generator(device=dev)
    g.manual_seed(0)

    def randn(*shape, grad=False):
        t = torch.randn(*shape, device=dev, generator=g)
        return t.requires_grad_(grad)

    # ---- RepLKNet Table 1 ----
    if args.table:
        N, C = args.N, args.C
        for R in parse_list(args.Rs):
            if args.R and R != args.R:
                continue
            for K in parse_list(args.Ks):
                if args.K and K != args.K:
                    continue
                x = randn(N, C, R, R)
                ws = [randn(C, 1, K, K, grad=True) for _ in range(args.layers)]

                def forward():
                    y = x
                    for w in ws:
                        y = F.conv2d(y, w, None, 1, K // 2, 1, C)
                    return y

                def fwd():
                    with torch.no_grad():
                        forward()

                report("replk", R, K, "fwd", timeit(fwd))
                if args.fwdbwd:
                    gy = randn(N, C, R, R)

                    def fwdbwd():
                        for w in ws:
                            w.grad = None
                        forward().backward(gy)

                    report("replk", R, K, "fwdbwd", timeit(fwdbwd))
                    del gy
                del x, ws
                torch.cuda.empty_cache()

    # ---- SLaK: 51x5 + 5x51 + 5x5 ----
    if args.slak:
        N = args.slak_N
        for R, C in ((56, 124), (28, 249)):
            if args.R and R != args.R:
                continue
            x = randn(N, C, R, R)
            kernels = ((51, 5), (5, 51), (5, 5))
            blocks = [[randn(C, 1, kh, kw, grad=True) for kh, kw in kernels] for _ in range(args.blocks)]

            def forward():
                y = x
                for ws in blocks:
                    s = None
                    for w, (kh, kw) in zip(ws, kernels):
                        o = F.conv2d(y, w, None, 1, (kh // 2, kw // 2), 1, C)
                        s = o if s is None else s + o
                    y = s
                return y

            def fwd():
                with torch.no_grad():
                    forward()

            report("slak", R, 51, "fwd", timeit(fwd))
            if args.fwdbwd:
                gy = randn(N, C, R, R)

                def fwdbwd():
                    for ws in blocks:
                        for w in ws:
                            w.grad = None
                    forward().backward(gy)

                report("slak", R, 51, "fwdbwd", timeit(fwdbwd))
                del gy
            del x, blocks
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
