"""The CamVid recipe search (studies/camvid/search.py, search.yaml): every run's overrides are valid, and a run
that reads its results from the study's seed-0 folder is exactly the camvid recipe the study trains."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict
from pathlib import Path

import pytest

from lemore.config import load

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def search():
    spec = importlib.util.spec_from_file_location("camvid_search", ROOT / "studies" / "camvid" / "search.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _without_name(cfg) -> dict:
    d = asdict(cfg)
    d.pop("name", None)
    return d


def test_every_search_run_is_a_valid_config(search):
    runs = search.load_spec()
    assert runs, "search.yaml lists no runs"
    for run in runs:
        cfg = search.run_config(run, "")
        assert cfg.model.name == run["model"] and cfg.data.dataset == "camvid"


def test_runs_read_from_the_study_are_the_recipe(search):
    """A search run that takes the study's seed-0 results must be the configuration the study trains."""
    shared = [r for r in search.load_spec() if "results" in r]
    assert shared, "no search run reads the study's results"
    for run in shared:
        assert run["results"] == f"results/camvid/metrics/{run['model']}/seed0", run["name"]
        recipe = load(dataset="camvid", overrides={"model.name": run["model"]})
        assert _without_name(search.run_config(run, "")) == _without_name(recipe), run["name"]


def test_duplicate_names_are_refused(search, tmp_path):
    spec = tmp_path / "search.yaml"
    spec.write_text("runs:\n  - {name: a, model: lemore}\n  - {name: a, model: lemore}\n")
    with pytest.raises(ValueError, match="unique"):
        search.load_spec(spec)


def test_summary_marks_runs_without_results(search, monkeypatch, tmp_path):
    monkeypatch.setattr(search, "RESULTS", tmp_path)
    monkeypatch.setattr(search, "ROOT", tmp_path)
    text = search.summary([{"name": "x", "model": "lemore"}, {"name": "y", "model": "lemore", "stopped": True},
                           {"name": "z", "model": "lemore", "results": "results/camvid/metrics/lemore/seed0"}])
    assert "| x | lemore | not run yet |" in text and "| y | lemore | stopped: see its note |" in text
    assert "the study's run, not trained yet" in text
