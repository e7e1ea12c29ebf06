"""A small synthetic segmentation dataset in the ADE20K layout, generated in seconds (demo and test default).

Each scene is a sky (smooth vertical gradient) over a ground (noisy texture) with a wavy horizon, and 3-6
objects drawn on top. An object class is a shape with its own texture, never a colour: every object takes its
colour from one shared pool (and the ground can have the colour of an object), so a model must read texture,
shape and context rather than look colours up pixel by pixel:

=====  ===============  ===========================================================
value  class            appearance
=====  ===============  ===========================================================
0      (unlabelled)     a 2-pixel ring around each object (ignored, like ADE20K's 0)
1      sky              smooth vertical gradient, upper part
2      ground           per-pixel noise texture, lower part
3      disc             solid disc
4      striped box      rotated rectangle with parallel stripes
5      dotted triangle  rotated triangle with a grid of dots
=====  ===============  ===========================================================

The design is what a CPU can learn to a plateau in the minutes of ``make demo`` (generator version 3; see
docs/synthetic.md; version 2 was an intermediate with four object classes). Version 1 had six object
classes with three textures, so that disc, box and
triangle, and striped disc and striped box, differed by shape alone; trained from scratch, LeMoRe learned the
textures within 200 iterations but no shape by 600 (its confusion matrix sent 84% of solid discs and 52% of
triangles to "box"), and it was still learning after 3000 iterations (52.6 mIoU). Here each object class is
one shape with one texture of its own, so shape and texture both identify it, and every mask follows its
object's outline.

Scenes are drawn at the scale the synthetic recipe evaluates: the short side is ``short_side`` (128) pixels and
the long side up to 1.75 times that, which the recipe's test-time ``Resize(scale=(256, 128), keep_ratio=True)``
leaves as they are, so the metric is computed on the images as drawn; the recipe trains at that scale too (no
random resize: objects of many sizes are drawn already). Texture periods are 12-20 pixels (at 128), so that
even the paper's smallest training scale (random resize ratio 0.5, which an override can bring back) leaves at least
3 pixels per stripe, dot or square for networks whose first layer has stride 2 or 4, rather than aliasing them
away.

Label PNGs hold 0..5 and the dataset uses ``reduce_zero_label`` exactly as ADE20K (0 -> 255, v -> v - 1), so
the 5 training classes are 0..4. Generation is numpy-vectorised and seeded per image (``seed``, split, index):
the same seed gives byte-identical files, and the first N images do not depend on how many are generated.
A folder written by another generator version is regenerated on first use (:func:`is_complete`).
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

SYNTHETIC_CLASSES = ("sky", "ground", "disc", "striped box", "dotted triangle")
SYNTHETIC_PALETTE = [(70, 130, 180), (152, 251, 152), (220, 20, 60), (0, 0, 142), (250, 220, 0)]
GENERATOR_VERSION = 3
META_FILE = "synthetic.json"
DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL = 400, 100
DEFAULT_SHORT_SIDE = 128  # the synthetic recipe's evaluation scale (see the module docstring)
_SPLITS = (("training", 1), ("validation", 2))  # folder, rng stream id

_OBJECT_COLOURS = np.array(
    [(200, 40, 40), (40, 160, 60), (50, 80, 200), (220, 200, 40), (160, 60, 180), (230, 130, 30), (120, 90, 50),
     (130, 130, 130)],
    dtype=np.float32,
)  # fmt: skip
_SKY_COLOURS = np.array([(110, 160, 230), (200, 200, 215), (240, 170, 120)], dtype=np.float32)
_GROUND_COLOURS = _OBJECT_COLOURS[[1, 6, 7]]  # green, brown, grey: also object colours, on purpose
_DISC, _STRIPED_BOX, _DOTTED_TRIANGLE = 3, 4, 5
_SHAPES = {_DISC: "disc", _STRIPED_BOX: "box", _DOTTED_TRIANGLE: "triangle"}
_RING = 2.0  # width of the unlabelled ring around objects, in pixels


def _shape_field(
    shape: str, yy: np.ndarray, xx: np.ndarray, size: float, theta: float, aspect: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed inside-distance of an object centred at (0, 0) (>= 0 inside), and rotated coordinates u, v."""
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    if shape == "disc":
        return size - np.hypot(xx, yy), u, v
    if shape == "triangle":
        # equilateral, circumradius 1.5 `size` (about a disc's area): three half-planes 0.75 `size` from the centre
        dist = [
            0.75 * size - (xx * np.cos(a) + yy * np.sin(a))
            for a in theta + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        ]
        return np.minimum(np.minimum(dist[0], dist[1]), dist[2]), u, v
    return np.minimum(size - np.abs(u), size * aspect - np.abs(v)), u, v  # box


