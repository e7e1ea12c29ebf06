"""``dvc repro`` killed in the middle of a stage, then rerun: it completes, and nothing stale is left.

The project copy and the smoke parameters come from tests/test_pipeline.py (the pipeline's own tests). The kill
is deterministic: ``LEMORE_FAULT=step:2:hang`` makes the training inside the fine-tuning notebook stop at
iteration 2 and write its pid to a marker file; the test then SIGKILLs dvc and every process under it at once
(papermill's kernel included, which runs in a session of its own), as a power cut or a killed job would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from fault_table import cases
from reliability_harness import known_issue

#: Files that only an interrupted write leaves: the engine's ``.<name>.<random>.tmp``, the notebook launcher's
#: ``.<name>.tmp<pid>.ipynb``, and the launcher's ``<name>.failed.ipynb``.
STALE = re.compile(r"(^\..*\.tmp$)|(\.tmp\d*\.ipynb$)|(\.failed\.ipynb$)")


def _env(proj: Path, **extra: str) -> dict[str, str]:
    """The environment tests/test_pipeline.py's ``dvc`` helper gives its commands."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(proj), "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
            **extra}


def _kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and all its descendants (found first, then killed together)."""
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs[1:], timeout=30)  # not the root: its status is Popen.wait's to collect
    return [p.pid for p in procs]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("fault", cases("test_dvc_repro_killed_mid_stage"))
def test_dvc_repro_killed_mid_stage(fault, tmp_path):
    pipeline = pytest.importorskip("test_pipeline")  # tests/test_pipeline.py: copy_project, dvc, smoke_params
    stage = fault.inputs["stage"]
    seed = stage.rsplit("-", 1)[1]  # finetune@<dataset>-<model>-<seed>: runs/<dataset>/<model>/seed<seed>/
    proj = pipeline.copy_project(tmp_path / "proj")
    params = pipeline.smoke_params(tmp_path)
    params["models"] = ["lemore"]
    params["datasets"] = {"synthetic": params["datasets"]["synthetic"]}
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    marker = tmp_path / "hanging.pid"
    log = tmp_path / "killed_repro.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", stage], cwd=proj, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=_env(proj, LEMORE_FAULT=fault.inputs["spec"], LEMORE_FAULT_MARKER=str(marker)))
    try:
        deadline = time.monotonic() + 480
        while not marker.exists():
            assert proc.poll() is None, f"dvc repro ended ({proc.returncode}) before the fault:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the fault point was not reached:\n{log.read_text()}"
            time.sleep(0.2)
        hanging = int(marker.read_text())
        killed = _kill_tree(proc.pid)
        assert hanging in killed, "the training process was not under dvc"
    finally:
        if proc.poll() is None:
            _kill_tree(proc.pid)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    run_dirs = list((proj / "runs" / "synthetic" / "lemore" / f"seed{seed}").glob("*/config.yaml"))
    assert run_dirs, "the stage was killed before its training started"  # it really was mid-stage

    rerun = pipeline.dvc(proj, "repro", stage)  # raises, with dvc's output, if it fails
    assert f"Running stage '{stage}'" in rerun.stdout, rerun.stdout
    status = pipeline.dvc(proj, "status", stage)
    assert "up to date" in status.stdout, status.stdout

    files = [p for d in ("results", "runs") for p in (proj / d).rglob("*") if p.is_file()]
    for p in files:
        if p.suffix == ".json":
            json.loads(p.read_text())  # complete
    run = next((proj / "runs" / "synthetic" / "lemore" / f"seed{seed}").iterdir())
    assert (run / "model.pt").is_file() and json.loads((run / "metrics.json").read_text())["iteration"] == 2
    assert (proj / "results" / "metrics" / "synthetic" / "lemore" / f"seed{seed}" / f"{run.name}.json").is_file()
    stale = sorted(str(p.relative_to(proj)) for p in files if STALE.search(p.name))
    known_issue(fault, not stale, f"no stale files remain (found {stale})")
