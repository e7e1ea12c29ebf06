"""Figures of the study, drawn only from files: trained checkpoints and ``results/`` JSON.

* :func:`visual_comparison`: the supplementary's Fig. 2 layout, ``Image | Ground Truth | <model> | <model>`` for N
  validation images, predictions from the checkpoints of the fine-tuning runs listed in ``results/metrics``.
* :func:`bubble_plot`: the paper's mIoU-vs-parameters plot, bubble area proportional to GFLOPs, each point labelled
  with its latency. Our points are measured (``results/profile``); the paper's, when shown, are hollow, grey and
  labelled "(paper)".
* The CamVid study (``notebooks/camvid.ipynb``, from ``results/camvid/``): :func:`weights_comparison` (the same
  layout from the study's ``weights/*.safetensors``, the images picked by a stated rule on per-image mIoU,
  :func:`per_image_miou`, :func:`pick_by_quantiles`), :func:`pareto_figure` (mIoU against latency and GFLOPs, the
  Pareto front), :func:`ablation_figure` (Table 2's rows, ours beside the paper's ADE20K) and
  :func:`curves_figure` (the learning curves, the last quarter of each schedule shaded, a longer schedule dashed).

Figures are written with :func:`save_figure` (temporary file + ``os.replace``). Every function returns a *closed*
figure: it can be saved and displayed (a notebook shows the returned object once), but pyplot does not show it
again by itself. Without a display matplotlib falls back to its Agg backend on its own.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from lemore.engine.evaluate import colorize  # (H, W) classes -> RGB, 255 (ignored) -> black
from lemore.tables import FROM_SCRATCH, best_runs, display_name, load_runs


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
    from lemore.registry import build_model

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
                      class_names: Sequence[str] | None = None, title: str = "",
                      row_labels: Sequence[str] | None = None) -> Figure:
    """Rows of ``Image | Ground Truth | <prediction columns...>`` with a class legend below.

    Args:
        images: (H, W, 3) uint8 images.
        truths: (H, W) class maps (255 = ignored, drawn black).
        predictions: column title -> (H, W) class maps, one per image; columns in insertion order.
        palette: RGB per class.
        class_names: legend entries (classes present in the truths or predictions only).
        title: above the figure.
        row_labels: one per image, left of its row.
    """
    n, cols = len(images), 2 + len(predictions)
    if n == 0:
        raise ValueError("no images to show")
    for name, preds in predictions.items():
        if len(preds) != n:
            raise ValueError(f"{len(preds)} predictions for {name!r} but {n} images")
    if row_labels is not None and len(row_labels) != n:
        raise ValueError(f"{len(row_labels)} row labels but {n} images")
    cell = 2.0  # inches per column; each row is as tall as its image's aspect ratio asks
    ratios = [im.shape[0] / im.shape[1] for im in images]
    legend_h = 0.5 if class_names is not None else 0.0
    title_h = 0.25 * (title.count("\n") + 1) if title else 0.0
    height = cell * sum(ratios) + 0.35 * n + 0.5 + legend_h + title_h
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
        if row_labels is not None:
            axes[r][0].set_ylabel(row_labels[r], fontsize=8)
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
    """mIoU (y) vs parameters (x); bubble area proportional to GFLOPs; labels give GFLOPs and latency; our points
    averaged over several seeds carry an error bar of one standard deviation and ``n=`` in their label.

    Args:
        points: :func:`lemore.tables.bubble_frame` (label, source, miou, miou_std, n, params_m, gflops, latency_ms,
            size; miou_std and n optional).
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
        std = float(p.get("miou_std", math.nan))
        if not paper and np.isfinite(std):
            ax.errorbar([p.params_m], [p.miou], yerr=[std], fmt="none", ecolor="k", elinewidth=1.2, capsize=4, zorder=4)
        lat = "" if not np.isfinite(p.latency_ms) else f", {p.latency_ms:.1f} ms"
        gfl = "" if not np.isfinite(p.gflops) else f"{p.gflops:.2f} GFLOPs"
        seeds = f", ±{std:.2f} (n={int(p.n)})" if not paper and np.isfinite(std) else ""
        label = f"{p.label} (paper)" if paper else f"{p.label}\n{gfl}{lat}{seeds}"
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