def _texture(kind: int, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Where an object of class ``kind`` takes its second (darker) shade, in its rotated coordinates."""
    if kind == _STRIPED_BOX:
        return (u / period) % 1.0 < 0.5
    if kind == _DOTTED_TRIANGLE:
        return np.hypot((u / period) % 1.0 - 0.5, (v / period) % 1.0 - 0.5) < 0.3  # a dot per texture cell
    return np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)  # solid


def _scene(rng: np.random.Generator, short_side: int = DEFAULT_SHORT_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """One scene: uint8 image (H, W, 3) and uint8 label (H, W) with values 0..5."""
    px = short_side / DEFAULT_SHORT_SIDE  # pixel sizes below are given at the default scale
    h, w = short_side, int(rng.integers(short_side, 7 * short_side // 4 + 1))
    if rng.random() < 0.3:  # portrait
        h, w = w, h
    yy = np.arange(h, dtype=np.float32)[:, None]  # (H, 1)
    xx = np.arange(w, dtype=np.float32)[None, :]  # (1, W)

    horizon = h * rng.uniform(0.3, 0.6) + h * rng.uniform(0.02, 0.08) * np.sin(
        2 * np.pi * xx / (px * rng.uniform(60, 200)) + rng.uniform(0, 2 * np.pi)
    )  # (1, W)
    sky = yy < horizon  # (H, W)
    top, bottom = _SKY_COLOURS[rng.integers(len(_SKY_COLOURS))], _SKY_COLOURS[rng.integers(len(_SKY_COLOURS))]
    t = yy[..., None] / h  # (H, 1, 1)
    grain = rng.random((h, w, 1), np.float32) - 0.5  # uniform noise: cheaper than normal, looks the same
    ground = _GROUND_COLOURS[rng.integers(len(_GROUND_COLOURS))] + 76 * grain  # std 22
    image = np.where(sky[..., None], top * (1 - t) + bottom * t, ground)  # (H, W, 3) float32
    label = np.where(sky, 1, 2).astype(np.uint8)

    for kind in rng.integers(_DISC, _DOTTED_TRIANGLE + 1, size=rng.integers(3, 7)):
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        size = rng.uniform(0.14, 0.25) * short_side
        theta, aspect, period = rng.uniform(0, np.pi), rng.uniform(0.6, 1.0), px * rng.uniform(12, 20)
        jitter = rng.uniform(-15, 15, 3).astype(np.float32)
        colour = _OBJECT_COLOURS[rng.integers(len(_OBJECT_COLOURS))] + jitter
        reach = 1.5 * size + _RING + 1  # every shape (and its ring) fits in this box around its centre
        ys = slice(max(int(cy - reach), 0), min(int(cy + reach) + 1, h))
        xs = slice(max(int(cx - reach), 0), min(int(cx + reach) + 1, w))
        field, u, v = _shape_field(_SHAPES[int(kind)], yy[ys] - cy, xx[:, xs] - cx, size, theta, aspect)  # (h', w')
        inside = field >= 0
        second = _texture(int(kind), u, v, period)
        fill = np.where(second[..., None], colour * 0.45, colour)  # (h', w', 3)
        image[ys, xs] = np.where(inside[..., None], fill, image[ys, xs])
        lab = label[ys, xs]  # a view
        lab[(field < 0) & (field >= -_RING)] = 0  # also over earlier objects: their edge is unlabelled too
        lab[inside] = kind

    image += 14 * (rng.random(image.shape, np.float32) - 0.5)  # sensor noise everywhere, std 4
    return np.clip(image, 0, 255).astype(np.uint8), label


def _write_split(root: Path, folder: str, stream: int, n: int, seed: int, short_side: int) -> None:
    (root / "images" / folder).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / folder).mkdir(parents=True, exist_ok=True)
    prefix = "train" if folder == "training" else "val"
    for i in range(n):
        image, label = _scene(np.random.default_rng([seed, stream, i]), short_side)
        stem = f"SYN_{prefix}_{i + 1:08d}"
        Image.fromarray(image).save(root / "images" / folder / f"{stem}.jpg", quality=95)
        Image.fromarray(label).save(root / "annotations" / folder / f"{stem}.png")


def generate(
    root: str | os.PathLike, num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL, seed: int = 0,
    short_side: int = DEFAULT_SHORT_SIDE,
) -> Path:
    """Write the synthetic dataset to ``root`` (created; existing files of the same names are overwritten).

    Args:
        root: the dataset folder; gets ``images/{training,validation}``, ``annotations/...`` and
            ``synthetic.json``.
        num_train: number of training images.
        num_val: number of validation images.
        seed: the same seed gives byte-identical files.
        short_side: the images' short side in pixels (the long side is up to 1.75 times that); objects and
            textures scale with it. The default is the embedded dataset's; 512 draws scenes of ADE20K's sizes
            (512 x 512-896, benchmarks/gpu_check.py).

    Returns:
        ``root`` as a Path.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train={num_train} and num_val={num_val} must both be >= 1")
    if int(short_side) < 64:
        raise ValueError(f"short_side={short_side} must be at least 64 (pixels)")
    root = Path(root)
    for folder, stream in _SPLITS:
        _write_split(root, folder, stream, num_train if folder == "training" else num_val, seed, int(short_side))
    meta = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "short_side": int(short_side),
        "classes": ["unlabelled", *SYNTHETIC_CLASSES],
    }
    (root / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return root


def is_complete(root: str | os.PathLike) -> bool:
    """True when ``root`` holds a dataset of this generator version with every image and label its metadata
    announces (a folder of another version is not complete: :func:`ensure_synthetic` regenerates it)."""
    root = Path(root)
    try:
        meta = json.loads((root / META_FILE).read_text())
        expected = {"training": int(meta["num_train"]), "validation": int(meta["num_val"])}
        if int(meta.get("generator_version", 1)) != GENERATOR_VERSION:
            return False
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
