"""Datasets on fixture trees in the real layouts: samples, label remapping, class tables and errors."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from fixtures import (
    image_for,
    make_ade20k,
    make_camvid,
    make_cityscapes,
    make_coco_stuff,
    make_pascal_context,
    save_label,
)
from torchvision import tv_tensors

from lemore.config import DATA_ROOT_ENV, DEFAULT_SUBDIRS, recipe
from lemore.data import DATASETS, DatasetError, build_dataset
from lemore.data.io import read_label

SEG = ["ade20k", "cityscapes", "pascal_context", "pascal_context_59", "coco_stuff", "camvid"]
COUNTS = {
    "camvid": (3, 2),
    "ade20k": (3, 2),
    "cityscapes": (2, 2),
    "pascal_context": (3, 2),
    "pascal_context_59": (3, 2),
    "coco_stuff": (3, 2),
}
NUM_CLASSES = {
    "camvid": 11,
    "ade20k": 150,
    "cityscapes": 19,
    "pascal_context": 60,
    "pascal_context_59": 59,
    "coco_stuff": 171,
}


def cfg_for(name: str, base, **overrides):
    """The dataset's recipe, with tiny sizes so the pipelines run fast on 48x64 fixtures."""
    if name == "imagenet":  # no segmentation recipe; the fixture has 3 classes
        return replace(
            recipe("synthetic").data, dataset=name, root=str(base / DEFAULT_SUBDIRS[name]), num_classes=3
        )
    return replace(
        recipe(name).data,
        root=str(base / DEFAULT_SUBDIRS[name]),
        crop_size=(32, 40),
        scale=(96, 48),
        **overrides,
    )


@pytest.mark.parametrize("name", SEG)
def test_class_tables(name):
    cls = DATASETS[name]
    assert len(cls.CLASSES) == NUM_CLASSES[name] == recipe(name).data.num_classes
    assert len(set(cls.CLASSES)) == len(cls.CLASSES)
    assert len(cls.PALETTE) == len(cls.CLASSES)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in cls.PALETTE)


def test_known_class_names():
    assert DATASETS["ade20k"].CLASSES[:3] == ("wall", "building", "sky")
    assert DATASETS["cityscapes"].CLASSES[0] == "road" and DATASETS["cityscapes"].CLASSES[-1] == "bicycle"
    assert DATASETS["cityscapes"].PALETTE[0] == (128, 64, 128)
    assert DATASETS["pascal_context"].CLASSES[0] == "background"
    assert DATASETS["pascal_context_59"].CLASSES == DATASETS["pascal_context"].CLASSES[1:]
    assert DATASETS["coco_stuff"].CLASSES[0] == "person" and DATASETS["coco_stuff"].CLASSES[-1] == "wood"


@pytest.mark.parametrize("name", SEG)
@pytest.mark.parametrize("split", ["train", "val"])
def test_samples_through_pipelines(data_base, name, split):
    cfg = cfg_for(name, data_base)
    ds = build_dataset(cfg, split)
    assert len(ds) == COUNTS[name][split == "val"]
    assert ds.num_classes == NUM_CLASSES[name] and len(ds.classes) == ds.num_classes
    assert ds.ignore_index == 255 and len(ds.palette) == ds.num_classes
    assert all(img.is_file() and lbl.is_file() for img, lbl in ds.files)
    for i in range(len(ds)):
        image, mask = ds[i]
        assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
        assert image.dtype == torch.float32 and mask.dtype == torch.int64
        assert image.ndim == 3 and image.shape[0] == 3 and mask.ndim == 2
        valid = (mask < ds.num_classes) | (mask == 255)
        assert valid.all() and (mask >= 0).all()
        if split == "train":
            assert image.shape[-2:] == mask.shape == (32, 40)
        else:  # eval: the image is resized to the scale, the mask keeps the label's size
            _, raw_mask = ds.load_raw(i)
            assert mask.shape == raw_mask.shape
            assert torch.equal(mask, raw_mask)
            if cfg.eval_mode == "slide":  # Cityscapes: windows over the full-size image
                assert image.shape[-2:] == mask.shape
            else:  # 48x64-ish fixtures fit (96, 48) by their short side
                assert min(image.shape[-2:]) == 48 and max(image.shape[-2:]) <= 96


def test_raw_samples_when_transform_is_none(data_base):
    ds = build_dataset(cfg_for("ade20k", data_base), "train", transform=None)
    image, mask = ds[0]
    raw_image, raw_mask = ds.load_raw(0)
    assert image.dtype == torch.uint8 and mask.dtype == torch.int64
    assert torch.equal(image, raw_image) and torch.equal(mask, raw_mask)
    assert raw_image.shape[-2:] == raw_mask.shape


def _stored_and_loaded(ds, i):
    stored = read_label(ds.files[i][1])
    _, mask = ds.load_raw(i)
    return stored, mask


