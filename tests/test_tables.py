"""lemore.tables: paper-vs-ours tables built from results files only."""

import json
import math

import camvid_results
import numpy as np
import pandas as pd
import pytest

from lemore import tables
from lemore.config import recipe
from lemore.data.camvid import CAMVID_CLASSES
from lemore.paper import TABLES, load_table

SYN_K = recipe("synthetic").data.num_classes  # the synthetic recipe's class count


def write_run(results, dataset, model, miou, iters=100, crop=(512, 512), extra=None, sub=True, seed=0):
    name = f"{model}_16x1-{iters}_{dataset}-{crop[1]}x{crop[0]}" + (f"_seed{seed}" if seed else "")
    metrics = {"aacc": 80.0, "miou": miou, "macc": 50.0, "per_class_iou": {"a": miou}, "num_images": 3}
    metrics.update(extra or {})
    obj = {"run_name": name, "iteration": iters, "params_m": 1.55, "checkpoint": f"runs/{name}/model.pt",
           "config": {"data": {"dataset": dataset, "crop_size": list(crop)}, "model": {"name": model},
                      "train": {"iters": iters, "batch_size": 16, "seed": seed}},
           "metrics": metrics}
    folder = results / "metrics" / dataset / model if sub else results / "metrics"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(obj))
    return name


def write_profile(results, rows, name="profile"):
    (results / "profile").mkdir(parents=True, exist_ok=True)
    full = [dict(model=m, num_classes=k, input_size=list(size), params_m=p, gflops=g, latency_ms=lat, threads=2)
            for m, size, k, p, g, lat in rows]
    (results / "profile" / f"{name}.json").write_text(json.dumps({"protocol": {"device": "cpu"}, "rows": full}))


@pytest.fixture
def results(tmp_path):
    r = tmp_path / "results"
    write_run(r, "ade20k", "lemore", 30.0, iters=1000)
    write_run(r, "ade20k", "lemore", 31.5, iters=2000)  # more iterations: this one stands for the pair
    write_run(r, "ade20k", "segformer_b0", 35.0)
    write_run(r, "ade20k", "lemore_t", 25.0)
    write_run(r, "pascal_context", "lemore", 31.0, crop=(480, 480), extra={"miou59": 34.0, "miou60": 31.0})
    write_run(r, "synthetic", "lemore", 70.0, crop=(128, 128), sub=False)
    write_profile(r, [("lemore", (512, 512), 150, 1.6, 0.81, 20.0),
                      ("segformer_b0", (512, 512), 150, 3.75, 8.0, 300.0),
                      ("lemore_t", (512, 512), 150, 1.1, 0.7, 15.0),
                      ("lemore", (480, 480), 60, 1.58, 0.7, None),
                      ("lemore", (128, 128), SYN_K, 1.5, 0.05, 2.0)])
    return r


def test_load_runs_and_best_run(results):
    runs = tables.load_runs(results)
    assert len(runs) == 6
    best = tables.best_runs(runs)
    assert len(best) == 5
    lemore = best[(best.dataset == "ade20k") & (best.model == "lemore")].iloc[0]
    assert lemore.miou == 31.5 and lemore.iters == 2000


def test_seeds_are_averaged_with_std_and_n(results):
    for seed, miou in ((1, 72.0), (2, 74.0)):  # seed 0 (70.0) is in the fixture
        write_run(results, "synthetic", "lemore", miou, crop=(128, 128), sub=False, seed=seed)
    write_run(results, "synthetic", "lemore", 10.0, iters=50, crop=(128, 128), sub=False, seed=3)  # another setting
    best = tables.best_runs(tables.load_runs(results))
    row = best[(best.dataset == "synthetic") & (best.model == "lemore")].iloc[0]
    assert (row.miou, row.miou_std, row.n, row.seeds) == (72.0, 2.0, 3, "0,1,2")
    assert row.per_class_iou == {"a": 72.0} and row.run_name == "lemore_16x1-100_synthetic-128x128"  # seed 0's
    single = best[(best.dataset == "ade20k") & (best.model == "lemore")].iloc[0]
    assert single.n == 1 and math.isnan(single.miou_std)
    ours = tables.ours_table("synthetic", best, tables.load_profile(results))
    assert ours[["n", "miou", "miou std"]].values.tolist() == [[3, 72.0, 2.0]]
    t1 = tables.paper_vs_ours("table1_ade20k", best, tables.load_profile(results))
    lem = t1[t1["ours: model"] == "lemore"].iloc[0]
    assert lem["ours: n"] == 1 and math.isnan(lem["miou std (ours)"]) and lem["miou (ours)"] == 31.5


