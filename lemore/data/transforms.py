"""Paired image + mask pipelines on torchvision.transforms.v2, mirroring MMSegmentation's SegFormer recipes.

Training (mmseg ``train_pipeline`` of every SegFormer config, then its data preprocessor)::

    RandomResize(scale, ratio_range=(0.5, 2.0), keep_ratio=True) -> KeepRatioResize(scale, ratio_range)
    RandomCrop(crop_size, cat_max_ratio=0.75)                     -> CatMaxRatioCrop(crop_size, 0.75)
    RandomFlip(prob=0.5)                                          -> v2.RandomHorizontalFlip(0.5)
    PhotoMetricDistortion()                                       -> PhotoMetricDistortion()
    SegDataPreProcessor(mean, std, pad_val=0, seg_pad_val=255)    -> v2.ToDtype, v2.Normalize, PadTo(crop)

Evaluation (mmseg ``test_pipeline``): ``Resize(scale, keep_ratio=True)`` of the image only, the label stays at
its original size (mmseg loads it after the resize; the evaluator upsamples the logits to the label). For
sliding-window evaluation (Cityscapes) the image is not resized at all. ``data.eval_size_divisor`` (TopFormer's and
SeaFormer's ``ResizeToMultiple(32)``, SegFormer's ``AlignedResize(size_divisor=32)`` on ADE20K) rounds the resized
height and width up to a multiple, in the same single resize (as SegFormer; mmseg's ResizeToMultiple resizes twice).

Images stay uint8 until normalisation (as in mmseg, where every step before the preprocessor works on uint8)
and masks stay uint8 (0..num_classes-1, 255 = ignore) until the dataset returns them as int64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from lemore.config import DataCfg
from lemore.data.base import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # = mmseg's mean (123.675, 116.28, 103.53) / 255
IMAGENET_STD = (0.229, 0.224, 0.225)  # = mmseg's std (58.395, 57.12, 57.375) / 255


def _size(flat_inputs: list[Any]) -> tuple[int, int]:
    """(H, W) of the image among the inputs (or of the first input when none is a ``tv_tensors.Image``)."""
    for x in flat_inputs:
        if isinstance(x, tv_tensors.Image):
            h, w = F.get_size(x)
            return h, w
    h, w = F.get_size(flat_inputs[0])
    return h, w


def rescale_size(h: int, w: int, scale: Sequence[int]) -> tuple[int, int]:
    """mmcv ``rescale_size``: the largest (H, W) with the aspect ratio of (h, w), long side <= max(scale) and
    short side <= min(scale), rounded as ``int(x * factor + 0.5)``."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


