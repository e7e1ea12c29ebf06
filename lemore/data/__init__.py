"""Datasets in their standard layouts, the mmseg-style pipelines, and the data loader.

    ds = build_dataset(cfg.data, "train")  # train pipeline; "val" -> eval pipeline
    image, mask = ds[0]  # float32 (3, H, W) normalised, int64 (H, W) with 255 = ignore
    loader = build_loader(ds, 16, train=True, num_workers=cfg.data.num_workers)

Where each dataset lives: ``DataCfg.resolved_root()`` (``data.root``, else ``$LEMORE_DATA/<standard
sub-folder>``). ``python -m lemore data check DATASET`` verifies a tree; ``python -m lemore data synth``
writes the synthetic set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from lemore.config import DataCfg
from lemore.data.ade20k import ADE20K
from lemore.data.base import IGNORE_INDEX, SegDataset
from lemore.data.camvid import CamVid
from lemore.data.cityscapes import Cityscapes
from lemore.data.coco_stuff import COCOStuff10k
from lemore.data.imagenet import ImageNet
from lemore.data.io import DatasetError
from lemore.data.pascal_context import PascalContext, PascalContext59
from lemore.data.synthetic import Synthetic, ensure_synthetic
from lemore.data.transforms import (
    eval_transform,
    imagenet_eval_transform,
    imagenet_train_transform,
    train_transform,
)

DATASETS: dict[str, type[SegDataset | ImageNet]] = {
    "ade20k": ADE20K,
    "cityscapes": Cityscapes,
    "pascal_context": PascalContext,
    "pascal_context_59": PascalContext59,
    "coco_stuff": COCOStuff10k,
    "camvid": CamVid,
    "imagenet": ImageNet,
    "synthetic": Synthetic,
}
SPLITS = ("train", "val", "test")  # "test" where the dataset has one (CamVid)


class _FromCfg:
    """Default of ``build_dataset(transform=...)``: the pipeline that ``cfg`` and the split call for."""

    def __repr__(self) -> str:
        return "<pipeline from cfg>"


FROM_CFG: Any = _FromCfg()


def build_dataset(cfg: DataCfg, split: str, *, transform: Callable[..., Any] | None = FROM_CFG,
                  cache: bool = False) -> Dataset:
    """The dataset named by ``cfg.dataset`` at ``cfg.resolved_root()``, with its pipeline.

    Args:
        cfg: the run's data config (dataset, root, num_classes, crop_size, scale, ratio_range, cat_max_ratio,
            photometric, eval_mode).
        split: "train" (training pipeline), "val" or "test" (evaluation pipeline; "test" only for datasets whose
            layout has a test split with labels, e.g. CamVid).
        transform: overrides the pipeline; None returns raw samples (uint8 image, int64 mask; for ImageNet the
            uint8 image and the class index).
        cache: decode the whole split now and hold it in memory if it fits in ``cfg.cache_gb`` GiB
            (:meth:`SegDataset.cache_in_memory`; what training and its evaluations read again and again).

    Returns:
        A :class:`SegDataset` yielding (float32 image (3, H, W), int64 mask (H, W)), or for "imagenet" an
        :class:`ImageNet` yielding (float32 image (3, 224, 224), int class index).

    Raises:
        ValueError: unknown dataset (lists ``DATASETS``).
        DatasetError: unknown split, missing root (names the path, ``$LEMORE_DATA`` and the layout), bad
            files, or ``cfg.num_classes`` different from the dataset's class count.
    """
    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose from {sorted(DATASETS)}")
    root = cfg.resolved_root()
    if cfg.dataset == "synthetic":
        ensure_synthetic(root)
    cls = DATASETS[cfg.dataset]
    if split not in getattr(cls, "SPLITS", {"train": "", "val": ""}):
        raise DatasetError(f"unknown split {split!r} for {cfg.dataset}; choose from {sorted(cls.SPLITS)}")
    train = split == "train"
    if transform is FROM_CFG:
        if cfg.dataset == "imagenet":
            transform = imagenet_train_transform() if train else imagenet_eval_transform()
        else:
            transform = train_transform(cfg) if train else eval_transform(cfg)
    ds = cls(root, split, transform=transform)
    if ds.num_classes != cfg.num_classes:
        raise DatasetError(
            f"data.num_classes={cfg.num_classes} but {cfg.dataset} at {root} has {ds.num_classes} "
            f"classes; set data.num_classes={ds.num_classes}"
        )
    if cache and isinstance(ds, SegDataset):
        ds.cache_in_memory(int(cfg.cache_gb * 2**30))
    return ds


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    num_workers: int,
    distributed: bool = False,
    seed: int = 0,
    drop_last: bool | None = None,
) -> DataLoader:
    """A DataLoader with the usual settings for training or evaluation.

    Args:
        dataset: from :func:`build_dataset`.
        batch_size: per process. Segmentation evaluation uses 1: images differ in size.
        train: shuffle (seeded) and, by default, drop the last incomplete batch.
        num_workers: worker processes; each is seeded by the DataLoader from ``seed`` (torch RNG), and workers
            persist across epochs.
        distributed: use a ``DistributedSampler`` over the initialised process group; the caller must call
            ``loader.sampler.set_epoch(epoch)`` each epoch. For evaluation it pads the last round with
            repeated samples (so that every rank gets as many), which the evaluator must drop.
        seed: seeds the shuffling and the workers' RNGs.
        drop_last: default ``train``.
    """
    drop_last = train if drop_last is None else drop_last
    generator = torch.Generator().manual_seed(seed)
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=drop_last)
    elif train:
        sampler = RandomSampler(dataset, generator=generator)
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        generator=generator,
    )


__all__ = ["DATASETS", "IGNORE_INDEX", "DatasetError", "SegDataset", "build_dataset", "build_loader"]
