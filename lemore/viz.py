"""Figures of the study, drawn only from files: trained checkpoints and ``results/`` JSON.

* :func:`visual_comparison`: the supplementary's Fig. 2 layout, ``Image | Ground Truth | <model> | <model>`` for N
  validation images, predictions from the checkpoints of the fine-tuning runs listed in ``results/metrics``.
* :func:`bubble_plot`: the paper's mIoU-vs-parameters plot, bubble area proportional to GFLOPs, each point labelled
  with its latency. Our points are measured (``results/profile``); the paper's, when shown, are hollow, grey and
  labelled "(paper)".

Figures are written with :func:`save_figure` (temporary file + ``os.replace``). Every function returns a *closed*
figure: it can be saved and displayed (a notebook shows the returned object once), but pyplot does not show it
again by itself. Without a display matplotlib falls back to its Agg backend on its own.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lemore.engine.evaluate import colorize  # (H, W) classes -> RGB, 255 (ignored) -> black
from lemore.tables import best_runs, display_name, load_runs


# --------------------------------------------------------------------------------------------------- basics
def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically (temporary file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    # No "Software"/date metadata: the same figure gives the same bytes.
    fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------- checkpoints
def _resolve(path: str, results_dir: Path) -> Path:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    for base in (results_dir.parent, results_dir):  # paths are written relative to the project root
        if (base / p).exists():
            return base / p
    return p


def load_trained(checkpoint: str | os.PathLike, config: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu"):
    """``(model in eval mode, RunCfg)`` from a fine-tuning checkpoint (``model.pt`` holds weights and config)."""
    from lemore.checkpoint import load_checkpoint, load_state_dict
    from lemore.config import from_dict
    from lemore.engine.evaluate import build_model

    obj = load_checkpoint(checkpoint)
    cfg = from_dict(config if config is not None else obj["config"])
    model = build_model(cfg)
    load_state_dict(model, obj["model"] if "model" in obj else obj, source=str(checkpoint))
    return model.to(device).eval(), cfg


def find_runs(results_dir: str | os.PathLike, dataset: str, models: Sequence[str]) -> dict[str, dict[str, Any]]:
    """For each of ``models``: its run on ``dataset`` in ``results/metrics`` (:func:`lemore.tables.best_runs`).

    Raises:
        FileNotFoundError: a model has no run or its checkpoint is missing (the message says which and where).
    """
    import json

    results_dir = Path(results_dir)
    runs = best_runs(load_runs(results_dir))
    out = {}
    for m in models:
        hit = runs[(runs.dataset == dataset) & (runs.model == m)] if not runs.empty else runs
        if hit.empty:
            have = sorted(set(zip(runs.dataset, runs.model))) if not runs.empty else []
            raise FileNotFoundError(f"no fine-tuning run of {m!r} on {dataset!r} in {results_dir / 'metrics'}; "
                                    f"runs there: {have}. Run the finetune stage (dvc repro) first.")
        row = hit.iloc[-1]
        ckpt = _resolve(str(row.checkpoint), results_dir)
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint {str(ckpt)!r} of run {row.run_name} not found (`dvc checkout` or "
                                    "`dvc repro` restores it)")
        out[m] = dict(run_name=row.run_name, checkpoint=ckpt, config=json.loads(Path(row.path).read_text())["config"])
    return out


@torch.no_grad()
def predict(model: torch.nn.Module, cfg, ds, indices: Sequence[int],
            device: str | torch.device = "cpu") -> list[np.ndarray]:
    """Predicted class maps at the label size for ``ds[i]`` (the evaluation pipeline of ``cfg``)."""
    from lemore.engine.evaluate import inference

    out = []
    for i in indices:
        image, mask = ds[i]
        logits = inference(model, torch.as_tensor(image)[None].to(device), cfg, out_size=mask.shape[-2:])
        out.append(logits.argmax(1)[0].cpu().numpy())
    return out


# --------------------------------------------------------------------------------------- visual comparison
def comparison_figure(images: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                      predictions: dict[str, Sequence[np.ndarray]], palette: Sequence[Sequence[int]],
                      class_names: Sequence[str] | None = None, title: str = "") -> Figure:
    """Rows of ``Image | Ground Truth | <prediction columns...>`` with a class legend below.

    Args:
        images: (H, W, 3) uint8 images.
        truths: (H, W) class maps (255 = ignored, drawn black).
        predictions: column title -> (H, W) class maps, one per image; columns in insertion order.
        palette: RGB per class.
        class_names: legend entries (classes present in the truths or predictions only).
    """
    n, cols = len(images), 2 + len(predictions)
    if n == 0:
        raise ValueError("no images to show")
    for name, preds in predictions.items():
        if len(preds) != n:
            raise ValueError(f"{len(preds)} predictions for {name!r} but {n} images")
    cell = 2.0  # inches per column; each row is as tall as its image's aspect ratio asks
    ratios = [im.shape[0] / im.shape[1] for im in images]
    legend_h = 0.5 if class_names is not None else 0.0
    height = cell * sum(ratios) + 0.35 * n + 0.5 + legend_h
    fig, axes = plt.subplots(n, cols, figsize=(cell * cols, height), squeeze=False,
                             gridspec_kw={"height_ratios": ratios})
    titles = ["Image", "Ground Truth", *predictions]
    for r in range(n):
        panels = [images[r], colorize(truths[r], palette)] + [colorize(p[r], palette) for p in predictions.values()]
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=10)
    if class_names is not None:
        present = set()
        for m in [*truths, *[p for ps in predictions.values() for p in ps]]:
            present |= set(np.unique(m).tolist())
        handles = [Patch(color=np.asarray(palette[k]) / 255, label=class_names[k])
                   for k in range(len(class_names)) if k in present]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4) or 1, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, legend_h / height, 1, 1))
    plt.close(fig)
    return fig


def visual_comparison(results_dir: str | os.PathLike, dataset: str, models: Sequence[str] = ("segformer_b0", "lemore"),
                      n: int = 4, data_root: str = "", device: str = "cpu") -> Figure:
    """The supplementary's Fig. 2 for ``dataset``: ``n`` validation images (evenly spaced over the split, so the
    choice is fixed), their ground truth, and each model's prediction from its fine-tuned checkpoint.

    Args:
        results_dir: holds ``metrics/**/<run>.json`` naming each run's checkpoint.
        dataset: the dataset the runs were trained on.
        models: registry names, one column each, in this order (the paper: SegFormer, then LeMoRe).
        n: number of validation images (rows).
        data_root: the dataset folder if it is not where the runs found it.
        device: "cpu" or "cuda".
    """
    from lemore.data import build_dataset

    runs = find_runs(results_dir, dataset, models)
    predictions: dict[str, list[np.ndarray]] = {}
    raw_ds = None
    indices: list[int] = []
    for m in models:
        model, cfg = load_trained(runs[m]["checkpoint"], runs[m]["config"], device)
        if data_root:
            cfg.data.root = data_root
        cfg.data.num_workers = 0
        ds = build_dataset(cfg.data, "val")
        if raw_ds is None:
            raw_ds = ds
            indices = np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int).tolist()
        predictions[display_name(m)] = predict(model, cfg, ds, indices, device)
    assert raw_ds is not None
    images, truths = [], []
    for i in indices:
        image, mask = raw_ds.load_raw(i)
        images.append(image.permute(1, 2, 0).numpy())
        truths.append(mask.numpy())
    return comparison_figure(images, truths, predictions, raw_ds.palette, list(raw_ds.classes),
                             title=f"{dataset}: validation images, predictions of the fine-tuned models")


def run_predictions(run_dir: str | os.PathLike, n: int = 4, data_root: str = "", device: str = "cpu") -> Figure:
    """``Image | Ground Truth | prediction`` of one run (its ``model.pt``) on ``n`` validation images."""
    from lemore.data import build_dataset

    run_dir = Path(run_dir)
    model, cfg = load_trained(run_dir / "model.pt", device=device)
    if data_root:
        cfg.data.root = data_root
    cfg.data.num_workers = 0
    ds = build_dataset(cfg.data, "val")
    indices = np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int).tolist()
    preds = predict(model, cfg, ds, indices, device)
    raw = [ds.load_raw(i) for i in indices]
    return comparison_figure([im.permute(1, 2, 0).numpy() for im, _ in raw], [m.numpy() for _, m in raw],
                             {display_name(cfg.model.name): preds}, ds.palette, list(ds.classes),
                             title=run_dir.name)


# --------------------------------------------------------------------------------------------- bubble plot
def bubble_plot(points: pd.DataFrame, title: str = "", device_note: str = "") -> Figure:
    """mIoU (y) vs parameters (x); bubble area proportional to GFLOPs; labels give GFLOPs and latency.

    Args:
        points: :func:`lemore.tables.bubble_frame` (label, source, miou, params_m, gflops, latency_ms, size).
        title: figure title.
        device_note: where our latency was measured (shown in the legend).
    """
    if points.empty:
        raise ValueError("no points to plot: no fine-tuning results for this dataset yet")
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    gmax = max(float(points.gflops.max(skipna=True)) if points.gflops.notna().any() else 1.0, 1e-9)

    def area(g: float) -> float:
        return 40.0 if not np.isfinite(g) else 40.0 + 1400.0 * g / gmax

    ours_colors = plt.get_cmap("tab10")
    handles, labels = [], []
    for j, (_, p) in enumerate(points.iterrows()):
        if not (np.isfinite(p.params_m) and np.isfinite(p.miou)):
            continue
        paper = p.source == "paper"
        kw = (dict(facecolors="none", edgecolors="0.55", linewidths=1.0) if paper
              else dict(color=ours_colors(j % 10), alpha=0.75, edgecolors="k", linewidths=0.8))
        ax.scatter([p.params_m], [p.miou], s=area(p.gflops), zorder=3 if not paper else 2, **kw)
        lat = "" if not np.isfinite(p.latency_ms) else f", {p.latency_ms:.1f} ms"
        gfl = "" if not np.isfinite(p.gflops) else f"{p.gflops:.2f} GFLOPs"
        label = f"{p.label} (paper)" if paper else f"{p.label}\n{gfl}{lat}"
        labels.append((label, p.params_m, p.miou, paper))
    _place_labels(fig, ax, labels)
    handles.append(ax.scatter([], [], s=60, color="tab:blue", edgecolors="k", label="ours (measured" + (
        f", latency on {device_note})" if device_note else ")")))
    if (points.source == "paper").any():
        handles.append(ax.scatter([], [], s=60, facecolors="none", edgecolors="0.55",
                                   label="paper (reported, its own hardware)"))
    ax.legend(handles=handles, loc="best", fontsize=8)
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("mIoU (%)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


def _place_labels(fig: Figure, ax, labels: list[tuple[str, float, float, bool]]) -> None:
    """Annotate points, each label at the first of a few offsets where it overlaps no label placed before
    (ours first, so they get the best spots; the paper's cluster of lightweight models is dense)."""
    finite = [(x, y) for _, x, y, _ in labels]
    if finite:
        xs, ys = zip(*finite)
        ax.set_xlim(0, max(xs) * 1.3 if max(xs) > 0 else 1)
        pad = max(max(ys) - min(ys), 1.0) * 0.15
        ax.set_ylim(min(ys) - pad, max(ys) + pad)
    renderer = fig.canvas.get_renderer()
    placed = []
    offsets = [(6, 6), (6, -12), (-6, 6), (-6, -12), (6, 16), (6, -22), (-6, 16), (-6, -22)]
    for text, x, y, paper in sorted(labels, key=lambda t: t[3]):
        for dx, dy in offsets:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=6.5 if paper else 8,
                              color="0.45" if paper else "k", ha="left" if dx > 0 else "right")
            box = ann.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in placed):
                placed.append(box)
                break
            ann.remove()
        else:  # nowhere free: keep the first spot
            ax.annotate(text, (x, y), xytext=offsets[0], textcoords="offset points", fontsize=6.5 if paper else 8,
                        color="0.45" if paper else "k")


