"""The training pipeline in two stages (SegTrainTransform: draws and shape per sample, pixel arithmetic per batch)
against mmseg's one-sample-at-a-time form (mmseg_train_transform): the same samples on the same draws, the same label
statistics over many independent draws, and a batch equal to its samples one at a time."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from fixtures import block_label, image_for
from scipy import stats
from torchvision import tv_tensors

from lemore.config import recipe
from lemore.data.transforms import SegTrainTransform, mmseg_train_transform, train_transform

CAMVID_LIKE = replace(recipe("camvid").data, scale=(120, 90), crop_size=(60, 80), ratio_range=(0.5, 1.5))
CONFIGS = {
    "camvid-like": CAMVID_LIKE,
    "ade20k-like": replace(recipe("ade20k").data, scale=(256, 64), crop_size=(48, 48)),  # resize 0.5-2.0
    "crop larger than the image": replace(CAMVID_LIKE, crop_size=(100, 140), ratio_range=(0.5, 1.0)),
    "no class check": replace(CAMVID_LIKE, cat_max_ratio=1.0),
    "no photometric distortion": replace(CAMVID_LIKE, photometric=False),
    "no random resize": replace(recipe("synthetic").data, scale=(120, 90), crop_size=(64, 64)),
}


def scene(seed: int, h: int = 90, w: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    """A road-scene stand-in with CamVid's 11 classes and void (11 -> ignored): sky above, buildings and trees, road
    below, small objects in blocks, colour-coded, with noise so that the bilinear resize has something to round.
    Where a class lies depends on the height, as in a street scene, so a crop's place shows in its labels."""
    rng = np.random.default_rng(seed)
    label = block_label(rng, h, w, list(range(12)), cell=int(rng.integers(6, 14)))
    rows = np.arange(h)[:, None]
    sky, road = int(h * rng.uniform(0.2, 0.35)), int(h * rng.uniform(0.55, 0.7))
    label = np.where(rows < sky, 0, np.where(rows >= road, np.where(label % 3 == 0, label, 3), label)).astype(np.uint8)
    image = image_for(label).astype(np.float64) + rng.normal(0, 6, (h, w, 3))
    mask = np.where(label == 11, 255, label).astype(np.uint8)
    return torch.from_numpy(image.clip(0, 255).astype(np.uint8)).permute(2, 0, 1).contiguous(), torch.from_numpy(mask)


def reference(cfg, image, mask, seed):
    torch.manual_seed(seed)
    out_image, out_mask = mmseg_train_transform(cfg)(tv_tensors.Image(image), tv_tensors.Mask(mask))
    return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor).to(torch.int64), torch.rand(1)


@pytest.mark.parametrize("name", CONFIGS)
def test_same_draws_give_the_reference_sample_bit_for_bit(name):
    cfg = CONFIGS[name]
    fast = train_transform(cfg)
    for seed in range(40):
        image, mask = scene(seed)
        ref_image, ref_mask, ref_next = reference(cfg, image, mask, seed)
        torch.manual_seed(seed)
        out_image, out_mask = fast(image, mask)
        assert torch.equal(out_mask, ref_mask), f"{name}, seed {seed}: mask"
        assert torch.equal(out_image, ref_image), f"{name}, seed {seed}: image"
        assert torch.equal(torch.rand(1), ref_next), f"{name}, seed {seed}: another number of draws"
        # the engine's path: the draws from a generator of the sample's own, seeded alike
        alone = fast.collate([fast.sample(image, mask, torch.Generator().manual_seed(seed))])
        assert torch.equal(alone[0][0], ref_image) and torch.equal(alone[1][0], ref_mask), f"{name}, seed {seed}"


