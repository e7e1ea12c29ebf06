"""LR-ASPP with a MobileNetV3-Large backbone (Howard et al., ICCV 2019, arXiv:1905.02244), from torchvision.

Two Table 1 peers of LeMoRe, both built by torchvision with a dilated last stage (output stride 16), as in the
MobileNetV3 paper's segmentation setting, under torchvision's LR-ASPP head (128 channels, skip from 1/8):

* ``lraspp_mobilenet_v3_large``: 3.2M params, 2.0 GFLOPs, 51 ms in the paper's Table 1.
* ``lraspp_mobilenet_v3_large_reduced``: the "reduced tail" backbone (the last stage's and the final 1x1 conv's
  channels halved, ``mobilenet_v3_large(reduced_tail=True)``, the MobileNetV3 paper's "RF2"): 1.6M params,
  1.3 GFLOPs, 33 ms, 32.3 mIoU in Table 1. torchvision's model has 1.77M parameters at 150 classes: its backbone
  alone has 1.62M, the LR-ASPP head and the two classifiers another 0.15M, so the published 1.6M cannot count the
  same head (see ``docs/peers.md``, "The budget").
"""

from __future__ import annotations

import torch
import torch.nn as nn

from lemore.registry import register_model


class LRASPP(nn.Module):
    """Returns the logits tensor (torchvision returns ``{"out": ...}``), already at the input size."""

    #: The LR-ASPP head and its classifiers (mmseg's ``decode_head``); its recipe uses no head multiplier.
    head_prefixes = ("net.classifier.",)

    def __init__(self, num_classes: int = 150, pretrained_backbone: str | None = None, reduced_tail: bool = False):
        super().__init__()
        from torchvision.models import mobilenet_v3_large
        from torchvision.models.segmentation import lraspp_mobilenet_v3_large as build
        from torchvision.models.segmentation.lraspp import _lraspp_mobilenetv3

        self.num_classes = num_classes
        if reduced_tail:  # torchvision's public builder has no reduced_tail switch; its own helper builds the head
            self.net = _lraspp_mobilenetv3(mobilenet_v3_large(weights=None, dilated=True, reduced_tail=True),
                                           num_classes)
        else:
            self.net = build(weights=None, weights_backbone=None, num_classes=num_classes)
        if pretrained_backbone:
            # A local torchvision mobilenet_v3_large ImageNet state dict (weights-only load, never downloaded).
            state = torch.load(pretrained_backbone, map_location="cpu", weights_only=True)
            features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
            missing, unexpected = self.net.backbone.load_state_dict(features, strict=False)
            if missing or unexpected:
                raise ValueError(f"{pretrained_backbone}: missing {missing[:5]}, unexpected {unexpected[:5]}")

    def forward(self, x):  # (B, 3, H, W)
        return self.net(x)["out"]

    def forward_logits(self, x):
        """Logits at the decoder's stride (1/8), before torchvision's resize to the input size."""
        return self.net.classifier(self.net.backbone(x))  # (B, K, H/8, W/8)


@register_model
def lraspp_mobilenet_v3_large(num_classes: int = 150, pretrained_backbone: str | None = None) -> LRASPP:
    """LR-ASPP MobileNetV3-Large (torchvision), 3.2M parameters in the paper's Table 1.

    Args:
        num_classes: output classes.
        pretrained_backbone: optional local path to MobileNetV3-Large ImageNet weights.
    """
    return LRASPP(num_classes, pretrained_backbone)


@register_model
def lraspp_mobilenet_v3_large_reduced(num_classes: int = 150, pretrained_backbone: str | None = None) -> LRASPP:
    """LR-ASPP MobileNetV3-Large with the reduced tail (torchvision), "MobileNetV3-Large-reduce" of Table 1.

    Args:
        num_classes: output classes.
        pretrained_backbone: optional local path to reduced-tail MobileNetV3-Large ImageNet weights (torchvision
            publishes none).
    """
    return LRASPP(num_classes, pretrained_backbone, reduced_tail=True)
