"""Every notebook runs with papermill in smoke mode; committed notebooks are thin and have no outputs.

The smoke runs share one working folder (module scope) in the order a person would run them: fine-tune both
models, profile, then the results and figure notebooks that read what those wrote. Kernels get
``OMP_NUM_THREADS=1``: on a small shared CI machine two OpenMP threads per process fighting with other processes
are many times slower than one.
"""

import ast
import json
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["camvid", "finetune", "pretrain", "profile", "results", "visual_comparison"]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests" / "data"))
import strip_notebooks  # noqa: E402
from camvid_results import make_results, write_weights  # noqa: E402
from fixtures import make_camvid  # noqa: E402


def code_cells(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    return nb, [c for c in nb.cells if c.cell_type == "code"]


def test_every_notebook_is_there():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs(name):
    nb, cells = code_cells(name)
    assert all(c.outputs == [] and c.execution_count is None for c in cells)
    assert strip_notebooks.is_clean(json.loads((NOTEBOOKS / f"{name}.ipynb").read_text()))
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_thin(name):
    _, cells = code_cells(name)
    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and cells[0] is params[0], "the first code cell is the one tagged `parameters`"
    names = []
    for stmt in ast.parse(params[0].source).body:  # flat literals only (papermill overwrites them)
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, ast.dump(stmt)
        ast.literal_eval(stmt.value)
        names.append(stmt.targets[0].id)
    assert "smoke" in names
    for c in cells:
        tree = ast.parse(c.source)
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                   ast.ClassDef, ast.Lambda))], c.source


def test_choices_are_checked_in_the_first_cell_after_parameters():
    for name, call in (("finetune", "launch.check_choices(dataset=dataset, model=model"),
                       ("pretrain", "launch.check_choices(pretrain_model=model"),
                       ("visual_comparison", "launch.check_choices(dataset=dataset)"),
                       ("camvid", "launch.check_choices(model=m)")):
        _, cells = code_cells(name)
        assert call in cells[1].source, name


def test_strip_tool_strips(tmp_path):
    nb, _ = code_cells("results")
    cells = [c for c in nb.cells if c.cell_type == "code"]
    cells[0].outputs = [nbformat.v4.new_output("stream", text="x")]
    cells[0].execution_count = 3
    nb.metadata["papermill"] = {"duration": 1.0}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert strip_notebooks.main(["--check", str(path)]) == 1
    assert strip_notebooks.main([str(path)]) == 0
    assert strip_notebooks.main(["--check", str(path)]) == 0
    clean = json.loads(path.read_text())
    assert "papermill" not in clean["metadata"] and clean["cells"][1]["metadata"]["tags"] == ["parameters"]


