"""train(): the schedule, a real (tiny) run on synthetic data, exact resume after SIGKILL, DDP, NaN handling."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import lemore
import lemore.engine.train as T
from lemore.checkpoint import load_checkpoint
from lemore.config import TrainCfg, load
from lemore.data import build_dataset


def _losses(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def _assert_same_weights(a, b):
    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert sa.keys() == sb.keys()
    diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[:3]}"


# ---------------------------------------------------------------------------------------------- components
def test_lr_schedule_warmup_then_poly():
    t = TrainCfg(iters=1000, lr=1e-3, warmup_iters=100, warmup_ratio=1e-6, poly_power=1.0, min_lr=0.0)
    assert T.lr_at(0, t) == pytest.approx(1e-3 * 1e-6)  # warm-up starts at warmup_ratio x lr
    assert T.lr_at(50, t) == pytest.approx(1e-3 * 0.95 * (0.5 + 0.5 * 1e-6))  # half-way, on the poly curve
    assert T.lr_at(100, t) == pytest.approx(1e-3 * 0.9)  # warm-up over: plain poly
    assert T.lr_at(550, t) == pytest.approx(1e-3 * 0.45)
    assert T.lr_at(999, t) == pytest.approx(1e-6)
    lrs = [T.lr_at(i, t) for i in range(1000)]
    assert max(lrs) == lrs[100] and all(a >= b for a, b in itertools.pairwise(lrs[100:]))


def test_param_groups_exempt_norms_and_biases():
    model = lemore.create_model("lemore", num_classes=8, img_size=64)
    decay, no_decay = T.param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert any(p is bn.weight for p in no_decay["params"]) and any(p is model.classifier.bias for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_criterion_is_mmseg_mean_over_all_pixels():
    logits = torch.zeros(1, 3, 1, 4)  # uniform: CE = log 3 per labelled pixel
    target = torch.tensor([[[0, 1, 255, 255]]])
    assert T.criterion(logits, target).item() == pytest.approx(math.log(3) * 2 / 4)
    assert T.criterion(logits, torch.full_like(target, 255)).item() == 0.0  # all ignored: 0, not NaN


def test_resumed_data_stream_equals_uninterrupted(synthetic_root):
    """The mechanism behind exact resume: batches from micro-step k on do not depend on what came before,
    nor on the number of loader workers."""
    cfg = load(dataset="synthetic", overrides={"data.root": str(synthetic_root), "data.crop_size": (64, 64),
                                               "data.scale": (128, 64)})
    ds = build_dataset(cfg.data, "train")
    full = T.train_batches(ds, 2, seed=3, start_step=0)
    ref = [next(full) for _ in range(7)]  # 4 batches per epoch: crosses into epoch 1
    for workers in (0, 2):
        resumed = T.train_batches(ds, 2, seed=3, start_step=3, num_workers=workers)
        for want in ref[3:]:
            got = next(resumed)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    other_seed = next(T.train_batches(ds, 2, seed=4))
    assert not torch.equal(other_seed[0], ref[0][0])
    # Loading data leaves the global RNG alone (model-side randomness stays reproducible).
    state = torch.get_rng_state()
    next(T.train_batches(ds, 2, seed=3))
    assert torch.equal(state, torch.get_rng_state())


# -------------------------------------------------------------------------------------------- real runs
def test_train_reduces_loss_and_writes_the_run(tiny_cfg, tmp_path):
    cfg = tiny_cfg(**{"train.iters": 8, "train.eval_interval": 4, "train.ckpt_interval": 4})
    results = tmp_path / "results" / "metrics"
    run_dir = T.train(cfg, results_dir=results)
    name = "lemore_2x1-8_synthetic-64x64"
    assert run_dir.name == name
    losses = _losses(run_dir)
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses  # it learns
    for f in ("config.yaml", "last.pt", "model.pt", "metrics.json", "metrics.jsonl", "train.log"):
        assert (run_dir / f).is_file(), f
    assert load(run_dir / "config.yaml").to_dict() == cfg.to_dict()  # the resolved config round-trips
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["run_name"] == name and metrics["config"]["train"]["iters"] == 8
    m = metrics["metrics"]
    assert 0 <= m["miou"] <= 100 and m["num_images"] == 4
    assert set(m["per_class_iou"]) == set(build_dataset(cfg.data, "val").classes)
    assert json.loads((results / f"{name}.json").read_text()) == metrics
    final = load_checkpoint(run_dir / "model.pt")
    assert "optimizer" not in final and final["config"] == cfg.to_dict() and final["iteration"] == 8
    last = load_checkpoint(run_dir / "last.pt")
    assert last["iteration"] == 8 and {"optimizer", "scaler", "rng"} <= set(last)
    evals = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if "val/miou" in r] == [4, 8]  # periodic + final


def test_batch_split_must_divide(tiny_cfg):
    with pytest.raises(ValueError, match=r"batch_size=6 must be divisible by world_size x accum_steps = 1 x 4"):
        T.train(tiny_cfg(**{"train.batch_size": 6, "train.accum_steps": 4}))


def test_gradient_accumulation_runs(tiny_cfg):
    run_dir = T.train(tiny_cfg(**{"train.batch_size": 4, "train.accum_steps": 2, "train.iters": 2}))
    assert "1 x 2 x 2 (world x accum x micro) = batch 4" in (run_dir / "train.log").read_text()


def test_nan_loss_stops_with_iteration_and_keeps_last_good_checkpoint(tiny_cfg, monkeypatch):
    calls = {"n": 0}
    real = T.criterion

    def flaky(logits, target):
        calls["n"] += 1
        loss = real(logits, target)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(T, "criterion", flaky)
    cfg = tiny_cfg(**{"train.ckpt_interval": 1, "train.iters": 5})
    with pytest.raises(FloatingPointError, match=r"loss is nan at iteration 3 .*last good checkpoint is .*last.pt"):
        T.train(cfg)
    run_dir = cfg.out_dir + "/" + cfg.run_name()
    assert load_checkpoint(run_dir + "/last.pt")["iteration"] == 2
    assert not os.path.exists(run_dir + "/model.pt")


def test_resume_refuses_a_different_config(tiny_cfg, tmp_path):
    run_dir = T.train(tiny_cfg(**{"train.iters": 2}), run_dir=tmp_path / "run")
    with pytest.raises(ValueError, match=r"cannot resume .*train.lr: 0.002 -> 0.1"):
        T.train(tiny_cfg(**{"train.iters": 2, "train.lr": 0.1}), run_dir=run_dir)


KILLED_RUN = """
import sys, time
import lemore.engine.train as T
from lemore.config import load