@pytest.mark.parametrize(
    ("name", "mapping"),
    [
        ("ade20k", {0: 255, 1: 0, 3: 2, 5: 4, 7: 6, 9: 8, 30: 29, 150: 149}),  # reduce_zero_label
        ("pascal_context", {0: 0, 1: 1, 15: 15, 33: 33, 59: 59}),  # background is class 0
        ("pascal_context_59", {0: 255, 1: 0, 15: 14, 33: 32, 59: 58}),  # background ignored
        ("coco_stuff", {0: 255, 1: 0, 95: 94, 171: 170}),  # reduce_zero_label
        ("camvid", {0: 0, 3: 3, 8: 8, 10: 10, 11: 255}),  # 11 = Unlabelled: void
    ],
)
def test_label_remapping(data_base, name, mapping):
    ds = build_dataset(cfg_for(name, data_base), "train", transform=None)
    seen = set()
    for i in range(len(ds)):
        stored, mask = _stored_and_loaded(ds, i)
        for value in torch.unique(stored).tolist():
            assert value in mapping, f"fixture value {value} not covered"
            assert (mask[stored == value] == mapping[value]).all()
            seen.add(value)
    assert {0, max(mapping)} <= seen


def test_cityscapes_train_ids_and_label_id_fallback(data_base):
    cfg = cfg_for("cityscapes", data_base)
    train = build_dataset(cfg, "train", transform=None)
    assert all(lbl.name.endswith("_gtFine_labelTrainIds.png") for _, lbl in train.files)
    stored, mask = _stored_and_loaded(train, 0)
    assert torch.equal(stored, mask)  # train ids are stored as they are
    val = build_dataset(cfg, "val", transform=None)
    assert all(lbl.name.endswith("_gtFine_labelIds.png") for _, lbl in val.files)  # no trainIds: fallback
    expected = {7: 0, 26: 13, 33: 18, 0: 255}  # road, car, bicycle, unlabeled (cityscapesscripts' table)
    for i in range(len(val)):
        stored, mask = _stored_and_loaded(val, i)
        for value, train_id in expected.items():
            assert (mask[stored == value] == train_id).all()


def test_grayscale_rgba_and_palette_inputs(data_base):
    ade = build_dataset(cfg_for("ade20k", data_base), "train", transform=None)
    gray, _ = ade.load_raw(1)  # fixture: train image 1 is a grayscale JPEG
    assert gray.shape[0] == 3 and torch.equal(gray[0], gray[1])
    _, mask = ade.load_raw(2)  # a 4-bit palette-mode label: indices 0, 3, 5, 9
    assert set(torch.unique(read_label(ade.files[2][1])).tolist()) <= {0, 3, 5, 9}
    assert set(torch.unique(mask).tolist()) <= {255, 2, 4, 8}
    city = build_dataset(cfg_for("cityscapes", data_base), "train", transform=None)
    rgba, mask = city.load_raw(1)  # an RGBA PNG: alpha dropped, colours kept
    expected = torch.from_numpy(image_for(read_label(city.files[1][1]).numpy().astype(np.uint8))).permute(
        2, 0, 1
    )
    assert rgba.shape[0] == 3 and torch.equal(rgba, expected)
    ctx = build_dataset(cfg_for("pascal_context", data_base), "train", transform=None)
    stored = read_label(ctx.files[0][1])  # palette-mode PNG: the indices, not the palette colours
    assert set(torch.unique(stored).tolist()) <= {0, 59, 1, 15, 33}


def test_imagenet(data_base):
    cfg = cfg_for("imagenet", data_base)
    train = build_dataset(cfg, "train")
    assert train.classes == ("n01440764", "n01443537", "n01484850") and train.num_classes == 3
    labels = set()
    for i in range(len(train)):
        image, label = train[i]
        assert image.shape == (3, 224, 224) and image.dtype == torch.float32
        assert isinstance(label, int)
        labels.add(label)
    assert labels == {0, 1, 2}
    image, _ = build_dataset(cfg, "val")[0]
    assert image.shape == (3, 224, 224)
    raw, _ = build_dataset(cfg, "val", transform=None)[2]  # the CMYK JPEG of the fixture
    assert raw.dtype == torch.uint8 and raw.shape[0] == 3


# ----------------------------------------------------------------------------------------------- errors
def test_unknown_dataset_lists_choices():
    cfg = replace(recipe("ade20k").data, dataset="ade")
    with pytest.raises(ValueError, match=r"unknown dataset 'ade'.*'ade20k'.*'synthetic'"):
        build_dataset(cfg, "train")


@pytest.mark.parametrize("name", [n for n in SEG if n != "camvid"] + ["imagenet"])
def test_unknown_split_lists_choices(data_base, name):
    with pytest.raises(DatasetError, match=r"unknown split 'test'.*\['train', 'val'\]"):
        build_dataset(cfg_for(name, data_base), "test")
    with pytest.raises(DatasetError, match=r"unknown split 'test'.*'train', 'val'"):
        DATASETS[name](data_base / DEFAULT_SUBDIRS[name], "test")


