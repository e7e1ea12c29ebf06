"""Helpers of the reliability tests (the fixtures are in conftest.py): the reference run's settings, running the
CLI in this process, snapshots of earlier results, comparisons with the reference run, and known issues.

A module of its own, not conftest.py, because ``from conftest import`` can find another folder's conftest."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from fault_table import RUN_NAME, Fault

# The engine tests' tiny run and fixtures (synthetic data, child-process environment, one torch thread), loaded
# from their conftest so that there is one definition of them; conftest.py registers the fixtures for this folder.
_spec = importlib.util.spec_from_file_location("lemore_tests_engine_conftest",
                                               Path(__file__).parents[1] / "engine" / "conftest.py")
engine_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(engine_conftest)
TINY = engine_conftest.TINY

#: The run every kill is compared with: 4 iterations, a checkpoint every 2, the final evaluation only.
REFERENCE = {**TINY, "train.iters": 4, "train.ckpt_interval": 2}


def cli_value(v) -> str:
    return json.dumps(list(v)) if isinstance(v, (tuple, list)) else str(v)


def tiny_sets(data_root: Path | str, out_dir: Path | str, **extra) -> list[str]:
    """``--set`` values of the reference run (what ``lemore train`` needs to run it)."""
    values = {**REFERENCE, "data.root": str(data_root), "out_dir": str(out_dir), **extra}
    return [f"{k}={cli_value(v)}" for k, v in values.items()]


class RunsCode:
    """Unpickling this calls ``os.makedirs(marker)``: a stand-in for any code hidden in a model file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` -> sha256 of its bytes (folders as "dir"): equal snapshots = nothing changed."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


#: Logged values that measure time, not the computation.
TIMING = {"train/iter_per_s", "train/img_per_s", "train/data_wait"}


def jsonl(run_dir: Path) -> list[dict]:
    """``metrics.jsonl`` without the timing values; every line must be complete JSON."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def assert_equals_reference(run_dir: Path, reference: Path, results: Path | None = None) -> None:
    """``run_dir`` finished with exactly the reference run's metrics, weights and logged values."""
    from lemore.checkpoint import load_checkpoint

    metrics = json.loads((reference / "metrics.json").read_text())["metrics"]
    assert json.loads((run_dir / "metrics.json").read_text())["metrics"] == metrics
    if results is not None:
        assert json.loads((results / f"{RUN_NAME}.json").read_text())["metrics"] == metrics
    a, b = load_checkpoint(reference / "model.pt")["model"], load_checkpoint(run_dir / "model.pt")["model"]
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == [], "weights differ"
    assert load_checkpoint(run_dir / "last.pt")["iteration"] == load_checkpoint(reference / "last.pt")["iteration"]
    assert jsonl(run_dir) == jsonl(reference)  # no line twice, none missing


def temp_files(*folders: Path) -> list[str]:
    """Leftover temp files of interrupted writes (``.<name>.<random>.tmp``) in ``folders``."""
    from lemore.checkpoint import _TEMP_FILE

    return sorted(p.name for d in folders if d.is_dir() for p in d.iterdir() if _TEMP_FILE.match(p.name))


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``python -m lemore ARGV`` in this process: (exit status, stdout + stderr). argparse errors and
    ``SystemExit("message")`` give the status a process would have."""
    from lemore.cli import main

    out = io.StringIO()
    handler = logging.StreamHandler(out)  # the `lemore` log, which a terminal shows (pytest captures the root's)
    log = logging.getLogger("lemore")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            if isinstance(e.code, str):
                print(e.code, file=out)
                code = 1
            else:
                code = e.code
        finally:
            log.removeHandler(handler)
            log.setLevel(level)
    return code, out.getvalue()


def fill(value, places: dict[str, Path | str]):
    """Fill ``{name}`` placeholders in a string / list / dict of a fault's inputs."""
    if isinstance(value, str):
        return value.format(**{k: str(v) for k, v in places.items()})
    if isinstance(value, list):
        return [fill(v, places) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, places) for k, v in value.items()}
    return value


def known_issue(fault: Fault, ok: bool, what: str) -> None:
    """The check that a row's known issue breaks: xfail while it is broken, fail once it is fixed (the row must
    then lose its ``known_issue``). Checks before this one are asserted as usual."""
    if fault.known_issue:
        if ok:
            pytest.fail(f"{fault.id}: the known issue is fixed ({what} now holds): remove known_issue from its row "
                        "in tests/reliability/fault_table.py and regenerate docs/reliability.md")
        pytest.xfail(f"{fault.known_issue} [checked: {what}]")
    assert ok, what

