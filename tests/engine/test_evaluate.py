"""Inference modes, the dataset-level metric through evaluate(), and the eval CLI on a trained run."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lemore.engine.train as T
from lemore.config import load, recipe
from lemore.engine import evaluate as E


class Pointwise(nn.Module):
    """Size-agnostic and deterministic: a 1x1 conv. Its logits at a pixel depend on that pixel only, so
    whole-image and sliding-window inference must agree exactly (up to float rounding)."""

    def __init__(self, k: int = 5):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, k, 1)
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return self.conv(x)


@pytest.mark.parametrize("size", [(40, 50), (64, 64), (100, 130), (64, 200)])
def test_slide_equals_whole_for_a_pointwise_model(size):
    model = Pointwise()
    image = torch.randn(2, 3, *size)
    whole = E.whole_inference(model, image)
    model.sizes.clear()
    slide = E.slide_inference(model, image, num_classes=5, crop_size=(64, 64), stride=(48, 48))
    assert slide.shape == whole.shape == (2, 5, *size)
    torch.testing.assert_close(slide, whole, rtol=1e-5, atol=1e-5)
    # Every window the model saw was full-size: smaller images are padded up to the crop.
    assert set(model.sizes) == {(64, 64)}


def test_slide_window_count_follows_mmseg():
    model = Pointwise()
    E.slide_inference(model, torch.zeros(1, 3, 100, 130), 5, crop_size=(64, 64), stride=(48, 48))
    # h_grids = ceil((100 - 64) / 48) + 1 = 2, w_grids = ceil((130 - 64) / 48) + 1 = 3
    assert len(model.sizes) == 6
    model.sizes.clear()
    E.slide_inference(model, torch.zeros(1, 3, 40, 50), 5, crop_size=(64, 64), stride=(48, 48))
    assert len(model.sizes) == 1  # an image smaller than the window: one padded window


class FromLabels(nn.Module):
    """Returns one-hot logits of a fixed label map at a quarter of its size (to exercise the upsampling)."""

    def __init__(self, label: torch.Tensor, k: int):
        super().__init__()
        small = F.interpolate(label[None, None].float(), scale_factor=0.25, mode="nearest")[0, 0].long()
        self.logits = F.one_hot(small, k).permute(2, 0, 1)[None].float() * 10  # (1, K, H/4, W/4)

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1, -1, -1)


def test_evaluate_upsamples_to_the_label_and_counts_the_dataset():
    cfg = load(dataset="synthetic", overrides={"data.num_classes": 3})
    label = torch.zeros(32, 32, dtype=torch.long)
    label[:, 16:] = 1  # left half class 0, right half class 1; class 2 absent everywhere
    mask = label.clone()
    mask[:4] = 255  # ignored rows
    model = FromLabels(label, 3)
    loader = [(torch.zeros(1, 3, 16, 16), mask[None]), (torch.zeros(1, 3, 16, 16), mask[None])]
    m = E.evaluate(model, loader, cfg, class_names=["a", "b", "c"])
    assert m["num_images"] == 2 and m["num_pixels"] == 2 * 28 * 32
    assert m["aacc"] == m["miou"] == m["macc"] == 100.0
    assert m["per_class_iou"]["a"] == 100.0 and m["per_class_iou"]["c"] != m["per_class_iou"]["c"]  # NaN


def test_evaluate_reports_miou59_for_pascal_context():
    cfg = load(dataset="pascal_context")
    k = cfg.data.num_classes
    torch.manual_seed(0)
    mask = torch.randint(0, k, (1, 24, 24))

    class Noisy(nn.Module):
        def forward(self, x):
            return torch.randn(x.shape[0], k, 24, 24, generator=torch.Generator().manual_seed(1))

    m = E.evaluate(Noisy(), [(torch.zeros(1, 3, 24, 24), mask)], cfg)
    iou = torch.tensor([v for v in m["per_class_iou"].values()], dtype=torch.float64)
    assert m["miou60"] == m["miou"] == pytest.approx(float(iou.nanmean()))
    assert m["miou59"] == pytest.approx(float(iou[1:].nanmean()))


def test_eval_cli_reproduces_the_run_metrics(tiny_cfg, tmp_path):
    run_dir = T.train(tiny_cfg(**{"train.iters": 2}), run_dir=tmp_path / "run")
    trained = json.loads((run_dir / "metrics.json").read_text())

    parser = argparse.ArgumentParser()
    E.add_cli_arguments(parser)
    assert E.cli_main(parser.parse_args(["--run-dir", str(run_dir), "--results-dir", str(tmp_path / "res")])) == 0
    again = json.loads((run_dir / "eval.json").read_text())
    assert again["metrics"] == trained["metrics"]
    assert json.loads((tmp_path / "res" / "run.json").read_text())["metrics"] == trained["metrics"]

    # A bare model.pt uses the config saved inside it; --set overrides apply on top.
    out = tmp_path / "slide.json"
    args = parser.parse_args(["--checkpoint", str(run_dir / "model.pt"), "--out", str(out),
                              "--set", "data.eval_mode=slide", "data.eval_stride=[48,48]"])
    assert E.cli_main(args) == 0
    slide = json.loads(out.read_text())
    assert slide["config"]["data"]["eval_mode"] == "slide" and slide["metrics"]["num_images"] == 4
    assert 0.0 <= slide["metrics"]["miou"] <= 100.0


def test_prediction_strips(tiny_cfg):
    from lemore.data import build_dataset

    cfg = tiny_cfg()
    ds = build_dataset(cfg.data, "val")
    model = E.build_model(cfg)
    strips = E.prediction_strips(model, ds, cfg, [0, 1])
    h, w = ds[0][1].shape
    assert strips[0].shape == (h, 3 * w, 3) and strips[0].dtype.name == "uint8"


def test_eval_cli_official_checkpoint(synthetic_root, tmp_path):
    """``--official``: an mmseg TopFormer-T checkpoint (official names and shapes, numpy meta) evaluated end to end,
    with the same metrics as the converted weights evaluated directly."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from test_convert import official_state, save_mmseg

    from lemore.convert import load_official
    from lemore.data import build_dataset

    K = recipe("synthetic").data.num_classes
    ckpt = save_mmseg(tmp_path / "TopFormer-T_synthetic.pth", official_state("topformer_t", num_classes=K))
    sets = ["--set", f"data.root={synthetic_root}", "data.num_workers=0", "train.device=cpu", "data.scale=[128,64]"]
    parser = argparse.ArgumentParser()
    E.add_cli_arguments(parser)
    argv = ["--official", str(ckpt), "--model", "topformer_t", "--dataset", "synthetic", *sets]
    assert E.cli_main(parser.parse_args(argv)) == 0
    res = json.loads((tmp_path / "eval_topformer_t_synthetic.json").read_text())
    assert res["official"] is True and res["run_name"] == "official_topformer_t_synthetic"
    assert res["config"]["model"]["name"] == "topformer_t" and res["metrics"]["num_images"] == 4

    cfg = load(dataset="synthetic", overrides={"model.name": "topformer_t", "data.root": str(synthetic_root),
                                               "data.num_workers": 0, "data.scale": (128, 64)})
    model = load_official(E.build_model(cfg), "topformer_t", ckpt, K)
    ds = build_dataset(cfg.data, "val")
    direct = E.evaluate(model, E.eval_loader(ds, cfg), cfg, class_names=list(ds.classes))
    assert res["metrics"]["miou"] == pytest.approx(direct["miou"])
    assert res["metrics"]["aacc"] == pytest.approx(direct["aacc"])


@pytest.mark.parametrize("argv,message", [
    (["--official", "x.pth", "--dataset", "ade20k"], "--official needs --model"),
    (["--official", "x.pth", "--model", "lemore", "--dataset", "ade20k"], "one of ['seaformer_t', 'segformer_b0'"),
    (["--official", "x.pth", "--model", "topformer_t"], "--official needs --dataset"),
    (["--checkpoint", "x.pt", "--model", "topformer_t"], "--model is for --official"),
])
def test_eval_cli_official_flags(argv, message, capsys):
    from lemore.cli import main as cli

    assert cli(["eval", *argv]) == 1
    assert message in capsys.readouterr().err
