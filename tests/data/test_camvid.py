"""CamVid in SegNet's layout: pairing, void, splits, ``data check camvid``, ``eval --split test``."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from fixtures import make_camvid, save_label
from PIL import Image

from lemore.cli import main
from lemore.config import recipe
from lemore.data import DATASETS, DatasetError, build_dataset
from lemore.data.camvid import CAMVID_CLASSES, CAMVID_PALETTE, CamVid
from lemore.data.check import check_dataset
from lemore.data.io import read_label


@pytest.fixture
def camvid(tmp_path):
    return make_camvid(tmp_path / "CamVid")


def test_segnet_classes_and_colours():
    assert DATASETS["camvid"] is CamVid
    assert CAMVID_CLASSES[0] == "sky" and CAMVID_CLASSES[3] == "road" and CAMVID_CLASSES[-1] == "bicyclist"
    assert len(CAMVID_CLASSES) == len(CAMVID_PALETTE) == recipe("camvid").data.num_classes == 11
    assert CAMVID_PALETTE[3] == (128, 64, 128) and CAMVID_PALETTE[4] == (60, 40, 222)  # SegNet's road, pavement


def test_pairs_by_name_in_every_split(camvid):
    for split, n in (("train", 3), ("val", 2), ("test", 2)):
        ds = CamVid(camvid, split)
        assert len(ds) == n
        for img, lbl in ds.files:
            assert img.parent.name == split and lbl.parent.name == f"{split}annot" and img.name == lbl.name


def test_void_is_ignored_and_classes_kept(camvid):
    ds = CamVid(camvid, "train")
    seen = set()
    for i in range(len(ds)):
        stored = read_label(ds.files[i][1])
        _, mask = ds.load_raw(i)
        assert (mask[stored == 11] == 255).all()
        keep = stored != 11
        assert torch.equal(mask[keep], stored[keep])
        seen |= set(torch.unique(stored).tolist())
    assert {0, 3, 8, 10, 11} <= seen


def test_test_split_through_the_eval_pipeline(camvid):
    cfg = replace(recipe("camvid").data, root=str(camvid))
    ds = build_dataset(cfg, "test")
    image, mask = ds[0]
    assert image.dtype == torch.float32 and mask.shape == ds.load_raw(0)[1].shape


def test_missing_test_split_names_the_folder(tmp_path):
    root = make_camvid(tmp_path / "CamVid", n_test=0)
    with pytest.raises(DatasetError, match=r"camvid test: folder .*test does not exist"):
        build_dataset(replace(recipe("camvid").data, root=str(root)), "test")


def test_unknown_split_lists_the_three(camvid):
    with pytest.raises(DatasetError, match=r"unknown split 'testing' for camvid; choose from \['test', 'train', 'val'\]"):
        build_dataset(replace(recipe("camvid").data, root=str(camvid)), "testing")


def test_cache_holds_the_decoded_files_unchanged(camvid):
    cfg = replace(recipe("camvid").data, root=str(camvid), crop_size=(32, 32))
    plain = build_dataset(cfg, "train")
    cached = build_dataset(cfg, "train", cache=True)
    assert cached.cached and not plain.cached
    before = [tuple(t.clone() for t in cached._load(i)) for i in range(len(cached))]
    for i in range(len(cached)):
        torch.manual_seed(i)
        a = plain[i]
        torch.manual_seed(i)
        b = cached[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for i, (img, msk) in enumerate(before):  # the transforms never wrote into the cache
        assert torch.equal(cached._load(i)[0], img) and torch.equal(cached._load(i)[1], msk)
    assert not build_dataset(replace(cfg, cache_gb=0.0), "train", cache=True).cached
    assert not build_dataset(replace(cfg, cache_gb=1e-6), "train", cache=True).cached  # does not fit


# ------------------------------------------------------------------------------------------- data check
def test_data_check_good_tree_checks_test_too(camvid, capsys):
    assert main(["data", "check", "camvid", "--root", str(camvid), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "train: 3 images (official: 367), 3 labels" in out
    assert "val: 2 images (official: 101)" in out and "test: 2 images (official: 233)" in out
    assert "OK: 0 problems" in out


def test_data_check_without_test_split(tmp_path, capsys):
    root = make_camvid(tmp_path / "CamVid", n_test=0)
    assert main(["data", "check", "camvid", "--root", str(root), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "test:" not in out and "OK: 0 problems" in out


@pytest.fixture
def broken_camvid(tmp_path):
    """A missing label, a label value above 11, a size mismatch: {file name: expected problem}."""
    root = make_camvid(tmp_path / "CamVid", missing_label=True)
    bad = np.zeros((48, 64), np.uint8)
    bad[3, 4] = 12
    Image.new("RGB", (64, 48)).save(root / "train" / "0006R0_f00930.png")
    save_label(root / "trainannot" / "0006R0_f00930.png", bad)
    save_label(root / "testannot" / "0001TP_008550.png", np.zeros((7, 9), np.uint8))
    return root, {
        "0016E5_07961.png": "label file not found",
        "0006R0_f00930.png": "label values out of range for camvid: 12 (valid stored values: 0-11, 255)",
        "0001TP_008550.png": "label size (7, 9) (H, W) does not match image",
    }


def test_data_check_names_every_bad_file(broken_camvid, capsys):
    root, expected = broken_camvid
    assert main(["data", "check", "camvid", "--root", str(root), "--workers", "0"]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("BAD ")]
    assert len(lines) == len(expected)
    for name, problem in expected.items():
        assert any(name in line and problem in line for line in lines), (name, lines)
    reports = check_dataset("camvid", root, ("train", "val", "test"))
    assert [len(r.problems) for r in reports] == [1, 1, 1]


def test_unknown_split_for_check_is_named(camvid, capsys):
    assert main(["data", "check", "ade20k", "--root", str(camvid), "--split", "test", "--workers", "0"]) == 1
    assert "ade20k has no 'test' split; choose from ['train', 'val']" in capsys.readouterr().out


def test_training_on_a_broken_tree_fails_before_the_run(broken_camvid, tmp_path):
    from lemore.config import load
    from lemore.engine.train import train

    root, _ = broken_camvid
    (root / "valannot" / "0016E5_07961.png").write_bytes((root / "valannot" / "0016E5_07959.png").read_bytes())
    cfg = load(dataset="camvid", overrides={"data.root": str(root), "train.iters": 1, "wandb": "disabled",
                                            "data.crop_size": [64, 64], "train.batch_size": 2,
                                            "train.device": "cpu", "data.num_workers": 0})
    with pytest.raises(DatasetError, match=r"0006R0_f00930.png: label values out of range for camvid: 12"):
        train(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ eval --split
def test_eval_split_test_from_safetensors_weights(camvid, tmp_path, capsys):
    """The held-out evaluation's command: committed-style weights (config in the metadata) on the test split."""
    from lemore.checkpoint import read_weights_config, save_weights
    from lemore.config import load
    from lemore.registry import build_model

    cfg = load(dataset="camvid", overrides={"model.name": "lemore", "data.crop_size": [64, 64],
                                            "data.root": "/somewhere/else"})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    weights = save_weights(model.state_dict(), tmp_path / "w" / "lemore.safetensors", config=cfg.to_dict())
    assert read_weights_config(weights)["model"]["name"] == "lemore"
    out = tmp_path / "test.json"
    assert main(["eval", "--checkpoint", str(weights), "--dataset", "camvid", "--set", f"data.root={camvid}",
                 "--split", "test", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["split"] == "test" and result["metrics"]["num_images"] == 2
    assert result["config"]["data"]["crop_size"] == [64, 64]  # the model was rebuilt from the stored config
    assert "camvid test (2 images)" in capsys.readouterr().out
    main(["eval", "--checkpoint", str(weights), "--set", f"data.root={camvid}", "--split", "train"])
    assert json.loads((tmp_path / "w" / "eval_train.json").read_text())["metrics"]["num_images"] == 3


def test_eval_split_the_dataset_lacks(camvid, tmp_path, capsys):
    from lemore.checkpoint import save_weights
    from lemore.config import load
    from lemore.registry import build_model

    cfg = load(dataset="ade20k", overrides={"model.name": "lemore", "data.crop_size": [64, 64]})
    weights = save_weights(build_model(cfg).state_dict(), tmp_path / "ade.safetensors", config=cfg.to_dict())
    out = tmp_path / "never.json"
    assert main(["eval", "--checkpoint", str(weights), "--set", f"data.root={camvid}", "--split", "test",
                 "--out", str(out)]) != 0
    assert "unknown split 'test' for ade20k; choose from ['train', 'val']" in capsys.readouterr().err
    assert not out.exists()
