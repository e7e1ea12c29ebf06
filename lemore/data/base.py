"""SegDataset: a list of (image, label) files in a dataset's standard layout, decoded to tensors.

The label contract is MMSegmentation's: after remapping, a mask holds class indices ``0..num_classes-1`` and
``ignore_index = 255`` for pixels that count for neither loss nor metric. Each dataset remaps the values
stored in its label files with a lookup table (``label_lut``): ``reduce_zero_label`` (ADE20K, COCO-Stuff-10k,
PASCAL Context 59) maps 0 to 255 and every other value v to v - 1, exactly as mmseg's ``LoadAnnotations``. A
stored value the table does not allow is an error that names the file, never a silent wrap-around.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset, default_collate
from torchvision import tv_tensors

from lemore.config import DATA_ROOT_ENV, DEFAULT_SUBDIRS
from lemore.data.io import DatasetError, read_image, read_label

IGNORE_INDEX = 255
Transform = Callable[[tv_tensors.Image, tv_tensors.Mask], tuple[Any, Any]]


def identity_lut(num_classes: int) -> torch.Tensor:
    """Stored value v -> v for v < num_classes, 255 -> 255, anything else invalid (-1). int16 (256,)."""
    lut = torch.full((256,), -1, dtype=torch.int16)
    lut[:num_classes] = torch.arange(num_classes, dtype=torch.int16)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


def reduce_zero_label_lut(num_classes: int) -> torch.Tensor:
    """mmseg ``LoadAnnotations(reduce_zero_label=True)``: 0 -> 255, v -> v - 1 (v <= num_classes), 255 kept.

    mmseg computes ``seg[seg == 0] = 255; seg = seg - 1; seg[seg == 254] = 255``, so a stored 255 stays
    ignored. Values above ``num_classes`` are invalid (-1) rather than silently becoming classes.
    """
    lut = torch.full((256,), -1, dtype=torch.int16)
    lut[0] = IGNORE_INDEX
    lut[1 : num_classes + 1] = torch.arange(num_classes, dtype=torch.int16)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


def _ranges(values: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7' (for error messages); ``values`` sorted and non-empty."""
    spans = [[values[0], values[0]]]
    for v in values[1:]:
        if v == spans[-1][1] + 1:
            spans[-1][1] = v
        else:
            spans.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def missing_root_message(name: str, root: Path, layout: str) -> str:
    """The error for a dataset folder that does not exist: the path, where it came from, and the layout."""
    env = os.environ.get(DATA_ROOT_ENV)
    return (
        f"{name} root {str(root)!r} does not exist. Point data.root (or --root) at the dataset folder, or "
        f"set ${DATA_ROOT_ENV} (now {'unset' if env is None else repr(env)}) to the folder that holds "
        f"{DEFAULT_SUBDIRS.get(name, name)}/. Expected layout:\n{layout}"
    )


def size_mismatch_message(
    img_path: Path, lbl_path: Path, img_hw: Sequence[int], lbl_hw: Sequence[int]
) -> str:
    return (
        f"{lbl_path}: label size {tuple(lbl_hw)} (H, W) does not match image {img_path} size {tuple(img_hw)}"
    )


