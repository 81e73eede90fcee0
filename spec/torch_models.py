"""spec/torch_models.py: RepLKNet and SLaK in PyTorch, written from shared/reference/MODELS.md
(sections 1, 2 and 4), for the interoperability specs (spec/interop_spec.lua).

The module names and registration order follow MODELS.md section 4, so the state_dict keys, shapes
and dtypes are those of the official models (DingXiaoH/RepLKNet-pytorch `replknet.py`,
VITA-Group/SLaK `models/SLaK.py`): a lark export that loads here with strict=True loads into theirs.
Differences, all without effect on the state_dict:
  * BatchNorm2d everywhere (the official RepLKNet defaults to SyncBatchNorm, same state_dict, GPU-only);
  * SLaK's depth-wise convs are plain nn.Conv2d padded (kh//2, kw//2) per dimension, which is what the
    official CUDA-only implicit-GEMM op computes (MODELS.md 2.1);
  * `stem_stride=2` (a lark option for 28x28 inputs) makes RepLKNet's first conv stride 1; names are
    unchanged, the default 4 is the official stem;
  * SLaK's `merge_kernel()` (one K x K `lkb_reparam` from the decomposed branches) is lark's
    extension (MODELS.md 2.1: exact, not official).

Also here: the tiny configurations the specs use, `randomize_` (random weights and non-trivial BN
statistics), and HDF5 helpers in the CHECKPOINTS.md layout (h5py only). Needs torch and h5py
(Debian: python3-torch 1.13, python3-h5py), nothing else.

    import sys; sys.path.insert(0, "spec"); import torch_models as tm
    m = tm.build("replknet", tm.TINY_REPLKNET).eval()
    tm.load_h5_(m, "export.h5")          # strict
"""
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- shared pieces ---------------------------------------------------------------------------------


class DropPath(nn.Module):
    """Per-sample stochastic depth: in training, zeroes a whole sample's branch with probability p and
    scales the kept ones by 1 / (1 - p); identity in eval mode."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


def conv_bn(cin, cout, kernel, stride=1, padding=None, groups=1, relu=False, bn=True):
    """Conv2d (no bias) -> BatchNorm2d (eps 1e-5) [-> ReLU], children `conv`, `bn`, `nonlinear`.
    kernel may be (kh, kw); the default padding is (kh // 2, kw // 2)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    if padding is None:
        padding = (kh // 2, kw // 2)
    seq = nn.Sequential()
    seq.add_module("conv", nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=padding, groups=groups,
                                     bias=False))
    if bn:
        seq.add_module("bn", nn.BatchNorm2d(cout))
    if relu:
        seq.add_module("nonlinear", nn.ReLU())
    return seq


def fused(seq):
    """(kernel, bias) of the biased conv equal to a conv-BN Sequential in eval mode (MODELS.md 1.3):
    s = gamma / sqrt(var + eps), W' = W * s, b' = beta - mean * s."""
    w = seq.conv.weight
    bn = getattr(seq, "bn", None)
    if not isinstance(bn, nn.BatchNorm2d):
        b = seq.conv.bias if seq.conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
        return w, b
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return w * s.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * s


def pad_to(w, kh, kw):
    """Zero-pads a (C, 1, h, w) kernel to (C, 1, kh, kw), centred."""
    ph, pw = (kh - w.shape[2]) // 2, (kw - w.shape[3]) // 2
    return F.pad(w, [pw, pw, ph, ph])


def biased_dwconv(channels, kernel, w, b):
    """A biased depth-wise K x K Conv2d ("same" padding) holding w and b."""
    conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=True)
    conv.weight.data.copy_(w)
    conv.bias.data.copy_(b)
    return conv


# ---- RepLKNet (MODELS.md 1) ----------------------------------------------------------------------------


