"""ImageNet-1K for pretraining the LeMoRe encoder: ``torchvision.datasets.ImageFolder`` of class folders.

Both splits are class folders (``train/n01440764/*.JPEG``, ``val/n01440764/*.JPEG``; the usual
``valprep.sh`` layout). Images are decoded with torchvision.io (see ``lemore.data.io``) rather than PIL, which
also handles ImageNet's few CMYK and grayscale JPEGs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchvision import tv_tensors
from torchvision.datasets import ImageFolder

from lemore.data.base import missing_root_message
from lemore.data.io import DatasetError, read_image


def _load_image(path: str) -> tv_tensors.Image:
    return tv_tensors.Image(read_image(path))


class ImageNet(ImageFolder):
    """ImageNet-1K (1,281,167 train / 50,000 val images in 1,000 class folders).

    Args:
        root: the folder holding ``train/`` and ``val/``.
        split: "train" or "val".
        transform: applied to the uint8 ``tv_tensors.Image`` (3, H, W); None returns it as decoded.

    Raises:
        DatasetError: unknown split, or missing root / split folder.
    """

    name = "imagenet"
    SPLITS = ("train", "val")
    LAYOUT = """\
  imagenet/
    train/n01440764/n01440764_10026.JPEG ...  (one folder per class, 1000 folders)
    val/n01440764/ILSVRC2012_val_00000293.JPEG ...  (the same class folders)"""

    def __init__(
        self, root: str | os.PathLike, split: str = "train", transform: Callable[[Any], Any] | None = None
    ) -> None:
        if split not in self.SPLITS:
            raise DatasetError(f"unknown split {split!r} for imagenet; choose from {list(self.SPLITS)}")
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(missing_root_message(self.name, root, self.LAYOUT))
        if not (root / split).is_dir():
            raise DatasetError(
                f"imagenet {split}: folder {root / split} does not exist; expected layout:\n{self.LAYOUT}"
            )
        try:
            super().__init__(str(root / split), transform=transform, loader=_load_image)
        except FileNotFoundError as e:  # no class folders / no images
            raise DatasetError(f"imagenet {split}: {e}; expected layout:\n{self.LAYOUT}") from None
        self.split = split
        self.classes = tuple(self.classes)  # type: ignore[assignment]

    @property
    def num_classes(self) -> int:
        return len(self.classes)
