"""A tiny fake ``results/camvid`` tree (shared by tests/test_tables.py, test_viz.py and test_notebooks.py): results
files in the engine's format and a profile.json, with values chosen so that every table cell can be checked by hand.

Runs (``ITERS`` iterations, an evaluation every 1/8 of the schedule; final val mIoU per seed; last-quarter gain =
mIoU at the end minus at 3/4 of the schedule):

==========================  =================  ==========================  ===============================
model                       seeds: final mIoU  mean / std / n              last-quarter gains (mean)
==========================  =================  ==========================  ===============================
lemore                      40, 42, 44         42 / 2 / 3                  0.5, 0.7, 0.9 (0.7: plateau)
segformer_b0                45, 47             46 / sqrt(2) / 2            1.5, 2.5 (2.0)
lraspp_mobilenet_v3_large   38                 38 / - / 1                  1.0 (1.0: not below 1.0)
topformer_t                 (none: profiled, in the study, never run)
lemore_t                    30, 31, 32         31 / 1 / 3
lemore_tf                   35, 36, 37         36 / 1 / 3                  +F: +5 -> holds
lemore_tfl                  32, 33, 34         33 / 1 / 3                  +L: -3 -> reversed
lemore_tfl_ca               33.5, 32.5         33 / sqrt(0.5) / 2          +CA: 0 -> undecided
lemore_tf_na                36                 36 / - / 1                  +NA on T+F: 0, one seed
lemore_t_na, lemore_tfl_na  (none)                                         their gains: empty
==========================  =================  ==========================  ===============================

Gains by Welch's t-test (p, 95% interval): +F 5, se sqrt(1/3 + 1/3), t 6.12 on 4 df, p 0.0036, [2.73, 7.27];
+L -3, t -3.67 on 4 df, p 0.021, [-5.27, -0.73]; +CA 0, t 0, p 1; +NA on T+F+L+CA (T+F+L+CA -> the full row,
lemore): 42 - 33 = 9, se sqrt(4/3 + 0.5/2), t 7.15 on 2.64 df, p 0.0085 -> holds. LeMoRe also has
an older, shorter run (``OLD_ITERS``, mIoU 10) that the tables must ignore.

The doubling check (``long/metrics``, seed 0 at ``2 * ITERS``, :data:`LONG_RUNS`): LeMoRe 45 (gain 0.3), SegFormer-B0
44 (gain 0.8), so seed 0's order at ``ITERS`` (SegFormer-B0 45, LeMoRe 40, LR-ASPP 38) changes for that one pair;
LR-ASPP has no long run (no rank there). Per-class IoU of every run: each class
at the run's mIoU but sky (mIoU + 10) and pole (1 + seed).
"""

from __future__ import annotations

import json
from pathlib import Path

from lemore.config import load
from lemore.data.camvid import CAMVID_CLASSES

ITERS = 800
OLD_ITERS = 400
CPU = "Fake CPU 9000"
#: model -> [(seed, final mIoU, last-quarter gain)]
RUNS = {
    "lemore": [(0, 40.0, 0.5), (1, 42.0, 0.7), (2, 44.0, 0.9)],
    "segformer_b0": [(0, 45.0, 1.5), (1, 47.0, 2.5)],
    "lraspp_mobilenet_v3_large": [(0, 38.0, 1.0)],
    "lemore_t": [(0, 30.0, 0.4), (1, 31.0, 0.4), (2, 32.0, 0.4)],
    "lemore_tf": [(0, 35.0, 0.4), (1, 36.0, 0.4), (2, 37.0, 0.4)],
    "lemore_tfl": [(0, 32.0, 0.4), (1, 33.0, 0.4), (2, 34.0, 0.4)],
    "lemore_tfl_ca": [(0, 33.5, 0.4), (1, 32.5, 0.4)],
    "lemore_tf_na": [(0, 36.0, 0.4)],
}
#: model -> [(seed, final mIoU, last-quarter gain)] at twice the schedule, in results/camvid/long/
LONG_RUNS = {"lemore": [(0, 45.0, 0.3)], "segformer_b0": [(0, 44.0, 0.8)]}
#: model -> (params M, GFLOPs, latency ms, ratio to LR-ASPP) at 360x480
PROFILE = {
    "lemore": (1.6, 0.9, 20.0, 0.5),
    "segformer_b0": (3.7, 6.0, 120.0, 3.0),
    "lraspp_mobilenet_v3_large": (3.2, 2.0, 40.0, 1.0),
    "topformer_t": (1.4, 0.5, 15.0, 0.375),
}


