"""Run configuration: dataclasses, the paper's recipe per dataset, and type-checked dotted overrides.

There is no config inheritance. A run is ``recipe(dataset, model)`` (the paper's values, from the supplementary
material and SegFormer / MMSegmentation for what the paper leaves to them; for a peer model, the values its own
authors trained it with, :data:`FAMILY_RECIPES`; on CamVid, where no peer published one, each model's learning rate
from this project's search, :data:`SEARCHED_LRS`) with explicit overrides applied::

    cfg = load(dataset="cityscapes", overrides={"train.iters": 1000, "data.root": "/data/cityscapes"})
    cfg = load("run.yaml", overrides=["train.lr=3e-4"])  # strings are parsed by type
    cfg = load(dataset="ade20k", overrides={"model.name": "seaformer_t"})  # SeaFormer-T's own ADE20K recipe

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
    "camvid": "CamVid",
    "imagenet": "imagenet",
    "synthetic": "synthetic",
}


@dataclass
class DataCfg:
    """What the model sees. Sizes are (H, W); ``scale`` is MMSegmentation's img_scale (long, short)."""

    dataset: str = "synthetic"
    root: str = ""  # "" -> $LEMORE_DATA/<DEFAULT_SUBDIRS[dataset]>
    num_classes: int = 5
    crop_size: tuple[int, int] = (128, 128)
    scale: tuple[int, int] = (256, 128)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    photometric: bool = True  # mmseg's PhotoMetricDistortion in training (False: none, as the plain loop of issue 29)
    eval_mode: str = "whole"  # "whole": resize keeping ratio to `scale`; "slide": windows of crop_size
    eval_stride: tuple[int, int] = (85, 85)
    eval_size_divisor: int = 0  # > 0: "whole" evaluation rounds the resized image up to a multiple (peers: 32)
    num_workers: int = 2
    cache_gb: float = 2.0  # training / evaluation splits whose decoded images fit are decoded once, held in memory

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


#: Optimizers a recipe may name (``train.optimizer``).
OPTIMIZERS = ("adamw", "sgd")


@dataclass
class TrainCfg:
    """Iteration-based schedule: AdamW, linear warm-up, then poly decay (power 1.0), as in SegFormer.

    ``head_lr_mult`` and ``norm_bias_decay`` reproduce mmcv's ``paramwise_cfg`` as the peers' official configs use it
    (see :func:`lemore.engine.train.param_groups`); the defaults are LeMoRe's recipe (no multiplier, no decay on
    biases and normalisation parameters).
    """

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
    optimizer: str = "adamw"  # "adamw" | "sgd" (with momentum; mmseg's LR-ASPP recipe)
    momentum: float = 0.9  # SGD only
    head_lr_mult: float = 1.0  # lr multiplier of the parameters under the model's ``head_prefixes``
    norm_bias_decay: bool = False  # True: weight decay on every parameter but the model's no_weight_decay() (mmcv)


