"""A small synthetic segmentation dataset in the ADE20K layout, generated in seconds (demo and test default).

Each scene is a sky (smooth vertical gradient) over a ground (noisy texture) with a wavy horizon, and 2-5
objects drawn on top. The class of an object is its shape *and* texture, never its colour: every object takes
its colour from one shared pool, and the ground can have the same colour as an object, so a model must use
shape, texture and context rather than a per-pixel colour lookup:

=====  ===============  ===================================================
value  class            appearance
=====  ===============  ===================================================
0      (unlabelled)     a 2-pixel ring around each object (ignored, like ADE20K's 0)
1      sky              smooth vertical gradient, upper part
2      ground           per-pixel noise texture, lower part
3      disc             solid disc
4      striped disc     disc with stripes (same colours as a solid disc)
5      box              solid rotated rectangle
6      striped box      rotated rectangle with stripes
7      checkered box    rotated rectangle with a checkerboard
8      triangle         solid triangle
=====  ===============  ===================================================

Label PNGs hold 0..8 and the dataset uses ``reduce_zero_label`` exactly as ADE20K (0 -> 255, v -> v - 1), so
the 8 training classes are 0..7. Generation is numpy-vectorised and seeded per image (``seed``, split, index):
the same seed gives byte-identical files, and the first N images do not depend on how many are generated.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from lemore.data.ade20k import ADE20K
from lemore.data.io import DatasetError

SYNTHETIC_CLASSES = (
    "sky",
    "ground",
    "disc",
    "striped disc",
    "box",
    "striped box",
    "checkered box",
    "triangle",
)
SYNTHETIC_PALETTE = [
    (70, 130, 180),
    (152, 251, 152),
    (220, 20, 60),
    (255, 140, 0),
    (0, 0, 142),
    (0, 160, 160),
    (160, 32, 240),
    (250, 220, 0),
]
GENERATOR_VERSION = 1
META_FILE = "synthetic.json"
DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL = 400, 100
DEFAULT_SIZE_RANGE = (160, 256)  # image height and width are each drawn from this range (inclusive), in pixels
_SPLITS = (("training", 1), ("validation", 2))  # folder, rng stream id

_OBJECT_COLOURS = np.array(
    [(200, 40, 40), (40, 160, 60), (50, 80, 200), (220, 200, 40), (160, 60, 180), (230, 130, 30), (120, 90, 50),
     (130, 130, 130)],
    dtype=np.float32,
)  # fmt: skip
_SKY_COLOURS = np.array([(110, 160, 230), (200, 200, 215), (240, 170, 120)], dtype=np.float32)
_GROUND_COLOURS = _OBJECT_COLOURS[[1, 6, 7]]  # green, brown, grey: also object colours, on purpose
_DISC, _STRIPED_DISC, _BOX, _STRIPED_BOX, _CHECKERED_BOX, _TRIANGLE = 3, 4, 5, 6, 7, 8
_RING = 2.0  # width of the unlabelled ring around objects, in pixels


def _shape_field(
    kind: int, yy: np.ndarray, xx: np.ndarray, size: float, theta: float, aspect: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed inside-distance of an object centred at (0, 0) (>= 0 inside), and rotated coordinates u, v."""
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    if kind in (_DISC, _STRIPED_DISC):
        return size - np.hypot(xx, yy), u, v
    if kind == _TRIANGLE:
        # equilateral, circumradius `size`: three half-planes at distance size/2 from the centre
        dist = [
            size / 2 - (xx * np.cos(a) + yy * np.sin(a))
            for a in theta + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        ]
        return np.minimum(np.minimum(dist[0], dist[1]), dist[2]), u, v
    return np.minimum(size - np.abs(u), size * aspect - np.abs(v)), u, v  # boxes


def _scene(rng: np.random.Generator, size_range: tuple[int, int] = DEFAULT_SIZE_RANGE) -> tuple[np.ndarray, np.ndarray]:
    """One scene: uint8 image (H, W, 3) and uint8 label (H, W) with values 0..8."""
    h, w = (int(x) for x in rng.integers(size_range[0], size_range[1] + 1, size=2))
    yy = np.arange(h, dtype=np.float32)[:, None]  # (H, 1)
    xx = np.arange(w, dtype=np.float32)[None, :]  # (1, W)

    horizon = h * rng.uniform(0.3, 0.6) + h * rng.uniform(0.02, 0.08) * np.sin(
        2 * np.pi * xx / rng.uniform(60, 200) + rng.uniform(0, 2 * np.pi)
    )  # (1, W)
    sky = yy < horizon  # (H, W)
    top, bottom = _SKY_COLOURS[rng.integers(len(_SKY_COLOURS))], _SKY_COLOURS[rng.integers(len(_SKY_COLOURS))]
    t = yy[..., None] / h  # (H, 1, 1)
    grain = rng.random((h, w, 1), np.float32) - 0.5  # uniform noise: cheaper than normal, looks the same
    ground = _GROUND_COLOURS[rng.integers(len(_GROUND_COLOURS))] + 76 * grain  # std 22
    image = np.where(sky[..., None], top * (1 - t) + bottom * t, ground)  # (H, W, 3) float32
    label = np.where(sky, 1, 2).astype(np.uint8)

    for kind in rng.integers(_DISC, _TRIANGLE + 1, size=rng.integers(2, 6)):
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        size = rng.uniform(0.1, 0.22) * min(h, w)
        theta, aspect, period = rng.uniform(0, np.pi), rng.uniform(0.5, 1.0), rng.uniform(6, 12)
        jitter = rng.uniform(-15, 15, 3).astype(np.float32)
        colour = _OBJECT_COLOURS[rng.integers(len(_OBJECT_COLOURS))] + jitter
        reach = 1.5 * size + _RING + 1  # every shape (and its ring) fits in this box around its centre
        ys = slice(max(int(cy - reach), 0), min(int(cy + reach) + 1, h))
        xs = slice(max(int(cx - reach), 0), min(int(cx + reach) + 1, w))
        field, u, v = _shape_field(int(kind), yy[ys] - cy, xx[:, xs] - cx, size, theta, aspect)  # (h', w')
        inside = field >= 0
        if kind in (_STRIPED_DISC, _STRIPED_BOX):
            second = (u / period) % 1.0 < 0.5
        elif kind == _CHECKERED_BOX:
            second = (np.floor(u / period) + np.floor(v / period)) % 2 == 1
        else:
            second = np.zeros_like(inside)
        fill = np.where(second[..., None], colour * 0.45, colour)  # (h', w', 3)
        image[ys, xs] = np.where(inside[..., None], fill, image[ys, xs])
        lab = label[ys, xs]  # a view
        lab[(field < 0) & (field >= -_RING)] = 0  # also over earlier objects: their edge is unlabelled too
        lab[inside] = kind

    image += 14 * (rng.random(image.shape, np.float32) - 0.5)  # sensor noise everywhere, std 4
    return np.clip(image, 0, 255).astype(np.uint8), label


