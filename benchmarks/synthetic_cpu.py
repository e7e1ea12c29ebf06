"""Does LeMoRe learn? Train the synthetic recipe on CPU for a few minutes and compare its mIoU with chance.

    python benchmarks/synthetic_cpu.py                       # the recipe in lemore.config (synthetic)
    python benchmarks/synthetic_cpu.py --set train.iters=600 --threads 2 --out results/benchmarks/synthetic_cpu.json

Chance is computed honestly from the validation labels (at their original size, as the metric sees them), for
three label-blind predictors, each as the *expected* confusion matrix fed through the same metric code:

* ``uniform``:  every pixel gets a class uniformly at random      -> M[i, j] = n_i / K
* ``prior``:    every pixel gets class j with probability p_j (the val class frequencies) -> M[i, j] = n_i p_j
* ``majority``: every pixel gets the most frequent class          -> M[i, argmax n] = n_i

The best of the three is reported as "chance". The script exits non-zero if the trained model does not beat it
by ``--margin`` mIoU points (default 10), so it doubles as a slow end-to-end check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from lemore.checkpoint import atomic_write_json
from lemore.config import load
from lemore.data import build_dataset
from lemore.engine.train import train
from lemore.metrics import summarize


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides of the synthetic recipe, e.g. train.iters=600 data.root=/tmp/synthetic")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--margin", type=float, default=10.0, help="required mIoU points above chance")
    p.add_argument("--out", type=Path, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    cfg = load(dataset="synthetic", overrides=["train.device=cpu", "wandb=disabled", *args.set])
    t0 = time.perf_counter()
    run_dir = train(cfg)
    minutes = (time.perf_counter() - t0) / 60
    result = json.loads((run_dir / "metrics.json").read_text())
    chance = chance_miou(build_dataset(cfg.data, "val"))
    best = max(chance.values())
    m = result["metrics"]
    report = {
        "run_name": result["run_name"], "run_dir": str(run_dir), "minutes": round(minutes, 2),
        "threads": torch.get_num_threads(), "overrides": args.set,
        "train": {k: v for k, v in result["config"]["train"].items()
                  if k in ("iters", "batch_size", "lr", "weight_decay", "warmup_iters")},
        "miou": m["miou"], "aacc": m["aacc"], "macc": m["macc"], "per_class_iou": m["per_class_iou"],
        "chance_miou": chance, "chance": best, "margin": m["miou"] - best,
    }
    print(f"\n{result['run_name']}: {minutes:.1f} min on CPU ({torch.get_num_threads()} threads)")
    print(f"  trained mIoU {m['miou']:.2f}  aAcc {m['aacc']:.2f}  mAcc {m['macc']:.2f}")
    print("  chance  mIoU " + "  ".join(f"{k} {v:.2f}" for k, v in chance.items()) + f"  -> best {best:.2f}")
    print(f"  margin over chance: {m['miou'] - best:+.2f} mIoU points")
    if args.out:
        atomic_write_json(args.out, report)
    return 0 if m["miou"] - best >= args.margin else 1


if __name__ == "__main__":
    raise SystemExit(main())