@pytest.mark.parametrize("name", [*SEG, "imagenet"])
def test_missing_root_says_where_and_what(tmp_path, monkeypatch, name):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "nowhere"))
    cfg = replace(recipe(name if name != "imagenet" else "synthetic").data, dataset=name, root="")
    expected = tmp_path / "nowhere" / DEFAULT_SUBDIRS[name]
    with pytest.raises(DatasetError) as e:
        build_dataset(cfg, "train")
    msg = str(e.value)
    assert str(expected) in msg and DATA_ROOT_ENV in msg and str(tmp_path / "nowhere") in msg
    assert DATASETS[name].LAYOUT.strip().splitlines()[1].strip() in msg  # the layout is shown


def test_num_classes_mismatch(data_base):
    with pytest.raises(DatasetError, match=r"data.num_classes=19 but ade20k .* has 150 classes"):
        build_dataset(cfg_for("ade20k", data_base, num_classes=19), "train")


MAKERS = {
    "camvid": make_camvid,
    "ade20k": make_ade20k,
    "cityscapes": make_cityscapes,
    "pascal_context": make_pascal_context,
    "coco_stuff": make_coco_stuff,
}
MISSING = {
    "camvid": "0016E5_07961.png",
    "ade20k": "ADE_val_00000002.png",
    "cityscapes": "frankfurt_000001_000019_gtFine_labelTrainIds.png",
    "pascal_context": "2008_000016.png",
    "coco_stuff": "COCO_test2014_000000000078_labelTrainIds.png",
}


@pytest.mark.parametrize("name", list(MAKERS))
def test_missing_label_named_at_construction_and_at_load(tmp_path, name):
    root = MAKERS[name](tmp_path / name, missing_label=True)
    cls = DATASETS[name]
    with pytest.raises(DatasetError, match=rf"1 files are missing:\n.*{MISSING[name]} \(label of .*\)"):
        cls(root, "val")
    ds = cls(root, "val", verify=False)
    bad = next(i for i, (_, lbl) in enumerate(ds.files) if lbl.name == MISSING[name])
    with pytest.raises(DatasetError, match=rf"{MISSING[name]}: label file not found \(for image "):
        ds[bad]


def test_missing_image_listed_in_split_file(tmp_path):
    root = make_pascal_context(tmp_path / "ctx")
    (root / "JPEGImages" / "2008_000003.jpg").unlink()
    with pytest.raises(DatasetError, match=r"2008_000003\.jpg \(image\)"):
        DATASETS["pascal_context"](root, "train")


@pytest.fixture
def ade_copy(tmp_path, data_base):
    root = tmp_path / "ADEChallengeData2016"
    shutil.copytree(data_base / "ADEChallengeData2016", root)
    return root


def test_unreadable_image_named_at_load(ade_copy):
    (ade_copy / "images" / "training" / "ADE_train_00000001.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    ds = DATASETS["ade20k"](ade_copy, "train")
    with pytest.raises(DatasetError, match=r"ADE_train_00000001\.jpg: cannot decode image"):
        ds[0]


def test_label_out_of_range_named_at_load(ade_copy):
    label = np.zeros((48, 64), np.uint8)
    label[0, :3] = [151, 200, 201]
    lbl = ade_copy / "annotations" / "training" / "ADE_train_00000001.png"
    save_label(lbl, label)
    img = ade_copy / "images" / "training" / "ADE_train_00000001.jpg"
    from PIL import Image

    Image.new("RGB", (64, 48)).save(img)
    ds = DATASETS["ade20k"](ade_copy, "train")
    with pytest.raises(
        DatasetError,
        match=r"ADE_train_00000001\.png: label values out of range for ade20k: "
        r"151, 200-201 \(valid stored values: 0-150, 255\)",
    ):
        ds[0]


def test_size_mismatch_named_at_load(ade_copy):
    save_label(ade_copy / "annotations" / "training" / "ADE_train_00000002.png", np.zeros((10, 12), np.uint8))
    ds = DATASETS["ade20k"](ade_copy, "train")
    with pytest.raises(
        DatasetError,
        match=r"ADE_train_00000002\.png: label size \(10, 12\) \(H, W\) does not match "
        r"image .*ADE_train_00000002\.jpg size \(\d+, \d+\)",
    ):
        ds[1]


def test_errors_in_dataloader_workers_keep_type_and_message(ade_copy):
    from lemore.data import build_loader

    (ade_copy / "images" / "training" / "ADE_train_00000001.jpg").write_bytes(b"junk")
    ds = DATASETS["ade20k"](ade_copy, "train", transform=None)
    loader = build_loader(ds, 1, train=False, num_workers=1)
    with pytest.raises(DatasetError, match=r"ADE_train_00000001\.jpg: cannot decode image"):
        next(iter(loader))