real_save = T.save_checkpoint

def save_then_hang(obj, path):
    real_save(obj, path)
    if obj.get("iteration") == {kill_at} and "optimizer" in obj:
        print("CHECKPOINT", obj["iteration"], flush=True)
        time.sleep(600)  # the parent SIGKILLs us here, in the middle of the run

T.save_checkpoint = save_then_hang
T.train(load(dataset="synthetic", overrides={overrides!r}), run_dir={run_dir!r})
"""


def test_kill_and_resume_equals_uninterrupted(tiny_cfg, tmp_path, subprocess_env):
    overrides = {"train.iters": 6, "train.ckpt_interval": 2}
    cfg = tiny_cfg(**overrides)
    straight = T.train(cfg, run_dir=tmp_path / "straight")

    killed = tmp_path / "killed"
    flat = {k: v for k, v in T._flatten(cfg.to_dict()).items()}
    code = KILLED_RUN.format(kill_at=4, overrides=flat, run_dir=str(killed))
    err = tmp_path / "killed.stderr"  # a file, not a pipe: a full pipe would block the child
    with open(err, "w") as err_file:
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                                stderr=err_file, text=True, env=subprocess_env)
    try:
        line = proc.stdout.readline()  # blocks until the checkpoint of iteration 4 is on disk
        assert line.strip() == "CHECKPOINT 4", err.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert load_checkpoint(killed / "last.pt")["iteration"] == 4 and not (killed / "model.pt").exists()

    T.train(cfg, run_dir=killed)  # same run directory: resumes at iteration 4
    assert "resumed" in (killed / "train.log").read_text()
    a = json.loads((straight / "metrics.json").read_text())["metrics"]
    b = json.loads((killed / "metrics.json").read_text())["metrics"]
    assert a == b
    _assert_same_weights(straight / "model.pt", killed / "model.pt")
    assert _losses(straight) == _losses(killed)  # the resumed run logged iterations 1-4 before dying, 5-6 after


def _cli_value(v):
    return json.dumps(list(v)) if isinstance(v, (tuple, list)) else str(v)


def test_ddp_two_cpu_processes(tiny_cfg, tmp_path, subprocess_env):
    cfg = tiny_cfg(**{"train.iters": 2, "train.batch_size": 8, "train.accum_steps": 2})
    run_dir = tmp_path / "ddp"
    sets = [f"{k}={_cli_value(v)}" for k, v in T._flatten(cfg.to_dict()).items() if k != "data.dataset"]
    env = {**subprocess_env, "OMP_NUM_THREADS": "1"}  # two processes on a shared CPU
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lemore", "train", "--dataset", "synthetic", "--run-dir", str(run_dir), "--set", *sets]
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    assert "2 x 2 x 2 (world x accum x micro) = batch 8" in log and "on cpu" in log
    result = json.loads((run_dir / "metrics.json").read_text())
    assert result["world_size"] == 2 and result["run_name"] == "lemore_4x2-2_synthetic-64x64"
    # Each validation image counted exactly once over the two ranks' shards (all_reduce of the matrix).
    assert result["metrics"]["num_images"] == 4
    val_pixels = sum(int((build_dataset(cfg.data, "val")[i][1] != 255).sum()) for i in range(4))
    assert result["metrics"]["num_pixels"] == val_pixels
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2  # RNG states of both ranks, for exact resume
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    print(f"DDP run: {time.time() - t0:.1f}s")


def test_offline_wandb_run_of_a_training(tiny_cfg, monkeypatch):
    from lemore.tracking import read_offline_run

    for k, v in {"WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = tiny_cfg(**{"wandb": "offline", "train.iters": 2, "train.eval_interval": 1})
    run_dir = T.train(cfg)
    deadline = time.monotonic() + 30
    while not (run := read_offline_run(run_dir))["complete"] and time.monotonic() < deadline:
        time.sleep(0.2)  # wandb-core flushes the file asynchronously
    assert run["name"] == cfg.run_name() and run["group"] == "synthetic"
    assert run["config"]["train"]["iters"] == 2 and run["config"]["derived"]["world_size"] == 1
    logged = {k for row in run["history"] for k in row}
    assert {"train/loss", "train/lr", "train/img_per_s", "val/miou", "val/aacc", "val/macc"} <= logged
    assert "val/per_class_iou._type" in logged and "val/predictions._type" in logged
    assert [r["_step"] for r in run["history"] if "val/miou" in r] == [1, 2]
    assert run["summary"]["final/miou"] == pytest.approx(json.loads((run_dir / "metrics.json").read_text())
                                                         ["metrics"]["miou"])


# ------------------------------------------------------------------------------------ peers' recipes (issue 11)
def test_param_groups_follow_mmcv_paramwise_cfg_for_the_peers():
    """SeaFormer's official rule: head lr x10; decay on everything (BatchNorms and biases too) but pos_emb."""
    model = lemore.create_model("seaformer_t", num_classes=8)
    groups = T.param_groups(model, 0.01, head_lr_mult=10.0, norm_bias_decay=True)
    assert [(g["lr_mult"], g["weight_decay"]) for g in groups] == [(1.0, 0.01), (1.0, 0.0), (10.0, 0.01), (10.0, 0.0)]
    names = {id(p): n for n, p in model.named_parameters()}
    in_group = [{names[id(p)] for p in g["params"]} for g in groups]
    assert in_group[1] == {n for n, _ in model.named_parameters() if n.endswith("pos_embed")}
    assert in_group[2] | in_group[3] == {n for n, _ in model.named_parameters() if n.startswith("head.")}
    bn = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and n.startswith("backbone"))
    assert f"{bn}.weight" in in_group[0] and "head.classifier.bias" in in_group[2]
    assert sum(len(g) for g in in_group) == len(list(model.parameters()))
    # the default (LeMoRe's rule) is unchanged: two groups, 1-D tensors exempt
    assert len(T.param_groups(model, 0.01)) == 2
    with pytest.raises(ValueError, match="declares no head"):
        T.param_groups(torch.nn.Conv2d(1, 1, 1), 0.01, head_lr_mult=10.0)


