"""The model is the paper's model: params and GFLOPs of every configuration against the paper's tables.

Tolerances (docs/architecture.md): params within 3%, GFLOPs within 5%. The paper's values are read from the
shipped copies of its tables (lemore/paper/*.csv); the few quoted in the text are written here with their
source.
"""

import importlib
import json
import math
from pathlib import Path

import pytest

from lemore.cli import main as cli
from lemore.models.lemore import ABLATION_ROWS
from lemore.paper import load_table
from lemore.profiling import count_flops, profile_model

ROOT = Path(__file__).resolve().parents[1]

PARAMS_TOL, FLOPS_TOL = 0.03, 0.05
SWITCHES = ["transverse", "frontal", "lateral", "channel_attention", "nested_attention"]


def _table2():
    table = load_table("table2_ablation")
    by_switch = {v: k for k, v in ABLATION_ROWS.items()}
    for r in table.itertuples(index=False):
        key = tuple(bool(getattr(r, s)) for s in SWITCHES)
        yield pytest.param(by_switch[key], r.params_m, r.gflops, id=by_switch[key])


@pytest.mark.parametrize("name,paper_params,paper_gflops", list(_table2()))
def test_table2_row_budget(name, paper_params, paper_gflops):
    row = profile_model(name, 150, (512, 512))
    assert row.params_m == pytest.approx(paper_params, rel=PARAMS_TOL)
    assert row.gflops == pytest.approx(paper_gflops, rel=FLOPS_TOL)


def _paper_lemore(table: str, col: str = "gflops") -> float:
    t = load_table(table)
    return float(t.loc[t["model"] == "LeMoRe", col].iloc[0])


@pytest.mark.parametrize("label,name,classes,size,table", [
    ("cityscapes", "lemore", 19, (512, 1024), "table3_cityscapes"),
    ("pascal_context", "lemore", 60, (480, 480), "table4_pascal_context"),
    ("coco_stuff", "lemore", 171, (512, 512), "table5_coco_stuff"),
])
def test_dataset_budgets(label, name, classes, size, table):
    row = profile_model(name, classes, size)
    assert row.gflops == pytest.approx(_paper_lemore(table), rel=FLOPS_TOL)
    assert row.params_m == pytest.approx(1.6, rel=PARAMS_TOL)  # "~1.6M" for every dataset (paper text)


def test_lemore_star_budget():
    t = load_table("table1_ade20k")
    paper = t[t["model"].str.startswith("LeMoRe*")].iloc[0]
    row = profile_model("lemore_star", 150, (448, 448))
    assert row.gflops == pytest.approx(paper.gflops, rel=FLOPS_TOL)
    assert row.params_m == pytest.approx(paper.params_m, rel=PARAMS_TOL)


def test_classifier_params():
    paper = float(load_table("table_imagenet")["params_m"].iloc[0])  # 1.67M
    row = profile_model("lemore_cls", 1000, (224, 224))
    assert row.params_m == pytest.approx(paper, rel=PARAMS_TOL)


def test_segformer_b0_budget():
    t = load_table("table1_ade20k")
    paper = t[(t["model"] == "SegFormer") & (t["encoder"] == "MiT-B0")].iloc[0]
    row = profile_model("segformer_b0", 150, (512, 512))
    assert row.params_m == pytest.approx(paper.params_m, rel=0.05)
    assert row.gflops == pytest.approx(paper.gflops, rel=0.05)


# ------------------------------------------------------------ peers (issue 11): params 5%, GFLOPs 10% of published
PEER_PARAMS_TOL, PEER_FLOPS_TOL = 0.05, 0.10


def _peer(registry: str):
    from lemore.paper import load_peers

    peers = load_peers()
    return peers[peers.registry == registry].iloc[0]


def test_topformer_t_budget():
    published = _peer("topformer_t")  # 1.4M, 0.6 GFLOPs (TopFormer README)
    row = profile_model("topformer_t", 150, (512, 512))
    assert row.params_m == pytest.approx(published.params_m, rel=PEER_PARAMS_TOL)
    assert row.gflops == pytest.approx(published.gflops, rel=PEER_FLOPS_TOL)


