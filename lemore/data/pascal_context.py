"""PASCAL Context: 60 classes with background (``pascal_context``) or 59 without (``pascal_context_59``).

Mirrors mmseg's ``PascalContextDataset`` (60 classes, ``reduce_zero_label=False``: background is class 0) and
``PascalContextDataset59`` (``reduce_zero_label=True``: background 0 -> 255, others v -> v - 1). Labels are
the ``SegmentationClassContext/*.png`` written by mmseg's ``tools/dataset_converters/pascal_context.py`` (0 =
background, 1..59 in the alphabetical order below); the image lists are ``ImageSets/SegmentationContext``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from lemore.data.base import SegDataset, identity_lut, reduce_zero_label_lut
from lemore.data.io import DatasetError

PASCAL_CONTEXT_CLASSES = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book",
    "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse",
    "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform", "pottedplant",
    "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train",
    "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)  # fmt: skip

PASCAL_CONTEXT_PALETTE = [
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7), (150, 5, 61),
    (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3),
    (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224), (9, 7, 230),
    (220, 220, 220), (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71),
    (255, 41, 10), (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8),
    (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0),
    (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
]  # fmt: skip


class PascalContext(SegDataset):
    """PASCAL Context, 60 classes (background is class 0): 4,996 train / 5,104 val images."""

    name = "pascal_context"
    CLASSES = PASCAL_CONTEXT_CLASSES
    PALETTE = PASCAL_CONTEXT_PALETTE
    SPLITS: ClassVar[dict[str, str]] = {"train": "train", "val": "val"}
    LAYOUT = """\
  VOCdevkit/VOC2010/
    JPEGImages/2008_000002.jpg ...
    SegmentationClassContext/2008_000002.png ...  (0 = background, 1..59 = classes)
    ImageSets/SegmentationContext/{train,val}.txt  (one image id per line)"""

    def list_files(self) -> list[tuple[Path, Path]]:
        split_file = self.root / "ImageSets" / "SegmentationContext" / f"{self.split}.txt"
        if not split_file.is_file():
            raise DatasetError(
                f"{self.name} {self.split}: split file {split_file} does not exist; expected layout:"
                f"\n{self.LAYOUT}"
            )
        ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        img_dir, ann_dir = self.root / "JPEGImages", self.root / "SegmentationClassContext"
        return [(img_dir / f"{i}.jpg", ann_dir / f"{i}.png") for i in ids]

    def label_lut(self, label_path: Path) -> torch.Tensor:
        return identity_lut(60)


class PascalContext59(PascalContext):
    """PASCAL Context, 59 classes: background is ignored (mmseg ``PascalContextDataset59``)."""

    name = "pascal_context_59"
    CLASSES = PASCAL_CONTEXT_CLASSES[1:]
    PALETTE = PASCAL_CONTEXT_PALETTE[1:]

    def label_lut(self, label_path: Path) -> torch.Tensor:
        return reduce_zero_label_lut(59)
