"""``python -m lemore.summary``: where the results of the pipeline are, and the headline numbers.

Printed at the end of ``make demo``; reads only files under ``results/`` (and lists ``runs/``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from lemore.tables import best_runs, display_name, load_profile, load_runs


def _fmt(v: float, spec: str = ".2f") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def summary(results_dir: str | Path = "results", runs_dir: str | Path = "runs", elapsed: float | None = None) -> str:
    results_dir, runs_dir = Path(results_dir), Path(runs_dir)
    lines = ["", "=" * 100, "LeMoRe reproduction: results", "=" * 100]
    runs = best_runs(load_runs(results_dir))
    profile = load_profile(results_dir)
    if runs.empty:
        lines.append(f"no fine-tuning results under {results_dir / 'metrics'} yet (run `dvc repro`)")
    for dataset in sorted(set(runs.dataset)):
        from lemore.config import recipe

        d = recipe(dataset).data
        size, k = f"{d.crop_size[0]}x{d.crop_size[1]}", d.num_classes
        lines += ["", f"{dataset} (validation split; GFLOPs and latency at {size}, batch 1, this machine's CPU):",
                  f"  {'model':<16} {'mIoU':>7} {'aAcc':>7} {'mAcc':>7} {'params (M)':>11} {'GFLOPs':>8} "
                  f"{'latency (ms)':>13}  run"]
        for _, r in runs[runs.dataset == dataset].iterrows():
            p = profile[(profile.model == r.model) & (profile["size"] == size) & (profile.num_classes == k)]
            g = float(p.gflops.iloc[-1]) if len(p) else math.nan
            lat = float(p.latency_ms.iloc[-1]) if len(p) and p.latency_ms.notna().iloc[-1] else math.nan
            seeds = f" (mean of {int(r.n)} seeds, std {_fmt(r.miou_std)})" if r.get("n", 1) > 1 else ""
            lines.append(f"  {display_name(r.model):<16} {_fmt(r.miou):>7} {_fmt(r.aacc):>7} {_fmt(r.macc):>7} "
                         f"{_fmt(r.params_m, '.3f'):>11} {_fmt(g, '.3f'):>8} {_fmt(lat, '.1f'):>13}  {r.run_name}{seeds}")

    def listing(label: str, pattern: str, base: Path) -> None:
        files = sorted(base.glob(pattern)) if base.is_dir() else []
        lines.append(f"  {label:<24} {len(files):>3} files  {base / pattern}")

    lines += ["", "Where everything is:"]
    listing("tables (csv/md/tex)", "tables/*.*", results_dir)
    listing("figures", "figures/*.png", results_dir)
    listing("metrics per run", "metrics/**/*.json", results_dir)
    listing("executed notebooks", "notebooks/*.ipynb", results_dir)
    listing("profile", "profile/*", results_dir)
    listing("checkpoints (DVC cache)", "**/model.pt", runs_dir)
    index = results_dir / "tables" / "index.md"
    if index.is_file():
        lines.append(f"  start with {index} (paper vs ours) and {results_dir / 'figures'}/")
    if elapsed is not None:
        lines += ["", f"finished in {int(elapsed // 60)} min {int(elapsed % 60)} s"]
    lines.append("=" * 100)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lemore.summary", description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results")
    p.add_argument("--runs", default="runs")
    p.add_argument("--elapsed", type=float, default=None, help="seconds the pipeline took (printed)")
    args = p.parse_args(argv)
    print(summary(args.results, args.runs, args.elapsed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