class ReparamLargeKernelConv(nn.Module):
    """BN(DW K x K) + BN(DW k x k) on the same input; after merge_kernel(), one biased K x K depth-wise
    conv `lkb_reparam`. small_kernel None: no small branch (XL)."""

    def __init__(self, channels, kernel, small_kernel):
        super().__init__()
        self.channels, self.kernel, self.small_kernel = channels, kernel, small_kernel
        self.lkb_origin = conv_bn(channels, channels, kernel, groups=channels)
        if small_kernel is not None:
            assert small_kernel <= kernel
            self.small_conv = conv_bn(channels, channels, small_kernel, groups=channels)

    def forward(self, x):
        if hasattr(self, "lkb_reparam"):
            return self.lkb_reparam(x)
        y = self.lkb_origin(x)
        if hasattr(self, "small_conv"):
            y = y + self.small_conv(x)
        return y

    @torch.no_grad()
    def merge_kernel(self):
        """W_eq = W'_K + ZeroPad(W'_k), b_eq = b'_K + b'_k (MODELS.md 1.3)."""
        w, b = fused(self.lkb_origin)
        if hasattr(self, "small_conv"):
            ws, bs = fused(self.small_conv)
            w, b = w + pad_to(ws, self.kernel, self.kernel), b + bs
        self.lkb_reparam = biased_dwconv(self.channels, self.kernel, w, b)
        del self.lkb_origin
        if hasattr(self, "small_conv"):
            del self.small_conv


class RepLKBlock(nn.Module):
    """x + DropPath(pw2(ReLU(large_kernel(pw1(prelkb_bn(x)))))); registration order pw1, pw2,
    large_kernel, lk_nonlinear, prelkb_bn, drop_path (the state_dict order of MODELS.md 4)."""

    def __init__(self, in_channels, dw_channels, kernel, small_kernel, drop_path):
        super().__init__()
        self.pw1 = conv_bn(in_channels, dw_channels, 1, padding=0, relu=True)
        self.pw2 = conv_bn(dw_channels, in_channels, 1, padding=0)
        self.large_kernel = ReparamLargeKernelConv(dw_channels, kernel, small_kernel)
        self.lk_nonlinear = nn.ReLU()
        self.prelkb_bn = nn.BatchNorm2d(in_channels)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        y = self.pw1(self.prelkb_bn(x))
        y = self.pw2(self.lk_nonlinear(self.large_kernel(y)))
        return x + self.drop_path(y)


class ConvFFN(nn.Module):
    """x + DropPath(pw2(GELU(pw1(preffn_bn(x))))), pw1/pw2 1x1 conv-BN without activation."""

    def __init__(self, channels, hidden, drop_path):
        super().__init__()
        self.preffn_bn = nn.BatchNorm2d(channels)
        self.pw1 = conv_bn(channels, hidden, 1, padding=0)
        self.pw2 = conv_bn(hidden, channels, 1, padding=0)
        self.nonlinear = nn.GELU()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        return x + self.drop_path(self.pw2(self.nonlinear(self.pw1(self.preffn_bn(x)))))


class RepLKNetStage(nn.Module):
    """`blocks`: RepLK and ConvFFN interleaved (even index RepLK), then `norm` (Identity)."""

    def __init__(self, channels, num_blocks, kernel, small_kernel, dw_ratio, ffn_ratio, rates):
        super().__init__()
        blocks = []
        for i in range(num_blocks):
            blocks.append(RepLKBlock(channels, int(channels * dw_ratio), kernel, small_kernel, rates[i]))
            blocks.append(ConvFFN(channels, int(channels * ffn_ratio), rates[i]))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.Identity()

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.norm(x)


