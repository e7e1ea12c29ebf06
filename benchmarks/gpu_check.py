"""GPU readiness check: the engine's CUDA paths, measured once on one CUDA GPU in at most 8 minutes.

    make gpu-check                                   # = python benchmarks/gpu_check.py -> results/benchmarks/gpu.*
    python benchmarks/gpu_check.py --dry-run              # every step on CPU at tiny sizes (the test suite runs it)
    python benchmarks/gpu_check.py --steps latency dataloader --budget-s 120

Steps (each a ``step_*`` function below; each runs in a process of its own with a time limit, so that a hang or
a CUDA error in one step cannot take the others with it; gpu.json and gpu.md are rewritten, atomically, after
every step):

1. ``train``: every model of :data:`MODELS` trained by the real engine (``lemore.engine.train.train``) with the
   ADE20K recipe's shape: 512x512 crops, global batch 16 on one GPU, 150 classes, AMP (bf16 where supported, else
   fp16 with a GradScaler), channels_last, cudnn.benchmark, pinned memory, ``cores - 1`` loader workers, on
   synthetic scenes drawn at ADE20K's image sizes (512 x 512-896 px, ``lemore.data.synthetic.generate(short_side=512)``)
   in the ADE20K layout, read by the ADE20K dataset class and its training pipeline. 300 iterations; iterations/s
   is the median of the engine's own ``train/iter_per_s`` over its logging intervals after the first two (cuDNN
   autotuning, worker start-up); peak GPU memory is ``torch.cuda.max_memory_allocated``; the projection for the
   paper's 160k iterations is ``160000 / (it/s) / 3600`` hours on this one GPU. Before the engine run the same
   step is timed without data loading ("compute only": a fixed batch on the GPU, the engine's model, criterion,
   fused AdamW, autocast and GradScaler), in bf16 and in fp16 + GradScaler, so that step 5 can say whether the
   engine was waiting for data. A model that does not reach 300 iterations in its share of the time is stopped
   and reported with the iterations/s it had logged.
2. ``ddp``: ``torchrun`` (``lemore.launch.torchrun_command``) with 2 processes when 2 GPUs exist, else 1: NCCL,
   SyncBatchNorm (counted in the run's log line), DistributedDataParallel, 40 iterations of LeMoRe.
3. ``eval``: whole-image and sliding-window evaluation (``lemore.engine.evaluate``) of step 1's LeMoRe
   checkpoint on the GPU in fp32 (TF32 off), on the GPU with AMP, and on the CPU in fp32; the metrics must agree
   within :data:`EVAL_TOLERANCE` (mIoU / aAcc / mAcc points) and the per-pixel predictions are compared too.
4. ``latency``: every model, batch 1 and 16, fp32 and fp16 (autocast), 512x512, 150 classes, eval mode,
   ``torch.inference_mode``, channels_last, cudnn.benchmark; ``torch.cuda.synchronize()`` before the clock starts
   and before it stops; median of 30 runs after 10 warm-up runs.
5. ``dataloader``: the engine's training loader (``train_batches``: the ADE20K pipeline, batch 16, pinned memory)
   on the same images with the recipe's 4 workers and with ``cores - 1`` workers: images/s after warm-up. The
   verdict compares it with what step 1's compute-only iterations/s x 16 consume: training is data-bound when
   the loader delivers fewer images per second than the GPU can use.

Models listed in :data:`MODELS` that this checkout has not registered are skipped with a note in the outputs.
``--dry-run`` runs every step on CPU at tiny sizes (64x64 crops, batch 2, 3 iterations, 2 timed runs) so that the
test suite exercises every code path that can run without CUDA; it writes to a temporary folder unless
``--out-dir`` is given, never to results/benchmarks/gpu.*.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the package is the repository's
    sys.path.insert(0, str(ROOT))

import torch

from lemore.profiling import available_cores, cpu_model_name, write_json_atomic, write_text_atomic

#: The models of steps 1 and 4: LeMoRe, SegFormer-B0 and the peers of the paper's Table 1 (issue 8). A name that
#: this checkout has not registered is skipped with a visible note, not an error.
MODELS = ("lemore", "segformer_b0", "topformer_t", "seaformer_t", "lraspp_mobilenet_v3_large",
          "lraspp_mobilenet_v3_large_reduced")
STEPS = ("train", "ddp", "eval", "latency", "dataloader")
#: Seconds of the default 480-second budget per step (scaled with --budget-s). Time a step leaves unused goes to
#: the next ones; the data generation before the steps comes out of the slack.
STEP_BUDGET_S = {"train": 250, "ddp": 45, "eval": 40, "latency": 60, "dataloader": 30}
DEFAULT_BUDGET_S = 480
#: GPU vs CPU metrics on the same checkpoint: largest allowed difference in points (mIoU, aAcc, mAcc).
EVAL_TOLERANCE = {"gpu_fp32": 0.1, "gpu_amp": 1.0}
PROTOCOL = __doc__[__doc__.index("Steps ("):__doc__.index("Models listed")].strip()
SCHEDULE_ITERS = 160_000  # the paper's ADE20K / Cityscapes schedule
DATA_DIR = "ade20k_synthetic"
ADE20K_TRAIN_IMAGES = 20_210


@dataclass(frozen=True)
class Settings:
    """Sizes of one check; :data:`FULL` on a GPU, :data:`DRY` on CPU (``--dry-run``)."""

    device: str = "cuda"
    crop: tuple[int, int] = (512, 512)  # the ADE20K recipe's
    scale: tuple[int, int] = (2048, 512)  # the ADE20K recipe's img_scale
    batch: int = 16
    iters: int = 300
    log_interval: int = 25
    ckpt_interval: int = 100
    skip_intervals: int = 2  # logging intervals left out of it/s: cuDNN autotuning, loader start-up
    compute_iters: int = 30
    compute_warmup: int = 10
    short_side: int = 512  # ADE20K's images are mostly 683x512
    unique_train: int = 64  # generated scenes, linked to reach ADE20K's 20,210 names (no epoch end in 300 iters)
    num_val: int = 8
    ddp_iters: int = 40
    latency_batches: tuple[int, ...] = (1, 16)
    latency_warmup: int = 10
    latency_runs: int = 30
    loader_warmup: int = 3
    loader_batches: int = 30
    dry: bool = False


FULL = Settings()
DRY = Settings(device="cpu", crop=(64, 64), scale=(128, 64), batch=2, iters=3, log_interval=1, ckpt_interval=2,
               skip_intervals=1, compute_iters=2, compute_warmup=1, short_side=64, unique_train=8, num_val=2,
               ddp_iters=2, latency_batches=(1, 2), latency_warmup=1, latency_runs=2, loader_warmup=1,
               loader_batches=2, dry=True)


# ----------------------------------------------------------------------------------------------- helpers
def registered_models() -> tuple[list[str], dict[str, str]]:
    """(:data:`MODELS` that are registered, {skipped name: why})."""
    import lemore

    have = set(lemore.list_models())
    skipped = {m: "not registered in this checkout (lemore.list_models()); skipped" for m in MODELS if m not in have}
    return [m for m in MODELS if m in have], skipped


def loader_workers(s: Settings) -> int:
    """Loader workers for the engine in step 1: every core but the one that drives the GPU."""
    return 0 if s.dry else max(1, available_cores() - 1)


def engine_config(model: str, s: Settings, work: Path, **overrides: Any):
    """The ADE20K recipe with this check's sizes, on the generated images, W&B off."""
    from lemore.config import load

    ov = {"model.name": model, "data.root": str(work / DATA_DIR), "data.crop_size": s.crop, "data.scale": s.scale,
          "data.num_workers": loader_workers(s), "train.iters": s.iters, "train.batch_size": s.batch,
          "train.amp": True, "train.channels_last": True, "train.log_interval": s.log_interval,
          "train.eval_interval": 10**9, "train.ckpt_interval": s.ckpt_interval, "train.device": s.device,
          "wandb": "disabled", "out_dir": str(work / "runs"), **overrides}
    return load(dataset="ade20k", overrides=ov)


