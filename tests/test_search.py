"""The CamVid recipe searches (studies/camvid/search.py, search.yaml, search2.yaml): every run's overrides are valid,
the grid and its rule are declared, the divergence rule and the learning-rate rule do what their docstrings say, and
the summary marks what is not trained."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = [ROOT / "studies" / "camvid" / "search.yaml", ROOT / "studies" / "camvid" / "search2.yaml"]


@pytest.fixture(scope="module")
def search():
    spec = importlib.util.spec_from_file_location("camvid_search", ROOT / "studies" / "camvid" / "search.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_search_run_is_a_valid_config(search, path):
    spec = search.load_file(path)
    assert spec["runs"], f"{path.name} lists no runs"
    for run in spec["runs"]:
        cfg = search.run_config(run, "", spec["base"])
        assert cfg.model.name == run["model"] and cfg.data.dataset == "camvid"
        assert cfg.train.iters % cfg.train.eval_interval == 0, run["name"]  # the last-quarter gain needs both points


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_result_is_the_run_its_file_names(search, path):
    """A committed results file holds the config its run asks for (nothing mixed up between runs); keys added to the
    config after the run read as the value the run had (``lemore.config.ADDED_KEYS``)."""
    from lemore.config import ADDED_KEYS

    spec = search.load_file(path)
    for run in spec["runs"]:
        if search.state(run, spec) not in ("done", "diverged"):
            continue
        record = search._record(run, spec)
        cfg = search.run_config(run, "", spec["base"]).to_dict()
        for section in ("data", "model", "train"):
            added = {key.split(".")[1]: v for key, v in ADDED_KEYS.items() if key.startswith(section + ".")}
            got = {k: (list(v) if isinstance(v, tuple) else v) for k, v in {**added, **record["config"][section]}.items()
                   if k not in ("root", "num_workers", "cache_gb")}
            want = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg[section].items()
                    if k not in ("root", "num_workers", "cache_gb")}
            assert got == want, f"{run['name']}: {section}"


def test_the_second_search_declares_its_grid_and_rule(search):
    spec = search.load_file(SPECS[1])
    grid = spec["lr_grid"]
    assert len(grid) >= 3 and max(grid) / min(grid) >= 4
    assert "highest final val mIoU" in spec["lr_rule"]
    assert spec["check_at"] > spec["check_window"] * 2


def test_a_grid_run_outside_the_grid_is_refused(search, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("lr_grid: [1.0e-3, 2.0e-3]\nruns:\n  - {name: a, model: lemore, grid: true, set: {train.lr: 3.0e-3}}\n")
    with pytest.raises(ValueError, match="not in lr_grid"):
        search.load_file(path)


def test_duplicate_names_are_refused(search, tmp_path):
    spec = tmp_path / "search.yaml"
    spec.write_text("runs:\n  - {name: a, model: lemore}\n  - {name: a, model: lemore}\n")
    with pytest.raises(ValueError, match="unique"):
        search.load_spec(spec)


def test_climbing_loss_is_divergence(search):
    falling = [(i, 2.0 - i / 1000) for i in range(50, 800, 50)]
    rising = [(i, 1.0 + max(0, i - 300) / 500) for i in range(50, 800, 50)]
    assert search.climbing(falling, 750, 250)[0] is False
    up, before, recent = search.climbing(rising, 750, 250)
    assert up and recent > before
    assert search.climbing(falling[:3], 750, 250)[0] is False  # too short to say



def test_the_learning_rate_rule(search, monkeypatch, tmp_path):
    monkeypatch.setattr(search, "ROOT", tmp_path)
    grid = [1e-3, 2e-3, 4e-3]
    runs = [{"name": f"m_{lr}", "model": "m", "grid": True, "set": {"train.lr": lr}} for lr in grid]
    runs += [{"name": f"n_{lr}", "model": "n", "grid": True, "set": {"train.lr": lr}} for lr in grid]
    spec = {"runs": runs, "results": "r", "base": {}, "lr_grid": grid}
    (tmp_path / "r").mkdir()

    def done(name, miou):
        (tmp_path / "r" / f"{name}.json").write_text(json.dumps({"metrics": {"miou": miou}}))

    done("m_0.001", 50.0)
    done("m_0.002", 55.0)
    assert search.chosen_lrs(spec)["m"]["chosen"] is None  # the grid is not complete yet
    (tmp_path / "r" / "m_0.004.diverged.json").write_text("{}")
    done("n_0.001", 40.0)
    done("n_0.002", 45.0)
    done("n_0.004", 45.0)
    lrs = search.chosen_lrs(spec)
    assert lrs["m"]["chosen"] == 2e-3 and lrs["m"]["runs"][4e-3] == "diverged"
    assert lrs["n"]["chosen"] == 2e-3  # a tie goes to the smaller learning rate


def test_the_camvid_recipe_is_what_the_second_search_chose(search):
    """lemore.config's camvid recipe is search 2's outcome: the crop and random resize its grid ran with, and for
    each study model the learning rate its rule chose from the committed results (LeMoRe's for every LeMoRe row)."""
    import yaml

    from lemore.config import SEARCHED_LRS, recipe

    spec = search.load_file(SPECS[1])
    chosen = {model: entry["chosen"] for model, entry in search.chosen_lrs(spec).items()}
    study = yaml.safe_load((ROOT / "studies/camvid/params.yaml").read_text())
    assert set(study["models"]) <= set(chosen) and None not in chosen.values(), chosen  # every grid complete
    for model in study["models"]:
        assert recipe("camvid", model).train.lr == chosen[model], model
    for row in study["ablation_models"]:
        assert recipe("camvid", row).train.lr == chosen["lemore"], row
    assert set(SEARCHED_LRS["camvid"]) - set(chosen) == {"lraspp_mobilenet_v3_large_reduced"}  # not searched
    d = recipe("camvid").data
    for run in spec["runs"]:
        if run.get("grid"):
            assert [list(d.crop_size), list(d.ratio_range)] == [run["set"]["data.crop_size"],
                                                                run["set"]["data.ratio_range"]], run["name"]


def test_summary_marks_runs_without_results(search, monkeypatch, tmp_path):
    monkeypatch.setattr(search, "ROOT", tmp_path)
    spec = {"runs": [{"name": "x", "model": "lemore"}, {"name": "y", "model": "lemore", "stopped": True},
                     {"name": "z", "model": "lemore", "results": "elsewhere/z.json"}],
            "results": "r", "base": {}, "_path": str(SPECS[1])}
    text = search.summary(spec)
    assert "| x | lemore | not run yet |" in text and "| y | lemore | stopped: see its note |" in text
    assert "| z | lemore | not run yet (elsewhere/z.json) |" in text


def test_stages_end_at_the_check_then_within_the_time(search, tmp_path):
    import torch

    # nothing trained yet, the speed unknown: the first stage ends at the evaluation halfway to the check
    assert search.next_stop(tmp_path, 3000, 750, 375, 40) == 375

    def trained(iteration: int, iter_per_s: float) -> None:
        torch.save({"iteration": iteration}, tmp_path / "last.pt")
        (tmp_path / "metrics.jsonl").write_text(json.dumps({"train/iter_per_s": iter_per_s}) + "\n")

    trained(375, 0.3)  # 40 minutes at 0.3 it/s reach 648 iterations: to 750, the check, not beyond it
    assert search.next_stop(tmp_path, 3000, 750, 375, 40) == 750
    trained(375, 2.0)
    assert search.next_stop(tmp_path, 3000, 750, 375, 40) == 750
    trained(375, 0.1)  # 216 iterations in 40 minutes: one evaluation interval, the least a stage trains
    assert search.next_stop(tmp_path, 3000, 750, 375, 40) == 750
    trained(750, 0.3)  # past the check: as far as 40 minutes reach, on an evaluation
    assert search.next_stop(tmp_path, 3000, 750, 375, 40) == 1125
    trained(750, 2.0)  # 4320 iterations in 40 minutes: to the end
    assert search.next_stop(tmp_path, 3000, 750, 375, 40) == 3000
    trained(0, 1.0)  # a run with a speed but no checkpoint yet (killed before its first): reach-limited, <= check
    assert search.next_stop(tmp_path, 3000, 750, 375, 5) == 375


def test_jobs_train_runs_side_by_side_one_stage_per_process(search, monkeypatch, tmp_path):
    """--jobs 2: every unfinished run trained by stage processes of search.py (--next-stage --only NAME) at
    --threads / jobs threads, in the order of --only; a finished run is skipped; a failing stage stops the jobs."""
    import threading

    monkeypatch.setattr(search, "ROOT", tmp_path)
    spec = {"runs": [{"name": n, "model": "lemore"} for n in ("a", "b", "c", "d")], "results": "r", "base": {},
            "_path": str(tmp_path / "s.yaml")}
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "d.json").write_text("{}")  # finished before: not trained again
    calls, lock = [], threading.Lock()

    def fake_run(cmd, stdout, stderr, cwd, check, env):
        name = cmd[cmd.index("--only") + 1]
        with lock:
            calls.append((name, cmd[cmd.index("--threads") + 1], env["OMP_NUM_THREADS"], "--next-stage" in cmd))
            stages = sum(c[0] == name for c in calls)
        if stages == 2:  # each run takes two stages
            (tmp_path / "r" / f"{name}.json").write_text(json.dumps({}))
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(search.subprocess, "run", fake_run)
    order = [spec["runs"][i] for i in (2, 0, 1, 3)]
    assert search.side_by_side(order, spec, "", 1, 40.0, 2) == 0
    assert sorted(c[0] for c in calls) == ["a", "a", "b", "b", "c", "c"]
    assert all(c[1:] == ("1", "1", True) for c in calls) and calls[0][0] in "ca"
    assert (tmp_path / "runs" / "camvid_r" / "c" / "stages.log").is_file()

    for name in "abc":
        (tmp_path / "r" / f"{name}.json").unlink()
    monkeypatch.setattr(search.subprocess, "run", lambda *a, **k: type("Failed", (), {"returncode": 1})())
    assert search.side_by_side(spec["runs"], spec, "", 1, 40.0, 2) == 1