class RepLKNet(nn.Module):
    """stem (4 conv-BN-ReLU, total stride 4), stages with transitions between them, head BN -> global
    average -> Linear. Keys: stem.*, stages.*, transitions.*, norm.*, head.*."""

    def __init__(self, channels, layers, kernels, small_kernel=5, dw_ratio=1, ffn_ratio=4, num_classes=1000,
                 in_channels=3, drop_path=0.0, stem_stride=4):
        super().__init__()
        c0 = channels[0]
        self.stem = nn.ModuleList([
            conv_bn(in_channels, c0, 3, stride=2 if stem_stride == 4 else 1, padding=1, relu=True),
            conv_bn(c0, c0, 3, padding=1, groups=c0, relu=True),
            conv_bn(c0, c0, 1, padding=0, relu=True),
            conv_bn(c0, c0, 3, stride=2, padding=1, groups=c0, relu=True),
        ])
        total = sum(layers)
        rates = torch.linspace(0, drop_path, total).tolist() if total > 0 else []
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        at = 0
        for i, c in enumerate(channels):
            self.stages.append(RepLKNetStage(c, layers[i], kernels[i], small_kernel, dw_ratio, ffn_ratio,
                                             rates[at:at + layers[i]]))
            at += layers[i]
            if i < len(channels) - 1:
                self.transitions.append(nn.Sequential(
                    conv_bn(c, channels[i + 1], 1, padding=0, relu=True),
                    conv_bn(channels[i + 1], channels[i + 1], 3, stride=2, padding=1, groups=channels[i + 1],
                            relu=True)))
        self.norm = nn.BatchNorm2d(channels[-1])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels[-1], num_classes)

    def forward_features(self, x):
        for s in self.stem:
            x = s(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.transitions):
                x = self.transitions[i](x)
        return x

    def forward(self, x):
        x = self.avgpool(self.norm(self.forward_features(x)))
        return self.head(torch.flatten(x, 1))

    def structural_reparam(self):
        """Every large kernel merged into `large_kernel.lkb_reparam` (MODELS.md 1.3)."""
        for m in self.modules():
            if isinstance(m, ReparamLargeKernelConv):
                m.merge_kernel()
        return self

    @torch.no_grad()
    def deep_fuse_BN(self):
        """Every conv-BN Sequential (stem, transitions, pw1/pw2, large-kernel branches) gets a biased
        conv with the fused kernel and an Identity in place of its BN (keys conv.weight, conv.bias).
        Pre-block BNs and the head norm are not conv-BN pairs and stay."""
        for m in self.modules():
            if isinstance(m, nn.Sequential) and hasattr(m, "conv") and isinstance(getattr(m, "bn", None),
                                                                                   nn.BatchNorm2d):
                w, b = fused(m)
                c = m.conv
                conv = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, stride=c.stride, padding=c.padding,
                                 groups=c.groups, bias=True)
                conv.weight.copy_(w)
                conv.bias.copy_(b)
                m.conv = conv
                m.bn = nn.Identity()
        return self


# ---- SLaK (MODELS.md 2) ---------------------------------------------------------------------------------


class LayerNorm(nn.Module):
    """LayerNorm over the channel dim of (N, C, H, W) ("channels first"), eps 1e-6; weight, bias (C)."""

    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class SLaKLargeKernel(nn.Module):
    """decom: LoRA1 (K x N) + LoRA2 (N x K) + small_conv (N x N, when N < K), each a depth-wise conv-BN,
    summed, no activation; not decom: lkb_origin (K x K) + small_conv. bn=False: convs only."""

    def __init__(self, channels, kernel, small_kernel, decom=True, bn=True):
        super().__init__()
        self.channels, self.kernel, self.small_kernel, self.decom = channels, kernel, small_kernel, decom
        if decom:
            self.LoRA1 = conv_bn(channels, channels, (kernel, small_kernel), groups=channels, bn=bn)
            self.LoRA2 = conv_bn(channels, channels, (small_kernel, kernel), groups=channels, bn=bn)
        else:
            self.lkb_origin = conv_bn(channels, channels, kernel, groups=channels, bn=bn)
        if small_kernel < kernel:
            self.small_conv = conv_bn(channels, channels, small_kernel, groups=channels, bn=bn)

    def branches(self):
        return [getattr(self, n) for n in ("LoRA1", "LoRA2", "lkb_origin", "small_conv") if hasattr(self, n)]

    def forward(self, x):
        if hasattr(self, "lkb_reparam"):
            return self.lkb_reparam(x)
        y = None
        for b in self.branches():
            y = b(x) if y is None else y + b(x)
        return y

    @torch.no_grad()
    def merge_kernel(self):
        """lark's extension (MODELS.md 2.1, not official): one biased K x K conv `lkb_reparam` with the
        BN-folded branch kernels zero-padded to K x K (centred) and summed, biases summed."""
        k = self.kernel
        w = b = None
        for br in self.branches():
            wi, bi = fused(br)
            wi = pad_to(wi, k, k)
            w, b = (wi, bi) if w is None else (w + wi, b + bi)
        for n in ("LoRA1", "LoRA2", "lkb_origin", "small_conv"):
            if hasattr(self, n):
                delattr(self, n)
        self.lkb_reparam = biased_dwconv(self.channels, k, w, b)


