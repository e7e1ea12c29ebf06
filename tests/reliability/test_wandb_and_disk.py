"""W&B that cannot start, and a disk that fills during training: the run goes on, or stops with nothing lost."""

from __future__ import annotations

import json
import time
import warnings

import pytest
from fault_table import cases
from reliability_harness import REFERENCE, RUN_NAME, assert_equals_reference, run_cli, temp_files, tiny_sets

from lemore.checkpoint import load_checkpoint
from lemore.config import load
from lemore.engine.train import train


@pytest.mark.timeout(120)  # W&B must not hang a run: a wandb.init that waited forever fails here
@pytest.mark.parametrize("fault", cases("test_wandb_unavailable_training_goes_on"))
def test_wandb_unavailable_training_goes_on(fault, synthetic_root, tmp_path, monkeypatch, request):
    import wandb

    from lemore.tracking import read_offline_run

    # No credentials from this machine: an empty HOME (no ~/.netrc), no key, no W&B settings of the user.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC", "WANDB_DIR", "WANDB_INIT_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"WANDB_CONFIG_DIR": str(tmp_path / "wandb_config"), "WANDB_CACHE_DIR": str(tmp_path / "cache"),
                       "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true", "WANDB_SILENT": "true",
                       **fault.inputs["env"]}.items():
        monkeypatch.setenv(key, value)
    cfg = load(dataset="synthetic", overrides={**REFERENCE, "train.iters": 2, "data.root": str(synthetic_root),
                                               "out_dir": str(tmp_path / "runs"), "wandb": "online"})
    # W&B reads the environment once per process, when it is first set up: start it afresh with this one.
    wandb.teardown()
    request.addfinalizer(wandb.teardown)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_dir = train(cfg)
    wandb_warnings = [str(w.message) for w in caught if "W&B" in str(w.message)]
    assert len(wandb_warnings) == 1, wandb_warnings  # once, not once per logged value
    assert f"W&B online init failed ({fault.inputs['error']}" in wandb_warnings[0]
    assert "training goes on with an offline W&B run" in wandb_warnings[0] and "wandb sync" in wandb_warnings[0]
    result = json.loads((run_dir / "metrics.json").read_text())
    assert result["iteration"] == 2 and result["metrics"]["num_images"] == 4
    deadline = time.monotonic() + 60
    while not (offline := read_offline_run(run_dir))["complete"] and time.monotonic() < deadline:
        time.sleep(0.2)  # wandb-core flushes the file asynchronously
    assert "offline-run-" in offline["path"] and offline["complete"], offline["path"]
    assert [r["train/loss"] for r in offline["history"] if "train/loss" in r] == \
        [r["train/loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
         if "train/loss" in r]  # nothing lost for W&B either


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", cases("test_disk_fills_during_training"))
def test_disk_fills_during_training(fault, reference_run, synthetic_root, tmp_path, monkeypatch):
    runs, results = tmp_path / "runs", tmp_path / "results"
    sets = tiny_sets(synthetic_root, runs)
    monkeypatch.setenv("LEMORE_FAULT", fault.inputs["spec"])
    code, out = run_cli(["train", "--results-dir", results, "--set", *sets])
    assert code == 1 and "Traceback" not in out, out[-3000:]
    assert all(m in out for m in fault.inputs["messages"]), out[-2000:]
    run_dir = runs / RUN_NAME
    assert load_checkpoint(run_dir / "last.pt")["iteration"] == 2  # the previous checkpoint, intact
    assert temp_files(run_dir, results) == [] and not (run_dir / "metrics.json").exists()

    monkeypatch.delenv("LEMORE_FAULT")  # space again: rerunning resumes and ends as if nothing happened
    assert run_cli(["train", "--results-dir", results, "--set", *sets])[0] == 0
    assert "resumed" in (run_dir / "train.log").read_text()
    assert_equals_reference(run_dir, reference_run, results)
