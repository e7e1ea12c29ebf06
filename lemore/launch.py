"""What the notebooks and the DVC pipeline call: validated choices, resolved configs, launches.

Notebooks stay thin (a parameters cell of flat literals, then calls into this module); every decision lives here
where it is tested:

* :func:`check_choices` fails in the first cell of a notebook with the valid choices.
* :func:`finetune_config` turns the notebook's flat parameters into a :class:`lemore.config.RunCfg`. Sentinels mean
  "the paper's recipe for this dataset" (``lemore.config.recipe``): ``iterations=0``, ``batch_size=0``, ``crop=""``.
  ``smoke=True`` overrides everything with :data:`SMOKE` (synthetic data, 2 iterations, CPU, W&B off, 64x64).
* :func:`finetune` trains (and evaluates) in this process for one GPU/CPU, or builds the ``torchrun`` command
  (:func:`torchrun_command`) for several GPUs or several nodes and runs it, streaming its output. Several nodes:
  the same call on every node with ``nodes``, that node's ``node_rank`` and one rendezvous endpoint
  (:func:`torchrun_launcher`; docs/cluster.md has a SLURM script).
* :func:`pretrain_config` / :func:`pretrain`: the same for ImageNet pretraining (``lemore.engine.pretrain``).
* :func:`prepare_data`: the pipeline's data stage (generate the synthetic set; ``lemore data check`` a real one).
* :func:`profile`: parameters / GFLOPs / latency of every model at the settings of the paper's tables.
* ``python -m lemore.launch notebook NAME OUT ...``: runs a notebook with papermill, its parameters read from one
  section of ``params.yaml`` (how ``dvc.yaml`` calls every notebook). With ``$LEMORE_STAGE_MINUTES`` set
  (:data:`STAGE_MINUTES_ENV`; ``tools/dvc_jobs.py --stage-minutes``), the fine-tuning notebook's run is first trained
  in this process for at most that long (:func:`finetune_stage`); an unfinished run exits with
  :data:`EXIT_UNFINISHED` and resumes when the same command runs again, and the notebook runs once the run is
  finished: a long pipeline stage in processes that each fit a time limit.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from lemore.config import DATASET_NAMES, ConfigValueError, RunCfg, load, recipe
from lemore.profiling import write_json_atomic, write_text_atomic
from lemore.progress import TEXT_ENV as TEXT_PROGRESS_ENV

#: What ``smoke=True`` sets, on top of everything else: a run that exercises every code path in seconds.
SMOKE: dict[str, Any] = {
    "train.iters": 2,
    "train.batch_size": 2,
    "train.warmup_iters": 1,
    "train.eval_interval": 1000,
    "train.ckpt_interval": 1000,
    "train.log_interval": 1,
    "train.device": "cpu",
    "data.crop_size": (64, 64),
    "data.scale": (128, 64),
    "data.num_workers": 0,
    "wandb": "disabled",
}
#: ``pretrained="pretrain"``: the encoder written by the pipeline's pretrain stage (see :func:`pretrain_stage`).
FROM_PRETRAIN_STAGE = "pretrain"
PRETRAIN_STATUS = Path("results/pretrain/status.json")
#: Minutes: ``notebook finetune`` trains its run in this process for at most this long before the notebook runs
#: (:func:`finetune_stage`); unset, the notebook trains the whole run itself.
STAGE_MINUTES_ENV = "LEMORE_STAGE_MINUTES"
#: The exit status of ``notebook finetune`` when its run is not finished yet (``os.EX_TEMPFAIL``: run it again).
EXIT_UNFINISHED = 75
PROJECT_MARKERS = ("dvc.yaml", "pyproject.toml")


# ------------------------------------------------------------------------------------------------- choices
def segmentation_models() -> list[str]:
    """Registered models that segment (every model but the ImageNet classifier)."""
    import lemore

    return [m for m in lemore.list_models() if m != "lemore_cls"]


def check_choices(dataset: str | None = None, model: str | None = None, *, gpus: int | None = None,
                  wandb: str | None = None, pretrain_model: str | None = None, nodes: int | None = None,
                  node_rank: int | None = None, rdzv_endpoint: str | None = None) -> None:
    """Raise ``ValueError`` naming the valid choices for any unknown value (``None`` = not checked)."""
    if dataset is not None and dataset not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(DATASET_NAMES)}")
    if model is not None and model not in segmentation_models():
        raise ValueError(f"unknown model {model!r}; choose from {segmentation_models()}")
    if pretrain_model is not None:
        import lemore

        if pretrain_model not in lemore.list_models() or pretrain_model in segmentation_models():
            raise ValueError(f"model {pretrain_model!r} cannot be pretrained on ImageNet; choose from ['lemore_cls']")
    if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1):
        raise ValueError(f"gpus={gpus!r} must be an integer >= 1")
    if wandb is not None and wandb not in ("offline", "online", "disabled"):
        raise ValueError(f"wandb={wandb!r}; choose from ['disabled', 'offline', 'online']")
    if nodes is not None or node_rank is not None or rdzv_endpoint is not None:
        check_nodes(1 if nodes is None else nodes, 0 if node_rank is None else node_rank, rdzv_endpoint or "")


def check_nodes(nodes: int, node_rank: int, rdzv_endpoint: str) -> None:
    """Raise ``ValueError`` naming the bad value: ``nodes >= 1``, ``0 <= node_rank < nodes``, and with ``nodes > 1``
    a rendezvous endpoint ``host:port`` (:func:`parse_endpoint`)."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise ValueError(f"nodes={nodes!r} must be an integer >= 1")
    if isinstance(node_rank, bool) or not isinstance(node_rank, int) or not 0 <= node_rank < nodes:
        raise ValueError(f"node_rank={node_rank!r} must be an integer in [0, nodes-1] = [0, {nodes - 1}] "
                         f"(nodes={nodes})")
    if not isinstance(rdzv_endpoint, str):
        raise ValueError(f"rdzv_endpoint={rdzv_endpoint!r} must be a string 'host:port'")
    if nodes > 1 and not rdzv_endpoint:
        raise ValueError(f"nodes={nodes} needs rdzv_endpoint='host:port': the address of the node with node_rank 0 "
                         "and a free port, the same on every node (e.g. the first host of $SLURM_JOB_NODELIST:29500)")
    if rdzv_endpoint:
        parse_endpoint(rdzv_endpoint)