# ------------------------------------------------------------------------------------------ the CamVid study
def load_weights_model(path: str | os.PathLike, data_root: str = "", device: str | torch.device = "cpu"):
    """``(model in eval mode, RunCfg)`` from a ``.safetensors`` file of :func:`lemore.checkpoint.save_weights` (its
    training config in the metadata); ``data_root``, when given, replaces the config's ``data.root``."""
    from lemore.checkpoint import load_state_dict, load_weights, read_weights_config
    from lemore.config import load, saved_overrides
    from lemore.registry import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist; the study's weights stage writes it "
                                "(dvc repro studies/camvid/dvc.yaml)")
    saved = read_weights_config(path)
    if saved is None:
        raise ValueError(f"{path}: no training config in its metadata (not written by lemore's save_weights)")
    overrides = saved_overrides(saved)
    if data_root:
        overrides["data.root"] = data_root
    cfg = load(dataset=saved["data"]["dataset"], overrides=overrides)
    model = build_model(cfg)
    load_state_dict(model, load_weights(path), source=str(path))
    return model.to(device).eval(), cfg


def per_image_miou(pred: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor, num_classes: int) -> float:
    """mIoU of one image (percent), the metric's definition (:mod:`lemore.metrics`) on its own confusion matrix:
    the mean IoU over the classes in its ground truth or prediction; 255 in ``truth`` is ignored. NaN when every
    pixel is ignored."""
    from lemore.metrics import ConfusionMatrix

    cm = ConfusionMatrix(num_classes)
    cm.update(torch.as_tensor(np.asarray(truth)), torch.as_tensor(np.asarray(pred)))
    return float(cm.compute()["miou"])


@torch.no_grad()
def score_images(model: torch.nn.Module, cfg, ds, device: str | torch.device = "cpu") -> np.ndarray:
    """:func:`per_image_miou` of ``model``'s prediction (the evaluation pipeline of ``cfg``) on every image of
    ``ds``, in its order."""
    from lemore.engine.evaluate import inference

    scores = []
    for i in range(len(ds)):
        image, mask = ds[i]
        logits = inference(model, torch.as_tensor(image)[None].to(device), cfg, out_size=mask.shape[-2:])
        scores.append(per_image_miou(logits.argmax(1)[0].cpu(), mask, cfg.data.num_classes))
    return np.asarray(scores, dtype=float)


def pick_by_quantiles(scores: Sequence[float], n: int) -> list[int]:
    """Indices of ``n`` items at evenly spaced quantiles of ``scores`` ranked ascending (ties: the lower index
    first; NaN left out): the lowest, the highest and the ones evenly between; all of them, ranked, when there are
    ``n`` or fewer."""
    s = np.asarray(scores, dtype=float)
    finite = np.flatnonzero(np.isfinite(s))
    order = finite[np.argsort(s[finite], kind="stable")]
    if n <= 0 or not len(order):
        return []
    if n >= len(order):
        return order.tolist()
    return order[np.linspace(0, len(order) - 1, n).round().astype(int)].tolist()