def write_latency(results, ratios: dict, setting: str = tables.LATENCY_SETTING):
    """A results/benchmarks/latency.json with a summary entry per model (as benchmarks/latency.py writes it)."""
    (results / "benchmarks").mkdir(parents=True, exist_ok=True)
    summary = {setting: {m: {"variant": "fused", "median_ms": 100 * r, "ratio": r} for m, r in ratios.items()}}
    summary[setting]["fastest"] = "lemore"  # not a model: ignored
    summary["eager, 1 thread | output"] = {m: {"ratio": 9.0} for m in ratios}  # another setting: not read
    (results / "benchmarks" / "latency.json").write_text(json.dumps({"summary": summary}))


def _table1(results):
    runs, prof = tables.best_runs(tables.load_runs(results)), tables.load_profile(results)
    return tables.paper_vs_ours("table1_ade20k", runs, prof, latency=tables.load_latency_ratios(results))


def test_table1_paper_vs_ours(results):
    write_latency(results, {"lemore": 0.62, "lraspp_mobilenet_v3_large": 1.0, "segformer_b0": 3.6})
    df = _table1(results)
    paper = load_table("table1_ade20k")
    block = df[df.group != tables.BEYOND_GROUP].reset_index(drop=True)
    assert len(block) == len(paper) and (block.source == "LeMoRe (ICIP 2025), Table 1").all()
    # The paper's numbers appear unchanged and only in the "(published)" columns.
    for m in ("miou", "gflops", "params_m", "latency_ms"):
        pd.testing.assert_series_equal(block[f"{m} (published)"], paper[m].astype(float), check_names=False)
    row = df[df.model == "LeMoRe"].iloc[0]
    assert row["miou (ours)"] == 31.5
    assert row["Δ miou"] == pytest.approx(31.5 - 33.5)
    assert row["gflops (ours)"] == 0.81
    assert row["ours: model"] == "lemore" and row["ours: run"].startswith("lemore_16x1-2000")
    seg = df[df.model == "SegFormer"].iloc[0]
    assert seg["miou (ours)"] == 35.0 and seg["params_m (ours)"] == 3.75
    # Rows we did not reproduce stay empty: nothing is copied from the paper into "ours".
    psp = df[df.model == "PSPNet"].iloc[0]
    assert all(math.isnan(psp[f"{m} (ours)"]) for m in ("miou", "gflops", "params_m"))
    assert math.isnan(psp["latency ratio (ours)"]) and psp["ours: model"] == ""


def test_table1_latency_is_a_ratio_to_lraspp_not_a_difference_of_machines(results):
    write_latency(results, {"lemore": 0.62, "lemore_star": 0.46, "lraspp_mobilenet_v3_large": 1.0})
    df = _table1(results)
    assert not [c for c in df.columns if c in ("latency_ms (ours)", "Δ latency_ms")]
    lemore = df[df.model == "LeMoRe"].iloc[0]
    assert lemore["latency ratio (published)"] == pytest.approx(24 / 51)  # the paper's 0.47
    assert lemore["latency ratio (ours)"] == 0.62  # from latency.json's ORT 1-thread summary, not the eager one
    lr = df[(df.model == "LR-ASPP") & (df.encoder == "MobileNetV3-Large")].iloc[0]
    assert lr["latency ratio (published)"] == 1.0 and lr["latency ratio (ours)"] == 1.0
    assert df[df.model.str.startswith("LeMoRe*")].iloc[0]["latency ratio (ours)"] == 0.46
    seg = df[df.model == "SegFormer"].iloc[0]  # not in that run: empty, not 0
    assert seg["latency ratio (published)"] == pytest.approx(308 / 51) and math.isnan(seg["latency ratio (ours)"])
    pem = df[df.model == "PEM"].iloc[0]  # no published latency: no published ratio
    assert math.isnan(pem["latency ratio (published)"])
    # without the benchmark file every "ours" ratio is empty
    (results / "benchmarks" / "latency.json").unlink()
    assert tables.load_latency_ratios(results) == {} and _table1(results)["latency ratio (ours)"].isna().all()