def amp_dtype_of(device: torch.device) -> torch.dtype | None:
    """What the engine autocasts to: bf16 where the GPU has it, else fp16 (with a GradScaler); none on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def device_info(device: torch.device) -> dict[str, Any]:
    if device.type != "cuda":
        return {"device": "cpu", "cpu": cpu_model_name()}
    p = torch.cuda.get_device_properties(device)
    return {"device": torch.cuda.get_device_name(device), "capability": f"{p.major}.{p.minor}",
            "memory_gib": round(p.total_memory / 2**30, 1), "bf16": torch.cuda.is_bf16_supported(),
            "multiprocessors": p.multi_processor_count}


def interval_rates(jsonl: Path, skip: int) -> dict[str, Any]:
    """The engine's logged ``train/iter_per_s`` per logging interval, the first ``skip`` left out."""
    rates, last = [], 0
    if jsonl.is_file():
        for line in jsonl.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if "train/iter_per_s" in rec:
                rates.append(float(rec["train/iter_per_s"]))
                last = int(rec["step"])
    kept = rates[skip:] or rates[-1:]
    return {"iters_logged": last, "interval_iters_per_s": [round(r, 3) for r in rates],
            "iters_per_s": statistics.median(kept) if kept else None}


def hours(iters_per_s: float | None, iters: int = SCHEDULE_ITERS) -> float | None:
    return iters / iters_per_s / 3600 if iters_per_s else None