def test_lr_of_a_group_with_a_multiplier_is_mmcv_per_group_poly():
    t = TrainCfg(iters=1000, lr=1e-3, warmup_iters=100, warmup_ratio=1e-6, poly_power=1.0, min_lr=0.0)
    for it in (0, 50, 100, 550, 999):
        assert T.lr_at(it, t, 10.0) == pytest.approx(10 * T.lr_at(it, t))
    t = TrainCfg(iters=1000, lr=0.01, warmup_iters=0, poly_power=0.9, min_lr=1e-4)  # mmseg's SGD schedule
    assert T.lr_at(500, t) == pytest.approx((0.01 - 1e-4) * 0.5**0.9 + 1e-4)
    assert T.lr_at(500, t, 2.0) == pytest.approx((0.02 - 1e-4) * 0.5**0.9 + 1e-4)


def test_a_peer_trains_with_its_head_multiplier_and_sgd(tiny_cfg, tmp_path):
    cfg = tiny_cfg(**{"model.name": "topformer_t", "train.head_lr_mult": 10.0, "train.norm_bias_decay": True,
                      "train.iters": 2, "train.ckpt_interval": 1})
    run = T.train(cfg, run_dir=tmp_path / "tf")
    groups = load_checkpoint(run / "last.pt")["optimizer"]["param_groups"]
    assert len(groups) == 4 and groups[2]["lr"] == pytest.approx(10 * groups[0]["lr"]) and groups[0]["lr"] > 0
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0

    sgd = tiny_cfg(**{"model.name": "lraspp_mobilenet_v3_large_reduced", "train.optimizer": "sgd", "train.iters": 1})
    run = T.train(sgd, run_dir=tmp_path / "sgd")
    groups = load_checkpoint(run / "last.pt")["optimizer"]["param_groups"]
    assert groups[0]["momentum"] == 0.9 and "betas" not in groups[0]


