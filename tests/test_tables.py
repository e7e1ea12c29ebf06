"""lemore.tables: paper-vs-ours tables built from results files only."""

import json
import math

import pandas as pd
import pytest

from lemore import tables
from lemore.paper import TABLES, load_table


def write_run(results, dataset, model, miou, iters=100, crop=(512, 512), extra=None, sub=True):
    name = f"{model}_16x1-{iters}_{dataset}-{crop[1]}x{crop[0]}"
    metrics = {"aacc": 80.0, "miou": miou, "macc": 50.0, "per_class_iou": {"a": miou}, "num_images": 3}
    metrics.update(extra or {})
    obj = {"run_name": name, "iteration": iters, "params_m": 1.55, "checkpoint": f"runs/{name}/model.pt",
           "config": {"data": {"dataset": dataset, "crop_size": list(crop)}, "model": {"name": model},
                      "train": {"iters": iters, "batch_size": 16}},
           "metrics": metrics}
    folder = results / "metrics" / dataset / model if sub else results / "metrics"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(obj))
    return name


def write_profile(results, rows):
    (results / "profile").mkdir(parents=True, exist_ok=True)
    full = [dict(model=m, num_classes=k, input_size=list(size), params_m=p, gflops=g, latency_ms=lat, threads=2)
            for m, size, k, p, g, lat in rows]
    (results / "profile" / "profile.json").write_text(json.dumps({"protocol": {"device": "cpu"}, "rows": full}))


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
                      ("lemore", (128, 128), 8, 1.5, 0.05, 2.0)])
    return r


def test_load_runs_and_best_run(results):
    runs = tables.load_runs(results)
    assert len(runs) == 6
    best = tables.best_runs(runs)
    assert len(best) == 5
    lemore = best[(best.dataset == "ade20k") & (best.model == "lemore")].iloc[0]
    assert lemore.miou == 31.5 and lemore.iters == 2000


def test_table1_paper_vs_ours(results):
    runs, prof = tables.best_runs(tables.load_runs(results)), tables.load_profile(results)
    df = tables.paper_vs_ours("table1_ade20k", runs, prof)
    paper = load_table("table1_ade20k")
    assert len(df) == len(paper)
    # The paper's numbers appear unchanged and only in the "(paper)" columns.
    for m in ("miou", "gflops", "params_m", "latency_ms"):
        pd.testing.assert_series_equal(df[f"{m} (paper)"], paper[m].astype(float), check_names=False)
    row = df[df.model == "LeMoRe"].iloc[0]
    assert row["miou (ours)"] == 31.5
    assert row["Δ miou"] == pytest.approx(31.5 - 33.5)
    assert row["gflops (ours)"] == 0.81 and row["latency_ms (ours)"] == 20.0
    assert row["ours: model"] == "lemore" and row["ours: run"].startswith("lemore_16x1-2000")
    seg = df[df.model == "SegFormer"].iloc[0]
    assert seg["miou (ours)"] == 35.0 and seg["params_m (ours)"] == 3.75
    # Rows we did not reproduce stay empty: nothing is copied from the paper into "ours".
    psp = df[df.model == "PSPNet"].iloc[0]
    assert all(math.isnan(psp[f"{m} (ours)"]) for m in ("miou", "gflops", "params_m", "latency_ms"))
    assert psp["ours: model"] == ""


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
    assert "| miou (paper) | miou (ours) | Δ miou |" in md and "| – |" in md and "31.50" in md
    tex = (out / "table1_ade20k.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\Delta$ miou" in tex and r"params\_m (paper)" in tex
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
    assert lat[("lemore", (128, 128), 8)] and lat[("segformer_b0", (512, 1024), 19)]
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
