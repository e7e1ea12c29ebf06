"""lemore.study: a finished run's weights exported with their config, and the size each model runs a frame at."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "data"))  # the dataset fixtures

from fixtures import make_camvid  # noqa: E402

from lemore import study  # noqa: E402
from lemore.checkpoint import load_weights, read_weights_config, save_checkpoint  # noqa: E402
from lemore.config import load  # noqa: E402
from lemore.registry import build_model  # noqa: E402


def test_deploy_size_pads_only_the_models_that_need_it():
    assert study.deploy_size("lemore", (360, 480)) == (384, 512)
    assert study.deploy_size("lemore_tf_na", (360, 480)) == (384, 512)
    assert study.deploy_size("topformer_t", (360, 480)) == (384, 512)
    assert study.deploy_size("topformer_t", (512, 512)) == (512, 512)
    for name in ("segformer_b0", "seaformer_t", "lraspp_mobilenet_v3_large"):
        assert study.deploy_size(name, (360, 480)) == (360, 480)


@pytest.fixture
def finished_run(tmp_path):
    """A results folder with one run's JSON, naming a checkpoint trained in channels_last (as LeMoRe on CPU)."""
    root = make_camvid(tmp_path / "CamVid")
    cfg = load(dataset="camvid", overrides={"model.name": "lemore", "data.crop_size": [64, 64], "data.root": str(root),
                                            "data.num_workers": 0})
    torch.manual_seed(0)
    model = build_model(cfg).to(memory_format=torch.channels_last)
    ckpt = save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "iteration": 1},
                           tmp_path / "run" / "model.pt")
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "lemore_run.json").write_text(json.dumps({"run_name": "lemore_run", "config": cfg.to_dict(),
                                                        "metrics": {"miou": 12.5}, "params_m": 1.5,
                                                        "checkpoint": str(ckpt)}))
    return folder, model, root


def test_export_weights_writes_half_weights_with_config_and_their_val_miou(finished_run, tmp_path):
    folder, model, root = finished_run
    out = tmp_path / "weights" / "lemore.safetensors"
    info = study.export_weights(folder, out, data_root=str(root))
    assert out.is_file() and json.loads(Path(f"{out}.json").read_text()) == info
    assert info["run_name"] == "lemore_run" and info["run_val_miou"] == 12.5 and 0 <= info["file_val_miou"] <= 100
    assert read_weights_config(out)["model"]["name"] == "lemore"
    saved, own = load_weights(out), model.state_dict()
    assert saved.keys() == own.keys()
    for k, v in saved.items():
        if own[k].is_floating_point() and own[k].ndim >= 2:
            assert v.dtype == torch.float16 and torch.allclose(v.float(), own[k], rtol=1e-3, atol=1e-4)
        else:
            assert v.dtype == own[k].dtype and torch.equal(v, own[k])
    again = study.evaluate_weights(out, str(root))
    assert again["miou"] == info["file_val_miou"] and again["num_images"] == 2


def test_export_weights_errors_name_the_problem(finished_run, tmp_path):
    folder, _, _ = finished_run
    with pytest.raises(FileNotFoundError, match=r"expected the one results file of a finished run"):
        study.export_weights(tmp_path / "nowhere", tmp_path / "w.safetensors")
    Path(json.loads(next(folder.glob("*.json")).read_text())["checkpoint"]).unlink()
    with pytest.raises(FileNotFoundError, match=r"model.pt \(the checkpoint of lemore_run.*does not exist"):
        study.export_weights(folder, tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()
    with pytest.raises(SystemExit):
        study._cli(["weights", str(folder), "--out", str(tmp_path / "w.pt")])  # not a .safetensors name


def test_profile_markdown_names_the_run_size():
    result = {"protocol": {"what": "ONNX Runtime", "cpu": "some CPU"},
              "rows": [{"model": "lemore", "input_size": [360, 480], "run_size": [384, 512], "num_classes": 11,
                        "params_m": 1.55, "gflops": 0.56, "latency_ms": 30.0, "latency_ratio": 0.5},
                       {"model": "lraspp_mobilenet_v3_large", "input_size": [360, 480], "run_size": [360, 480],
                        "num_classes": 11, "params_m": 3.2, "gflops": 1.36, "latency_ms": 60.0,
                        "latency_ratio": 1.0}]}
    text = study.profile_markdown(result)
    assert "| lemore | 384x512 | 1.55 | 0.56 | 30.0 | 0.50 |" in text and "some CPU" in text
    assert "| lraspp_mobilenet_v3_large | 360x480 |" in text
