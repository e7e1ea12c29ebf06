"""Fine-tuning a segmentation model: ``train(cfg) -> run_dir``, one function that reads top to bottom.

The recipe (``lemore.config.RECIPES``, every value overridable) is the paper's / SegFormer's:

* AdamW (lr 1.2e-4, 3e-4 on Cityscapes; weight decay 0.01; betas 0.9/0.999), global batch 16.
* Iteration-based: 160k iterations (ADE20K, Cityscapes) or 80k (PASCAL Context, COCO-Stuff); linear warm-up
  over 1500 iterations from ``warmup_ratio`` x lr, poly decay with power 1.0 (mmcv's ``PolyLrUpdaterHook`` with
  ``warmup="linear"``, the SegFormer schedule: :func:`lr_at`).
* Loss: pixel cross-entropy with ignore index 255, averaged over *all* pixels of the batch (ignored ones count
  as 0). This is MMSegmentation's default (``avg_non_ignore=False``) that SegFormer and TopFormer trained with;
  it also keeps a batch whose pixels are all ignored at loss 0 instead of NaN.
* Weight decay: none on biases and normalisation parameters (all 1-D tensors) nor on anything the model lists
  in ``no_weight_decay()`` (timm's convention). LeMoRe has no position embeddings and the paper gives no lr
  multipliers, so its recipe uses no head multiplier.
* The peers train with their own published recipes (``lemore.config.FAMILY_RECIPES``): mmcv's ``paramwise_cfg`` as
  their configs use it, i.e. the head's lr x10 (``train.head_lr_mult``, the parameters under the model's
  ``head_prefixes``) and weight decay on every parameter but the model's ``no_weight_decay()``
  (``train.norm_bias_decay``); SGD with momentum for LR-ASPP (``train.optimizer``). See :func:`param_groups`.

Hardware: CUDA when present (AMP in bf16, or fp16 with a GradScaler where bf16 is unsupported;
``cudnn.benchmark``; channels-last), CPU otherwise (channels-last for the models measured faster in it:
:func:`cpu_channels_last`). On Linux, glibc's allocator keeps freed memory for reuse
(:func:`lemore.system.keep_freed_memory`: a CPU training step up to 1.6x faster on a virtual machine). DDP is switched on by the ``RANK`` / ``WORLD_SIZE``
environment variables that torchrun sets (nanoGPT): NCCL on CUDA, gloo on CPU; BatchNorm becomes SyncBatchNorm
only under CUDA DDP (SyncBN has no CPU kernel). The global batch is split as
``batch_size = world_size x accum_steps x micro_batch``; gradients are accumulated over ``accum_steps``
micro-batches (DDP synchronises only on the last one).

Checkpoints (``<run_dir>/last.pt``) every ``ckpt_interval`` iterations and at the end, written atomically; the
final weights also go to ``model.pt`` (model state dict + config, no optimizer: for eval / export). Starting
``train`` again on the same run directory resumes from ``last.pt`` and the result is exactly that of an
uninterrupted run (tested on CPU with a SIGKILL at every point where a run can die: tests/reliability, via the
``LEMORE_FAULT`` hook of :mod:`lemore.faults`). Exactness comes from making every random choice a function of
its position instead of a running stream:

* the data order of epoch ``e`` is ``randperm(n)`` from a generator seeded with ``(seed, e)``;
* each sample's augmentation runs under RNGs (torch, numpy, python) seeded from ``(seed, epoch, position)`` and
  restored afterwards (:class:`SeededSamples`), so it does not depend on which worker loads it, on the number of
  workers, or on whether the first batches of the epoch were skipped;
* on resume the loader starts at the first unconsumed batch of the current epoch (nothing is re-read), and the
  model's own randomness (dropout) continues from the global RNG states saved in the checkpoint (per rank);
* data loaders get their own ``torch.Generator`` so iterating them never advances the global RNG.

A NaN or infinite loss stops the run with a :class:`FloatingPointError` naming the iteration and the value,
before the optimizer step, so ``last.pt`` stays the last good state.

Faults (docs/reliability.md lists each one tried and what happens):

* Bad input fails before the run directory is touched: the config, the checkpoint to resume, the data folders
  (root, layout, non-empty splits), the model name and pretrained weights are all checked first, then the run and
  results folders are probed for writing and for room for the checkpoints. A failed start changes no earlier run.
* Temp files left by a write that a kill interrupted are deleted when the run starts again; ``metrics.jsonl`` is
  cut back to what it held when ``last.pt`` was written, so a resumed run logs no line twice.
* Rerunning a finished run (``model.pt``, ``metrics.json`` and the results file written) does nothing.

Outputs in the run directory: ``config.yaml``, ``last.pt``, ``model.pt``, ``metrics.json`` (final metrics,
written atomically), ``metrics.jsonl`` (every logged value), ``train.log``, ``wandb/``; and
``<results_dir>/<run_name>.json`` when ``results_dir`` is given (the DVC pipeline passes ``results/metrics``).

CLI: ``python -m lemore train --dataset ade20k --set train.iters=1000 --set data.root=/data/ade [--config p.yaml]``;
multi-GPU: ``torchrun --nproc_per_node 4 -m lemore train ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import random
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, Sampler

from lemore.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    check_free_space,
    check_writable,
    load_checkpoint,
    load_state_dict,
    load_weights,
    remove_stale_temp_files,
    save_checkpoint,
)
from lemore.config import ADDED_KEYS, DATASET_NAMES, ConfigValueError, RunCfg, TrainCfg, load, to_yaml, validate
from lemore.data.loader import loader_workers
from lemore.engine.evaluate import eval_loader, evaluate, format_metrics, prediction_strips
from lemore.faults import maybe_fault
from lemore.metrics import IGNORE_INDEX
from lemore.registry import build_model
from lemore.system import keep_freed_memory
from lemore.tracking import Tracker, write_results

log = logging.getLogger("lemore")

#: Config keys that may differ when a run is resumed: they change how the run is watched, not what it computes.
RESUMABLE_KEYS = ("train.eval_interval", "train.ckpt_interval", "train.log_interval", "train.device",
                  "data.num_workers", "data.cache_gb", "data.root", "wandb", "out_dir", "name")


def train(cfg: RunCfg, *, run_dir: str | os.PathLike | None = None,
          results_dir: str | os.PathLike | None = None, restart_finished: bool = False,
          stop_at: int | None = None, stop_after_s: float | None = None) -> Path:
    """Train ``cfg.model.name`` on ``cfg.data.dataset`` with ``cfg.train``'s schedule; resume if interrupted.

    Args:
        cfg: the resolved run config (``lemore.config.load``).
        run_dir: where the run lives; default ``<cfg.out_dir>/<run name>``. An existing ``last.pt`` there is
            resumed.
        results_dir: if given, the final metrics JSON is also written to ``<results_dir>/<run name>.json``.
        restart_finished: a run in ``run_dir`` that was trained to its last iteration is trained again from scratch
            (its files replaced once the preflight has passed) instead of being left as it is; an unfinished run
            still resumes. What a pipeline wants when it reruns a stage because its code or parameters changed.
        stop_at: train only up to this iteration of the schedule (``0 < stop_at < train.iters``), checkpoint there and
            return without the final evaluation; calling ``train`` again resumes, and the run is exactly that of one
            call. A long run cut into stages that each fit a time limit (``--stop-at``).
        stop_after_s: the same, at the first iteration that ends this many seconds after the call began (data
            loading included); the run goes on to its end if it gets there first. Not with DDP (the ranks would
            have to agree on the iteration).

    Returns:
        The run directory.

    Raises:
        FloatingPointError: the loss became NaN/inf (the message names the iteration and value).
        CheckpointError: ``last.pt`` or ``model.pretrained`` cannot be read or does not fit the model.
        ConfigError: batch size not divisible by ``world_size x accum_steps``; a resumed run whose config differs;
            an unknown model.
        DatasetError: a missing data root, a wrong layout, an empty split; a bad file when it is loaded.
        WriteError: the run or results folder is not writable or too full (before training), or a checkpoint
            write failed (the previous ``last.pt`` is intact).
    """
    t_call = time.perf_counter()
    validate(cfg)
    t = cfg.train
    keep_freed_memory()  # the allocator reuses freed activations instead of faulting in fresh pages (lemore.system)
    with distributed(t.device) as env, contextlib.ExitStack() as cleanup:
        rank, world, device, master = env.rank, env.world_size, env.device, env.rank == 0
        # Preflight, down to "run directory": everything that bad input can break (config, checkpoint to resume,
        # data folders, model name, pretrained weights) fails here, before the run directory is touched, so a
        # failed start never changes an earlier run. Log lines are held in memory until train.log can be written.
        run_log = cleanup.enter_context(log_to_file(None)) if master else None
        # ------------------------------------------------------------------------------ batch split and resume
        if t.batch_size % (world * t.accum_steps):
            raise ConfigValueError(f"train.batch_size={t.batch_size} must be divisible by world_size x accum_steps "
                                   f"= {world} x {t.accum_steps}; e.g. set train.accum_steps so that the per-GPU "
                                   f"micro-batch batch_size / (world_size * accum_steps) is an integer")
        micro = t.batch_size // (world * t.accum_steps)  # per-process micro-batch
        if stop_at is not None and not 0 < stop_at <= t.iters:
            raise ConfigValueError(f"stop_at={stop_at} must be between 1 and train.iters={t.iters}")
        if stop_after_s is not None and not stop_after_s > 0:
            raise ConfigValueError(f"stop_after_s={stop_after_s} must be a positive number of seconds")
        if stop_after_s is not None and world > 1:
            raise ConfigValueError(f"stop_after_s is for one process; this run has {world} (DDP): use stop_at")
        end = t.iters if stop_at is None else stop_at  # this call trains up to `end`
        run_name = cfg.run_name(world)
        run_dir = Path(run_dir) if run_dir is not None else Path(cfg.out_dir) / run_name
        ckpt_path = run_dir / "last.pt"
        cfg_dict = cfg.to_dict()
        resume = read_resume_checkpoint(ckpt_path, cfg_dict)
        restart = resume is not None and restart_finished and int(resume["iteration"]) >= t.iters
        if restart:
            log.info("%s was trained to the end before: training it again from scratch (restart_finished)", run_dir)
            resume = None
        if resume is not None and end < t.iters and int(resume["iteration"]) >= end:
            log.info("%s is at iteration %d, past stop_at=%d: nothing to do", run_dir, int(resume["iteration"]), end)
            return run_dir
        if resume is not None and finished(run_dir, resume, t.iters, run_name, results_dir):
            # Rerunning a finished run changes nothing (a new data.root would otherwise re-evaluate it in place).
            log.info("%s is finished (delete its metrics.json to evaluate it again)", run_dir)
            return run_dir

        # ------------------------------------------------------------------------------------------- device
        amp_dtype = None
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            if t.amp:
                amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        # channels_last: on CUDA for every model (cuDNN's NHWC kernels, with AMP); on CPU only for the models whose
        # training step measured faster in it (cpu_channels_last: by model and classes, never timed at start).
        channels_last = t.channels_last and (device.type == "cuda" or cpu_channels_last(cfg.model.name,
                                                                                      cfg.data.num_classes))
        memory_format = torch.channels_last if channels_last else torch.contiguous_format

        # ---------------------------------------------------------------------------------------------- data
        from lemore.data import build_dataset

        train_ds = build_dataset(cfg.data, "train", cache=True)  # decoded once when it fits in data.cache_gb
        val_ds = build_dataset(cfg.data, "val", cache=True)
        if train_ds.num_classes != cfg.data.num_classes:
            raise ConfigValueError(f"data.num_classes={cfg.data.num_classes} but {cfg.data.dataset} has "
                                   f"{train_ds.num_classes} classes")
        class_names = list(train_ds.classes)
        steps_per_epoch = (len(train_ds) // world) // micro
        if steps_per_epoch < 1:
            raise ConfigValueError(f"{len(train_ds)} training samples cannot fill one micro-batch of {micro} on "
                                   f"each of {world} processes; lower train.batch_size")
        start_iter = int(resume["iteration"]) if resume is not None else 0
        batches = train_batches(train_ds, micro, seed=t.seed, rank=rank, world_size=world,
                                start_step=start_iter * t.accum_steps,
                                num_workers=loader_workers(cfg.data.num_workers, device),
                                pin_memory=device.type == "cuda")
        val_loader = eval_loader(val_ds, cfg, rank, world, device=device)
        vis_indices = list(range(min(4, len(val_ds))))

        # --------------------------------------------------------------------------------------------- model
        # Seeded after the data is built (building may generate the synthetic set). The rank offset makes DDP
        # replicas differ in dropout; their initial weights are made equal by DDP's broadcast from rank 0.
        seed_everything(t.seed + rank)
        model = build_model(cfg)
        pretrained = None
        if resume is not None:
            pretrained = resume.get("pretrained")  # the weights come from last.pt; keep the original report
        elif cfg.model.pretrained:
            pretrained = load_pretrained_encoder(model, cfg.model.pretrained)
        if env.ddp and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # before the optimizer sees the parameters
        model.to(device, memory_format=memory_format)
        optimizer = build_optimizer(model, t, fused=device.type == "cuda")
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
        if resume is not None:
            load_state_dict(model, resume["model"], source=str(ckpt_path))
            optimizer.load_state_dict(resume["optimizer"])
            scaler.load_state_dict(resume["scaler"])
            set_rng_state(resume["rng"], rank)
            log.info("resumed %s at iteration %d / %d", ckpt_path, start_iter, t.iters)
        raw_model = model
        if env.ddp:
            model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        n_params = sum(p.numel() for p in raw_model.parameters())

        # ------------------------------------------------------------------------------------- run directory
        if master:
            # A read-only, mistyped or full folder fails now, not when the first checkpoint is due. Room for
            # last.pt (weights + two AdamW moments), its temp copy while it is replaced, and model.pt.
            if restart:  # the preflight passed: the earlier run's files go now, none is mixed into the new run
                shutil.rmtree(run_dir)
            check_writable(run_dir, "run directory")
            if results_dir is not None:
                check_writable(results_dir, "results folder")
            param_bytes = sum(p.numel() * p.element_size() for p in raw_model.parameters())
            check_free_space(run_dir, 8 * param_bytes + 2**20, "checkpoints of this run")
            # Temp files of writes that a kill interrupted: never read (the targets are replaced atomically),
            # but they would clutter the run and end up in DVC's cache.
            stale = remove_stale_temp_files(run_dir)
            if results_dir is not None:
                stale += remove_stale_temp_files(results_dir, f"{run_name}.json")
            atomic_write_bytes(run_dir / "config.yaml", to_yaml(cfg).encode())
            run_log.open(run_dir / "train.log")
            for path in stale:
                log.info("removed %s, left by an interrupted write", path)

        # ------------------------------------------------------------------------------------------ tracking
        wandb_config = {**cfg_dict, "derived": dict(world_size=world, micro_batch=micro, run_name=run_name,
                                                       params_m=n_params / 1e6, pretrained_load=pretrained)}
        # metrics.jsonl goes back to what it held when last.pt was written (empty for a new run): the lines a
        # killed attempt logged after its last checkpoint are logged again, so they must not stay twice.
        tracker = Tracker(run_dir, wandb_config, mode=cfg.wandb, name=run_name, group=cfg.data.dataset,
                          run_id=resume.get("wandb_id") if resume is not None else None, enabled=master,
                          truncate_at=resume.get("metrics_offset") if resume is not None else 0)
        cleanup.callback(tracker.finish)  # also on errors: W&B files are flushed and closed

        # this process's share of the run: the loop's seconds, of which waiting for data, and the evaluations'; and
        # the same summed over every call that trained this run (a run trained in stages, or resumed after a kill:
        # the time up to its last checkpoint), saved in last.pt
        timing = {"iterations": 0, "loop_s": 0.0, "data_wait_s": 0.0, "eval_s": 0.0, "evaluations": 0}
        before = dict.fromkeys(timing, 0) | dict((resume or {}).get("timing_total", {}))

        def timing_total() -> dict[str, float]:
            now = {**timing, "iterations": it - start_iter, "data_wait_s": timing["data_wait_s"] + data_wait,
                   "loop_s": time.perf_counter() - t_loop - timing["eval_s"]}
            return {k: before[k] + now[k] for k in timing}

        def checkpoint(iteration: int) -> None:
            rng = gather_rng_state(env.ddp, world)  # collective: every rank calls it
            if master:
                save_checkpoint(dict(model=raw_model.state_dict(), optimizer=optimizer.state_dict(),
                                     scaler=scaler.state_dict(), iteration=iteration, config=cfg_dict,
                                     run_name=run_name, world_size=world, rng=rng, wandb_id=tracker.run_id,
                                     pretrained=pretrained, metrics_offset=tracker.offset(),
                                     timing_total=timing_total()), ckpt_path)

        def run_eval(iteration: int) -> dict[str, Any]:
            t_eval = time.perf_counter()
            sync_buffers(raw_model, env.ddp)  # every rank evaluates rank 0's BatchNorm statistics
            metrics = evaluate(raw_model, val_loader, cfg, device=device, class_names=class_names,
                               amp_dtype=amp_dtype, memory_format=memory_format)
            if master:
                log.info("iteration %d: %s", iteration, format_metrics(metrics, top=0))
                tracker.log({f"val/{k}": v for k, v in metrics.items() if not isinstance(v, dict)}, step=iteration)
            if master and tracker.wandb_active:
                tracker.log_table("val/per_class_iou", ["class", "iou", "acc"],
                                  [[c, metrics["per_class_iou"][c], metrics["per_class_acc"][c]] for c in class_names],
                                  step=iteration)
                tracker.log_images("val/predictions", prediction_strips(raw_model, val_ds, cfg, vis_indices, device),
                                   step=iteration, captions=[f"val #{i}: image | truth | prediction"
                                                             for i in vis_indices])
            timing["eval_s"] += time.perf_counter() - t_eval
            timing["evaluations"] += 1
            return metrics

        # -------------------------------------------------------------------------------------- training loop
        n_sync_bn = sum(isinstance(m, nn.SyncBatchNorm) for m in raw_model.modules())
        log.info("%s: %s, %.2fM params, %d x %d x %d (world x accum x micro) = batch %d, %d iterations on %s%s%s%s%s",
                 run_name, cfg.model.name, n_params / 1e6, world, t.accum_steps, micro, t.batch_size, t.iters,
                 device, f" ({amp_dtype})" if amp_dtype else "", ", channels_last" if channels_last else "",
                 f", DDP over {dist.get_backend()}" if env.ddp else "",
                 f", {n_sync_bn} SyncBatchNorm layers" if n_sync_bn else "")
        from lemore.progress import progress  # a widget in Jupyter, a line every 30 s in a log file

        pbar = progress(total=t.iters, initial=start_iter, disable=not master, desc=run_name)
        model.train()
        it = start_iter
        loss_window: list[float] = []
        t_last, it_last = time.perf_counter(), it
        t_loop = t_last
        data_wait = 0.0  # seconds spent in next(batches) since the last log line
        while it < end:
            lr = lr_at(it, t)
            for group in optimizer.param_groups:  # the head's groups: lr_mult = train.head_lr_mult
                group["lr"] = lr_at(it, t, group.get("lr_mult", 1.0))
            loss_sum = torch.zeros((), device=device)
            for micro_step in range(t.accum_steps):
                t_data = time.perf_counter()
                images, masks = next(batches)
                data_wait += time.perf_counter() - t_data  # the loop waiting for its data (mmseg's data_time)
                images = images.to(device, non_blocking=True, memory_format=memory_format)  # (b, 3, H, W)
                masks = masks.to(device, non_blocking=True)  # (b, H, W) int64, 255 = ignore
                if env.ddp:  # all-reduce gradients only on the last micro-batch (nanoGPT)
                    model.require_backward_grad_sync = micro_step == t.accum_steps - 1
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = model(images)  # (b, K, H, W)
                loss = criterion(logits, masks) / t.accum_steps
                scaler.scale(loss).backward()
                loss_sum += loss.detach()
            if env.ddp:  # every rank sees the same loss, so every rank stops together on NaN
                dist.all_reduce(loss_sum)
                loss_sum /= world
            loss_value = loss_sum.item()
            if not math.isfinite(loss_value):
                pbar.close()
                kept = f"; the last good checkpoint is {ckpt_path}" if ckpt_path.is_file() else ""
                raise FloatingPointError(f"loss is {loss_value} at iteration {it + 1} (lr {lr:.3g}); stopping "
                                         f"before the optimizer step{kept}. Lower train.lr or check the data.")
            maybe_fault("step", it + 1)  # tests: a kill between backward and the optimizer step (lemore.faults)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            it += 1
            loss_window.append(loss_value)
            pbar.update(1)
            if stop_after_s is not None and it < end and time.perf_counter() - t_call >= stop_after_s:
                end = it  # out of time: checkpoint here and return, as stop_at does

            if it % t.log_interval == 0 or it == t.iters:
                dt = time.perf_counter() - t_last
                ips = (it - it_last) / max(dt, 1e-9)
                mean_loss = sum(loss_window) / len(loss_window)
                pbar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                tracker.log({"train/loss": mean_loss, "train/lr": lr, "train/iter_per_s": ips,
                             "train/img_per_s": ips * t.batch_size, "train/data_wait": data_wait / max(dt, 1e-9),
                             "train/epoch": it * t.accum_steps / steps_per_epoch}, step=it)
                loss_window.clear()
                timing["data_wait_s"] += data_wait
                data_wait = 0.0
                t_last, it_last = time.perf_counter(), it
            if it % t.eval_interval == 0 and it < t.iters:
                run_eval(it)
                model.train()
            if it % t.ckpt_interval == 0 or it == end:
                checkpoint(it)
        pbar.close()
        if end < t.iters:  # a stage of the run: the rest resumes from last.pt
            log.info("stopped at iteration %d / %d (%s); %s resumes from %s", it, t.iters,
                     "stop_at" if stop_at == end else f"stop_after_s={stop_after_s:g}", run_dir, ckpt_path)
            if master:
                tracker.offset()
            tracker.finish()
            return run_dir
        timing["iterations"] = it - start_iter
        timing["loop_s"] = time.perf_counter() - t_loop - timing["eval_s"]  # evaluations on the way left out

        # ------------------------------------------------------------------------------------- final results
        metrics = run_eval(t.iters)
        total = timing_total()  # every call's loop and evaluations, this final one included
        if master:
            save_checkpoint(dict(model=raw_model.state_dict(), config=cfg_dict, run_name=run_name,
                                 iteration=t.iters), run_dir / "model.pt")
            tracker.offset()  # flushes metrics.jsonl, whose val/* lines are the learning curve
            payload = dict(run_name=run_name, config=cfg_dict, metrics=metrics, iteration=t.iters,
                           world_size=world, params_m=n_params / 1e6, pretrained=pretrained,
                           checkpoint=str(run_dir / "model.pt"), curve=read_curve(run_dir / "metrics.jsonl"),
                           timing={**timing, "resumed_at": start_iter, "device": str(device),
                                   "threads": torch.get_num_threads(),
                                   "total": total if start_iter else dict(timing)})
            write_results(run_dir / "metrics.json", **payload)
            if results_dir is not None:
                write_results(Path(results_dir) / f"{run_name}.json", **payload)
            tracker.summary({"final/" + k: v for k, v in metrics.items() if not isinstance(v, dict)})
            log.info("final %s\nrun directory: %s", format_metrics(metrics), run_dir)
        tracker.finish()
        if env.ddp:
            dist.barrier()  # rank 0 has written everything before any process returns
    return run_dir


# ------------------------------------------------------------------------------------------------ device
#: Model families (registry name up to the first "_") that train in channels_last on CPU as well as on CUDA, and
#: up to how many classes. ``python benchmarks/train_throughput.py --channels-last-ab`` (batch 8, 128x128, one
#: thread; results/benchmarks/channels_last_cpu.md): a training step of the ten LeMoRe variants is 1.40-1.65x faster
#: in channels_last with 8 classes (the synthetic recipe), 1.38-1.46x with 19, 1.20-1.31x with 60 and 0.95-1.00x
#: with 150 (the loss on channels_last logits is slow on CPU and grows with the classes); LR-ASPP is at 0.93-1.07x
#: and SegFormer-B0 at 0.98-1.01x, no gain: both stay NCHW. Families not measured stay NCHW on CPU.
CPU_CHANNELS_LAST = {"lemore": 100}


def cpu_channels_last(model_name: str, num_classes: int) -> bool:
    """Whether ``model_name`` with ``num_classes`` logits trains in channels_last on CPU (with
    ``train.channels_last`` on): a fixed table from measurements, so the choice never depends on timing at start."""
    return num_classes <= CPU_CHANNELS_LAST.get(model_name.split("_", 1)[0], 0)


# ------------------------------------------------------------------------------------------ loss and schedule
def criterion(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel cross-entropy, ignore index 255, mean over all pixels (MMSegmentation's ``avg_non_ignore=False``).

    logits (B, K, H, W), target (B, H, W) int64 -> scalar. Computed in float32 under AMP.
    """
    return F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="none").mean()