def test_a_checkpoint_saved_before_the_new_keys_resumes(tmp_path):
    """check_resumable: keys a saved config predates count with their ADDED_KEYS value; a real change is refused."""
    from lemore.config import ADDED_KEYS, recipe

    current = recipe("synthetic").to_dict()
    old = recipe("synthetic").to_dict()
    for key in ADDED_KEYS:
        section, name = key.split(".")
        del old[section][name]
    T.check_resumable(old, current, tmp_path / "last.pt")
    current["train"]["head_lr_mult"] = 10.0
    with pytest.raises(ValueError, match="train.head_lr_mult: 1.0 -> 10.0"):
        T.check_resumable(old, current, tmp_path / "last.pt")


# ------------------------------------------------------------------------------------ curve, timing, restart
def test_results_carry_the_learning_curve_and_the_loop_time(tiny_cfg, tmp_path):
    cfg = tiny_cfg(**{"train.iters": 6, "train.eval_interval": 2})
    run_dir = T.train(cfg, run_dir=tmp_path / "run")
    res = json.loads((run_dir / "metrics.json").read_text())
    logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in logged if "val/miou" in r]
    assert [p["iteration"] for p in res["curve"]] == [2, 4, 6] == [r["step"] for r in evals]
    assert [p["miou"] for p in res["curve"]] == [r["val/miou"] for r in evals]
    assert res["curve"][-1]["miou"] == res["metrics"]["miou"]  # the last point is the final evaluation
    t = res["timing"]
    assert t["iterations"] == 6 and t["resumed_at"] == 0 and t["evaluations"] == 3 and t["loop_s"] > 0


def test_a_run_trained_in_stages_is_the_run_trained_at_once(tiny_cfg, tmp_path):
    """stop_at cuts a run into stages (each a separate call, as a pipeline stage under a time limit would be): the
    result is that of one call, bit for bit, and the timing sums every stage."""
    cfg = tiny_cfg(**{"train.iters": 6, "train.eval_interval": 3, "train.ckpt_interval": 4})
    once = T.train(cfg, run_dir=tmp_path / "once")
    staged = tmp_path / "staged"
    T.train(cfg, run_dir=staged, stop_at=2)  # ends between two checkpoints and before the first evaluation
    assert load_checkpoint(staged / "last.pt")["iteration"] == 2 and not (staged / "metrics.json").exists()
    T.train(cfg, run_dir=staged, stop_at=2)  # already there: nothing to do
    T.train(cfg, run_dir=staged, stop_at=5)
    T.train(cfg, run_dir=staged)
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (once, staged))
    assert a["metrics"] == b["metrics"] and a["curve"] == b["curve"] and _losses(once) == _losses(staged)
    _assert_same_weights(once / "model.pt", staged / "model.pt")
    assert b["timing"]["resumed_at"] == 5 and b["timing"]["iterations"] == 1
    assert b["timing"]["total"]["iterations"] == 6 and b["timing"]["total"]["evaluations"] == 2
    assert b["timing"]["total"]["loop_s"] > b["timing"]["loop_s"]
    with pytest.raises(ValueError, match="stop_at=7 must be between 1 and train.iters=6"):
        T.train(cfg, run_dir=tmp_path / "bad", stop_at=7)
    assert not (tmp_path / "bad").exists()


