"""SeaFormer-T: Squeeze-enhanced Axial Transformer for Mobile Semantic Segmentation.

Wan, Huang, Lu, Yu, Zhang, ICLR 2023, arXiv:2301.13156. A successor of TopFormer (same authors' group). Written for
this project from the official code (github.com/fudan-zvg/SeaFormer at commit 9718d05, ``seaformer-seg/``: the
backbone ``mmseg/models/backbones/seaformer.py``, the head ``mmseg/models/decode_heads/light_head.py`` and
``local_configs/seaformer/seaformer_tiny.py``), with this project's layer names; :func:`official_key` maps the
official checkpoint's names onto ours.

Data flow (SeaFormer-T)::

    x (B,3,H,W) -> stem 3x3/2 (16) -> MobileNetV2 blocks (ReLU): 1/4 (16) -> 1/8 (32) -> 1/16 (64)
      -> 1/32 (128) -> 2 SeaFormer blocks (key_dim 16, MLP ratio 2)
      -> 1/64 (160) -> 2 SeaFormer blocks (key_dim 24, MLP ratio 4)
    SeaFormer block: x + DropPath(SeaAttention(x)), x + DropPath(MLP(x)), 4 heads, values 2 x key_dim wide, ReLU6.
    SeaAttention = squeeze-axial attention * detail enhancement:
      q, k, v = 1x1 conv + BN of x
      detail = BN(1x1(ReLU6(BN(dw3x3(cat(q, k, v))))))                       (local detail, full resolution)
      rows: q, k, v averaged over W (+ learned axial position embeddings on q, k, resampled from 16) -> attention
      over the H rows; columns likewise over W; out = v + rows (broadcast over W) + columns (broadcast over H)
      -> ReLU6 -> 1x1 conv + BN -> hardsigmoid, multiplied with detail
    light head: 1/8 (32) fused with 1/32 (128) into 64 channels, then with 1/64 (160) into 96 channels, each
      fusion BN(conv(local)) * hardsigmoid(upsampled BN(conv(global))); 1x1 depthwise conv + BN + ReLU; dropout 0.1;
      1x1 classifier, logits at 1/8.

The published figures (1.7M params, 0.6 GFLOPs, 35.0 mIoU on ADE20K val at 512x512, the SeaFormer-seg README's
``SeaFormer-T_512x512_2x8_160k``) were counted with mmcv's FLOP counter, which skips the attention matmuls; this
project's counter (:mod:`lemore.profiling`, fvcore) includes them (well under 1% here: the axial attention is over
16 rows / columns at 1/32 and 8 at 1/64).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import StochasticDepth

from lemore.models.lemore import ConvBN, InvertedResidual
from lemore.models.topformer import MLP, init_weights
from lemore.registry import register_model

__all__ = ["SeaFormerCfg", "SeaFormer", "official_key", "OFFICIAL_CHECKPOINT"]

#: The official ADE20K checkpoint this model reproduces (SeaFormer-seg README, "Results on ADE20K").
OFFICIAL_CHECKPOINT = "SeaFormer-T_512x512_2x8_160k (35.0 mIoU)"

Blocks = tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True)
class SeaFormerCfg:
    """SeaFormer-T's hyper-parameters (``local_configs/seaformer/seaformer_tiny.py`` and the backbone defaults)."""

    stem_width: int = 16
    # five stages of (kernel, expansion, out channels, stride) inverted residuals: 1/4, 1/8, 1/16, 1/32, 1/64
    stages: tuple[Blocks, ...] = (
        ((3, 1, 16, 1), (3, 4, 16, 2), (3, 3, 16, 1)),
        ((5, 3, 32, 2), (5, 3, 32, 1)),
        ((3, 3, 64, 2), (3, 3, 64, 1)),
        ((5, 3, 128, 2),),
        ((3, 6, 160, 2),),
    )
    # SeaFormer blocks after the last len(depths) stages
    depths: tuple[int, ...] = (2, 2)
    key_dims: tuple[int, ...] = (16, 24)
    mlp_ratios: tuple[int, ...] = (2, 4)
    num_heads: int = 4
    attn_ratio: int = 2
    pos_embed_len: int = 16  # axial position embeddings, resampled (linear) to the actual number of rows / columns
    drop_path_rate: float = 0.1
    # light head: fuse the 1/8 map with each transformer stage's output
    head_dims: tuple[int, ...] = (64, 96)
    dropout: float = 0.1