def weights_comparison(weights_dir: str | os.PathLike, models: Sequence[str] = ("segformer_b0", "lemore"),
                       n: int = 6, data_root: str = "", device: str = "cpu") -> tuple[Figure, pd.DataFrame]:
    """``Image | Ground Truth | <models[0]> | <models[1]>`` on ``n`` validation images, predicted by the weights
    files ``<weights_dir>/<model>.safetensors``, and how the images were picked.

    Every validation image is scored (:func:`per_image_miou`) with both models and ranked by ``score of models[0]
    minus score of models[1]``; the rows are the images at evenly spaced quantiles of that ranking
    (:func:`pick_by_quantiles`), from the one where ``models[1]`` does best relative to ``models[0]`` to the
    reverse, so both extremes and the typical cases appear. The rule is the figure's title; each row is labelled
    with its rank and difference.

    Returns:
        The figure and one row per validation image: image, each model's mIoU, the difference, its rank (1 = the
        lowest difference) and ``shown`` (the figure's row, 0 when not shown).
    """
    from lemore.data import build_dataset

    if len(models) != 2:
        raise ValueError(f"the comparison ranks two models by their difference; got {list(models)}")
    a, b = models
    loaded = {m: load_weights_model(Path(weights_dir) / f"{m}.safetensors", data_root, device) for m in models}
    datasets = {m: build_dataset(cfg.data, "val") for m, (_, cfg) in loaded.items()}
    names = [img.stem for img, _ in datasets[a].files]
    if names != [img.stem for img, _ in datasets[b].files]:
        raise ValueError(f"the validation splits of {a} and {b} differ (data roots: "
                         f"{[str(loaded[m][1].data.resolved_root()) for m in models]})")
    scores = {m: score_images(loaded[m][0], loaded[m][1], datasets[m], device) for m in models}
    diff = scores[a] - scores[b]
    picked = pick_by_quantiles(diff, n)
    ranked = pick_by_quantiles(diff, len(diff))
    rank = {i: r + 1 for r, i in enumerate(ranked)}
    la, lb = display_name(a), display_name(b)
    table = pd.DataFrame({"image": names, f"miou {la}": scores[a], f"miou {lb}": scores[b],
                          f"Δ miou ({la} - {lb})": diff, "rank": [rank.get(i, 0) for i in range(len(names))],
                          "shown": [picked.index(i) + 1 if i in picked else 0 for i in range(len(names))]})
    # ranked images first, in rank order; an image without a score (nothing labelled) has rank 0 and goes last
    table = table.sort_values("rank", kind="stable", key=lambda r: r.where(r > 0, len(names) + 1))
    table = table.reset_index(drop=True)
    predictions = {display_name(m): predict(loaded[m][0], loaded[m][1], datasets[m], picked, device) for m in models}
    raw = [datasets[a].load_raw(i) for i in picked]
    labels = [f"rank {rank[i]}/{len(ranked)}\nΔ mIoU {diff[i]:+.1f}" for i in picked]
    title = (f"{type(datasets[a]).__name__} val: {la} vs {lb} on {len(picked)} of {len(ranked)} images,\n"
             f"ranked by per-image mIoU of {la} minus {lb}'s, taken at evenly spaced quantiles:\n"
             f"top row {lb}'s best case relative to {la}, bottom row {la}'s best")
    fig = comparison_figure([im.permute(1, 2, 0).numpy() for im, _ in raw], [m.numpy() for _, m in raw],
                            predictions, datasets[a].palette, list(datasets[a].classes), title=title,
                            row_labels=labels)
    return fig, table