def make_data(work: Path, s: Settings) -> dict[str, Any]:
    """Generated scenes at ADE20K's sizes in the ADE20K layout; the training names are links to them up to
    ADE20K's 20,210 images, so that no epoch ends within the run (an epoch end stalls the loader)."""
    from lemore.data.synthetic import generate

    root = work / DATA_DIR
    t0 = time.perf_counter()
    if not (root / "synthetic.json").is_file():
        tmp = work / f".{DATA_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        generate(tmp, num_train=s.unique_train, num_val=s.num_val, seed=0, short_side=s.short_side)
        if not s.dry:
            img, ann = tmp / "images" / "training", tmp / "annotations" / "training"
            stems = sorted(p.stem for p in img.glob("*.jpg"))
            for i in range(len(stems), ADE20K_TRAIN_IMAGES):
                src = stems[i % len(stems)]
                (img / f"LINK_train_{i:08d}.jpg").symlink_to(f"{src}.jpg")
                (ann / f"LINK_train_{i:08d}.png").symlink_to(f"{src}.png")
        os.replace(tmp, root)
    n_train = len(list((root / "images" / "training").glob("*.jpg")))
    return {"root": str(root), "unique_train_images": s.unique_train, "train_images": n_train,
            "val_images": s.num_val, "short_side": s.short_side, "seconds": round(time.perf_counter() - t0, 1)}


