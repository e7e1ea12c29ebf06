"""Run configuration: dataclasses, the paper's recipe per dataset, and type-checked dotted overrides.

There is no config inheritance. A run is ``recipe(dataset)`` (the paper's values, from the supplementary
material and SegFormer / MMSegmentation for what the paper leaves to them) with explicit overrides applied::

    cfg = load(dataset="cityscapes", overrides={"train.iters": 1000, "data.root": "/data/cityscapes"})
    cfg = load("run.yaml", overrides=["train.lr=3e-4"])  # strings are parsed by type

Every value can be overridden; the resolved config is saved next to the run (``config.yaml``), inside every
checkpoint and in ``wandb.config``, so a run always says exactly what it did.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml


class ConfigError(Exception):
    """A bad run configuration; the message names the key, the value and the valid choices. Raised as one of
    the subclasses below, which are also the built-in errors a caller may expect (KeyError, TypeError,
    ValueError), so ``except ValueError`` keeps working and ``except ConfigError`` catches them all."""


class ConfigKeyError(ConfigError, KeyError):
    def __str__(self) -> str:  # KeyError would show the message in quotes, as a repr
        return str(self.args[0]) if self.args else ""


class ConfigTypeError(ConfigError, TypeError):
    pass


class ConfigValueError(ConfigError, ValueError):
    pass


#: Environment variable naming the folder that holds every dataset (one sub-folder per dataset, see
#: ``DEFAULT_SUBDIRS``). ``data.root`` overrides it for one run.
DATA_ROOT_ENV = "LEMORE_DATA"
DEFAULT_DATA_ROOT = "data"

#: Sub-folder of the data root where each dataset lives in its standard layout.
DEFAULT_SUBDIRS = {
    "ade20k": "ADEChallengeData2016",
    "cityscapes": "cityscapes",
    "pascal_context": "VOCdevkit/VOC2010",
    "pascal_context_59": "VOCdevkit/VOC2010",
    "coco_stuff": "coco_stuff10k",
    "imagenet": "imagenet",
    "synthetic": "synthetic",
}


@dataclass
class DataCfg:
    """What the model sees. Sizes are (H, W); ``scale`` is MMSegmentation's img_scale (long, short)."""

    dataset: str = "synthetic"
    root: str = ""  # "" -> $LEMORE_DATA/<DEFAULT_SUBDIRS[dataset]>
    num_classes: int = 8
    crop_size: tuple[int, int] = (128, 128)
    scale: tuple[int, int] = (256, 128)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    eval_mode: str = "whole"  # "whole": resize keeping ratio to `scale`; "slide": windows of crop_size
    eval_stride: tuple[int, int] = (85, 85)
    num_workers: int = 2

    def resolved_root(self) -> Path:
        """The dataset folder: ``root`` if set, else ``$LEMORE_DATA/<standard sub-folder>``."""
        if self.root:
            return Path(self.root).expanduser()
        base = Path(os.environ.get(DATA_ROOT_ENV, DEFAULT_DATA_ROOT)).expanduser()
        return base / DEFAULT_SUBDIRS.get(self.dataset, self.dataset)


@dataclass
class ModelCfg:
    name: str = "lemore"
    pretrained: str = ""  # encoder weights written by `lemore pretrain` (safetensors / weights-only .pt)


@dataclass
class TrainCfg:
    """Iteration-based schedule: AdamW, linear warm-up, then poly decay (power 1.0), as in SegFormer."""

    iters: int = 160_000
    batch_size: int = 16  # global batch: per-GPU batch = batch_size / (world_size * accum_steps)
    accum_steps: int = 1
    lr: float = 1.2e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    poly_power: float = 1.0
    min_lr: float = 0.0
    eval_interval: int = 16_000
    ckpt_interval: int = 4_000
    log_interval: int = 50
    seed: int = 0
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA: every model; CPU: the models measured faster (train.cpu_channels_last)
    device: str = "auto"  # "auto" | "cpu" | "cuda"