# --------------------------------------------------------------------------------------------- building blocks
class AxialPositionEmbedding(nn.Module):
    """A learned (1, C, L) embedding added to squeezed (B, C, N) tokens, linearly resampled from L to N."""

    def __init__(self, dim: int, length: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, dim, length))

    def forward(self, x):  # (B, C, N)
        return x + F.interpolate(self.pos_embed, size=x.shape[-1], mode="linear", align_corners=False)


class SeaAttention(nn.Module):
    """Squeeze-enhanced axial attention with detail enhancement (see the module docstring)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: int, pos_len: int, act=nn.ReLU6):
        super().__init__()
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, attn_ratio * key_dim
        self.scale = key_dim**-0.5
        qk, dv = key_dim * num_heads, self.value_dim * num_heads
        self.q, self.k, self.v = ConvBN(dim, qk), ConvBN(dim, qk), ConvBN(dim, dv)
        self.row_q, self.row_k = AxialPositionEmbedding(qk, pos_len), AxialPositionEmbedding(qk, pos_len)
        self.col_q, self.col_k = AxialPositionEmbedding(qk, pos_len), AxialPositionEmbedding(qk, pos_len)
        self.row_proj = nn.Sequential(act(), ConvBN(dv, dv))
        self.col_proj = nn.Sequential(act(), ConvBN(dv, dv))
        self.proj = nn.Sequential(act(), ConvBN(dv, dim))
        detail = 2 * qk + dv
        self.detail_dw = ConvBN(detail, detail, 3, groups=detail, act=act)
        self.detail_pw = ConvBN(detail, dim)

    def _axial(self, q, k, v, n: int):  # q, k (B, heads*dk, N), v (B, heads*dv, N) -> (B, heads*dv, N)
        b = q.shape[0]
        q = q.reshape(b, self.num_heads, self.key_dim, n).transpose(-1, -2)  # (B, heads, N, dk)
        k = k.reshape(b, self.num_heads, self.key_dim, n)  # (B, heads, dk, N)
        v = v.reshape(b, self.num_heads, self.value_dim, n).transpose(-1, -2)  # (B, heads, N, dv)
        attn = ((q @ k) * self.scale).softmax(dim=-1)  # (B, heads, N, N), explicit matmuls: counted
        return (attn @ v).transpose(-1, -2).reshape(b, self.num_heads * self.value_dim, n)

    def forward(self, x):  # (B, C, H, W)
        b, _, h, w = x.shape
        q, k, v = self.q(x), self.k(x), self.v(x)
        detail = self.detail_pw(self.detail_dw(torch.cat([q, k, v], dim=1)))  # (B, C, H, W)
        rows = self._axial(self.row_q(q.mean(-1)), self.row_k(k.mean(-1)), v.mean(-1), h)  # (B, dv*heads, H)
        cols = self._axial(self.col_q(q.mean(-2)), self.col_k(k.mean(-2)), v.mean(-2), w)  # (B, dv*heads, W)
        rows = self.row_proj(rows.unsqueeze(-1))  # (B, dv*heads, H, 1)
        cols = self.col_proj(cols.unsqueeze(-2))  # (B, dv*heads, 1, W)
        out = self.proj(v + rows + cols)  # broadcast back to (B, C, H, W)
        return F.hardsigmoid(out) * detail


class SeaBlock(nn.Module):
    """x + DropPath(SeaAttention(x)), then x + DropPath(MLP(x))."""

    def __init__(self, dim, key_dim, num_heads, attn_ratio, mlp_ratio, pos_len, drop_path, act=nn.ReLU6):
        super().__init__()
        self.attn = SeaAttention(dim, key_dim, num_heads, attn_ratio, pos_len, act)
        self.mlp = MLP(dim, dim * mlp_ratio, act)
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, x):
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.mlp(x))


class Fusion(nn.Module):
    """Light head fusion: ``BN(conv(local)) * hardsigmoid(BN(conv(global)))``, global upsampled to the local size."""

    def __init__(self, local_dim: int, global_dim: int, out_dim: int):
        super().__init__()
        self.local_embed = ConvBN(local_dim, out_dim)
        self.global_gate = ConvBN(global_dim, out_dim)

    def forward(self, local, glob):
        gate = F.interpolate(F.hardsigmoid(self.global_gate(glob)), local.shape[-2:], mode="bilinear",
                             align_corners=False)
        return self.local_embed(local) * gate


# ----------------------------------------------------------------------------------------------------- model
class SeaFormerBackbone(nn.Module):
    """Returns the 1/8 map and the outputs of the transformer stages (1/32, 1/64 for SeaFormer-T)."""

    def __init__(self, cfg: SeaFormerCfg):
        super().__init__()
        self.cfg = cfg
        self.stem = ConvBN(3, cfg.stem_width, 3, 2, act=nn.ReLU)  # 1/2
        self.stages = nn.ModuleList()
        cin = cfg.stem_width
        for blocks in cfg.stages:
            stage = []
            for kernel, t, cout, stride in blocks:
                stage.append(InvertedResidual(cin, cout, kernel, stride, t, act=nn.ReLU))
                cin = cout
            self.stages.append(nn.Sequential(*stage))
        first = len(cfg.stages) - len(cfg.depths)  # the stages followed by SeaFormer blocks
        self.transformers = nn.ModuleList()
        for j, depth in enumerate(cfg.depths):
            dim = cfg.stages[first + j][-1][2]
            rates = torch.linspace(0, cfg.drop_path_rate, depth).tolist()  # per stage, as in the official code
            self.transformers.append(nn.Sequential(*(
                SeaBlock(dim, cfg.key_dims[j], cfg.num_heads, cfg.attn_ratio, cfg.mlp_ratios[j], cfg.pos_embed_len, r)
                for r in rates)))
        self.first_transformer_stage = first
        dims = [cfg.stages[1][-1][2]] + [cfg.stages[first + j][-1][2] for j in range(len(cfg.depths))]
        self.feature_info = [dict(num_chs=c, reduction=2 ** r) for c, r in
                             zip(dims, [3] + [first + 2 + j for j in range(len(cfg.depths))])]

    def forward(self, x):  # (B, 3, H, W)
        x = self.stem(x)  # (B, 16, H/2, W/2)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)  # (B, C_i, H/2^(i+2), W/2^(i+2))
            if i == 1:
                outs.append(x)  # the 1/8 map: the head's detail branch
            if i >= self.first_transformer_stage:
                x = self.transformers[i - self.first_transformer_stage](x)
                outs.append(x)
        return outs  # [(B, 32, H/8, W/8), (B, 128, H/32, W/32), (B, 160, H/64, W/64)]


class LightHead(nn.Module):
    """The light segmentation head: the 1/8 map fused with each transformer stage's output in turn, then a 1x1
    depthwise conv + BN + ReLU, dropout and the 1x1 classifier (the official ``LightHead`` with ``is_dw=True``)."""

    def __init__(self, in_dims: list[int], head_dims: tuple[int, ...], num_classes: int, dropout: float):
        super().__init__()
        ins = [in_dims[0], *head_dims[:-1]]
        self.fusions = nn.ModuleList(Fusion(ins[j], in_dims[j + 1], head_dims[j]) for j in range(len(head_dims)))
        width = head_dims[-1]
        self.fuse = ConvBN(width, width, groups=width, act=nn.ReLU)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, feats):
        detail, *globs = feats
        for fusion, glob in zip(self.fusions, globs):
            detail = fusion(detail, glob)  # (B, 64 then 96, H/8, W/8)
        return self.classifier(self.dropout(self.fuse(detail)))  # (B, K, H/8, W/8)


class SeaFormer(nn.Module):
    """SeaFormer for semantic segmentation: ``model(x)`` returns logits (B, num_classes, H, W)."""

    #: Parameters trained with the head's learning-rate multiplier (the official ``'head': lr_mult=10`` matches the
    #: ``decode_head.*`` parameters: the light head's fusions, its depthwise conv and the classifier).
    head_prefixes = ("head.",)

    def __init__(self, cfg: SeaFormerCfg = SeaFormerCfg(), num_classes: int = 150):
        super().__init__()
        self.cfg, self.num_classes = cfg, num_classes
        self.backbone = SeaFormerBackbone(cfg)
        self.head = LightHead([f["num_chs"] for f in self.backbone.feature_info], cfg.head_dims, num_classes,
                              cfg.dropout)
        init_weights(self.backbone, self.head, self.head.classifier)

    def no_weight_decay(self) -> list[str]:
        """The axial position embeddings: the official recipe's ``'pos_emb': decay_mult=0`` (its ``'norm'`` key
        matches no SeaFormer parameter name; BatchNorms are named ``bn``)."""
        return [n for n, _ in self.named_parameters() if n.endswith(".pos_embed")]

    def forward(self, x):  # (B, 3, H, W)
        return F.interpolate(self.forward_logits(x), x.shape[-2:], mode="bilinear", align_corners=False)

    def forward_logits(self, x):
        """Logits at the decoder's stride (1/8), before the resize to the input size."""
        return self.head(self.backbone(x))  # (B, K, H/8, W/8)

    def fuse_for_inference(self) -> nn.Module:
        """An eval-mode copy with BatchNorm folded (:func:`lemore.models.fuse.fuse_for_inference`)."""
        from lemore.models.fuse import fuse_for_inference

        return fuse_for_inference(self)