def bubble_for_dataset(results_dir: str | os.PathLike, dataset: str, include_paper: bool = True) -> Figure:
    """:func:`bubble_plot` of ``dataset`` from ``results/metrics`` and ``results/profile``."""
    from lemore.tables import bubble_frame, load_profile, load_profile_protocol

    runs = best_runs(load_runs(results_dir))
    points = bubble_frame(dataset, runs, load_profile(results_dir), include_paper=include_paper)
    ours = points[points.source == "ours"]
    size = ours["size"].iloc[0] if not ours.empty else ""
    proto = load_profile_protocol(results_dir, dataset) or load_profile_protocol(results_dir)
    device = proto.get("device", "")
    if device == "cpu":
        prof = load_profile(results_dir)
        threads = prof[(prof["size"] == size) & prof.threads.notna()].threads
        threads_note = f", {int(threads.iloc[-1])} thread(s)" if len(threads) else ""
        device = f"CPU {proto.get('cpu', '')} with {proto.get('cpu_count', '?')} cores{threads_note}"
    title = (f"{dataset}: mIoU vs parameters\nbubble area ∝ GFLOPs at {size}; our labels: GFLOPs, latency "
             f"(batch 1, {size})")
    return bubble_plot(points, title=title, device_note=device)


# -------------------------------------------------------------------------------------------- proxy study
def _switch_label(row: pd.Series) -> str:
    parts = [s for s, col in (("T", "transverse"), ("F", "frontal"), ("L", "lateral"), ("CA", "channel_attention"),
                              ("NA", "nested_attention")) if int(row[col])]
    return "+".join(parts)


