"""The mmseg-style pipelines: image/mask alignment, resize / crop / pad semantics, photometric distortion."""

from __future__ import annotations

import colorsys
from dataclasses import replace

import numpy as np
import pytest
import torch
from fixtures import COLOURS, block_label, image_for, min_distance_to_segments
from torchvision import tv_tensors
from torchvision.transforms import v2

from lemore.config import DEFAULT_SUBDIRS, recipe
from lemore.data import build_dataset
from lemore.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CatMaxRatioCrop,
    KeepRatioResize,
    PadTo,
    PhotoMetricDistortion,
    denormalize,
    eval_transform,
    imagenet_eval_transform,
    imagenet_train_transform,
    mmseg_train_transform,
    rescale_size,
    train_transform,
)


# ------------------------------------------------------------------------------------------------- alignment
def alignment_score(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of "pure" labelled pixels whose colour is that of their own class.

    Each class's colour is its most frequent colour in the (transformed) image; a pixel is pure when its
    colour is within 2 of some class colour (bilinear blends at boundaries are not: the fixture colours are in
    general position), and it agrees when that class is its mask label. The photometric distortion is the same
    function of colour at every pixel, so it keeps equal colours equal and does not disturb the score.
    """
    img = denormalize(image).reshape(3, -1).T.long()  # (N, 3)
    m = mask.reshape(-1).long()
    valid = m != 255
    classes = torch.unique(m[valid])
    modes = []
    for c in classes:
        cols, counts = torch.unique(img[m == c], dim=0, return_counts=True)
        modes.append(cols[counts.argmax()])
    dist = (img[valid][:, None, :] - torch.stack(modes)[None]).abs().amax(-1)  # (N, K), L-inf
    dmin, nearest = dist.min(1)
    pure = dmin <= 2
    assert pure.float().mean() > 0.5, "too few pure pixels for a meaningful score"
    return (classes[nearest][pure] == m[valid][pure]).float().mean().item()


def colour_coded_sample(seed: int, h: int = 96, w: int = 128) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    label = block_label(np.random.default_rng(seed), h, w, [0, 1, 2, 3, 4, 5], cell=16)
    return tv_tensors.Image(torch.from_numpy(image_for(label)).permute(2, 0, 1)), tv_tensors.Mask(
        torch.from_numpy(label)
    )


ALIGN_CFG = replace(recipe("ade20k").data, crop_size=(64, 64), scale=(128, 96))  # ratio 0.5-2.0 as ADE20K


def test_fixture_colours_in_general_position():
    assert min_distance_to_segments(COLOURS) >= 16


def test_train_pipeline_keeps_image_and_mask_aligned():
    t = train_transform(ALIGN_CFG)
    for seed in range(24):
        torch.manual_seed(seed)
        image, mask = t(*colour_coded_sample(seed))
        assert image.shape == (3, 64, 64) and mask.shape == (64, 64)
        assert alignment_score(image, mask) == 1.0, f"seed {seed}"


def test_alignment_check_catches_shifted_and_flipped_masks():
    t = train_transform(ALIGN_CFG)
    for seed in range(12):
        torch.manual_seed(seed)
        image, mask = t(*colour_coded_sample(seed))
        assert alignment_score(image, torch.roll(mask, 1, dims=-1)) < 0.999, f"1-px shift missed, seed {seed}"
        assert alignment_score(image, torch.roll(mask, 1, dims=-2)) < 0.999, f"1-px shift missed, seed {seed}"
        assert alignment_score(image, mask.flip(-1)) < 0.95, f"flip missed, seed {seed}"


class _FlipImageOnly(v2.Transform):
    """A deliberately broken transform: flips the image but not the mask."""

    def transform(self, inpt, params):
        return inpt if isinstance(inpt, tv_tensors.Mask) else v2.functional.horizontal_flip(inpt)


def test_alignment_check_catches_a_broken_pipeline():
    broken = v2.Compose([*mmseg_train_transform(ALIGN_CFG).transforms[:-1], _FlipImageOnly(), PadTo((64, 64))])
    scores = []
    for seed in range(10):
        torch.manual_seed(seed)
        scores.append(alignment_score(*broken(*colour_coded_sample(seed))))
    assert max(scores) < 0.95


def test_dataset_samples_stay_aligned(data_base):
    # Cityscapes fixture: PNG images (lossless), one of them RGBA, colour-coded by their labelTrainIds.
    cfg = replace(
        recipe("cityscapes").data,
        root=str(data_base / DEFAULT_SUBDIRS["cityscapes"]),
        crop_size=(32, 40),
        scale=(96, 48),
    )
    ds = build_dataset(cfg, "train")
    for seed in range(10):
        torch.manual_seed(seed)
        for i in range(len(ds)):
            image, mask = ds[i]
            assert alignment_score(image, mask) == 1.0


# -------------------------------------------------------------------------------------------------- resizing
@pytest.mark.parametrize(
    ("hw", "scale", "expected"),
    [
        ((512, 683), (2048, 512), (512, 683)),  # ADE20K: the short side binds
        ((1024, 2048), (2048, 1024), (1024, 2048)),  # Cityscapes at ratio 1
        ((375, 500), (520, 520), (390, 520)),  # PASCAL Context: the long side binds, factor 1.04
        ((512, 683), (1024, 256), (256, 342)),  # 683 * 0.5 = 341.5 rounds half up, as mmcv's int(x + 0.5)
    ],
)
def test_rescale_size_is_mmcv(hw, scale, expected):
    assert rescale_size(*hw, scale) == expected


def test_random_resize_ratio_range():
    t = KeepRatioResize((512, 128), (0.5, 2.0))  # ADE20K's (2048, 512) / 4
    image = tv_tensors.Image(torch.zeros(3, 128, 171, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.zeros(128, 171, dtype=torch.uint8))
    shorts = []
    for seed in range(200):
        torch.manual_seed(seed)
        out_image, out_mask = t(image, mask)
        assert out_image.shape[-2:] == out_mask.shape
        h, w = out_mask.shape
        assert (h, w) == rescale_size(128, 171, (int(512 * h / 128), h)) and abs(w / h - 171 / 128) < 0.02
        shorts.append(h)
    assert 64 <= min(shorts) < 70 and 250 < max(shorts) <= 256  # ratio 0.5 .. 2.0 of the 128 short side
    fixed = KeepRatioResize((512, 128), (1.0, 1.0))
    assert fixed(image).shape[-2:] == rescale_size(128, 171, (512, 128))


def test_eval_pipeline_resizes_image_only():
    cfg = replace(recipe("ade20k").data, scale=(128, 64))
    image, mask = (
        tv_tensors.Image(torch.zeros(3, 96, 130, dtype=torch.uint8)),
        tv_tensors.Mask(torch.zeros(96, 130)),
    )
    out_image, out_mask = eval_transform(cfg)(image, mask)
    # rescale_size(96, 130, (128, 64)) = (64, 87)
    assert out_image.shape == (3, 64, 87) and out_image.dtype == torch.float32
    assert out_mask.shape == (96, 130)
    slide = eval_transform(replace(cfg, eval_mode="slide"))(image, mask)
    assert slide[0].shape == (3, 96, 130)
    with pytest.raises(ValueError, match=r"eval_mode='tiles'.*\['slide', 'whole'\]"):
        eval_transform(replace(cfg, eval_mode="tiles"))


def test_eval_size_divisor_rounds_the_resized_image_up():
    """TopFormer / SeaFormer ResizeToMultiple(32), SegFormer AlignedResize(size_divisor=32): (64, 87) -> (64, 96)."""
    cfg = replace(recipe("ade20k").data, scale=(128, 64), eval_size_divisor=32)
    image, mask = tv_tensors.Image(torch.zeros(3, 96, 130, dtype=torch.uint8)), tv_tensors.Mask(torch.zeros(96, 130))
    out_image, out_mask = eval_transform(cfg)(image, mask)
    assert out_image.shape == (3, 64, 96) and out_mask.shape == (96, 130)
    assert recipe("ade20k", "topformer_t").data.eval_size_divisor == 32 and recipe("ade20k").data.eval_size_divisor == 0


# ------------------------------------------------------------------------------------------------- cropping
def _balanced(mask: torch.Tensor, ratio: float = 0.75) -> bool:
    counts = torch.bincount(mask.flatten().long(), minlength=256)
    counts[255] = 0
    counts = counts[counts > 0]
    return len(counts) > 1 and (counts.max() / counts.sum()).item() < ratio


def test_cat_max_ratio_crop_prefers_mixed_crops():
    # class 1 fills a 40x40 corner of a 100x100 mask of class 0: about 1 in 5 random 40x40 crops is balanced
    mask = torch.zeros(100, 100, dtype=torch.uint8)
    mask[:40, :40] = 1
    image = tv_tensors.Image(torch.zeros(3, 100, 100, dtype=torch.uint8))
    rates = {}
    for ratio in (0.75, 1.0):
        t = CatMaxRatioCrop((40, 40), ratio)
        ok = 0
        for seed in range(200):
            torch.manual_seed(seed)
            out_image, out_mask = t(image, tv_tensors.Mask(mask))
            assert out_image.shape == (3, 40, 40) and out_mask.shape == (40, 40)
            ok += _balanced(out_mask)
        rates[ratio] = ok / 200
    assert rates[1.0] < 0.35 and rates[0.75] > 0.75


def test_cat_max_ratio_ignores_ignore_pixels():
    mask = torch.full((60, 60), 255, dtype=torch.uint8)
    mask[:, :30] = 3  # every crop has only class 3 besides ignore: never balanced, the 11th draw is used
    t = CatMaxRatioCrop((20, 20), 0.75)
    torch.manual_seed(0)
    draws = [t._draw(60, 60) for _ in range(11)]
    torch.manual_seed(0)
    _, out = t(tv_tensors.Image(torch.zeros(3, 60, 60, dtype=torch.uint8)), tv_tensors.Mask(mask))
    last = draws[-1]
    assert torch.equal(out, mask[last["top"] : last["top"] + 20, last["left"] : last["left"] + 20])


def test_crop_larger_than_input_then_pad():
    cfg = replace(ALIGN_CFG, crop_size=(64, 80), scale=(40, 30), ratio_range=(1.0, 1.0))
    image = tv_tensors.Image(torch.full((3, 30, 40), 200, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.ones(30, 40, dtype=torch.uint8))
    out_image, out_mask = train_transform(cfg)(image, mask)
    assert out_image.shape == (3, 64, 80) and out_mask.shape == (64, 80)
    assert (
        (out_mask[:30, :40] == 1).all() and (out_mask[30:] == 255).all() and (out_mask[:, 40:] == 255).all()
    )
    assert (out_image[:, 30:] == 0).all() and (
        out_image[:, :, 40:] == 0
    ).all()  # 0 after normalisation, as mmseg
    assert (out_image[:, :30, :40] != 0).any()


# ----------------------------------------------------------------------------------- photometric distortion
def _params(**kw):
    base = {"brightness": None, "contrast_first": True, "contrast": None, "saturation": None, "hue": None}
    return {**base, **kw}


@pytest.fixture
def rgb_image() -> tv_tensors.Image:
    return tv_tensors.Image(
        torch.randint(0, 256, (3, 8, 9), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    )


def test_brightness_and_contrast_are_mmseg_convert(rgb_image):
    t = PhotoMetricDistortion()
    x = rgb_image.float()
    out = t.transform(rgb_image, _params(brightness=20.7))
    assert torch.equal(out, (x + 20.7).clamp(0, 255).to(torch.uint8))  # add, clip, truncate
    out = t.transform(rgb_image, _params(contrast=1.3))
    assert torch.equal(out, (x * 1.3).clamp(0, 255).to(torch.uint8))  # plain scaling, no mean blending
    assert isinstance(out, tv_tensors.Image)


@pytest.mark.parametrize("alpha", [0.5, 0.8, 1.3, 1.5])
def test_saturation_scales_hsv_s(rgb_image, alpha):
    out = PhotoMetricDistortion().transform(rgb_image, _params(saturation=alpha))
    ref = torch.empty_like(out)
    for i in range(8):
        for j in range(9):
            h, s, v = colorsys.rgb_to_hsv(*(rgb_image[:, i, j].float() / 255).tolist())
            r = colorsys.hsv_to_rgb(h, min(s * alpha, 1.0), v)
            ref[:, i, j] = torch.tensor([min(max(c * 255, 0), 255) for c in r]).to(torch.uint8)
    assert (out.int() - ref.int()).abs().max() <= 1


@pytest.mark.parametrize("delta", [-18, -5, 7, 17])
def test_hue_shift_in_opencv_units(rgb_image, delta):
    out = PhotoMetricDistortion().transform(rgb_image, _params(hue=delta))  # OpenCV hue units: 180 per turn
    ref = torch.empty_like(out)
    for i in range(8):
        for j in range(9):
            h, s, v = colorsys.rgb_to_hsv(*(rgb_image[:, i, j].double() / 255).tolist())
            ref[:, i, j] = torch.tensor(
                [round(c * 255) for c in colorsys.hsv_to_rgb((h + delta / 180) % 1, s, v)]
            )
    assert (out.int() - ref.int()).abs().max() <= 1


def test_photometric_leaves_masks_and_draws_each_step_half_the_time(rgb_image):
    t = PhotoMetricDistortion()
    mask = tv_tensors.Mask(torch.arange(72).reshape(8, 9))
    torch.manual_seed(0)
    draws = [t.make_params([rgb_image, mask]) for _ in range(400)]
    for key in ("brightness", "contrast", "saturation", "hue"):
        assert 0.4 < np.mean([d[key] is not None for d in draws]) < 0.6
    assert all(-32 <= d["brightness"] <= 32 for d in draws if d["brightness"] is not None)
    assert {d["hue"] for d in draws if d["hue"] is not None} <= set(range(-18, 18))
    _, out_mask = t(rgb_image, mask)
    assert torch.equal(out_mask, mask)
    with pytest.raises(TypeError, match="uint8"):
        t(tv_tensors.Image(torch.rand(3, 4, 4)))


# ---------------------------------------------------------------------------------- normalisation, imagenet
def test_normalisation_and_denormalize_roundtrip():
    cfg = replace(recipe("ade20k").data, eval_mode="slide")
    image = tv_tensors.Image(torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8))
    out, _ = eval_transform(cfg)(image, tv_tensors.Mask(torch.zeros(5, 7)))
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(out.as_subclass(torch.Tensor), (image.float() / 255 - mean) / std)
    assert torch.equal(denormalize(out), image.as_subclass(torch.Tensor))
    assert torch.equal(denormalize(out[None])[0], image.as_subclass(torch.Tensor))  # batched


def test_imagenet_transforms():
    image = tv_tensors.Image(torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8))
    assert imagenet_train_transform()(image).shape == (3, 224, 224)
    out = imagenet_eval_transform()(image)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