class SLaKBlock(nn.Module):
    """x + DropPath(gamma * pwconv2(GELU(pwconv1(LayerNorm(large_kernel(x)))))) (channels last inside)."""

    def __init__(self, dim, drop_path, layer_scale_init, kernel, small_kernel, decom=True, bn=True):
        super().__init__()
        self.large_kernel = SLaKLargeKernel(dim, kernel, small_kernel, decom, bn)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init * torch.ones(dim)) if layer_scale_init > 0 else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        y = self.large_kernel(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        if self.gamma is not None:
            y = self.gamma * y
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class SLaK(nn.Module):
    """ConvNeXt macro design: downsample_layers (stem conv 4x4 s4 + LN; LN + conv 2x2 s2), stages of
    blocks (nn.Sequential: keys stages.s.j.*), head mean -> LayerNorm (`norm`) -> Linear (`head`).
    Widths int(d * width_factor); kernel_size = [K_1, ..., K_n, N]."""

    def __init__(self, dims, depths, kernel_size, width_factor=1.0, num_classes=1000, in_channels=3,
                 drop_path=0.0, layer_scale_init_value=1e-6, head_init_scale=1.0, decom=True, bn=True):
        super().__init__()
        dims = [int(d * width_factor) for d in dims]
        self.dims = dims
        n = len(dims)
        small = kernel_size[-1]
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(nn.Conv2d(in_channels, dims[0], 4, stride=4),
                                                    LayerNorm(dims[0])))
        for i in range(1, n):
            self.downsample_layers.append(nn.Sequential(LayerNorm(dims[i - 1]),
                                                        nn.Conv2d(dims[i - 1], dims[i], 2, stride=2)))
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        cur = 0
        for i in range(n):
            self.stages.append(nn.Sequential(*[
                SLaKBlock(dims[i], rates[cur + j], layer_scale_init_value, kernel_size[i], small, decom, bn)
                for j in range(depths[i])]))
            cur += depths[i]
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(self._init_weights)
        self.head.weight.data.mul_(head_init_scale)
        self.head.bias.data.mul_(head_init_scale)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def forward_features(self, x):
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.norm(x.mean([-2, -1]))

    def forward(self, x):
        return self.head(self.forward_features(x))

    def merge_kernels(self):
        """Every large kernel merged into `large_kernel.lkb_reparam` (lark's extension)."""
        for m in self.modules():
            if isinstance(m, SLaKLargeKernel):
                m.merge_kernel()
        return self


# ---- configurations ----------------------------------------------------------------------------------

#: The official constructors' configurations (MODELS.md 1.2, 2.2).
REPLKNET_31B = dict(channels=[128, 256, 512, 1024], layers=[2, 2, 18, 2], kernels=[31, 29, 27, 13], small_kernel=5,
                    dw_ratio=1, ffn_ratio=4, drop_path=0.3)
SLAK_T = dict(dims=[96, 192, 384, 768], depths=[3, 3, 9, 3], kernel_size=[51, 49, 47, 13, 5], width_factor=1.3,
              drop_path=0.1)