def test_photometric_off_changes_only_the_colours():
    """``data.photometric=False`` skips the distortion and nothing else: the same crops and flips on the same seeds
    (its draws come after them), the image the resized crop itself; on, most samples' colours change."""
    on, off = train_transform(CAMVID_LIKE), train_transform(replace(CAMVID_LIKE, photometric=False))
    changed = 0
    for seed in range(20):
        image, mask = scene(seed)
        a = on.sample(image, mask, torch.Generator().manual_seed(seed))
        b = off.sample(image, mask, torch.Generator().manual_seed(seed))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), f"seed {seed}: another crop or flip"
        assert b[2].tolist()[:2] == [0.0, 1.0] and b[2][2:4].isnan().all() and b[2][4] == 1.0
        x_on, x_off = on.collate([a])[0], off.collate([b])[0]
        h, w = b[3].tolist()  # the crop before padding (the padding is 0 after normalising)
        raw = ((x_off * off.std + off.mean) * 255)[0, :, :h, :w]  # back to the crop's whole numbers
        assert torch.allclose(raw, b[0][:, :h, :w].float(), atol=1e-3), f"seed {seed}: the colours changed"
        changed += not torch.equal(x_on, x_off)
    assert changed >= 15, f"the distortion changed only {changed} of 20 samples"


def test_a_batch_is_its_samples_one_at_a_time():
    cfg = CONFIGS["crop larger than the image"]  # some samples padded, some not
    fast = train_transform(cfg)
    samples, alone = [], []
    for seed in range(12):
        image, mask = scene(seed)
        g = torch.Generator().manual_seed(seed)
        samples.append(fast.sample(image, mask, g))
        torch.manual_seed(seed)
        alone.append(fast(image, mask))
    params = torch.stack([s[2] for s in samples])
    assert params[:, 2].isnan().any() and (~params[:, 3].isnan()).any(), "the seeds should draw every step somewhere"
    images, masks = fast.collate(samples)
    assert images.shape == (12, 3, 100, 140) and images.dtype == torch.float32 and masks.dtype == torch.int64
    for i, (image, mask) in enumerate(alone):
        assert torch.equal(images[i], image) and torch.equal(masks[i], mask), f"sample {i}"


def _crop_statistics(samples: list[torch.Tensor], classes: int = 11) -> np.ndarray:
    """Per crop: the share of each class among its pixels, and of ignored pixels (void and padding)."""
    rows = []
    for mask in samples:
        counts = torch.bincount(mask.flatten().clamp(max=classes), minlength=classes + 1).double()
        rows.append((counts / counts.sum()).numpy())
    return np.stack(rows)


def _label_pvalues(cfg_a, cfg_b, n: int = 300, tamper=None) -> np.ndarray:
    """Two-sample Kolmogorov-Smirnov p-values, per class and for the ignored share, between the crops of
    mmseg's pipeline on ``cfg_a`` (seeds 0..n-1) and of the two-stage pipeline on ``cfg_b`` (seeds n..2n-1),
    ``tamper(pipeline)`` applied to the latter."""
    scenes = [scene(1000 + i) for i in range(8)]
    ref, fast = [], []
    pipeline = SegTrainTransform(cfg_b)
    if tamper is not None:
        tamper(pipeline)
    for seed in range(n):
        image, mask = scenes[seed % len(scenes)]
        ref.append(reference(cfg_a, image, mask, seed)[1])
        g = torch.Generator().manual_seed(n + seed)
        fast.append(pipeline.collate([pipeline.sample(image, mask, g)])[1][0])
    a, b = _crop_statistics(ref), _crop_statistics(fast)
    return np.array([stats.ks_2samp(a[:, k], b[:, k]).pvalue for k in range(a.shape[1])])


def test_label_statistics_match_over_many_independent_draws():
    p = _label_pvalues(CAMVID_LIKE, CAMVID_LIKE)
    assert p.min() > 0.001 / len(p), p  # Bonferroni over the 12 shares


@pytest.mark.parametrize("bias", ["no random resize", "crops pinned to the top"])
def test_the_statistics_test_sees_a_biased_pipeline(bias):
    """The negative controls: a two-stage pipeline that drops the random resize, or draws every crop at the top of
    the image, has other label statistics, and the same test tells it apart from mmseg's."""

    def pin_to_top(pipeline):
        draw = pipeline.crop._draw
        pipeline.crop._draw = lambda h, w, generator=None: {**draw(h, w, generator), "top": 0}

    if bias == "no random resize":
        p = _label_pvalues(CAMVID_LIKE, replace(CAMVID_LIKE, ratio_range=(1.0, 1.0)))
    else:
        p = _label_pvalues(CAMVID_LIKE, CAMVID_LIKE, tamper=pin_to_top)
    assert p.min() < 1e-6, p
