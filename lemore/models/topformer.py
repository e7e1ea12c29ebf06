"""TopFormer-T: Token Pyramid Transformer for Mobile Semantic Segmentation.

Zhang, Huang, Luo, Chen, Wang, Liu, Yu, Shen, CVPR 2022, arXiv:2204.05525. LeMoRe builds on this design. Written
for this project from the official code (github.com/hustvl/TopFormer at commit cc0f436: the backbone
``mmseg/models/backbones/topformer.py``, the head ``mmseg/models/decode_heads/simple_head.py`` and the tiny model's
``local_configs/topformer/topformer_tiny.py``), with this project's layer names; :func:`official_key` maps the
official checkpoint's names onto ours.

Data flow (TopFormer-T, the official ``topformer_tiny.py``)::

    x (B,3,H,W) -> stem 3x3/2 (16) -> 9 inverted residuals (MobileNetV2 blocks, ReLU) = token pyramid:
        tokens at 1/4 (16), 1/8 (32), 1/16 (64), 1/32 (96) channels
      -> each average-pooled to ceil(H/64) x ceil(W/64) and concatenated (B, 208, H/64, W/64)
      -> 4 transformer blocks (4 heads, key_dim 16, values 2 x 16 wide, MLP ratio 2, ReLU6, drop path up to 0.1)
      -> split back into 16/32/64/96 channels = the global semantics of each scale
      -> Semantic Injection Modules ("InjectionMultiSum") at 1/8, 1/16, 1/32:
         BN(conv(local)) * hardsigmoid(BN(conv(global))) + BN(conv(global)), global upsampled, 128 channels
      -> simple head: the three summed at 1/8 -> 1x1 depthwise conv + BN + ReLU -> dropout 0.1 -> 1x1 classifier

Two details of the official code that are kept on purpose: the attention logits are *not* scaled by
key_dim^-1/2 (``Attention.scale`` is defined but never used), and the token pyramid uses ReLU while the
transformer blocks use ReLU6. The published figures (1.4M params, 0.6 GFLOPs, 33.6 mIoU on ADE20K val at
512x512) were counted with mmcv's FLOP counter, which skips the attention matmuls; this project's counter
(:mod:`lemore.profiling`, fvcore) includes them (about 3 MMACs here: 4 blocks over 64 tokens at 512x512).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import StochasticDepth

from lemore.models.lemore import ConvBN, InvertedResidual
from lemore.registry import register_model

__all__ = ["TopFormerCfg", "TopFormer", "official_key", "OFFICIAL_CHECKPOINT"]

#: The official ADE20K checkpoint this model reproduces (hustvl/TopFormer README, "Main results").
OFFICIAL_CHECKPOINT = "TopFormer-T_512x512_2x8_160k-33.6.pth"


@dataclass(frozen=True)
class TopFormerCfg:
    """TopFormer-T's hyper-parameters (``local_configs/topformer/topformer_tiny.py`` and the backbone defaults)."""

    stem_width: int = 16
    # token pyramid: (kernel, expansion, out channels, stride) of each inverted residual (the config's ``cfg``)
    blocks: tuple[tuple[int, int, int, int], ...] = (
        (3, 1, 16, 1), (3, 4, 16, 2), (3, 3, 16, 1), (5, 3, 32, 2), (5, 3, 32, 1),
        (3, 3, 64, 2), (3, 3, 64, 1), (5, 6, 96, 2), (5, 6, 96, 1),
    )
    token_blocks: tuple[int, ...] = (2, 4, 6, 8)  # blocks whose outputs are the tokens (``embed_out_indice``)
    depth: int = 4
    num_heads: int = 4
    key_dim: int = 16
    attn_ratio: int = 2  # value width = attn_ratio x key_dim per head
    mlp_ratio: int = 2
    drop_path_rate: float = 0.1
    inject_scales: tuple[int, ...] = (1, 2, 3)  # pyramid levels that get global semantics (``decode_out_indices``)
    inject_width: int = 128  # ``out_channels`` of the injection modules = the head's width
    dropout: float = 0.1


