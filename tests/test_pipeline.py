"""The DVC pipeline (dvc.yaml + params.yaml) and lemore.launch, which every stage calls.

Fast tests check the launch functions, that params.yaml only sets parameters the notebooks have, and that each
resolved stage depends only on its own dataset's params. The slow test runs `dvc repro` on a smoke configuration
(two datasets: the synthetic set and a fake ADE20K tree) in a temporary copy of the project: everything is built,
a second repro runs nothing, and editing one dataset's block reruns exactly that dataset's stages and the stages
built from them.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml
from PIL import Image

from lemore import launch
from lemore.config import DATASET_NAMES, load, recipe

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------- launch
def test_check_choices_messages():
    with pytest.raises(ValueError, match=r"unknown dataset 'ade'; choose from \['ade20k', 'camvid', 'cityscapes'"):
        launch.check_choices(dataset="ade")
    with pytest.raises(ValueError, match=r"unknown model 'lemore_cls'; choose from \['lemore', "):
        launch.check_choices(model="lemore_cls")  # the classifier does not segment
    with pytest.raises(ValueError, match="gpus=0 must be an integer >= 1"):
        launch.check_choices(gpus=0)
    with pytest.raises(ValueError, match="choose from \\['lemore_cls'\\]"):
        launch.check_choices(pretrain_model="lemore")
    launch.check_choices(dataset="cityscapes", model="segformer_b0", gpus=4, wandb="online")


def test_parse_size():
    assert launch.parse_size("512x1024") == (512, 1024)
    assert launch.parse_size("480") == (480, 480) and launch.parse_size([64, 96]) == (64, 96)
    with pytest.raises(ValueError, match="HxW"):
        launch.parse_size("512 by 512")


def test_finetune_config_sentinels_mean_the_recipe():
    cfg = launch.finetune_config("cityscapes", "lemore")
    base = recipe("cityscapes")
    assert (cfg.train, cfg.data) == (base.train, base.data) and cfg.model.name == "lemore"
    cfg = launch.finetune_config("ade20k", "segformer_b0", iterations=1000, batch_size=8, crop="256x320",
                                 data_root="/d/ade", wandb="disabled", overrides=["train.lr=3e-4"])
    assert (cfg.train.iters, cfg.train.batch_size, cfg.data.crop_size) == (1000, 8, (256, 320))
    assert (cfg.data.root, cfg.wandb, cfg.train.lr, cfg.data.num_classes) == ("/d/ade", "disabled", 3e-4, 150)
    assert cfg.run_name() == "segformer_b0_8x1-1k_ade20k-320x256"


def test_smoke_overrides_everything():
    cfg = launch.finetune_config("ade20k", "lemore", iterations=500, smoke=True, pretrained="/w.safetensors")
    assert cfg.data.dataset == "synthetic" and cfg.train.iters == 2 and cfg.train.device == "cpu"
    assert cfg.wandb == "disabled" and cfg.data.crop_size == (64, 64) and cfg.model.pretrained == ""


def test_pretrained_from_the_pretrain_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="pretrain stage"):
        launch.finetune_config("ade20k", "lemore", pretrained="pretrain")
    launch.write_pretrain_status(None)
    with pytest.raises(ValueError, match="pretraining is disabled"):
        launch.finetune_config("ade20k", "lemore", pretrained="pretrain")
    launch.PRETRAIN_STATUS.write_text(json.dumps({"enabled": True, "encoder": "runs/pretrain/x/encoder.safetensors"}))
    cfg = launch.finetune_config("ade20k", "lemore", pretrained="pretrain")
    assert cfg.model.pretrained == "runs/pretrain/x/encoder.safetensors"


def test_torchrun_command_reproduces_the_config():
    cfg = launch.finetune_config("cityscapes", "lemore", iterations=2000, crop="512x512", data_root="/data/cs")
    cmd = launch.torchrun_command(cfg, 4, "results/metrics/cityscapes/lemore")
    assert cmd[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    assert cmd[6:10] == ["lemore", "train", "--dataset", "cityscapes"]
    assert cmd[-2:] == ["--results-dir", "results/metrics/cityscapes/lemore"]
    sets = cmd[cmd.index("--set") + 1:-2]
    assert "train.iters=2000" in sets and "data.crop_size=[512,512]" in sets and "data.root=/data/cs" in sets
    assert not any(s.startswith("train.lr=") for s in sets)  # only what differs from the recipe
    assert load(dataset="cityscapes", overrides=sets) == cfg  # what the processes will resolve


def test_notebook_parameters(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"datasets": {"synthetic": {"iterations": 5, "crop": ""}}, "models": ["lemore"]}))
    assert launch.notebook_parameters(p, "datasets.synthetic", model="lemore") == \
        {"iterations": 5, "crop": "", "model": "lemore"}
    assert launch.notebook_parameters(p, None, x=1) == {"x": 1}
    assert launch.params_value(p, "models") == ["lemore"]
    with pytest.raises(KeyError, match="missing 'ade20k'"):
        launch.notebook_parameters(p, "datasets.ade20k")


def test_prepare_data_synthetic_and_a_broken_real_tree(tmp_path):
    from lemore.data.synthetic import ensure_synthetic

    ensure_synthetic(tmp_path / "syn", num_train=2, num_val=1)
    info = launch.prepare_data("synthetic", str(tmp_path / "syn"), tmp_path / "report.json")
    assert info["num_train"] == 2 and json.loads((tmp_path / "report.json").read_text()) == info
    make_fake_ade20k(tmp_path / "ade")
    (tmp_path / "ade" / "annotations" / "training" / "ADE_train_00000001.png").unlink()
    with pytest.raises(RuntimeError, match="1 problems"):
        launch.prepare_data("ade20k", str(tmp_path / "ade"))


# ------------------------------------------------------------------------------------------ params.yaml
def notebook_parameter_names(name: str) -> set[str]:
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {s.targets[0].id for s in ast.parse(cell.source).body}


def test_default_params_are_the_synthetic_study_and_match_the_notebooks():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert list(params["datasets"]) == ["synthetic"]
    assert params["models"] == ["segformer_b0", "lemore"] and params["seeds"] == [0]
    assert params["pretrain"]["enabled"] is False
    for dataset, block in params["datasets"].items():
        assert dataset in DATASET_NAMES
        assert set(block) <= notebook_parameter_names("finetune") - {"dataset", "model", "out_dir", "results_dir"}
    for m in params["models"]:
        launch.check_choices(model=m)
    assert set(params["pretrain"]) - {"enabled"} <= notebook_parameter_names("pretrain")
    assert set(params["profile"]) <= notebook_parameter_names("profile")
    assert set(params["figures"]) <= notebook_parameter_names("visual_comparison")


# --------------------------------------------------------------------------------------- project copies
def copy_project(dest: Path) -> Path:
    """The files the pipeline needs (tracked or to-be-committed, never ignored ones), then `dvc init --no-scm`."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "lemore", "notebooks",
                             "tools", "dvc.yaml", "params.yaml", ".dvcignore",
                             "results/benchmarks/latency.json"],  # a dependency of the results stage (Table 1)
                            cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    for rel in listed:
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    dvc(dest, "init", "--no-scm", "-q")
    return dest


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(cwd), "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_fake_ade20k(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
    """A few random images and labels (0..150) in the ADEChallengeData2016 layout."""
    rng = np.random.default_rng(0)
    for split, n in (("training", n_train), ("validation", n_val)):
        for kind in ("images", "annotations"):
            (root / kind / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            stem = f"ADE_{'train' if split == 'training' else 'val'}_{i:08d}"
            image, label = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8), rng.integers(0, 151, (64, 80), dtype=np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{stem}.jpg")
            Image.fromarray(label).save(root / "annotations" / split / f"{stem}.png")
    return root


def smoke_params(tmp: Path) -> dict:
    from lemore.data.synthetic import ensure_synthetic

    common = {"batch_size": 0, "crop": "", "gpus": 1, "pretrained": "", "wandb": "disabled"}
    return {
        "models": ["segformer_b0", "lemore"],
        "seeds": [0],
        "datasets": {
            "synthetic": {"data_root": str(ensure_synthetic(tmp / "data" / "syn", num_train=8, num_val=2)),
                          "iterations": 0, "smoke": True, **common},
            "ade20k": {"data_root": str(make_fake_ade20k(tmp / "data" / "ade")), "iterations": 2,
                       **common, "batch_size": 2, "crop": "64x64",
                       "overrides": ["data.scale=[128,64]", "data.num_workers=0", "train.device=cpu",
                                     "train.eval_interval=1000", "train.warmup_iters=1"]},
        },
        "pretrain": {"enabled": False, "data_root": "", "epochs": 0, "iterations": 0, "batch_size": 0, "gpus": 1,
                     "wandb": "disabled"},
        "profile": {"latency_runs": 2, "warmup": 1, "threads": 0, "smoke": True},
        "figures": {"n_images": 2, "include_paper": True, "smoke": True},
    }


def test_each_stage_depends_only_on_its_own_dataset(tmp_path, monkeypatch):
    from dvc.repo import Repo

    proj = copy_project(tmp_path / "proj")
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["datasets"]["ade20k"] = dict(params["datasets"]["synthetic"], data_root="/data/ade")
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(proj)
    with Repo(str(proj)) as repo:
        stages = {s.name: s for s in repo.index.stages}
        assert set(stages) == {"data@synthetic", "data@ade20k", "pretrain", "profile_tables", "profile@synthetic",
                               "profile@ade20k", "results", "figures@synthetic", "figures@ade20k",
                               "finetune@synthetic-segformer_b0-0", "finetune@synthetic-lemore-0",
                               "finetune@ade20k-segformer_b0-0", "finetune@ade20k-lemore-0"}
        for name, stage in stages.items():
            keys = {k for d in stage.deps if hasattr(d, "params") for k in (d.params or [])}
            dataset_keys = {k for k in keys if k.startswith("datasets")}
            mine = name.split("@")[1].split("-")[0] if "@" in name else None
            assert all(k.startswith(f"datasets.{mine}") for k in dataset_keys), (name, keys)
            assert "datasets" not in keys, name  # never the whole block of every dataset
        assert {d.def_path for d in stages["finetune@ade20k-lemore-0"].outs} == {
            "runs/ade20k/lemore/seed0", "results/metrics/ade20k/lemore/seed0",
            "results/notebooks/finetune_ade20k_lemore_seed0.ipynb"}
        assert all(not o.use_cache for s in stages.values() for o in s.outs if o.def_path.startswith("results"))
        assert all(o.use_cache for s in stages.values() for o in s.outs if o.def_path.startswith("runs"))


def ran(proc: subprocess.CompletedProcess) -> set[str]:
    return {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")}


@pytest.mark.slow
def test_dvc_repro_smoke(tmp_path):
    proj = copy_project(tmp_path / "proj")
    params = smoke_params(tmp_path)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    first = dvc(proj, "repro")
    assert len(ran(first)) == 13, first.stdout
    res = proj / "results"
    for path in ["tables/table1_ade20k.csv", "tables/table1_ade20k.tex", "tables/ours_synthetic.md",
                 "figures/visual_comparison_synthetic.png", "figures/bubble_synthetic.png",
                 "figures/visual_comparison_ade20k.png", "figures/bubble_ade20k.png", "profile/tables.json",
                 "profile/synthetic.json", "profile/ade20k.md",
                 "pretrain/status.json", "data/ade20k.json", "notebooks/finetune_ade20k_lemore_seed0.ipynb",
                 "metrics/ade20k/lemore/seed0/lemore_2x1-2_ade20k-64x64.json"]:
        assert (res / path).is_file(), path
    assert (proj / "runs/synthetic/lemore/seed0/lemore_2x1-2_synthetic-64x64/model.pt").is_file()
    table1 = (res / "tables/table1_ade20k.md").read_text()
    assert "segformer_b0_2x1-2_ade20k-64x64" in table1 and "lemore_2x1-2_ade20k-64x64" in table1

    second = dvc(proj, "repro")
    assert ran(second) == set(), second.stdout
    assert "Data and pipelines are up to date" in dvc(proj, "status").stdout

    params["datasets"]["ade20k"]["iterations"] = 3
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = dvc(proj, "repro")
    assert ran(third) == {"finetune@ade20k-segformer_b0-0", "finetune@ade20k-lemore-0", "results", "figures@ade20k"}
    assert (res / "metrics/ade20k/lemore/seed0/lemore_2x1-3_ade20k-64x64.json").is_file()
    assert not (res / "metrics/ade20k/lemore/seed0/lemore_2x1-2_ade20k-64x64.json").exists()  # outputs replaced


@pytest.mark.slow
def test_finetune_with_two_processes_goes_through_torchrun(tmp_path, monkeypatch):
    """gpus=2 on a CPU machine: torchrun starts two gloo processes that train one DDP model."""
    from lemore.data.synthetic import ensure_synthetic

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = ensure_synthetic(tmp_path / "syn", num_train=8, num_val=2)
    cfg = launch.finetune_config("synthetic", "lemore", smoke=True, data_root=str(root), out_dir="runs")
    cfg.train.batch_size = 4  # 2 per process: BatchNorm after LeMoRe's global pooling needs 2 samples to train
    run_dir = launch.finetune(cfg, gpus=2, results_dir="results")
    assert run_dir == Path("runs/lemore_2x2-2_synthetic-64x64")
    result = json.loads(Path("results/lemore_2x2-2_synthetic-64x64.json").read_text())
    assert result["world_size"] == 2 and (run_dir / "model.pt").is_file()


@pytest.mark.slow
def test_pretrain_stage_when_enabled(tmp_path):
    """pretrain.enabled: true runs pretrain.ipynb (smoke: a tiny generated ImageNet-layout set) and the marker
    names the encoder that `pretrained: pretrain` fine-tuning loads."""
    proj = copy_project(tmp_path / "proj")
    params = smoke_params(tmp_path)
    params["pretrain"].update(enabled=True, smoke=True, data_root=str(tmp_path / "data" / "tiny_imagenet"))
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(dvc(proj, "repro", "pretrain")) == {"pretrain"}
    status = json.loads((proj / "results/pretrain/status.json").read_text())
    assert status["enabled"] and (proj / status["encoder"]).is_file()
    assert (proj / "results/pretrain/pretrain.ipynb").is_file()
    assert (proj / f"results/pretrain/{status['run_name']}.json").is_file()


def test_the_camvid_report_stage_runs_the_camvid_notebook_with_its_parameters():
    """studies/camvid: the report stage's parameters are notebooks/camvid.ipynb's, and its command names it."""
    params = yaml.safe_load((ROOT / "studies/camvid/params.yaml").read_text())
    assert set(params["report"]) == {"results_dir", "data_root", "n_images"}
    assert set(params["report"]) <= notebook_parameter_names("camvid")
    report = yaml.safe_load((ROOT / "studies/camvid/dvc.yaml").read_text())["stages"]["report"]
    assert "notebook camvid " in report["cmd"] and "notebooks/camvid.ipynb" in report["deps"]


def test_the_camvid_doubling_check_trains_seed_0_at_twice_the_schedule():
    """studies/camvid long@<model>: every study model at seed 0, twice the camvid recipe's iterations, as many
    evaluations per schedule as the study, into its own folder (results/camvid/long/, never the study's metrics)."""
    from lemore.config import recipe
    from lemore.launch import finetune_config

    params = yaml.safe_load((ROOT / "studies/camvid/params.yaml").read_text())
    t = recipe("camvid").train
    assert params["long"]["iterations"] == 2 * t.iters
    cfg = finetune_config("camvid", "lemore", iterations=params["long"]["iterations"],
                          overrides=params["long"]["overrides"])
    assert cfg.train.iters // cfg.train.eval_interval == t.iters // t.eval_interval
    assert params["ablation_seeds"] == params["seeds"] == [0, 1, 2]  # Table 2's rows at the models' three seeds
    long = yaml.safe_load((ROOT / "studies/camvid/dvc.yaml").read_text())["stages"]["long"]
    assert long["foreach"] == "${models}"
    cmd = long["do"]["cmd"]
    assert "-k iterations=long.iterations -k overrides=long.overrides" in cmd and "-p seed 0" in cmd
    assert "results/camvid/long/metrics/${item}/seed0" in cmd and "results/camvid/metrics" not in cmd


def test_the_long_runs_weights_stay_beside_the_study():
    """studies/camvid long_weights@<model>: LeMoRe's long run gets its own weights file under results/camvid/long/,
    never results/camvid/weights/ (the study's seed-0 weights, which the report reads)."""
    params = yaml.safe_load((ROOT / "studies/camvid/params.yaml").read_text())
    assert params["long_weights"] == ["lemore"] and set(params["long_weights"]) <= set(params["models"])
    stages = yaml.safe_load((ROOT / "studies/camvid/dvc.yaml").read_text())["stages"]
    lw = stages["long_weights"]["do"]
    assert "python -m lemore.study weights results/camvid/long/metrics/${item}/seed0" in lw["cmd"]
    outs = [next(iter(o)) for o in lw["outs"]]
    assert outs == ["results/camvid/long/weights/${item}.safetensors",
                    "results/camvid/long/weights/${item}.safetensors.json"]
    assert not any(d.startswith("results/camvid/long") for d in stages["report"]["deps"] if "weights" in d)