def lr_at(it: int, t: TrainCfg, mult: float = 1.0) -> float:
    """Learning rate of iteration ``it`` (0-based) for a parameter group whose base lr is ``mult x train.lr``.

    mmcv's ``PolyLrUpdaterHook(power, min_lr, warmup="linear", warmup_iters, warmup_ratio)`` as SegFormer uses it:
    ``poly = (base - min_lr) * (1 - it / iters) ** power + min_lr``; during warm-up it is multiplied by
    ``1 - (1 - it / warmup_iters) * (1 - warmup_ratio)``, i.e. it rises linearly from ``warmup_ratio * poly``. mmcv
    applies this to each group's own base lr with the same ``min_lr``; with ``min_lr = 0`` (every recipe with a
    head multiplier) a group's lr is simply ``mult x lr_at(it, t)``.
    """
    lr = (t.lr * mult - t.min_lr) * (1 - it / t.iters) ** t.poly_power + t.min_lr
    if it < t.warmup_iters:
        lr *= 1 - (1 - it / t.warmup_iters) * (1 - t.warmup_ratio)
    return lr


def param_groups(model: nn.Module, weight_decay: float, *, head_lr_mult: float = 1.0,
                 norm_bias_decay: bool = False) -> list[dict[str, Any]]:
    """Optimizer groups: ``[decay, no_decay]``, then ``[head decay, head no_decay]`` when ``head_lr_mult != 1``.

    Default (LeMoRe's recipe): no decay on biases and normalisation parameters (every tensor with ``ndim <= 1``) nor
    on names the model returns from ``no_weight_decay()`` (timm's convention). LeMoRe's frontal/lateral view
    matrices are learned mixing weights like a 1x1 conv and decay.

    ``norm_bias_decay=True`` is mmcv's ``DefaultOptimizerConstructor`` with only ``custom_keys`` (the peers'
    official configs): every parameter decays except those the custom keys match, which each model lists in
    ``no_weight_decay()`` (e.g. SeaFormer's ``pos_emb``, SegFormer's MiT ``norm`` layers). The official ``'norm'``
    key matches no BatchNorm of TopFormer / SeaFormer / LR-ASPP (mmcv names them ``bn``), so those decay too.

    ``head_lr_mult``: the official ``'head': lr_mult=10`` on the parameters under the model's ``head_prefixes``
    (mmseg's ``decode_head.*``); each group carries its ``lr_mult`` for :func:`lr_at`. With the default 1 the groups
    are exactly LeMoRe's two, so checkpoints written before the multiplier existed resume unchanged.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    heads = tuple(getattr(model, "head_prefixes", ()))
    if head_lr_mult != 1.0 and not heads:
        raise ConfigValueError(f"train.head_lr_mult={head_lr_mult} but {type(model).__name__} declares no head "
                               "(head_prefixes); use train.head_lr_mult=1")
    groups = {(1.0, True): [], (1.0, False): []}
    if head_lr_mult != 1.0:
        groups.update({(head_lr_mult, True): [], (head_lr_mult, False): []})
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = name not in skip and (norm_bias_decay or p.ndim > 1)
        mult = head_lr_mult if heads and name.startswith(heads) else 1.0
        groups[mult, decay].append(p)
    return [{"params": ps, "weight_decay": weight_decay if decay else 0.0, "lr_mult": mult}
            for (mult, decay), ps in groups.items()]


def build_optimizer(model: nn.Module, t: TrainCfg, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW (betas) or SGD (momentum) over :func:`param_groups`, as ``train.optimizer`` says."""
    groups = param_groups(model, t.weight_decay, head_lr_mult=t.head_lr_mult, norm_bias_decay=t.norm_bias_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, fused=fused)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, fused=fused)
    raise ConfigValueError(f"train.optimizer={t.optimizer!r}; choose from ['adamw', 'sgd']")