# --------------------------------------------------------------------------------------------- building blocks
class MLP(nn.Module):
    """1x1 conv + BN -> 3x3 depthwise conv (bias) -> ReLU6 -> 1x1 conv + BN (the official ``Mlp``)."""

    def __init__(self, dim: int, hidden: int, act=nn.ReLU6):
        super().__init__()
        self.fc1 = ConvBN(dim, hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = act()
        self.fc2 = ConvBN(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.dw(self.fc1(x))))


class Attention(nn.Module):
    """Multi-head attention over conv tokens: 1x1 conv + BN projections, softmax(Q K^T) V, ReLU6, 1x1 conv + BN.

    The logits are not scaled (see the module docstring). The official code builds the output BN with weight 0,
    but its ``init_weights`` (run before training) sets every BatchNorm weight back to 1: so do we
    (:func:`init_weights`).
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: int, act=nn.ReLU6):
        super().__init__()
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, attn_ratio * key_dim
        self.q = ConvBN(dim, key_dim * num_heads)
        self.k = ConvBN(dim, key_dim * num_heads)
        self.v = ConvBN(dim, self.value_dim * num_heads)
        self.proj = nn.Sequential(act(), ConvBN(self.value_dim * num_heads, dim))

    def forward(self, x):  # (B, C, h, w) tokens at 1/64
        b, _, h, w = x.shape
        n = h * w
        q = self.q(x).reshape(b, self.num_heads, self.key_dim, n).transpose(-1, -2)  # (B, heads, N, dk)
        k = self.k(x).reshape(b, self.num_heads, self.key_dim, n)  # (B, heads, dk, N)
        v = self.v(x).reshape(b, self.num_heads, self.value_dim, n).transpose(-1, -2)  # (B, heads, N, dv)
        attn = (q @ k).softmax(dim=-1)  # (B, heads, N, N), explicit matmuls: the FLOP counter sees them
        out = (attn @ v).transpose(-1, -2).reshape(b, self.num_heads * self.value_dim, h, w)
        return self.proj(out)


class Block(nn.Module):
    """x + DropPath(Attention(x)), then x + DropPath(MLP(x))."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: int, mlp_ratio: int, drop_path: float,
                 act=nn.ReLU6):
        super().__init__()
        self.attn = Attention(dim, key_dim, num_heads, attn_ratio, act)
        self.mlp = MLP(dim, dim * mlp_ratio, act)
        self.drop_path = StochasticDepth(drop_path, mode="row")  # per-sample, identity in eval mode

    def forward(self, x):
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.mlp(x))


class Injection(nn.Module):
    """Semantic Injection Module (the official ``InjectionMultiSum``, the backbone's default):
    ``BN(conv(local)) * hardsigmoid(BN(conv(global))) + BN(conv(global))``, global upsampled to the local size."""

    def __init__(self, local_dim: int, global_dim: int, out_dim: int):
        super().__init__()
        self.local_embed = ConvBN(local_dim, out_dim)
        self.global_embed = ConvBN(global_dim, out_dim)
        self.global_gate = ConvBN(global_dim, out_dim)

    def forward(self, local, glob):
        size = local.shape[-2:]
        gate = F.interpolate(F.hardsigmoid(self.global_gate(glob)), size, mode="bilinear", align_corners=False)
        emb = F.interpolate(self.global_embed(glob), size, mode="bilinear", align_corners=False)
        return self.local_embed(local) * gate + emb


