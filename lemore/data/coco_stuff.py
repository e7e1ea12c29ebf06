"""COCO-Stuff-10k: 171 classes (80 things + 91 stuff), 9,000 train / 1,000 test images.

Mirrors mmseg's ``COCOStuffDataset`` with its coco_stuff10k config: images
``images/{train2014,test2014}/*.jpg``, labels ``annotations/{train2014,test2014}/*_labelTrainIds.png`` and
``reduce_zero_label=True``. Those PNGs are written from the original ``annotations/*.mat`` files by
:func:`convert_coco_stuff10k`, which mirrors mmseg's ``tools/dataset_converters/coco_stuff10k.py``: the
``.mat`` key ``S`` holds 0 = unlabeled and the 182 COCO ids 1..182 (11 of which are unused), mapped to 1..171,
so 0 is ignored after ``reduce_zero_label``. The "val" split is the 1k test set (``test2014``), as in mmseg.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from lemore.data.base import SegDataset, reduce_zero_label_lut
from lemore.data.io import DatasetError

COCO_STUFF_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush", "banner", "blanket", "branch", "bridge", "building-other",
    "bush", "cabinet", "cage", "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes",
    "clouds", "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit",
    "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light", "mat", "metal",
    "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other",
    "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug",
    "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone",
    "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick",
    "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "waterdrops", "window-blind", "window-other", "wood",
)  # fmt: skip

COCO_STUFF_PALETTE = [
    (0, 192, 64), (0, 192, 64), (0, 64, 96), (128, 192, 192), (0, 64, 64), (0, 192, 224), (0, 192, 192),
    (128, 192, 64), (0, 192, 96), (128, 192, 64), (128, 32, 192), (0, 0, 224), (0, 0, 64), (0, 160, 192),
    (128, 0, 96), (128, 0, 192), (0, 32, 192), (128, 128, 224), (0, 0, 192), (128, 160, 192), (128, 128, 0),
    (128, 0, 32), (128, 32, 0), (128, 0, 128), (64, 128, 32), (0, 160, 0), (0, 0, 0), (192, 128, 160),
    (0, 32, 0), (0, 128, 128), (64, 128, 160), (128, 160, 0), (0, 128, 0), (192, 128, 32), (128, 96, 128),
    (0, 0, 128), (64, 0, 32), (0, 224, 128), (128, 0, 0), (192, 0, 160), (0, 96, 128), (128, 128, 128),
    (64, 0, 160), (128, 224, 128), (128, 128, 64), (192, 0, 32), (128, 96, 0), (128, 0, 192), (0, 128, 32),
    (64, 224, 0), (0, 0, 64), (128, 128, 160), (64, 96, 0), (0, 128, 192), (0, 128, 160), (192, 224, 0),
    (0, 128, 64), (128, 128, 32), (192, 32, 128), (0, 64, 192), (0, 0, 32), (64, 160, 128), (128, 64, 64),
    (128, 0, 160), (64, 32, 128), (128, 192, 192), (0, 0, 160), (192, 160, 128), (128, 192, 0), (128, 0, 96),
    (192, 32, 0), (128, 64, 128), (64, 128, 96), (64, 160, 0), (0, 64, 0), (192, 128, 224), (64, 32, 0),
    (0, 192, 128), (64, 128, 224), (192, 160, 0), (0, 192, 0), (192, 128, 96), (192, 96, 128), (0, 64, 128),
    (64, 0, 96), (64, 224, 128), (128, 64, 0), (192, 0, 224), (64, 96, 128), (128, 192, 128), (64, 0, 224),
    (192, 224, 128), (128, 192, 64), (192, 0, 96), (192, 96, 0), (128, 64, 192), (0, 128, 96), (0, 224, 0),
    (64, 64, 64), (128, 128, 224), (0, 96, 0), (64, 192, 192), (0, 128, 224), (128, 224, 0), (64, 192, 64),
    (128, 128, 96), (128, 32, 128), (64, 0, 192), (0, 64, 96), (0, 160, 128), (192, 0, 64), (128, 64, 224),
    (0, 32, 128), (192, 128, 192), (0, 64, 224), (128, 160, 128), (192, 128, 0), (128, 64, 32), (128, 32, 64),
    (192, 0, 128), (64, 192, 32), (0, 160, 64), (64, 0, 0), (192, 192, 160), (0, 32, 64), (64, 128, 128),
    (64, 192, 160), (128, 160, 64), (64, 128, 0), (192, 192, 32), (128, 96, 192), (64, 0, 128), (64, 64, 32),
    (0, 224, 192), (192, 0, 0), (192, 64, 160), (0, 96, 192), (192, 128, 128), (64, 64, 160), (128, 224, 192),
    (192, 128, 64), (192, 64, 32), (128, 96, 64), (192, 0, 192), (0, 192, 32), (64, 224, 64), (64, 0, 64),
    (128, 192, 160), (64, 96, 64), (64, 128, 192), (0, 192, 160), (192, 224, 64), (64, 128, 64),
    (128, 192, 32), (192, 32, 192), (64, 64, 192), (0, 64, 32), (64, 160, 192), (192, 64, 64), (128, 64, 160),
    (64, 32, 192), (192, 192, 192), (0, 64, 160), (192, 160, 192), (192, 192, 0), (128, 64, 96),
    (192, 32, 64), (192, 64, 128), (64, 192, 96), (64, 160, 64), (64, 64, 0),
]  # fmt: skip

#: COCO ids (1-indexed, 1..182) that COCO-Stuff defines but never uses: 11 thing ids dropped from COCO's 91.
UNUSED_COCO_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)


def coco_id_to_train_id_lut() -> np.ndarray:
    """uint8 (256,) table from the ``.mat`` value (0 = unlabeled, COCO ids 1..182) to 0 / train ids 1..171.

    The same mapping as mmseg's ``clsID_to_trID`` (e.g. 11 -> 11, 13 -> 12, 182 -> 171), written as "the used
    ids in order". mmseg leaves values outside its table unchanged; they never occur in COCO-Stuff-10k, and
    here they map to 0 (unlabeled) so that an unexpected value can never pose as a class.
    """
    used = [i for i in range(1, 183) if i not in UNUSED_COCO_IDS]
    assert len(used) == 171
    lut = np.zeros(256, dtype=np.uint8)
    lut[used] = np.arange(1, 172, dtype=np.uint8)
    return lut


class COCOStuff10k(SegDataset):
    """COCO-Stuff-10k in mmseg's converted layout."""

    name = "coco_stuff"
    CLASSES = COCO_STUFF_CLASSES
    PALETTE = COCO_STUFF_PALETTE
    SPLITS: ClassVar[dict[str, str]] = {"train": "train2014", "val": "test2014"}
    LAYOUT = """\
  coco_stuff10k/
    images/{train2014,test2014}/COCO_train2014_000000000077.jpg ...
    annotations/{train2014,test2014}/COCO_train2014_000000000077_labelTrainIds.png ...  (0 = unlabeled)
    imageLists/{train,test}.txt
  (convert the original annotations/*.mat with `lemore.data.coco_stuff.convert_coco_stuff10k`)"""

    def list_files(self) -> list[tuple[Path, Path]]:
        sub = self.SPLITS[self.split]
        img_dir, ann_dir = self._split_dir("images", sub), self.root / "annotations" / sub
        return [(p, ann_dir / f"{p.stem}_labelTrainIds.png") for p in sorted(img_dir.glob("*.jpg"))]

    def label_lut(self, label_path: Path) -> torch.Tensor:
        return reduce_zero_label_lut(self.num_classes)


