"""The generated dataset: reproducible bytes, ADE20K layout and labels, atomic generation on first use."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lemore.config import DATA_ROOT_ENV, recipe
from lemore.data import DatasetError, build_dataset
from lemore.data.io import read_label
from lemore.data.synthetic import META_FILE, SYNTHETIC_CLASSES, ensure_synthetic, generate, is_complete


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_and_prefix_stability(tmp_path, synthetic_root):
    again = generate(tmp_path / "again", num_train=12, num_val=4, seed=0)
    assert _files(again) == _files(synthetic_root)
    # the first images do not depend on how many are generated
    fewer = generate(tmp_path / "fewer", num_train=5, num_val=2, seed=0)
    for name, data in _files(fewer).items():
        if name != META_FILE:
            assert data == _files(synthetic_root)[name]
    other = generate(tmp_path / "other", num_train=12, num_val=4, seed=1)
    assert (
        _files(other)["images/training/SYN_train_00000001.jpg"]
        != _files(synthetic_root)["images/training/SYN_train_00000001.jpg"]
    )


def test_layout_sizes_and_label_values(synthetic_root):
    meta = json.loads((synthetic_root / META_FILE).read_text())
    assert meta["num_train"] == 12 and meta["num_val"] == 4 and meta["seed"] == 0
    counts = np.zeros(6, dtype=np.int64)
    for split, n in (("training", 12), ("validation", 4)):
        images = sorted((synthetic_root / "images" / split).glob("*.jpg"))
        labels = sorted((synthetic_root / "annotations" / split).glob("*.png"))
        assert len(images) == len(labels) == n
        assert [p.stem for p in images] == [p.stem for p in labels]
        for img, lbl in zip(images, labels):
            with Image.open(img) as im:
                w, h = im.size
            assert min(h, w) == 128 and max(h, w) <= 224  # drawn at the recipe's evaluation scale
            values = read_label(lbl)
            assert values.shape == (h, w) and values.min() >= 0 and values.max() <= 5
            counts += np.bincount(values.flatten().numpy(), minlength=6)
    assert (counts > 0).all(), f"every class (and the unlabelled 0) appears: {counts}"
    assert counts[0] < 0.1 * counts.sum()  # the unlabelled rings are thin


def test_classes_differ_by_texture_not_colour(synthetic_root):
    # solid discs and striped boxes take their colours from the same pool; the stripes show as jumps between
    # neighbours
    ds = build_dataset(replace(recipe("synthetic").data, root=str(synthetic_root)), "train", transform=None)
    jumps = {2: [], 3: []}  # classes: 2 = disc, 3 = striped box
    for i in range(len(ds)):
        image, mask = ds.load_raw(i)
        for cls, found in jumps.items():
            # horizontal and vertical neighbours inside the class (stripes may run either way)
            h = (mask[:, 1:] == cls) & (mask[:, :-1] == cls)  # (H, W-1)
            v = (mask[1:] == cls) & (mask[:-1] == cls)  # (H-1, W)
            if h.sum() > 100:
                dh = (image[:, :, 1:].float() - image[:, :, :-1].float()).abs().amax(0)
                dv = (image[:, 1:].float() - image[:, :-1].float()).abs().amax(0)
                found.append(torch.cat([dh[h], dv[v]]).mean().item())
    assert jumps[2] and jumps[3]
    assert max(jumps[2]) < min(jumps[3])


def test_dataset_uses_reduce_zero_label(synthetic_root):
    ds = build_dataset(replace(recipe("synthetic").data, root=str(synthetic_root)), "train", transform=None)
    assert ds.classes == SYNTHETIC_CLASSES and ds.num_classes == 5 and len(ds.palette) == 5
    stored = read_label(ds.files[0][1])
    _, mask = ds.load_raw(0)
    assert (mask[stored == 0] == 255).all()
    for v in range(1, 6):
        assert (mask[stored == v] == v - 1).all()


def test_train_and_val_samples(synthetic_root):
    cfg = replace(recipe("synthetic").data, root=str(synthetic_root))
    image, mask = build_dataset(cfg, "train")[0]
    assert image.shape == (3, *cfg.crop_size) and mask.shape == cfg.crop_size and mask.dtype == torch.int64
    image, mask = build_dataset(cfg, "val")[0]
    # drawn at the evaluation scale: the recipe's keep-ratio resize to (256, 128) leaves the image as it is
    assert image.shape[-2:] == mask.shape and min(mask.shape) == 128 and max(mask.shape) <= 224


def test_another_generator_version_is_regenerated(tmp_path):
    root = generate(tmp_path / "syn", num_train=2, num_val=1)
    meta = json.loads((root / META_FILE).read_text())
    (root / META_FILE).write_text(json.dumps({**meta, "generator_version": 1}))  # as the first generator wrote it
    assert not is_complete(root)
    ensure_synthetic(root, num_train=2, num_val=1)
    assert is_complete(root) and json.loads((root / META_FILE).read_text()) == meta


def test_ensure_generates_once_atomically(tmp_path):
    root = tmp_path / "syn"
    ensure_synthetic(root, num_train=3, num_val=2)
    assert is_complete(root)
    assert [p.name for p in tmp_path.iterdir()] == ["syn"]  # no temporary folder left behind
    stamp = (root / "images" / "training" / "SYN_train_00000001.jpg").stat().st_mtime_ns
    ensure_synthetic(root, num_train=3, num_val=2)  # complete: nothing rewritten
    assert (root / "images" / "training" / "SYN_train_00000001.jpg").stat().st_mtime_ns == stamp
    (root / "annotations" / "validation" / "SYN_val_00000002.png").unlink()  # incomplete: regenerated
    assert not is_complete(root)
    ensure_synthetic(root, num_train=3, num_val=2)
    assert is_complete(root) and sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


def test_ensure_fills_an_empty_folder_and_refuses_a_foreign_one(tmp_path):
    (tmp_path / "empty").mkdir()
    ensure_synthetic(tmp_path / "empty", num_train=2, num_val=1)
    assert is_complete(tmp_path / "empty")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match=r"mine exists but is not a synthetic dataset"):
        ensure_synthetic(tmp_path / "mine", num_train=2, num_val=1)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_build_dataset_generates_under_the_resolved_root_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    cfg = recipe("synthetic").data
    assert cfg.root == ""
    ds = build_dataset(cfg, "train")
    assert ds.root == tmp_path / "synthetic" and is_complete(tmp_path / "synthetic")
    assert len(ds) == 400 and len(build_dataset(cfg, "val")) == 100


def test_short_side_draws_larger_scenes_of_the_same_kind(tmp_path):
    large = generate(tmp_path / "large", num_train=2, num_val=1, seed=0, short_side=512)
    assert json.loads((large / META_FILE).read_text())["short_side"] == 512
    for path in (large / "annotations").rglob("*.png"):
        label = read_label(path)
        assert min(label.shape) == 512 and max(label.shape) <= 896
        assert label.max() >= 3  # objects are drawn at this scale too
    with pytest.raises(ValueError, match=r"short_side=32"):
        generate(tmp_path / "bad", num_train=1, num_val=1, short_side=32)