def test_table1_beyond_the_paper_block(results):
    from lemore.paper import load_peers

    write_profile(results, [("topformer_t", (512, 512), 150, 1.39, 0.58, 50.0),
                            ("lraspp_mobilenet_v3_large_reduced", (512, 512), 150, 1.77, 1.39, 60.0)], "peers")
    write_run(results, "ade20k", "seaformer_t", 34.0)
    write_latency(results, {"topformer_t": 0.5, "lraspp_mobilenet_v3_large": 1.0})
    df = _table1(results)
    beyond = df[df.group == tables.BEYOND_GROUP]
    peers = load_peers()
    assert list(beyond.model) == list(peers.model) == ["TopFormer-T", "SeaFormer-T"]
    assert list(beyond["ours: model"]) == ["topformer_t", "seaformer_t"]
    assert list(beyond.source) == list(peers.short_source) and all("official README" in s for s in beyond.source)
    tf, sf = beyond.iloc[0], beyond.iloc[1]
    assert (tf["miou (published)"], tf["gflops (published)"], tf["params_m (published)"]) == (33.6, 0.6, 1.4)
    assert (sf["miou (published)"], sf["gflops (published)"], sf["params_m (published)"]) == (35.0, 0.6, 1.7)
    assert tf["params_m (ours)"] == 1.39 and tf["Δ gflops"] == pytest.approx(0.58 - 0.6)
    assert math.isnan(tf["miou (ours)"]) and sf["miou (ours)"] == 34.0  # mIoU only where a run exists
    assert tf["latency ratio (ours)"] == 0.5 and math.isnan(sf["latency ratio (ours)"])
    assert beyond["latency ratio (published)"].isna().all()  # measured on other hardware than the paper's 51 ms
    red = df[df.encoder == "MobileNetV3-Large-reduce"].iloc[0]  # a paper row: now with ours beside it
    assert red["ours: model"] == "lraspp_mobilenet_v3_large_reduced" and red["params_m (ours)"] == 1.77
    assert red["latency ratio (published)"] == pytest.approx(33 / 51)


def test_ablation_and_pascal_context(results):
    runs, prof = tables.best_runs(tables.load_runs(results)), tables.load_profile(results)
    t2 = tables.paper_vs_ours("table2_ablation", runs, prof)
    first = t2.iloc[0]  # transverse only, no nested attention -> lemore_t
    assert (first.transverse, first.frontal, first.nested_attention) == (1, 0, 0)
    assert first["miou (ours)"] == 25.0 and first["gflops (ours)"] == 0.7 and first["params_m (ours)"] == 1.1
    last = t2.iloc[-1]  # everything on -> lemore
    assert last["miou (ours)"] == 31.5
    t4 = tables.paper_vs_ours("table4_pascal_context", runs, prof)
    row = t4[t4.model == "LeMoRe"].iloc[0]
    assert row["miou59 (ours)"] == 34.0 and row["miou60 (ours)"] == 31.0 and row["gflops (ours)"] == 0.7
    assert row["Δ miou59"] == pytest.approx(34.0 - 35.76)


def test_imagenet_top1_from_pretrain_results(results):
    (results / "pretrain").mkdir()
    (results / "pretrain" / "status.json").write_text(json.dumps({"enabled": False}))  # no top1: ignored
    assert tables.load_pretrain(results) is None
    (results / "pretrain" / "run.json").write_text(json.dumps({"run_name": "cls", "metrics": {"top1": 60.5}}))
    df = tables.paper_vs_ours("table_imagenet", tables.load_runs(results), tables.load_profile(results),
                              tables.load_pretrain(results))
    assert df.iloc[0]["top1 (ours)"] == 60.5 and df.iloc[0]["top1 (paper)"] == 64.1


def test_build_all_on_empty_results(tmp_path):
    built = tables.build_all(tmp_path)
    assert set(built) == set(TABLES)
    for name, df in built.items():
        ours = [c for c in df.columns if c.endswith("(ours)")]
        assert ours and df[ours].isna().all().all(), name


def test_ours_table_for_dataset_without_paper_table(results):
    built = tables.build_all(results)
    syn = built["ours_synthetic"]
    assert list(syn.model) == ["LeMoRe"]
    row = syn.iloc[0]
    assert row.miou == 70.0 and row["gflops (128x128)"] == 0.05 and row["latency_ms (128x128)"] == 2.0
    assert row.params_m == 1.55  # the trained model's own count, from its results file


