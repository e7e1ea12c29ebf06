"""Run a DVC pipeline's pending stages side by side: ``python tools/dvc_jobs.py DVC_YAML [PATTERN ...] --jobs 2``.

``dvc repro`` runs one stage at a time. On a CPU that one small training run cannot keep busy, N stages at
1 thread each do more work per hour than one stage at N threads ([docs/speed.md](../docs/speed.md#training-runs-side-by-side)).
This runs the stages of ``DVC_YAML`` that DVC reports changed and whose name matches a pattern (fnmatch on the stage
name, e.g. ``'finetune@*'``; default: every stage), ``--jobs`` at a time:

* each stage runs its own command as ``dvc repro`` runs it: DVC's resolved command, in the stage's working
  directory, through the shell, after its outputs (those not ``persist``) are removed; with ``OMP_NUM_THREADS`` set
  to ``--threads // --jobs`` and this Python's ``bin/`` first on ``PATH``;
* when a command succeeds, ``dvc commit --force STAGE`` records the stage in ``dvc.lock``, as ``dvc repro`` would
  have; DVC is called by one job at a time, so its repository lock is never contended;
* stages are taken in the order of the first pattern each matches, then in the file's order (``'finetune@seg*'
  'finetune@*'`` puts SegFormer's first); a job takes the next stage when its own ends; stages matching
  ``--apart PATTERN`` never run beside each other (to pair a long stage with short ones: such a stage waits
  for its kind, and the job takes the next other stage meanwhile);
* a stage that depends on the output of another stage that is not current (and not run here before it) is refused
  before anything runs: run that one first;
* ``--stage-minutes M`` cuts a long training stage into processes of at most about M minutes: each command runs with
  ``$LEMORE_STAGE_MINUTES=M`` (``lemore.launch``: the fine-tuning notebook's run trains for at most that long, then
  exits with status 75, ``EXIT_UNFINISHED``), and a command that exits with 75 runs again at once and resumes from its
  checkpoint, until it finishes; the run is the same, bit for bit, as one trained in one process.

A failed command is reported with its log and nothing of it is recorded; the other jobs go on; the exit status is 1.
Each stage's output goes to ``--log-dir/<stage>.log`` (default ``runs/dvc_jobs/``). Interrupted (Ctrl-C), the
running commands are stopped and nothing they wrote is recorded; a training stage resumes from its checkpoint when
it runs again.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pending_stages(dvc_yaml: Path, patterns: list[str]) -> tuple[list, list[str], Path]:
    """The changed stages of ``dvc_yaml`` that match ``patterns``, in run order; the problems that forbid running
    them (a dependency produced by a stage that is not current, or run here as well); the repository's root."""
    from dvc.repo import Repo

    repo = Repo(str(dvc_yaml.parent))
    all_stages = list(repo.index.stages)
    here = [s for s in all_stages if Path(s.path).resolve() == dvc_yaml.resolve()]
    if not here:
        raise SystemExit(f"{dvc_yaml}: no stages (is it a dvc.yaml of a DVC repository?)")
    patterns = patterns or ["*"]
    rank = {}
    for s in here:
        for i, pat in enumerate(patterns):
            if fnmatch.fnmatchcase(s.name, pat):
                rank[s.addressing] = i
                break
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(s.name, p) for s in here)]
    if unknown:
        raise SystemExit(f"{dvc_yaml}: no stage matches {unknown}; stages: {[s.name for s in here]}")
    with repo.lock:
        changed = {s.addressing for s in all_stages if s.changed()}
    chosen = sorted((s for s in here if s.addressing in rank and s.addressing in changed),
                    key=lambda s: (rank[s.addressing], here.index(s)))
    chosen_ids = {s.addressing for s in chosen}
    problems = []
    for s in chosen:
        for dep in s.deps:
            for other in all_stages:
                if other.addressing == s.addressing or other.addressing not in changed:
                    continue
                for out in other.outs:
                    dep_path, out_path = Path(dep.fs_path), Path(out.fs_path)
                    if dep_path == out_path or out_path in dep_path.parents or dep_path in out_path.parents:
                        why = ("is run here too, side by side" if other.addressing in chosen_ids
                               else "is not current")
                        problems.append(f"{s.addressing} depends on {out.def_path}, an output of {other.addressing}, "
                                        f"which {why}: run that stage first (dvc repro {other.addressing})")
    return chosen, problems, Path(repo.root_dir)