def parse_endpoint(text: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[ipv6]:port"``) -> ``(host, port)``; ``ValueError`` naming the value otherwise."""
    host, sep, port = str(text).strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ok = bool(sep and host and port.isdigit() and 1 <= int(port) <= 65535 and not any(c.isspace() for c in host)
              and (":" not in host or str(text).strip().startswith("[")))
    if not ok:
        raise ValueError(f"rdzv_endpoint={text!r} must look like 'host:port' with a port in 1-65535, e.g. "
                         "'node001:29500' or '10.0.0.1:29500' ('[fe80::1]:29500' for IPv6)")
    return host, int(port)


def require_ints(**params: Any) -> None:
    """Notebook parameters that must be integers (0 = the recipe's value); papermill passes `-p x ten` as a str."""
    from lemore.config import ConfigTypeError

    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigTypeError(f"parameter {name}={value!r} must be an integer (0: the recipe's value)")


def parse_size(text: str | int | list | tuple) -> tuple[int, int]:
    """``"512x1024"`` (H x W), ``"512"`` or ``512`` (square), ``[512, 1024]`` -> ``(512, 1024)``."""
    if isinstance(text, (list, tuple)) and len(text) == 2:
        return int(text[0]), int(text[1])
    if isinstance(text, int):
        return text, text
    parts = str(text).lower().replace(" ", "").split("x")
    try:
        if len(parts) == 1:
            return int(parts[0]), int(parts[0])
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise ValueError(f"size {text!r}: write it as HxW, e.g. '512x1024', or one number for a square")


def chdir_project_root() -> Path:
    """Make the project root (the folder with ``dvc.yaml``) the working directory when a notebook is opened from
    ``notebooks/``, so that the default paths (``runs``, ``results``, ``data``) mean the same everywhere.
    Elsewhere (the pipeline, a test in a temporary folder) nothing changes. Returns the working directory."""
    here = Path.cwd()
    if here.name == "notebooks" and all((here.parent / m).is_file() for m in PROJECT_MARKERS):
        os.chdir(here.parent)
    return Path.cwd()


# -------------------------------------------------------------------------------------------- fine-tuning
def _pretrained_from_stage(status: Path = PRETRAIN_STATUS) -> str:
    if not status.is_file():
        raise FileNotFoundError(f"pretrained={FROM_PRETRAIN_STAGE!r} needs {status}, written by the pipeline's "
                                "pretrain stage (dvc repro pretrain)")
    info = json.loads(status.read_text())
    if not info.get("enabled") or not info.get("encoder"):
        raise ValueError(f"pretrained={FROM_PRETRAIN_STAGE!r} but pretraining is disabled ({status}); set "
                         "pretrain.enabled: true in params.yaml, or give a weights file")
    return str(info["encoder"])


def finetune_config(dataset: str, model: str, *, iterations: int = 0, batch_size: int = 0, crop: str = "",
                    data_root: str = "", pretrained: str = "", wandb: str = "offline", out_dir: str = "runs",
                    seed: int = 0, smoke: bool = False,
                    overrides: dict[str, Any] | list[str] | None = None) -> RunCfg:
    """The run config of a notebook's parameters: ``recipe(dataset)`` + the non-sentinel parameters.

    Args:
        dataset: a recipe name (``lemore.config.DATASET_NAMES``).
        model: a segmentation model (:func:`segmentation_models`).
        iterations: ``train.iters``; 0 = the recipe's.
        batch_size: global ``train.batch_size``; 0 = the recipe's.
        crop: ``data.crop_size`` as "HxW"; "" = the recipe's.
        data_root: the dataset folder; "" = ``$LEMORE_DATA/<standard sub-folder>``.
        pretrained: encoder weights (``model.pretrained``); ``"pretrain"`` = the pipeline's pretrain stage output.
        wandb: "offline" | "online" | "disabled".
        out_dir: run directories go to ``<out_dir>/<run name>``.
        seed: ``train.seed`` (data order, augmentation, initial weights); the run name ends in ``_seed<n>`` unless 0.
        smoke: apply :data:`SMOKE` last (the dataset becomes "synthetic").
        overrides: more ``key=value`` config overrides, applied after the parameters.
    """
    check_choices(dataset, model, wandb=wandb)
    require_ints(iterations=iterations, batch_size=batch_size, seed=seed)
    ov: dict[str, Any] = {"model.name": model, "wandb": wandb, "out_dir": out_dir, "train.seed": seed}
    if iterations:
        ov["train.iters"] = int(iterations)
    if batch_size:
        ov["train.batch_size"] = int(batch_size)
    if crop:
        ov["data.crop_size"] = parse_size(crop)
    if data_root:
        ov["data.root"] = str(data_root)
    if pretrained:
        ov["model.pretrained"] = _pretrained_from_stage() if pretrained == FROM_PRETRAIN_STAGE else str(pretrained)
    if isinstance(overrides, str):  # papermill's `-p overrides ...` passes a string: one item or a YAML list
        overrides = yaml.safe_load(overrides) if overrides.strip().startswith("[") else [overrides]
    if isinstance(overrides, (list, tuple)):
        for item in overrides:
            if not isinstance(item, str) or "=" not in item:
                raise ConfigValueError(f"override {item!r} must look like key=value, e.g. train.lr=3e-4 "
                                       "(overrides is a list of them)")
            key, value = item.split("=", 1)
            ov[key.strip()] = value
    else:
        ov.update(overrides or {})
    if smoke:
        dataset = "synthetic"
        ov.update(SMOKE)
        ov.pop("model.pretrained", None)
    return load(dataset=dataset, overrides=ov)


def _yaml_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_yaml_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def config_overrides(cfg: RunCfg) -> list[str]:
    """``key=value`` strings that turn ``recipe(cfg.data.dataset)`` into ``cfg`` (for ``--set`` on a command line)."""
    from lemore.config import _flatten  # the flattening ``load`` itself uses

    base = _flatten(recipe(cfg.data.dataset).to_dict())
    mine = _flatten(cfg.to_dict())
    return [f"{k}={_yaml_value(v)}" for k, v in mine.items()
            if k != "data.dataset" and _yaml_value(v) != _yaml_value(base.get(k))]


def torchrun_launcher(gpus: int, *, nodes: int = 1, node_rank: int = 0, rdzv_endpoint: str = "",
                      rdzv_id: str = "lemore") -> list[str]:
    """``python -m torch.distributed.run`` with this interpreter (so that the processes see the notebook's
    environment) and its process-group options.

    One node: ``--standalone --nproc_per_node <gpus>`` (torchrun picks a free local port). Several nodes: torchrun's
    c10d rendezvous, run on every node with the same ``nodes``, ``rdzv_endpoint`` and ``rdzv_id``:
    ``--nnodes <nodes> --nproc_per_node <gpus> --rdzv_backend c10d --rdzv_endpoint <host:port> --rdzv_id <id>``.
    The node with ``node_rank`` 0 hosts the rendezvous store at the endpoint (``--rdzv_conf is_host=1``; the
    others ``is_host=0``) instead of torchrun guessing it from host names, which fails where the endpoint names
    another interface of the machine. torchrun assigns the global ranks; the run does not depend on which node
    gets which (every rank runs the same config, rank 0 writes).
    """
    check_choices(gpus=gpus, nodes=nodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint)
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if nodes == 1:
        return cmd + ["--standalone", f"--nproc_per_node={gpus}"]
    return cmd + [f"--nnodes={nodes}", f"--nproc_per_node={gpus}", "--rdzv_backend=c10d",
                  f"--rdzv_endpoint={rdzv_endpoint}", f"--rdzv_id={rdzv_id}",
                  f"--rdzv_conf=is_host={int(node_rank == 0)}"]


def torchrun_command(cfg: RunCfg, gpus: int, results_dir: str | os.PathLike | None = None,
                     command: str = "train", *, nodes: int = 1, node_rank: int = 0, rdzv_endpoint: str = "",
                     rdzv_id: str = "") -> list[str]:
    """``torchrun ... -m lemore train --dataset D --set k=v ...`` (:func:`torchrun_launcher` for the options).

    ``rdzv_id`` "" = the run name, the same on every node (on SLURM, ``$SLURM_JOB_ID`` is the usual choice).
    ``gpus`` is the number of processes per node: the world size is ``nodes x gpus``, and the run (its name, its
    global batch split ``batch_size = world x accum x micro``) is that of one node with ``nodes x gpus`` GPUs.
    """
    launcher = torchrun_launcher(gpus, nodes=nodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint,
                                 rdzv_id=rdzv_id or cfg.run_name(nodes * gpus))
    cmd = launcher + ["-m", "lemore", command, "--dataset", cfg.data.dataset]
    sets = config_overrides(cfg)
    if sets:
        cmd += ["--set", *sets]
    if results_dir is not None:
        cmd += ["--results-dir", str(results_dir)]
    return cmd


def show_logs() -> None:
    """Print the ``lemore`` log (INFO) to stderr unless something already does (a notebook shows it live)."""
    import logging

    log = logging.getLogger("lemore")
    if logging.getLogger().handlers or any(type(h) is logging.StreamHandler for h in log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    # Shown once: a library that later logs through the root logger (`logging.warning(...)`) gives the root a
    # handler of its own, which would print every line of ours a second time.
    log.propagate = False


def run_streaming(cmd: list[str], env: dict[str, str] | None = None) -> None:
    """Run ``cmd``, printing its output line by line as it comes (a notebook shows it live)."""
    print("$ " + shlex.join(cmd), flush=True)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)


def finetune(cfg: RunCfg, *, gpus: int = 1, results_dir: str | os.PathLike | None = "results/metrics",
             nodes: int = 1, node_rank: int = 0, rdzv_endpoint: str = "", rdzv_id: str = "",
             retrain_finished: bool = False) -> Path:
    """Fine-tune and evaluate ``cfg``; returns the run directory (``config.yaml``, ``model.pt``, ``metrics.json``).

    ``gpus == 1`` on one node: ``lemore.engine.train.train`` in this process (CUDA if present, else CPU).
    Otherwise the ``torchrun`` command of :func:`torchrun_command` with ``gpus`` processes per node (DDP; the
    engine splits the global batch over ``nodes x gpus`` processes). Several nodes: call this on every node with
    its ``node_rank``; the run directory must be on a filesystem all nodes share (rank 0 writes checkpoints, every
    rank reads ``last.pt`` to resume). The final metrics also go to ``<results_dir>/<run name>.json``.
    ``retrain_finished``: a run already trained to its end in the run directory is trained again from scratch (an
    unfinished one resumes); see ``train(restart_finished=...)``.
    """
    check_choices(gpus=gpus, nodes=nodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint)
    show_logs()
    if gpus == 1 and nodes == 1:
        from lemore.engine.train import train

        return train(cfg, results_dir=results_dir, restart_finished=retrain_finished)
    cmd = torchrun_command(cfg, gpus, results_dir, nodes=nodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint,
                           rdzv_id=rdzv_id)
    run_streaming(cmd + (["--restart-finished"] if retrain_finished else []))
    return Path(cfg.out_dir) / cfg.run_name(nodes * gpus)


def read_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``<run_dir>/metrics.json`` (written by the engine at the end of a run)."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the run did not finish")
    return json.loads(path.read_text())


