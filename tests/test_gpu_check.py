"""benchmarks/gpu_check.py: the dry run (every step on CPU at tiny sizes), its time limits and its failures.

The check itself needs a CUDA GPU (``make gpu-check``); here every code path that runs without CUDA is run.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import lemore
from lemore.config import recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(gc, tmp_path, *args) -> tuple[int, dict]:
    code = gc.main(["--dry-run", "--work-dir", str(tmp_path / "work"), "--out-dir", str(tmp_path / "out"), *args])
    return code, json.loads((tmp_path / "out" / "gpu.json").read_text())


def test_the_check_uses_the_ade20k_recipe_shape(gc, tmp_path):
    cfg, ade = gc.engine_config("lemore", gc.FULL, tmp_path), recipe("ade20k")
    shape = ("ade20k", (512, 512), (2048, 512), 150)
    assert (cfg.data.dataset, cfg.data.crop_size, cfg.data.scale, cfg.data.num_classes) == shape
    assert (ade.data.dataset, ade.data.crop_size, ade.data.scale, ade.data.num_classes) == shape
    assert (cfg.train.batch_size, cfg.train.iters, cfg.train.amp, cfg.train.channels_last) == (16, 300, True, True)
    assert ade.train.batch_size == 16 and gc.FULL.iters == 300 and gc.DEFAULT_BUDGET_S == 480
    assert sum(gc.STEP_BUDGET_S.values()) < gc.DEFAULT_BUDGET_S  # slack for the data generation


def test_model_list_includes_the_peers_and_skips_unregistered(gc):
    assert {"lemore", "segformer_b0", "topformer_t", "seaformer_t", "lraspp_mobilenet_v3_large",
            "lraspp_mobilenet_v3_large_reduced"} == set(gc.MODELS)
    have, skipped = gc.registered_models()
    assert set(have) == set(gc.MODELS) & set(lemore.list_models())
    assert set(skipped) == set(gc.MODELS) - set(lemore.list_models())
    assert all("not registered" in why for why in skipped.values())


def test_full_size_data_has_ade20k_sizes_and_names(gc, tmp_path):
    from lemore.data.ade20k import ADE20K

    s = replace(gc.FULL, unique_train=2, num_val=1)
    info = gc.make_data(tmp_path, s)
    assert info["train_images"] == gc.ADE20K_TRAIN_IMAGES  # links to 2 scenes: no epoch ends in 300 iterations
    train, val = ADE20K(Path(info["root"]), "train"), ADE20K(Path(info["root"]), "val")
    assert len(train) == gc.ADE20K_TRAIN_IMAGES and len(val) == 1
    for ds, i in ((train, 5), (val, 0)):
        image, mask = ds[i]
        assert 512 == min(image.shape[-2:]) and max(image.shape[-2:]) <= 896 and mask.shape == image.shape[-2:]
        assert int(mask[mask != 255].max()) < 8  # the synthetic classes, ADE20K's reduce_zero_label


def test_dry_run_runs_every_step(gc, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the torchrun of step 2 and the loader workers
    code, r = _run(gc, tmp_path, "--inline")
    assert code == 0, json.dumps(r["steps"], indent=1)[-3000:]
    assert r["dry_run"] and set(r["steps"]) == set(gc.STEPS)
    models, skipped = gc.registered_models()
    assert list(r["steps"]["train"]) == models and r["skipped_models"] == skipped
    for name, t in r["steps"]["train"].items():
        assert t["status"] == "ok" and all(c["losses_finite"] for c in t["compute_only"]), name
        assert [(c["amp"], c["grad_scaler"]) for c in t["compute_only"]] == [("fp32", False), ("float16", True)]
        assert t["engine"]["iters_logged"] == gc.DRY.iters and t["engine"]["iters_per_s"] > 0
        assert t["projected_hours_160k"] == pytest.approx(160_000 / t["engine"]["iters_per_s"] / 3600)
    ddp = r["steps"]["ddp"]
    assert ddp["ok"] and ddp["backend"] == "gloo" and ddp["world_size"] == 1
    assert "torch.distributed.run" in ddp["command"]
    ev = r["steps"]["eval"]
    assert ev["ok"] and ev["checkpoint"] == "step 1 (lemore)" and set(ev["modes"]) == {"whole", "slide"}
    for mode in ev["modes"].values():
        assert mode["gpu_fp32"]["within_tolerance"] and mode["gpu_fp32"]["num_images"] == gc.DRY.num_val
    rows = r["steps"]["latency"]["rows"]
    assert {(x["model"], x["batch"], x["dtype"]) for x in rows} == \
           {(m, b, d) for m in models for b in gc.DRY.latency_batches for d in ("fp32", "fp16")}
    assert all(x["output_finite"] and x["median_ms"] > 0 for x in rows)
    assert [x["workers"] for x in r["steps"]["dataloader"]["rows"]] == [0, 2]
    assert set(r["verdict"]["models"]) == set(models)
    md = (tmp_path / "out" / "gpu.md").read_text()
    for heading in ("## 1. Training", "## 2. torchrun", "## 3. Evaluation", "## 4. Latency", "## 5. Data loading",
                    "## Protocol", "dry run"):
        assert heading in md
    printed = capsys.readouterr().out
    for name in skipped:
        assert f"`{name}`" in md and f"NOTE {name}" in printed
    assert not (tmp_path / "work" / ".ade20k_synthetic.tmp").exists()


def test_a_broken_step_does_not_stop_the_others(gc, tmp_path, monkeypatch):
    def broken(s, work):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gc, "step_latency", broken)
    code, r = _run(gc, tmp_path, "--inline", "--steps", "eval", "latency", "dataloader")
    assert code == 1 and set(r["steps"]) == {"eval", "latency", "dataloader"}
    assert r["steps"]["latency"]["status"] == "error" and "illegal memory access" in r["steps"]["latency"]["error"]
    assert r["steps"]["dataloader"]["status"] == "ok"
    # without step 1 the evaluation trains its own short run first
    assert r["steps"]["eval"]["status"] == "ok" and "iteration run of this step" in r["steps"]["eval"]["checkpoint"]


def test_a_step_over_its_time_limit_is_killed_and_recorded(gc, tmp_path):
    code, r = _run(gc, tmp_path, "--steps", "latency", "--budget-s", "2")  # a worker process, killed after ~2 s
    lat = r["steps"]["latency"]
    assert code == 1 and lat["status"] == "timeout" and lat["time_limit_s"] <= 2 and lat["wall_s"] < 30
    assert "rows" not in lat and Path(lat["worker_log"]).is_file()


@pytest.mark.slow
def test_dry_run_with_a_process_per_step(gc, tmp_path, monkeypatch):
    """What `make gpu-check` does, at dry-run sizes: each step (each model of step 1) in its own process."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers: threads waiting for each other on a small shared CPU
    code, r = _run(gc, tmp_path)
    assert code == 0, json.dumps(r["steps"], indent=1)[-3000:]
    assert all(v["status"] == "ok" for k, v in r["steps"].items() if k != "train")
    assert all(v["status"] == "ok" and v["engine"]["iters_per_s"] for v in r["steps"]["train"].values())
    assert r["steps"]["ddp"]["ok"] and r["steps"]["eval"]["ok"]
