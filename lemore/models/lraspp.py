"""LR-ASPP with a MobileNetV3-Large backbone (Howard et al., ICCV 2019, arXiv:1905.02244), from torchvision.

A Table 1 peer of LeMoRe (3.2M params, 2.0 GFLOPs, 51 ms in the paper). torchvision builds it with a
dilated last stage (output stride 16), as in the MobileNetV3 paper's segmentation setting.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from lemore.registry import register_model


class LRASPP(nn.Module):
    """Returns the logits tensor (torchvision returns ``{"out": ...}``), already at the input size."""

    def __init__(self, num_classes: int = 150, pretrained_backbone: str | None = None):
        super().__init__()
        from torchvision.models.segmentation import lraspp_mobilenet_v3_large as build

        self.num_classes = num_classes
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