def curve(final: float, gain: float, iters: int = ITERS) -> list[dict]:
    """Evaluations every iters/8: a rise to ``final - gain`` at 3/4 of the schedule, then ``final`` at the end."""
    its = [iters * k // 8 for k in range(1, 9)]
    start = final - gain
    points = [start - 2.0 * (6 - k) for k in range(1, 7)] + [start + gain / 2, final]
    return [{"iteration": it, "miou": m, "aacc": 80.0, "macc": 50.0} for it, m in zip(its, points)]


def write_run(results: Path, model: str, seed: int, miou: float, gain: float, iters: int = ITERS) -> Path:
    cfg = load(dataset="camvid", overrides={"model.name": model, "train.iters": iters, "train.seed": seed})
    name = cfg.run_name()
    per_class = {c: miou for c in CAMVID_CLASSES} | {"sky": miou + 10.0, "pole": 1.0 + seed}
    obj = {"run_name": name, "config": cfg.to_dict(),
           "metrics": {"aacc": 80.0, "miou": miou, "macc": 50.0, "per_class_iou": per_class,
                       "per_class_acc": per_class, "num_pixels": 1000, "num_images": 2},
           "iteration": iters, "world_size": 1, "params_m": 1.5, "pretrained": None,
           "checkpoint": f"runs/camvid/{model}/seed{seed}/{name}/model.pt", "curve": curve(miou, gain, iters),
           "timing": {"iterations": iters, "loop_s": 10.0, "eval_s": 1.0, "evaluations": 8, "resumed_at": 0,
                      "device": "cpu", "threads": 2}}
    path = results / "metrics" / model / f"seed{seed}" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def make_results(results: Path) -> Path:
    """The tree under ``results`` (``metrics/``, ``profile.json``); returns ``results``."""
    for model, runs in RUNS.items():
        for seed, miou, gain in runs:
            write_run(results, model, seed, miou, gain)
    write_run(results, "lemore", 0, 10.0, 5.0, iters=OLD_ITERS)  # superseded by the longer setting
    for model, runs in LONG_RUNS.items():
        for seed, miou, gain in runs:
            write_run(results / "long", model, seed, miou, gain, iters=2 * ITERS)
    rows = [{"model": m, "input_size": [360, 480], "num_classes": 11, "params_m": p, "gflops": g, "latency_ms": ms,
             "latency_ratio": r, "in_study": True} for m, (p, g, ms, r) in PROFILE.items()]
    protocol = {"cpu": CPU, "what": "ONNX Runtime, 1 thread, batch 1"}
    (results / "profile.json").write_text(json.dumps({"protocol": protocol, "rows": rows}))
    return results


def write_weights(results: Path, data_root: Path, models: tuple[str, ...] = ("segformer_b0", "lemore")) -> list[Path]:
    """``weights/<model>.safetensors`` of untrained models as the study's weights stage writes them (the config in
    the metadata), built for 64x64 crops and evaluated at 64x48 so that predicting the tiny CamVid tree (48x64
    images, ``tests/data/fixtures.py::make_camvid``) is quick."""
    from lemore.checkpoint import save_weights
    from lemore.registry import build_model

    paths = []
    for m in models:
        cfg = load(dataset="camvid", overrides={"model.name": m, "data.crop_size": [64, 64], "data.scale": [64, 48],
                                                "data.root": str(data_root)})
        paths.append(save_weights(build_model(cfg).state_dict(), results / "weights" / f"{m}.safetensors",
                                  config=cfg.to_dict()))
    return paths
