"""Inference-time rewrites: the same function as the trained model, computed with fewer and cheaper ops.

``fuse_for_inference(model)`` returns an eval-mode copy (or rewrites ``model`` itself with ``inplace=True``)
whose outputs equal the original's within float tolerance. ``tests/models/test_fuse.py`` checks that for
every registered model after training-mode forwards have made the BatchNorm statistics non-trivial.

What it does, and why each step pays on CPU (``results/benchmarks/latency.md`` has the measurements):

- **Every model** (LeMoRe, LR-ASPP MobileNetV3 and its reduced tail, SegFormer-B0, TopFormer-T, SeaFormer-T):
  BatchNorm that follows a convolution is folded into the convolution (``torch.nn.utils.fusion.fuse_conv_bn_eval``),
  for ``nn.Sequential(conv, bn[, act])`` (LeMoRe's ``ConvBN``, which TopFormer-T and SeaFormer-T use for every
  conv + BN, torchvision's ``Conv2dNormActivation``) and SegFormer's ``linear_fuse``/``batch_norm``
  pair; the activation right after a folded convolution runs in place. In eager PyTorch a BatchNorm is a
  full read and write of its input: at LeMoRe's 1/2 and 1/4 scales these passes cost as much as the convs.
  1x1 convolutions on large channels_last maps run oneDNN (:class:`PointwiseConv2d`). This is all the
  baselines get: the rest is specific to LeMoRe's blocks.
- **C-Encoder** (:class:`FusedCartesianEncoder`): the BatchNorm after the sum of the three views is folded
  into the transverse 1x1 conv (scale and shift) and into one multiply-add for the frontal and lateral
  views; the lateral view's GEMM accumulates onto the frontal view's output; the frontal view is the
  broadcast matmul ``W @ x`` instead of transpose-matmul-transpose (the training graph keeps its form
  because fvcore's matmul counter reads it correctly, see :class:`lemore.models.lemore.AxisMix`); in
  ``channels_last`` both views are computed on the (H, W*C) / (W, C) matrices the layout already holds,
  without a permuting copy. View matrices resampled for another input size are cached.
- **Nested attention** (:class:`FusedAttention`): the nine ``Q_i K_j^T`` maps equal ``(sum Q_i)(sum K_j)^T``
  (:meth:`NestedAttention.fuse_branches`): the branches, their BatchNorms and the softmax scale fold into
  one 1x1 conv that emits Q, K and V together; ``K^T`` and the output come straight from the conv layout.
- **ONNX graph forms** (used only when traced, measured in ONNX Runtime with ``benchmarks/latency_ops.py``): the
  C-Encoder's BatchNorm scale of the views is a 1x1 depthwise conv, so that ONNX Runtime's NCHWc transform fuses
  the sum of the views into the transverse conv (it fuses an Add only between two NCHWc outputs); the 1/64
  token pooling is ``P_h @ x @ P_w^T`` with averaging matrices (:class:`FusedBackbone`: AveragePool of the
  24-channel 1/4 stage ran outside the NCHWc layout). Each gains well under 1 ms of LeMoRe's ~25 ms: what limits
  LeMoRe in ONNX Runtime is the padding of its 20- and 24-channel high-resolution layers to the NCHWc block
  (16 channels with AVX-512), see docs/speed.md.
- **Gated fusion** keeps its form (BatchNorm folded). Merging its gate and embedding convs into one conv with
  one upsampling call was tried and dropped: the split/concat it needs takes the upsampling out of ONNX
  Runtime's NCHWc layout, and the export got 10% slower (thread CPU time, 20 interleaved runs).

Memory format is the caller's choice: ``model.to(memory_format=torch.channels_last)`` with a channels_last
input (the benchmark measures both layouts for every model and reports each model's faster one).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from lemore.models.lemore import AxisMix, CartesianEncoder, LeMoReBackbone, NestedAttention, resample_axis_weight

__all__ = ["fuse_for_inference", "fold_conv_bn", "PointwiseConv2d", "FusedCartesianEncoder", "FusedAttention",
           "FusedBackbone", "adaptive_pool_matrix"]


def fuse_for_inference(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """An eval-mode model with the same outputs (float tolerance) and cheaper inference.

    Args:
        model: any registered model (LeMoRe family, ``lraspp_mobilenet_v3_large``, ``segformer_b0``).
        inplace: rewrite ``model`` itself (its BatchNorm statistics are consumed) instead of a deep copy.

    Returns:
        The rewritten model, in eval mode. It is for inference only: folded BatchNorms no longer adapt, and
        its ``state_dict`` keys differ from the trained model's (keep the original for checkpoints).
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    with torch.no_grad():
        _replace_lemore_blocks(model)  # before the generic fold: these read the original ConvBN layout
        fold_conv_bn(model)
        _use_pointwise(model)
    return model