# --------------------------------------------------------------------------------------------------- steps
def compute_only(cfg, s: Settings, device: torch.device, amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """One engine iteration without data loading: a fixed batch on the device, the engine's model, criterion,
    AdamW (fused on CUDA), autocast and GradScaler (fp16 only), channels_last; median of timed iterations."""
    from lemore.engine.train import criterion, param_groups
    from lemore.registry import build_model

    torch.manual_seed(0)
    if device.type == "cuda":  # what the engine's device section sets
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    fmt = torch.channels_last
    model = build_model(cfg).to(device, memory_format=fmt).train()
    opt = torch.optim.AdamW(param_groups(model, cfg.train.weight_decay), lr=cfg.train.lr, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    x = torch.randn(s.batch, 3, *s.crop, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, cfg.data.num_classes, (s.batch, *s.crop), device=device)
    losses = []

    def step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)  # (B, K, H, W)
        loss = criterion(logits, y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(s.compute_warmup):
        step()
    sync(device)
    times = []
    for _ in range(s.compute_iters):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    finite = bool(torch.isfinite(torch.stack(losses)).all())
    med = statistics.median(times)
    return {"amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32", "grad_scaler": scaler.is_enabled(),
            "iters_per_s": 1 / med, "images_per_s": s.batch / med, "peak_memory_gib": peak_memory_gib(device),
            "losses_finite": finite, "loss_first_last": [float(losses[0]), float(losses[-1])],
            "scale": scaler.get_scale() if scaler.is_enabled() else None}


def step_train(s: Settings, work: Path, model: str, partial: Path | None = None) -> dict[str, Any]:
    """Step 1 for one model: compute-only timings (bf16 and fp16 + GradScaler on CUDA), then the engine."""
    from lemore.engine.train import train

    device = torch.device(s.device)
    cfg = engine_config(model, s, work)
    out: dict[str, Any] = {"model": model, "device_info": device_info(device), "batch": s.batch, "crop": list(s.crop),
                           "num_classes": cfg.data.num_classes, "loader_workers": cfg.data.num_workers}
    dtypes = [amp_dtype_of(device)]
    if torch.float16 not in dtypes:
        dtypes.append(torch.float16)  # the GradScaler path of GPUs without bf16 (on CPU in the dry run)
    out["compute_only"] = [compute_only(cfg, s, device, dt) for dt in dtypes]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if partial is not None:
        write_json_atomic(partial, out)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run_dir = work / "runs" / model
    t0 = time.perf_counter()
    train(cfg, run_dir=run_dir)
    wall = time.perf_counter() - t0
    rates = interval_rates(run_dir / "metrics.jsonl", s.skip_intervals)
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    log_line = next((ln for ln in (run_dir / "train.log").read_text().splitlines()
                     if "(world x accum x micro)" in ln), "")
    out["engine"] = {**rates, "wall_s": wall, "peak_memory_gib": peak_memory_gib(device), "log": log_line.strip(),
                     "miou": metrics["miou"], "aacc": metrics["aacc"], "checkpoint": str(run_dir / "model.pt")}
    out["projected_hours_160k"] = hours(rates["iters_per_s"])
    out["projected_hours_160k_compute_only"] = hours(out["compute_only"][0]["iters_per_s"])
    return out


def step_ddp(s: Settings, work: Path, timeout: float | None = None) -> dict[str, Any]:
    """Step 2: torchrun + DDP (+ NCCL and SyncBatchNorm on CUDA) with the engine, LeMoRe."""
    from lemore.launch import torchrun_command

    cuda = s.device == "cuda"
    nproc = 2 if cuda and torch.cuda.device_count() >= 2 else 1
    cfg = engine_config("lemore", s, work, **{"train.iters": s.ddp_iters, "out_dir": str(work / "runs_ddp"),
                                              "data.num_workers": max(1, loader_workers(s) // nproc) if cuda else 0})
    cmd = torchrun_command(cfg, nproc)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    wall = time.perf_counter() - t0
    run_dir = Path(cfg.out_dir) / cfg.run_name(nproc)
    out: dict[str, Any] = {"processes": nproc, "gpus_visible": torch.cuda.device_count() if cuda else 0,
                           "command": " ".join(cmd[1:]), "returncode": proc.returncode, "wall_s": wall}
    if proc.returncode != 0:
        out["log_tail"] = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"torchrun exited with {proc.returncode}:\n{out['log_tail']}")
    log = (run_dir / "train.log").read_text()
    line = next((ln for ln in log.splitlines() if "(world x accum x micro)" in ln), "")
    result = json.loads((run_dir / "metrics.json").read_text())
    out.update(log=line.strip(), world_size=result["world_size"], miou=result["metrics"]["miou"],
               backend="nccl" if "DDP over nccl" in line else "gloo" if "DDP over gloo" in line else None,
               sync_batchnorm="SyncBatchNorm layers" in line,
               **interval_rates(run_dir / "metrics.jsonl", min(s.skip_intervals, 1)))
    expected = ("nccl", True) if cuda else ("gloo", False)
    out["ok"] = (out["backend"], out["sync_batchnorm"]) == expected and out["world_size"] == nproc
    return out


def step_eval(s: Settings, work: Path) -> dict[str, Any]:
    """Step 3: whole and slide evaluation of one checkpoint on the GPU (fp32, AMP) and on the CPU (fp32)."""
    from lemore.checkpoint import load_state_dict, load_weights
    from lemore.data import build_dataset
    from lemore.engine.evaluate import eval_loader, evaluate, inference
    from lemore.engine.train import train
    from lemore.registry import build_model

    device = torch.device(s.device)
    ckpt = work / "runs" / "lemore" / "model.pt"
    source = "step 1 (lemore)"
    if not ckpt.is_file():  # step 1 not run or stopped early: a short run of our own
        run_dir = work / "runs" / "eval_checkpoint"
        train(engine_config("lemore", s, work, **{"train.iters": s.ddp_iters}), run_dir=run_dir)
        ckpt, source = run_dir / "model.pt", f"a {s.ddp_iters}-iteration run of this step"
    base = engine_config("lemore", s, work)
    state = load_weights(ckpt)
    out: dict[str, Any] = {"checkpoint": source, "tolerance_points": EVAL_TOLERANCE, "modes": {}}
    # fp32 means fp32 here: TF32 (on by default for cuDNN convolutions) would make the GPU differ from the CPU more.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    for mode in ("whole", "slide"):
        cfg = copy.deepcopy(base)
        cfg.data.eval_mode, cfg.data.num_workers = mode, 0
        ds = build_dataset(cfg.data, "val")
        runs = {"cpu_fp32": (torch.device("cpu"), None, torch.contiguous_format),
                "gpu_fp32": (device, None, torch.channels_last),
                "gpu_amp": (device, amp_dtype_of(device) or torch.bfloat16, torch.channels_last)}
        res: dict[str, Any] = {}
        preds: dict[str, list[torch.Tensor]] = {}
        for name, (dev, amp, fmt) in runs.items():
            model = build_model(cfg)
            load_state_dict(model, state, source=str(ckpt))
            model = model.to(dev, memory_format=fmt).eval()
            t0 = time.perf_counter()
            m = evaluate(model, eval_loader(ds, cfg), cfg, device=dev, class_names=list(ds.classes), amp_dtype=amp,
                         memory_format=fmt)
            sync(dev)
            res[name] = {"miou": m["miou"], "aacc": m["aacc"], "macc": m["macc"], "num_images": m["num_images"],
                         "seconds": time.perf_counter() - t0, "amp": str(amp).replace("torch.", "") if amp else None}
            with torch.inference_mode(), torch.autocast(dev.type, dtype=amp or torch.bfloat16,
                                                         enabled=amp is not None and dev.type == "cuda"):
                preds[name] = [inference(model, ds[i][0][None].to(dev, memory_format=fmt), cfg,
                                         out_size=ds[i][1].shape[-2:]).argmax(1).cpu() for i in range(min(2, len(ds)))]
        for name in ("gpu_fp32", "gpu_amp"):
            diff = {k: abs(res[name][k] - res["cpu_fp32"][k]) for k in ("miou", "aacc", "macc")}
            agree = sum(int((a == b).sum()) for a, b in zip(preds[name], preds["cpu_fp32"]))
            total = sum(a.numel() for a in preds[name])
            res[name].update(abs_diff_vs_cpu=diff, pixel_agreement_vs_cpu=agree / total,
                             within_tolerance=max(diff.values()) <= EVAL_TOLERANCE[name])
        out["modes"][mode] = res
    out["ok"] = all(r[n]["within_tolerance"] for r in out["modes"].values() for n in ("gpu_fp32", "gpu_amp"))
    return out


def step_latency(s: Settings, work: Path) -> dict[str, Any]:
    """Step 4: forward latency of every model, batch 1 and 16, fp32 and fp16 autocast."""
    from lemore.registry import build_model

    device = torch.device(s.device)
    torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN may pick its fastest kernels
    models, _ = registered_models()
    rows = []
    for name in models:
        model = build_model(engine_config(name, s, work)).eval().to(device, memory_format=torch.channels_last)
        for batch in s.latency_batches:
            x = torch.randn(batch, 3, *s.crop, device=device).contiguous(memory_format=torch.channels_last)
            for dtype in ("fp32", "fp16"):
                with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=dtype == "fp16"):
                    for _ in range(s.latency_warmup):
                        model(x)
                    times = []
                    for _ in range(s.latency_runs):
                        sync(device)
                        t0 = time.perf_counter()
                        out = model(x)
                        sync(device)
                        times.append((time.perf_counter() - t0) * 1e3)
                    finite = bool(torch.isfinite(out).all())
                times.sort()
                med = statistics.median(times)
                rows.append({"model": name, "batch": batch, "dtype": dtype, "median_ms": med,
                             "p10_ms": times[int(0.1 * (len(times) - 1))], "p90_ms": times[int(0.9 * (len(times) - 1))],
                             "images_per_s": batch / med * 1e3, "output_finite": finite})
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"device_info": device_info(device), "rows": rows}


def step_dataloader(s: Settings, work: Path) -> dict[str, Any]:
    """Step 5: the engine's training loader at the ADE20K recipe, images/s with the recipe's and all workers."""
    from lemore.config import recipe
    from lemore.data import build_dataset
    from lemore.engine.train import train_batches

    cfg = engine_config("lemore", s, work)
    ds = build_dataset(cfg.data, "train")
    counts = sorted({recipe("ade20k").data.num_workers, loader_workers(s)} if not s.dry else {0, 2})
    rows = []
    for workers in counts:
        batches = train_batches(ds, s.batch, seed=0, num_workers=workers, pin_memory=s.device == "cuda")
        for _ in range(s.loader_warmup):
            next(batches)
        t0 = time.perf_counter()
        for _ in range(s.loader_batches):
            images, masks = next(batches)
        dt = time.perf_counter() - t0
        batches.close()  # shuts the workers down
        assert images.shape == (s.batch, 3, *s.crop) and masks.shape == (s.batch, *s.crop)
        rows.append({"workers": workers, "images_per_s": s.loader_batches * s.batch / dt,
                     "pinned": s.device == "cuda"})
    return {"cores": available_cores(), "batch": s.batch, "rows": rows}


# ------------------------------------------------------------------------------------------ orchestration
def run_isolated(step: str, s: Settings, work: Path, timeout: float, model: str | None = None) -> dict[str, Any]:
    """Run one step in a fresh process (``--worker``) killed, with everything it started, after ``timeout`` s."""
    tag = f"{step}-{model}" if model else step
    result, log = work / "results" / f"{tag}.json", work / "logs" / f"{tag}.log"
    result.unlink(missing_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", step, "--work-dir", str(work),
           "--result", str(result), "--timeout", str(timeout)] + (["--model", model] if model else []) + \
          (["--dry-run"] if s.dry else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
            status = "ok" if proc.returncode == 0 else "error"
        except subprocess.TimeoutExpired:
            status = "timeout"
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever the worker started and left (torchrun, loaders)
            proc.wait()
    out: dict[str, Any] = json.loads(result.read_text()) if result.is_file() else {}
    out.update(status=status, wall_s=round(time.perf_counter() - t0, 1), time_limit_s=round(timeout, 1),
               worker_log=str(log))
    if status != "ok":
        out["log_tail"] = log.read_text(errors="replace")[-3000:]
    if step == "train" and status == "timeout":  # what the engine had logged when it was stopped
        rates = interval_rates(work / "runs" / model / "metrics.jsonl", s.skip_intervals)
        out["engine"] = {**out.get("engine", {}), **rates, "stopped_at_time_limit": True}
        out["projected_hours_160k"] = hours(rates["iters_per_s"])
    return out


def run_inline(step: str, s: Settings, work: Path, timeout: float, model: str | None = None) -> dict[str, Any]:
    """Run one step in this process (``--inline``: the test suite's dry run; no time limit but torchrun's)."""
    t0 = time.perf_counter()
    try:
        out = call_step(step, s, work, model, timeout)
        out["status"] = "ok"
    except Exception as e:
        out = {"status": "error", "error": f"{type(e).__name__}: {e}", "log_tail": traceback.format_exc()[-3000:]}
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def call_step(step: str, s: Settings, work: Path, model: str | None, timeout: float | None,
              partial: Path | None = None) -> dict[str, Any]:
    if step == "train":
        return step_train(s, work, model, partial)
    if step == "ddp":
        return step_ddp(s, work, timeout)
    return {"eval": step_eval, "latency": step_latency, "dataloader": step_dataloader}[step](s, work)


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """Data-bound or not, per model: the loader's images/s against what the GPU consumes (step 1 compute only)."""
    loader = report["steps"].get("dataloader", {})
    rows = loader.get("rows") or []
    if not rows:
        return {}
    best = max(rows, key=lambda r: r["workers"])
    out = {"loader_images_per_s": best["images_per_s"], "loader_workers": best["workers"], "models": {}}
    batch = report["settings"]["batch"]
    for model, r in report["steps"].get("train", {}).items():
        co = (r.get("compute_only") or [{}])[0].get("images_per_s")
        eng = (r.get("engine") or {}).get("iters_per_s")
        if co:
            out["models"][model] = {"gpu_images_per_s": co, "engine_images_per_s": eng * batch if eng else None,
                                    "data_bound": best["images_per_s"] < co,
                                    "loader_headroom": best["images_per_s"] / co}
    return out


def machine() -> dict[str, Any]:
    """The machine, without creating a CUDA context in this (orchestrating) process."""
    info: dict[str, Any] = {"cpu": cpu_model_name(), "cores": available_cores(), "python": platform.python_version(),
                            "torch": torch.__version__, "cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20, check=True)
        info["gpus"] = [dict(zip(("name", "driver", "memory"), (x.strip() for x in ln.split(","))))
                        for ln in q.stdout.strip().splitlines()]
    except (OSError, subprocess.SubprocessError):
        info["gpus"] = []
    import transformers

    info["transformers"] = transformers.__version__
    return info


def to_markdown(report: dict[str, Any]) -> str:
    st = report["steps"]
    m = report["machine"]
    gpu = ", ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})" for g in m.get("gpus", [])) or "none"
    lines = ["# GPU check" + (" (dry run on CPU: sizes are tiny, numbers mean nothing)" if report["dry_run"] else ""),
             "", f"Machine: {gpu}; {m['cores']} cores ({m['cpu']}); torch {m['torch']}, CUDA {m['cuda']}, cuDNN "
             f"{m['cudnn']}, transformers {m['transformers']}, Python {m['python']}. Started {report['started']}, "
             f"{report.get('elapsed_s', 0):.0f} s of a {report['budget_s']} s budget. "
             f"Command: `{report['command']}`.", ""]
    if report["skipped_models"]:
        lines += ["**Skipped models** (not registered in this checkout): "
                  + ", ".join(f"`{k}`" for k in report["skipped_models"]) + ".", ""]
    s = report["settings"]
    if "train" in st:
        lines += [f"## 1. Training with the engine ({s['crop'][0]}x{s['crop'][1]} crops, batch {s['batch']}, 150 "
                  f"classes, AMP, channels_last on CUDA; {s['iters']} iterations)", "",
                  "| model | status | it/s (engine) | images/s | peak GiB (engine) | hours for 160k | it/s compute "
                  "only (amp) | it/s fp16 + GradScaler | peak GiB (compute) |", "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
        for name, r in st["train"].items():
            e, co = r.get("engine") or {}, r.get("compute_only") or []
            c0 = co[0] if co else {}
            c16 = next((c for c in co if c["amp"] == "float16"), {})
            ips = e.get("iters_per_s")
            stopped = f" ({e.get('iters_logged')} it)" if e.get("stopped_at_time_limit") else ""
            lines.append(f"| {name} | {r['status']}{stopped} "
                         f"| {_f(ips)} | {_f(ips * s['batch'] if ips else None)} | {_f(e.get('peak_memory_gib'))} "
                         f"| {_f(r.get('projected_hours_160k'))} | {_f(c0.get('iters_per_s'))} ({c0.get('amp', '-')}) "
                         f"| {_f(c16.get('iters_per_s'))} | {_f(c0.get('peak_memory_gib'))} |")
        lines.append("")
    if "ddp" in st:
        d = st["ddp"]
        lines += ["## 2. torchrun + DDP", "", f"Status {d['status']}: {d.get('processes', '?')} process(es), backend "
                  f"{d.get('backend')}, SyncBatchNorm {d.get('sync_batchnorm')}, world size {d.get('world_size')}, "
                  f"{_f(d.get('iters_per_s'))} it/s, checks passed: {d.get('ok')}. Log line: `{d.get('log', '')}`", ""]
    if "eval" in st:
        ev = st["eval"]
        lines += ["## 3. Evaluation: GPU vs CPU on the same checkpoint", "",
                  f"Status {ev['status']}; checkpoint: {ev.get('checkpoint')}; tolerance (points): "
                  f"{ev.get('tolerance_points')}; all within tolerance: {ev.get('ok')}.", "",
                  "| mode | run | mIoU | aAcc | mAcc | max abs diff vs CPU | pixels equal to CPU | seconds |",
                  "|---|---|--:|--:|--:|--:|--:|--:|"]
        for mode, res in (ev.get("modes") or {}).items():
            for name, r in res.items():
                diff = r.get("abs_diff_vs_cpu")
                lines.append(f"| {mode} | {name} | {r['miou']:.2f} | {r['aacc']:.2f} | {r['macc']:.2f} | "
                             f"{_f(max(diff.values()) if diff else None, 3)} | "
                             f"{_f(100 * r['pixel_agreement_vs_cpu'] if 'pixel_agreement_vs_cpu' in r else None, 3)}"
                             f"{'%' if 'pixel_agreement_vs_cpu' in r else ''} | {r['seconds']:.1f} |")
        lines.append("")
    if "latency" in st:
        lat = st["latency"]
        lines += [f"## 4. Latency (forward, {s['crop'][0]}x{s['crop'][1]}, 150 classes, channels_last, median of "
                  f"{s['latency_runs']} runs, ms)", "",
                  f"Status {lat['status']}.", "", "| model | batch | fp32 ms | fp16 ms | fp16 images/s |",
                  "|---|--:|--:|--:|--:|"]
        by = {(r["model"], r["batch"], r["dtype"]): r for r in lat.get("rows") or []}
        for (name, batch) in dict.fromkeys((r["model"], r["batch"]) for r in lat.get("rows") or []):
            f32, f16 = by.get((name, batch, "fp32"), {}), by.get((name, batch, "fp16"), {})
            lines.append(f"| {name} | {batch} | {_f(f32.get('median_ms'))} | {_f(f16.get('median_ms'))} | "
                         f"{_f(f16.get('images_per_s'))} |")
        lines.append("")
    if "dataloader" in st:
        dl = st["dataloader"]
        lines += [f"## 5. Data loading (ADE20K training pipeline, batch {s['batch']})", "", f"Status {dl['status']}; "
                  f"{dl.get('cores')} cores.", "", "| workers | images/s |", "|--:|--:|"]
        lines += [f"| {r['workers']} | {_f(r['images_per_s'])} |" for r in dl.get("rows") or []]
        v = report.get("verdict") or {}
        if v.get("models"):
            lines += ["", f"Verdict with {v['loader_workers']} workers ({_f(v['loader_images_per_s'])} images/s):", "",
                      "| model | GPU consumes images/s (compute only) | engine images/s | data-bound |",
                      "|---|--:|--:|---|"]
            lines += [f"| {k} | {_f(r['gpu_images_per_s'])} | {_f(r['engine_images_per_s'])} | "
                      f"{'yes' if r['data_bound'] else 'no'} |" for k, r in v["models"].items()]
        lines.append("")
    lines += ["## Protocol (benchmarks/gpu_check.py)", "", PROTOCOL, ""]
    return "\n".join(lines) + "\n"


def _f(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="every step on CPU at tiny sizes (the test suite's run)")
    p.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="steps to run (default: all)")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="where gpu.json / gpu.md go (default results/benchmarks; with --dry-run a temporary folder)")
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"total time limit in seconds (default {DEFAULT_BUDGET_S}; dry run 900)")
    p.add_argument("--work-dir", type=Path, default=None, help="data and runs (default: a temporary folder, removed)")
    p.add_argument("--inline", action="store_true", help="run the steps in this process (no per-step time limit)")
    p.add_argument("--worker", choices=STEPS, help=argparse.SUPPRESS)  # one step in a child process
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    s = DRY if args.dry_run else FULL

    if args.worker:  # child process: one step, result to --result
        logging_to_stderr()
        out = call_step(args.worker, s, args.work_dir, args.model, args.timeout, partial=args.result)
        write_json_atomic(args.result, out)
        return 0

    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); "
                         "`python benchmarks/gpu_check.py --dry-run` runs every step on CPU at tiny sizes")
    budget = args.budget_s or (900 if args.dry_run else DEFAULT_BUDGET_S)
    scale = budget / DEFAULT_BUDGET_S
    t_start = time.perf_counter()
    deadline = t_start + budget
    keep = args.work_dir is not None
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="lemore-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="lemore-gpu-check-dry-run-")) if args.dry_run
                               else ROOT / "results" / "benchmarks")
    models, skipped = registered_models()
    for name, why in skipped.items():
        print(f"gpu_check: NOTE {name}: {why}", flush=True)
    report: dict[str, Any] = {
        "dry_run": args.dry_run, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "budget_s": budget, "settings": asdict(s), "models": models, "skipped_models": skipped,
        "machine": machine(), "steps": {}}

    def save() -> None:
        report["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        report["verdict"] = verdict(report)
        write_json_atomic(out_dir / "gpu.json", report)
        write_text_atomic(out_dir / "gpu.md", to_markdown(report))

    runner = run_inline if args.inline else run_isolated
    try:
        report["data"] = make_data(work, s)
        save()
        selected = [st for st in STEPS if st in args.steps]
        for i, step in enumerate(selected):
            later = sum(STEP_BUDGET_S[x] for x in selected[i + 1:]) * scale
            if step == "train":
                report["steps"]["train"] = {}
                for j, model in enumerate(models):
                    share = (deadline - time.perf_counter() - later) / (len(models) - j)
                    print(f"gpu_check: train {model} (limit {share:.0f} s)", flush=True)
                    report["steps"]["train"][model] = runner("train", s, work, max(share, 1.0), model)
                    save()
                continue
            limit = max(deadline - time.perf_counter() - later, 1.0)
            print(f"gpu_check: {step} (limit {limit:.0f} s)", flush=True)
            report["steps"][step] = runner(step, s, work, limit)
            save()
    finally:
        save()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    print(to_markdown(report))
    print(f"gpu_check: wrote {out_dir / 'gpu.json'} and {out_dir / 'gpu.md'}")
    failed = [k for k, v in report["steps"].items() if k != "train" and v.get("status") != "ok"]
    failed += [f"train/{k}" for k, v in report["steps"].get("train", {}).items() if v.get("status") == "error"]
    if failed:
        print(f"gpu_check: steps not ok: {failed} (their log tails are in gpu.json)")
    return 1 if failed else 0


def logging_to_stderr() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
