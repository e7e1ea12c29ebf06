"""The CamVid recipe searches: train the runs of a search file that have no results yet, then summarise them all.

    python studies/camvid/search.py                                   # search 2 (search2.yaml): every run without results
    python studies/camvid/search.py --next-stage                      # only the next stage of the first unfinished run
    python studies/camvid/search.py --only NAME                       # one run
    python studies/camvid/search.py --jobs 2 --only A B C             # two at a time side by side, 1 thread each
    python studies/camvid/search.py --summary                         # rewrite summary.md from the results only
    python studies/camvid/search.py --spec studies/camvid/search.yaml --summary     # the first search

Each run is ``lemore.config.load(dataset="camvid")`` with the file's ``base`` overrides, then the run's model and
overrides, trained by ``lemore.engine.train.train`` in ``runs/<results folder name>/<name>`` (resumed if killed)
with its results in ``<results>/<name>.json``: the final val metrics, the evaluations logged during training (the
learning curve), the time of every stage and the config, and where the code stood (``search.commit``). Only the
training and validation splits are read.

**Stages.** A run is trained in stages that each end at a checkpoint, on an evaluation: the first halfway to
iteration ``check_at`` (the run's speed is not known yet), then as long as ``--stage-minutes`` allows at the speed the
run has shown, never past ``check_at`` (where the divergence rule below is read) before the run has reached it.
``--next-stage`` trains one stage and exits (status 0; 3 when nothing is left), so that a shell loop can commit each
finished run as it ends and no process runs longer than a stage.

**Side by side.** ``--jobs N`` trains N runs at a time, each stage a process of this script (``--next-stage --only
NAME``) with ``--threads / N`` threads, each job taking the next unfinished run in the order of ``--only`` (else the
file's) when its run ends; runs of the models named by ``--apart`` never run beside each other (to pair a long run
with short ones). Each run's stage output goes to ``stages.log`` in its run folder. On
2 cores two small networks at 1 thread each train more per wall-clock second than one at 2 threads
(``benchmarks/parallel_runs.py``).

**Diverged.** At ``check_at`` iterations, a run whose mean training loss over the last ``check_window`` iterations is
higher than over the ``check_window`` before them (the loss climbing for hundreds of iterations) is stopped and
recorded as diverged in ``<results>/<name>.diverged.json`` (its curve so far). A run with ``until:`` is a diagnostic:
it trains only that many iterations of its schedule and records the same file, whatever its loss does.

**The learning rate.** A file with ``lr_grid`` and ``lr_rule`` (declared before its runs) picks each model's learning
rate from its runs flagged ``grid: true``: the highest final val mIoU, a diverged run counting as the lowest
(:func:`chosen_lrs`); the summary prints the grid and the choice.

A run with ``results:`` names a results file elsewhere instead of training (a run that another command trained).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SPEC = Path(__file__).with_name("search2.yaml")
FIRST_SPEC = Path(__file__).with_name("search.yaml")
EXIT_NOTHING_LEFT = 3


# ------------------------------------------------------------------------------------------------------ the file
def load_file(path: Path = SPEC) -> dict:
    """The search file: ``runs`` (unique names), ``results`` (folder, default results/camvid/search), ``base``
    overrides, and the optional ``lr_grid`` / ``lr_rule`` / ``check_at`` / ``check_window``."""
    spec = yaml.safe_load(Path(path).read_text()) or {}
    runs = spec.get("runs") or []
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: run names must be unique, got {names}")
    grid = spec.get("lr_grid")
    for run in runs:
        if run.get("grid") and (grid is None or run.get("set", {}).get("train.lr") not in grid):
            raise ValueError(f"{path}: run {run['name']!r} is flagged grid: true but its train.lr "
                             f"{run.get('set', {}).get('train.lr')!r} is not in lr_grid {grid}")
    spec.setdefault("results", "results/camvid/search")
    spec.setdefault("base", {})
    spec["runs"] = runs
    return spec


def load_spec(path: Path = SPEC) -> list[dict]:
    return load_file(path)["runs"]


def results_dir(spec: dict) -> Path:
    return ROOT / spec["results"]


def runs_dir(spec: dict) -> Path:
    return ROOT / "runs" / f"camvid_{Path(spec['results']).name}"


def run_config(run: dict, root: str, base: dict | None = None):
    from lemore.config import load

    return load(dataset="camvid", overrides={**(base or {}), "model.name": run["model"], "name": run["name"],
                                             "data.root": root, **run.get("set", {})})


def result_path(run: dict, spec: dict) -> Path:
    """The results JSON of ``run``: ``<results>/<name>.json``, or the file its ``results:`` names."""
    if "results" in run:
        return ROOT / run["results"]
    return results_dir(spec) / f"{run['name']}.json"


def diverged_path(run: dict, spec: dict) -> Path:
    return results_dir(spec) / f"{run['name']}.diverged.json"


def state(run: dict, spec: dict) -> str:
    """"done", "diverged" (or a finished diagnostic), "stopped" (by hand, its note says why), or "todo"."""
    if result_path(run, spec).is_file():
        return "done"
    if diverged_path(run, spec).is_file():
        return "diverged"
    if run.get("stopped") or "results" in run:
        return "stopped"
    return "todo"


# ------------------------------------------------------------------------------------------------------- stages
def loss_curve(jsonl: Path) -> list[tuple[int, float]]:
    """(iteration, mean training loss since the previous log line) from a run's metrics.jsonl."""
    out = []
    if jsonl.is_file():
        for line in jsonl.read_text().splitlines():
            rec = json.loads(line)
            if "train/loss" in rec:
                out.append((rec["step"], rec["train/loss"]))
    return out


