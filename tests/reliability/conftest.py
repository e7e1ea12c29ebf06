"""Fixtures of the reliability tests: the engine tests' tiny run (reused, not copied), one reference run per session,
"earlier results" that a failing command must leave byte-for-byte unchanged, a pickle that would run code, and a
recorder of each fault's outcome for ``python -m tests.reliability.fault_table --run``. Helpers are in
reliability_harness.py."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # `import fault_table, reliability_harness` from the tests

from fault_table import FAULTS, RUN_NAME, Fault  # noqa: E402
from reliability_harness import REFERENCE, RunsCode, engine_conftest  # noqa: E402

# Registered for this folder by being names of this module.
one_thread = engine_conftest.one_thread
synthetic_root = engine_conftest.synthetic_root
subprocess_env = engine_conftest.subprocess_env


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, synthetic_root) -> Path:
    """An uninterrupted run of REFERENCE (``RUN_NAME``) with ``--results-dir``: ``<tmp>/runs/RUN_NAME`` and
    ``<tmp>/results/RUN_NAME.json``. Read-only: tests copy it (:func:`earlier`)."""
    from lemore.config import load
    from lemore.engine.train import train

    base = tmp_path_factory.mktemp("reference")
    cfg = load(dataset="synthetic", overrides={**REFERENCE, "data.root": str(synthetic_root),
                                               "out_dir": str(base / "runs")})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests that compare with it (function-scoped one_thread comes later)
    try:
        run_dir = train(cfg, results_dir=base / "results")
    finally:
        torch.set_num_threads(threads)
    assert run_dir.name == RUN_NAME
    return run_dir


@pytest.fixture
def earlier(reference_run, tmp_path) -> dict[str, Path]:
    """A copy of the reference run and its results file in ``tmp_path``: the earlier results a failing command
    must not change. Keys: runs, run, results, ckpt, tmp (an empty scratch folder)."""
    shutil.copytree(reference_run.parents[1], tmp_path / "earlier")
    runs = tmp_path / "earlier" / "runs"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return {"runs": runs, "run": runs / RUN_NAME, "results": tmp_path / "earlier" / "results",
            "ckpt": runs / RUN_NAME / "model.pt", "tmp": scratch}


@pytest.fixture
def evil(tmp_path) -> Path:
    """``evil.pt``: a checkpoint-shaped pickle whose loading would create ``<tmp>/code-ran``. The payload is
    checked to be live (an unsafe ``torch.load`` does run it) before the tests see the file."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil" / "evil.pt"
    path.parent.mkdir()
    torch.save({"model": {"w": torch.zeros(1)}, "iteration": 1, "extra": RunsCode(str(marker))}, path)
    torch.load(path, weights_only=False)  # noqa: S614 - proving that the payload runs
    assert marker.is_dir()
    marker.rmdir()
    yield path
    assert not marker.exists(), "the pickled code ran"


# --------------------------------------------------------------------------------------- outcome recording
_OUTCOMES: dict[str, str] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    fault = getattr(item, "callspec", None) and next(
        (v for v in item.callspec.params.values() if isinstance(v, Fault)), None)
    if fault is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if hasattr(report, "wasxfail"):
            outcome = "xfailed (known issue)" if report.skipped else "XPASS"
        else:
            outcome = report.outcome
        _OUTCOMES[fault.id] = outcome


def pytest_sessionfinish(session):
    path = os.environ.get("LEMORE_FAULT_OUTCOMES")
    if path:
        Path(path).write_text(json.dumps(_OUTCOMES, indent=2))


assert len({f.id for f in FAULTS}) == len(FAULTS), "fault ids must be unique"
