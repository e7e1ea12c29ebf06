"""SegFormer-B0 baseline: ``transformers``' SegformerForSemanticSegmentation with the MiT-B0 config.

Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers",
NeurIPS 2021, arXiv:2105.15203. Built from a config, never from the hub: weights are optional and local
(a ``save_pretrained`` folder or a weights-only state dict, e.g. MiT-B0 ImageNet weights converted once).

Attention runs through PyTorch's ``scaled_dot_product_attention`` (transformers' ``attn_implementation="sdpa"``,
fused kernels on CUDA) for training and inference. FLOP counting needs the explicit matmuls of the ``"eager"``
implementation, which fvcore sees (it does not count SDPA): ``lemore.profiling.count_flops`` switches any model
with an ``attn_implementation`` property to eager while it counts. Both give the same outputs (tested).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from lemore.registry import register_model


#: transformers' attention implementations that SegFormer supports and this project uses.
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


def mit_b0_config(num_classes: int, attn_implementation: str = "sdpa"):
    from transformers import SegformerConfig

    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation={attn_implementation!r}; choose from {list(ATTN_IMPLEMENTATIONS)}")
    # MiT-B0 (the SegFormer paper's Table 6) with the all-MLP decoder of width 256.
    cfg = SegformerConfig(
        num_channels=3, num_encoder_blocks=4, depths=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1],
        hidden_sizes=[32, 64, 160, 256], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
        num_attention_heads=[1, 2, 5, 8], mlp_ratios=[4, 4, 4, 4], hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.1,
        drop_path_rate=0.1, decoder_hidden_size=256, num_labels=num_classes, semantic_loss_ignore_index=255,
    )
    cfg._attn_implementation = attn_implementation  # no hub lookup: set on the config before the model is built
    return cfg


class SegFormer(nn.Module):
    """Wraps the transformers model so that ``model(x)`` returns logits at the input size, like LeMoRe."""

    #: The official recipe's ``'head': lr_mult=10`` matches mmseg's ``decode_head.*``: here ``net.decode_head.*``.
    head_prefixes = ("net.decode_head.",)

    def __init__(self, num_classes: int = 150, pretrained: str | None = None, attn_implementation: str = "sdpa"):
        super().__init__()
        from transformers import SegformerForSemanticSegmentation

        self.num_classes = num_classes
        self.net = SegformerForSemanticSegmentation(mit_b0_config(num_classes, attn_implementation))
        if pretrained:
            load_local_weights(self.net, Path(pretrained))

    def no_weight_decay(self) -> list[str]:
        """What the official recipe's ``'norm': decay_mult=0`` matches: the MiT encoder's LayerNorms (NVlabs'
        ``norm1``/``norm2``/``norm{i}``/``attn.norm``/``patch_embed{i}.norm`` are transformers' ``layer_norm*``). Its
        ``'pos_block'`` key matches nothing in MiT; the decode head's BatchNorm (mmcv's ``bn``) decays."""
        return [n for n, _ in self.named_parameters() if n.startswith("net.segformer.") and "layer_norm" in n]

    @property
    def attn_implementation(self) -> str:
        """``"sdpa"`` (fused ``scaled_dot_product_attention``) or ``"eager"`` (explicit matmuls); settable."""
        return self.net.config._attn_implementation

    @attn_implementation.setter
    def attn_implementation(self, value: str) -> None:
        if value not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation={value!r}; choose from {list(ATTN_IMPLEMENTATIONS)}")
        self.net.set_attn_implementation(value)

    def forward(self, x):  # (B, 3, H, W)
        return F.interpolate(self.forward_logits(x), x.shape[-2:], mode="bilinear", align_corners=False)

    def forward_logits(self, x):
        """Logits at the decoder's stride (1/4), before the resize to the input size."""
        return self.net(pixel_values=x, return_dict=False)[0]  # (B, K, H/4, W/4)


def load_local_weights(net: nn.Module, path: Path) -> None:
    """Load MiT / SegFormer weights from a local file or folder (safetensors or weights-only torch)."""
    if path.is_dir():
        candidates = [path / "model.safetensors", path / "pytorch_model.bin"]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {candidates[0].parent}")
    if not path.exists():
        raise FileNotFoundError(f"SegFormer weights {str(path)!r} do not exist")
    from lemore.checkpoint import load_weights  # safetensors or weights-only torch; errors name the file

    state = load_weights(path)
    rename = hub_key_renamer(net)
    state = {rename(k): v for k, v in state.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    # An ImageNet MiT checkpoint has no decode head: only the encoder must be complete.
    missing_enc = [k for k in missing if k.startswith("segformer.")]
    if missing_enc:
        raise ValueError(f"{path}: encoder weights missing for {missing_enc[:5]} (+{max(0, len(missing_enc) - 5)})")
    if unexpected:
        raise ValueError(f"{path}: unexpected keys {unexpected[:5]} (+{max(0, len(unexpected) - 5)})")


def hub_key_renamer(net: nn.Module):
    """``key -> key`` from a Hugging Face checkpoint's names to ``net``'s (without our ``net.`` prefix).

    The hub checkpoints (e.g. ``nvidia/segformer-b0-finetuned-ade-512-512``) use the names of transformers 4
    (``segformer.encoder.block.0.0.attention.self.query.weight``, ``decode_head.linear_c.0.proj.weight``);
    transformers 5 renamed the modules and renames the keys on ``from_pretrained`` with its own conversion
    mapping, which this applies (and ``save_pretrained`` reverses, so it writes the hub's names). With transformers
    4 the names are the same: the identity.
    """
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key
    except ImportError:  # transformers 4: module names are the checkpoint's
        return lambda key: key
    transforms = get_model_conversion_mapping(net)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if not isinstance(t, WeightRenaming)]
    return lambda key: rename_source_key(key, renamings, converters)[0]


@register_model
def segformer_b0(num_classes: int = 150, pretrained: str | None = None,
                 attn_implementation: str = "sdpa") -> SegFormer:
    """SegFormer-B0 (MiT-B0 encoder, all-MLP decoder), 3.8M parameters at 150 classes.

    Args:
        num_classes: output classes.
        pretrained: optional local weights (folder or file); never downloaded.
        attn_implementation: "sdpa" (training and inference) or "eager" (what FLOP counters see).
    """
    return SegFormer(num_classes, pretrained, attn_implementation)