def load_pretrained_encoder(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load ``lemore pretrain``'s encoder weights into ``model``; report (log + warn + return) what did not fit.

    Returns:
        ``{"path", "loaded", "missing_keys", "unexpected_keys"}`` -- stored in the checkpoint, metrics.json and
        wandb.config, so a run always says which of its weights came from ImageNet.
    """
    if not hasattr(model, "load_encoder_state_dict"):
        raise ConfigValueError(f"model.pretrained is set but {type(model).__name__} has no "
                               "load_encoder_state_dict(); encoder weights from `lemore pretrain` fit the LeMoRe "
                               "models only")
    state = load_weights(path)
    missing, unexpected = model.load_encoder_state_dict(state)
    report = {"path": str(path), "loaded": len(state) - len(unexpected), "missing_keys": list(missing),
              "unexpected_keys": list(unexpected)}
    log.info("pretrained encoder %s: %d tensors loaded, %d missing, %d unexpected", path, report["loaded"],
             len(missing), len(unexpected))
    if missing or unexpected:
        msg = (f"pretrained encoder {path}: missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
               f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        warnings.warn(msg, stacklevel=2)
        log.warning(msg)
    return report


def read_curve(jsonl: Path) -> list[dict[str, Any]]:
    """The evaluations logged in a run's ``metrics.jsonl``: ``[{"iteration", "miou", "aacc", "macc"}, ...]`` in order
    (the learning curve that the plateau check reads; a resumed run's file holds every evaluation once)."""
    import json

    curve = []
    if jsonl.is_file():
        for line in jsonl.read_text().splitlines():
            record = json.loads(line)
            if "val/miou" in record:
                curve.append({"iteration": record["step"], **{k.split("/", 1)[1]: record[k]
                                                              for k in ("val/miou", "val/aacc", "val/macc")
                                                              if k in record}})
    return curve


def check_resumable(saved: Mapping[str, Any], current: Mapping[str, Any], path: Path,
                    allowed: tuple[str, ...] = RESUMABLE_KEYS) -> None:
    """Refuse to resume ``path`` with a config that would compute something else (``allowed`` keys may differ).

    Keys the saved config predates (``lemore.config.ADDED_KEYS``) count with the value that reproduces what the run
    did without them, so runs saved before those keys existed resume when nothing else changed."""
    a, b = _flatten(_plain(saved)), _flatten(_plain(current))
    if a:  # (only keys the current config has: pretraining's config is another dataclass)
        a = {**{k: v for k, v in ADDED_KEYS.items() if k in b}, **a}
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in allowed)
    if diff:
        shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:10])
        raise ConfigValueError(f"cannot resume {path}: the config differs ({shown}). Use another run directory "
                               f"(out_dir / name) or delete {path} to start over.")


