"""docs/reliability.md is what ``fault_table.FAULTS`` renders, and every row is run by the test it names."""

from __future__ import annotations

import ast
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