def test_write_all_formats(results, tmp_path):
    built = tables.build_all(results)
    out = tmp_path / "tables"
    written = tables.write_all(built, out)
    for name, df in built.items():
        for ext in ("csv", "md", "tex"):
            assert (out / f"{name}.{ext}") in written and (out / f"{name}.{ext}").stat().st_size > 0
        back = pd.read_csv(out / f"{name}.csv")
        assert list(back.columns) == list(df.columns)
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporary files
    md = (out / "table1_ade20k.md").read_text()
    assert "| miou (published) | miou (ours) | Δ miou |" in md and "| – |" in md and "31.50" in md
    assert "| TopFormer-T | TopFormer-T | beyond the paper |" in md and "latency ratio (ours)" in md
    tex = (out / "table1_ade20k.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\Delta$ miou" in tex and r"params\_m (published)" in tex
    assert "| miou (paper) | miou (ours) | Δ miou |" in (out / "table2_ablation.md").read_text()
    assert "LeMoRe* (448x448 training)" in tex
    index = (out / "index.md").read_text()
    assert all(f"[{name}]({name}.md)" in index for name in built)


def test_latex_escape():
    assert tables.latex_escape("a_b & 50% Δ") == r"a\_b \& 50\% $\Delta$"


def test_profile_plan():
    import lemore

    plan = tables.profile_plan(["segformer_b0", "lemore"], ["synthetic", "cityscapes"], lemore.list_models())
    keys = [(m, s, k) for m, s, k, _ in plan]
    assert len(keys) == len(set(keys))
    lat = {(m, s, k): with_latency for m, s, k, with_latency in plan}
    for m in lemore.list_models():
        assert any(p[0] == m and p[3] for p in plan), m  # every model is timed at least once
    assert lat[("lemore", (512, 512), 150)] and lat[("lemore_star", (448, 448), 150)]
    assert lat[("lemore_cls", (224, 224), 1000)]
    assert lat[("lemore", (128, 128), SYN_K)] and lat[("segformer_b0", (512, 1024), 19)]
    assert lat[("lemore", (480, 480), 60)] is False  # PASCAL Context: GFLOPs only (the paper has no latency)


def test_bubble_frame(results):
    runs, prof = tables.best_runs(tables.load_runs(results)), tables.load_profile(results)
    ade = tables.bubble_frame("ade20k", runs, prof)
    ours = ade[ade.source == "ours"].set_index("label")
    assert ours.loc["LeMoRe", "miou"] == 31.5 and ours.loc["LeMoRe", "gflops"] == 0.81
    paper = ade[ade.source == "paper"]
    assert "LeMoRe" in set(paper.label) and "SegFormer (MiT-B0)" in set(paper.label)  # reproduced row shown
    assert "PSPNet (MobileNetV2)" not in set(paper.label)  # heavyweight and not reproduced
    syn = tables.bubble_frame("synthetic", runs, prof)
    assert set(syn.source) == {"ours"} and syn.iloc[0].latency_ms == 2.0


# ------------------------------------------------------------------------------------------ the CamVid study
@pytest.fixture
def camvid(tmp_path):
    """The fake results/camvid of tests/camvid_results.py (its docstring holds the hand-checked values)."""
    return camvid_results.make_results(tmp_path / "results" / "camvid")


def test_camvid_models_table(camvid):
    built = tables.camvid_tables(camvid)
    assert list(built) == ["camvid_models", "camvid_ablation", "camvid_gains", "camvid_pairs", "camvid_plateau",
                           "camvid_schedules", "camvid_times"]
    df = built["camvid_models"]
    # sorted by mean val mIoU; the Table 2 variants are not study models; TopFormer-T (never run) last
    assert list(df.registry) == ["segformer_b0", "lemore", "lraspp_mobilenet_v3_large", "topformer_t"]
    assert list(df.model) == ["SegFormer-B0", "LeMoRe", "LR-ASPP MobileNetV3-L", "TopFormer-T"]
    rows = df.set_index("registry")
    lem, seg, lr, top = (rows.loc[m] for m in ("lemore", "segformer_b0", "lraspp_mobilenet_v3_large", "topformer_t"))
    # the older 400-iteration run (mIoU 10) is another setting: not averaged in
    assert (lem["val miou"], lem["val miou std"], lem.n, lem.seeds) == (42.0, 2.0, 3, "0,1,2")
    assert seg["val miou std"] == pytest.approx(math.sqrt(2)) and seg.n == 2
    assert lr.n == 1 and math.isnan(lr["val miou std"])
    assert lem["iou sky"] == 52.0 and lem["iou pole"] == 2.0 and lem["iou car"] == 42.0  # per class: seed means
    assert [c for c in df.columns if c.startswith("iou ")] == [f"iou {c}" for c in CAMVID_CLASSES]
    assert (lem.params_m, lem["gflops (360x480)"], lem["latency_ms (360x480)"]) == (1.6, 0.9, 20.0)
    assert lem["latency ratio to LR-ASPP"] == 0.5 and lr["latency ratio to LR-ASPP"] == 1.0
    assert lem["last-quarter gain"] == pytest.approx(0.7) and seg["last-quarter gain"] == pytest.approx(2.0)
    assert (lem["ade20k miou (published)"], lem["ade20k source (published)"]) == (33.5, "LeMoRe paper, Table 1")
    assert seg["ade20k miou (published)"] == 37.4
    assert lem.initialisation == tables.FROM_SCRATCH == "from scratch, no ImageNet weights"
    # each model at the learning rate its runs used: the camvid recipe's searched rates
    assert (lem.lr, seg.lr, lr.lr, top.lr) == ("0.004", "0.001", "0.002", "")
    assert "SEARCHED_LRS" in tables.CAMVID_CAPTIONS["camvid_models"]
    # a model without runs: empty accuracy cells, its measured cost and the published figure only
    assert top.n == 0 and top.seeds == "" and top.initialisation == ""
    assert all(math.isnan(top[c]) for c in ("val miou", "val miou std", "iou sky", "last-quarter gain"))
    assert top.params_m == 1.4 and top["ade20k miou (published)"] == 33.6
    assert "TopFormer" in top["ade20k source (published)"]
    assert not [c for c in df.columns if "ours" in c or c.endswith("(paper)")]  # ours unmarked, theirs "published"


def test_camvid_ablation_table(camvid):
    ab = tables.camvid_tables(camvid)["camvid_ablation"]
    paper = load_table("table2_ablation")
    assert list(ab.row) == ["T", "T+F", "T+F+L", "T+F+L+CA", "T+NA", "T+F+NA", "T+F+L+NA", "T+F+L+CA+NA"]
    assert list(ab.registry) == tables.ablation_order() and ab.registry.iloc[-1] == "lemore"
    for c in tables.SWITCHES:
        assert ab[c].tolist() == paper[c].tolist()
    for ours, theirs in (("params_m (paper)", "params_m"), ("gflops (paper)", "gflops"),
                         ("ade20k miou (paper)", "miou")):
        assert ab[ours].tolist() == paper[theirs].tolist()
    cells = ab.set_index("row")
    assert (cells.loc["T", "camvid miou (ours)"], cells.loc["T", "n (ours)"]) == (31.0, 3)
    assert cells.loc["T", "camvid miou std (ours)"] == pytest.approx(1.0)
    assert (cells.loc["T+F+L+CA+NA", "camvid miou (ours)"], cells.loc["T+F+L+CA+NA", "n (ours)"]) == (42.0, 3)
    not_run = cells.loc[["T+NA", "T+F+L+NA"]]
    assert not_run["camvid miou (ours)"].isna().all() and (not_run["n (ours)"] == 0).all()


def test_camvid_gains_table(camvid):
    gains = tables.camvid_tables(camvid)["camvid_gains"].set_index("switch")
    assert list(gains.index) == ["+F", "+L", "+CA", "+NA on T", "+NA on T+F", "+NA on T+F+L", "+NA on T+F+L+CA"]
    assert list(gains["from"]) == ["T", "T+F", "T+F+L", "T", "T+F", "T+F+L", "T+F+L+CA"]
    # switch: (paper's ADE20K gain, ours, 95% interval, Welch's p, n, verdict); hand-worked in tests/camvid_results.py
    # (interval = gain -+ t_{0.975, df} se with the Welch-Satterthwaite df)
    expected = {
        "+F": (0.4, 5.0, (5 - 2.7764 * math.sqrt(2 / 3), 5 + 2.7764 * math.sqrt(2 / 3)), 0.0036, "3, 3", "holds"),
        "+L": (1.5, -3.0, (-3 - 2.7764 * math.sqrt(2 / 3), -3 + 2.7764 * math.sqrt(2 / 3)), 0.0213, "3, 3",
               "reversed"),
        "+CA": (0.5, 0.0, (-1.0, 1.0), 1.0, "3, 2", "undecided"),
        "+NA on T+F": (5.1, 0.0, (math.nan, math.nan), math.nan, "3, 1", "one seed"),
        "+NA on T+F+L+CA": (3.9, 9.0, (4.66, 13.34), 0.0085, "2, 3", "holds"),
    }
    for switch, (paper, ours, (low, high), p, n, verdict) in expected.items():
        row = gains.loc[switch]
        assert row["ade20k gain (paper)"] == pytest.approx(paper)
        assert row["camvid gain (ours)"] == pytest.approx(ours, abs=1e-12)
        if switch != "+CA":
            assert row["camvid gain 95% ci low (ours)"] == pytest.approx(low, abs=0.01, nan_ok=True)
            assert row["camvid gain 95% ci high (ours)"] == pytest.approx(high, abs=0.01, nan_ok=True)
        assert row["welch p (ours)"] == pytest.approx(p, abs=1e-4, nan_ok=True)
        assert row["n (from, to)"] == n and row.verdict == verdict, switch
    ca = gains.loc["+CA"]  # an interval symmetric about 0 that the verdict reads as undecided
    assert ca["camvid gain 95% ci low (ours)"] == pytest.approx(-ca["camvid gain 95% ci high (ours)"])
    for switch in ("+NA on T", "+NA on T+F+L"):  # a row not run: empty, never the paper's number
        row = gains.loc[switch]
        assert math.isnan(row["camvid gain (ours)"]) and row.verdict == "" and row["ade20k gain (paper)"] > 0


def test_welch_gain_is_scipys_test():
    from scipy import stats

    before, after = [30.0, 31.5, 32.0], [33.0, 35.5, 34.0, 36.0]
    gain, low, high, p = tables.welch_gain(before, after)
    ref = stats.ttest_ind_from_stats(np.mean(after), np.std(after, ddof=1), 4, np.mean(before),
                                     np.std(before, ddof=1), 3, equal_var=False)
    assert gain == pytest.approx(np.mean(after) - np.mean(before)) and p == pytest.approx(ref.pvalue)
    assert low < gain < high and (low > 0) == (p < 0.05)  # the interval excludes 0 exactly when p < 0.05
    assert all(math.isnan(v) for v in tables.welch_gain([], after))
    g, *rest = tables.welch_gain([31.0], after)  # one seed: the gain, nothing to test with
    assert g == pytest.approx(np.mean(after) - 31.0) and all(math.isnan(v) for v in rest)


def test_camvid_pairs_table(camvid):
    from scipy import stats

    pairs = tables.camvid_tables(camvid)["camvid_pairs"]
    # LeMoRe against every other study model, in the models table's order; LeMoRe itself not a row
    assert list(pairs.registry) == ["segformer_b0", "lraspp_mobilenet_v3_large", "topformer_t"]
    seg, lr, top = (pairs.set_index("registry").loc[m] for m in pairs.registry)
    # LeMoRe 40, 42, 44 against SegFormer-B0 45, 47: -4, se sqrt(4/3 + 1), Welch's t on 2.88 df
    ref = stats.ttest_ind([40.0, 42.0, 44.0], [45.0, 47.0], equal_var=False)
    assert seg["difference (reference - model)"] == pytest.approx(-4.0) and seg["n (model, reference)"] == "2, 3"
    assert seg["welch p"] == pytest.approx(ref.pvalue) and 0.05 < seg["welch p"] < 0.1
    ci = ref.confidence_interval(0.95)
    assert (seg["95% ci low"], seg["95% ci high"]) == pytest.approx((ci.low, ci.high))
    assert seg["95% ci low"] < 0 < seg["95% ci high"] and seg.verdict == "undecided"
    assert seg["latency ratio (reference / model)"] == pytest.approx(20.0 / 120.0)
    assert lr["difference (reference - model)"] == pytest.approx(4.0) and lr.verdict == "one seed"
    assert math.isnan(lr["welch p"]) and lr["latency ratio (reference / model)"] == pytest.approx(0.5)
    assert top["n (model, reference)"] == "0, 3" and top.verdict == "" and math.isnan(top["difference (reference - model)"])


@pytest.mark.parametrize("others,verdict", [([30.0, 31.0, 32.0], "LeMoRe ahead"), ([50.0, 51.0, 52.0], "LeMoRe behind"),
                                           ([41.0, 42.0, 43.0], "undecided")])
def test_pairs_verdict_reads_welchs_p(others, verdict):
    runs = pd.DataFrame({"model": ["lemore"] * 3 + ["seaformer_t"] * 3, "miou": [40.0, 42.0, 44.0, *others]})
    models = pd.DataFrame({"model": ["LeMoRe", "SeaFormer-T"], "registry": ["lemore", "seaformer_t"],
                           "val miou": [42.0, float(np.mean(others))], "latency_ms (360x480)": [20.0, 10.0]})
    row = tables.study_pairs_table(runs, models, "360x480").iloc[0]
    assert row.verdict == verdict and row["latency ratio (reference / model)"] == 2.0
    assert tables.study_pairs_table(runs, models.iloc[1:], "360x480").empty  # no LeMoRe row: nothing to compare


def test_camvid_schedules_table(camvid):
    df = tables.camvid_tables(camvid)["camvid_schedules"].set_index("registry")
    assert list(df.index) == ["segformer_b0", "lemore", "lraspp_mobilenet_v3_large"]  # TopFormer-T: no run at all
    lem, seg, lr = (df.loc[m] for m in ("lemore", "segformer_b0", "lraspp_mobilenet_v3_large"))
    assert (lem.iters, lem["seed-0 miou"], lem["rank"]) == (800, 40.0, 2)
    assert (lem["iters (long)"], lem["seed-0 miou (long)"], lem["rank (long)"]) == (1600, 45.0, 1)
    assert lem["last-quarter gain"] == pytest.approx(0.5) and lem["last-quarter gain (long)"] == pytest.approx(0.3)
    assert (seg["rank"], seg["rank (long)"]) == (1, 2)
    assert lr["rank"] == 3 and lr["iters (long)"] == 0 and math.isnan(lr["rank (long)"])
    assert tables.rank_changes(df) == [("SegFormer-B0", "LeMoRe")]
    assert tables.camvid_tables(camvid, long_dir=camvid / "nowhere")["camvid_schedules"]["rank (long)"].isna().all()


def test_camvid_times_table(camvid):
    times = tables.camvid_tables(camvid)["camvid_times"]
    # every run that stands for its model (not the older 400-iteration one), the study's models in the models
    # table's order, then Table 2's rows in the paper's order, then the long runs; each run 10 s + 1 s at 2 threads
    assert list(times.stage) == [
        "finetune@segformer_b0-0", "finetune@segformer_b0-1", "finetune@lemore-0", "finetune@lemore-1",
        "finetune@lemore-2", "finetune@lraspp_mobilenet_v3_large-0", *[f"ablation@{m}-{s}" for m, n in (
            ("lemore_t", 3), ("lemore_tf", 3), ("lemore_tfl", 3), ("lemore_tfl_ca", 2), ("lemore_tf_na", 1))
            for s in range(n)], "long@segformer_b0", "long@lemore", "total"]
    runs = times.iloc[:-1]
    assert runs["minutes"].tolist() == pytest.approx([11 / 60] * len(runs))
    assert runs["core-minutes"].tolist() == pytest.approx([22 / 60] * len(runs)) and (runs.threads == 2).all()
    assert runs[runs.stage.str.startswith("long@")].iters.tolist() == [1600, 1600]
    total = times.iloc[-1]
    assert total["minutes"] == pytest.approx(11 / 60 * len(runs)) and total["eval minutes"] == pytest.approx(
        len(runs) / 60)
    assert tables.camvid_tables(camvid / "nowhere")["camvid_times"].empty


def test_each_gain_switches_one_column_on():
    for switch, a, b in tables.ABLATION_GAINS:
        sa, sb = tables.ABLATION_MODELS[a], tables.ABLATION_MODELS[b]
        changed = [c for c, x, y in zip(tables.SWITCHES, sa, sb) if x != y]
        assert len(changed) == 1 and sb[tables.SWITCHES.index(changed[0])] == 1, switch


@pytest.mark.parametrize("paper,gain,p,verdict", [
    (0.4, 4.0, 0.01, "holds"), (-0.4, -4.0, 0.01, "holds"), (1.5, -2.0, 0.01, "reversed"), (-1.0, 3.0, 0.04, "reversed"),
    (0.5, 0.9, 0.2, "undecided"), (1.0, 1.0, 0.05, "undecided"),  # exactly alpha: not below it
    (1.0, 1.0, math.nan, "one seed"), (1.0, math.nan, 0.01, ""),
])
def test_gain_verdict(paper, gain, p, verdict):
    assert tables.gain_verdict(paper, gain, p) == verdict


def test_last_quarter_gain():
    curve = [{"iteration": it, "miou": m} for it, m in ((250, 20.0), (500, 30.0), (750, 38.0), (1000, 40.5))]
    assert tables.last_quarter_gain(curve, 1000) == 2.5
    off = [{"iteration": 700, "miou": 38.0}, {"iteration": 1000, "miou": 39.0}]  # 3/4 = 750, 50 <= 1000/16 away
    assert tables.last_quarter_gain(off, 1000) == 1.0
    assert math.isnan(tables.last_quarter_gain([{"iteration": 600, "miou": 1.0}, {"iteration": 1000, "miou": 2.0}],
                                               1000))  # nothing near 3/4 of the schedule
    assert math.isnan(tables.last_quarter_gain(curve[:-1], 1000))  # no evaluation at the end
    assert math.isnan(tables.last_quarter_gain([], 1000))


def test_camvid_plateau_table(camvid):
    pl = tables.camvid_tables(camvid)["camvid_plateau"]
    curve_cols = [c for c in pl.columns if c.startswith("miou @")]
    assert curve_cols == [f"miou @{it}" for it in range(100, 801, 100)]  # the old 400-iteration run is left out
    lem = pl[pl.registry == "lemore"]
    assert list(lem.seed) == ["0", "1", "2", "mean"]
    assert lem["last-quarter gain"].tolist() == pytest.approx([0.5, 0.7, 0.9, 0.7])
    assert list(lem["plateau (< 1.0)"]) == ["", "", "", "yes"]
    assert lem["miou @600"].tolist() == pytest.approx([39.5, 41.3, 43.1, 41.3])
    assert lem["miou @800"].iloc[-1] == pytest.approx(42.0)
    means = pl[pl.seed == "mean"].set_index("registry")
    assert means.loc["segformer_b0", "plateau (< 1.0)"] == "no"
    assert means.loc["lraspp_mobilenet_v3_large", "plateau (< 1.0)"] == "no"  # a gain of exactly 1.0
    # the study's models first (the models table's order), then Table 2's rows in the paper's order
    assert list(means.index) == ["segformer_b0", "lemore", "lraspp_mobilenet_v3_large", "lemore_t", "lemore_tf",
                                 "lemore_tfl", "lemore_tfl_ca", "lemore_tf_na"]
    assert pl[pl.registry == "lemore_tf_na"].model.iloc[0] == "LeMoRe (T+F+NA)"


def test_setting_runs_and_study_models(camvid):
    runs = tables.load_runs(camvid)
    assert len(runs) == sum(len(v) for v in camvid_results.RUNS.values()) + 1
    assert runs.curve.map(len).eq(8).all() and (runs.pretrained == "").all()
    chosen = tables.setting_runs(runs)
    assert len(chosen) == len(runs) - 1 and 10.0 not in set(chosen.miou)
    assert list(chosen[chosen.model == "lemore"].seed) == [0, 1, 2]
    profile, protocol = tables.load_study_profile(camvid)
    assert protocol["cpu"] == camvid_results.CPU and list(profile["size"].unique()) == ["360x480"]
    assert tables.study_models(chosen, profile) == ["lemore", "segformer_b0", "lraspp_mobilenet_v3_large",
                                                    "topformer_t"]


def test_camvid_tables_without_results(tmp_path):
    built = tables.camvid_tables(tmp_path)
    assert built["camvid_models"].empty and "val miou" in built["camvid_models"].columns
    assert built["camvid_plateau"].empty
    ab = built["camvid_ablation"]
    assert len(ab) == 8 and ab["camvid miou (ours)"].isna().all() and ab["ade20k miou (paper)"].notna().all()
    assert (built["camvid_gains"].verdict == "").all()
    written = tables.write_camvid_tables(built, tmp_path / "tables")
    assert (tmp_path / "tables" / "index.md") in written and "_(no rows)_" in (tmp_path / "tables" /
                                                                             "camvid_models.md").read_text()


def test_write_camvid_tables(camvid, tmp_path):
    built = tables.camvid_tables(camvid)
    out = tmp_path / "tables"
    written = tables.write_camvid_tables(built, out)
    for name, df in built.items():
        for ext in ("csv", "md", "tex"):
            assert (out / f"{name}.{ext}") in written
        assert list(pd.read_csv(out / f"{name}.csv").columns) == list(df.columns)
    gains = (out / "camvid_gains.md").read_text()
    assert "| +L | T+F | T+F+L | 1.50 | -3.00 | -5.27 | -0.73 | 0.021 | 3, 3 | reversed |" in gains
    assert "Welch's t-test" in gains and "p < 0.05" in gains  # the rule is in the caption
    models = (out / "camvid_models.md").read_text()
    assert "from scratch (no ImageNet weights)" in models and "| – |" in models  # TopFormer-T's empty cells
    index = (out / "index.md").read_text()
    assert all(f"[{name}]({name}.md)" in index for name in built)