def finished(run_dir: Path, resume: Mapping[str, Any], iters: int, run_name: str,
             results_dir: str | os.PathLike | None) -> bool:
    """Whether the run in ``run_dir`` has written everything: its last checkpoint is the last iteration and
    ``model.pt``, ``metrics.json`` (and ``<results_dir>/<run name>.json``) exist -- each is written atomically, so
    existing means complete. A run killed during its final evaluation or writes is not finished."""
    outputs = [run_dir / "model.pt", run_dir / "metrics.json"]
    if results_dir is not None:
        outputs.append(Path(results_dir) / f"{run_name}.json")
    return int(resume["iteration"]) >= iters and all(p.is_file() for p in outputs)


def read_resume_checkpoint(path: Path, cfg_dict: Mapping[str, Any],
                           allowed: tuple[str, ...] = RESUMABLE_KEYS) -> dict[str, Any] | None:
    """``path`` (a run's ``last.pt``) if it exists, checked to continue the run of ``cfg_dict``; else None.

    Raises:
        CheckpointError: unreadable (truncated, not a checkpoint) or unsafe (pickled code); the message says how
            to start over.
        ConfigValueError: written by a run with another config (:func:`check_resumable`).
    """
    if not path.is_file():
        return None
    try:
        resume = load_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f"cannot resume: {e}. Move or delete it to start the run over.") from None
    if not isinstance(resume, Mapping) or not {"model", "optimizer", "iteration"} <= set(resume):
        raise CheckpointError(f"cannot resume {str(path)!r}: it is not a training checkpoint of lemore (it has "
                              f"no model/optimizer/iteration entries). Move or delete it to start the run over.")
    check_resumable(resume.get("config", {}), cfg_dict, path, allowed)
    return dict(resume)


