"""Evaluation: whole-image and sliding-window inference, one confusion matrix over the dataset.

MMSegmentation's test protocol, single scale:

* ``whole``: the pipeline resizes the image keeping its aspect ratio (``data.scale``); the logits are computed
  at that size and bilinearly upsampled to the *original* label size before the argmax.
* ``slide`` (Cityscapes): windows of ``crop_size`` every ``eval_stride`` pixels over the full-resolution image;
  overlapping logits are summed and divided by a per-pixel count (mmseg's ``slide_inference``). A window that
  is smaller than ``crop_size`` (an image smaller than the crop) is zero-padded up to ``crop_size`` (0 is the
  mean colour after normalisation), run, and cut back, so the model always sees its training size.

The metric is :class:`lemore.metrics.ConfusionMatrix` (see there for the definitions); under DDP each rank
evaluates a disjoint shard (``range(rank, n, world_size)``: no padding samples, so no image is counted
twice, unlike ``DistributedSampler``) and the matrices are summed with one ``all_reduce``.

CLI::

    python -m lemore eval --run-dir RUN                                   # a training run of this project
    python -m lemore eval --checkpoint model.pt [--dataset D] [--set key=value ...]
    python -m lemore eval --official FILE_OR_FOLDER --model NAME --dataset D [--set data.root=...]

``--official`` evaluates the authors' own weights of a peer (:mod:`lemore.convert`): an mmseg ``.pth`` of TopFormer-T
or SeaFormer-T, or a Hugging Face folder of SegFormer-B0, loaded safely and strictly with the key mapping of the
model's file, under the dataset recipe of that model (its published test pipeline, e.g. resize to 2048x512 keeping
the ratio, rounded up to a multiple of 32, whole-image inference on ADE20K). The results go to
``<checkpoint folder>/eval_<model>_<dataset>.json`` unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lemore.config import ConfigValueError, RunCfg
from lemore.faults import maybe_fault
from lemore.metrics import IGNORE_INDEX, ConfusionMatrix
from lemore.registry import build_model

log = logging.getLogger("lemore")

#: Datasets whose class 0 is "background" and that papers report with and without it (mIoU60 / mIoU59).
BACKGROUND_CLASS = {"pascal_context": 0}


# ----------------------------------------------------------------------------------------------- inference
def whole_inference(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Logits of the whole (already resized) image: (B, 3, H, W) -> (B, K, H, W)."""
    return model(image)


def slide_inference(
    model: nn.Module,
    image: torch.Tensor,
    num_classes: int,
    crop_size: Sequence[int],
    stride: Sequence[int],
) -> torch.Tensor:
    """MMSegmentation's ``slide_inference``: (B, 3, H, W) -> (B, K, H, W) logits averaged over windows.

    Windows start every ``stride`` pixels; the last one in each direction is shifted back to end at the image
    border (so every window is full-size when the image is at least ``crop_size``). Windows smaller than
    ``crop_size`` are padded at the bottom/right with zeros and their logits cropped back.
    """
    h_crop, w_crop = crop_size
    h_stride, w_stride = stride
    if h_stride < 1 or w_stride < 1:
        raise ValueError(f"eval_stride={tuple(stride)} must be positive")
    b, _, h_img, w_img = image.shape
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    logits = image.new_zeros((b, num_classes, h_img, w_img), dtype=torch.float32)
    count = image.new_zeros((1, 1, h_img, w_img), dtype=torch.float32)
    for hi in range(h_grids):
        for wi in range(w_grids):
            y1, x1 = hi * h_stride, wi * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            crop = image[:, :, y1:y2, x1:x2]  # (B, 3, <=h_crop, <=w_crop)
            ph, pw = h_crop - crop.shape[2], w_crop - crop.shape[3]
            if ph or pw:  # an image smaller than the window: run the model at its training size
                crop = F.pad(crop, (0, pw, 0, ph))
            out = model(crop)[:, :, : y2 - y1, : x2 - x1].float()  # (B, K, y2-y1, x2-x1)
            logits[:, :, y1:y2, x1:x2] += out
            count[:, :, y1:y2, x1:x2] += 1
    assert (count > 0).all(), "sliding windows must cover the image"
    return logits / count


