"""lemore.viz: the visual comparison from checkpoints, the bubble plot, atomic PNG writes."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lemore import viz
from lemore.checkpoint import save_checkpoint
from lemore.config import load
from lemore.engine.evaluate import build_model


def test_colorize_palette_and_ignore():
    mask = np.array([[0, 1], [255, 1]])
    rgb = viz.colorize(mask, [(10, 20, 30), (200, 100, 0)])
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[0, 1].tolist() == [200, 100, 0]
    assert rgb[1, 0].tolist() == [0, 0, 0]  # ignored pixels are black


def test_comparison_figure_layout():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(3)]
    truths = [rng.integers(0, 3, (24, 32)) for _ in range(3)]
    preds = {"SegFormer-B0": truths, "LeMoRe": [np.zeros((24, 32), int)] * 3}
    fig = viz.comparison_figure(images, truths, preds, [(255, 0, 0), (0, 255, 0), (0, 0, 255)], ["a", "b", "c"])
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 3 * 4
    assert [ax.get_title() for ax in axes[:4]] == ["Image", "Ground Truth", "SegFormer-B0", "LeMoRe"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="2 predictions"):
        viz.comparison_figure(images, truths, {"x": truths[:2]}, [(0, 0, 0)] * 3)


def test_save_figure_writes_png_atomically(tmp_path):
    fig = viz.bubble_plot(pd.DataFrame([dict(label="LeMoRe", source="ours", miou=30.0, params_m=1.6, gflops=0.8,
                                             latency_ms=20.0, size="512x512")]))
    out = viz.save_figure(fig, tmp_path / "figs" / "b.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 200
    assert [p.name for p in (tmp_path / "figs").iterdir()] == ["b.png"]


def test_bubble_plot_marks_paper_points():
    points = pd.DataFrame([
        dict(label="LeMoRe", source="ours", miou=30.0, params_m=1.6, gflops=0.8, latency_ms=21.4, size="512x512"),
        dict(label="SegFormer-B0", source="ours", miou=35.0, params_m=3.8, gflops=8.4, latency_ms=300.0,
             size="512x512"),
        dict(label="LeMoRe", source="paper", miou=33.5, params_m=1.6, gflops=0.8, latency_ms=24.0, size="512x512"),
    ])
    fig = viz.bubble_plot(points, title="t", device_note="CPU")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "LeMoRe\n0.80 GFLOPs, 21.4 ms" in texts and "LeMoRe (paper)" in texts
    assert ax.get_xlabel() == "parameters (M)" and ax.get_ylabel() == "mIoU (%)"
    sizes = [c.get_sizes()[0] for c in ax.collections if len(c.get_offsets())]
    assert sizes[1] > sizes[0]  # bubble area grows with GFLOPs
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("paper" in t for t in legend) and any("ours" in t for t in legend)
    with pytest.raises(ValueError, match="no points"):
        viz.bubble_plot(points.iloc[:0])


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    from lemore.data.synthetic import ensure_synthetic

    return ensure_synthetic(tmp_path_factory.mktemp("data") / "synthetic", num_train=2, num_val=3)


def test_visual_comparison_from_checkpoints(tmp_path, tiny_synthetic, monkeypatch):
    """Untrained checkpoints written as the engine writes them; the figure is built from results/ + runs/."""
    monkeypatch.chdir(tmp_path)
    for model in ("segformer_b0", "lemore"):
        cfg = load(dataset="synthetic", overrides={"model.name": model, "data.root": str(tiny_synthetic),
                                                   "data.crop_size": [64, 64], "data.scale": [96, 64]})
        run = f"{model}_2x1-2_synthetic-64x64"
        save_checkpoint({"model": build_model(cfg).state_dict(), "config": cfg.to_dict()}, f"runs/{run}/model.pt")
        (tmp_path / "results" / "metrics").mkdir(parents=True, exist_ok=True)
        (tmp_path / "results" / "metrics" / f"{run}.json").write_text(json.dumps(
            {"run_name": run, "config": cfg.to_dict(), "metrics": {"miou": 1.0}, "iteration": 2,
             "checkpoint": f"runs/{run}/model.pt"}))
    fig = viz.visual_comparison("results", "synthetic", ["segformer_b0", "lemore"], n=2)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 2 * 4
    assert [ax.get_title() for ax in axes[:4]] == ["Image", "Ground Truth", "SegFormer-B0", "LeMoRe"]
    shapes = {ax.images[0].get_array().shape[:2] for ax in axes[:4]}
    assert len(shapes) == 1  # predictions at the label size of the image
    with pytest.raises(FileNotFoundError, match="no fine-tuning run of 'lraspp_mobilenet_v3_large'"):
        viz.find_runs("results", "synthetic", ["lraspp_mobilenet_v3_large"])