# ----------------------------------------------------------------------------------------------------- model
class TopFormerBackbone(nn.Module):
    """Token pyramid, transformer at 1/64, semantic injection: returns the injected maps at 1/8, 1/16, 1/32."""

    def __init__(self, cfg: TopFormerCfg):
        super().__init__()
        self.cfg = cfg
        self.stem = ConvBN(3, cfg.stem_width, 3, 2, act=nn.ReLU)  # 1/2
        self.blocks = nn.ModuleList()
        cin = cfg.stem_width
        for kernel, t, cout, stride in cfg.blocks:
            self.blocks.append(InvertedResidual(cin, cout, kernel, stride, t, act=nn.ReLU))
            cin = cout
        self.token_dims = [cfg.blocks[i][2] for i in cfg.token_blocks]  # 16, 32, 64, 96
        dim = sum(self.token_dims)
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()  # stochastic depth, growing with depth
        self.transformer = nn.Sequential(*(Block(dim, cfg.key_dim, cfg.num_heads, cfg.attn_ratio, cfg.mlp_ratio, r)
                                           for r in rates))
        self.injection = nn.ModuleList(Injection(self.token_dims[i], self.token_dims[i], cfg.inject_width)
                                       for i in cfg.inject_scales)
        self.feature_info = [dict(num_chs=cfg.inject_width, reduction=2 ** (i + 2)) for i in cfg.inject_scales]

    def forward(self, x):  # (B, 3, H, W)
        x = self.stem(x)  # (B, 16, H/2, W/2)
        tokens = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.cfg.token_blocks:
                tokens.append(x)  # (B, C_k, H/2^(k+2), W/2^(k+2))
        h32, w32 = tokens[-1].shape[-2:]
        size64 = (-(-h32 // 2), -(-w32 // 2))  # ceil, as the official PyramidPoolAgg ((H - 1) // 2 + 1)
        pooled = torch.cat([F.adaptive_avg_pool2d(t, size64) for t in tokens], dim=1)  # (B, 208, H/64, W/64)
        glob = self.transformer(pooled).split(self.token_dims, dim=1)  # global semantics of each scale
        return [inj(tokens[i], glob[i]) for inj, i in zip(self.injection, self.cfg.inject_scales)]


class TopFormer(nn.Module):
    """TopFormer for semantic segmentation: ``model(x)`` returns logits (B, num_classes, H, W)."""

    #: Parameters trained with the head's learning-rate multiplier (the official ``'head': lr_mult=10`` matches
    #: every ``decode_head.*`` parameter, i.e. the simple head and the classifier, not the injection modules).
    head_prefixes = ("head.",)

    def __init__(self, cfg: TopFormerCfg = TopFormerCfg(), num_classes: int = 150):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        self.backbone = TopFormerBackbone(cfg)
        width = cfg.inject_width
        # SimpleHead with is_dw=True: a depthwise 1x1 conv (a per-channel scale) + BN + ReLU
        self.head = nn.Sequential(ConvBN(width, width, groups=width, act=nn.ReLU), nn.Dropout2d(cfg.dropout),
                                  nn.Conv2d(width, num_classes, 1))
        init_weights(self.backbone, self.head, self.head[2])

    def no_weight_decay(self) -> list[str]:
        """Parameters the official recipe exempts from weight decay: none (its ``'norm'`` and
        ``'absolute_pos_embed'`` keys match no TopFormer parameter name; BatchNorms are named ``bn``)."""
        return []

    def forward(self, x):  # (B, 3, H, W)
        return F.interpolate(self.forward_logits(x), x.shape[-2:], mode="bilinear", align_corners=False)

    def forward_logits(self, x):
        """Logits at the decoder's stride (1/8), before the resize to the input size."""
        feats = self.backbone(x)  # 3 x (B, 128, H/8 .. H/32)
        y = feats[0]
        for f in feats[1:]:
            y = y + F.interpolate(f, y.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(y)  # (B, K, H/8, W/8)

    def fuse_for_inference(self) -> nn.Module:
        """An eval-mode copy with BatchNorm folded (:func:`lemore.models.fuse.fuse_for_inference`)."""
        from lemore.models.fuse import fuse_for_inference

        return fuse_for_inference(self)


def init_weights(backbone: nn.Module, head: nn.Module, classifier: nn.Conv2d) -> None:
    """The official initialisation (TopFormer's and SeaFormer's ``init_weights``, mmseg's decode head).

    Backbone convs: normal(0, sqrt(2 / fan_out)) with fan_out = k*k*out/groups, biases 0; every BatchNorm weight 1,
    bias 0. Head: mmcv ConvModule's Kaiming normal (fan_out, ReLU), the classifier normal(0, 0.01) with bias 0.
    """
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in (*backbone.modules(), *head.modules()):
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.normal_(classifier.weight, 0, 0.01)
    nn.init.zeros_(classifier.bias)


# ------------------------------------------------------------------------------------------ official weights
# Official (mmseg EncoderDecoder) names -> ours. Conv2d_BN (``c``/``bn``) and mmcv's ConvModule (``conv``/``bn``)
# are our ConvBN's ``0``/``1``; the official inverted residuals interleave activation modules (``conv.0``, ``conv.2``,
# ``conv.4`` hold weights), ours do not (``conv.0``, ``.1``, ``.2``).
_RULES: list[tuple[re.Pattern, str]] = [(re.compile(p), r) for p, r in [
    (r"backbone\.tpm\.stem\.0\.", "backbone.stem."),
    (r"backbone\.tpm\.layer(\d+)\.conv\.(\d+)\.", "backbone.blocks.{layer}.conv.{half}."),
    (r"backbone\.trans\.transformer_blocks\.(\d+)\.attn\.to_([qkv])\.", r"backbone.transformer.\1.attn.\2."),
    (r"backbone\.trans\.transformer_blocks\.(\d+)\.attn\.proj\.1\.", r"backbone.transformer.\1.attn.proj.1."),
    (r"backbone\.trans\.transformer_blocks\.(\d+)\.mlp\.(fc1|fc2)\.", r"backbone.transformer.\1.mlp.\2."),
    (r"backbone\.trans\.transformer_blocks\.(\d+)\.mlp\.dwconv\.", r"backbone.transformer.\1.mlp.dw."),
    (r"backbone\.SIM\.(\d+)\.local_embedding\.", "backbone.injection.{sim}.local_embed."),
    (r"backbone\.SIM\.(\d+)\.global_embedding\.", "backbone.injection.{sim}.global_embed."),
    (r"backbone\.SIM\.(\d+)\.global_act\.", "backbone.injection.{sim}.global_gate."),
    (r"decode_head\.linear_fuse\.", "head.0."),
    (r"decode_head\.conv_seg\.", "head.2."),
]]
_CONV_BN = {"c": "0", "conv": "0", "bn": "1"}


def official_key(key: str, cfg: TopFormerCfg = TopFormerCfg()) -> str | None:
    """Our state-dict key for an official TopFormer checkpoint key (``backbone.tpm.layer3.conv.0.c.weight``), or
    None if the key is not one of TopFormer's (:func:`lemore.convert.convert_state_dict` reports those)."""
    for pattern, repl in _RULES:
        m = pattern.match(key)
        if m is None:
            continue
        g = m.groups()
        new = repl
        if "{layer}" in repl:  # official layer1..9 -> blocks.0..8; weights at conv.0/2/4 -> conv.0/1/2
            new = repl.format(layer=int(g[0]) - 1, half=int(g[1]) // 2)
        elif "{sim}" in repl:  # official SIM.1..3 (SIM.0 is an Identity for the 1/4 scale) -> injection.0..2
            scale = int(g[0])
            if scale not in cfg.inject_scales:
                return None
            new = repl.format(sim=cfg.inject_scales.index(scale))
        else:
            new = m.expand(repl)
        rest = key[m.end():]
        head, _, leaf = rest.rpartition(".")
        if head:  # the ConvBN-like part: c / conv / bn
            if head not in _CONV_BN:
                return None
            rest = f"{_CONV_BN[head]}.{leaf}"
        return new + rest
    return None


# --------------------------------------------------------------------------------------------------- builder
def _cfg(overrides: dict) -> TopFormerCfg:
    valid = {f.name for f in fields(TopFormerCfg)}
    bad = sorted(set(overrides) - valid)
    if bad:
        raise TypeError(f"unknown TopFormer option(s) {bad}; valid options: {sorted(valid)}")
    return replace(TopFormerCfg(), **overrides)


@register_model
def topformer_t(num_classes: int = 150, **overrides) -> TopFormer:
    """TopFormer-T (1.4M parameters, 0.6 GFLOPs and 33.6 mIoU on ADE20K in the TopFormer README).

    Args:
        num_classes: output classes.
        **overrides: any :class:`TopFormerCfg` field, e.g. ``drop_path_rate=0.0``.
    """
    return TopFormer(_cfg(overrides), num_classes)