def inference(model: nn.Module, image: torch.Tensor, cfg: RunCfg, out_size: Sequence[int] | None = None) -> torch.Tensor:
    """Logits for ``image`` (B, 3, H, W) with ``cfg.data.eval_mode``, upsampled to ``out_size`` (the label
    size) when given: (B, K, *out_size)."""
    d = cfg.data
    if d.eval_mode == "slide":
        logits = slide_inference(model, image, d.num_classes, d.crop_size, d.eval_stride)
    elif d.eval_mode == "whole":
        logits = whole_inference(model, image)
    else:
        raise ValueError(f"data.eval_mode={d.eval_mode!r}; choose from ['slide', 'whole']")
    if out_size is not None and tuple(logits.shape[-2:]) != tuple(out_size):
        logits = F.interpolate(logits.float(), size=tuple(out_size), mode="bilinear", align_corners=False)
    return logits


# ---------------------------------------------------------------------------------------------- evaluation
def eval_loader(ds: Dataset, cfg: RunCfg, rank: int = 0, world_size: int = 1,
                device: torch.device | str | None = None) -> DataLoader:
    """Batch-1 loader over this rank's shard ``range(rank, len(ds), world_size)``. Batch 1 because validation
    images keep their own size (and labels their original size); the shard has no padding duplicates. On CPU the
    workers follow :func:`lemore.data.loader.loader_workers` (none for a split held in memory)."""
    from lemore.data.loader import loader_workers

    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    base = ds
    while hasattr(base, "dataset"):  # a Subset of a dataset
        base = base.dataset
    workers = loader_workers(cfg.data.num_workers, device, cached=bool(getattr(base, "cached", False)))
    return DataLoader(ds, batch_size=1, sampler=list(range(rank, len(ds), world_size)),
                      num_workers=workers, pin_memory=device.type == "cuda",
                      # own generator: iterating must not consume the global RNG (exact resume of training)
                      generator=torch.Generator())


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    cfg: RunCfg,
    *,
    device: torch.device | str = "cpu",
    class_names: Sequence[str] | None = None,
    amp_dtype: torch.dtype | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
    progress: bool = False,
) -> dict[str, Any]:
    """aAcc / mIoU / mAcc / per-class IoU of ``model`` over ``loader`` (summed over DDP ranks).

    Args:
        model: returns logits (B, K, h, w) for images (B, 3, h, w).
        loader: yields ``(image (B,3,h,w) float, mask (B,H,W) int64)``; masks may be larger than the images
            (whole mode: the label keeps its original size).
        cfg: ``data.eval_mode``, ``crop_size``, ``eval_stride``, ``num_classes``, ``dataset`` are used.
        device: where inference runs.
        class_names: keys of the per-class dicts.
        amp_dtype: autocast dtype on CUDA (None: full precision).
        memory_format: the images' layout, the model's (``torch.channels_last`` when training uses it).
        progress: show a tqdm bar.

    Returns:
        :func:`lemore.metrics.summarize`'s dict plus ``num_images``; ``miou60``/``miou59`` for PASCAL Context.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(cfg.data.num_classes, IGNORE_INDEX, device=device)
    n_images = torch.zeros((), dtype=torch.int64, device=device)
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None and device.type == "cuda"
                else contextlib.nullcontext())
    if progress:
        from lemore.progress import progress

        loader = progress(loader, desc="eval", leave=False)
    n_batches = 0
    # Whole-image evaluation keeps each image's aspect ratio, so nearly every image is a new input shape, and
    # cudnn.benchmark (set for training's fixed crops) would time every convolution's algorithms again for each.
    # Sliding windows have the crop's fixed shape and keep it.
    benchmark = torch.backends.cudnn.benchmark
    if device.type == "cuda" and cfg.data.eval_mode == "whole":
        torch.backends.cudnn.benchmark = False
    try:
        for image, mask in loader:
            image = image.to(device, non_blocking=True, memory_format=memory_format)  # (B, 3, h, w)
            mask = mask.to(device, non_blocking=True)  # (B, H, W)
            with autocast:
                logits = inference(model, image, cfg, out_size=mask.shape[-2:])  # (B, K, H, W)
            cm.update(mask, logits.max(1).indices)  # = argmax(1) (the first maximum), 5x faster on CPU
            n_images += image.shape[0]
            n_batches += 1
            maybe_fault("eval", n_batches)  # tests: a kill in the middle of an evaluation (lemore.faults)
    finally:
        model.train(was_training)
        torch.backends.cudnn.benchmark = benchmark
    cm.all_reduce()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(n_images)
    metrics = cm.compute(class_names, background_index=BACKGROUND_CLASS.get(cfg.data.dataset))
    metrics["num_images"] = int(n_images)
    return metrics


# ------------------------------------------------------------------------------------------ visualisation
def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours; ignored pixels (255) are black."""
    pal = np.zeros((256, 3), np.uint8)
    pal[: len(palette)] = np.asarray(palette, np.uint8)[:256]
    pal[IGNORE_INDEX] = 0
    return pal[np.clip(mask, 0, 255).astype(np.int64)]