# ------------------------------------------------------------------------------------------ data, resumable
class SeededSamples(Dataset):
    """``ds[(index, epoch, position)]`` is ``ds[index]`` computed with torch / numpy / python RNGs seeded from
    ``(seed, epoch, position)`` and restored afterwards: a sample's augmentation depends only on where it sits
    in the schedule (see the module docstring), not on worker processes or what was loaded before."""

    def __init__(self, ds: Dataset, seed: int):
        self.ds, self.seed = ds, seed

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: tuple[int, int, int]):
        index, epoch, position = key
        s = np.random.SeedSequence([self.seed, epoch, position]).generate_state(2, dtype=np.uint32)
        seed = int(s[0]) << 32 | int(s[1])
        if getattr(self.ds, "staged", False):
            # The training pipeline draws from a generator of its own, seeded alike (the same stream as the global
            # generator seeded with `seed`, without saving and restoring three global states), and leaves the
            # per-pixel work to the loader's collate_fn (SegDataset.collate).
            return self.ds.sample(index, torch.Generator().manual_seed(seed))
        with fork_rng(seed):
            return self.ds[index]


class EpochBatchSampler(Sampler[list[tuple[int, int, int]]]):
    """Batches of ``(index, epoch, position)`` for one rank: epoch ``e`` is ``randperm(n)`` seeded by ``(seed, e)``,
    split round-robin over ranks (equal shares, the remainder dropped) and cut into full micro-batches.
    ``set_epoch(e, start)`` makes the next iteration yield epoch ``e`` from batch ``start`` on."""

    def __init__(self, n: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world_size = n, batch_size, seed, rank, world_size
        self.per_rank = n // world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.per_rank // self.batch_size - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
        perm = torch.randperm(self.n, generator=g).tolist()
        positions = range(self.rank, self.per_rank * self.world_size, self.world_size)  # this rank's share
        mine = [(perm[p], self.epoch, p) for p in positions]
        for b in range(self.start, len(mine) // self.batch_size):
            yield mine[b * self.batch_size:(b + 1) * self.batch_size]


def train_batches(ds: Dataset, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                  start_step: int = 0, num_workers: int = 0, pin_memory: bool = False) -> Iterator[Any]:
    """Endless micro-batches of this rank, starting at global micro-step ``start_step`` (resume position)."""
    sampler = EpochBatchSampler(len(ds), batch_size, seed=seed, rank=rank, world_size=world_size)
    steps = len(sampler)
    loader = DataLoader(SeededSamples(ds, seed), batch_sampler=sampler, num_workers=num_workers,
                        pin_memory=pin_memory, persistent_workers=num_workers > 0,
                        collate_fn=ds.collate if getattr(ds, "staged", False) else None,  # the batch stage
                        generator=torch.Generator())  # own generator: iterating never touches the global RNG
    epoch, offset = divmod(start_step, steps)
    while True:
        sampler.set_epoch(epoch, offset)
        yield from loader
        epoch, offset = epoch + 1, 0


# --------------------------------------------------------------------------------------------- RNG states
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def fork_rng(seed: int):
    """Run a block with torch (CPU), numpy and python RNGs seeded from ``seed``; restore them afterwards."""
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    # The CPU generator only: what the transforms draw from. torch.manual_seed would also queue a seed for every
    # CUDA device, which a CUDA build of torch does with a Python stack trace each time (0.6 ms, a third of a
    # small crop's whole augmentation); the CPU stream is the same either way.
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain containers (loadable with ``weights_only=True``)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached": float(cached)},
        "python": {"version": version, "state": list(mt), "gauss": gauss},
    }


def set_rng_state(states: list[dict[str, Any]], rank: int) -> None:
    """Restore rank ``rank``'s states (saved per rank by :func:`gather_rng_state`)."""
    if rank >= len(states):
        warnings.warn(f"the checkpoint holds RNG states of {len(states)} processes, not of rank {rank}; "
                      "reseeding (the resumed run is not bit-exact)", stacklevel=2)
        seed_everything(rank)
        return
    s = states[rank]
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = s["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def gather_rng_state(ddp: bool, world_size: int) -> list[dict[str, Any]]:
    """Every rank's RNG states, indexed by rank (a collective under DDP)."""
    state = rng_state()
    if not ddp:
        return [state]
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, state)
    return out


def sync_buffers(model: nn.Module, ddp: bool) -> None:
    """Broadcast rank 0's buffers (BatchNorm statistics) so that all ranks evaluate the same model."""
    if ddp:
        for b in model.buffers():
            dist.broadcast(b, 0)


# ----------------------------------------------------------------------------------------------- processes
@dataclass
class DistEnv:
    ddp: bool
    rank: int
    local_rank: int
    world_size: int
    device: torch.device


@contextlib.contextmanager
def distributed(device_pref: str = "auto") -> Iterator[DistEnv]:
    """Set up DDP if torchrun's ``RANK`` is in the environment (nanoGPT), else one process; tear it down after."""
    if device_pref not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device={device_pref!r}; choose from ['auto', 'cpu', 'cuda']")
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device='cuda' but CUDA is not available; use train.device=auto or cpu")
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    ddp = int(os.environ.get("RANK", "-1")) != -1
    started = False
    if ddp:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        world = int(os.environ["WORLD_SIZE"])
        device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
            started = True
    else:
        rank = local_rank = 0
        world = 1
        device = torch.device("cuda") if use_cuda else torch.device("cpu")
    try:
        yield DistEnv(ddp, rank, local_rank, world, device)
    finally:
        if started:
            dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------- misc
class DeferredFileHandler(logging.Handler):
    """A log handler that keeps records in memory until :meth:`open` names the file, then writes them first."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.pending: list[logging.LogRecord] = []
        self.file: logging.FileHandler | None = None

    def open(self, path: Path) -> None:
        self.file = logging.FileHandler(path)
        self.file.setFormatter(self.formatter)
        for record in self.pending:
            self.file.handle(record)
        self.pending.clear()

    def emit(self, record: logging.LogRecord) -> None:
        if self.file is None:
            self.pending.append(record)
        else:
            self.file.handle(record)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        super().close()


@contextlib.contextmanager
def log_to_file(path: Path | None) -> Iterator[DeferredFileHandler]:
    """Also write the ``lemore`` log (INFO and up) to ``path`` for the duration of the block. With ``path=None``
    the lines wait in memory until ``handler.open(path)`` (a run's preflight must not create its directory)."""
    handler = DeferredFileHandler()
    if path is not None:
        handler.open(path)
    level = log.level
    log.addHandler(handler)
    if level == logging.NOTSET or level > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        handler.close()


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {f"{prefix}{k}": v})
    return out


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# ------------------------------------------------------------------------------------------------------ CLI
def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATASET_NAMES, help="recipe to start from (default: synthetic, or the "
                   "config file's data.dataset)")
    p.add_argument("--config", type=Path, help="YAML file with a RunCfg-shaped mapping (e.g. a run's config.yaml)")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override, e.g. --set train.iters=1000 data.root=/data/ade (repeatable)")
    p.add_argument("--run-dir", type=Path, help="run directory (default: <out_dir>/<run name>); resumes last.pt")
    p.add_argument("--results-dir", type=Path, help="also write <results-dir>/<run name>.json")
    p.add_argument("--restart-finished", action="store_true",
                   help="train a run that already reached its last iteration again from scratch (an unfinished one "
                        "still resumes)")
    p.add_argument("--stop-at", type=int, default=None, metavar="ITER",
                   help="train up to this iteration, checkpoint and exit (a stage of a long run; run again to resume)")
    p.add_argument("--stop-after", type=float, default=None, metavar="MINUTES",
                   help="the same at the first iteration that ends this many minutes after the start")


def cli_main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    cfg = load(args.config, dataset=args.dataset, overrides=args.set)
    train(cfg, run_dir=args.run_dir, results_dir=args.results_dir, restart_finished=args.restart_finished,
          stop_at=args.stop_at, stop_after_s=None if args.stop_after is None else args.stop_after * 60)
    return 0