# ------------------------------------------------------------------------------------------------ generic
def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = x * scale + shift`` (per channel)."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def fold_conv_bn(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d into it (eval mode; in place).

    Handles ``nn.Sequential(conv, bn[, act])`` anywhere in the tree (the BatchNorm becomes ``nn.Identity``
    so that indices keep their meaning, and a following ReLU/ReLU6/Hardswish runs in place) and the
    ``linear_fuse`` / ``batch_norm`` attribute pair of transformers' SegFormer decode head.
    """
    if module.training:
        raise RuntimeError("fold_conv_bn() uses BatchNorm running statistics: call model.eval() first")
    with torch.no_grad():
        _fold_all(module)
    return module


def _fold_all(module: nn.Module) -> None:
    for m in list(module.modules()):
        if isinstance(m, nn.Sequential):
            names = list(m._modules)
            for i, (a, b) in enumerate(zip(names, names[1:])):
                conv, bn = m._modules[a], m._modules[b]
                if _foldable(conv, bn):
                    m._modules[a], m._modules[b] = fuse_conv_bn_eval(conv, bn), nn.Identity()
                    if i + 2 < len(names) and hasattr(m._modules[names[i + 2]], "inplace"):
                        m._modules[names[i + 2]].inplace = True  # its input is the conv's fresh output
        conv, bn = getattr(m, "linear_fuse", None), getattr(m, "batch_norm", None)
        if _foldable(conv, bn):
            m.linear_fuse, m.batch_norm = fuse_conv_bn_eval(conv, bn), nn.Identity()


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution that runs oneDNN (mkldnn) on large channels_last inputs in eager mode.

    With one thread PyTorch sends 1x1 convolutions to its native GEMM path (``_slow_conv2d_forward``), which in
    channels_last first broadcasts the bias into the output with a strided copy; oneDNN fuses the bias and is
    faster there (the first 20->80 expansion of LeMoRe at 256x256: 15 ms instead of 22 ms on this machine).
    Small maps (the 1/64 tokens) stay on the native path, which is faster for them; traced (ONNX) graphs see a
    plain Conv. Applied to every model's 1x1 convs by :func:`fuse_for_inference`, baselines included.
    """

    MIN_PIXELS = 1024

    def forward(self, x):
        if (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.jit.is_tracing()
                and x.shape[-2] * x.shape[-1] >= self.MIN_PIXELS and not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last) and not torch.is_grad_enabled()):
            return torch.mkldnn_convolution(x, self.weight, self.bias, [0, 0], [1, 1], [1, 1], 1)
        return super().forward(x)


def _use_pointwise(module: nn.Module) -> None:
    if not torch.backends.mkldnn.is_available():
        return
    for m in module.modules():
        if (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding == (0, 0)
                and m.dilation == (1, 1) and m.groups == 1 and m.padding_mode == "zeros"):
            m.__class__ = PointwiseConv2d  # same parameters and buffers, another forward


def _foldable(conv, bn) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
            and bn.running_mean is not None and conv.out_channels == bn.num_features)


def _fold_convbn(seq: nn.Sequential) -> nn.Conv2d:
    """A LeMoRe ``ConvBN`` (conv, bn) as one conv with bias."""
    return fuse_conv_bn_eval(seq[0], seq[1])


# ------------------------------------------------------------------------------------------------- LeMoRe
def _replace_lemore_blocks(model: nn.Module) -> None:
    for m in model.modules():
        if type(m) is LeMoReBackbone:
            m.__class__ = FusedBackbone  # same modules and parameters, another forward
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, CartesianEncoder):
                setattr(parent, name, FusedCartesianEncoder(child))
            elif isinstance(child, NestedAttention):
                setattr(parent, name, FusedAttention(child))
            elif type(child).__name__ == "FFN" and hasattr(child, "act") and hasattr(child.act, "inplace"):
                child.act.inplace = True  # FFN: act(dw(fc1(x))), the dw output is fresh


def adaptive_pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) averaging matrix of ``adaptive_avg_pool`` along one axis: row i averages the window
    ``[floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out))``, as PyTorch's kernel does."""
    m = torch.zeros(n_out, n_in)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


