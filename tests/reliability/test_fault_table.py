"""docs/reliability.md is what ``fault_table.FAULTS`` renders, and every row is run by the test it names."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import fault_table as ft
import pytest

from lemore import faults


def test_doc_is_generated_from_the_fault_list():
    text = ft.DOC.read_text()
    outcomes, summary = ft.parse_doc(text)
    assert set(outcomes) == {f.id for f in ft.FAULTS}, "rows added or removed: regenerate the page"
    assert text == ft.render(outcomes, summary), (
        "docs/reliability.md differs from tests/reliability/fault_table.py: run "
        "`python -m tests.reliability.fault_table --run --slow` (or without --run to keep the recorded outcomes)")


def test_every_row_is_run_by_the_test_it_names():
    """Each row's ``test`` is a function of tests/reliability/test_*.py parametrized with ``cases(<its name>)``,
    so a row cannot be listed without being run (``cases`` returns exactly the rows naming that test)."""
    parametrized = {}
    for path in Path(__file__).parent.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                calls = [c for d in node.decorator_list for c in ast.walk(d)
                         if isinstance(c, ast.Call) and getattr(c.func, "id", None) == "cases"]
                parametrized.update({node.name: c.args[0].value for c in calls})
    for f in ft.FAULTS:
        assert parametrized.get(f.test) == f.test, f"{f.id}: no test function {f.test} parametrized with cases()"
    assert {f.area for f in ft.FAULTS} == set(ft.AREAS)


def test_every_stage_named_by_a_row_exists():
    """A row's ``stage`` is a stage of the root dvc.yaml (with its matrix expanded): the slow pipeline test would
    otherwise fail only in `make test-all`, as it did when the seeds were added to the stage names."""
    root = Path(__file__).resolve().parents[2]
    named = {f.id: f.inputs["stage"] for f in ft.FAULTS if "stage" in f.inputs}
    assert named, "no row names a stage: this test checks nothing"
    out = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=root, check=True,
                         capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    stages = set(out.stdout.split())
    for fid, stage in named.items():
        assert stage in stages, f"{fid}: stage {stage!r} is not in dvc.yaml; its stages: {sorted(stages)}"


def test_fault_spec_is_parsed_strictly(monkeypatch):
    """A mistyped LEMORE_FAULT must fail loudly: silently never firing would make a fault test pass vacuously."""
    assert faults.parse("write:last.pt@4") == ("write", "last.pt@4", "kill")
    assert faults.parse("probe:results:EROFS") == ("probe", "results", "EROFS")
    for bad in ("stpe:3", "step", "step:3:explode", "step::kill"):
        with pytest.raises(ValueError, match="LEMORE_FAULT"):
            faults.parse(bad)
    monkeypatch.setenv(faults.FAULT_ENV, "eval:2:ENOSPC")
    faults.maybe_fault("eval", 1)  # another key: nothing happens
    faults.maybe_fault("step", 2)  # another point: nothing happens
    with pytest.raises(OSError, match="No space left on device") as err:
        faults.maybe_fault("eval", 2)
    assert err.value.errno == 28
    monkeypatch.delenv(faults.FAULT_ENV)
    faults.maybe_fault("eval", 2)  # unset: nothing
