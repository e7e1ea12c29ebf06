"""ImageNet-1K pretraining of the LeMoRe classifier (``lemore_cls``), whose encoder ``train`` then fine-tunes.

The paper (supplementary) pretrains its encoder on ImageNet-1K but does not give the recipe. We use the DeiT
recipe (Touvron et al., ICML 2021, "Training data-efficient image transformers"), which timm uses for the
mobile conv/attention hybrids this family belongs to (EfficientFormer, MobileViT, TopFormer's ImageNet
configs follow the same AdamW + cosine scheme):

* AdamW, lr 1e-3 at a global batch of 1024 (DeiT's 5e-4 x batch / 512), scaled linearly with ``batch_size``;
  weight decay 0.05 (none on biases / norm parameters, :func:`lemore.engine.train.param_groups`);
* 300 epochs, cosine decay to 1e-5 after a 5-epoch linear warm-up (the warm-up is capped at half of a
  shortened run); label smoothing 0.1;
* augmentation: RandomResizedCrop + horizontal flip (``lemore.data.transforms.imagenet_train_transform``);
  DeiT's RandAugment / Mixup / CutMix / random erasing / repeated augmentation are not used (a 1.6M-parameter
  network underfits rather than overfits ImageNet; MobileNetV3 / TopFormer train without them too).

Every value is a field of :class:`PretrainCfg`, overridable with ``--set key=value``.

The loop is ``train``'s, for a classifier: the same process setup (DDP via torchrun), the same resumable data
order and seeded augmentation, the same atomic checkpoints and exact resume from ``<run_dir>/last.pt``, the same
NaN check and tracking. Outputs in the run directory: ``encoder.safetensors`` (the ``backbone.*`` weights that
``train`` loads via ``model.pretrained``), ``model.pt`` (the whole classifier), ``metrics.json`` (top-1/top-5 on
the val split), ``config.yaml``, ``metrics.jsonl``, ``train.log``.

CLI: ``python -m lemore pretrain --root /data/imagenet [--set batch_size=256 --set epochs=100]``;
multi-GPU: ``torchrun --nproc_per_node 8 -m lemore pretrain --root ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from lemore.checkpoint import (
    atomic_write_bytes,
    check_free_space,
    check_writable,
    load_state_dict,
    remove_stale_temp_files,
    save_checkpoint,
)
from lemore.config import ConfigValueError, DataCfg
from lemore.engine.train import (
    distributed,
    gather_rng_state,
    log_to_file,
    param_groups,
    read_resume_checkpoint,
    seed_everything,
    set_rng_state,
    sync_buffers,
    train_batches,
)
from lemore.faults import maybe_fault
from lemore.system import keep_freed_memory
from lemore.tracking import Tracker, write_results

log = logging.getLogger("lemore")

#: Fields that may differ when a run is resumed (how it is watched, not what it computes).
RESUMABLE_KEYS = ("eval_interval", "ckpt_interval", "log_interval", "device", "num_workers", "root", "wandb",
                  "out_dir", "name")


@dataclass
class PretrainCfg:
    """ImageNet pretraining settings (the DeiT recipe, see the module docstring)."""

    root: str = ""  # folder with train/ and val/ class folders; "" -> $LEMORE_DATA/imagenet
    model: str = "lemore_cls"
    num_classes: int = 1000
    img_size: int = 224
    epochs: int = 300
    iters: int = 0  # > 0: run exactly this many iterations instead of `epochs` (smoke runs, tests)
    batch_size: int = 1024  # global; per-GPU micro-batch = batch_size / (world_size * accum_steps)
    accum_steps: int = 1
    lr: float = 1e-3  # at batch 1024; the run uses lr * batch_size / 1024 (linear scaling rule)
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 5.0
    label_smoothing: float = 0.1
    eval_interval: int = 0  # iterations between evaluations; 0 -> once per epoch
    ckpt_interval: int = 0  # iterations between checkpoints; 0 -> once per epoch
    log_interval: int = 50
    seed: int = 0
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    device: str = "auto"
    num_workers: int = 8
    wandb: str = "offline"
    out_dir: str = "runs"
    name: str = ""  # "" -> run_name()

    def run_name(self, world_size: int = 1) -> str:
        """``{model}_{bs}x{gpus}-{epochs}e_imagenet-{img}`` (``-{iters}it`` for fixed-iteration runs)."""
        if self.name:
            return self.name
        per_gpu = max(1, self.batch_size // max(1, world_size))
        length = f"{self.iters}it" if self.iters > 0 else f"{self.epochs}e"
        return f"{self.model}_{per_gpu}x{world_size}-{length}_imagenet-{self.img_size}"

    def data_cfg(self) -> DataCfg:
        return DataCfg(dataset="imagenet", root=self.root, num_classes=self.num_classes,
                       crop_size=(self.img_size, self.img_size), num_workers=self.num_workers)


def load_pretrain_cfg(path: str | os.PathLike | None = None, overrides: list[str] | dict[str, Any] | None = None,
                      **values: Any) -> PretrainCfg:
    """:class:`PretrainCfg` from defaults, an optional flat YAML mapping, ``values`` and ``key=value`` overrides
    (type-checked like ``lemore.config.load``)."""
    from lemore.config import ConfigTypeError, set_key  # the run config's type-checked setter

    cfg = PretrainCfg()
    items: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigValueError(f"config file {str(path)!r} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigTypeError(f"config file {str(path)!r} must hold a mapping of PretrainCfg fields")
        items.update(loaded)
    items.update(values)
    if isinstance(overrides, list):
        for item in overrides:
            if "=" not in item:
                raise ConfigValueError(f"override {item!r} must look like key=value, e.g. batch_size=256")
            k, v = item.split("=", 1)
            items[k.strip()] = v
    else:
        items.update(overrides or {})
    for k, v in items.items():
        set_key(cfg, k, v)
    if cfg.wandb not in ("offline", "online", "disabled"):
        raise ConfigValueError(f"wandb={cfg.wandb!r}; choose from ['disabled', 'offline', 'online']")
    for k in ("epochs", "batch_size", "accum_steps", "img_size", "num_classes", "log_interval"):
        if getattr(cfg, k) < 1:
            raise ConfigValueError(f"{k}={getattr(cfg, k)} must be >= 1")
    return cfg


def cosine_lr(it: int, total: int, base: float, min_lr: float, warmup: int) -> float:
    """Linear warm-up from ``base / warmup`` to ``base`` over ``warmup`` iterations, then cosine to ``min_lr``."""
    if it < warmup:
        return base * (it + 1) / warmup
    progress = (it - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * progress))


def pretrain(cfg: PretrainCfg, *, run_dir: str | os.PathLike | None = None,
             results_dir: str | os.PathLike | None = None) -> Path:
    """Train ``cfg.model`` on ImageNet; write ``encoder.safetensors`` for ``train``; resume if interrupted.

    Returns:
        The run directory.
    """
    keep_freed_memory()  # lemore.system: freed activations are reused, not faulted in again
    with distributed(cfg.device) as env, contextlib.ExitStack() as cleanup:
        rank, world, device, master = env.rank, env.world_size, env.device, env.rank == 0
        if cfg.batch_size % (world * cfg.accum_steps):
            raise ConfigValueError(f"batch_size={cfg.batch_size} must be divisible by world_size x accum_steps = "
                                   f"{world} x {cfg.accum_steps}")
        micro = cfg.batch_size // (world * cfg.accum_steps)
        run_name = cfg.run_name(world)
        run_dir = Path(run_dir) if run_dir is not None else Path(cfg.out_dir) / run_name
        ckpt_path = run_dir / "last.pt"
        cfg_dict = asdict(cfg)
        # Preflight as in ``train``: bad input fails before the run directory is touched (see there).
        run_log = cleanup.enter_context(log_to_file(None)) if master else None
        resume = read_resume_checkpoint(ckpt_path, cfg_dict, allowed=RESUMABLE_KEYS)
        amp_dtype = None
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            if cfg.amp:
                amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        memory_format = torch.channels_last if device.type == "cuda" and cfg.channels_last else torch.contiguous_format

        # ---------------------------------------------------------------------------------------------- data
        from lemore.data import build_dataset
        from lemore.data.transforms import imagenet_eval_transform, imagenet_train_transform

        data = cfg.data_cfg()
        train_ds = build_dataset(data, "train", transform=imagenet_train_transform(cfg.img_size))
        val_ds = build_dataset(data, "val", transform=imagenet_eval_transform(cfg.img_size,
                                                                               round(cfg.img_size / 0.875)))
        steps_per_epoch = (len(train_ds) // world) // micro  # micro-batches per epoch and rank
        if steps_per_epoch < cfg.accum_steps:
            raise ConfigValueError(f"{len(train_ds)} training images cannot fill one batch of {cfg.batch_size}")
        iters_per_epoch = steps_per_epoch // cfg.accum_steps
        total = cfg.iters if cfg.iters > 0 else cfg.epochs * iters_per_epoch
        warmup = min(round(cfg.warmup_epochs * iters_per_epoch), total // 2)
        eval_interval = cfg.eval_interval or iters_per_epoch
        ckpt_interval = cfg.ckpt_interval or iters_per_epoch
        base_lr = cfg.lr * cfg.batch_size / 1024
        start_iter = int(resume["iteration"]) if resume is not None else 0
        batches = train_batches(train_ds, micro, seed=cfg.seed, rank=rank, world_size=world,
                                start_step=start_iter * cfg.accum_steps, num_workers=cfg.num_workers,
                                pin_memory=device.type == "cuda")
        val_loader = DataLoader(val_ds, batch_size=micro, sampler=list(range(rank, len(val_ds), world)),
                                num_workers=cfg.num_workers, generator=torch.Generator())

        # --------------------------------------------------------------------------------------------- model
        import lemore

        seed_everything(cfg.seed + rank)
        model = lemore.create_model(cfg.model, num_classes=cfg.num_classes, img_size=cfg.img_size)
        if not hasattr(model, "encoder_state_dict"):
            raise ConfigValueError(f"model {cfg.model!r} has no encoder_state_dict(); pretraining is for lemore_cls")
        if env.ddp and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(device, memory_format=memory_format)
        optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=base_lr, betas=cfg.betas,
                                      fused=device.type == "cuda")
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
        if resume is not None:
            load_state_dict(model, resume["model"], source=str(ckpt_path))
            optimizer.load_state_dict(resume["optimizer"])
            scaler.load_state_dict(resume["scaler"])
            set_rng_state(resume["rng"], rank)
            log.info("resumed %s at iteration %d / %d", ckpt_path, start_iter, total)
        raw_model = model
        if env.ddp:
            model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        if master:  # the run directory: writable, room for checkpoints, no stale temp files (see ``train``)
            check_writable(run_dir, "run directory")
            if results_dir is not None:
                check_writable(results_dir, "results folder")
            check_free_space(run_dir, 8 * sum(p.numel() * p.element_size() for p in raw_model.parameters()) + 2**20,
                             "checkpoints of this run")
            stale = remove_stale_temp_files(run_dir)
            if results_dir is not None:
                stale += remove_stale_temp_files(results_dir, f"{run_name}.json")
            atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(_plain(cfg_dict), sort_keys=False).encode())
            run_log.open(run_dir / "train.log")
            for path in stale:
                log.info("removed %s, left by an interrupted write", path)
        tracker = Tracker(run_dir, {**cfg_dict, "derived": dict(world_size=world, micro_batch=micro, lr=base_lr,
                                                                  iters=total, warmup_iters=warmup)},
                          mode=cfg.wandb, name=run_name, group="imagenet", job_type="pretrain",
                          run_id=resume.get("wandb_id") if resume is not None else None, enabled=master,
                          truncate_at=resume.get("metrics_offset") if resume is not None else 0)
        cleanup.callback(tracker.finish)

        def run_eval(iteration: int) -> dict[str, Any]:
            sync_buffers(raw_model, env.ddp)
            metrics = evaluate_classifier(raw_model, val_loader, device=device, amp_dtype=amp_dtype)
            if master:
                log.info("iteration %d: top1 %.2f top5 %.2f (%d images)", iteration, metrics["top1"],
                         metrics["top5"], metrics["num_images"])
                tracker.log({f"val/{k}": v for k, v in metrics.items()}, step=iteration)
            return metrics

        # -------------------------------------------------------------------------------------- training loop
        log.info("%s: %d iterations (%d per epoch), batch %d = %d x %d x %d, lr %.3g, warm-up %d, on %s", run_name,
                 total, iters_per_epoch, cfg.batch_size, world, cfg.accum_steps, micro, base_lr, warmup, device)
        from lemore.progress import progress  # a widget in Jupyter, a line every 30 s in a log file

        pbar = progress(total=total, initial=start_iter, disable=not master, desc=run_name)
        model.train()
        it, window, t_last, it_last = start_iter, [], time.perf_counter(), start_iter
        while it < total:
            lr = cosine_lr(it, total, base_lr, cfg.min_lr, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for micro_step in range(cfg.accum_steps):
                images, labels = next(batches)
                images = images.to(device, non_blocking=True, memory_format=memory_format)  # (b, 3, S, S)
                labels = labels.to(device, non_blocking=True)  # (b,)
                if env.ddp:
                    model.require_backward_grad_sync = micro_step == cfg.accum_steps - 1
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = model(images)  # (b, num_classes)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing) / cfg.accum_steps
                scaler.scale(loss).backward()
                loss_sum += loss.detach()
            if env.ddp:
                dist.all_reduce(loss_sum)
                loss_sum /= world
            loss_value = loss_sum.item()
            if not math.isfinite(loss_value):
                pbar.close()
                raise FloatingPointError(f"loss is {loss_value} at iteration {it + 1} (lr {lr:.3g}); stopping; the "
                                         f"last good checkpoint is {ckpt_path}. Lower lr.")
            maybe_fault("step", it + 1)  # tests: a kill between backward and the optimizer step (lemore.faults)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            it += 1
            window.append(loss_value)
            pbar.update(1)
            if it % cfg.log_interval == 0 or it == total:
                ips = (it - it_last) / max(time.perf_counter() - t_last, 1e-9)
                pbar.set_postfix(loss=f"{sum(window) / len(window):.4f}", lr=f"{lr:.2e}", refresh=False)
                tracker.log({"train/loss": sum(window) / len(window), "train/lr": lr, "train/iter_per_s": ips,
                             "train/img_per_s": ips * cfg.batch_size, "train/epoch": it / iters_per_epoch}, step=it)
                window.clear()
                t_last, it_last = time.perf_counter(), it
            if it % eval_interval == 0 and it < total:
                run_eval(it)
                model.train()
            if it % ckpt_interval == 0 or it == total:
                rng = gather_rng_state(env.ddp, world)
                if master:
                    save_checkpoint(dict(model=raw_model.state_dict(), optimizer=optimizer.state_dict(),
                                         scaler=scaler.state_dict(), iteration=it, config=cfg_dict, run_name=run_name,
                                         world_size=world, rng=rng, wandb_id=tracker.run_id,
                                         metrics_offset=tracker.offset()), ckpt_path)
        pbar.close()

        # ------------------------------------------------------------------------------------- final results
        metrics = run_eval(total)
        if master:
            from safetensors.torch import save as safetensors_bytes

            encoder = {k: v.contiguous().cpu() for k, v in raw_model.encoder_state_dict().items()}
            atomic_write_bytes(run_dir / "encoder.safetensors",
                               safetensors_bytes(encoder, metadata={"run_name": run_name, "model": cfg.model,
                                                                    "img_size": str(cfg.img_size)}))
            save_checkpoint(dict(model=raw_model.state_dict(), config=cfg_dict, run_name=run_name, iteration=total),
                            run_dir / "model.pt")
            payload = dict(run_name=run_name, config=cfg_dict, metrics=metrics, iteration=total, world_size=world,
                           encoder=str(run_dir / "encoder.safetensors"))
            write_results(run_dir / "metrics.json", **payload)
            if results_dir is not None:
                write_results(Path(results_dir) / f"{run_name}.json", **payload)
            tracker.summary({f"final/{k}": v for k, v in metrics.items()})
            log.info("encoder weights: %s (top1 %.2f, top5 %.2f)", run_dir / "encoder.safetensors", metrics["top1"],
                     metrics["top5"])
        tracker.finish()
        if env.ddp:
            dist.barrier()
    return run_dir


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader, *, device: torch.device | str = "cpu",
                        amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Top-1 / top-5 accuracy in percent over ``loader`` (summed over DDP ranks)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, dtype=torch.int64, device=device)  # top-1 hits, top-5 hits, images
    autocast = (torch.autocast("cuda", dtype=amp_dtype) if amp_dtype is not None and device.type == "cuda"
                else contextlib.nullcontext())
    try:
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            with autocast:
                logits = model(images)  # (B, num_classes)
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, 5)
            hits = top == labels[:, None]
            counts += torch.stack([hits[:, 0].sum(), hits.any(1).sum(), torch.tensor(len(labels), device=device)])
    finally:
        model.train(was_training)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(counts)
    n = int(counts[2])
    return {"top1": 100.0 * int(counts[0]) / n if n else math.nan,
            "top5": 100.0 * int(counts[1]) / n if n else math.nan, "num_images": n}


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# ------------------------------------------------------------------------------------------------------ CLI
def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", help="ImageNet folder with train/ and val/ (default: $LEMORE_DATA/imagenet)")
    p.add_argument("--config", type=Path, help="YAML mapping of PretrainCfg fields")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help=f"override, e.g. --set batch_size=256 epochs=100; keys: {[f.name for f in fields(PretrainCfg)]}")
    p.add_argument("--run-dir", type=Path, help="run directory (default: <out_dir>/<run name>); resumes last.pt")
    p.add_argument("--results-dir", type=Path, help="also write <results-dir>/<run name>.json")


def cli_main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    values = {"root": args.root} if args.root else {}
    cfg = load_pretrain_cfg(args.config, overrides=args.set, **values)
    pretrain(cfg, run_dir=args.run_dir, results_dir=args.results_dir)
    return 0