#: Tiny configurations for the specs (seconds on 2 cores): input 3 x 32 x 32.
TINY_REPLKNET = dict(channels=[16, 32], layers=[1, 1], kernels=[13, 7], small_kernel=5, num_classes=10)
#: widths int(d * 1.3) = 20, 41, 62, 83 (Python's truncation is part of what is checked); input 3 x 64 x 64.
TINY_SLAK = dict(dims=[16, 32, 48, 64], depths=[1, 1, 1, 1], kernel_size=[13, 11, 9, 7, 5], width_factor=1.3,
                 num_classes=10)


def build(arch, cfg):
    """A model by architecture name ("replknet" or "slak") and keyword configuration."""
    if arch == "replknet":
        return RepLKNet(**cfg)
    if arch == "slak":
        return SLaK(**cfg)
    raise ValueError("torch_models.build: unknown arch %r (expected 'replknet' or 'slak')" % (arch,))


@torch.no_grad()
def randomize_(model, seed=0):
    """Random weights and non-trivial BN statistics (as the lark specs draw them): conv/linear weights
    uniform with std 1/sqrt(fan_in), biases +-0.3, BN/LN affine 0.5..1.5 / +-0.5, running mean +-0.5,
    running var 0.5..2, num_batches_tracked 7, SLaK's gamma 0.5..1.5 (1e-6 would hide the blocks)."""
    g = torch.Generator().manual_seed(seed)

    def uni(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * (hi - lo) + lo)

    for name, t in model.state_dict().items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            t.fill_(7)
        elif leaf == "running_mean":
            uni(t, -0.5, 0.5)
        elif leaf == "running_var":
            uni(t, 0.5, 2.0)
        elif leaf == "gamma":
            uni(t, 0.5, 1.5)
        elif t.dim() >= 2:
            a = (3.0 / (t.numel() // t.shape[0])) ** 0.5
            uni(t, -a, a)
        elif leaf == "weight":
            uni(t, 0.5, 1.5)
        elif leaf == "bias":
            uni(t, -0.3, 0.3)
    return model


# ---- HDF5 (CHECKPOINTS.md layout) -----------------------------------------------------------------------


def read_h5_state_dict(path, group="model_state_dict"):
    """The state dict in a lark checkpoint (one dataset per key), as CHECKPOINTS.md section 3 loads it."""
    import h5py
    import numpy as np
    with h5py.File(path, "r") as f:
        return {k: torch.from_numpy(np.asarray(v[()])) for k, v in f[group].items()}


def load_h5_(model, path, group="model_state_dict"):
    """model.load_state_dict(the file's state dict, strict=True); returns the file's root attributes."""
    import h5py
    model.load_state_dict(read_h5_state_dict(path, group), strict=True)
    with h5py.File(path, "r") as f:
        return dict(f.attrs)


def write_h5(path, state_dict, config=None, extra=None):
    """A lark checkpoint written with h5py alone: root attributes, /model_state_dict with one dataset per
    key in state_dict order (creation order tracked), HDF5 1.8 format; extra = {name: tensor} adds
    top-level datasets (inputs and outputs the specs exchange)."""
    import h5py
    import numpy as np
    with h5py.File(path, "w", track_order=True, libver=("v108", "v108")) as f:
        f.attrs["format"] = "lark-checkpoint"
        f.attrs["format_version"] = np.int64(1)
        f.attrs["producer"] = "spec/torch_models.py (torch %s)" % torch.__version__
        f.attrs["tensor_layout"] = "pytorch"
        f.attrs["model_config"] = json.dumps(config or {})
        g = f.create_group("model_state_dict", track_order=True)
        for k, v in state_dict.items():
            g.create_dataset(k, data=v.detach().cpu().contiguous().numpy())
        for k, v in (extra or {}).items():
            f.create_dataset(k, data=v.detach().cpu().contiguous().numpy())
