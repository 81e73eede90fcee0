#!/usr/bin/python3
"""pth2h5.py: converts a PyTorch checkpoint (.pth) to lark's HDF5 layout (lark.load reads it).

    /usr/bin/python3 tools/pth2h5.py RepLKNet-31B_ImageNet-1K_224.pth replknet31b.h5 --arch replknet31b
    /usr/bin/python3 tools/pth2h5.py ckpt.pth out.h5 --strip-prefix module.    # DataParallel keys

Input: a dict with "model" (or "state_dict") and optionally "model_ema" (or "state_dict_ema"), as the
official RepLKNet and SLaK training scripts save, or a bare state dict (name -> tensor). Output, as
shared/reference/CHECKPOINTS.md lays out: /model_state_dict (and /ema_state_dict) with one dataset
per key, named by the key and in state_dict order (creation order tracked), and the root attributes
format, format_version, producer, created_utc, tensor_layout, model_config (JSON: --arch, the
source file, "reparameterized") and epoch when the .pth has one. float16 is written as HDF5's
half type, bfloat16 as the custom 16-bit float of CHECKPOINTS.md plus attr dtype="bfloat16"
(h5py and lark read both as float32 with exact values), everything else as it is. The file is
written atomically (temporary, fsync, rename). Needs only torch and h5py (Debian: python3-torch,
python3-h5py).
"""
import argparse
import datetime
import json
import os
import sys

import h5py
import numpy as np
import torch


def bfloat16_type():
    """The bfloat16 file type of CHECKPOINTS.md: a 16-bit IEEE-like float, 8 exponent bits."""
    t = h5py.h5t.IEEE_F32LE.copy()
    t.set_fields(15, 7, 8, 0, 7)
    t.set_size(2)
    t.set_ebias(127)
    return t


def write_tensor(group, name, t):
    if "/" in name:
        raise SystemExit("pth2h5: key %r contains '/', which cannot be an HDF5 dataset name" % name)
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        bits = t.view(torch.int16).numpy().view(np.uint16)
        ftype = bfloat16_type()
        space = h5py.h5s.create(h5py.h5s.SCALAR) if t.dim() == 0 else h5py.h5s.create_simple(tuple(t.shape))
        ds = h5py.h5d.create(group.id, name.encode(), ftype, space)
        if t.numel() > 0:
            ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(bits), mtype=ftype)
        group[name].attrs["dtype"] = "bfloat16"
        return
    if t.dtype == torch.bool:
        group.create_dataset(name, data=t.numpy(), chunks=True if t.dim() > 0 and t.numel() > 0 else None,
                             compression="gzip" if t.dim() > 0 and t.numel() > 0 else None,
                             shuffle=t.dim() > 0 and t.numel() > 0)
        return
    group.create_dataset(name, data=t.numpy())


def find_state_dicts(obj):
    """(model state dict, EMA state dict or None, epoch or None) of a loaded .pth."""
    if not isinstance(obj, dict):
        raise SystemExit("pth2h5: expected a dict in the .pth, got %s" % type(obj).__name__)
    if all(torch.is_tensor(v) for v in obj.values()):
        return obj, None, None
    model = next((obj[k] for k in ("model", "state_dict", "model_state_dict") if k in obj), None)
    if model is None:
        raise SystemExit("pth2h5: no state dict found: the .pth has neither model nor state_dict, and its values "
                         "are not all tensors (keys: %s)" % ", ".join(map(str, obj.keys())))
    ema = next((obj[k] for k in ("model_ema", "state_dict_ema", "ema_state_dict") if k in obj), None)
    epoch = obj.get("epoch")
    return model, ema, epoch if isinstance(epoch, int) else None


def strip(sd, prefix):
    if not prefix:
        return sd
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in sd.items()}


def main(argv):
    ap = argparse.ArgumentParser(description="Convert a PyTorch .pth checkpoint to lark's HDF5 layout.")
    ap.add_argument("pth")
    ap.add_argument("h5")
    ap.add_argument("--arch", default="", help="architecture name stored in model_config")
    ap.add_argument("--reparameterized", action="store_true", help="the weights are the re-parameterised form")
    ap.add_argument("--strip-prefix", default="", help="drop this prefix from keys (e.g. 'module.')")
    ap.add_argument("--no-ema", action="store_true", help="leave out the EMA weights")
    args = ap.parse_args(argv)

    if not os.path.exists(args.pth):
        raise SystemExit("pth2h5: %s: no such file" % args.pth)
    obj = torch.load(args.pth, map_location="cpu")
    model, ema, epoch = find_state_dicts(obj)
    model = strip(model, args.strip_prefix)
    ema = None if ema is None or args.no_ema else strip(ema, args.strip_prefix)
    for what, sd in (("model", model), ("ema", ema)):
        for k, v in (sd or {}).items():
            if not torch.is_tensor(v):
                raise SystemExit("pth2h5: %s: %r is a %s, not a tensor" % (what, k, type(v).__name__))

    tmp = "%s.tmp.%d" % (args.h5, os.getpid())
    try:
        with h5py.File(tmp, "w", track_order=True, libver=("v108", "v108")) as f:
            f.attrs["format"] = "lark-checkpoint"
            f.attrs["format_version"] = np.int64(1)
            f.attrs["producer"] = "tools/pth2h5.py (torch %s, h5py %s)" % (torch.__version__, h5py.__version__)
            f.attrs["created_utc"] = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
            f.attrs["tensor_layout"] = "pytorch"
            f.attrs["model_config"] = json.dumps({"arch": args.arch, "reparameterized": args.reparameterized,
                                                  "source": os.path.basename(args.pth)}, sort_keys=True)
            if epoch is not None:
                f.attrs["epoch"] = np.int64(epoch)
            for group, sd in (("model_state_dict", model), ("ema_state_dict", ema)):
                if sd is None:
                    continue
                g = f.create_group(group, track_order=True)
                for k, v in sd.items():
                    write_tensor(g, k, v)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, args.h5)
        d = os.open(os.path.dirname(os.path.abspath(args.h5)), os.O_RDONLY)
        try:
            os.fsync(d)
        finally:
            os.close(d)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print("pth2h5: %s -> %s: %d tensors%s" % (args.pth, args.h5, len(model),
                                              " + %d EMA" % len(ema) if ema is not None else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
