"""``python -m lemore data {check,synth,convert-coco-stuff}``: verify a dataset tree, write the synthetic set.

``check`` decodes every image and label of the chosen splits (in worker processes) and reports counts per
split against the official ones, then every bad file with its problem: missing label, unreadable image or
label, label values outside the dataset's range, image/label size mismatch. It exits 1 when any file is bad.
"""

from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from lemore.config import DataCfg
from lemore.data.base import SegDataset, missing_root_message, size_mismatch_message
from lemore.data.io import DatasetError, read_image, read_label

#: Images per split in the official releases (the "val" of COCO-Stuff-10k is its test set).
OFFICIAL_COUNTS = {
    "ade20k": {"train": 20210, "val": 2000},
    "cityscapes": {"train": 2975, "val": 500},
    "pascal_context": {"train": 4996, "val": 5104},
    "pascal_context_59": {"train": 4996, "val": 5104},
    "coco_stuff": {"train": 9000, "val": 1000},
    "camvid": {"train": 367, "val": 101, "test": 233},
    "imagenet": {"train": 1_281_167, "val": 50_000},
}


@dataclass
class SplitReport:
    """What ``check`` found in one split."""

    split: str
    images: int = 0
    labels: int = 0
    checked: int = 0
    problems: list[str] = field(default_factory=list)


def check_pair(ds: SegDataset, img_path: Path, lbl_path: Path) -> list[str]:
    """The problems of one pair; each names its file, as the errors at load time do."""
    problems: list[str] = []
    image = mask = None
    try:
        image = read_image(img_path)
    except DatasetError as e:
        problems.append(str(e))
    if not lbl_path.is_file():
        problems.append(f"{lbl_path}: label file not found (for image {img_path})")
        return problems
    try:
        mask = ds.remap(read_label(lbl_path), lbl_path)
    except DatasetError as e:
        problems.append(str(e))
    if image is not None and mask is not None and image.shape[-2:] != mask.shape:
        problems.append(size_mismatch_message(img_path, lbl_path, image.shape[-2:], mask.shape))
    return problems


class _Checks(Dataset):
    """Runs :func:`check_pair` (or an image decode for ImageNet) in DataLoader workers."""

    def __init__(self, ds: Dataset, n: int) -> None:
        self.ds, self.n = ds, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> list[str]:
        if isinstance(self.ds, SegDataset):
            return check_pair(self.ds, *self.ds.files[i])
        try:
            read_image(self.ds.samples[i][0])
            return []
        except DatasetError as e:
            return [str(e)]


def _as_list(batch: list) -> list:
    return batch


def check_dataset(
    name: str,
    root: str | os.PathLike,
    splits: tuple[str, ...] = ("train", "val"),
    limit: int | None = None,
    workers: int = 0,
) -> list[SplitReport]:
    """Verify a dataset tree.

    Args:
        name: a key of ``lemore.data.DATASETS``.
        root: the dataset folder.
        splits: which splits to check.
        limit: check only the first ``limit`` pairs of each split (the counts still cover all of them).
        workers: DataLoader worker processes for decoding (0 = in this process).

    Returns:
        One report per split; a split that cannot be opened at all has that error as its only problem.

    Raises:
        ValueError: unknown dataset name.
        DatasetError: ``root`` does not exist.
    """
    from lemore.data import DATASETS

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    if not Path(root).is_dir():
        raise DatasetError(missing_root_message(name, Path(root), DATASETS[name].LAYOUT))
    reports, classes = [], {}
    for split in splits:
        report = SplitReport(split)
        reports.append(report)
        try:
            # verify=False: missing labels are reported per file below instead of failing the split
            options = {} if name == "imagenet" else {"verify": False}
            ds = DATASETS[name](root, split, transform=None, **options)
        except DatasetError as e:
            report.problems.append(str(e))
            continue
        if isinstance(ds, SegDataset):
            report.images, report.labels = len(ds.files), sum(lbl.is_file() for _, lbl in ds.files)
        else:  # ImageNet: the class folder is the label
            report.images = report.labels = len(ds.samples)
            classes[split] = set(ds.classes)
        report.checked = len(ds) if limit is None else min(limit, len(ds))
        loader = DataLoader(
            _Checks(ds, report.checked), batch_size=16, num_workers=workers, collate_fn=_as_list
        )
        for batch in loader:
            for problems in batch:
                report.problems.extend(problems)
    if len(classes) == 2 and classes["train"] != classes["val"]:
        only_train = sorted(classes["train"] - classes["val"])
        only_val = sorted(classes["val"] - classes["train"])
        reports[-1].problems.append(
            f"{Path(root) / 'val'}: class folders differ from train: only in train "
            f"{only_train[:5]} ({len(only_train)}), only in val {only_val[:5]} ({len(only_val)})"
        )
    return reports