def climbing(losses: list[tuple[int, float]], at: int, window: int) -> tuple[bool, float, float]:
    """Whether the mean loss over (at - window, at] exceeds the mean over (at - 2 window, at - window]."""
    recent = [v for i, v in losses if at - window < i <= at]
    before = [v for i, v in losses if at - 2 * window < i <= at - window]
    if not recent or not before:
        return False, math.nan, math.nan
    a, b = sum(before) / len(before), sum(recent) / len(recent)
    return b > a, a, b


def next_stop(run_dir: Path, iters: int, check_at: int, eval_interval: int, stage_minutes: float) -> int:
    """Where the next stage of a run ends, on a multiple of the evaluation interval: as far as ``stage_minutes``
    reach at the run's own speed so far (its logged iterations per second), never past ``check_at`` before the run
    has reached it (the divergence check ends a stage). A run not started yet has no speed: its first stage ends at
    the evaluation halfway to the check, so that a slow model's first process stays short as well."""
    from lemore.checkpoint import load_checkpoint

    last = run_dir / "last.pt"
    done = int(load_checkpoint(last)["iteration"]) if last.is_file() else 0
    speeds = []
    jsonl = run_dir / "metrics.jsonl"
    if jsonl.is_file():
        speeds = [json.loads(line).get("train/iter_per_s") for line in jsonl.read_text().splitlines()]
        speeds = [s for s in speeds if s]
    if not speeds and done < check_at < iters:
        first = check_at // 2 // eval_interval * eval_interval
        return first if first > done else check_at
    ips = sorted(speeds)[len(speeds) // 2] if speeds else 1.0
    reach = int(stage_minutes * 60 * ips * 0.9)  # 10% for evaluations and start-up
    stop = max((done + max(reach, eval_interval)) // eval_interval * eval_interval, done + eval_interval)
    if done < check_at < iters:
        stop = min(stop, check_at)
    return min(iters, stop)


def code_state() -> dict:
    """The commit the code was at, and whether the tree had changes (``git`` where it is available)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "lemore"], cwd=ROOT, capture_output=True,
                                    text=True, check=True).stdout.strip())
        return {"commit": commit, "lemore_modified": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "lemore_modified": None}


def note_machine(run_dir: Path) -> None:
    """Append the CPU this stage trains on to ``machines.txt`` in the run folder (a run's stages may be trained on
    different machines, e.g. when a session ends mid-run and the next one resumes elsewhere)."""
    from lemore.profiling import cpu_model_name

    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "machines.txt", "a") as f:
        f.write(cpu_model_name() + "\n")


def stage_machines(run_dir: Path) -> list[str]:
    """The CPUs that trained the run's stages, in order of first use ([] where none was noted: runs trained before
    the machine was recorded)."""
    path = run_dir / "machines.txt"
    lines = path.read_text().splitlines() if path.is_file() else []
    return list(dict.fromkeys(line for line in lines if line.strip()))


def train_stage(run: dict, spec: dict, root: str, stage_minutes: float, all_stages: bool) -> str:
    """Train ``run`` (one stage, or every stage with ``all_stages``); returns its state afterwards."""
    from lemore.engine.train import train
    from lemore.profiling import write_json_atomic

    cfg = run_config(run, root, spec.get("base"))
    t = cfg.train
    rdir, out = runs_dir(spec) / run["name"], results_dir(spec)
    check_at, window = int(spec.get("check_at", 750)), int(spec.get("check_window", 250))
    until = int(run.get("until", t.iters))
    while True:
        stop = min(until, next_stop(rdir, t.iters, check_at, t.eval_interval, stage_minutes))
        print(f"{run['name']}: training to iteration {stop} of {t.iters}", flush=True)
        note_machine(rdir)
        train(cfg, run_dir=rdir, results_dir=out, stop_at=stop if stop < t.iters else None)
        if stop >= t.iters:
            path = result_path(run, spec)
            record = json.loads(path.read_text())
            record["search"] = {"spec": str(Path(spec["_path"]).relative_to(ROOT)), **code_state(),
                                "machines": stage_machines(rdir)}
            write_json_atomic(path, record)
            return "done"
        losses = loss_curve(rdir / "metrics.jsonl")
        up, before, recent = climbing(losses, check_at, window) if stop == check_at else (False, math.nan, math.nan)
        if up or stop >= until:
            from lemore.engine.train import read_curve

            why = (f"diagnostic: trained to iteration {until} of {t.iters}" if stop >= until and not up else
                   f"diverged: mean training loss {recent:.3f} over iterations {check_at - window}-{check_at}, "
                   f"up from {before:.3f} over the {window} before")
            write_json_atomic(diverged_path(run, spec), {
                "run_name": run["name"], "reason": why, "iteration": stop, "config": cfg.to_dict(),
                "loss": losses, "curve": read_curve(rdir / "metrics.jsonl"),
                "search": {"spec": str(Path(spec["_path"]).relative_to(ROOT)), **code_state(),
                           "machines": stage_machines(rdir)}})
            print(f"{run['name']}: {why}", flush=True)
            return "diverged"
        if not all_stages:
            return "todo"


def train_runs(runs: list[dict], spec: dict, root: str, threads: int, stage_minutes: float,
               one_stage: bool) -> int:
    import torch

    torch.set_num_threads(threads)
    for run in runs:
        st = state(run, spec)
        if st != "todo":
            print(f"{run['name']}: {st}, skipped")
            continue
        train_stage(run, spec, root, stage_minutes, all_stages=not one_stage)
        if one_stage:
            return 0
    return EXIT_NOTHING_LEFT if one_stage else 0


def side_by_side(runs: list[dict], spec: dict, root: str, threads: int, stage_minutes: float, jobs: int,
                 apart: tuple[str, ...] = ()) -> int:
    """Train the unfinished ``runs`` ``jobs`` at a time (see the module docstring); 1 if a stage failed. Runs of
    the models in ``apart`` never run beside each other (one waits, and its job takes the next other run)."""
    import threading
    import time

    todo = [run for run in runs if state(run, spec) == "todo"]
    busy: set[str] = set()  # the names of the runs being trained
    take = threading.Lock()
    failed: list[str] = []

    def next_run() -> dict | None:  # under `take`
        apart_busy = any(r["model"] in apart for r in runs if r["name"] in busy)
        for i, run in enumerate(todo):
            if not (apart_busy and run["model"] in apart):
                busy.add(run["name"])
                return todo.pop(i)
        return None

    def job(k: int) -> None:
        while not failed:
            with take:
                if not todo:
                    return
                run = next_run()
            if run is None:  # only runs kept apart from one being trained are left
                time.sleep(5.0)
                continue
            log = runs_dir(spec) / run["name"] / "stages.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--spec", spec["_path"], "--root", root,
                   "--next-stage", "--only", run["name"], "--threads", str(threads),
                   "--stage-minutes", str(stage_minutes)]
            while state(run, spec) == "todo":
                print(f"[job {k}] {run['name']}: next stage (log: {log.relative_to(ROOT)})", flush=True)
                with open(log, "a") as out:
                    rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, check=False,
                                        env={**os.environ, "OMP_NUM_THREADS": str(threads)}).returncode
                if rc == EXIT_NOTHING_LEFT:
                    break
                if rc:
                    failed.append(f"{run['name']} (exit {rc}; {log})")
                    return
            print(f"[job {k}] {run['name']}: {state(run, spec)}", flush=True)
            with take:
                busy.discard(run["name"])

    workers = [threading.Thread(target=job, args=(k,)) for k in range(jobs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------------ summary
def last_quarter_gain(curve: list[dict], iters: int) -> float:
    """Final mIoU minus the mIoU of the evaluation at 3/4 of ``iters`` (nan when that point was not logged)."""
    at = {p["iteration"]: p["miou"] for p in curve}
    q = iters * 3 // 4
    return at[iters] - at[q] if iters in at and q in at else float("nan")


def _record(run: dict, spec: dict) -> dict | None:
    st = state(run, spec)
    if st == "done":
        return json.loads(result_path(run, spec).read_text())
    if st == "diverged":
        return json.loads(diverged_path(run, spec).read_text())
    return None


def final_miou(run: dict, spec: dict) -> float | None:
    """A finished run's final val mIoU; None for a diverged, stopped or untrained run."""
    return json.loads(result_path(run, spec).read_text())["metrics"]["miou"] if state(run, spec) == "done" else None


def chosen_lrs(spec: dict) -> dict[str, dict]:
    """Per model with grid runs: ``{"runs": {lr: mIoU or "diverged" or None}, "chosen": lr or None}``; the rule:
    the highest final val mIoU of the model's grid runs, chosen only once every value of the grid has a result
    (a diverged run counts as the lowest)."""
    grid = spec.get("lr_grid") or []
    out: dict[str, dict] = {}
    for run in spec["runs"]:
        if not run.get("grid"):
            continue
        lr = run["set"]["train.lr"]
        st = state(run, spec)
        value = final_miou(run, spec) if st == "done" else ("diverged" if st == "diverged" else None)
        out.setdefault(run["model"], {"runs": {}})["runs"][lr] = value
    for entry in out.values():
        runs = entry["runs"]
        complete = all(runs.get(lr) is not None for lr in grid)
        scored = {lr: v for lr, v in runs.items() if isinstance(v, float)}
        entry["chosen"] = max(scored, key=lambda lr: (scored[lr], -lr)) if complete and scored else None
    return out


def cpu_label(machines: list[str] | None) -> str:
    """The CPUs of a run's stages, short (the EPYC generation where :func:`lemore.profiling.cpu_info` knows it)."""
    if not machines:
        return "not recorded"
    short = [zen.group(0) if (zen := re.search(r"Zen \d\w*", m)) else m for m in machines]
    return ", ".join(dict.fromkeys(short))


def summary(spec: dict) -> str:
    """Markdown: one row per run (final mIoU, the curve, the gain over the last quarter, time), the grid and the
    learning rate it chose, the file's choice, and why each run was added."""
    runs = spec["runs"]
    name = Path(spec.get("_path", SPEC)).name
    intro = (f"Written by `python studies/camvid/search.py --spec studies/camvid/{name} --summary` from "
             f"{spec['results']}/*.json; the runs and their overrides of the camvid recipe are in "
             f"studies/camvid/{name}, in the order they were added. Trained from scratch (no ImageNet weights), 2 "
             "threads, or 1 each for two runs side by side; evaluation on the whole 360x480 val image.")
    header = ("| run | model | crop | batch | lr | random resize | iterations | val mIoU | curve (mIoU at each evaluation) "
              "| last-quarter gain | loop it/s | minutes | CPU |")
    lines = [f"# {spec.get('title', 'CamVid recipe search (seed 0, val split)')}", "", intro, "", header,
             "|---|---|---|--:|--:|---|--:|--:|---|--:|--:|--:|---|"]
    for run in runs:
        r = _record(run, spec)
        st = state(run, spec)
        if r is None:
            label = "stopped: see its note" if st == "stopped" and "results" not in run else (
                f"not run yet ({run['results']})" if "results" in run else "not run yet")
            lines.append(f"| {run['name']} | {run['model']} | {label} | | | | | | | | | | |")
            continue
        c = r["config"]
        t = r.get("timing", {})
        total = t.get("total", t)
        iters = c["train"]["iters"]
        curve = r.get("curve", [])
        gain = last_quarter_gain(curve, iters)
        minutes = (total.get("loop_s", 0) + total.get("eval_s", 0)) / 60
        ips = total["iterations"] / total["loop_s"] if total.get("loop_s") else float("nan")
        if st == "done":
            value = f"**{r['metrics']['miou']:.2f}**"
        else:
            value = f"{r['reason'].split(':')[0]} at {r['iteration']}"
            losses = r.get("loss", [])
            ips = float("nan")
            minutes = float("nan")
            if losses:
                value += f" (loss {losses[-1][1]:.2f})"
        lines.append(
            f"| {run['name']} | {run['model']} | {c['data']['crop_size'][0]}x{c['data']['crop_size'][1]} | "
            f"{c['train']['batch_size']} | {c['train']['lr']:g} | {c['data']['ratio_range'][0]:g}-"
            f"{c['data']['ratio_range'][1]:g} | {iters} | {value} | "
            + " / ".join(f"{p['miou']:.1f}" for p in curve) + f" | {gain:+.2f} | {ips:.2f} | {minutes:.1f} | "
            + cpu_label(r.get("search", {}).get("machines")) + " |")
    lines += ["", "Last-quarter gain: val mIoU at the end minus at 3/4 of the schedule (the plateau rule: < 1.0). "
              "Minutes: the training loop and its evaluations, summed over the run's stages, on the run's own clock (two "
              "runs side by side share the CPU; each run's results record its threads). CPU: the machine of its stages "
              "(\"not recorded\": trained before the search recorded it); minutes compare only within one CPU."]
    lrs = chosen_lrs(spec)
    if lrs:
        grid = spec["lr_grid"]
        lines += ["", "## The learning rate of each model", "", " ".join(str(spec.get("lr_rule", "")).split()), "",
                  "| model | " + " | ".join(f"lr {lr:g}" for lr in grid) + " | chosen |",
                  "|---|" + "--:|" * len(grid) + "--:|"]
        for model, entry in lrs.items():
            cells = []
            for lr in grid:
                v = entry["runs"].get(lr)
                cells.append("not run yet" if v is None else v if isinstance(v, str) else f"{v:.2f}")
            chosen = "pending" if entry["chosen"] is None else f"**{entry['chosen']:g}**"
            lines.append(f"| {model} | " + " | ".join(cells) + f" | {chosen} |")
    choice = ["", "## The choice", "", " ".join(str(spec.get("choice", "(not made yet)")).split())]
    notes = [f"- **{r['name']}**: {' '.join(str(r['note']).split())}" for r in runs if r.get("note")]
    return "\n".join(lines + choice + ["", "## Why each run", ""] + notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", type=Path, default=SPEC, help="the search file (default: search2.yaml)")
    p.add_argument("--root", default="", help="CamVid folder (SegNet layout); default $LEMORE_DATA/CamVid")
    p.add_argument("--only", nargs="+", default=None, help="run only these names of the search file")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    p.add_argument("--next-stage", action="store_true",
                   help=f"train the next stage of the first unfinished run and exit ({EXIT_NOTHING_LEFT}: none left)")
    p.add_argument("--stage-minutes", type=float, default=40.0, help="the longest stage, at the run's own speed")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs side by side, each stage a process with --threads / jobs threads")
    p.add_argument("--apart", nargs="+", default=[], metavar="MODEL",
                   help="with --jobs: runs of these models never side by side (to pair a long run with short ones)")
    p.add_argument("--summary", action="store_true", help="only rewrite summary.md from the results")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    spec = load_file(args.spec)
    spec["_path"] = str(Path(args.spec).resolve())
    runs = spec["runs"]
    if args.only:
        unknown = sorted(set(args.only) - {r["name"] for r in runs})
        if unknown:
            p.error(f"unknown runs {unknown} in {args.spec}; choose from {[r['name'] for r in runs]}")
    if args.jobs < 1 or (args.jobs > 1 and args.next_stage):
        p.error(f"--jobs {args.jobs}: use 1 or more, and not with --next-stage (each job runs stages itself)")
    code = 0
    if not args.summary:
        by_name = {r["name"]: r for r in runs}
        chosen = [by_name[n] for n in dict.fromkeys(args.only)] if args.only else runs
        if args.jobs > 1:
            code = side_by_side(chosen, spec, args.root, max(1, args.threads // args.jobs), args.stage_minutes,
                                args.jobs, tuple(args.apart))
        else:
            code = train_runs(chosen, spec, args.root, args.threads, args.stage_minutes, args.next_stage)
    from lemore.profiling import write_text_atomic

    write_text_atomic(results_dir(spec) / "summary.md", summary(spec))
    print(f"wrote {results_dir(spec) / 'summary.md'}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
