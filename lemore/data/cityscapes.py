"""Cityscapes (fine annotations): 19 train ids, everything else ignored.

Mirrors mmseg's ``CityscapesDataset``: images ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and labels
``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` (written by cityscapesscripts'
``createTrainIdLabelImgs``, which mmseg's ``tools/dataset_converters/cityscapes.py`` runs). Where a
``*_labelTrainIds.png`` is missing, the ``*_gtFine_labelIds.png`` that ships with the dataset is read and
converted with cityscapesscripts' own label table, so a fresh download works without the conversion step.
Names and colours come from the same table.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from cityscapesscripts.helpers.labels import labels as _CS_LABELS
from cityscapesscripts.helpers.labels import trainId2label

from lemore.data.base import IGNORE_INDEX, SegDataset, identity_lut

CITYSCAPES_CLASSES = tuple(trainId2label[t].name for t in range(19))
CITYSCAPES_PALETTE = [tuple(trainId2label[t].color) for t in range(19)]


def label_id_to_train_id_lut() -> torch.Tensor:
    """int16 (256,) table labelId -> trainId from ``cityscapesscripts.helpers.labels``; void ids -> 255.

    Stored ids 0..33 are valid; the table's id -1 (license plate) is never written to a labelIds PNG.
    """
    lut = torch.full((256,), -1, dtype=torch.int16)
    for label in _CS_LABELS:
        if label.id >= 0:
            lut[label.id] = label.trainId if 0 <= label.trainId < IGNORE_INDEX else IGNORE_INDEX
    return lut


class Cityscapes(SegDataset):
    """Cityscapes ``gtFine`` (2,975 train / 500 val images)."""

    name = "cityscapes"
    CLASSES = CITYSCAPES_CLASSES
    PALETTE = CITYSCAPES_PALETTE
    SPLITS: ClassVar[dict[str, str]] = {"train": "train", "val": "val"}
    LAYOUT = """\
  cityscapes/
    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png  (0..18, 255 = ignore)
      (or *_gtFine_labelIds.png, converted to train ids with cityscapesscripts' label table)"""

    def list_files(self) -> list[tuple[Path, Path]]:
        img_dir = self._split_dir("leftImg8bit", self.split)
        gt_dir = self.root / "gtFine" / self.split
        files = []
        for img in sorted(img_dir.glob("*/*_leftImg8bit.png")):
            stem = gt_dir / img.parent.name / img.name.removesuffix("_leftImg8bit.png")
            train_ids = stem.with_name(f"{stem.name}_gtFine_labelTrainIds.png")
            label_ids = stem.with_name(f"{stem.name}_gtFine_labelIds.png")
            files.append((img, label_ids if not train_ids.is_file() and label_ids.is_file() else train_ids))
        return files

    def label_lut(self, label_path: Path) -> torch.Tensor:
        if label_path.name.endswith("_gtFine_labelIds.png"):
            return label_id_to_train_id_lut()
        return identity_lut(self.num_classes)