def test_seaformer_t_budget():
    published = _peer("seaformer_t")  # 1.7M, 0.6 GFLOPs (SeaFormer README)
    row = profile_model("seaformer_t", 150, (512, 512))
    assert row.params_m == pytest.approx(published.params_m, rel=PEER_PARAMS_TOL)
    assert row.gflops == pytest.approx(published.gflops, rel=PEER_FLOPS_TOL)


def _reduced_row():
    t = load_table("table1_ade20k")
    return t[(t["model"] == "LR-ASPP") & (t["encoder"] == "MobileNetV3-Large-reduce")].iloc[0]


def test_lraspp_reduced_gflops_budget():
    row = profile_model("lraspp_mobilenet_v3_large_reduced", 150, (512, 512))
    assert row.gflops == pytest.approx(_reduced_row().gflops, rel=PEER_FLOPS_TOL)  # 1.39 vs 1.3


@pytest.mark.xfail(strict=True, reason="torchvision's reduced-tail LR-ASPP has 1.77M parameters at 150 classes "
                   "(backbone 1.62M + LR-ASPP head and classifiers 0.15M); Table 1's 1.6M is close to the backbone "
                   "alone. "
                   "Not bent: docs/peers.md, 'The budget', explains it")
def test_lraspp_reduced_params_budget():
    row = profile_model("lraspp_mobilenet_v3_large_reduced", 150, (512, 512))
    assert row.params_m == pytest.approx(_reduced_row().params_m, rel=PEER_PARAMS_TOL)


def test_lraspp_reduced_params_are_what_the_readme_says():
    """The documented deviation itself: 1.77M in all, of which the backbone (features) is 1.62M."""
    import lemore

    model = lemore.create_model("lraspp_mobilenet_v3_large_reduced", num_classes=150)
    backbone = sum(p.numel() for p in model.net.backbone.parameters()) / 1e6
    total = sum(p.numel() for p in model.parameters()) / 1e6
    assert total == pytest.approx(1.769, abs=0.001) and backbone == pytest.approx(1.621, abs=0.001)


def test_budget_table_has_a_row_per_peer():
    from lemore.budget import PEER_FLOPS_TOL as B_FLOPS, PEER_PARAMS_TOL as B_PARAMS, peer_rows

    rows = {r.model: r for r in peer_rows()}
    assert set(rows) == {"topformer_t", "seaformer_t", "lraspp_mobilenet_v3_large_reduced"}
    assert (B_PARAMS, B_FLOPS) == (PEER_PARAMS_TOL, PEER_FLOPS_TOL)
    assert all(r.params_tol == B_PARAMS and r.flops_tol == B_FLOPS for r in rows.values())
    assert (rows["topformer_t"].paper_params_m, rows["topformer_t"].paper_gflops) == (1.4, 0.6)
    assert (rows["seaformer_t"].paper_params_m, rows["seaformer_t"].paper_gflops) == (1.7, 0.6)


def test_lemore_is_cheaper_than_its_peers():
    """Table 1's ordering: LeMoRe < LR-ASPP MobileNetV3-Large < SegFormer-B0 in GFLOPs."""
    g = {n: profile_model(n, 150, (512, 512)).gflops for n in ("lemore", "lraspp_mobilenet_v3_large", "segformer_b0")}
    assert g["lemore"] < g["lraspp_mobilenet_v3_large"] < g["segformer_b0"]


def test_count_flops_counts_attention():
    """Attention matmuls are in the count: removing the nested branches removes their 9->1 Q K^T maps."""
    import lemore

    nested = lemore.create_model("lemore")
    _, by_mod = count_flops(nested, (512, 512), by_module=True)
    assert "backbone" in by_mod and "classifier" in by_mod
    assert count_flops(nested, (512, 512)) > count_flops(lemore.create_model("lemore", nested_attention=False), (512, 512))