def test_a_run_cut_by_a_time_limit_is_the_run_trained_at_once(tiny_cfg, tmp_path):
    """stop_after_s stops at the first iteration past the limit (here every call: a limit already spent when the
    loop starts), checkpoints there and returns; calls that resume give the run of one call, bit for bit."""
    cfg = tiny_cfg(**{"train.iters": 5, "train.eval_interval": 2, "train.ckpt_interval": 4})
    once = T.train(cfg, run_dir=tmp_path / "once")
    staged = tmp_path / "staged"
    stops = []
    while not (staged / "metrics.json").exists():
        T.train(cfg, run_dir=staged, stop_after_s=1e-9)
        stops.append(load_checkpoint(staged / "last.pt")["iteration"])
    assert stops == [1, 2, 3, 4, 5]  # one iteration per call; the last call ends the run
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (once, staged))
    assert a["metrics"] == b["metrics"] and a["curve"] == b["curve"] and _losses(once) == _losses(staged)
    _assert_same_weights(once / "model.pt", staged / "model.pt")
    T.train(cfg, run_dir=tmp_path / "roomy", stop_after_s=3600)  # a limit never reached: the whole run
    assert json.loads((tmp_path / "roomy" / "metrics.json").read_text())["metrics"] == a["metrics"]
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match=f"stop_after_s={bad} must be a positive number of seconds"):
            T.train(cfg, run_dir=tmp_path / "bad", stop_after_s=bad)
    assert not (tmp_path / "bad").exists()


def test_restart_finished_trains_again_but_an_unfinished_run_resumes(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg(**{"train.iters": 4, "train.ckpt_interval": 2})
    straight = T.train(cfg, run_dir=tmp_path / "straight")
    first = json.loads((straight / "metrics.json").read_text())
    T.train(cfg, run_dir=straight)  # finished: nothing happens without restart_finished
    assert "again" not in (straight / "train.log").read_text()
    T.train(cfg, run_dir=straight, restart_finished=True)
    log = (straight / "train.log").read_text()
    assert "trained to the end before" in log and log.count(" final ") == 1  # the old run's log went with it ...
    again = json.loads((straight / "metrics.json").read_text())
    assert again["metrics"] == first["metrics"] and again["timing"]["resumed_at"] == 0  # ... and it ran from 0
    assert len(_losses(straight)) == 4  # a fresh metrics.jsonl, no line twice

    broken = tmp_path / "broken"
    monkeypatch.setenv("LEMORE_FAULT", "step:3:EIO")  # dies at iteration 3, after the checkpoint of iteration 2
    with pytest.raises(OSError):
        T.train(cfg, run_dir=broken)
    monkeypatch.delenv("LEMORE_FAULT")
    T.train(cfg, run_dir=broken, restart_finished=True)
    assert "resumed" in (broken / "train.log").read_text()
    resumed = json.loads((broken / "metrics.json").read_text())
    assert resumed["metrics"] == first["metrics"] and resumed["timing"]["resumed_at"] == 2


def test_cpu_loader_workers_leave_the_cores_to_the_compute_threads(monkeypatch):
    import lemore.data.loader as L

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(L, "available_cores", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert L.loader_workers(2, cpu) == 0  # 2 cores, 2 threads: the main process augments between the steps
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert L.loader_workers(2, cpu) == 1  # 1 thread: one core left for a worker
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert L.loader_workers(2, cpu) == 0  # more threads than cores: still none
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert L.loader_workers(0, cpu) == 0  # never more than asked
    assert L.loader_workers(2, cpu, cached=True) == 0  # evaluation of a split in memory: no worker start-up
    assert L.loader_workers(8, cuda) == 8 and L.loader_workers(8, cuda, cached=True) == 8
    monkeypatch.setattr(L, "available_cores", lambda: 16)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert L.loader_workers(4, cpu) == 4 and L.loader_workers(16, cpu) == 8