class SegDataset(Dataset):
    """A semantic segmentation dataset in its standard on-disk layout.

    Subclasses set the class attributes and implement :meth:`list_files`; everything else (decoding, label
    remapping, validation, transforms) lives here so every dataset behaves the same.

    Args:
        root: the dataset folder (e.g. ``.../ADEChallengeData2016``).
        split: "train" or "val".
        transform: ``transform(image, mask) -> (image, mask)`` on ``tv_tensors`` (a torchvision v2 pipeline,
            see ``lemore.data.transforms``); None returns the decoded uint8 image and int64 mask.
        verify: check at construction that every image and label file exists (a ``stat`` each); the
            contents are checked when a sample is loaded, and all at once by ``python -m lemore data check``.

    Raises:
        DatasetError: unknown split, missing root or split folder, no images, or missing files.
    """

    name: ClassVar[str]
    CLASSES: ClassVar[tuple[str, ...]]
    PALETTE: ClassVar[list[tuple[int, int, int]]]
    SPLITS: ClassVar[dict[str, str]]  # our split name -> the dataset's own split name
    LAYOUT: ClassVar[str]  # the expected tree, shown when the root is missing
    ignore_index: ClassVar[int] = IGNORE_INDEX

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transform: Transform | None = None,
        *,
        verify: bool = True,
    ) -> None:
        if split not in self.SPLITS:
            raise DatasetError(f"unknown split {split!r} for {self.name}; choose from {sorted(self.SPLITS)}")
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self._cached: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if not self.root.is_dir():
            raise DatasetError(missing_root_message(self.name, self.root, self.LAYOUT))
        self.files: list[tuple[Path, Path]] = self.list_files()
        if not self.files:
            raise DatasetError(
                f"{self.name} {split}: no images found under {self.root}; expected layout:\n{self.LAYOUT}"
            )
        if verify:
            missing = [f"{img} (image)" for img, _ in self.files if not img.is_file()]
            missing += [f"{lbl} (label of {img})" for img, lbl in self.files if not lbl.is_file()]
            if missing:
                shown = "\n".join(f"  {m}" for m in missing[:5])
                more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
                raise DatasetError(
                    f"{self.name} {split}: {len(missing)} files are missing:\n{shown}{more}"
                    f"\nRun `python -m lemore data check {self.name} --root {self.root}` for a full report."
                )

    # ----------------------------------------------------------------------------------------- per dataset
    def list_files(self) -> list[tuple[Path, Path]]:
        """(image, label) paths of ``self.split``, sorted; label paths need not exist (verified later)."""
        raise NotImplementedError

    def label_lut(self, label_path: Path) -> torch.Tensor:
        """int16 (256,) table from stored label value to class index / 255; -1 marks invalid values."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------------- common
    @property
    def classes(self) -> tuple[str, ...]:
        return self.CLASSES

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return self.PALETTE

    @property
    def num_classes(self) -> int:
        return len(self.CLASSES)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"

    def _split_dir(self, *parts: str) -> Path:
        """``root/parts`` as a folder, or a DatasetError naming it and the layout."""
        d = self.root.joinpath(*parts)
        if not d.is_dir():
            raise DatasetError(
                f"{self.name} {self.split}: folder {d} does not exist; expected layout:\n{self.LAYOUT}"
            )
        return d

    def remap(self, raw: torch.Tensor, label_path: Path) -> torch.Tensor:
        """Stored label values (H, W) int64 -> class indices with 255 = ignore, uint8 (H, W).

        Raises:
            DatasetError: a stored value the dataset does not define (the message lists them and the
                valid ones).
        """
        lut = self.label_lut(label_path)
        too_big = raw >= lut.numel()  # 16-bit label files can hold anything
        mapped = lut[raw.clamp(max=lut.numel() - 1)]  # (H, W) int16
        bad = too_big | (mapped < 0)
        if bad.any():
            values = torch.unique(raw[bad]).tolist()
            valid = torch.nonzero(lut >= 0).flatten().tolist()
            raise DatasetError(
                f"{label_path}: label values out of range for {self.name}: {_ranges(values)} "
                f"(valid stored values: {_ranges(valid)})"
            )
        return mapped.to(torch.uint8)

    def cache_in_memory(self, max_bytes: int) -> bool:
        """Decode every pair now and keep them in memory if the split fits in ``max_bytes``; True if it did.

        The size is estimated from the first pair (uint8 image and mask). Decoding a PNG or JPEG costs more than the
        whole augmentation of a small crop, so a split that fits (the synthetic set: 16 MB; CamVid's train split:
        250 MB) is decoded once instead of once per epoch. Built in the main process, the cache is shared with
        forked DataLoader workers (the tensors' memory is never written, so it is never copied). Samples are
        exactly the decoded files: caching changes no result. A bad file fails here, with its name.
        """
        if self._cached is not None:
            return True
        if max_bytes <= 0:
            return False
        first = self._load(0)
        per_pair = sum(t.numel() * t.element_size() for t in first)
        if per_pair * len(self) > max_bytes:
            return False
        self._cached = [first] + [self._load(i) for i in range(1, len(self))]
        return True

    @property
    def cached(self) -> bool:
        return self._cached is not None

    def _load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 image (3, H, W) and uint8 mask (H, W) after remapping, with sizes checked. The transforms never
        write into their input, so a cached pair is returned as it is."""
        if self._cached is not None:
            return self._cached[i]
        img_path, lbl_path = self.files[i]
        image = read_image(img_path)
        if not lbl_path.is_file():
            raise DatasetError(f"{lbl_path}: label file not found (for image {img_path})")
        mask = self.remap(read_label(lbl_path), lbl_path)
        if image.shape[-2:] != mask.shape:
            raise DatasetError(size_mismatch_message(img_path, lbl_path, image.shape[-2:], mask.shape))
        return image, mask

    def load_raw(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The i-th pair for figures: uint8 image (3, H, W) and int64 mask (H, W) after label remapping."""
        image, mask = self._load(i)
        return image, mask.to(torch.int64)

    @property
    def staged(self) -> bool:
        """Whether the pipeline has a per-batch stage (:meth:`sample` then :meth:`collate`; the training pipeline,
        :class:`lemore.data.transforms.SegTrainTransform`)."""
        return hasattr(self.transform, "sample") and hasattr(self.transform, "collate")

    def sample(self, i: int, generator: torch.Generator | None = None) -> Any:
        """The i-th sample before its batch stage, for a loader that collates with :meth:`collate`: what
        ``transform.sample`` returns, its random draws from ``generator`` (None: torch's global generator), where the
        pipeline is :attr:`staged`; else ``self[i]`` (which draws from the global generators)."""
        if not self.staged:
            return self[i]
        image, mask = self._load(i)
        return self.transform.sample(image, mask, generator)

    def collate(self, samples: list[Any]) -> Any:
        """A batch of :meth:`sample` outputs: the pipeline's batch stage (``transform.collate``) or torch's
        ``default_collate``. ``collate([ds.sample(i) for i in ids])`` equals stacking ``ds[i]`` for the same draws."""
        if self.staged:
            return self.transform.collate(samples)
        return default_collate(samples)

    def __getitem__(self, i: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        image, mask = self._load(i)
        img, msk = tv_tensors.Image(image), tv_tensors.Mask(mask)
        if self.transform is not None:
            img, msk = self.transform(img, msk)
        return img, msk.to(torch.int64)  # the transforms keep the mask uint8 (cheaper); the contract is int64