# --------------------------------------------------------------------------------------------- smoke runs
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A working folder with a tiny synthetic dataset; kernels run there with one OpenMP thread."""
    from lemore.data.synthetic import ensure_synthetic

    work = tmp_path_factory.mktemp("notebooks")
    ensure_synthetic(work / "synthetic", num_train=8, num_val=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("WANDB_MODE", "disabled")
        yield work


def execute(name, work, out_name=None, **parameters):
    out = work / "executed" / f"{out_name or name}.ipynb"
    out.parent.mkdir(exist_ok=True)
    pm.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters={"smoke": True, **parameters},
                        cwd=str(work), kernel_name="python3", progress_bar=False)
    return nbformat.read(out, as_version=4)


def outputs_text(nb):
    return "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.fixture(scope="module")
def finetuned(work):
    nbs = {m: execute("finetune", work, f"finetune_{m}", model=m, data_root=str(work / "synthetic"))
           for m in ("segformer_b0", "lemore")}
    return nbs


def test_finetune_smoke(finetuned, work):
    for model, nb in finetuned.items():
        run = f"{model}_2x1-2_synthetic-64x64"
        assert (work / "runs" / run / "model.pt").is_file()
        result = json.loads((work / "results" / "metrics" / f"{run}.json").read_text())
        assert result["config"]["train"]["iters"] == 2 and result["config"]["wandb"] == "disabled"
        assert 0 <= result["metrics"]["miou"] <= 100
        text = outputs_text(nb)
        assert f"run: {run}" in text and "'miou'" in text
        assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def test_finetune_in_timed_processes(work, monkeypatch, capsys):
    """$LEMORE_STAGE_MINUTES (tools/dvc_jobs.py --stage-minutes): `notebook finetune` trains the run for at most that
    long and exits 75 while it is unfinished; the call that finishes it runs the notebook, which reports the run
    without training it again (retrain_finished is turned off once the run is finished)."""
    from lemore import launch

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv(launch.STAGE_MINUTES_ENV, "1e-9")  # spent before the first iteration ends: one per call
    out = work / "executed" / "finetune_staged.ipynb"
    argv = ["notebook", "finetune", str(out), "-p", "smoke", "true", "-p", "model", "lemore",
            "-p", "data_root", str(work / "synthetic"), "-p", "out_dir", str(work / "staged_runs"),
            "-p", "results_dir", str(work / "staged_results"), "-p", "retrain_finished", "true"]
    codes = [launch._cli(argv)]
    assert codes == [launch.EXIT_UNFINISHED] and not out.exists()
    codes.append(launch._cli(argv))
    assert codes == [75, 0] and "run the same command again to resume (exit 75)" in capsys.readouterr().out
    run = "lemore_2x1-2_synthetic-64x64"
    staged = json.loads((work / "staged_results" / f"{run}.json").read_text())
    assert staged["timing"]["resumed_at"] == 1 and staged["timing"]["total"]["iterations"] == 2  # not retrained
    assert f"run: {run}" in outputs_text(nbformat.read(out, as_version=4))
    monkeypatch.setenv(launch.STAGE_MINUTES_ENV, "soon")
    with pytest.raises(ValueError, match="LEMORE_STAGE_MINUTES='soon': give a number of minutes"):
        launch._cli(argv)


def test_profile_smoke(work):
    nb = execute("profile", work)
    prof = json.loads((work / "results" / "profile" / "tables.json").read_text())
    assert {r["model"] for r in prof["rows"]} == {"lemore", "segformer_b0"}
    assert all(r["latency_ms"] > 0 and r["gflops"] > 0 for r in prof["rows"])
    assert "fvcore" in prof["protocol"]["flops"]
    assert (work / "results" / "profile" / "tables.md").is_file() and "segformer_b0" in outputs_text(nb)


def test_results_smoke(finetuned, work):
    nb = execute("results", work)
    tables = work / "results" / "tables"
    for name in ("table1_ade20k", "table2_ablation", "table_imagenet", "ours_synthetic"):
        for ext in ("csv", "md", "tex"):
            assert (tables / f"{name}.{ext}").is_file()
    assert "lemore_2x1-2_synthetic-64x64" in (tables / "ours_synthetic.md").read_text()
    assert "miou (paper)" in outputs_text(nb)


def test_camvid_smoke(work):
    """The CamVid study's report on a fake results/camvid (tests/camvid_results.py) and a tiny CamVid tree: every
    table and figure, the visual comparison from real (untrained, tiny) weights files."""
    import pandas as pd

    results = make_results(work / "camvid_study" / "results" / "camvid")
    write_weights(results, make_camvid(work / "camvid_study" / "CamVid"))
    nb = execute("camvid", work, results_dir=str(results), n_images=6)
    tabs, figs = results / "tables", results / "figures"
    for name in ("camvid_models", "camvid_ablation", "camvid_gains", "camvid_pairs", "camvid_plateau",
                 "camvid_schedules", "camvid_times", "camvid_per_image"):
        for ext in ("csv", "md", "tex"):
            assert (tabs / f"{name}.{ext}").stat().st_size > 100, name
        assert f"[{name}]({name}.md)" in (tabs / "index.md").read_text()
    models = pd.read_csv(tabs / "camvid_models.csv")
    assert list(models.model) == ["SegFormer-B0", "LeMoRe", "LR-ASPP MobileNetV3-L", "TopFormer-T"]
    assert models["ade20k miou (published)"].tolist() == [37.4, 33.5, 33.1, 33.6]
    gains = pd.read_csv(tabs / "camvid_gains.csv", keep_default_na=False)
    assert list(gains.verdict) == ["holds", "reversed", "undecided", "", "one seed", "", "holds"]
    per_image = pd.read_csv(tabs / "camvid_per_image.csv")
    assert len(per_image) == 2 and sorted(per_image["shown"]) == [1, 2]  # smoke: at most 2 of the 2 val images
    for fig in ("visual_comparison_camvid", "pareto_camvid", "ablation_camvid", "curves_camvid"):
        assert (figs / f"{fig}.png").stat().st_size > 10_000, fig
    text = outputs_text(nb)
    assert "Fake CPU 9000" in text and "reversed" in text  # the protocol and the gains table are shown


def test_visual_comparison_smoke(finetuned, work):
    execute("visual_comparison", work, dataset="synthetic", data_root=str(work / "synthetic"))
    for fig in ("visual_comparison_synthetic.png", "bubble_synthetic.png"):
        assert (work / "results" / "figures" / fig).stat().st_size > 1000


def test_pretrain_smoke(work):
    execute("pretrain", work, data_root=str(work / "tiny_imagenet"))
    status = json.loads((work / "results" / "pretrain" / "status.json").read_text())
    assert status["enabled"] and Path(work, status["encoder"]).is_file()
    assert 0 <= status["top1"] <= 100


@pytest.mark.parametrize("params,message", [
    ({"dataset": "ade"}, "unknown dataset 'ade'; choose from ['ade20k', 'camvid', 'cityscapes',"),
    ({"model": "lemore_xl"}, "unknown model 'lemore_xl'; choose from ['lemore',"),
])
def test_bad_parameter_fails_in_the_first_cell(work, params, message):
    with pytest.raises(pm.PapermillExecutionError) as err:
        execute("finetune", work, "bad", **params)
    assert message in str(err.value)
    assert "launch.check_choices" in err.value.source  # failed before any config or data was touched
    assert not (work / "runs" / "bad").exists()