# ------------------------------------------------------------------------------------------------------- CLI
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """``data check``, ``data synth`` and ``data convert-coco-stuff``."""
    from lemore.data import DATASETS

    sub = parser.add_subparsers(
        dest="data_command", required=True, metavar="{check,synth,convert-coco-stuff}"
    )
    check = sub.add_parser("check", help="verify a dataset tree: counts, pairing, label values, sizes")
    check.add_argument("dataset", choices=sorted(DATASETS))
    check.add_argument(
        "--root", default="", help="dataset folder (default: $LEMORE_DATA/<standard sub-folder>)"
    )
    check.add_argument("--split", nargs="+", default=None, choices=["train", "val", "test"],
                       help="default: train and val, and test where the dataset has one and it is there (CamVid)")
    check.add_argument("--limit", type=int, default=None, help="check only the first N pairs of each split")
    check.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="decoding processes")
    synth = sub.add_parser("synth", help="generate the synthetic dataset (skipped when complete)")
    synth.add_argument("--root", default="", help="default: $LEMORE_DATA/synthetic")
    synth.add_argument("--num-train", type=int, default=None)
    synth.add_argument("--num-val", type=int, default=None)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--force", action="store_true", help="regenerate even if a complete dataset is there")
    coco = sub.add_parser("convert-coco-stuff", help="COCO-Stuff-10k .mat annotations -> mmseg PNG layout")
    coco.add_argument(
        "src", help="the unpacked cocostuff-10k-v1.1 folder (images/, annotations/*.mat, imageLists/)"
    )
    coco.add_argument("--out", default=None, help="output folder (default: src)")


def default_splits(name: str, root: Path) -> tuple[str, ...]:
    """train and val, and test where the dataset's layout has one and its folder is there (CamVid's test split is
    often held out, so a tree without it is complete)."""
    from lemore.data import DATASETS

    cls = DATASETS[name]
    has_test = "test" in getattr(cls, "SPLITS", ()) and (root / cls.SPLITS["test"]).is_dir()
    return ("train", "val", "test") if has_test else ("train", "val")


def _cli_check(args: argparse.Namespace) -> int:
    from lemore.data import DATASETS

    root = DataCfg(dataset=args.dataset, root=args.root).resolved_root()
    torch.set_num_threads(1)
    splits = tuple(args.split) if args.split else default_splits(args.dataset, root)
    for split in splits:
        if split not in DATASETS[args.dataset].SPLITS:
            print(f"error: {args.dataset} has no {split!r} split; choose from {sorted(DATASETS[args.dataset].SPLITS)}")
            return 1
    reports = check_dataset(args.dataset, root, splits, limit=args.limit, workers=args.workers)
    print(f"{args.dataset} at {root}")
    official = OFFICIAL_COUNTS.get(args.dataset, {})
    for r in reports:
        expected = official.get(r.split, r.images)
        note = f" (official: {expected})" if expected != r.images else ""
        partial = f", decoded the first {r.checked}" if args.limit is not None else ""
        print(f"  {r.split}: {r.images} images{note}, {r.labels} labels{partial}, {len(r.problems)} problems")
    problems = [p for r in reports for p in r.problems]
    for p in problems:
        print(f"BAD {p}")
    print(f"{'FAILED' if problems else 'OK'}: {len(problems)} problems")
    return 1 if problems else 0


def _cli_synth(args: argparse.Namespace) -> int:
    from lemore.data import synthetic

    root = DataCfg(dataset="synthetic", root=args.root).resolved_root()
    if args.force and (root / synthetic.META_FILE).is_file():
        shutil.rmtree(root)
    if synthetic.is_complete(root):
        print(f"{root}: complete synthetic dataset already there (use --force to regenerate)")
        return 0
    counts = {k: v for k, v in (("num_train", args.num_train), ("num_val", args.num_val)) if v is not None}
    synthetic.ensure_synthetic(root, seed=args.seed, **counts)
    print(f"{root}: wrote the synthetic dataset")
    return 0


def cli_main(args: argparse.Namespace) -> int:
    """Run ``python -m lemore data ...``; returns the exit status."""
    try:
        if args.data_command == "check":
            return _cli_check(args)
        if args.data_command == "synth":
            return _cli_synth(args)
        from lemore.data.coco_stuff import convert_coco_stuff10k

        counts = convert_coco_stuff10k(args.src, args.out)
        print(f"converted {counts} into {args.out or args.src}")
        return 0
    except DatasetError as e:
        print(f"error: {e}")
        return 1