def metrics_frame(metrics: dict[str, Any]):
    """Per-class IoU / accuracy of a results dict as a DataFrame (class, IoU, Acc), for display."""
    import pandas as pd

    m = metrics.get("metrics", metrics)
    iou, acc = m.get("per_class_iou", {}), m.get("per_class_acc", {})
    return pd.DataFrame({"class": list(iou), "IoU": list(iou.values()), "Acc": [acc.get(c) for c in iou]})


# ------------------------------------------------------------------------------------------------ pretrain
def make_tiny_imagenet(root: str | os.PathLike, num_classes: int = 4, per_class: int = 6, size: int = 72,
                       seed: int = 0) -> Path:
    """A tiny ImageNet-layout folder (``train/`` and ``val/`` class folders of PNGs) for smoke runs: each class is
    a colour tint over noise, so the classes are learnable. Written once; reused when complete."""
    import numpy as np
    from PIL import Image

    root = Path(root)
    marker = root / "tiny_imagenet.json"
    if marker.is_file():
        return root
    rng = np.random.default_rng(seed)
    tints = rng.integers(0, 256, (num_classes, 3))
    for split, n in (("train", per_class), ("val", max(2, per_class // 2))):
        for c in range(num_classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(tints[c] * 0.7 + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"img_{i:04d}.png")
    marker.write_text(json.dumps({"num_classes": num_classes, "per_class": per_class, "size": size}) + "\n")
    return root


def pretrain_config(*, model: str = "lemore_cls", data_root: str = "", epochs: int = 0, iterations: int = 0,
                    batch_size: int = 0, wandb: str = "offline", out_dir: str = "runs/pretrain", smoke: bool = False,
                    overrides: dict[str, Any] | None = None):
    """:class:`lemore.engine.pretrain.PretrainCfg` from a notebook's parameters (0 / "" = the DeiT recipe's).

    ``smoke=True``: a tiny generated ImageNet-layout set (:func:`make_tiny_imagenet`, under ``data_root`` if given,
    else ``<out_dir>/tiny_imagenet``), 2 iterations at 64x64 on CPU, W&B off.
    """
    from lemore.engine.pretrain import load_pretrain_cfg

    check_choices(pretrain_model=model, wandb=wandb)
    require_ints(epochs=epochs, iterations=iterations, batch_size=batch_size)
    values: dict[str, Any] = {"model": model, "wandb": wandb, "out_dir": out_dir}
    if data_root:
        values["root"] = data_root
    if epochs:
        values["epochs"] = int(epochs)
    if iterations:
        values["iters"] = int(iterations)
    if batch_size:
        values["batch_size"] = int(batch_size)
    values.update(overrides or {})
    if smoke:
        root = make_tiny_imagenet(data_root or Path(out_dir) / "tiny_imagenet")
        values.update(root=str(root), num_classes=4, img_size=64, iters=2, batch_size=4, device="cpu",
                      wandb="disabled", num_workers=0, log_interval=1)
    return load_pretrain_cfg(overrides=values)


def pretrain(cfg, *, gpus: int = 1, results_dir: str | os.PathLike | None = "results/pretrain", nodes: int = 1,
             node_rank: int = 0, rdzv_endpoint: str = "", rdzv_id: str = "") -> Path:
    """ImageNet pretraining (``lemore.engine.pretrain``): in this process, or through torchrun for ``gpus > 1`` or
    several nodes (:func:`torchrun_launcher`; the same call on every node with its ``node_rank``)."""
    check_choices(gpus=gpus, nodes=nodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint)
    show_logs()
    if gpus == 1 and nodes == 1:
        from lemore.engine.pretrain import pretrain as run

        return run(cfg, results_dir=results_dir)
    sets = [f"{k}={_yaml_value(v)}" for k, v in asdict(cfg).items()]
    cmd = torchrun_launcher(gpus, nodes=nodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint,
                            rdzv_id=rdzv_id or cfg.run_name(nodes * gpus))
    cmd += ["-m", "lemore", "pretrain", "--set", *sets]
    if results_dir is not None:
        cmd += ["--results-dir", str(results_dir)]
    run_streaming(cmd)
    return Path(cfg.out_dir) / cfg.run_name(nodes * gpus)


def write_pretrain_status(run_dir: Path | None, status: str | os.PathLike = PRETRAIN_STATUS) -> dict[str, Any]:
    """The pretrain stage's marker: ``{"enabled": false}``, or the run and its encoder weights."""
    info: dict[str, Any] = {"enabled": run_dir is not None}
    if run_dir is None:
        info["note"] = ("ImageNet pretraining is disabled in params.yaml (pretrain.enabled: false); fine-tuning "
                        "starts from random initialisation unless a dataset sets `pretrained`.")
    else:
        m = read_metrics(run_dir)
        info.update(run_name=m["run_name"], encoder=str(Path(run_dir) / "encoder.safetensors"),
                    top1=m["metrics"].get("top1"))
    write_json_atomic(status, info)
    return info


# ---------------------------------------------------------------------------------------------------- data
def prepare_data(dataset: str, root: str = "", report: str | os.PathLike | None = None) -> dict[str, Any]:
    """The pipeline's data stage for one dataset; returns (and writes to ``report``) what it found.

    synthetic: generate it (skipped when a complete copy is there). A real dataset: ``lemore data check`` of every
    file (counts per split and every bad file); any problem raises ``RuntimeError`` listing the first ones.
    """
    from lemore.config import DataCfg

    check_choices(dataset)
    cfg = recipe(dataset).data
    path = DataCfg(dataset=dataset, root=root).resolved_root()
    info: dict[str, Any] = {"dataset": dataset, "root": str(path)}
    if dataset == "synthetic":
        from lemore.data import synthetic

        synthetic.ensure_synthetic(path)
        meta = json.loads((path / synthetic.META_FILE).read_text())
        info.update(generated=True, **{k: meta[k] for k in ("generator_version", "seed", "num_train", "num_val")})
    else:
        from lemore.data.check import check_dataset

        reports = check_dataset(dataset, path, workers=min(8, os.cpu_count() or 1))
        problems = [p for r in reports for p in r.problems]
        info.update(splits={r.split: {"images": r.images, "labels": r.labels} for r in reports},
                    problems=len(problems))
        if problems:
            shown = "\n".join(problems[:20])
            raise RuntimeError(f"{dataset} at {path}: {len(problems)} problems, e.g.\n{shown}\n"
                               f"(`python -m lemore data check {dataset} --root {path}` lists all)")
    info["num_classes"] = cfg.num_classes
    if report is not None:
        write_json_atomic(report, info)
    return info


# ------------------------------------------------------------------------------------------------- profile
def profile(models: list[str] | None = None, datasets: list[str] | str | None = None, *, paper_tables: bool = True,
            latency_runs: int = 5, warmup: int = 2, threads: int = 0,
            out: str | os.PathLike = "results/profile/tables.json", smoke: bool = False):
    """Parameters, GFLOPs and latency at the settings of :func:`lemore.tables.profile_plan`; writes ``out`` (rows +
    protocol) and the same table as Markdown next to it (``.md``); returns the rows as a DataFrame.

    Args:
        models: the fine-tuned models, measured at each of ``datasets``' crops; None = ``["lemore", "segformer_b0"]``.
        datasets: datasets whose recipe crop / classes the ``models`` are measured at; "all" = every recipe.
        paper_tables: also every registered model at the settings of the paper's tables.
        latency_runs: timed runs per latency measurement (after ``warmup``); 0 skips latency.
        threads: torch threads for latency; 0 = torch's default (``OMP_NUM_THREADS``, else all cores).
        smoke: only LeMoRe and SegFormer-B0 at 64x64, 2 timed runs.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    import lemore
    from lemore.profiling import profile_model, protocol, rows_to_markdown
    from lemore.tables import profile_plan

    models = list(models) if models else ["lemore", "segformer_b0"]
    datasets = list(DATASET_NAMES) if datasets == "all" else list(datasets or [])
    for m in models:
        check_choices(model=m)
    for d in datasets:
        check_choices(dataset=d)
    if smoke:
        plan = [(m, (64, 64), 8, True) for m in ("lemore", "segformer_b0")]
        latency_runs, warmup = min(latency_runs, 2), 1
    else:
        plan = profile_plan(models, datasets, lemore.list_models(), paper_tables=paper_tables)
    # Reuse freed memory instead of page-faulting every forward's output in afresh (lemore.profiling explains).
    from lemore import profiling

    malloc_reuse = bool(getattr(profiling, "reuse_freed_memory", lambda: False)())
    rows = []
    for name, size, k, with_latency in tqdm(plan, desc="profiling", unit="setting"):
        rows.append(profile_model(name, k, size, latency_runs=latency_runs if with_latency else 0, warmup=warmup,
                                  threads=threads or None))
    out = Path(out)
    write_json_atomic(out, {"protocol": {**protocol("cpu"), "latency_runs": latency_runs, "warmup": warmup,
                                         "malloc_reuse": malloc_reuse},
                            "rows": [asdict(r) for r in rows]})
    write_text_atomic(out.with_suffix(".md"), rows_to_markdown(rows) + "\n")
    return pd.DataFrame([asdict(r) for r in rows])


# ------------------------------------------------------------------------------------------------ notebooks
def notebook_parameters(params_file: str | os.PathLike, section: str | None, **fixed: Any) -> dict[str, Any]:
    """Notebook parameters from one (dotted) section of ``params.yaml`` plus ``fixed`` values (which win)."""
    if not section:
        return dict(fixed)
    values: Any = yaml.safe_load(Path(params_file).read_text()) or {}
    for part in section.split("."):
        if not isinstance(values, dict) or part not in values:
            raise KeyError(f"{params_file} has no section {section!r} (missing {part!r})")
        values = values[part]
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise TypeError(f"{params_file}: section {section!r} must be a mapping, got {values!r}")
    return {**values, **fixed}


def params_value(params_file: str | os.PathLike, key: str) -> Any:
    """The value at dotted ``key`` of ``params_file`` (KeyError naming the missing part)."""
    value: Any = yaml.safe_load(Path(params_file).read_text()) or {}
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"{params_file} has no key {key!r} (missing {part!r})")
        value = value[part]
    return value


def run_notebook(name: str, out: str | os.PathLike, parameters: dict[str, Any], *,
                 notebooks_dir: str | os.PathLike = "notebooks", cwd: str | os.PathLike = ".",
                 stream: bool = False) -> Path:
    """Execute ``notebooks/<name>.ipynb`` with papermill into ``out``.

    Progress: with ``stream`` the notebook's own output (logs, the training progress bar) is copied live to this
    process's stdout / stderr, as the pipeline shows it; otherwise papermill's bar counts the executed cells.
    The executed copy is written next to ``out`` and renamed into place, so a failed run leaves no output that
    looks complete (the failing notebook goes to ``<out stem>.failed.ipynb`` instead, for reading).
    """
    import papermill as pm

    src = Path(notebooks_dir) / f"{name}.ipynb"
    if not src.is_file():
        have = sorted(p.stem for p in Path(notebooks_dir).glob("*.ipynb"))
        raise FileNotFoundError(f"no notebook {str(src)!r}; choose from {have}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}.ipynb")
    # A run killed mid-notebook (SIGKILL: no except clause runs) leaves its temp file; DVC removes only
    # declared outputs, so clear it here.
    for stale in out.parent.glob(f".{out.stem}.tmp*.ipynb"):
        stale.unlink(missing_ok=True)
    text_progress = os.environ.get(TEXT_PROGRESS_ENV)
    try:
        streams = dict(stdout_file=sys.stdout, stderr_file=sys.stderr) if stream else {}
        if stream:
            print(f"== {src} -> {out}\n   parameters: {parameters}", flush=True)
            # papermill streams the notebook's outputs, not widget updates: the kernel (it inherits this
            # environment) draws progress bars as text lines on its own stderr, this terminal (lemore.progress)
            os.environ[TEXT_PROGRESS_ENV] = "1"
        pm.execute_notebook(str(src), str(tmp), parameters=parameters, cwd=str(cwd), progress_bar=not stream,
                            kernel_name="python3", **streams)
    except BaseException:
        if tmp.exists():
            os.replace(tmp, out.with_name(f"{out.stem}.failed.ipynb"))
        raise
    finally:
        if text_progress is None:
            os.environ.pop(TEXT_PROGRESS_ENV, None)
    os.replace(tmp, out)
    out.with_name(f"{out.stem}.failed.ipynb").unlink(missing_ok=True)  # an earlier failure is superseded
    return out


def notebook_defaults(name: str, notebooks_dir: str | os.PathLike = "notebooks") -> dict[str, Any]:
    """The values of ``notebooks/<name>.ipynb``'s parameters cell (papermill's ``inspect_notebook``)."""
    import ast

    import papermill as pm

    return {k: ast.literal_eval(v["default"]) for k, v in pm.inspect_notebook(
        str(Path(notebooks_dir) / f"{name}.ipynb")).items()}


def finetune_stage(parameters: dict[str, Any], minutes: float, notebooks_dir: str | os.PathLike = "notebooks") -> bool:
    """Train the run that ``notebooks/finetune.ipynb`` would train with ``parameters`` (its own defaults for the
    others) in this process, for at most ``minutes`` (``train(stop_after_s=...)``: checkpointed where it stops,
    resumed by the next call); True once the run is finished. One process only (``gpus`` and ``nodes`` 1)."""
    if not minutes > 0:
        raise ConfigValueError(f"${STAGE_MINUTES_ENV}={minutes}: give a positive number of minutes")
    p = {**notebook_defaults("finetune", notebooks_dir), **parameters}
    if int(p["gpus"]) != 1 or int(p["nodes"]) != 1:
        raise ConfigValueError(f"${STAGE_MINUTES_ENV} cuts a run in one process; this one has gpus={p['gpus']}, "
                               f"nodes={p['nodes']}: unset it (the notebook trains the whole run)")
    cfg = finetune_config(p["dataset"], p["model"], iterations=p["iterations"], batch_size=p["batch_size"],
                          crop=p["crop"], data_root=p["data_root"], pretrained=p["pretrained"], wandb=p["wandb"],
                          out_dir=p["out_dir"], seed=p["seed"], smoke=p["smoke"], overrides=p["overrides"])
    from lemore.engine.train import train

    show_logs()
    run_dir = train(cfg, results_dir=p["results_dir"], restart_finished=bool(p["retrain_finished"]),
                    stop_after_s=minutes * 60)
    return (Path(run_dir) / "metrics.json").is_file()


def _cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lemore.launch", description="the DVC pipeline's entry points")
    sub = p.add_subparsers(dest="cmd", required=True)
    nb = sub.add_parser("notebook", help="run notebooks/NAME.ipynb with papermill, parameters from params.yaml")
    nb.add_argument("name")
    nb.add_argument("out", help="where the executed notebook goes")
    nb.add_argument("--params", default="params.yaml")
    nb.add_argument("--section", default=None, help="dotted section of params.yaml holding the parameters")
    nb.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a fixed parameter (VALUE parsed as YAML), wins over the section")
    nb.add_argument("-k", "--key", action="append", default=[], metavar="NAME=KEY",
                    help="parameter NAME from the dotted params.yaml KEY (e.g. models=models)")
    prep = sub.add_parser("prepare", help="the data stage of one dataset")
    prep.add_argument("dataset")
    prep.add_argument("--root", default="", help="the dataset folder")
    prep.add_argument("--params", default="params.yaml")
    prep.add_argument("--params-key", default=None, help="read the folder from this dotted params.yaml key instead")
    prep.add_argument("--report", required=True)
    pre = sub.add_parser("pretrain-stage", help="run pretrain.ipynb if pretrain.enabled, else write the marker")
    pre.add_argument("--params", default="params.yaml")
    pre.add_argument("--out", default="results/notebooks/pretrain.ipynb")
    pre.add_argument("--status", default=str(PRETRAIN_STATUS))
    pre.add_argument("--runs", default="runs/pretrain")
    args = p.parse_args(argv)

    if args.cmd == "notebook":
        fixed = {k: (yaml.safe_load(v) if v.strip() else v) for k, v in args.parameter}
        for item in args.key:
            name, key = item.split("=", 1)
            fixed[name] = params_value(args.params, key)
        parameters = notebook_parameters(args.params, args.section, **fixed)
        minutes = os.environ.get(STAGE_MINUTES_ENV, "").strip()
        if args.name == "finetune" and minutes:
            try:
                minutes_value = float(minutes)
            except ValueError:
                raise ConfigValueError(f"${STAGE_MINUTES_ENV}={minutes!r}: give a number of minutes") from None
            if not finetune_stage(parameters, minutes_value):
                print(f"stopped after ${STAGE_MINUTES_ENV}={minutes} minutes: not finished; run the same command "
                      f"again to resume (exit {EXIT_UNFINISHED})", flush=True)
                return EXIT_UNFINISHED
            parameters["retrain_finished"] = False  # finished just now: the notebook reports it, never retrains it
        run_notebook(args.name, args.out, parameters, stream=True)
    elif args.cmd == "prepare":
        root = params_value(args.params, args.params_key) if args.params_key else args.root
        print(json.dumps(prepare_data(args.dataset, root or "", args.report), indent=2))
    elif args.cmd == "pretrain-stage":
        section = notebook_parameters(args.params, "pretrain")
        enabled = bool(section.pop("enabled", False))
        Path(args.runs).mkdir(parents=True, exist_ok=True)
        if not enabled:
            write_text_atomic(Path(args.runs) / "README.md", "ImageNet pretraining is disabled in params.yaml "
                              "(pretrain.enabled: false); this folder holds its runs when it is enabled.\n")
            write_pretrain_status(None, args.status)
            print("pretraining disabled (pretrain.enabled: false): wrote", args.status)
            return 0
        section.update(out_dir=args.runs, results_dir=str(Path(args.status).parent), status_file=args.status)
        run_notebook("pretrain", args.out, section, stream=True)
        # the notebook's last cell writes the status (with the encoder path); check that it did
        if not json.loads(Path(args.status).read_text()).get("enabled"):
            raise RuntimeError(f"pretrain.ipynb finished but {args.status} does not name its encoder")
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli())


__all__ = ["EXIT_UNFINISHED", "SMOKE", "STAGE_MINUTES_ENV", "check_choices", "check_nodes", "config_overrides",
           "finetune", "finetune_config", "finetune_stage", "make_tiny_imagenet", "metrics_frame", "notebook_defaults",
           "notebook_parameters", "parse_endpoint", "parse_size", "prepare_data", "pretrain", "pretrain_config",
           "profile", "read_metrics", "run_notebook", "segmentation_models", "show_logs", "torchrun_command",
           "torchrun_launcher"]