def test_profile_cli_writes_table_and_protocol(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert cli(["profile", "--models", "lemore", "--latency-runs", "2", "--warmup", "1", "--json", str(out),
                "--markdown", str(tmp_path / "p.md")]) == 0
    data = json.loads(out.read_text())
    assert "multiply-accumulates" in data["protocol"]["flops"]
    (row,) = data["rows"]
    assert row["model"] == "lemore" and row["latency_ms"] > 0 and row["threads"] >= 1
    assert "| lemore |" in capsys.readouterr().out and "| lemore |" in (tmp_path / "p.md").read_text()


def test_profile_cli_unknown_model():
    with pytest.raises(SystemExit, match="unknown model"):
        cli(["profile", "--models", "lemore_big"])


def test_engine_throughput_shares_the_splits_between_the_two_runs_of_a_case(tmp_path):
    """The two engine runs of a case decode each split once (before the first, so that their start-ups stay
    equal), the final evaluation reads the first images of val, and build_dataset is itself again after the block
    (also after an error inside it)."""
    import importlib.util

    import lemore.data as data
    from lemore.config import load

    spec = importlib.util.spec_from_file_location("engine_throughput", ROOT / "benchmarks" / "engine_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    root = bench.camvid_standin(tmp_path / "CamVid", n_train=4, n_val=3)
    cfg = load(dataset="camvid", overrides={"data.root": str(root)}).data
    real = data.build_dataset
    with bench.shared_splits(2):
        train = data.build_dataset(cfg, "train", cache=True)
        assert data.build_dataset(cfg, "train", cache=True) is train and train.cached and len(train) == 4
        val = data.build_dataset(cfg, "val", cache=True)
        assert len(val) == 2 and val.cached and val[1][0].shape == (3, 360, 480)
        assert len(data.build_dataset(cfg, "val", transform=None)) == 3  # an explicit pipeline is not shared
    assert data.build_dataset is real
    with bench.shared_splits(1, warm=cfg):  # both splits decoded on entry: neither run pays for it
        assert data.build_dataset(cfg, "train", cache=True).cached and len(data.build_dataset(cfg, "val")) == 1
    with pytest.raises(RuntimeError), bench.shared_splits(2):
        raise RuntimeError("inside")
    assert data.build_dataset is real


def test_engine_throughput_rejects_an_empty_final_evaluation(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("engine_throughput", ROOT / "benchmarks" / "engine_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(SystemExit):
        bench.main(["--engine-val-images", "0"])
    assert "--engine-val-images 0" in capsys.readouterr().err


def test_engine_throughput_benchmark_runs_end_to_end(tmp_path):
    """benchmarks/engine_throughput.py at its smallest: the real train() twice and the bare step, on a CamVid
    stand-in in the real layout and sizes; the results name the machine and hold a ratio per (recipe, model)."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("engine_throughput", ROOT / "benchmarks" / "engine_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    root = bench.camvid_standin(tmp_path / "CamVid", n_train=8, n_val=2)
    from lemore.data.camvid import CamVid

    assert len(CamVid(root, "train")) == 8 and CamVid(root, "val")[0][0].shape == (3, 360, 480)
    assert bench.main(["--recipes", "camvid", "--models", "topformer_t", "--threads", "1", "--model-steps", "1",
                       "--first", "1", "--target-seconds", "0", "--eval-images", "1", "--camvid-root", str(root),
                       "--repeats", "2", "--out-dir", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "engine_throughput.json").read_text())
    (row,) = result["rows"]
    assert row["model"] == "topformer_t" and row["engine_iters"] == [1, 11] and row["ratio"] > 0
    assert len(row["ratios"]) == 2 and row["ratio"] in row["ratios"] and len(row["model_only_runs_s"]) == 3
    # a share of two timings: at one image its sign is noise on a busy machine (a measurement, not a timed test)
    assert math.isfinite(row["eval"]["outside_model"]) and row["eval"]["outside_model"] < 1 and result["protocol"]["cpu"]
    assert "| camvid | topformer_t |" in (tmp_path / "out" / "engine_throughput.md").read_text()
    # --eval-only measures the evaluation column again and keeps the engine's
    assert bench.main(["--eval-only", "--threads", "1", "--eval-images", "2", "--camvid-root", str(root),
                       "--out-dir", str(tmp_path / "out")]) == 0
    again = json.loads((tmp_path / "out" / "engine_throughput.json").read_text())
    (row2,) = again["rows"]
    assert row2["engine_s"] == row["engine_s"] and row2["eval"]["images"] == 2
    assert len(row2["eval"]["forward_runs_s"]) == 2 and "--eval-only" in again["protocol"]["eval_command"]
    with pytest.raises(SystemExit, match="does not exist"):
        bench.main(["--eval-only", "--out-dir", str(tmp_path / "empty")])
    # --workers-ab: 0 against 1 loader worker, alternated blocks; --set overrides reach the engine runs
    assert bench.main(["--workers-ab", "--recipes", "camvid", "--models", "topformer_t", "--threads", "1",
                       "--ab-steps", "1", "--ab-blocks", "2", "--camvid-root", str(root),
                       "--out-dir", str(tmp_path / "out")]) == 0
    ab = json.loads((tmp_path / "out" / "loader_workers_ab.json").read_text())
    (row3,) = ab["rows"]
    assert [len(row3["it_per_s"][w]) for w in ("0", "1")] == [2, 2] and all(v > 0 for v in row3["it_per_s"]["1"])
    assert "| camvid | topformer_t |" in (tmp_path / "out" / "loader_workers_ab.md").read_text()
    with pytest.raises(SystemExit):
        bench.main(["--set", "data.num_workers", "--out-dir", str(tmp_path / "bad")])


def test_train_loader_benchmark_runs_end_to_end(tmp_path, monkeypatch):
    """benchmarks/train_loader.py at its smallest, on a CamVid stand-in: both pipelines give the same batches (it
    checks before timing) and both parts of the report are written, naming the machine."""
    import importlib.util
    import json

    bench_dir = ROOT / "benchmarks"
    monkeypatch.syspath_prepend(str(bench_dir))
    spec = importlib.util.spec_from_file_location("train_loader", bench_dir / "train_loader.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    standin = importlib.import_module("engine_throughput").camvid_standin(tmp_path / "CamVid", n_train=8, n_val=2)
    assert bench.main(["--recipes", "camvid", "--models", "lemore_t", "--crop", "64x64", "--threads", "1",
                       "--batches", "1", "--blocks", "1", "--rounds", "1", "--steps", "1",
                       "--camvid-root", str(standin), "--out-dir", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "train_loader.json").read_text())
    (loader,), (alloc,) = result["loader"], result["allocator"]
    assert loader["recipe"] == "camvid" and loader["ms_two_stages"] > 0 and loader["ms_one_at_a_time"] > 0
    assert alloc["model"] == "lemore_t" and alloc["ms_default"] > 0 and alloc["ms_keep_freed_memory"] > 0
    text = (tmp_path / "out" / "train_loader.md").read_text()
    assert "| camvid | 192x192 |" in text and "| lemore_t | 64x64 |" in text and result["protocol"]["cpu"]


def _load_parallel_runs(monkeypatch):
    import importlib.util

    bench_dir = ROOT / "benchmarks"
    monkeypatch.syspath_prepend(str(bench_dir))
    spec = importlib.util.spec_from_file_location("parallel_runs", bench_dir / "parallel_runs.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_parallel_runs_benchmark_runs_end_to_end(tmp_path, monkeypatch):
    """benchmarks/parallel_runs.py at its smallest: a model alone at 2 threads and two copies side by side at 1
    thread each, in real processes; the gain is what the steps give and the report names the machine."""
    import json

    bench = _load_parallel_runs(monkeypatch)
    assert bench.main(["--models", "lemore_t", "--pairs", "--crop", "64x64", "--threads", "2", "--seconds", "0.2",
                       "--out-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "parallel_runs.json").read_text())
    (row,) = result["rows"]
    assert row["models"] == ["lemore_t", "lemore_t"] and len(row["ms_side_by_side"]) == 2
    alone = row["rounds_ms"]["alone"]["lemore_t"][0]
    side = [r[0] for r in row["rounds_ms"]["side_by_side"]]
    assert row["gain"] == round(sum(alone / s for s in side), 2) > 0
    text = (tmp_path / "parallel_runs.md").read_text()
    assert "| lemore_t + lemore_t |" in text and result["protocol"]["cpu"]


@pytest.mark.parametrize("args, message", [
    (["--pairs", "lemore"], "expected A:B"),
    (["--models", "lemora"], "'lemora' is not registered"),
    (["--threads", "1"], "at least 2"),
])
def test_parallel_runs_rejects_bad_cases(args, message, tmp_path, monkeypatch, capsys):
    bench = _load_parallel_runs(monkeypatch)
    with pytest.raises(SystemExit):
        bench.main([*args, "--out-dir", str(tmp_path)])
    assert message in capsys.readouterr().err and not list(tmp_path.iterdir())
