"""Does the default study learn, and is it trained to a plateau? The synthetic recipe on CPU, against chance, and
against a run with twice the iterations.

    python benchmarks/synthetic_cpu.py                                   # LeMoRe and SegFormer-B0, recipe + 2x
    python benchmarks/synthetic_cpu.py --models lemore --no-double       # one model, the recipe only
    python benchmarks/synthetic_cpu.py --threads 2 --out results/benchmarks/synthetic_plateau.json
    python benchmarks/synthetic_cpu.py --models lemore --threads 2 --recipe-from results/metrics/synthetic
                                                                         # the recipe run is make demo's

For each model it trains the synthetic recipe (``lemore.config.recipe("synthetic")``, the one ``make demo`` runs) and,
unless ``--no-double``, the same recipe with twice the iterations (the schedule stretched, warm-up and decay
included), each from scratch with the same seed. "Plateau" means the doubled run gains less than ``--plateau`` mIoU
points (default 1.0). ``--recipe-from DIR`` takes the recipe run's metrics from ``make demo``'s committed results
(``DIR/<model>/seed0/*.json``, checked to hold the recipe's config) instead of training it again: the demo reproduces
bit for bit with the same thread count, so a second run would give the same numbers.

Chance is computed honestly from the validation labels (at their original size, as the metric sees them), for
three label-blind predictors, each as the *expected* confusion matrix fed through the same metric code:

* ``uniform``:  every pixel gets a class uniformly at random      -> M[i, j] = n_i / K
* ``prior``:    every pixel gets class j with probability p_j (the val class frequencies) -> M[i, j] = n_i p_j
* ``majority``: every pixel gets the most frequent class          -> M[i, argmax n] = n_i

The best of the three is reported as "chance". The script exits non-zero if a model does not beat it by ``--margin``
mIoU points (default 10), or, with the doubled runs, if one has not reached its plateau; so it doubles as a slow
end-to-end check.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch

from lemore.checkpoint import atomic_write_json
from lemore.config import load
from lemore.data import build_dataset
from lemore.engine.train import train
from lemore.metrics import summarize
from lemore.profiling import cpu_model_name


def chance_miou(ds) -> dict[str, float]:
    """mIoU (percent) of the label-blind predictors above on dataset ``ds`` (its masks, 255 ignored)."""
    k = ds.num_classes
    counts = torch.zeros(k, dtype=torch.float64)
    for i in range(len(ds)):
        mask = ds[i][1].as_subclass(torch.Tensor).flatten()
        mask = mask[mask != 255]
        counts += torch.bincount(mask, minlength=k).double()
    prior = counts / counts.sum()
    uniform = counts[:, None] * torch.full((1, k), 1.0 / k, dtype=torch.float64)
    by_prior = counts[:, None] * prior[None, :]
    majority = torch.zeros(k, k, dtype=torch.float64)
    majority[:, int(counts.argmax())] = counts
    return {name: summarize(m)["miou"] for name, m in
            (("uniform", uniform), ("prior", by_prior), ("majority", majority))}


#: The training settings a result records (and the recipe check of ``--recipe-from`` compares).
TRAIN_KEYS = ("iters", "batch_size", "lr", "weight_decay", "warmup_iters", "seed")


def run(model: str, overrides: list[str], scale: int = 1) -> dict:
    """Train ``model`` with the synthetic recipe (iterations x ``scale``); its metrics, minutes and config."""
    base = ["train.device=cpu", "wandb=disabled", f"model.name={model}", *overrides]
    cfg = load(dataset="synthetic", overrides=base)
    if scale != 1:  # the whole schedule stretched: iterations and warm-up
        cfg = load(dataset="synthetic", overrides=[*base, f"train.iters={cfg.train.iters * scale}",
                                                   f"train.warmup_iters={cfg.train.warmup_iters * scale}"])
    t0 = time.perf_counter()
    run_dir = train(cfg)
    result = json.loads((run_dir / "metrics.json").read_text())
    m = result["metrics"]
    return {"run_name": result["run_name"], "run_dir": str(run_dir), "iters": cfg.train.iters,
            "minutes": round((time.perf_counter() - t0) / 60, 2), "miou": m["miou"], "aacc": m["aacc"],
            "macc": m["macc"], "per_class_iou": m["per_class_iou"],
            "train": {k: v for k, v in result["config"]["train"].items()
                      if k in TRAIN_KEYS}}


def committed_run(model: str, metrics_dir: Path, overrides: list[str]) -> dict:
    """The recipe run of ``model`` as ``make demo`` committed it (``metrics_dir/<model>/seed0/*.json``), in
    :func:`run`'s format; an error naming the file if its training config is not the recipe's."""
    files = sorted((metrics_dir / model / "seed0").glob("*.json"))
    if not files:
        raise SystemExit(f"--recipe-from {metrics_dir}: no {model}/seed0/*.json there (run make demo)")
    result = json.loads(files[-1].read_text())
    want = load(dataset="synthetic", overrides=["train.device=cpu", f"model.name={model}", *overrides]).train
    got = result["config"]["train"]
    diff = {k: (got.get(k), getattr(want, k)) for k in TRAIN_KEYS if got.get(k) != getattr(want, k)}
    if diff:
        raise SystemExit(f"{files[-1]}: not the synthetic recipe (key: (file, recipe)) {diff}")
    m = result["metrics"]
    return {"run_name": result["run_name"], "run_dir": str(files[-1]), "iters": got["iters"], "minutes": None,
            "miou": m["miou"], "aacc": m["aacc"], "macc": m["macc"], "per_class_iou": m["per_class_iou"],
            "train": {k: got[k] for k in TRAIN_KEYS},
            "from": str(files[-1])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lemore", "segformer_b0"], metavar="NAME")
    p.add_argument("--no-double", dest="double", action="store_false", help="skip the runs with 2x the iterations")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides of the synthetic recipe, e.g. out_dir=/tmp/plateau data.root=/tmp/synthetic")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--margin", type=float, default=10.0, help="required mIoU points above chance")
    p.add_argument("--plateau", type=float, default=1.0, help="largest mIoU gain of the doubled run called a plateau")
    p.add_argument("--out", type=Path, help="also write the numbers to this JSON file (atomically)")
    p.add_argument("--recipe-from", type=Path, metavar="DIR",
                   help="take the recipe runs' metrics from make demo's results (e.g. results/metrics/synthetic)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    cfg = load(dataset="synthetic", overrides=["train.device=cpu", *args.set])
    chance = chance_miou(build_dataset(cfg.data, "val"))
    best = max(chance.values())
    report = {"command": "python benchmarks/synthetic_cpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpu": cpu_model_name(), "python": platform.python_version(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "overrides": args.set, "chance_miou": chance, "chance": best,
              "plateau_threshold": args.plateau, "models": {}}
    ok = True
    for model in args.models:
        entry = {"recipe": committed_run(model, args.recipe_from, args.set) if args.recipe_from
                 else run(model, args.set)}
        entry["margin_over_chance"] = entry["recipe"]["miou"] - best
        ok &= entry["margin_over_chance"] >= args.margin
        if args.double:
            entry["doubled"] = run(model, args.set, scale=2)
            entry["gain_doubled"] = entry["doubled"]["miou"] - entry["recipe"]["miou"]
            entry["plateau"] = entry["gain_doubled"] < args.plateau
            ok &= entry["plateau"]
        report["models"][model] = entry
        if args.out:  # after every model: a long run killed half-way keeps what it measured
            atomic_write_json(args.out, report)

    print(f"\nchance mIoU " + "  ".join(f"{k} {v:.2f}" for k, v in chance.items()) + f"  -> best {best:.2f}")
    for model, e in report["models"].items():
        r = e["recipe"]
        took = f"{r['minutes']:.1f} min" if r["minutes"] is not None else "make demo's run"
        line = f"{model:<14} {r['iters']} it: mIoU {r['miou']:.2f} ({took})"
        if "doubled" in e:
            d = e["doubled"]
            line += (f"   {d['iters']} it: {d['miou']:.2f} ({d['minutes']:.1f} min), gain {e['gain_doubled']:+.2f}"
                     f" -> {'plateau' if e['plateau'] else 'NOT a plateau'}")
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