@torch.no_grad()
def prediction_strips(
    model: nn.Module,
    ds: Dataset,
    cfg: RunCfg,
    indices: Sequence[int],
    device: torch.device | str = "cpu",
) -> list[np.ndarray]:
    """For each index: one (H, 3W, 3) uint8 image ``image | ground truth | prediction`` at the label size."""
    from lemore.data.transforms import denormalize

    was_training = model.training
    model.eval()
    palette = getattr(ds, "palette", None) or _default_palette(cfg.data.num_classes)
    out = []
    try:
        for i in indices:
            image, mask = ds[i]
            logits = inference(model, image[None].to(device), cfg, out_size=mask.shape[-2:])
            pred = logits.argmax(1)[0].cpu().numpy()
            gt = mask.as_subclass(torch.Tensor).numpy()
            img = denormalize(image).float()  # (3, h, w) in 0..255, shown at the label size
            img = F.interpolate(img[None], size=gt.shape, mode="bilinear", align_corners=False)[0]
            rgb = img.round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)
            out.append(np.concatenate([rgb, colorize(gt, palette), colorize(pred, palette)], axis=1))
    finally:
        model.train(was_training)
    return out


def _default_palette(k: int) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(0)
    return [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(k)]


def format_metrics(metrics: dict[str, Any], top: int | None = None) -> str:
    """A readable table: the summary numbers, then per-class IoU / Acc."""
    head = ["aacc", "miou", "macc"] + [k for k in metrics if k.startswith("miou") and k != "miou"]
    lines = ["  ".join(f"{k}={metrics[k]:.2f}" for k in head if k in metrics)
             + f"  images={metrics.get('num_images', '?')}"]
    iou, acc = metrics.get("per_class_iou", {}), metrics.get("per_class_acc", {})
    if iou and top != 0:
        width = max(len(n) for n in iou)
        lines.append(f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}")
        for j, (name, v) in enumerate(iou.items()):
            if top is not None and j >= top:
                lines.append(f"... {len(iou) - top} more")
                break
            a = acc.get(name, math.nan)
            lines.append(f"{name:<{width}}  {v:6.2f}  {a:6.2f}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ CLI
def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    from lemore.convert import FORMATS

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", type=Path, help="a training run directory (config.yaml + model.pt)")
    src.add_argument("--checkpoint", type=Path, help="a model.pt / last.pt / weights-only state dict")
    src.add_argument("--official", type=Path, metavar="PATH",
                     help="the authors' checkpoint of a peer (with --model and --dataset): "
                          + "; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
    p.add_argument("--model", help=f"the model of --official: one of {sorted(FORMATS)}")
    p.add_argument("--dataset", help="dataset recipe (default: the one in the checkpoint's config)")
    p.add_argument("--config", type=Path, help="YAML config (with --checkpoint)")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set data.root=/data/ade data.eval_mode=slide (repeatable)")
    p.add_argument("--split", default="val", choices=("train", "val", "test"),
                   help="the split to evaluate, where the dataset's layout has it (test: CamVid); default val")
    p.add_argument("--out", type=Path, help="results JSON (default: <run dir or checkpoint dir>/eval.json, "
                                            "eval_<split>.json for another split)")
    p.add_argument("--results-dir", type=Path, help="also write <results-dir>/<run name>.json")


def cli_main(args: argparse.Namespace) -> int:
    from lemore.checkpoint import load_checkpoint, load_state_dict, load_weights, read_weights_config
    from lemore.config import load, saved_overrides

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.official is not None:
        return _official_main(args)
    if args.model is not None:
        raise ConfigValueError("--model is for --official (the authors' checkpoint of a peer); a --run-dir or "
                               "--checkpoint of this project names its model in its config")
    if args.run_dir is not None:
        cfg_file = args.run_dir / "config.yaml"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{str(cfg_file)!r} not found: is {str(args.run_dir)!r} a training run directory?")
        cfg = load(cfg_file, dataset=args.dataset, overrides={**_predated_keys(cfg_file), **_pairs(args.set)})
        ckpt = args.run_dir / "model.pt"
        if not ckpt.is_file():
            ckpt = args.run_dir / "last.pt"
            log.info("model.pt not found (unfinished run?): evaluating %s", ckpt)
        out_dir = args.run_dir
    else:
        ckpt, out_dir = args.checkpoint, args.checkpoint.parent
        if ckpt.suffix == ".safetensors":  # weights exported by save_weights: the config is in the metadata
            saved = read_weights_config(ckpt)
        else:
            obj = load_checkpoint(ckpt)
            saved = obj.get("config") if isinstance(obj, dict) else None
        if args.config is not None or saved is None or (args.dataset and args.dataset != saved["data"]["dataset"]):
            # no usable config in the file (a bare state dict) or another dataset asked for: the recipe
            cfg = load(args.config, dataset=args.dataset, overrides=args.set)
        else:  # the training config saved in the checkpoint, with this command's overrides on top
            cfg = load(dataset=saved["data"]["dataset"], overrides=saved_overrides(saved) | _pairs(args.set))
    model = build_model(cfg)
    load_state_dict(model, load_weights(ckpt), source=str(ckpt))
    run_name = cfg.run_name() if args.run_dir is None else args.run_dir.name
    default_out = out_dir / ("eval.json" if args.split == "val" else f"eval_{args.split}.json")
    return _evaluate_and_write(model, cfg, args, args.out or default_out, run_name, str(ckpt))


def _evaluate_and_write(model: nn.Module, cfg: RunCfg, args: argparse.Namespace, out: Path, run_name: str,
                        checkpoint: str, **extra: Any) -> int:
    from lemore.checkpoint import check_writable
    from lemore.data import build_dataset
    from lemore.data.transforms import eval_transform
    from lemore.tracking import write_results

    check_writable(out.parent, "output folder")  # before the evaluation, not after it
    if args.results_dir is not None:
        check_writable(args.results_dir, "results folder")
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu")
    model.to(device)
    # Every split through the evaluation pipeline (the training split too: whole image, no augmentation).
    ds = build_dataset(cfg.data, args.split, transform=eval_transform(cfg.data))
    metrics = evaluate(model, eval_loader(ds, cfg, device=device), cfg, device=device, class_names=list(ds.classes),
                       progress=True)
    print(f"{cfg.data.dataset} {args.split} ({len(ds)} images):")
    print(format_metrics(metrics))
    payload = dict(run_name=run_name, config=cfg.to_dict(), metrics=metrics, checkpoint=checkpoint,
                   split=args.split, **extra)
    out = write_results(out, **payload)
    log.info("wrote %s", out)
    if args.results_dir is not None:
        log.info("wrote %s", write_results(args.results_dir / f"{run_name}.json", **payload))
    return 0


def _official_main(args: argparse.Namespace) -> int:
    """``--official PATH --model NAME --dataset D``: the authors' weights of a peer under its own test recipe."""
    from lemore.config import load
    from lemore.convert import FORMATS, load_official

    if args.model not in FORMATS:
        raise ConfigValueError(f"--official needs --model, one of {sorted(FORMATS)} (got {args.model!r}): "
                               + "; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
    if not args.dataset:
        raise ConfigValueError("--official needs --dataset: the dataset the checkpoint was trained on (e.g. ade20k "
                               "for the published TopFormer-T / SeaFormer-T / SegFormer-B0 checkpoints)")
    cfg = load(args.config, dataset=args.dataset, overrides={**_pairs(args.set), "model.name": args.model})
    model = build_model(cfg)
    load_official(model, args.model, args.official, cfg.data.num_classes)
    path = Path(args.official)
    out = args.out or (path if path.is_dir() else path.parent) / f"eval_{args.model}_{cfg.data.dataset}.json"
    run_name = cfg.name or f"official_{args.model}_{cfg.data.dataset}"
    return _evaluate_and_write(model, cfg, args, out, run_name, str(path), official=True)


def _predated_keys(cfg_file: Path) -> dict[str, Any]:
    """The :data:`lemore.config.ADDED_KEYS` a saved config.yaml lacks (read with the values the run had)."""
    import yaml

    from lemore.config import ADDED_KEYS

    try:
        saved = yaml.safe_load(cfg_file.read_text())
    except (OSError, yaml.YAMLError):
        return {}  # load() reports a bad file with its own message
    if not isinstance(saved, dict):
        return {}
    saved = _flat(saved)
    return {k: v for k, v in ADDED_KEYS.items() if k not in saved}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigValueError(f"override {item!r} must look like key=value, e.g. data.root=/data/ade")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out
