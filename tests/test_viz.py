"""lemore.viz: the visual comparison from checkpoints, the bubble plot, atomic PNG writes, the CamVid study's
figures."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lemore import viz
from lemore.checkpoint import save_checkpoint
from lemore.config import load
from lemore.data.camvid import CAMVID_CLASSES
from lemore.registry import build_model

sys.path.insert(0, str(Path(__file__).parent / "data"))  # tests/data/fixtures.py: the tiny CamVid tree


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


def test_bubble_plot_error_bars_for_seeds():
    """Our points averaged over seeds get an error bar (one std) and n in the label; one seed gets none."""
    points = pd.DataFrame([
        dict(label="LeMoRe", source="ours", miou=30.0, miou_std=1.5, n=3, params_m=1.6, gflops=0.8, latency_ms=21.4,
             size="512x512"),
        dict(label="SegFormer-B0", source="ours", miou=35.0, miou_std=float("nan"), n=1, params_m=3.8, gflops=8.4,
             latency_ms=300.0, size="512x512"),
    ])
    ax = viz.bubble_plot(points).axes[0]
    bars = [c for c in ax.collections if type(c).__name__ == "LineCollection"]
    assert len(bars) == 1
    (seg,) = bars[0].get_segments()
    assert seg[:, 1].min() == pytest.approx(28.5) and seg[:, 1].max() == pytest.approx(31.5)
    texts = [t.get_text() for t in ax.texts]
    assert "LeMoRe\n0.80 GFLOPs, 21.4 ms, ±1.50 (n=3)" in texts
    assert "SegFormer-B0\n8.40 GFLOPs, 300.0 ms" in texts


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


# ------------------------------------------------------------------------------------------ the CamVid study
def test_per_image_miou_by_hand():
    truth = np.array([[0, 0, 0], [1, 1, 255]])
    pred = np.array([[0, 0, 1], [1, 2, 2]])
    # class 0: 2 hits / (3 true + 2 predicted - 2) = 2/3; class 1: 1 / (2 + 2 - 1) = 1/3; class 2: predicted once,
    # never true: IoU 0, counted; the ignored pixel's prediction (2) is not; class 3 absent from both: left out.
    assert viz.per_image_miou(pred, truth, num_classes=4) == pytest.approx(100 * (2 / 3 + 1 / 3 + 0) / 3)
    assert viz.per_image_miou(truth.clip(0, 1), truth.clip(0, 1), 4) == pytest.approx(100.0)
    assert np.isnan(viz.per_image_miou(np.zeros((2, 2), int), np.full((2, 2), 255), 4))  # nothing labelled


def test_pick_by_quantiles():
    scores = [5.0, -3.0, 0.0, 2.0, np.nan, -1.0, 4.0]  # ranked: idx 1, 5, 2, 3, 6, 0 (the NaN left out)
    assert viz.pick_by_quantiles(scores, 2) == [1, 0]  # the two extremes
    assert viz.pick_by_quantiles(scores, 4) == [1, 2, 3, 0]  # ranks 0, 2, 3, 5 of 6 (0, 1.67, 3.33, 5 rounded)
    assert viz.pick_by_quantiles(scores, 6) == viz.pick_by_quantiles(scores, 9) == [1, 5, 2, 3, 6, 0]
    assert viz.pick_by_quantiles([1.0, 1.0, 0.0], 2) == [2, 1]  # a tie: the lower index ranks first
    assert viz.pick_by_quantiles(scores, 0) == [] and viz.pick_by_quantiles([np.nan], 3) == []


def test_pareto_mask():
    cost = [20.0, 120.0, 40.0, np.nan, 20.0, 120.0]
    score = [42.0, 46.0, 38.0, 50.0, 41.0, 46.0]
    # LR-ASPP (40, 38) and (20, 41) are beaten by (20, 42); two equal points both stay on the front
    assert viz.pareto_mask(cost, score).tolist() == [True, True, False, False, False, True]


@pytest.fixture
def camvid_built(tmp_path):
    import camvid_results

    from lemore import tables

    results = camvid_results.make_results(tmp_path / "results" / "camvid")
    _, protocol = tables.load_study_profile(results)
    return tables.camvid_tables(results), tables.study_runs(results), protocol


def test_pareto_figure(camvid_built, tmp_path):
    built, _, protocol = camvid_built
    fig = viz.pareto_figure(built["camvid_models"], protocol)
    lat, gfl = fig.axes
    assert "Fake CPU 9000" in lat.get_xlabel() and "360x480" in gfl.get_xlabel()
    labels = [t.get_text() for t in lat.texts]
    assert "LeMoRe (n=3)\n0.50x LR-ASPP" in labels and not any("TopFormer" in t for t in labels)  # no runs: no point
    front = [ln for ln in lat.get_lines() if ln.get_label() == "Pareto front"][0]
    assert list(front.get_xdata()) == [20.0, 120.0] and list(front.get_ydata()) == [42.0, 46.0]
    assert "from scratch" in fig.get_suptitle()
    assert viz.save_figure(fig, tmp_path / "p.png").stat().st_size > 20_000


def test_ablation_figure(camvid_built, tmp_path):
    built, runs, _ = camvid_built
    fig = viz.ablation_figure(built["camvid_ablation"], runs)
    ax, ax2 = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == list(built["camvid_ablation"].row)
    notes = [t.get_text() for t in ax.texts]
    assert notes == ["n=3", "n=3", "n=3", "n=2", "not run", "n=1", "not run", "n=3"]
    seed_dots = sum(len(ln.get_xdata()) for ln in ax.get_lines() if ln.get_marker() == "o" and ln.get_markersize() < 5)
    assert seed_dots == 3 + 3 + 3 + 2 + 1 + 3  # every seed of every Table 2 row run
    assert list(ax2.get_lines()[0].get_ydata()) == [27.2, 27.6, 29.1, 29.6, 32.2, 32.7, 33.3, 33.5]  # the paper's
    assert viz.save_figure(fig, tmp_path / "a.png").stat().st_size > 20_000


def test_curves_figure(camvid_built, tmp_path):
    built, runs, _ = camvid_built
    fig = viz.curves_figure(runs, list(built["camvid_models"].registry))
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["SegFormer-B0 (n=2)", "LeMoRe (n=3)", "LR-ASPP MobileNetV3-L (n=1)",
                      "last quarter of a schedule"]
    lemore = ax.get_lines()[1]
    assert list(lemore.get_xdata()) == list(range(100, 801, 100))
    assert lemore.get_ydata()[-1] == pytest.approx(42.0)  # the mean over the seeds
    shaded = [p for p in ax.patches if p.get_label() == "last quarter of a schedule"]
    assert len(shaded) == 1 and shaded[0].get_x() == 600  # 3/4 of 800 iterations
    assert viz.save_figure(fig, tmp_path / "c.png").stat().st_size > 20_000


def test_curves_figure_with_the_longer_schedule(tmp_path):
    """The doubling check's seed-0 runs at twice the schedule: dashed, in each model's colour, both last quarters
    shaded."""
    import camvid_results

    from lemore import tables

    results = camvid_results.make_results(tmp_path / "results" / "camvid")
    runs, longer = tables.study_runs(results), tables.study_runs(results / "long")
    fig = viz.curves_figure(runs, ["segformer_b0", "lemore"], longer=longer)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["SegFormer-B0 (n=2)", "SegFormer-B0 (n=1, longer schedule)", "LeMoRe (n=3)",
                      "LeMoRe (n=1, longer schedule)", "last quarter of a schedule"]
    seg, seg_long = ax.get_lines()[:2]
    assert seg_long.get_linestyle() == "--" and seg_long.get_color() == seg.get_color()
    assert list(seg_long.get_xdata()) == list(range(200, 1601, 200)) and seg_long.get_ydata()[-1] == 44.0
    assert sorted(p.get_x() for p in ax.patches) == [600, 1200]  # 3/4 of 800 and of 1600 iterations


def test_weights_comparison_picks_by_the_stated_rule(tmp_path, monkeypatch):
    """Untrained tiny weights files written as the study's weights stage writes them, on a tiny CamVid tree."""
    import camvid_results
    from fixtures import make_camvid

    root = make_camvid(tmp_path / "CamVid")
    camvid_results.write_weights(tmp_path / "camvid", root)
    scores = {"segformer_b0": np.array([30.0, 10.0]), "lemore": np.array([20.0, 40.0])}  # differences +10, -30
    monkeypatch.setattr(viz, "score_images", lambda model, cfg, ds, device="cpu": scores[cfg.model.name])
    fig, table = viz.weights_comparison(tmp_path / "camvid" / "weights", n=2)
    assert list(table.image) == ["0016E5_07961", "0016E5_07959"]  # ranked: LeMoRe's best relative case first
    assert table["Δ miou (SegFormer-B0 - LeMoRe)"].tolist() == [-30.0, 10.0]
    assert list(table["rank"]) == [1, 2] and list(table.shown) == [1, 2]
    axes = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in axes[:4]] == ["Image", "Ground Truth", "SegFormer-B0", "LeMoRe"]
    assert axes[0].get_ylabel() == "rank 1/2\nΔ mIoU -30.0" and axes[4].get_ylabel() == "rank 2/2\nΔ mIoU +10.0"
    assert "evenly spaced quantiles" in fig.get_suptitle()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert set(legend) <= set(CAMVID_CLASSES) and legend
    monkeypatch.undo()  # the real scores: per-image mIoU of the untrained models' predictions
    _, real = viz.weights_comparison(tmp_path / "camvid" / "weights", n=1)
    assert real["miou LeMoRe"].between(0, 100).all() and list(real.shown) == [1, 0]  # n=1: the lowest rank
    with pytest.raises(FileNotFoundError, match="weights stage"):
        viz.weights_comparison(tmp_path / "camvid" / "weights", ("lraspp_mobilenet_v3_large", "lemore"))
