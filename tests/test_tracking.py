"""Tracker: an offline W&B run that can be read back, metrics.jsonl always, W&B failures never fatal."""

import json
import sys
import time

import numpy as np
import pytest

from lemore.tracking import Tracker, read_offline_run, write_results


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.delenv("WANDB_MODE", raising=False)


def _log_some(tracker):
    tracker.log({"train/loss": 2.5, "train/lr": 1e-3}, step=1)
    tracker.log({"train/loss": 1.5, "train/lr": 5e-4}, step=2)
    tracker.log({"val/miou": 42.0, "val/aacc": 80.0}, step=2)
    tracker.log_table("val/per_class_iou", ["class", "iou"], [["sky", 90.0], ["box", float("nan")]], step=2)
    tracker.log_images("val/predictions", [np.zeros((8, 24, 3), np.uint8)], step=2, captions=["val #0"])
    tracker.summary({"final/miou": 42.0})
    tracker.finish()


def _read_complete(run_dir, timeout=30.0):
    """The offline run once wandb-core has flushed it (it writes asynchronously, even after finish())."""
    deadline = time.monotonic() + timeout
    while True:
        run = read_offline_run(run_dir)
        if run["complete"] or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def test_offline_run_reads_back(tmp_path):
    run_dir = tmp_path / "run"
    tracker = Tracker(run_dir, {"data": {"dataset": "synthetic"}, "train": {"lr": 1e-3}}, mode="offline",
                      name="lemore_8x1-300_synthetic-128x128", group="synthetic")
    assert tracker.run is not None, "W&B offline init failed"
    _log_some(tracker)
    run = _read_complete(run_dir)
    assert run["path"].startswith(str(run_dir / "wandb"))  # under the run directory
    assert run["name"] == "lemore_8x1-300_synthetic-128x128" and run["group"] == "synthetic"
    assert run["config"]["train"] == {"lr": 1e-3} and run["config"]["data"]["dataset"] == "synthetic"
    logged = {k for row in run["history"] for k in row}
    assert {"train/loss", "train/lr", "val/miou", "val/aacc"} <= logged
    assert "val/per_class_iou._type" in logged and "val/predictions._type" in logged  # table and images
    losses = [row["train/loss"] for row in run["history"] if "train/loss" in row]
    assert losses == [2.5, 1.5]
    assert run["summary"]["final/miou"] == 42.0
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[0] == {"step": 1, "train/loss": 2.5, "train/lr": 1e-3}
    assert lines[-1] == {"summary": {"final/miou": 42.0}}


def test_disabled_writes_jsonl_only(tmp_path):
    tracker = Tracker(tmp_path, {}, mode="disabled")
    _log_some(tracker)
    assert not (tmp_path / "wandb").exists()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4


def test_wandb_import_failure_warns_and_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.warns(RuntimeWarning, match="W&B init failed.*training goes on"):
        tracker = Tracker(tmp_path, {}, mode="offline")
    _log_some(tracker)
    assert "W&B init failed" in caplog.text
    assert "val/miou" in (tmp_path / "metrics.jsonl").read_text()


def test_wandb_log_failure_warns_once_and_goes_on(tmp_path):
    tracker = Tracker(tmp_path, {}, mode="offline")
    assert tracker.run is not None

    def boom(*a, **k):
        raise ConnectionError("simulated")

    tracker.run.log = boom
    with pytest.warns(RuntimeWarning, match="W&B log failed.*simulated"):
        tracker.log({"train/loss": 1.0}, step=1)
    assert tracker.run is None  # W&B is off for the rest of the run: no second warning, no second failure
    tracker.log({"train/loss": 0.5}, step=2)
    tracker.finish()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_non_master_ranks_do_nothing(tmp_path):
    tracker = Tracker(tmp_path / "r1", {}, mode="offline", enabled=False)
    _log_some(tracker)
    assert not (tmp_path / "r1").exists()


def test_write_results(tmp_path):
    path = write_results(tmp_path / "results" / "run.json", run_name="run", config={"a": 1},
                         metrics={"miou": 50.0, "per_class_iou": {"x": float("nan")}})
    assert json.loads(path.read_text()) == {"run_name": "run", "config": {"a": 1},
                                            "metrics": {"miou": 50.0, "per_class_iou": {"x": None}}}
