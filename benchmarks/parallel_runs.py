"""Training runs side by side on a CPU: N processes at 1 thread each against one process at N threads.

    python benchmarks/parallel_runs.py                                  # ~8 minutes on 2 cores
    python benchmarks/parallel_runs.py --models lemore --pairs lemore:segformer_b0

The question behind running a recipe search or a study's runs two at a time on a 2-core machine: a small network's
training step leaves much of a second thread idle (short operators, each a parallel region the threads must join),
so two runs at 1 thread each may do more work per wall-clock second than one run at 2 threads, one after the other.

For each case, the model-only training step of the CamVid recipe (batch 8, ``--crop``, the engine's channels_last
rule, optimizer groups, criterion and allocator setting, ``lemore.system.keep_freed_memory``; one fixed batch):

* **alone**: one process at ``--threads`` threads (default: the machine's cores);
* **side by side**: one process per model of the case at 1 thread each, started together; each warms up, waits at a
  barrier until all have, then times steps for ``--seconds``, so that the timed steps overlap.

A case is a model (``--models``: as many copies of it as ``--threads``) or a pair of models (``--pairs A:B``). Each
process reports the median of its timed steps; the two settings alternate ``--rounds`` times (the median kept).
**Gain** = the sum over the side-by-side processes of (the model's step alone / its step side by side): the work
done per wall-clock second side by side relative to the same runs one after the other at ``--threads`` threads
(1.0: no gain; 2.0 on 2 cores: the second thread did nothing for a run alone). The training loop adds data loading
and evaluation to both settings alike.

Writes results/benchmarks/parallel_runs.{json,md} (atomically), naming the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lemore.profiling import available_cores, cpu_model_name, write_json_atomic, write_text_atomic

STUDY_MODELS = ["lemore", "segformer_b0", "lraspp_mobilenet_v3_large", "topformer_t", "seaformer_t"]

# One process: argv = model, HxW, threads, seconds, barrier folder, processes at the barrier, this process's index.
STEP = """
import json, pathlib, statistics, sys, time, torch
from lemore.system import keep_freed_memory
keep_freed_memory()
from lemore.config import load
from lemore.engine.train import build_optimizer, cpu_channels_last, criterion
from lemore.registry import build_model
model_name, crop, threads, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
barrier, n, me = pathlib.Path(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
torch.set_num_threads(threads)
h, w = map(int, crop.split("x"))
cfg = load(dataset="camvid", overrides={"model.name": model_name, "data.crop_size": [h, w]})
fmt = torch.channels_last if cpu_channels_last(model_name, cfg.data.num_classes) else torch.contiguous_format
torch.manual_seed(0)
model = build_model(cfg).train().to(memory_format=fmt)
opt = build_optimizer(model, cfg.train)
x = torch.randn(8, 3, h, w).contiguous(memory_format=fmt)
y = torch.randint(0, cfg.data.num_classes, (8, h, w))
def step():
    loss = criterion(model(x), y); loss.backward(); opt.step(); opt.zero_grad(set_to_none=True); loss.item()
for _ in range(2):
    step()
(barrier / me).touch()
while len(list(barrier.iterdir())) < n:
    time.sleep(0.01)
t, end = [], time.perf_counter() + seconds
while not t or time.perf_counter() < end:
    t0 = time.perf_counter(); step(); t.append(time.perf_counter() - t0)
print(json.dumps({"ms": statistics.median(t) * 1e3, "steps": len(t)}))
"""


def run_together(models: list[str], crop: str, threads: int, seconds: float) -> list[dict]:
    """Start one process per entry of ``models`` at ``threads`` threads each; their medians, in order."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="parallel-runs-") as barrier:
        procs = [subprocess.Popen([sys.executable, "-c", STEP, m, crop, str(threads), str(seconds), barrier,
                                   str(len(models)), str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env) for i, m in enumerate(models)]
        outs = [p.communicate() for p in procs]
    for p, (_, err), m in zip(procs, outs, models):
        if p.returncode:
            raise SystemExit(f"{m}: the step process failed (exit {p.returncode}):\n{err[-2000:]}")
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def case_row(models: list[str], crop: str, threads: int, seconds: float, rounds: int) -> dict:
    """``models`` side by side at 1 thread each against each of them alone at ``threads`` threads."""
    alone: dict[str, list[float]] = {m: [] for m in models}
    side: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for m, times in alone.items():
            times.append(run_together([m], crop, threads, seconds)[0]["ms"])
        for i, r in enumerate(run_together(models, crop, 1, seconds)):
            side[i].append(r["ms"])
    ms_alone = {m: statistics.median(v) for m, v in alone.items()}
    ms_side = [statistics.median(v) for v in side]
    gain = sum(ms_alone[m] / s for m, s in zip(models, ms_side))
    row = {"case": " + ".join(models), "models": models, "crop": crop,
           "ms_alone": {m: round(v, 1) for m, v in ms_alone.items()}, "ms_side_by_side": [round(v, 1) for v in ms_side],
           "gain": round(gain, 2), "rounds_ms": {"alone": alone, "side_by_side": side}}
    print(f"{row['case']}: alone {row['ms_alone']} ms at {threads} threads, side by side {row['ms_side_by_side']} "
          f"ms at 1 thread each: gain {gain:.2f}x", flush=True)
    return row


def markdown(result: dict) -> str:
    p = result["protocol"]
    lines = ["# Training runs side by side", "",
             (f"`{p['command']}` on {p['cpu']} ({p['cores']} cores), torch {p['torch']}: the model-only training step "
              f"(batch 8, {p['crop']}), alone at {p['threads']} threads against side by side at 1 thread per process; "
              "the module docstring of benchmarks/parallel_runs.py gives the protocol."), "",
             f"| case | ms per step alone ({p['threads']} threads) | ms per step side by side (1 thread each) | gain |",
             "|---|--:|--:|--:|"]
    for r in result["rows"]:
        alone = " / ".join(f"{r['ms_alone'][m]:.0f}" for m in dict.fromkeys(r["models"]))
        side = " / ".join(f"{v:.0f}" for v in r["ms_side_by_side"])
        lines.append(f"| {r['case']} | {alone} | {side} | **{r['gain']:.2f}x** |")
    lines += ["", ("Gain: the work per wall-clock second side by side relative to the same runs one after the other "
                   f"alone ({p['rounds']} round(s) alternated, each process the median of its steps over "
                   f"{p['seconds']:g} s after 2 warm-up steps and a barrier)."), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=STUDY_MODELS, help="each as many times as --threads, side by side")
    p.add_argument("--pairs", nargs="*", default=["lemore:segformer_b0"], help="A:B, two models side by side")
    p.add_argument("--crop", default="240x320", help="HxW (default: the CamVid recipe's crop of search 2)")
    p.add_argument("--threads", type=int, default=available_cores(), help="threads of a run alone (default: cores)")
    p.add_argument("--seconds", type=float, default=12.0, help="timed seconds per process")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--out-dir", default=str(ROOT / "results" / "benchmarks"))
    args = p.parse_args(argv)
    from lemore.registry import list_models

    cases = [[m] * args.threads for m in args.models]
    for pair in args.pairs:
        if pair.count(":") != 1:
            p.error(f"--pairs {pair!r}: expected A:B, e.g. lemore:segformer_b0")
        cases.append(pair.split(":"))
    known = set(list_models())
    for m in {m for case in cases for m in case} - known:
        p.error(f"model {m!r} is not registered; choose from {sorted(known)}")
    if args.threads < 2:
        p.error(f"--threads {args.threads}: side by side needs at least 2 (one process per thread)")
    rows = [case_row(case, args.crop, args.threads, args.seconds, args.rounds) for case in cases]
    result = {"rows": rows, "protocol": {
        "command": "python benchmarks/parallel_runs.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu": cpu_model_name(), "cores": available_cores(), "threads": args.threads, "torch": torch.__version__,
        "crop": args.crop, "seconds": args.seconds, "rounds": args.rounds,
        "load_average_end": list(os.getloadavg())}}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "parallel_runs.json", result)
    write_text_atomic(out / "parallel_runs.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