# ------------------------------------------------------------------------------------------ official weights
_ATTN = {"to_q": "q", "to_k": "k", "to_v": "v", "proj_encode_row.1": "row_proj.1",
         "proj_encode_column.1": "col_proj.1", "proj.1": "proj.1", "dwconv": "detail_dw", "pwconv": "detail_pw",
         "pos_emb_rowq": "row_q", "pos_emb_rowk": "row_k", "pos_emb_columnq": "col_q", "pos_emb_columnk": "col_k"}
_RULES: list[tuple[re.Pattern, str]] = [(re.compile(p), r) for p, r in [
    (r"backbone\.smb1\.stem_block\.0\.", "backbone.stem."),
    (r"backbone\.smb(\d+)\.layer(\d+)\.conv\.(\d+)\.", "backbone.stages.{stage}.{layer}.conv.{half}."),
    (r"backbone\.trans(\d+)\.transformer_blocks\.(\d+)\.attn\.(" + "|".join(map(re.escape, _ATTN)) + r")\.",
     "backbone.transformers.{trans}.{block}.attn.{attn}."),
    (r"backbone\.trans(\d+)\.transformer_blocks\.(\d+)\.mlp\.(fc1|fc2)\.",
     "backbone.transformers.{trans}.{block}.mlp.{g2}."),
    (r"backbone\.trans(\d+)\.transformer_blocks\.(\d+)\.mlp\.dwconv\.",
     "backbone.transformers.{trans}.{block}.mlp.dw."),
    (r"decode_head\.fuse(\d+)\.(local_embedding|global_act)\.", "head.fusions.{fuse}.{fusion_part}."),
    (r"decode_head\.linear_fuse\.", "head.fuse."),
    (r"decode_head\.conv_seg\.", "head.classifier."),
]]
_CONV_BN = {"c": "0", "conv": "0", "bn": "1"}


