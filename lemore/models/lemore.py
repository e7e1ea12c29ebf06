"""LeMoRe: Learn More Details for Lightweight Semantic Segmentation.

Abid, Mehta, Wu, Timofte, ICIP 2025, arXiv:2505.23093. The authors published no code: this is a
reimplementation from the paper, its supplementary material and its architecture diagram. What the paper
fixes and what is inferred (with the budget each choice meets) is written up in ``docs/architecture.md``.
The family is TopFormer's (CVPR 2022): a cheap convolutional token pyramid, attention only at 1/64 scale,
gated injection of the global context back into the local scales.

Data flow::

    x (B,3,H,W) -> stem (1/2) -> 4 x [stride-2 inverted residual + Cartesian Encoder] (1/4, 1/8, 1/16, 1/32)
      -> every stage average-pooled to 1/64 and concatenated (B, 248, H/64, W/64)
      -> attention block + Nested Attention block (with FFNs) = global features
      -> Gated Fusion Modules at 1/8, 1/16, 1/32 -> summed at 1/8 -> segmentation head -> logits (B,K,H,W)

Variants (Table 2 rows, LeMoRe* and the classifier) are rows of ``VARIANTS`` / builder arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from lemore.registry import register_model

__all__ = ["LeMoReCfg", "LeMoRe", "LeMoReClassifier", "LeMoReBackbone", "ABLATION_ROWS"]


@dataclass(frozen=True)
class LeMoReCfg:
    """Architecture hyper-parameters. Defaults are the paper's model (ADE20K, 512x512, Table 1 / Table 2).

    The five booleans are the columns of Table 2 (``paper/table2_ablation.csv``).
    """

    img_size: tuple[int, int] = (512, 512)  # (H, W) the frontal/lateral view matrices are built for
    stem_width: int = 20
    widths: tuple[int, int, int, int] = (24, 48, 80, 96)  # stages at strides 4, 8, 16, 32
    kernels: tuple[int, int, int, int] = (3, 5, 3, 5)  # of each stage's stride-2 inverted residual
    expansion: int = 4  # of those inverted residuals
    # Table 2 switches
    transverse: bool = True
    frontal: bool = True
    lateral: bool = True
    channel_attention: bool = True
    nested_attention: bool = True
    # global attention at 1/64 (width = sum(widths) = 248)
    num_heads: int = 4
    local_key_dim: int = 8  # first (standard) block: q, k 4 x 8 = 32 wide, v 4 x 16 = 64 wide
    local_value_ratio: int = 2
    nested_branches: int = 3  # Q_i, K_j, V_t with i, j, t = 1..3 (the diagram); 1 when nested_attention=False
    ffn_expansion: int = 2  # supplementary, Fig. 1
    # decoder
    decoder_width: int = 96
    fuse_stages: tuple[int, ...] = (1, 2, 3)  # GFMs at 1/8, 1/16, 1/32 (see docs/architecture.md)
    dropout: float = 0.1


#: Table 2 rows: name -> switches (transverse, frontal, lateral, channel_attention, nested_attention).
ABLATION_ROWS: dict[str, tuple[bool, bool, bool, bool, bool]] = {
    "lemore_t": (True, False, False, False, False),
    "lemore_tf": (True, True, False, False, False),
    "lemore_tfl": (True, True, True, False, False),
    "lemore_tfl_ca": (True, True, True, True, False),
    "lemore_t_na": (True, False, False, False, True),
    "lemore_tf_na": (True, True, False, False, True),
    "lemore_tfl_na": (True, True, True, False, True),
    "lemore_tfl_ca_na": (True, True, True, True, True),  # the full model, same as `lemore`
}
SWITCHES = ("transverse", "frontal", "lateral", "channel_attention", "nested_attention")


# --------------------------------------------------------------------------------------------- building blocks
class ConvBN(nn.Sequential):
    """Conv -> BN (-> activation). BN follows every conv but the classifier (supplementary)."""

    def __init__(self, cin, cout, kernel=1, stride=1, padding=None, dilation=1, groups=1, act=None):
        if padding is None:
            k = (kernel, kernel) if isinstance(kernel, int) else kernel
            d = (dilation, dilation) if isinstance(dilation, int) else dilation
            padding = tuple((ki - 1) // 2 * di for ki, di in zip(k, d))
        layers = [nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias=False), nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> kxk depthwise (strided) -> 1x1 project, residual when shapes allow."""

    def __init__(self, cin, cout, kernel, stride, expansion, act=nn.ReLU6):
        super().__init__()
        hidden = cin * expansion
        layers = [] if expansion == 1 else [ConvBN(cin, hidden, act=act)]
        layers += [ConvBN(hidden, hidden, kernel, stride, groups=hidden, act=act), ConvBN(hidden, cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class AxisMix(nn.Module):
    """A 1x1 convolution applied with one spatial axis as the channel axis (the frontal / lateral views).

    For the frontal view (``axis=-2``) every column of every channel is multiplied by one learned (H x H)
    matrix: ``y[b, c, i, w] = sum_j W[i, j] x[b, c, j, w]``; the lateral view (``axis=-1``) does the same
    along W. The matrix is sized for the build resolution (Table 2's +0.02M per view is exactly
    128^2 + 64^2 + 32^2 + 16^2 at 512x512). At another resolution it is resampled bilinearly, like a ViT
    position embedding, and rescaled by ``n_build / n`` so that a constant input keeps its response.
    """

    def __init__(self, size: int, axis: int):
        super().__init__()
        assert axis in (-1, -2)
        self.axis = axis
        self.weight = nn.Parameter(torch.empty(size, size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's init with fan_in = size

    def weight_for(self, n: int) -> torch.Tensor:
        w = self.weight
        if n == w.shape[0]:
            return w
        return resample_axis_weight(w, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        if self.axis == -1:
            return x @ self.weight_for(x.shape[-1]).t()  # mixes along W
        # mix along H: (B,C,W,H) @ (H,H) keeps the matmul's operands in the form FLOP counters read right
        return (x.transpose(-1, -2) @ self.weight_for(x.shape[-2]).t()).transpose(-1, -2)

    def extra_repr(self) -> str:
        return f"size={self.weight.shape[0]}, axis={'H' if self.axis == -2 else 'W'}"


def resample_axis_weight(w: torch.Tensor, n: int) -> torch.Tensor:
    """Resample an (m x m) view matrix to (n x n), keeping the row sums' scale (see :class:`AxisMix`)."""
    m = w.shape[0]
    out = F.interpolate(w[None, None], size=(n, n), mode="bilinear", align_corners=False)[0, 0]
    return out * (m / n)


class SqueezeExcite(nn.Module):
    """Channel attention (CA): global pool -> 1x1 -> ReLU -> 1x1 -> sigmoid, no channel reduction."""

    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, dim, 1)
        self.fc2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)  # (B, C, 1, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class CartesianEncoder(nn.Module):
    """C-Encoder (diagram panel b): three views summed, four thin depthwise convs, channel attention.

    ``x + CA(DW(act(BN(T(x) + F(x) + L(x)))))`` where T is a 1x1 conv over channels (transverse view), F and
    L are 1x1 convs over H and W (frontal and lateral views, :class:`AxisMix`), DW = 3x1, 1x3, 3x1 dilated,
    1x3 dilated depthwise convs.
    """

    def __init__(self, dim, size: tuple[int, int], transverse=True, frontal=True, lateral=True,
                 channel_attention=True, act=nn.ReLU6):
        super().__init__()
        if not (transverse or frontal or lateral):
            raise ValueError("a C-Encoder needs at least one of the transverse, frontal, lateral views")
        self.transverse = nn.Conv2d(dim, dim, 1, bias=False) if transverse else None
        self.frontal = AxisMix(size[0], axis=-2) if frontal else None
        self.lateral = AxisMix(size[1], axis=-1) if lateral else None
        self.norm = nn.BatchNorm2d(dim)
        self.act = act()
        self.dw = nn.Sequential(
            ConvBN(dim, dim, (3, 1), groups=dim),
            ConvBN(dim, dim, (1, 3), groups=dim),
            ConvBN(dim, dim, (3, 1), dilation=(2, 1), groups=dim),
            ConvBN(dim, dim, (1, 3), dilation=(1, 2), groups=dim, act=act),
        )
        self.ca = SqueezeExcite(dim) if channel_attention else nn.Identity()

    def forward(self, x):  # (B, C, H, W)
        views = [m(x) for m in (self.transverse, self.frontal, self.lateral) if m is not None]
        xi = views[0]
        for v in views[1:]:
            xi = xi + v
        return x + self.ca(self.dw(self.act(self.norm(xi))))


class FFN(nn.Module):
    """1x1 conv -> 3x3 depthwise conv -> 1x1 conv, expansion 2 (supplementary, Fig. 1)."""

    def __init__(self, dim, expansion=2, act=nn.ReLU6):
        super().__init__()
        hidden = dim * expansion
        self.fc1 = ConvBN(dim, hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = act()
        self.fc2 = ConvBN(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.dw(self.fc1(x))))


class NestedAttention(nn.Module):
    """Multi-head attention over the 1/64 tokens with ``branches`` queries, keys and values (panel c).

    With ``branches=3`` (Nested Attention): Q_i, K_j, V_t for i, j, t = 1..3; the nine maps Q_i K_j^T are
    summed into one map psi, scaled by head_dim^-1/2 and softmax-normalised over keys; each V_t is
    multiplied by psi and the three results summed. With ``branches=1`` it is standard attention.

    Since every projection is linear, ``sum_ij Q_i K_j^T = (sum_i Q_i)(sum_j K_j)^T``: in eval mode the
    branches can be folded into one (:meth:`fuse_branches`) with identical outputs. Training keeps the
    branches, which is where the extra parameters act (as an over-parameterisation, like RepVGG).
    """

    def __init__(self, dim, key_dim, value_dim, num_heads, branches=3, act=nn.ReLU6):
        super().__init__()
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, value_dim
        self.scale = key_dim**-0.5
        self.q = nn.ModuleList(ConvBN(dim, key_dim * num_heads) for _ in range(branches))
        self.k = nn.ModuleList(ConvBN(dim, key_dim * num_heads) for _ in range(branches))
        self.v = nn.ModuleList(ConvBN(dim, value_dim * num_heads) for _ in range(branches))
        self.proj = nn.Sequential(act(), ConvBN(value_dim * num_heads, dim))

    def _heads(self, t: torch.Tensor, d: int) -> torch.Tensor:  # (B, h*d, H, W) -> (B, h, N, d)
        b, _, hh, ww = t.shape
        return t.reshape(b, self.num_heads, d, hh * ww).transpose(-1, -2)

    def forward(self, x):  # (B, C, h, w) tokens at 1/64
        b, _, h, w = x.shape
        qs = [self._heads(q(x), self.key_dim) for q in self.q]  # each (B, heads, N, dk)
        ks = [self._heads(k(x), self.key_dim) for k in self.k]
        vs = [self._heads(v(x), self.value_dim) for v in self.v]  # each (B, heads, N, dv)
        psi = None
        for q in qs:  # the nine Q_i K_j^T, summed (explicit matmuls: the paper counts them)
            for k in ks:
                s = q @ k.transpose(-1, -2)  # (B, heads, N, N)
                psi = s if psi is None else psi + s
        psi = (psi * self.scale).softmax(dim=-1)
        out = None
        for v in vs:
            o = psi @ v  # (B, heads, N, dv)
            out = o if out is None else out + o
        out = out.transpose(-1, -2).reshape(b, self.num_heads * self.value_dim, h, w)
        return self.proj(out)

    @torch.no_grad()
    def fuse_branches(self) -> None:
        """Fold the Q_i (K_j, V_t) branches into one equivalent projection each (eval mode only)."""
        if len(self.q) == 1:
            return
        if self.training:
            raise RuntimeError("fuse_branches() folds BatchNorm statistics: call model.eval() first")
        for name in ("q", "k", "v"):
            branches = getattr(self, name)
            fused = [torch.nn.utils.fusion.fuse_conv_bn_eval(br[0], br[1]) for br in branches]
            conv = nn.Conv2d(fused[0].in_channels, fused[0].out_channels, 1, bias=True)
            conv.weight.copy_(sum(f.weight for f in fused))
            conv.bias.copy_(sum(f.bias for f in fused))
            setattr(self, name, nn.ModuleList([nn.Sequential(conv)]))


class AttentionBlock(nn.Module):
    """Transformer block on conv tokens: x + Attn(x), then x + FFN(x)."""

    def __init__(self, dim, key_dim, value_dim, num_heads, branches, ffn_expansion, act=nn.ReLU6):
        super().__init__()
        self.attn = NestedAttention(dim, key_dim, value_dim, num_heads, branches, act)
        self.ffn = FFN(dim, ffn_expansion, act)

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.ffn(x)


class GatedFusion(nn.Module):
    """GFM (panel d): ``conv(local) * sigmoid(conv(global)) + conv(global)``, global upsampled to local."""

    def __init__(self, local_dim, global_dim, out_dim):
        super().__init__()
        self.local_embed = ConvBN(local_dim, out_dim)
        self.global_gate = ConvBN(global_dim, out_dim)
        self.global_embed = ConvBN(global_dim, out_dim)

    def forward(self, local, glob):
        size = local.shape[-2:]
        gate = F.interpolate(torch.sigmoid(self.global_gate(glob)), size, mode="bilinear", align_corners=False)
        emb = F.interpolate(self.global_embed(glob), size, mode="bilinear", align_corners=False)
        return self.local_embed(local) * gate + emb


# ----------------------------------------------------------------------------------------------------- models
def _stage_sizes(img_size: tuple[int, int]) -> list[tuple[int, int]]:
    """Feature sizes at strides 4, 8, 16, 32 for an input size (each stride-2 conv gives ceil(n / 2))."""
    h, w = img_size
    sizes = []
    for i in range(5):
        h, w = -(-h // 2), -(-w // 2)
        if i >= 1:
            sizes.append((h, w))
    return sizes


class LeMoReBackbone(nn.Module):
    """Stem, four C-Encoder stages and the global attention at 1/64.

    ``forward(x)`` returns ``(features, tokens)``: the four stage outputs at strides 4/8/16/32 (described
    by ``feature_info``) and the global features (B, sum(widths), ceil(H/64), ceil(W/64)).
    """

    def __init__(self, cfg: LeMoReCfg):
        super().__init__()
        if min(cfg.img_size) < 64:
            raise ValueError(f"img_size={cfg.img_size}: LeMoRe pools to 1/64, use at least 64x64")
        act = nn.ReLU6
        self.stem = nn.Sequential(
            ConvBN(3, cfg.stem_width, 3, 2, act=act),  # 1/2
            InvertedResidual(cfg.stem_width, cfg.stem_width, 3, 1, 1, act),
        )
        self.stages = nn.ModuleList()
        cin = cfg.stem_width
        for width, kernel, size in zip(cfg.widths, cfg.kernels, _stage_sizes(cfg.img_size)):
            self.stages.append(nn.Sequential(
                InvertedResidual(cin, width, kernel, 2, cfg.expansion, act),
                CartesianEncoder(width, size, cfg.transverse, cfg.frontal, cfg.lateral, cfg.channel_attention, act),
            ))
            cin = width
        self.feature_info = [dict(num_chs=c, reduction=2 ** (i + 2)) for i, c in enumerate(cfg.widths)]
        dim = self.global_dim = sum(cfg.widths)
        self.attention = nn.Sequential(
            AttentionBlock(dim, cfg.local_key_dim, cfg.local_key_dim * cfg.local_value_ratio, cfg.num_heads,
                           1, cfg.ffn_expansion, act),
            AttentionBlock(dim, dim // cfg.num_heads, dim // cfg.num_heads, cfg.num_heads,
                           cfg.nested_branches if cfg.nested_attention else 1, cfg.ffn_expansion, act),
        )

    def forward(self, x):  # (B, 3, H, W)
        x = self.stem(x)  # (B, 20, H/2, W/2)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)  # (B, C_k, H/2^(k+2), W/2^(k+2))
        h32, w32 = features[-1].shape[-2:]
        size64 = (-(-h32 // 2), -(-w32 // 2))  # ceil: inputs not divisible by 64 keep their border
        tokens = torch.cat([F.adaptive_avg_pool2d(f, size64) for f in features], dim=1)  # (B, 248, H/64, W/64)
        return features, self.attention(tokens)


class LeMoRe(nn.Module):
    """LeMoRe for semantic segmentation: ``model(x)`` returns logits (B, num_classes, H, W)."""

    def __init__(self, cfg: LeMoReCfg = LeMoReCfg(), num_classes: int = 150):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        self.backbone = LeMoReBackbone(cfg)
        gdim, width = self.backbone.global_dim, cfg.decoder_width
        self.fusion = nn.ModuleList(GatedFusion(cfg.widths[i], gdim, width) for i in cfg.fuse_stages)
        self.head = nn.Sequential(ConvBN(width, width, act=nn.ReLU6), nn.Dropout2d(cfg.dropout))
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):  # (B, 3, H, W)
        return F.interpolate(self.forward_logits(x), x.shape[-2:], mode="bilinear", align_corners=False)

    def forward_logits(self, x):
        """Logits at the decoder's stride (1/8): the network proper, before the resize to the input size."""
        features, tokens = self.backbone(x)
        fused = [gfm(features[i], tokens) for gfm, i in zip(self.fusion, self.cfg.fuse_stages)]
        size = fused[0].shape[-2:]  # the finest fused scale (1/8)
        y = fused[0]
        for f in fused[1:]:
            y = y + F.interpolate(f, size, mode="bilinear", align_corners=False)
        return self.classifier(self.head(y))  # (B, K, H/8, W/8)

    def fuse_for_inference(self) -> nn.Module:
        """An eval-mode copy with BatchNorm and the nested-attention branches folded (same outputs, faster).

        See :func:`lemore.models.fuse.fuse_for_inference`; ``self`` is left as it is (keep it for training
        and checkpoints: the copy's state_dict keys differ).
        """
        from lemore.models.fuse import fuse_for_inference

        return fuse_for_inference(self)

    def load_encoder_state_dict(self, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Load ``backbone.*`` weights from the ImageNet classifier, resampling the view matrices.

        Returns ``(missing_keys, unexpected_keys)`` of the backbone (never silently ignored: the caller
        reports them). A tensor whose shape differs for any other reason raises with the key named.
        """
        own = self.backbone.state_dict()
        prefix = "backbone."
        src = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        unexpected = sorted(k for k in state if not k.startswith(prefix) or k[len(prefix):] not in own)
        converted = {}
        for k, v in src.items():
            if k not in own:
                continue
            if v.shape != own[k].shape:
                if k.endswith((".frontal.weight", ".lateral.weight")) and v.ndim == 2:
                    v = resample_axis_weight(v.float(), own[k].shape[0]).to(own[k].dtype)
                else:
                    raise ValueError(f"encoder weight {prefix + k}: shape {tuple(v.shape)} in the checkpoint, "
                                     f"{tuple(own[k].shape)} in the model (different architecture?)")
            converted[k] = v
        missing = sorted(prefix + k for k in own if k not in converted)
        self.backbone.load_state_dict(converted, strict=False)
        return missing, unexpected


class LeMoReClassifier(nn.Module):
    """ImageNet classifier (supplementary): the LeMoRe backbone, global average pooling, a linear layer.

    A 1x1 conv expansion (``head_dim``) sits before pooling, as in MobileNets; it brings the parameter
    count to the supplementary's 1.67M (see docs/architecture.md).
    """

    def __init__(self, cfg: LeMoReCfg = LeMoReCfg(img_size=(224, 224)), num_classes=1000, head_dim=256,
                 dropout=0.2):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        self.backbone = LeMoReBackbone(cfg)
        self.expand = ConvBN(self.backbone.global_dim, head_dim, act=nn.ReLU6) if head_dim else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head_dim or self.backbone.global_dim, num_classes)

    def forward(self, x):  # (B, 3, H, W)
        _, tokens = self.backbone(x)
        pooled = F.adaptive_avg_pool2d(self.expand(tokens), 1).flatten(1)  # (B, head_dim)
        return self.fc(self.dropout(pooled))

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights the segmentation model takes (``backbone.*``)."""
        return {f"backbone.{k}": v.detach().clone() for k, v in self.backbone.state_dict().items()}


# --------------------------------------------------------------------------------------------------- builders
def _cfg(base: LeMoReCfg, img_size, overrides: dict) -> LeMoReCfg:
    valid = {f.name for f in fields(LeMoReCfg)}
    bad = sorted(set(overrides) - valid)
    if bad:
        raise TypeError(f"unknown LeMoRe option(s) {bad}; valid options: {sorted(valid)}")
    if img_size is not None:
        overrides["img_size"] = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    return replace(base, **overrides)


@register_model
def lemore(num_classes: int = 150, img_size: int | tuple[int, int] = (512, 512), **overrides) -> LeMoRe:
    """The paper's LeMoRe (Table 1; Table 2 last row), built for ``img_size`` (H, W).

    Args:
        num_classes: 150 ADE20K, 19 Cityscapes, 60/59 PASCAL Context, 171 COCO-Stuff.
        img_size: training crop; e.g. (512, 1024) for Cityscapes, 480 for PASCAL Context.
        **overrides: any :class:`LeMoReCfg` field, e.g. ``lateral=False`` (Table 2 switches).
    """
    return LeMoRe(_cfg(LeMoReCfg(), img_size, overrides), num_classes)


@register_model
def lemore_star(num_classes: int = 150, img_size: int | tuple[int, int] = (448, 448), **overrides) -> LeMoRe:
    """LeMoRe* of Table 1: the same network trained and evaluated at 448x448."""
    return LeMoRe(_cfg(LeMoReCfg(), img_size, overrides), num_classes)


@register_model
def lemore_cls(num_classes: int = 1000, img_size: int | tuple[int, int] = (224, 224), head_dim: int = 256,
               **overrides) -> LeMoReClassifier:
    """The ImageNet-1K classifier of the supplementary (224x224, 1.67M parameters at 1000 classes)."""
    return LeMoReClassifier(_cfg(LeMoReCfg(), img_size, overrides), num_classes, head_dim)


def _ablation_builder(name: str, switches: tuple[bool, ...]):
    def builder(num_classes: int = 150, img_size: int | tuple[int, int] = (512, 512), **overrides) -> LeMoRe:
        for key, value in zip(SWITCHES, switches):
            overrides.setdefault(key, value)
        return LeMoRe(_cfg(LeMoReCfg(), img_size, overrides), num_classes)

    on = [s for s, v in zip(SWITCHES, switches) if v]
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"Table 2 row with {', '.join(on)} on (the rest off)."
    return builder


for _name, _switches in ABLATION_ROWS.items():
    register_model(_ablation_builder(_name, _switches))
