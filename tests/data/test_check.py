"""``python -m lemore data check|synth|convert-coco-stuff`` and the COCO-Stuff-10k converter."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from fixtures import make_ade20k, make_cityscapes, make_coco_stuff_original, save_label
from PIL import Image

from lemore.cli import main
from lemore.config import DEFAULT_SUBDIRS
from lemore.data import DATASETS, DatasetError
from lemore.data.check import check_dataset
from lemore.data.coco_stuff import UNUSED_COCO_IDS, coco_id_to_train_id_lut, convert_coco_stuff10k
from lemore.data.io import read_label


@pytest.mark.parametrize("name", [n for n in DEFAULT_SUBDIRS if n != "synthetic"])
def test_good_trees_pass(data_base, name, capsys):
    root = data_base / DEFAULT_SUBDIRS[name]
    reports = check_dataset(name, root)
    assert [r.problems for r in reports] == [[], []]
    assert all(r.images > 0 and r.labels == r.images for r in reports)
    assert main(["data", "check", name, "--root", str(root), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "OK: 0 problems" in out and "train:" in out and "val:" in out


def test_synthetic_passes(synthetic_root, capsys):
    assert main(["data", "check", "synthetic", "--root", str(synthetic_root), "--workers", "0"]) == 0
    assert "train: 12 images, 12 labels, 0 problems" in capsys.readouterr().out


@pytest.fixture
def broken_ade(tmp_path):
    """An ADE20K tree with one of each kind of bad file; returns (root, {file name: expected problem})."""
    root = make_ade20k(tmp_path / "ADEChallengeData2016", n_train=4, n_val=3, missing_label=True)
    (root / "images" / "training" / "ADE_train_00000001.jpg").write_bytes(b"\xff\xd8\xff garbage")
    bad = np.zeros((48, 64), np.uint8)
    bad[5, 5] = 151
    save_label(root / "annotations" / "training" / "ADE_train_00000002.png", bad)
    Image.new("RGB", (64, 48)).save(root / "images" / "training" / "ADE_train_00000002.jpg")
    save_label(root / "annotations" / "training" / "ADE_train_00000004.png", np.zeros((7, 9), np.uint8))
    expected = {
        "ADE_train_00000001.jpg": "cannot decode image",
        "ADE_train_00000002.png": "label values out of range for ade20k: 151",
        "ADE_train_00000004.png": "label size (7, 9) (H, W) does not match image",
        "ADE_val_00000002.png": "label file not found",
    }
    return root, expected


def test_every_bad_file_is_named(broken_ade):
    root, expected = broken_ade
    reports = check_dataset("ade20k", root)
    problems = [p for r in reports for p in r.problems]
    assert len(problems) == len(expected)
    for name, problem in expected.items():
        assert any(name in p and problem in p for p in problems), (name, problems)
    val = reports[1]
    assert val.images == 3 and val.labels == 2


def test_cli_exits_nonzero_and_prints_each_bad_file(broken_ade, capsys):
    root, expected = broken_ade
    assert main(["data", "check", "ade20k", "--root", str(root), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    bad_lines = [line for line in out.splitlines() if line.startswith("BAD ")]
    assert len(bad_lines) == len(expected)
    for name, problem in expected.items():
        assert any(name in line and problem in line for line in bad_lines)
    assert "FAILED: 4 problems" in out
    assert "train: 4 images (official: 20210), 4 labels" in out


def test_same_errors_at_load_time(broken_ade):
    root, expected = broken_ade
    ds = DATASETS["ade20k"](root, "train")
    for i, name in enumerate(
        ["ADE_train_00000001.jpg", "ADE_train_00000002.png", None, "ADE_train_00000004.png"]
    ):
        if name is None:
            ds[i]  # the good one loads
            continue
        with pytest.raises(DatasetError, match=expected[name].replace("(", r"\(").replace(")", r"\)")) as e:
            ds[i]
        assert name in str(e.value)


def test_limit_and_missing_root(tmp_path, data_base, capsys):
    root = data_base / DEFAULT_SUBDIRS["cityscapes"]
    reports = check_dataset("cityscapes", root, limit=1)
    assert [r.checked for r in reports] == [1, 1] and [r.images for r in reports] == [2, 2]
    assert main(["data", "check", "cityscapes", "--root", str(tmp_path / "none"), "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'none'}" in out and "LEMORE_DATA" in out and "leftImg8bit" in out


def test_imagenet_class_folders_must_match(tmp_path, data_base):
    root = tmp_path / "imagenet"
    shutil.copytree(data_base / "imagenet", root)
    shutil.rmtree(root / "val" / "n01484850")
    reports = check_dataset("imagenet", root)
    assert reports[0].problems == []
    assert len(reports[1].problems) == 1 and "class folders differ" in reports[1].problems[0]
    assert "n01484850" in reports[1].problems[0]


def test_cityscapes_missing_label_named(tmp_path):
    root = make_cityscapes(tmp_path / "cityscapes", missing_label=True)
    reports = check_dataset("cityscapes", root)
    assert reports[0].problems == []
    assert len(reports[1].problems) == 1
    assert "frankfurt_000001_000019_gtFine_labelTrainIds.png: label file not found" in reports[1].problems[0]


def test_synth_cli(tmp_path, capsys):
    root = tmp_path / "syn"
    assert (
        main(["data", "synth", "--root", str(root), "--num-train", "3", "--num-val", "2", "--seed", "5"]) == 0
    )
    assert len(list((root / "images" / "training").glob("*.jpg"))) == 3
    first = (root / "images" / "training" / "SYN_train_00000001.jpg").read_bytes()
    assert main(["data", "synth", "--root", str(root)]) == 0
    assert "already there" in capsys.readouterr().out
    assert main(["data", "synth", "--root", str(root), "--num-train", "3", "--num-val", "2", "--force"]) == 0
    assert (root / "images" / "training" / "SYN_train_00000001.jpg").read_bytes() != first  # seed 0 now


def test_coco_stuff_lut_matches_mmseg():
    lut = coco_id_to_train_id_lut()
    # entries of mmseg's clsID_to_trID (tools/dataset_converters/coco_stuff10k.py)
    for coco_id, train_id in {
        0: 0,
        1: 1,
        11: 11,
        13: 12,
        25: 24,
        27: 25,
        28: 26,
        31: 27,
        44: 40,
        46: 41,
        65: 60,
        67: 61,
        70: 62,
        72: 63,
        82: 73,
        84: 74,
        90: 80,
        92: 81,
        182: 171,
    }.items():
        assert lut[coco_id] == train_id
    assert sorted(set(lut[1:183].tolist()) - {0}) == list(range(1, 172))
    assert all(lut[i] == 0 for i in UNUSED_COCO_IDS)


def test_coco_stuff_converter(tmp_path, capsys):
    src = tmp_path / "cocostuff-10k-v1.1"
    written = make_coco_stuff_original(src)
    out = tmp_path / "coco_stuff10k"
    assert main(["data", "convert-coco-stuff", str(src), "--out", str(out)]) == 0
    assert "train2014" in capsys.readouterr().out
    lut = coco_id_to_train_id_lut()
    for name, s in written.items():
        sub = "train2014" if "train" in name else "test2014"
        png = read_label(out / "annotations" / sub / f"{name}_labelTrainIds.png")
        assert torch.equal(png, torch.from_numpy(lut[s].astype(np.int64)))
        assert (out / "images" / sub / f"{name}.jpg").is_file()
    assert (out / "imageLists" / "train.txt").is_file()
    ds = DATASETS["coco_stuff"](out, "train", transform=None)
    _, mask = ds.load_raw(0)
    stored = read_label(ds.files[0][1])
    assert (mask[stored == 0] == 255).all() and (mask[stored == 171] == 170).all()
    assert check_dataset("coco_stuff", out)[0].problems == []


def test_coco_stuff_converter_names_missing_files(tmp_path):
    src = tmp_path / "cocostuff"
    make_coco_stuff_original(src)
    (src / "annotations" / "COCO_test2014_000000000077.mat").unlink()
    with pytest.raises(
        DatasetError, match=r"COCO_test2014_000000000077\.mat: file not found \(listed in .*test\.txt\)"
    ):
        convert_coco_stuff10k(src)