@dataclass
class RunCfg:
    data: DataCfg = field(default_factory=DataCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    wandb: str = "offline"  # "offline" | "online" | "disabled"
    out_dir: str = "runs"
    name: str = ""  # "" -> run_name(cfg)

    def run_name(self, world_size: int = 1) -> str:
        """MMSegmentation's naming: ``{model}_{bs}x{gpus}-{iters}_{dataset}-{H}x{W}``."""
        if self.name:
            return self.name
        per_gpu = max(1, self.train.batch_size // max(1, world_size))
        iters = f"{self.train.iters // 1000}k" if self.train.iters % 1000 == 0 else str(self.train.iters)
        h, w = self.data.crop_size
        return f"{self.model.name}_{per_gpu}x{world_size}-{iters}_{self.data.dataset}-{w}x{h}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _recipe_table() -> dict[str, RunCfg]:
    ade = RunCfg(
        data=DataCfg(dataset="ade20k", num_classes=150, crop_size=(512, 512), scale=(2048, 512),
                     eval_mode="whole", eval_stride=(341, 341), num_workers=4),
        train=TrainCfg(iters=160_000, lr=1.2e-4),
    )
    return {
        "ade20k": ade,
        # Cityscapes: 1024x512 crops (W x H), lr 3e-4 (supplementary), sliding-window evaluation.
        "cityscapes": replace(
            ade,
            data=DataCfg(dataset="cityscapes", num_classes=19, crop_size=(512, 1024), scale=(2048, 1024),
                         eval_mode="slide", eval_stride=(384, 768), num_workers=4),
            train=TrainCfg(iters=160_000, lr=3e-4),
        ),
        # PASCAL Context: 60 classes (background counted); mIoU^59 is reported from the same matrix.
        "pascal_context": replace(
            ade,
            data=DataCfg(dataset="pascal_context", num_classes=60, crop_size=(480, 480), scale=(520, 520),
                         eval_mode="whole", eval_stride=(320, 320), num_workers=4),
            train=TrainCfg(iters=80_000, lr=1.2e-4),
        ),
        "pascal_context_59": replace(
            ade,
            data=DataCfg(dataset="pascal_context_59", num_classes=59, crop_size=(480, 480), scale=(520, 520),
                         eval_mode="whole", eval_stride=(320, 320), num_workers=4),
            train=TrainCfg(iters=80_000, lr=1.2e-4),
        ),
        "coco_stuff": replace(
            ade,
            data=DataCfg(dataset="coco_stuff", num_classes=171, crop_size=(512, 512), scale=(2048, 512),
                         eval_mode="whole", eval_stride=(341, 341), num_workers=4),
            train=TrainCfg(iters=80_000, lr=1.2e-4),
        ),
        # Our own recipe for the embedded synthetic dataset: small crops and a short, hotter schedule so
        # that a CPU learns it in minutes. Not a paper setting.
        "synthetic": RunCfg(
            data=DataCfg(),
            train=TrainCfg(iters=300, batch_size=8, lr=2e-3, warmup_iters=30, eval_interval=100,
                           ckpt_interval=50, log_interval=10, amp=False),
        ),
    }


RECIPES = _recipe_table()
DATASET_NAMES = tuple(RECIPES)


def recipe(dataset: str) -> RunCfg:
    """The paper's recipe for ``dataset`` (a fresh copy: mutate freely)."""
    if dataset not in RECIPES:
        raise ConfigValueError(f"unknown dataset {dataset!r}; choose from {sorted(RECIPES)}")
    base = RECIPES[dataset]
    return RunCfg(data=replace(base.data), model=replace(base.model), train=replace(base.train),
                  wandb=base.wandb, out_dir=base.out_dir, name=base.name)


# ----------------------------------------------------------------------------------------------- overrides
def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert ``value`` (a YAML scalar/list or a command-line string) to ``typ``, or raise naming ``key``."""
    if isinstance(typ, str):  # `from __future__ import annotations` leaves strings; resolve the simple ones
        typ = eval(typ, {"tuple": tuple, "int": int, "float": float, "str": str, "bool": bool})  # noqa: S307
    origin = typing.get_origin(typ)
    if isinstance(value, str) and (typ is not str) and origin is not types.UnionType:
        try:
            value = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError:
            raise ConfigTypeError(f"bad value {value!r} for {key}: not a YAML scalar or list "
                                  f"(type {getattr(typ, '__name__', typ)})") from None
        if isinstance(value, str) and typ in (int, float):
            try:  # PyYAML (YAML 1.1) reads "3e-4" as a string
                value = float(value)
            except ValueError:
                pass
    try:
        if origin is tuple:
            args = typing.get_args(typ)
            if isinstance(value, (int, float)):
                value = [value] * len(args)
            if not isinstance(value, (list, tuple)) or len(value) != len(args):
                raise TypeError(f"expected {len(args)} values")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        if typ is bool:
            if isinstance(value, bool):
                return value
            raise TypeError("expected true/false")
        if typ is int:
            if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float)
                                                                           and value.is_integer())):
                raise TypeError("expected an integer")
            return int(value)
        if typ is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError("expected a number")
            return float(value)
        if typ is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise TypeError("expected a string")
            return str(value)
    except (TypeError, ValueError) as e:
        raise ConfigTypeError(f"bad value {value!r} for {key}: {e} (type {getattr(typ, '__name__', typ)})") from None
    return value


def set_key(cfg: Any, key: str, value: Any) -> None:
    """Set a dotted ``key`` of a config dataclass to ``value``, type-checked against the field (see load)."""
    parts = key.split(".")
    obj: Any = cfg
    for i, part in enumerate(parts):
        names = {f.name: f for f in fields(obj)}
        if part not in names:
            where = ".".join(parts[:i]) or "the top level"
            valid = sorted(f"{'.'.join(parts[:i] + [n])}" for n in names)
            raise ConfigKeyError(f"unknown config key {key!r} (no {part!r} in {where}); valid keys: {valid}")
        f = names[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(getattr(obj, part)):
                raise ConfigKeyError(f"{key!r} is a section; set one of its keys, e.g. {key}.{fields(getattr(obj, part))[0].name}")
            setattr(obj, part, _coerce(value, f.type, key))
        else:
            obj = getattr(obj, part)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load(
    path: str | os.PathLike | None = None,
    *,
    dataset: str | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> RunCfg:
    """Resolve a run config: the recipe of the dataset, then a YAML file, then explicit overrides.

    Args:
        path: optional YAML file with a nested mapping of the same shape as :class:`RunCfg`.
        dataset: picks the recipe; defaults to ``data.dataset`` from the file/overrides, else "synthetic".
        overrides: ``{"train.lr": 3e-4}`` or ``["train.lr=3e-4"]``; every key and type is checked.

    Raises:
        ConfigValueError (a ValueError): unknown dataset (the message lists the valid ones), invalid YAML.
        ConfigKeyError (a KeyError): unknown key (the message lists the valid keys at that level).
        ConfigTypeError (a TypeError): a value of the wrong type (the message names the key, the value and the
            type).
    """
    file_values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {str(p)!r} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:  # its own message says '<unicode string>', not which file
            raise ConfigValueError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigTypeError(f"config file {str(p)!r} must hold a mapping, got {type(loaded).__name__}")
        file_values = _flatten(loaded)
    if isinstance(overrides, list):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigValueError(f"override {item!r} must look like key=value, e.g. train.lr=3e-4")
            k, v = item.split("=", 1)
            pairs[k.strip()] = v
        overrides = pairs
    overrides = dict(overrides or {})
    name = dataset or overrides.get("data.dataset") or file_values.get("data.dataset") or "synthetic"
    cfg = recipe(str(name))
    for key, value in {**file_values, **overrides}.items():
        if key == "data.dataset" and value != name:
            raise ConfigValueError(f"data.dataset={value!r} conflicts with dataset={name!r}")
        set_key(cfg, key, value)
    validate(cfg)
    return cfg


def validate(cfg: RunCfg) -> None:
    """Invariants that would otherwise fail far into a run."""
    t, d = cfg.train, cfg.data
    if d.eval_mode not in ("whole", "slide"):
        raise ConfigValueError(f"data.eval_mode={d.eval_mode!r}; choose from ['slide', 'whole']")
    if cfg.wandb not in ("offline", "online", "disabled"):
        raise ConfigValueError(f"wandb={cfg.wandb!r}; choose from ['disabled', 'offline', 'online']")
    if t.device not in ("auto", "cpu", "cuda"):
        raise ConfigValueError(f"train.device={t.device!r}; choose from ['auto', 'cpu', 'cuda']")
    for key, v in (("train.iters", t.iters), ("train.batch_size", t.batch_size), ("train.accum_steps", t.accum_steps),
                   ("data.num_classes", d.num_classes)):
        if v < 1:
            raise ConfigValueError(f"{key}={v} must be >= 1")
    if not (math.isfinite(t.lr) and t.lr >= 0):
        raise ConfigValueError(f"train.lr={t.lr} must be a finite number >= 0")
    if min(d.crop_size) < 64:
        raise ConfigValueError(f"data.crop_size={d.crop_size}: LeMoRe pools to 1/64, use at least 64x64")


def to_yaml(cfg: RunCfg) -> str:
    return yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False)


def from_dict(d: dict[str, Any]) -> RunCfg:
    """Inverse of ``RunCfg.to_dict`` (used when resuming from a checkpoint)."""
    dataset = d.get("data", {}).get("dataset", "synthetic")
    return load(dataset=dataset, overrides=_flatten(d))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
