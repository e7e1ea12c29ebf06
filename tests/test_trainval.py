"""CamVid's final protocol (studies/camvid/trainval.py and the trainval@<model> stages): the linked folder trains on
train + val, evaluates on val, has no test split, follows the original, and stays beside the study."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "data"))  # the dataset fixtures

from fixtures import make_camvid  # noqa: E402

from lemore.config import DataCfg  # noqa: E402
from lemore.data import build_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trainval():
    spec = importlib.util.spec_from_file_location("camvid_trainval", ROOT / "studies" / "camvid" / "trainval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def names(ds) -> list[str]:
    return sorted(img.name for img, _ in ds.list_files())


def test_the_training_split_is_train_plus_val(trainval, tmp_path):
    src = make_camvid(tmp_path / "CamVid")
    out = tmp_path / "runs" / "camvid_trainval" / "CamVid"
    counts = trainval.build(src, out)
    assert counts == {"train": 5, "trainannot": 5, "val": 2, "valannot": 2}
    train = build_dataset(DataCfg(dataset="camvid", root=str(out), num_classes=11), "train", transform=None)
    val = build_dataset(DataCfg(dataset="camvid", root=str(out), num_classes=11), "val", transform=None)
    original = {s: build_dataset(DataCfg(dataset="camvid", root=str(src), num_classes=11), s, transform=None)
                for s in ("train", "val")}
    assert names(train) == sorted(names(original["train"]) + names(original["val"]))
    assert names(val) == names(original["val"])
    for (img, ann), name in zip(train.list_files(), names(train), strict=True):
        assert img.resolve().parent.name in ("train", "val") and ann.resolve().name == name
        assert ann.resolve().parent.name == img.resolve().parent.name + "annot"  # each label with its own image
    assert not (out / "test").exists() and not (out / "testannot").exists()  # the held-out split stays out


def test_a_second_build_follows_the_original(trainval, tmp_path):
    src = make_camvid(tmp_path / "CamVid")
    out = tmp_path / "tv"
    trainval.build(src, out)
    (src / "val" / "0016E5_07961.png").unlink()
    (src / "valannot" / "0016E5_07961.png").unlink()
    assert trainval.build(src, out)["train"] == 4
    assert not list(tmp_path.glob(".tv.*"))  # no temporary or old folder left behind


def test_the_default_root_is_lemore_data(trainval, tmp_path, monkeypatch):
    make_camvid(tmp_path / "data" / "CamVid")
    monkeypatch.setenv("LEMORE_DATA", str(tmp_path / "data"))
    assert trainval.build("", tmp_path / "tv")["train"] == 5


def test_bad_folders_are_named_and_leave_the_last_build(trainval, tmp_path):
    src = make_camvid(tmp_path / "CamVid")
    out = tmp_path / "tv"
    trainval.build(src, out)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        trainval.build(tmp_path / "nowhere", out)
    with pytest.raises(ValueError, match="source folder itself"):
        trainval.build(src, src)
    dup = src / "val" / "0001TP_006690.png"  # a training image's name in val too
    dup.write_bytes((src / "train" / dup.name).read_bytes())
    with pytest.raises(ValueError, match="0001TP_006690.png is in both"):
        trainval.build(src, out)
    assert len(list((out / "train").iterdir())) == 5  # the last good build is untouched


def test_the_trainval_run_stays_beside_the_study():
    """trainval@<model> trains on the linked folder into results/camvid/trainval/ with the study's parameters,
    and nothing there is read by the report (its val scores are on images it trained on)."""
    params = yaml.safe_load((ROOT / "studies/camvid/params.yaml").read_text())
    assert params["trainval"] == ["lemore"] and set(params["trainval"]) <= set(params["models"])
    stages = yaml.safe_load((ROOT / "studies/camvid/dvc.yaml").read_text())["stages"]
    cmd = stages["trainval"]["do"]["cmd"]
    assert cmd.startswith("python studies/camvid/trainval.py --root \"${finetune.data_root}\" --out "
                          "runs/camvid_trainval/CamVid &&")
    assert "--section finetune" in cmd and "-p data_root runs/camvid_trainval/CamVid" in cmd
    assert "-p seed 0" in cmd and "results/camvid/trainval/metrics/${item}/seed0" in cmd
    assert "results/camvid/metrics" not in cmd and "-k iterations" not in cmd  # the study's schedule, its own folder
    finetune_deps = stages["finetune"]["deps"]
    assert set(finetune_deps) | {"studies/camvid/trainval.py"} == set(stages["trainval"]["do"]["deps"])
    weights = stages["trainval_weights"]["do"]
    assert [next(iter(o)) for o in weights["outs"]] == ["results/camvid/trainval/weights/${item}.safetensors",
                                                        "results/camvid/trainval/weights/${item}.safetensors.json"]
    assert not any("trainval" in d for d in stages["report"]["deps"])