class KeepRatioResize(v2.Transform):
    """mmseg ``RandomResize(scale, ratio_range, keep_ratio=True)`` / 0.x ``Resize(img_scale, ratio_range)``.

    With ``ratio_range``, a ratio r ~ U(ratio_range) gives the target scale ``(int(long * r), int(short *
    r))``; the input is then resized keeping its aspect ratio to fit that scale (:func:`rescale_size`).
    Without it, the scale is used as is (mmseg's test-time ``Resize(scale, keep_ratio=True)``). Images use
    bilinear interpolation without antialiasing (mmcv's cv2 ``INTER_LINEAR``). Masks use nearest-exact, where
    mmcv uses cv2 ``INTER_NEAREST``: that samples source pixel floor(x * scale), half a source pixel away from
    the pixel-centre grid of ``INTER_LINEAR`` when downscaling, so mmseg's labels drift up to half a pixel off
    their images; nearest-exact samples at the pixel centres and keeps them aligned (see the alignment test).

    Args:
        scale: mmseg's (long, short) ``img_scale``, e.g. (2048, 512).
        ratio_range: (min, max) of the random ratio; None for a fixed scale.
        resize_masks: False leaves masks at their size (evaluation: the metric is computed at label size).
        size_divisor: > 0 rounds the target height and width up to a multiple of it (evaluation only).
    """

    def __init__(
        self, scale: Sequence[int], ratio_range: Sequence[float] | None = None, *, resize_masks: bool = True,
        size_divisor: int = 0,
    ) -> None:
        super().__init__()
        self.scale = (int(scale[0]), int(scale[1]))
        self.ratio_range = None if ratio_range is None else (float(ratio_range[0]), float(ratio_range[1]))
        self.resize_masks = resize_masks
        self.size_divisor = int(size_divisor)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _size(flat_inputs)
        scale = self.scale
        if self.ratio_range is not None:
            lo, hi = self.ratio_range
            r = lo + (hi - lo) * torch.rand(()).item()
            scale = (int(scale[0] * r), int(scale[1] * r))
        size = rescale_size(h, w, scale)
        if self.size_divisor > 0:
            size = tuple(-(-n // self.size_divisor) * self.size_divisor for n in size)
        return {"size": list(size)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            if not self.resize_masks:
                return inpt
            return self._call_kernel(
                F.resize, inpt, size=params["size"], interpolation=v2.InterpolationMode.NEAREST_EXACT
            )
        return self._call_kernel(
            F.resize, inpt, size=params["size"], interpolation=v2.InterpolationMode.BILINEAR, antialias=False
        )


class CatMaxRatioCrop(v2.Transform):
    """mmseg ``RandomCrop(crop_size, cat_max_ratio)``: a random crop in which no class covers too much.

    Up to 10 crops are drawn until one holds at least two classes (ignore excluded) and its largest class
    covers less than ``cat_max_ratio`` of the labelled pixels; after 10 failures the 11th draw is used, as in
    mmseg. An input smaller than the crop gives a smaller crop (``PadTo`` pads later, after normalisation, as
    mmseg does).

    Args:
        size: crop (H, W).
        cat_max_ratio: 1.0 disables the class check (a plain random crop).
        ignore_index: mask value left out of the class counts.
        max_tries: redraws before giving up (mmseg: 10).
    """

    def __init__(
        self,
        size: Sequence[int],
        cat_max_ratio: float = 0.75,
        ignore_index: int = IGNORE_INDEX,
        max_tries: int = 10,
    ) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index
        self.max_tries = max_tries

    def _draw(self, h: int, w: int) -> dict[str, int]:
        ch, cw = min(self.size[0], h), min(self.size[1], w)
        top = int(torch.randint(0, h - ch + 1, ()).item())
        left = int(torch.randint(0, w - cw + 1, ()).item())
        return {"top": top, "left": left, "height": ch, "width": cw}

    def _balanced(self, mask: torch.Tensor, box: dict[str, int]) -> bool:
        crop = mask[..., box["top"] : box["top"] + box["height"], box["left"] : box["left"] + box["width"]]
        counts = torch.bincount(crop.flatten().to(torch.int64), minlength=self.ignore_index + 1)
        counts[self.ignore_index] = 0
        counts = counts[counts > 0]
        return len(counts) > 1 and (counts.max() / counts.sum()).item() < self.cat_max_ratio

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _size(flat_inputs)
        box = self._draw(h, w)
        mask = next((x for x in flat_inputs if isinstance(x, tv_tensors.Mask)), None)
        if mask is not None and self.cat_max_ratio < 1.0:
            for _ in range(self.max_tries):
                if self._balanced(mask, box):
                    break
                box = self._draw(h, w)
        return box

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


class PhotoMetricDistortion(v2.Transform):
    """mmseg ``PhotoMetricDistortion`` on uint8 images; masks pass through.

    Each step happens with probability 0.5: brightness (add U(-32, 32)), contrast (multiply by U(0.5, 1.5)),
    saturation (HSV S times U(0.5, 1.5)), hue (HSV H shifted by an integer in [-18, 18) of OpenCV's 180
    steps); contrast comes either first or last (coin flip). Every step clips to [0, 255] and returns uint8,
    as mmseg. ``v2.RandomPhotometricDistort`` is not used: it multiplies brightness, blends contrast with the
    mean and permutes channels, none of which mmseg does. Saturation and hue change HSV S and H in closed
    form, without OpenCV's 8-bit HSV quantisation (H in steps of 2 degrees) that mmseg's round trip adds.
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ) -> None:
        super().__init__()
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    @staticmethod
    def _coin() -> bool:
        return bool(torch.randint(0, 2, ()).item())

    @staticmethod
    def _uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * torch.rand(()).item()

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {
            "brightness": self._uniform(-self.brightness_delta, self.brightness_delta)
            if self._coin()
            else None,
            "contrast_first": self._coin(),
            "contrast": self._uniform(*self.contrast_range) if self._coin() else None,
            "saturation": self._uniform(*self.saturation_range) if self._coin() else None,
            "hue": int(torch.randint(-self.hue_delta, self.hue_delta, ()).item()) if self._coin() else None,
        }

    @staticmethod
    def _convert(img: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
        # mmseg's convert(): img * alpha + beta, np.clip to [0, 255], astype(uint8) (truncation)
        return (img.float() * alpha + beta).clamp_(0, 255).to(torch.uint8)

    @staticmethod
    def _hue(img: torch.Tensor, shift: float) -> torch.Tensor:
        """Rotate HSV hue by ``shift`` turns, keeping S and V (hexcone formulas, rounded to uint8; about twice
        as fast as ``F.adjust_hue``, which builds the whole HSV image and back)."""
        x = img.float()  # (3, H, W)
        r, g, b = x.unbind(-3)
        v, lo = x.amax(dim=-3), x.amin(dim=-3)  # (H, W)
        chroma = v - lo
        c = chroma.clamp(min=1e-6)
        h = torch.where(v == r, ((g - b) / c) % 6, torch.where(v == g, (b - r) / c + 2, (r - g) / c + 4))
        h = (h + 6 * shift) % 6  # hue in sixths of a turn
        out = []
        for n in (5, 3, 1):  # R, G, B: V - C * clamp(min(k, 4 - k), 0, 1) with k = (n + H) mod 6
            k = (n + h) % 6
            out.append(v - chroma * torch.minimum(k, 4 - k).clamp_(0, 1))
        return torch.stack(out, dim=-3).round_().clamp_(0, 255).to(torch.uint8)

    @staticmethod
    def _saturation(img: torch.Tensor, alpha: float) -> torch.Tensor:
        x = img.float()  # (3, H, W)
        v = x.amax(dim=-3, keepdim=True)  # (1, H, W)
        chroma = v - x.amin(dim=-3, keepdim=True)
        k = torch.where(chroma > 0, torch.clamp(v / chroma.clamp(min=1e-6), max=alpha), torch.ones_like(v))
        return (v - (v - x) * k).clamp_(0, 255).to(torch.uint8)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        if inpt.dtype != torch.uint8:
            raise TypeError(f"PhotoMetricDistortion expects a uint8 image (as mmseg), got {inpt.dtype}")
        img = inpt.as_subclass(torch.Tensor)
        if params["brightness"] is not None:
            img = self._convert(img, beta=params["brightness"])
        if params["contrast_first"] and params["contrast"] is not None:
            img = self._convert(img, alpha=params["contrast"])
        if params["saturation"] is not None:
            img = self._saturation(img, params["saturation"])
        if params["hue"] is not None:
            img = self._hue(img, params["hue"] / 180.0)
        if not params["contrast_first"] and params["contrast"] is not None:
            img = self._convert(img, alpha=params["contrast"])
        return tv_tensors.wrap(img, like=inpt)


class PadTo(v2.Transform):
    """Pad bottom and right up to ``size`` (mmseg ``Pad(size)`` / the data preprocessor's ``stack_batch``).

    Args:
        size: target (H, W); larger inputs are left as they are.
        image_fill: image padding value (0, applied after normalisation as mmseg's ``pad_val``).
        mask_fill: mask padding value (255 = ignore, mmseg's ``seg_pad_val``).
    """

    def __init__(self, size: Sequence[int], image_fill: float = 0.0, mask_fill: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.image_fill = image_fill
        self.mask_fill = mask_fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _size(flat_inputs)
        right, bottom = max(self.size[1] - w, 0), max(self.size[0] - h, 0)
        return {"padding": [0, 0, right, bottom]}  # left, top, right, bottom

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        fill = self.mask_fill if isinstance(inpt, tv_tensors.Mask) else self.image_fill
        return self._call_kernel(F.pad, inpt, padding=params["padding"], fill=fill)


def _normalize() -> list[v2.Transform]:
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]


def train_transform(cfg: DataCfg) -> v2.Compose:
    """The SegFormer / mmseg training pipeline for ``cfg`` (scale, ratio_range, crop_size, cat_max_ratio)."""
    return v2.Compose(
        [
            KeepRatioResize(cfg.scale, cfg.ratio_range),
            CatMaxRatioCrop(cfg.crop_size, cfg.cat_max_ratio),
            v2.RandomHorizontalFlip(0.5),
            PhotoMetricDistortion(),
            *_normalize(),
            PadTo(cfg.crop_size),
        ]
    )


def eval_transform(cfg: DataCfg) -> v2.Compose:
    """Single-scale evaluation: "whole" resizes the image (only) to ``cfg.scale``; "slide" keeps it as is."""
    if cfg.eval_mode not in ("whole", "slide"):
        raise ValueError(f"data.eval_mode={cfg.eval_mode!r}; choose from ['slide', 'whole']")
    resize = ([KeepRatioResize(cfg.scale, resize_masks=False, size_divisor=cfg.eval_size_divisor)]
              if cfg.eval_mode == "whole" else [])
    return v2.Compose([*resize, *_normalize()])


def imagenet_train_transform(size: int = 224) -> v2.Compose:
    """Standard ImageNet classification training: RandomResizedCrop, horizontal flip, normalisation."""
    return v2.Compose(
        [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(0.5), *_normalize()]
    )


def imagenet_eval_transform(size: int = 224, resize: int = 256) -> v2.Compose:
    """Standard ImageNet evaluation: resize the short side to 256, centre crop 224, normalisation."""
    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(size), *_normalize()])


def denormalize(img: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation for figures: float (..., 3, H, W) -> uint8 (..., 3, H, W)."""
    mean = torch.tensor(IMAGENET_MEAN, device=img.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=img.device).view(3, 1, 1)
    x = img.as_subclass(torch.Tensor).float() * std + mean
    return (x * 255).round_().clamp_(0, 255).to(torch.uint8)