@dataclass
class RunCfg:
    data: DataCfg = field(default_factory=DataCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    wandb: str = "offline"  # "offline" | "online" | "disabled"
    out_dir: str = "runs"
    name: str = ""  # "" -> run_name(cfg)

    def run_name(self, world_size: int = 1) -> str:
        """MMSegmentation's naming: ``{model}_{bs}x{gpus}-{iters}_{dataset}-{W}x{H}``, then ``_seed{n}`` for any
        seed but 0 (runs of several seeds live side by side; seed 0 keeps mmseg's name)."""
        if self.name:
            return self.name
        per_gpu = max(1, self.train.batch_size // max(1, world_size))
        iters = f"{self.train.iters // 1000}k" if self.train.iters % 1000 == 0 else str(self.train.iters)
        h, w = self.data.crop_size
        seed = f"_seed{self.train.seed}" if self.train.seed else ""
        return f"{self.model.name}_{per_gpu}x{world_size}-{iters}_{self.data.dataset}-{w}x{h}{seed}"

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
        # Our own recipe for the embedded synthetic dataset, not a paper setting: small crops and a short, hotter
        # schedule that `make demo` trains in minutes on 2 CPU cores, the same for every model (docs/synthetic.md:
        # what twice the iterations gain, benchmarks/synthetic_cpu.py; lr 2e-3 learned as fast
        # as 1e-3 and 6e-4, and faster than 6e-3, for LeMoRe and SegFormer-B0). No random resize (ratio 1.0): the
        # scenes are drawn at the evaluation scale, with objects of many sizes, and LeMoRe learned faster without
        # it (1200 iterations: 86.93 mIoU with the paper's 0.5-2.0, 89.34 with 0.75-1.5, 90.18 with 1.0;
        # results/benchmarks/synthetic_ratio_range.json).
        # CamVid at 360x480 (SegNet's 11 classes), trained from scratch on the 367 training images: the project's
        # real-image study on CPU (docs/camvid.md), one recipe for every model but the learning rate, chosen on val by
        # the second search (studies/camvid/search2.yaml, results/camvid/search2/summary.md): 240x320 crops of the
        # 4:3 scene with random resize 0.5-1.5 of 480x360 (LeMoRe at lr 2e-3: 56.22 val mIoU in 3000 iterations,
        # against 53.92 with the first study's 192x192 and 0.75-1.5 in the same CPU time), 3000 iterations at batch
        # 8. The learning rate here, 4e-3, is LeMoRe's best of the declared grid 1e-3 / 2e-3 / 4e-3 (51.86 / 56.22 /
        # 60.76), which every LeMoRe variant (Table 2's rows) trains with; the other models take their own best of
        # the same grid (:data:`SEARCHED_LRS`). Evaluation on the whole 360x480 image.
        "camvid": RunCfg(
            data=DataCfg(dataset="camvid", num_classes=11, crop_size=(240, 320), scale=(480, 360),
                         ratio_range=(0.5, 1.5), eval_mode="whole", num_workers=2),
            train=TrainCfg(iters=3000, batch_size=8, lr=4e-3, warmup_iters=100, eval_interval=375,
                           ckpt_interval=375, log_interval=50),
        ),
        "synthetic": RunCfg(
            data=DataCfg(ratio_range=(1.0, 1.0)),
            train=TrainCfg(iters=1200, batch_size=8, lr=2e-3, warmup_iters=60, eval_interval=400,
                           ckpt_interval=200, log_interval=50, amp=False),
        ),
    }


RECIPES = _recipe_table()
DATASET_NAMES = tuple(RECIPES)


# ------------------------------------------------------------------------------------ the peers' own recipes
@dataclass(frozen=True)
class FamilyRecipe:
    """A peer's published training recipe for one dataset: the values it sets on top of ``RECIPES[dataset]``.

    Attributes:
        values: dotted key -> value (checked like any override).
        source: the official config file(s) and the commit it was read at.
        note: what is not in the source and how it was filled (e.g. a recipe carried over from another dataset).
    """

    values: dict[str, Any]
    source: str
    note: str = ""


TOPFORMER_REPO = "hustvl/TopFormer@cc0f436"
SEAFORMER_REPO = "fudan-zvg/SeaFormer@9718d05"
SEGFORMER_REPO = "NVlabs/SegFormer@65fa8cf"
MMSEG_LRASPP = (f"mmseg 0.19 configs/mobilenet_v3/lraspp_m-v3-d8_512x1024_320k_cityscapes.py and "
                f"_base_/schedules/schedule_160k.py, as vendored in {TOPFORMER_REPO}")

# AdamW with mmcv's paramwise_cfg {'head': lr_mult=10, 'norm' / position embeddings: decay_mult=0}, linear warm-up
# over 1500 iterations from 1e-6 x lr, poly decay with power 1.0 to 0: every TopFormer / SeaFormer / SegFormer config.
_ADAMW_HEAD10 = {"train.optimizer": "adamw", "train.betas": (0.9, 0.999), "train.weight_decay": 0.01,
                 "train.head_lr_mult": 10.0, "train.norm_bias_decay": True, "train.warmup_iters": 1500,
                 "train.warmup_ratio": 1e-6, "train.poly_power": 1.0, "train.min_lr": 0.0}
# mmseg's default SGD schedule (no paramwise_cfg, no warm-up), which its LR-ASPP configs inherit.
_SGD_MMSEG = {"train.optimizer": "sgd", "train.lr": 0.01, "train.momentum": 0.9, "train.weight_decay": 5e-4,
              "train.head_lr_mult": 1.0, "train.norm_bias_decay": True, "train.warmup_iters": 0,
              "train.poly_power": 0.9, "train.min_lr": 1e-4}
# Cityscapes at half resolution (img_scale (1024, 512), 512x1024 crops, whole-image evaluation at 1024x512), as the
# TopFormer-T, SeaFormer-S and SegFormer-B0 1024x512 configs train and test.
_CITY_HALF = {"data.crop_size": (512, 1024), "data.scale": (1024, 512), "data.eval_mode": "whole"}


def _lraspp_recipes() -> dict[str, FamilyRecipe]:
    city = FamilyRecipe({**_SGD_MMSEG, "train.iters": 320_000, "train.batch_size": 16, "data.crop_size": (512, 1024),
                         "data.scale": (2048, 1024), "data.eval_mode": "whole"}, MMSEG_LRASPP,
                        "samples_per_gpu=4; the GPU count is not in the config (mmseg's default of 4 gives batch 16)")
    carried = f"no LR-ASPP config for this dataset: mmseg's Cityscapes optimizer and schedule ({MMSEG_LRASPP}) " \
              "carried over, with this dataset's iterations, batch and crop"
    return {"cityscapes": city, **{d: FamilyRecipe(dict(_SGD_MMSEG), MMSEG_LRASPP, carried)
                                   for d in ("ade20k", "pascal_context", "pascal_context_59", "coco_stuff")}}


def _family_recipes() -> dict[str, dict[str, FamilyRecipe]]:
    tf = f"{TOPFORMER_REPO} local_configs/topformer/topformer_tiny_"
    sf = f"{SEAFORMER_REPO} seaformer-seg/local_configs/seaformer/seaformer_"
    sg = f"{SEGFORMER_REPO} local_configs/segformer/B0/segformer.b0."
    ade_eval = {"data.eval_size_divisor": 32}  # ResizeToMultiple(32) / AlignedResize(size_divisor=32) at test time
    tf_context = FamilyRecipe({**_ADAMW_HEAD10, "train.lr": 1.2e-4, "train.iters": 80_000, "train.batch_size": 16},
                              tf + "480x480_80k_2x8_pascalcontext.py (and _59.py)")
    sf_80k = {**_ADAMW_HEAD10, "train.lr": 2e-4, "train.iters": 80_000, "train.batch_size": 32}
    sf_note = "samples_per_gpu=4 on 8 GPUs (the README's default) = 32, although the file name says 2x8"
    sg_carried = (f"no SegFormer-B0 config for this dataset: the ADE20K optimizer ({sg}512x512.ade.160k.py) carried "
                  "over, with this dataset's iterations, batch and crop")
    return {
        "topformer_t": {
            "ade20k": FamilyRecipe({**_ADAMW_HEAD10, "train.lr": 3e-4, "train.iters": 160_000, "train.batch_size": 16,
                                    **ade_eval}, tf + "512x512_160k_2x8_ade20k.py"),
            "cityscapes": FamilyRecipe({**_ADAMW_HEAD10, "train.lr": 3e-4, "train.iters": 160_000,
                                        "train.batch_size": 8, **_CITY_HALF}, tf + "1024x512_80k_2x8_city.py",
                                       "the file name says 80k and 2x8; it inherits max_iters=160000 "
                                       "(schedule_160k.py) and sets samples_per_gpu=1 (x 8 GPUs = 8)"),
            "pascal_context": tf_context,
            "pascal_context_59": tf_context,
            "coco_stuff": FamilyRecipe({**_ADAMW_HEAD10, "train.lr": 1.2e-4, "train.iters": 80_000,
                                        "train.batch_size": 16}, tf + "512x512_80k_2x8_cocostuff10k.py"),
        },
        "seaformer_t": {
            "ade20k": FamilyRecipe({**_ADAMW_HEAD10, "train.lr": 3e-4, "train.iters": 160_000, "train.batch_size": 16,
                                    **ade_eval}, sf + "tiny_512x512_160k_2x8_ade20k.py"),
            "cityscapes": FamilyRecipe({**_ADAMW_HEAD10, "train.lr": 3e-4, "train.iters": 160_000,
                                        "train.batch_size": 8, **_CITY_HALF}, sf + "small_1024x512_160k_1x8city.py",
                                       "SeaFormer-T has no Cityscapes config: SeaFormer-S's carried over"),
            "pascal_context": FamilyRecipe(dict(sf_80k), sf + "tiny_480x480_80k_2x8_pascalcontext.py", sf_note),
            "pascal_context_59": FamilyRecipe(dict(sf_80k), sf + "tiny_480x480_80k_2x8_pascalcontext_59.py", sf_note),
            "coco_stuff": FamilyRecipe(dict(sf_80k), sf + "tiny_512x512_80k_2x8_cocostuff10k.py", sf_note),
        },
        "segformer_b0": {
            "ade20k": FamilyRecipe({**_ADAMW_HEAD10, "train.lr": 6e-5, "train.iters": 160_000, "train.batch_size": 16,
                                    **ade_eval}, sg + "512x512.ade.160k.py",
                                   "batch 16 = samples_per_gpu=2 x 8 GPUs (SegFormer paper, Sec. 4.1)"),
            "cityscapes": FamilyRecipe({**_ADAMW_HEAD10, "train.lr": 6e-5, "train.iters": 160_000,
                                        "train.batch_size": 8, **_CITY_HALF}, sg + "512x1024.city.160k.py",
                                       "batch 8 = samples_per_gpu=1 x 8 GPUs (SegFormer paper, Sec. 4.1)"),
            **{d: FamilyRecipe({**_ADAMW_HEAD10, "train.lr": 6e-5}, sg + "512x512.ade.160k.py", sg_carried)
               for d in ("pascal_context", "pascal_context_59", "coco_stuff")},
        },
        "lraspp_mobilenet_v3_large": _lraspp_recipes(),
        "lraspp_mobilenet_v3_large_reduced": _lraspp_recipes(),
    }


#: model -> dataset -> the family's own recipe. LeMoRe (every ``lemore*`` model) uses the paper's recipe
#: (``RECIPES``), and so does every model on the synthetic dataset (the project's own recipe, not a paper's).
FAMILY_RECIPES: dict[str, dict[str, FamilyRecipe]] = _family_recipes()


#: dataset -> model -> the learning rate a search of this project chose for it on val (not a published recipe: the
#: project's own, for a dataset no peer published a recipe for). CamVid: each study model's best val mIoU at seed 0
#: of the grid 1e-3 / 2e-3 / 4e-3 declared in studies/camvid/search2.yaml before its runs, everything else the camvid
#: recipe's (results/camvid/search2/summary.md; tests/test_search.py checks these against the results). A model not
#: listed takes the recipe's learning rate (LeMoRe's, 4e-3, for every ``lemore*`` model); LR-ASPP's reduced variant,
#: not in the study and not searched, takes the large model's.
SEARCHED_LRS: dict[str, dict[str, float]] = {
    "camvid": {
        "segformer_b0": 1e-3,  # 46.23 / 38.19 / 20.03 at 1e-3 / 2e-3 / 4e-3
        "lraspp_mobilenet_v3_large": 2e-3,  # 58.98 / 60.22 / 59.40
        "lraspp_mobilenet_v3_large_reduced": 2e-3,  # not searched: the large model's
        "topformer_t": 4e-3,  # 43.38 / 50.14 / 55.31
        "seaformer_t": 4e-3,  # 50.60 / 53.35 / 58.04
    },
}


def family_recipe(dataset: str, model: str | None) -> FamilyRecipe | None:
    """The published recipe of ``model``'s family for ``dataset``, or None (the paper's recipe applies)."""
    return FAMILY_RECIPES.get(model or "", {}).get(dataset)


def recipe(dataset: str, model: str | None = None) -> RunCfg:
    """The recipe for ``dataset`` (a fresh copy: mutate freely): the paper's, or, when ``model`` is a peer with a
    published recipe for it (:data:`FAMILY_RECIPES`), the paper's with the family's values, and the learning rate a
    search chose for ``model`` where there is one (:data:`SEARCHED_LRS`); ``model.name`` is set."""
    if dataset not in RECIPES:
        raise ConfigValueError(f"unknown dataset {dataset!r}; choose from {sorted(RECIPES)}")
    base = RECIPES[dataset]
    cfg = RunCfg(data=replace(base.data), model=replace(base.model), train=replace(base.train),
                 wandb=base.wandb, out_dir=base.out_dir, name=base.name)
    if model:
        cfg.model.name = str(model)
    fam = family_recipe(dataset, model)
    for key, value in (fam.values.items() if fam else ()):
        set_key(cfg, key, value)
    if (lr := SEARCHED_LRS.get(dataset, {}).get(model or "")) is not None:
        cfg.train.lr = lr
    return cfg


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
    model = overrides.get("model.name") or file_values.get("model.name")
    cfg = recipe(str(name), str(model) if model else None)
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
    if t.optimizer not in OPTIMIZERS:
        raise ConfigValueError(f"train.optimizer={t.optimizer!r}; choose from {sorted(OPTIMIZERS)}")
    if not (math.isfinite(t.head_lr_mult) and t.head_lr_mult > 0):
        raise ConfigValueError(f"train.head_lr_mult={t.head_lr_mult} must be a finite number > 0")
    if not 0 <= t.momentum < 1:
        raise ConfigValueError(f"train.momentum={t.momentum} must be in [0, 1)")
    if not (math.isfinite(d.cache_gb) and d.cache_gb >= 0):
        raise ConfigValueError(f"data.cache_gb={d.cache_gb} must be a finite number >= 0 (0: decode every sample "
                               "from its file each time)")
    if d.eval_size_divisor < 0:
        raise ConfigValueError(f"data.eval_size_divisor={d.eval_size_divisor} must be >= 0 (0: off)")
    for key, v in (("train.iters", t.iters), ("train.batch_size", t.batch_size), ("train.accum_steps", t.accum_steps),
                   ("data.num_classes", d.num_classes)):
        if v < 1:
            raise ConfigValueError(f"{key}={v} must be >= 1")
    if t.seed < 0:
        raise ConfigValueError(f"train.seed={t.seed} must be >= 0")
    if not (math.isfinite(t.lr) and t.lr >= 0):
        raise ConfigValueError(f"train.lr={t.lr} must be a finite number >= 0")
    if min(d.crop_size) < 64:
        raise ConfigValueError(f"data.crop_size={d.crop_size}: LeMoRe pools to 1/64, use at least 64x64")


def to_yaml(cfg: RunCfg) -> str:
    return yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False)


#: Keys added to the config after runs were first saved, with the value that reproduces what a run without them did.
#: A saved config (checkpoint, config.yaml) that lacks one is read with this value, not with today's recipe's.
ADDED_KEYS: dict[str, Any] = {"train.optimizer": "adamw", "train.momentum": 0.9, "train.head_lr_mult": 1.0,
                              "train.norm_bias_decay": False, "data.eval_size_divisor": 0, "data.cache_gb": 2.0,
                              "data.photometric": True}


def saved_overrides(d: dict[str, Any]) -> dict[str, Any]:
    """A saved config (nested, as ``RunCfg.to_dict``) as dotted overrides, with :data:`ADDED_KEYS` filled in."""
    return {**ADDED_KEYS, **_flatten(d)}


def from_dict(d: dict[str, Any]) -> RunCfg:
    """Inverse of ``RunCfg.to_dict`` (a saved config; keys it predates take their :data:`ADDED_KEYS` value)."""
    dataset = d.get("data", {}).get("dataset", "synthetic")
    return load(dataset=dataset, overrides=saved_overrides(d))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