def proxy_figure(results_dir: str | os.PathLike, built: dict[str, pd.DataFrame]) -> Figure:
    """The proxy study at a glance: proxy mIoU (mean, ± std as a bar, each seed a dot) of every model (left) and of
    every Table 2 row (right, labelled with the paper's ADE20K mIoU). ``built``: :func:`lemore.tables.proxy_tables`."""
    runs = load_runs(results_dir)
    models, ablation = built["proxy_models"], built["proxy_ablation"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * max(len(models), len(ablation)) + 1.6),
                             gridspec_kw={"width_ratios": [1, 1]})

    def panel(ax, frame: pd.DataFrame, labels: list[str], title: str, notes: list[str]) -> None:
        y = np.arange(len(frame))[::-1]
        ax.barh(y, frame["proxy miou"].fillna(0), xerr=frame["proxy miou std"].fillna(0), color="#9ecae1",
                ecolor="0.3", capsize=3)
        for yi, (_, r) in zip(y, frame.iterrows()):
            hit = runs[(runs.model == r.registry) & (runs.iters == r.iters)] if not runs.empty else runs
            ax.plot(hit.miou, np.full(len(hit), yi), "o", ms=3.5, color="k", alpha=0.7)
        ax.set_yticks(y, labels)
        lo = np.nanmin(frame["proxy miou"]) if frame["proxy miou"].notna().any() else 0
        ax.set_xlim(max(0, lo - 15), 100)
        for yi, note in zip(y, notes):
            ax.annotate(note, (1.0, yi), xycoords=("axes fraction", "data"), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=7, color="0.35", annotation_clip=False)
        ax.set_xlabel("proxy mIoU (synthetic val), mean ± std over seeds; dots: seeds")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)

    panel(axes[0], models, list(models.model), "LeMoRe and its peers",
          [f"n={int(r.n)}, {r.params_m:.2f}M, ADE20K {r['ade20k miou (published)']:.1f} (published)"
           if pd.notna(r["ade20k miou (published)"]) else f"n={int(r.n)}" for _, r in models.iterrows()])
    panel(axes[1], ablation, [_switch_label(r) for _, r in ablation.iterrows()], "Table 2 rows",
          [f"n={int(r.n)}, ADE20K {r['ade20k miou (paper)']:.1f} (paper)" for _, r in ablation.iterrows()])
    fig.tight_layout(w_pad=12)
    plt.close(fig)
    return fig