def remove_outs(stage) -> None:
    """What ``dvc repro`` does before running a stage: its outputs that are not ``persist`` are removed."""
    for out in stage.outs:
        if getattr(out, "persist", False):
            continue
        path = Path(out.fs_path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


#: The exit status of a command that stopped at its time limit and resumes when run again (lemore.launch).
EXIT_UNFINISHED = 75


def run_jobs(stages: list, jobs: int, threads: int, log_dir: Path, repo_root: Path,
             apart: list[str] | None = None, stage_minutes: float | None = None) -> list[str]:
    """Run ``stages`` ``jobs`` at a time (see the module docstring); the failures, as lines to print."""
    todo = list(stages)
    apart = apart or []

    def kept_apart(stage) -> bool:
        return any(fnmatch.fnmatchcase(stage.name, pat) for pat in apart)

    def next_stage():  # under `take`: the first stage in order that may start now, or None
        busy = any(kept_apart(s) for s in stages if s.addressing in running)
        for i, stage in enumerate(todo):
            if not (busy and kept_apart(stage)):
                return todo.pop(i)
        return None

    take, dvc_call = threading.Lock(), threading.Lock()
    failed: list[str] = []
    running: dict[str, subprocess.Popen] = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if stage_minutes is not None:
        env["LEMORE_STAGE_MINUTES"] = f"{stage_minutes:g}"
    log_dir.mkdir(parents=True, exist_ok=True)

    def job(k: int) -> None:
        while True:
            with take:
                if not todo:
                    return
                stage = next_stage()
                if stage is not None:
                    running[stage.addressing] = None  # taken: counts as running from now on
            if stage is None:  # only stages kept apart from one that runs are left: wait for it
                time.sleep(1.0)
                continue
            log = log_dir / f"{stage.name.replace('/', '_')}.log"
            print(f"[job {k}] {stage.addressing}: running (log: {log})", flush=True)
            with dvc_call:
                remove_outs(stage)
            cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)  # a list runs in order
            part, rc = 0, EXIT_UNFINISHED
            while rc == EXIT_UNFINISHED and (part == 0 or stage_minutes is not None):  # unfinished: resume at once
                part += 1
                t0 = time.perf_counter()
                with open(log, "w" if part == 1 else "a") as out:
                    proc = subprocess.Popen(cmd, shell=True, cwd=stage.wdir, env=env, stdout=out,
                                            stderr=subprocess.STDOUT)
                    running[stage.addressing] = proc
                    rc = proc.wait()
                if stage_minutes is not None:
                    print(f"[job {k}] {stage.addressing}: process {part} ended after "
                          f"{(time.perf_counter() - t0) / 60:.1f} min, exit {rc}"
                          + (" (unfinished: resuming)" if rc == EXIT_UNFINISHED else ""), flush=True)
            with take:
                running.pop(stage.addressing, None)
            if rc:
                failed.append(f"{stage.addressing}: exit {rc} (log: {log})")
                print(f"[job {k}] {stage.addressing}: FAILED, exit {rc}", flush=True)
                continue
            with dvc_call:
                commit = subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", stage.addressing],
                                        cwd=repo_root, capture_output=True, text=True, check=False)
            if commit.returncode:
                failed.append(f"{stage.addressing}: ran, but dvc commit failed: {commit.stderr.strip()}")
                print(f"[job {k}] {stage.addressing}: dvc commit FAILED", flush=True)
            else:
                print(f"[job {k}] {stage.addressing}: done, recorded in dvc.lock", flush=True)

    workers = [threading.Thread(target=job, args=(k,), daemon=True) for k in range(jobs)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            while w.is_alive():
                w.join(timeout=1.0)
    except KeyboardInterrupt:
        for proc in list(running.values()):
            if proc is not None:
                proc.terminate()
        raise
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dvc_yaml", type=Path, help="the pipeline, e.g. studies/camvid/dvc.yaml")
    p.add_argument("patterns", nargs="*", help="stage names (fnmatch), in the order to run them; default: all")
    p.add_argument("--jobs", type=int, default=2, help="stages side by side (default 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads to share among the jobs (default: the machine's cores)")
    p.add_argument("--apart", nargs="+", default=[], metavar="PATTERN",
                   help="stages (fnmatch) that never run beside each other, e.g. 'finetune@segformer_b0-*'")
    p.add_argument("--stage-minutes", type=float, default=None, metavar="M",
                   help="train each stage in processes of at most about M minutes, each resuming the last "
                        "($LEMORE_STAGE_MINUTES; default: one process per stage)")
    p.add_argument("--log-dir", type=Path, default=ROOT / "runs" / "dvc_jobs")
    p.add_argument("--dry", action="store_true", help="only list the stages it would run, in order")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: use 1 or more")
    if args.stage_minutes is not None and not args.stage_minutes > 0:
        p.error(f"--stage-minutes {args.stage_minutes:g}: give a positive number of minutes")
    if not args.dvc_yaml.is_file():
        p.error(f"{args.dvc_yaml}: no such file")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    stages, problems, repo_root = pending_stages(args.dvc_yaml, args.patterns)
    if problems:
        print("refused, nothing was run:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    threads = max(1, args.threads // args.jobs)
    print(f"{len(stages)} stage(s) to run, {args.jobs} at a time, {threads} thread(s) each:", flush=True)
    for s in stages:
        print(f"  {s.addressing}", flush=True)
    if args.dry or not stages:
        return 0
    failed = run_jobs(stages, args.jobs, threads, args.log_dir, repo_root, args.apart, args.stage_minutes)
    if failed:
        print("failed:\n  " + "\n  ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