def test_jobs_with_next_stage_is_refused(search, capsys):
    with pytest.raises(SystemExit):
        search.main(["--jobs", "2", "--next-stage"])
    assert "--jobs 2" in capsys.readouterr().err


def test_jobs_keep_the_apart_models_apart(search, monkeypatch, tmp_path):
    import threading
    import time

    monkeypatch.setattr(search, "ROOT", tmp_path)
    runs = [{"name": "s1", "model": "slow"}, {"name": "s2", "model": "slow"}, {"name": "f1", "model": "fast"},
            {"name": "f2", "model": "fast"}]
    spec = {"runs": runs, "results": "r", "base": {}, "_path": str(tmp_path / "s.yaml")}
    (tmp_path / "r").mkdir()
    active, seen, lock = set(), [], threading.Lock()

    def fake_run(cmd, stdout, stderr, cwd, check, env):
        name = cmd[cmd.index("--only") + 1]
        with lock:
            active.add(name)
            seen.append(sorted(active))
        time.sleep(0.2)
        with lock:
            active.discard(name)
        (tmp_path / "r" / f"{name}.json").write_text("{}")
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(search.subprocess, "run", fake_run)
    assert search.side_by_side(runs, spec, "", 1, 40.0, 2, apart=("slow",)) == 0
    assert all(not {"s1", "s2"} <= set(names) for names in seen)  # never the two slow runs at once
    assert all((tmp_path / "r" / f"{r['name']}.json").is_file() for r in runs)


def test_each_stage_records_its_machine(search, tmp_path, monkeypatch):
    """A run's stages note their CPU in the run folder; the results keep each machine once, in order of first use,
    and the summary names the EPYC generation (minutes compare only within one CPU)."""
    import lemore.profiling

    names = iter(["AMD EPYC (family 25, model 1, Zen 3, Milan, avx2+fma)"] * 2
                 + ["AMD EPYC (family 25, model 17, Zen 4, Genoa, avx512f+fma)"])
    monkeypatch.setattr(lemore.profiling, "cpu_model_name", lambda: next(names))
    assert search.stage_machines(tmp_path / "run") == []
    for _ in range(3):
        search.note_machine(tmp_path / "run")
    machines = search.stage_machines(tmp_path / "run")
    assert machines == ["AMD EPYC (family 25, model 1, Zen 3, Milan, avx2+fma)",
                        "AMD EPYC (family 25, model 17, Zen 4, Genoa, avx512f+fma)"]
    assert search.cpu_label(machines) == "Zen 3, Zen 4"
    assert search.cpu_label(["Intel Xeon"]) == "Intel Xeon"
    assert search.cpu_label(None) == "not recorded"
