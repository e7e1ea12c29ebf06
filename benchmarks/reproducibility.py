"""How exactly does ``make demo`` reproduce its committed metrics, and what moves them?

    python benchmarks/reproducibility.py            # both demo models, every variant (~45 min on 2 cores)
    python benchmarks/reproducibility.py --models lemore --variants same one_thread

Each variant retrains a model of the default study with its recipe (``lemore.config.recipe("synthetic")``, seed 0,
the demo's data) in a fresh process and compares the final metrics with the committed ones
(``results/metrics/synthetic/<model>/seed0/*.json``):

* ``same``: the demo's settings (2 OpenMP threads): on this machine the metrics must be bit for bit the committed ones.
* ``one_thread``: 1 OpenMP thread instead of 2. Floating-point sums (convolutions, matmuls, reductions) are split
  into another number of pieces, so they round differently.
* ``avx2``: the same machine restricted to AVX2 kernels, as on a CPU without AVX-512 (``ATEN_CPU_CAPABILITY=avx2``
  for PyTorch's own kernels, ``ONEDNN_MAX_CPU_ISA=AVX2`` for oneDNN's convolutions, ``MKL_ENABLE_INSTRUCTIONS=AVX2``
  for MKL's matrix products): other vector widths, other summation orders.

The differences of the last two bound what another machine or another thread count does to the demo's numbers.
Writes ``results/benchmarks/reproducibility.{json,md}`` (atomically, after every run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lemore.checkpoint import atomic_write_json  # noqa: E402
from lemore.profiling import cpu_model_name, write_text_atomic  # noqa: E402

VARIANTS = {
    "same": {"OMP_NUM_THREADS": "2"},
    "one_thread": {"OMP_NUM_THREADS": "1"},
    "avx2": {"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def committed(model: str, results: Path) -> dict:
    files = sorted((results / "metrics" / "synthetic" / model / "seed0").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no committed demo metrics for {model} under {results / 'metrics'}: run make demo")
    return json.loads(files[-1].read_text())


def retrain(model: str, env: dict[str, str], out_dir: Path) -> dict:
    """The demo's fine-tuning of ``model`` (its recipe, W&B off) in a fresh process with ``env``; its metrics."""
    cmd = [sys.executable, "-m", "lemore", "train", "--dataset", "synthetic", "--set", f"model.name={model}",
           "wandb=disabled", f"out_dir={out_dir}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, check=True,
                   stdout=subprocess.DEVNULL)
    (run_dir,) = [p for p in out_dir.iterdir() if (p / "metrics.json").is_file()]
    result = json.loads((run_dir / "metrics.json").read_text())
    result["minutes"] = round((time.perf_counter() - t0) / 60, 2)
    return result


def compare(ref: dict, new: dict) -> dict:
    a, b = ref["metrics"], new["metrics"]
    per_class = {c: b["per_class_iou"][c] - v for c, v in a["per_class_iou"].items() if v is not None}
    return {"miou": b["miou"], "miou_committed": a["miou"], "delta_miou": b["miou"] - a["miou"],
            "delta_aacc": b["aacc"] - a["aacc"], "max_abs_delta_class_iou": max(abs(d) for d in per_class.values()),
            "bit_for_bit": a == b, "minutes": new["minutes"]}


def to_markdown(report: dict) -> str:
    lines = ["# Reproducing the demo's metrics", "",
             f"Machine: {report['cpu']}. Command: `{report['command']}`. Each row retrains the model from scratch "
             "(the synthetic recipe, seed 0) and compares its final metrics with the committed ones "
             "(results/metrics/synthetic/).", "",
             "| model | variant | mIoU | committed | Δ mIoU | Δ aAcc | largest Δ class IoU | bit for bit | minutes |",
             "|---|---|--:|--:|--:|--:|--:|---|--:|"]
    for model, rows in report["models"].items():
        for variant, r in rows.items():
            lines.append(f"| {model} | {variant} | {r['miou']:.4f} | {r['miou_committed']:.4f} | {r['delta_miou']:+.4f} "
                         f"| {r['delta_aacc']:+.4f} | {r['max_abs_delta_class_iou']:.4f} | "
                         f"{'yes' if r['bit_for_bit'] else 'no'} | {r['minutes']:.1f} |")
    lines += ["", "Variants: " + "; ".join(f"`{k}`: {' '.join(f'{a}={b}' for a, b in v.items())}"
                                            for k, v in VARIANTS.items() if k in report["variants"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lemore", "segformer_b0"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--results", type=Path, default=ROOT / "results", help="where the committed metrics are")
    p.add_argument("--out-dir", type=Path, default=ROOT / "results" / "benchmarks")
    args = p.parse_args(argv)
    report = {"command": "python benchmarks/reproducibility.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpu": cpu_model_name(), "variants": args.variants, "models": {}}
    ok = True
    for model in args.models:
        ref = committed(model, args.results)
        report["models"][model] = {}
        for variant in args.variants:
            with tempfile.TemporaryDirectory(prefix="lemore-repro-") as tmp:
                row = compare(ref, retrain(model, VARIANTS[variant], Path(tmp)))
            report["models"][model][variant] = row
            ok &= row["bit_for_bit"] or variant != "same"
            print(f"{model} {variant}: mIoU {row['miou']:.4f} (committed {row['miou_committed']:.4f}, "
                  f"{row['delta_miou']:+.4f}), bit for bit: {row['bit_for_bit']}", flush=True)
            atomic_write_json(args.out_dir / "reproducibility.json", report)
            write_text_atomic(args.out_dir / "reproducibility.md", to_markdown(report))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