def convert_coco_stuff10k(src: str | os.PathLike, out: str | os.PathLike | None = None) -> dict[str, int]:
    """The original COCO-Stuff-10k release -> mmseg's layout (``tools/dataset_converters/coco_stuff10k.py``).

    Args:
        src: the unpacked ``cocostuff-10k-v1.1`` folder: ``images/*.jpg``, ``annotations/*.mat`` (key
            ``S``) and ``imageLists/{train,test}.txt``.
        out: where to write ``images/{train2014,test2014}`` and ``annotations/{train2014,test2014}``; default
            ``src``. ``imageLists`` is copied when ``out`` differs.

    Returns:
        Number of converted pairs per split, ``{"train2014": 9000, "test2014": 1000}`` for the real dataset.

    Raises:
        DatasetError: a missing list, image or ``.mat`` file, or a ``.mat`` without a 2-D ``S`` array.
    """
    from PIL import Image
    from scipy.io import loadmat

    src = Path(src)
    out = Path(out) if out is not None else src
    lut = coco_id_to_train_id_lut()
    counts = {}
    for list_name, sub in (("train", "train2014"), ("test", "test2014")):
        list_file = src / "imageLists" / f"{list_name}.txt"
        if not list_file.is_file():
            raise DatasetError(
                f"{list_file}: image list not found (expected the cocostuff-10k imageLists folder)"
            )
        names = [n.strip() for n in list_file.read_text().splitlines() if n.strip()]
        (out / "images" / sub).mkdir(parents=True, exist_ok=True)
        (out / "annotations" / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            img, mat = src / "images" / f"{name}.jpg", src / "annotations" / f"{name}.mat"
            for f in (img, mat):
                if not f.is_file():
                    raise DatasetError(f"{f}: file not found (listed in {list_file})")
            try:
                s = loadmat(mat)["S"]
            except (KeyError, ValueError, OSError) as e:
                raise DatasetError(f"{mat}: cannot read key 'S' ({e})") from None
            if s.ndim != 2:
                raise DatasetError(f"{mat}: 'S' must be a 2-D label map, got shape {s.shape}")
            shutil.copyfile(img, out / "images" / sub / img.name)
            Image.fromarray(lut[s.astype(np.uint8)]).save(
                out / "annotations" / sub / f"{name}_labelTrainIds.png"
            )
        counts[sub] = len(names)
    if out != src:
        shutil.copytree(src / "imageLists", out / "imageLists", dirs_exist_ok=True)
    return counts