def _write_split(root: Path, folder: str, stream: int, n: int, seed: int,
                 size_range: tuple[int, int] = DEFAULT_SIZE_RANGE) -> None:
    (root / "images" / folder).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / folder).mkdir(parents=True, exist_ok=True)
    prefix = "train" if folder == "training" else "val"
    for i in range(n):
        image, label = _scene(np.random.default_rng([seed, stream, i]), size_range)
        stem = f"SYN_{prefix}_{i + 1:08d}"
        Image.fromarray(image).save(root / "images" / folder / f"{stem}.jpg", quality=95)
        Image.fromarray(label).save(root / "annotations" / folder / f"{stem}.png")


def generate(
    root: str | os.PathLike, num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL, seed: int = 0,
    size_range: tuple[int, int] = DEFAULT_SIZE_RANGE,
) -> Path:
    """Write the synthetic dataset to ``root`` (created; existing files of the same names are overwritten).

    Args:
        root: the dataset folder; gets ``images/{training,validation}``, ``annotations/...`` and
            ``synthetic.json``.
        num_train: number of training images.
        num_val: number of validation images.
        seed: the same seed gives byte-identical files.
        size_range: image height and width are drawn from ``[lo, hi]`` pixels; the default is the embedded
            dataset's, other values draw larger scenes (``(512, 683)``, ADE20K's sizes: benchmarks/gpu_check.py).

    Returns:
        ``root`` as a Path.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train={num_train} and num_val={num_val} must both be >= 1")
    root = Path(root)
    lo, hi = (int(v) for v in size_range)
    if not 64 <= lo <= hi:
        raise ValueError(f"size_range={tuple(size_range)} must be (lo, hi) with 64 <= lo <= hi")
    for folder, stream in _SPLITS:
        _write_split(root, folder, stream, num_train if folder == "training" else num_val, seed, (lo, hi))
    meta = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "classes": ["unlabelled", *SYNTHETIC_CLASSES],
    }
    if (lo, hi) != DEFAULT_SIZE_RANGE:  # the default dataset's metadata stays as it was
        meta["size_range"] = [lo, hi]
    (root / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return root


def is_complete(root: str | os.PathLike) -> bool:
    """True when ``root`` holds a generated dataset with every image and label its metadata announces."""
    root = Path(root)
    try:
        meta = json.loads((root / META_FILE).read_text())
        expected = {"training": int(meta["num_train"]), "validation": int(meta["num_val"])}
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all(
        len(list((root / kind / folder).glob(f"*{ext}"))) == n
        for folder, n in expected.items()
        for kind, ext in (("images", ".jpg"), ("annotations", ".png"))
    )


def ensure_synthetic(
    root: str | os.PathLike, num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL, seed: int = 0
) -> Path:
    """Generate the dataset at ``root`` unless a complete one is already there.

    The files are written to a temporary folder beside ``root`` and renamed into place, so a crash or a
    concurrent caller (e.g. several DDP ranks) never leaves a half-written dataset at ``root``.

    Raises:
        DatasetError: ``root`` exists, is not empty and is not a dataset written by this module.
    """
    root = Path(root)
    if is_complete(root):
        return root
    if root.exists() and any(root.iterdir()) and not (root / META_FILE).is_file():
        raise DatasetError(
            f"{root} exists but is not a synthetic dataset (no {META_FILE}); remove it or choose "
            "another data.root"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        generate(tmp, num_train=num_train, num_val=num_val, seed=seed)
        if root.exists() and not is_complete(root):  # an empty folder, or an incomplete one of ours
            shutil.rmtree(root)
        try:
            os.rename(tmp, root)
        except OSError:
            if not is_complete(root):  # a concurrent caller won the race only if it left a complete dataset
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


class Synthetic(ADE20K):
    """The generated dataset (see the module docstring); ADE20K layout and label convention."""

    name = "synthetic"
    CLASSES = SYNTHETIC_CLASSES
    PALETTE = SYNTHETIC_PALETTE
    LAYOUT = """\
  synthetic/
    images/{training,validation}/SYN_train_00000001.jpg ...
    annotations/{training,validation}/SYN_train_00000001.png ...  (0 = unlabelled, 1..8 = classes)
    synthetic.json
  (generate it with `python -m lemore data synth --root PATH`; build_dataset does so on first use)"""