def official_key(key: str, cfg: SeaFormerCfg = SeaFormerCfg()) -> str | None:
    """Our state-dict key for an official SeaFormer checkpoint key (``backbone.smb2.layer1.conv.0.c.weight``), or
    None if the key is not one of SeaFormer's (:func:`lemore.convert.convert_state_dict` reports those)."""
    for pattern, repl in _RULES:
        m = pattern.match(key)
        if m is None:
            continue
        g = m.groups()
        fmt = {}
        if "{stage}" in repl:  # smb1..5 -> stages.0..4, layer1.. -> 0..; weights at conv.0/2/4 -> conv.0/1/2
            fmt = dict(stage=int(g[0]) - 1, layer=int(g[1]) - 1, half=int(g[2]) // 2)
        elif "{trans}" in repl:
            part = g[2] if len(g) > 2 else ""
            fmt = dict(trans=int(g[0]) - 1, block=int(g[1]), attn=_ATTN.get(part, ""), g2=part)
        elif "{fuse}" in repl:
            fmt = dict(fuse=int(g[0]) - 1, fusion_part="local_embed" if g[1] == "local_embedding" else "global_gate")
        new = repl.format(**fmt)
        rest = key[m.end():]
        head, _, leaf = rest.rpartition(".")
        if head:  # the ConvBN-like part: c / conv / bn
            if head not in _CONV_BN:
                return None
            rest = f"{_CONV_BN[head]}.{leaf}"
        return new + rest
    return None


# --------------------------------------------------------------------------------------------------- builder
def _cfg(overrides: dict) -> SeaFormerCfg:
    valid = {f.name for f in fields(SeaFormerCfg)}
    bad = sorted(set(overrides) - valid)
    if bad:
        raise TypeError(f"unknown SeaFormer option(s) {bad}; valid options: {sorted(valid)}")
    return replace(SeaFormerCfg(), **overrides)


@register_model
def seaformer_t(num_classes: int = 150, **overrides) -> SeaFormer:
    """SeaFormer-T (1.7M parameters, 0.6 GFLOPs and 35.0 mIoU on ADE20K in the SeaFormer paper and README).

    Args:
        num_classes: output classes.
        **overrides: any :class:`SeaFormerCfg` field, e.g. ``drop_path_rate=0.0``.
    """
    return SeaFormer(_cfg(overrides), num_classes)