def pareto_mask(cost: Sequence[float], score: Sequence[float]) -> np.ndarray:
    """True where no other point is at most as costly and at least as good, better in one of the two (lower
    ``cost``, higher ``score``); False for points with a NaN."""
    c, s = np.asarray(cost, dtype=float), np.asarray(score, dtype=float)
    ok = np.isfinite(c) & np.isfinite(s)
    out = np.zeros(len(c), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (c <= c[i]) & (s >= s[i]) & ((c < c[i]) | (s > s[i]))
        out[i] = not dominated.any()
    return out


def _size_of(models: pd.DataFrame) -> str:
    col = next((c for c in models.columns if c.startswith("gflops (")), "gflops ()")
    return col[len("gflops ("):-1]


def pareto_figure(models: pd.DataFrame, protocol: Mapping[str, Any] | None = None, dataset: str = "CamVid") -> Figure:
    """Val mIoU (mean, error bar = std over the seeds) against latency and against GFLOPs, every model labelled and
    each panel's Pareto front drawn (:func:`pareto_mask`). ``models``: :func:`lemore.tables.camvid_tables`'
    models table; ``protocol``: profile.json's (its ``cpu`` is named on the latency axis)."""
    size = _size_of(models)
    cpu = (protocol or {}).get("cpu", "") or "an unnamed CPU"
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    colors = {m: plt.get_cmap("tab10")(j % 10) for j, m in enumerate(models.registry)}
    panels = ((axes[0], f"latency_ms ({size})", f"latency (ms, log scale): ONNX Runtime, 1 thread, batch 1, "
               f"{size}\non {cpu}"), (axes[1], f"gflops ({size})", f"GFLOPs at {size} (fvcore MACs, log scale)"))
    for ax, col, xlabel in panels:
        pts = models[models["val miou"].notna() & models[col].notna()]
        y_span = max(float(pts["val miou"].max() - pts["val miou"].min()), 1.0) if len(pts) else 1.0
        for _, r in pts.iterrows():
            std = r["val miou std"] if pd.notna(r["val miou std"]) else 0.0
            ax.errorbar([r[col]], [r["val miou"]], yerr=[std], fmt="o", ms=7, capsize=3, color=colors[r.registry])
            note = f"{r.model} (n={int(r.n)})"
            if col.startswith("latency") and pd.notna(r["latency ratio to LR-ASPP"]):
                note += f"\n{r['latency ratio to LR-ASPP']:.2f}x LR-ASPP"
            # Right of the point, clear of its error bar; above it when another point sits where the label would go
            # (within 0.4 decades to the right, 6% of the mIoU span up or down).
            crowded = ((pts[col] > r[col]) & (np.log10(pts[col] / r[col]) < 0.4)
                       & ((pts["val miou"] - r["val miou"]).abs() < 0.06 * y_span)).any()
            place = dict(xytext=(0, 7 + 20 * (std > 0)), ha="center", va="bottom") if crowded else \
                dict(xytext=(9, 0), ha="left", va="center")
            ax.annotate(note, (r[col], r["val miou"]), textcoords="offset points", fontsize=8, **place,
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
        front = pts[pareto_mask(pts[col], pts["val miou"])].sort_values(col)
        if len(front):
            ax.step(front[col], front["val miou"], where="post", ls="--", color="0.4", lw=1, label="Pareto front")
            ax.legend(loc="best", fontsize=8)  # "best": away from the points
        if pts.empty:
            ax.text(0.5, 0.5, "no runs with this measurement yet", transform=ax.transAxes, ha="center")
        else:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 20, 50, 100 rather than 2x10^1
            ax.xaxis.set_minor_formatter(NullFormatter())
            lo, hi = float(pts[col].min()), float(pts[col].max())
            ax.set_xlim(lo / 1.8, hi * 2.8)  # room for the labels beside the points
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(f"{dataset} val mIoU (%), mean ± std over seeds")
        ax.grid(alpha=0.3, which="both")
    ran = models[models["val miou"].notna()]
    scratch = len(ran) and (ran.get("initialisation", pd.Series(dtype=str)) == FROM_SCRATCH).all()
    fig.suptitle(f"{dataset}: val mIoU against cost" + (f", every model {FROM_SCRATCH}" if scratch else ""),
                 fontsize=11)
    fig.tight_layout()
    plt.close(fig)
    return fig


def ablation_figure(ablation: pd.DataFrame, chosen: pd.DataFrame, dataset: str = "camvid",
                    dataset_label: str = "CamVid") -> Figure:
    """Table 2's rows: our val mIoU on ``dataset`` (mean ± std, each seed a dot, n above) and, on a second axis, the
    paper's ADE20K mIoU. ``ablation``: :func:`lemore.tables.study_ablation_table`; ``chosen``: the runs per seed
    (:func:`lemore.tables.study_runs`)."""
    ours, std = f"{dataset} miou (ours)", f"{dataset} miou std (ours)"
    x = np.arange(len(ablation))
    fig, ax = plt.subplots(figsize=(10, 5.2))
    ax.errorbar(x, ablation[ours], yerr=ablation[std].fillna(0), fmt="o", ms=8, capsize=4, color="tab:blue",
                label=f"{dataset_label} val mIoU (ours): mean ± std over seeds")
    for xi, (_, r) in zip(x, ablation.iterrows()):
        hit = chosen[chosen.model == r.registry] if not chosen.empty else chosen
        if len(hit):
            jitter = np.linspace(-0.12, 0.12, len(hit)) if len(hit) > 1 else np.zeros(1)
            ax.plot(xi + jitter, hit.miou, "o", ms=3.5, color="k", alpha=0.7)
        ax.annotate(f"n={int(r['n (ours)'])}" if r["n (ours)"] else "not run", (xi, 1.0),
                    xycoords=("data", "axes fraction"), xytext=(0, 3), textcoords="offset points", ha="center",
                    va="bottom", fontsize=8, color="0.3")
    ax.plot([], [], "o", ms=3.5, color="k", alpha=0.7, label="one seed")
    ax.axvline(3.5, color="0.8", lw=1, ls=":")  # without / with nested attention
    ax.set_xticks(x, list(ablation.row), rotation=20)
    ax.set_ylabel(f"{dataset_label} val mIoU (%), ours", color="tab:blue")
    ax.grid(alpha=0.3)
    if ablation[ours].notna().any():
        spread = ablation[std].fillna(0)
        lo, hi = np.nanmin(ablation[ours] - spread), np.nanmax(ablation[ours] + spread)
        pad = max(hi - lo, 1.0) * 0.15
        ax.set_ylim(lo - pad, hi + pad)
    ax2 = ax.twinx()
    ax2.plot(x, ablation["ade20k miou (paper)"], "s--", mfc="none", color="0.45", lw=1,
             label="ADE20K mIoU (the paper's Table 2, right axis)")
    ax2.set_ylabel("ADE20K mIoU (%), the paper's", color="0.45")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8, frameon=False)
    ax.set_title(f"The paper's Table 2 rows on {dataset_label} (ours, left axis) and on ADE20K (the paper's, right "
                 "axis)", fontsize=10, pad=18)
    fig.tight_layout()
    plt.close(fig)
    return fig


def curves_figure(chosen: pd.DataFrame, models: Sequence[str], dataset: str = "CamVid",
                  longer: pd.DataFrame | None = None) -> Figure:
    """Val mIoU against the iteration for each of ``models`` (those with runs): the mean over the seeds, a band from
    their minimum to their maximum, the last quarter of each schedule shaded (what the last-quarter gain measures).
    ``chosen``: the runs per seed (:func:`lemore.tables.study_runs`); ``longer``: runs at a longer schedule (the
    plateau rule's doubling check), drawn dashed in the model's colour."""
    from lemore.tables import LAST_QUARTER, study_label

    fig, ax = plt.subplots(figsize=(9, 5))
    schedules = set()
    for j, m in enumerate(models):
        color = plt.get_cmap("tab10")(j % 10)
        for runs_all, style, tag in ((chosen, "-o", ""), (longer, "--", ", longer schedule")):
            if runs_all is None or runs_all.empty:
                continue
            runs = runs_all[runs_all.model == m]
            curves = [{int(p["iteration"]): p["miou"] for p in c if p.get("miou") is not None} for c in runs.curve]
            curves = [c for c in curves if c]
            if not curves:
                continue
            its = sorted(set().union(*curves))
            values = np.array([[c.get(it, np.nan) for it in its] for c in curves], dtype=float)
            ax.plot(its, np.nanmean(values, axis=0), style, ms=3, color=color,
                    label=f"{study_label(m)} (n={len(curves)}{tag})")
            if len(curves) > 1:
                ax.fill_between(its, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=color, alpha=0.18,
                                lw=0)
            schedules |= set(int(v) for v in runs.iters)
    for k, iters in enumerate(sorted(schedules)):
        ax.axvspan(LAST_QUARTER * iters, iters, color="0.93", zorder=0,
                   label="last quarter of a schedule" if k == 0 else None)
    if not schedules:
        ax.text(0.5, 0.5, "no learning curves yet", transform=ax.transAxes, ha="center")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{dataset} val mIoU (%)")
    ax.set_title(f"{dataset}: validation mIoU during training (line: mean over seeds; band: min..max)", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    plt.close(fig)
    return fig
