"""The CamVid recipe search: train the runs of ``search.yaml`` that have no results yet, then summarise them all.

    python studies/camvid/search.py --root ../data/CamVid            # every run without results, in order
    python studies/camvid/search.py --root ../data/CamVid --only NAME # one run
    python studies/camvid/search.py --summary                         # rewrite summary.md from the results only

Each run is ``lemore.config.load(dataset="camvid")`` with the run's model and overrides, trained by
``lemore.engine.train.train`` in ``runs/camvid_search/<name>`` (resumed if killed) with its results in
``results/camvid/search/<name>.json``: the final val metrics, the evaluations logged during training (the
learning curve), the training loop's time and the config. Only the training and validation splits are read.

A run whose overrides make exactly the chosen camvid recipe names, under ``results:``, the study's seed-0 folder
(``results/camvid/metrics/<model>/seed0``) instead: the study trains that configuration anyway (``dvc repro
studies/camvid/dvc.yaml``), so the search reads its results there rather than training it twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SPEC = Path(__file__).with_name("search.yaml")
RESULTS = ROOT / "results" / "camvid" / "search"
RUNS = ROOT / "runs" / "camvid_search"


def load_spec(path: Path = SPEC) -> list[dict]:
    runs = yaml.safe_load(path.read_text())["runs"]
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: run names must be unique, got {names}")
    return runs


def run_config(run: dict, root: str):
    from lemore.config import load

    return load(dataset="camvid", overrides={"model.name": run["model"], "name": run["name"], "data.root": root,
                                             **run.get("set", {})})


def result_path(run: dict) -> Path:
    """The results JSON of ``run``: ``results/camvid/search/<name>.json``, or the one JSON in the study folder its
    ``results:`` names (a path that does not exist yet while the study has not trained it)."""
    if "results" not in run:
        return RESULTS / f"{run['name']}.json"
    folder = ROOT / run["results"]
    found = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if len(found) > 1:
        raise ValueError(f"{folder}: expected one results JSON for search run {run['name']!r}, found "
                         f"{[f.name for f in found]}")
    return found[0] if found else folder / "(not trained yet)"


def train_runs(runs: list[dict], root: str, threads: int) -> None:
    import torch

    from lemore.engine.train import train

    torch.set_num_threads(threads)
    for run in runs:
        if result_path(run).is_file():
            print(f"{run['name']}: results there, skipped")
            continue
        if "results" in run:
            print(f"{run['name']}: trained by the study (dvc repro studies/camvid/dvc.yaml), skipped")
            continue
        if run.get("stopped"):
            print(f"{run['name']}: stopped by hand (its note says why), skipped")
            continue
        cfg = run_config(run, root)
        train(cfg, run_dir=RUNS / run["name"], results_dir=RESULTS)


def summary(runs: list[dict]) -> str:
    """Markdown: one row per run with results (final mIoU, the curve, the gain over the last quarter, time)."""
    lines = ["# CamVid recipe search (seed 0, val split)", "",
             "Written by `python studies/camvid/search.py --summary` from results/camvid/search/*.json; the runs and "
             "their overrides of the camvid recipe are in studies/camvid/search.yaml, in the order they were added. "
             "Trained from scratch (no ImageNet weights), 2 threads; evaluation on the whole 360x480 val image.", "",
             "| run | model | crop | batch | lr | random resize | iterations | val mIoU | curve (mIoU at each evaluation) "
             "| last-quarter gain | loop it/s | minutes |", "|---|---|---|--:|--:|---|--:|--:|---|--:|--:|--:|"]
    for run in runs:
        path = result_path(run)
        if not path.is_file():
            state = ("stopped: see its note" if run.get("stopped") else
                     f"the study's run, not trained yet ({run['results']})" if "results" in run else "not run yet")
            lines.append(f"| {run['name']} | {run['model']} | {state} | | | | | | | | | |")
            continue
        r = json.loads(path.read_text())
        c, t = r["config"], r.get("timing", {})
        iters = c["train"]["iters"]
        curve = r.get("curve", [])
        gain = last_quarter_gain(curve, iters)
        minutes = (t.get("loop_s", 0) + t.get("eval_s", 0)) / 60
        ips = t["iterations"] / t["loop_s"] if t.get("loop_s") else float("nan")
        where = f" (= {run['results']})" if "results" in run else ""
        lines.append(
            f"| {run['name']}{where} | {run['model']} | {c['data']['crop_size'][0]}x{c['data']['crop_size'][1]} | "
            f"{c['train']['batch_size']} | {c['train']['lr']:g} | {c['data']['ratio_range'][0]:g}-"
            f"{c['data']['ratio_range'][1]:g} | {iters} | **{r['metrics']['miou']:.2f}** | "
            + " / ".join(f"{p['miou']:.1f}" for p in curve) + f" | {gain:+.2f} | {ips:.2f} | {minutes:.1f} |")
    lines += ["", "Last-quarter gain: val mIoU at the end minus at 3/4 of the schedule (the plateau rule: < 1.0)."]
    notes = [f"- **{r['name']}**: {r['note']}" for r in runs if r.get("note")]
    choice = ["", "## The choice", "", " ".join(yaml.safe_load(SPEC.read_text()).get("choice", "").split())]
    return "\n".join(lines + choice + ["", "## Why each run", ""] + notes) + "\n"


def last_quarter_gain(curve: list[dict], iters: int) -> float:
    """Final mIoU minus the mIoU of the evaluation at 3/4 of ``iters`` (nan when that point was not logged)."""
    at = {p["iteration"]: p["miou"] for p in curve}
    q = iters * 3 // 4
    return at[iters] - at[q] if iters in at and q in at else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="", help="CamVid folder (SegNet layout); default $LEMORE_DATA/CamVid")
    p.add_argument("--only", nargs="+", default=None, help="run only these names of search.yaml")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    p.add_argument("--summary", action="store_true", help="only rewrite summary.md from the results")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    runs = load_spec()
    if args.only:
        unknown = sorted(set(args.only) - {r["name"] for r in runs})
        if unknown:
            p.error(f"unknown runs {unknown}; choose from {[r['name'] for r in runs]}")
    if not args.summary:
        train_runs([r for r in runs if not args.only or r["name"] in args.only], args.root, args.threads)
    from lemore.profiling import write_text_atomic

    write_text_atomic(RESULTS / "summary.md", summary(runs))
    print(f"wrote {RESULTS / 'summary.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