class FusedBackbone(LeMoReBackbone):
    """The backbone with its token pooling as two matmuls with averaging matrices in traced (ONNX) graphs.

    ONNX Runtime runs AveragePool in its NCHWc layout only for channel counts that fill its blocks (16 with
    AVX-512): the 1/4 stage (24 channels) fell back to a plain-layout 16x16 pool that cost 0.3 ms of LeMoRe's
    25 ms; ``P_h @ x @ P_w^T`` is 3 MMAC of GEMM. Any window sizes (also unequal adaptive windows). Eager
    PyTorch keeps ``adaptive_avg_pool2d`` (faster there).
    """

    def _pool(self, f: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if not torch.jit.is_tracing():
            return F.adaptive_avg_pool2d(f, size)
        h, w = (int(n) for n in f.shape[-2:])
        key = (h, w, int(size[0]), int(size[1]))
        cache = self.__dict__.setdefault("_pool_matrices", {})
        if key not in cache:
            cache[key] = (adaptive_pool_matrix(h, key[2]), adaptive_pool_matrix(w, key[3]).t().contiguous())
        ph, pwt = (t.to(f.device, f.dtype) for t in cache[key])
        return torch.matmul(torch.matmul(ph, f), pwt)  # (B, C, h64, w64)

    def forward(self, x):  # (B, 3, H, W)
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        h32, w32 = features[-1].shape[-2:]
        size64 = (-(-h32 // 2), -(-w32 // 2))
        tokens = torch.cat([self._pool(f, size64) for f in features], dim=1)  # (B, 248, H/64, W/64)
        return features, self.attention(tokens)


class _ViewMatrix(nn.Module):
    """An AxisMix weight for inference, with resampled copies cached per size (no autograd needed)."""

    def __init__(self, mix: AxisMix):
        super().__init__()
        self.weight = nn.Parameter(mix.weight.detach().clone(), requires_grad=False)
        self._cache: dict[int, torch.Tensor] = {}

    def forward(self, n: int) -> torch.Tensor:
        w = self.weight
        if n == w.shape[0]:
            return w
        cached = self._cache.get(int(n))
        if cached is not None and cached.device == w.device and cached.dtype == w.dtype:
            return cached  # a constant in a traced (ONNX) graph: run one eager forward before exporting
        if torch.jit.is_tracing():
            return resample_axis_weight(w, n)
        cached = self._cache[int(n)] = resample_axis_weight(w, int(n)).detach()
        return cached


class FusedCartesianEncoder(nn.Module):
    """A :class:`CartesianEncoder` with its BatchNorms folded and its views computed without copies.

    ``x + CA(DW(act(s * (T(x) + F(x) + L(x)) + b)))`` becomes ``x + CA(DW(act(T'(x) + s * (F(x) + L(x)))))``
    with ``T' = s * T`` and bias ``b``; the DW convs carry their BatchNorms.
    """

    @torch.no_grad()
    def __init__(self, enc: CartesianEncoder):
        super().__init__()
        scale, shift = _bn_affine(enc.norm)
        dim = scale.numel()
        self.transverse = None
        if enc.transverse is not None:
            self.transverse = nn.Conv2d(dim, dim, 1, bias=True)
            self.transverse.weight.copy_(enc.transverse.weight * scale[:, None, None, None])
            self.transverse.bias.copy_(shift)
        self.register_buffer("scale", scale.reshape(1, dim, 1, 1).clone())
        self.register_buffer("shift", shift.reshape(1, dim, 1, 1).clone())
        # the traced (ONNX) graph applies s to the views as a 1x1 depthwise conv: ONNX Runtime's NCHWc transform
        # then fuses the sum with T'(x) into T' (an Add has to have NCHWc inputs on both sides to be fused)
        self.view_scale = None
        if enc.frontal is not None or enc.lateral is not None:
            self.view_scale = nn.Conv2d(dim, dim, 1, groups=dim, bias=enc.transverse is None)
            self.view_scale.weight.copy_(scale.reshape(dim, 1, 1, 1))
            if self.view_scale.bias is not None:
                self.view_scale.bias.copy_(shift)
        self.frontal = _ViewMatrix(enc.frontal) if enc.frontal is not None else None
        self.lateral = _ViewMatrix(enc.lateral) if enc.lateral is not None else None
        self.act = copy.deepcopy(enc.act)
        if hasattr(self.act, "inplace"):
            self.act.inplace = True  # its input is built here, never aliased
        self.dw = copy.deepcopy(enc.dw)  # ConvBN chain: folded by fold_conv_bn
        self.ca = copy.deepcopy(enc.ca)

    def _views(self, x: torch.Tensor) -> torch.Tensor | None:
        """F(x) + L(x), or None without frontal/lateral views."""
        b, c, h, w = x.shape
        if x.is_contiguous() or torch.jit.is_tracing():
            out = None
            if self.frontal is not None:
                out = torch.matmul(self.frontal(h), x)  # (H,H) @ (B,C,H,W): batched GEMM, no transposes
            if self.lateral is not None:
                wl = self.lateral(w).t()
                if out is None:
                    out = torch.matmul(x, wl)  # one GEMM over (B*C*H, W)
                elif torch.jit.is_tracing():
                    out = out + torch.matmul(x, wl)
                else:  # accumulate into the frontal output: one GEMM with beta=1
                    out.view(-1, w).addmm_(x.view(-1, w), wl)
            return out
        # channels_last: memory is (B, H, W, C). The frontal view is W_h @ (H, W*C) per image and the
        # lateral view W_w @ (W, C) per row: plain GEMMs on the layout as it is.
        xp = x.permute(0, 2, 3, 1)  # (B, H, W, C), contiguous
        out = None
        if self.frontal is not None:
            out = torch.matmul(self.frontal(h), xp.reshape(b, h, w * c)).view(b, h, w, c)
        if self.lateral is not None:
            wl = self.lateral(w)
            rows = xp.reshape(b * h, w, c)
            if out is None:
                out = torch.matmul(wl, rows).view(b, h, w, c)
            else:
                out.view(b * h, w, c).baddbmm_(wl.expand(b * h, w, w), rows)
        return None if out is None else out.permute(0, 3, 1, 2)  # (B, C, H, W) in channels_last

    def forward(self, x):  # (B, C, H, W)
        views = self._views(x)
        if torch.jit.is_tracing() and views is not None:
            xi = self.view_scale(views)  # s * (F(x) + L(x)) (+ b without T)
            if self.transverse is not None:
                xi = self.transverse(x) + xi
            return x + self.ca(self.dw(self.act(xi)))
        if self.transverse is not None:
            t = self.transverse(x)  # s * T(x) + b
            xi = t if views is None else torch.addcmul(t, views, self.scale)
        else:
            xi = torch.addcmul(self.shift, views, self.scale)
        y = self.ca(self.dw(self.act(xi)))
        return x + y


class FusedAttention(nn.Module):
    """:class:`NestedAttention` folded: one conv emits Q (pre-scaled), K and V; no transposing copies."""

    @torch.no_grad()
    def __init__(self, att: NestedAttention):
        super().__init__()
        self.num_heads, self.key_dim, self.value_dim = att.num_heads, att.key_dim, att.value_dim
        weights, biases = [], []
        for name, factor in (("q", att.scale), ("k", 1.0), ("v", 1.0)):
            fused = [_fold_convbn(br) if len(br) > 1 else br[0] for br in getattr(att, name)]
            weights.append(sum(f.weight for f in fused) * factor)  # sum_i Q_i = (sum_i W_i) x + sum_i b_i
            biases.append(sum(f.bias for f in fused) * factor)
        weight, bias = torch.cat(weights), torch.cat(biases)
        self.qkv = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=True)
        self.qkv.weight.copy_(weight)
        self.qkv.bias.copy_(bias)
        self.proj = copy.deepcopy(att.proj)  # act -> ConvBN: folded by fold_conv_bn

    def forward(self, x):  # (B, C, h, w) tokens at 1/64
        b, _, h, w = x.shape
        nh, dk, dv = self.num_heads, self.key_dim, self.value_dim
        q, k, v = self.qkv(x).reshape(b, -1, h * w).split([nh * dk, nh * dk, nh * dv], dim=1)
        q = q.reshape(b, nh, dk, h * w).transpose(-1, -2)  # (B, heads, N, dk), already scaled
        k = k.reshape(b, nh, dk, h * w)  # (B, heads, dk, N) = K^T
        v = v.reshape(b, nh, dv, h * w)  # (B, heads, dv, N) = V^T
        psi = (q @ k).softmax(dim=-1)  # (B, heads, N, N)
        out = v @ psi.transpose(-1, -2)  # (psi V)^T: (B, heads, dv, N)
        return self.proj(out.reshape(b, nh * dv, h, w))
