"""SIGKILL a training at deterministic points (``LEMORE_FAULT``), check what it leaves, rerun, compare.

Extends tests/engine/test_train.py::test_kill_and_resume_equals_uninterrupted (one kill, after a checkpoint) to
every place a real run dies: between backward and the optimizer step, between writing a checkpoint or a
results file and renaming it, and in the middle of the final evaluation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from fault_table import cases
from reliability_harness import RUN_NAME, assert_equals_reference, fill, jsonl, temp_files, tiny_sets

from lemore.checkpoint import load_checkpoint
from lemore.config import load
from lemore.engine.train import train


def killed_in_fork(fn, spec: str, timeout: float = 240) -> bool:
    """Run ``fn`` in a forked child with ``LEMORE_FAULT=spec``; True if the child died of SIGKILL."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 3
        try:
            os.environ["LEMORE_FAULT"] = spec
            fn()
            code = 2  # the fault point was never reached
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise TimeoutError(f"the child with LEMORE_FAULT={spec} neither died nor finished in {timeout} s")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", cases("test_killed_run_resumes_exactly"))
def test_killed_run_resumes_exactly(fault, reference_run, synthetic_root, tmp_path, subprocess_env):
    inputs = fill(fault.inputs, {"run_name": RUN_NAME})
    runs, results = tmp_path / "runs", tmp_path / "results"
    run_dir = runs / RUN_NAME
    sets = tiny_sets(synthetic_root, runs)
    cfg = load(dataset="synthetic", overrides=dict(s.split("=", 1) for s in sets))
    if inputs.get("via") == "cli":  # the real command in a new process (8 s of imports on a small CPU)
        cmd = [sys.executable, "-m", "lemore", "train", "--dataset", "synthetic", "--results-dir", str(results),
               "--set", *sets]
        proc = subprocess.run(cmd, env={**subprocess_env, "LEMORE_FAULT": inputs["spec"]}, capture_output=True,
                              text=True, timeout=240)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
        assert f"LEMORE_FAULT: kill at {inputs['spec'].split(':')[0]}:" in proc.stderr
    else:  # a fork of this process, which has torch imported already: the same death, without the imports
        assert killed_in_fork(lambda: train(cfg, run_dir=run_dir, results_dir=results), inputs["spec"])

    # ------------------------------------------------------------------------ what the killed run left behind
    last = run_dir / "last.pt"
    if inputs["last"] is None:
        assert not last.exists()
    else:
        assert load_checkpoint(last)["iteration"] == inputs["last"]
    for path in (run_dir / "metrics.json", results / f"{RUN_NAME}.json"):  # absent or complete, never half
        assert not path.exists() or json.loads(path.read_text())["metrics"]["num_images"] == 4
    if (run_dir / "model.pt").exists():
        load_checkpoint(run_dir / "model.pt")
    jsonl(run_dir)  # every line parses
    assert [n[1:].rsplit(".", 2)[0] for n in temp_files(run_dir)] == inputs["temps"]
    assert [n[1:].rsplit(".", 2)[0] for n in temp_files(results)] == inputs.get("result_temps", [])

    # --------------------------------------------------------------------------- rerun: resume, then compare
    train(cfg, run_dir=run_dir, results_dir=results)
    assert temp_files(run_dir, results) == []  # the interrupted writes' temp files are gone
    log = (run_dir / "train.log").read_text()
    assert ("resumed" in log) == (inputs["last"] is not None)
    assert_equals_reference(run_dir, reference_run, results)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", cases("test_killed_pretraining_resumes_exactly"))
def test_killed_pretraining_resumes_exactly(fault, tmp_path):
    import torch
    from safetensors.torch import load_file

    from lemore.engine.pretrain import load_pretrain_cfg, pretrain
    from lemore.launch import make_tiny_imagenet

    root = make_tiny_imagenet(tmp_path / "imagenet", num_classes=4, per_class=4, size=64)
    cfg = load_pretrain_cfg(overrides={"root": str(root), "num_classes": 4, "img_size": 64, "iters": 4,
                                       "batch_size": 4, "ckpt_interval": 2, "eval_interval": 1000, "log_interval": 1,
                                       "device": "cpu", "wandb": "disabled", "num_workers": 0})
    straight = pretrain(cfg, run_dir=tmp_path / "straight")
    killed = tmp_path / "killed"
    assert killed_in_fork(lambda: pretrain(cfg, run_dir=killed), fault.inputs["spec"])
    assert load_checkpoint(killed / "last.pt")["iteration"] == fault.inputs["last"]
    assert not (killed / "encoder.safetensors").exists() and not (killed / "metrics.json").exists()

    pretrain(cfg, run_dir=killed)
    assert "resumed" in (killed / "train.log").read_text()
    a, b = load_file(straight / "encoder.safetensors"), load_file(killed / "encoder.safetensors")
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == [], "encoder weights differ"
    assert json.loads((killed / "metrics.json").read_text())["metrics"] == \
        json.loads((straight / "metrics.json").read_text())["metrics"]
    assert jsonl(killed) == jsonl(straight)
