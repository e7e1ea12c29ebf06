"""The paper's tables next to ours, built only from files under ``results/``.

Inputs (all written by the pipeline, see ``dvc.yaml``):

* ``results/metrics/**/<run name>.json``: one per fine-tuning run (``lemore.engine.train``): run name, resolved
  config, metrics in percent (``miou``, ``aacc``, ``macc``, per-class IoU; ``miou59``/``miou60`` on PASCAL Context).
* ``results/profile/*.json``: parameters, GFLOPs (fvcore MACs) and latency per (model, input size, classes), with
  the measurement protocol (``lemore.profiling``): ``tables.json`` for the paper tables' settings, ``<dataset>.json``
  for the fine-tuned models at each dataset's crop.
* ``results/pretrain/*.json``: ImageNet top-1 of the pretraining run, when there is one.

The paper's numbers come from :func:`lemore.paper.load_table` and appear only in columns named ``"<metric> (paper)"``;
ours are ``"<metric> (ours)"`` and ``"Δ <metric>"`` is ours minus the paper's. A paper row we did not reproduce keeps
empty "ours" cells; nothing is filled in from the paper.

Table 1 holds figures from more than one paper: its published columns are ``"<metric> (published)"`` and a ``source``
column says whose (the LeMoRe paper's Table 1, or, in the "beyond the paper" block, what TopFormer-T and SeaFormer-T
published about themselves, :func:`lemore.paper.load_peers`). Its latency is a ratio to LR-ASPP MobileNetV3-Large, not
milliseconds: ``latency ratio (published)`` is the paper's ms over the paper's 51 ms for LR-ASPP (given only where the
same paper measured both), ``latency ratio (ours)`` the ratio measured in one run of ``benchmarks/latency.py``
(``results/benchmarks/latency.json``, setting :data:`LATENCY_SETTING`, each model in its fastest form).

The CamVid study (``studies/camvid/``, :func:`camvid_tables`) reads its own folder, ``results/camvid/``: the runs'
results files (``metrics/<model>/seed<n>/<run name>.json``, with their learning curves) and ``profile.json``
(params, GFLOPs and ONNX Runtime latency at 360x480, ``python -m lemore.study profile``). Its tables put every
model's CamVid mIoU (from scratch, several seeds) beside the ADE20K mIoU its authors published, Table 2's rows
beside the paper's, each switch's gain with its 95% interval and a verdict from Welch's t-test (:func:`welch_gain`,
:func:`gain_verdict`), and every run's learning curve with its last-quarter gain (:func:`last_quarter_gain`).

Which runs stand for a (dataset, model) pair when there are several: those of the setting with the most iterations
(ties broken by the run name, last in sort order, so the choice never depends on file times), and within that setting
every seed: accuracy columns are the mean over the seeds, with ``<metric>_std`` (sample standard deviation, empty for
one seed) and ``n`` (the number of seeds) beside them (:func:`best_runs`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lemore.models.lemore import ABLATION_ROWS
from lemore.models.lemore import SWITCHES as MODEL_SWITCHES
from lemore.paper import TABLES, load_table
from lemore.profiling import write_text_atomic

#: Table 2's switch columns, in the CSV's order.
SWITCHES = MODEL_SWITCHES
#: Table 2 rows: registry name -> switches as 0/1 (like the CSV), from the model file's ``ABLATION_ROWS``. The
#: all-on row is the paper's model, which runs train as ``lemore``.
ABLATION_MODELS = {("lemore" if all(sw) else name): tuple(int(v) for v in sw) for name, sw in ABLATION_ROWS.items()}


@dataclass(frozen=True)
class TableSpec:
    """How one paper table maps to our results.

    Attributes:
        dataset: the dataset whose runs give the accuracy columns (``config.data.dataset``).
        keys: the columns that identify a paper row.
        metrics: the numeric columns compared (paper vs ours).
        models: registry name -> the key values of the paper row it reproduces.
        size: input (H, W) the paper's GFLOPs / latency refer to (the dataset's training crop).
        num_classes: classes of the profiled head.
        sizes: per-model exceptions to ``size`` (LeMoRe* is trained and measured at 448x448).
    """

    dataset: str
    keys: tuple[str, ...]
    metrics: tuple[str, ...]
    models: dict[str, dict[str, Any]]
    size: tuple[int, int]
    num_classes: int
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    caption: str = ""
    published: str = "paper"  # the label of the published columns: "<metric> (<published>)"
    source: str = ""  # non-empty: a "source" column, this for the paper's rows
    latency_ratio_to: dict[str, Any] | None = None  # the paper row whose latency is the ratio's denominator
    peers: bool = False  # append the "beyond the paper" block (lemore.paper.load_peers)

    def size_of(self, model: str) -> tuple[int, int]:
        return self.sizes.get(model, self.size)


_LRASPP = "lraspp_mobilenet_v3_large"
#: The latency setting Table 1's "latency ratio (ours)" is read from (``results/benchmarks/latency.json``'s summary):
#: ONNX Runtime, one thread, the network only (logits at the decoder stride), each model's fastest form. Not the
#: end-to-end label map: its cost depends on the weights (the share of low-resolution cells where classes meet),
#: and the benchmark's random weights give 0% such cells for LR-ASPP and TopFormer-T but 96-97% for SeaFormer-T
#: and the reduced LR-ASPP, which trained networks would not; the network's time is the architecture's. The label
#: map's ratios are in ``results/benchmarks/latency.md`` beside it.
LATENCY_SETTING = "ort, 1 thread | logits"
#: Table 1's block of LeMoRe's closest relatives that the paper leaves out.
BEYOND_GROUP = "beyond the paper"
SPECS: dict[str, TableSpec] = {
    "table1_ade20k": TableSpec(
        "ade20k", ("model", "encoder", "group"), ("miou", "gflops", "params_m"),
        {"lemore": {"model": "LeMoRe", "encoder": "LeMoRe"},
         "lemore_star": {"model": "LeMoRe* (448x448 training)", "encoder": "LeMoRe"},
         "segformer_b0": {"model": "SegFormer", "encoder": "MiT-B0"},
         _LRASPP: {"model": "LR-ASPP", "encoder": "MobileNetV3-Large"},
         "lraspp_mobilenet_v3_large_reduced": {"model": "LR-ASPP", "encoder": "MobileNetV3-Large-reduce"}},
        (512, 512), 150, sizes={"lemore_star": (448, 448)}, published="published",
        source="LeMoRe (ICIP 2025), Table 1", latency_ratio_to={"model": "LR-ASPP", "encoder": "MobileNetV3-Large"},
        peers=True),
    "table2_ablation": TableSpec(
        "ade20k", SWITCHES, ("miou", "gflops", "params_m"),
        {name: dict(zip(SWITCHES, sw)) for name, sw in ABLATION_MODELS.items()}, (512, 512), 150),
    "table3_cityscapes": TableSpec(
        "cityscapes", ("model", "encoder"), ("miou", "gflops"),
        {"lemore": {"model": "LeMoRe", "encoder": "LeMoRe"},
         "segformer_b0": {"model": "SegFormer", "encoder": "MiT-B0"},
         _LRASPP: {"model": "LR-ASPP", "encoder": "MobileNetV3-Large"}},
        (512, 1024), 19),
    "table4_pascal_context": TableSpec(
        "pascal_context", ("model", "backbone"), ("miou59", "miou60", "gflops"),
        {"lemore": {"model": "LeMoRe", "backbone": "LeMoRe"},
         _LRASPP: {"model": "LR-ASPP", "backbone": "MobileNetV3-s16"}},
        (480, 480), 60),
    "table5_coco_stuff": TableSpec(
        "coco_stuff", ("model", "encoder"), ("miou", "gflops"),
        {"lemore": {"model": "LeMoRe", "encoder": "LeMoRe"},
         _LRASPP: {"model": "LR-ASPP", "encoder": "MobileNetV3-s16"}},
        (512, 512), 171),
    "table_imagenet": TableSpec(
        "imagenet", ("model", "input_size"), ("top1", "params_m"),
        {"lemore_cls": {"model": "LeMoRe", "input_size": 224}}, (224, 224), 1000),
}

#: Display names of our models (for tables of our own runs and figure labels).
DISPLAY_NAMES = {"lemore": "LeMoRe", "lemore_star": "LeMoRe*", "segformer_b0": "SegFormer-B0",
                 _LRASPP: "LR-ASPP MobileNetV3-L", "lraspp_mobilenet_v3_large_reduced": "LR-ASPP MobileNetV3-L reduced",
                 "topformer_t": "TopFormer-T", "seaformer_t": "SeaFormer-T", "lemore_cls": "LeMoRe (ImageNet)"}


def display_name(model: str) -> str:
    return DISPLAY_NAMES.get(model, model)


# ------------------------------------------------------------------------------------------------- reading
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read results file {str(path)!r}: {e}") from None


def load_runs(results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """One row per fine-tuning results JSON under ``<results_dir>/metrics`` (searched recursively).

    Columns: run_name, dataset, model, iters, batch_size, crop, lr (the peak learning rate), seed, miou, aacc, macc,
    miou59, miou60, num_images, params_m, checkpoint, path, per_class_iou (a dict), pretrained (the initialisation,
    "" = from scratch), curve (the validation evaluations during training, ``[{"iteration", "miou", ...}]``, empty
    for runs that predate it) and timing (a dict). Empty (with these columns) when there is no run yet.
    """
    cols = ["run_name", "dataset", "model", "iters", "batch_size", "crop", "lr", "seed", "miou", "aacc", "macc",
            "miou59", "miou60", "num_images", "params_m", "checkpoint", "path", "per_class_iou", "pretrained", "curve",
            "timing"]
    rows = []
    for path in sorted(Path(results_dir, "metrics").rglob("*.json")):
        obj = _read_json(path)
        if not isinstance(obj, dict) or "metrics" not in obj or "config" not in obj:
            continue  # not a run's results file
        cfg, m = obj["config"], obj["metrics"]
        h, w = cfg["data"]["crop_size"]
        rows.append(dict(
            run_name=obj.get("run_name", path.stem), dataset=cfg["data"]["dataset"], model=cfg["model"]["name"],
            iters=obj.get("iteration", cfg["train"]["iters"]), batch_size=cfg["train"]["batch_size"],
            crop=f"{h}x{w}", lr=cfg["train"].get("lr"), seed=int(cfg["train"].get("seed", 0)), miou=m.get("miou"),
            aacc=m.get("aacc"), macc=m.get("macc"), miou59=m.get("miou59"), miou60=m.get("miou60"),
            num_images=m.get("num_images"),
            params_m=obj.get("params_m"), checkpoint=obj.get("checkpoint"), path=str(path),
            per_class_iou=m.get("per_class_iou") or {}, pretrained=obj.get("pretrained") or cfg["model"].get(
                "pretrained") or "", curve=obj.get("curve") or [], timing=obj.get("timing") or {}))
    df = pd.DataFrame(rows, columns=cols)
    for c in ("lr", "miou", "aacc", "macc", "miou59", "miou60", "params_m"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


#: Accuracy columns averaged over seeds by :func:`best_runs` (each also gets ``<column>_std``).
SEED_METRICS = ("miou", "aacc", "macc", "miou59", "miou60")
#: What makes two runs of a (dataset, model) the same setting, seeds aside.
SETTING = ("dataset", "model", "iters", "batch_size", "crop")


def setting_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that stand for each (dataset, model): every seed of its setting with the most iterations (then the
    last run name), one run per seed (a seed run twice under two names: the last name), ordered by dataset, model
    and seed. What :func:`best_runs` averages; the per-seed rows for spreads, learning curves and seed dots."""
    if runs.empty:
        return runs
    ordered = runs.sort_values(["dataset", "model", "iters", "run_name"])
    chosen = ordered.groupby(["dataset", "model"], as_index=False).tail(1)[list(SETTING)]
    parts = []
    for _, setting in chosen.iterrows():
        same = runs[(runs[list(SETTING)] == setting.values).all(axis=1)].sort_values(["seed", "run_name"])
        parts.append(same.drop_duplicates("seed", keep="last"))
    return pd.concat(parts).sort_values(["dataset", "model", "seed"], kind="stable").reset_index(drop=True)


def best_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model): its setting with the most iterations (then the last run name), the accuracy
    averaged over that setting's seeds (see the module docstring and :func:`setting_runs`).

    Adds ``<metric>_std`` for :data:`SEED_METRICS` (sample standard deviation, NaN for one seed), ``n`` (seeds),
    ``seeds`` ("0,1,2") and ``per_class_iou`` averaged over the seeds; ``run_name``, ``checkpoint`` and ``path`` are
    those of the lowest seed (the run the figures show).
    """
    if runs.empty:
        return runs.assign(**{f"{m}_std": pd.Series(dtype=float) for m in SEED_METRICS}, n=pd.Series(dtype=int),
                           seeds=pd.Series(dtype=str))
    chosen = setting_runs(runs)
    rows = []
    for _, same in chosen.groupby(["dataset", "model"], sort=True):
        row = same.iloc[0].to_dict()
        for m in SEED_METRICS:
            values = same[m].astype(float)
            row[m] = values.mean() if values.notna().any() else math.nan
            row[f"{m}_std"] = values.std(ddof=1) if values.notna().sum() > 1 else math.nan
        row["n"], row["seeds"] = len(same), ",".join(str(v) for v in same.seed)
        classes = [c for c in same.per_class_iou.iloc[0]]
        row["per_class_iou"] = {c: float(pd.Series([d.get(c, math.nan) for d in same.per_class_iou]).mean())
                                for c in classes}
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


def load_profile(results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """Rows of every ``<results_dir>/profile/*.json`` (the paper tables' settings and one file per dataset) with
    ``size`` as "HxW"; for a (model, size, classes) measured twice the row with a latency wins. Empty if none."""
    cols = ["model", "num_classes", "size", "params_m", "gflops", "latency_ms", "threads"]
    rows = []
    for path in sorted(Path(results_dir, "profile").glob("*.json")):
        for r in _read_json(path).get("rows", []):
            h, w = r["input_size"]
            rows.append(dict(model=r["model"], num_classes=int(r["num_classes"]), size=f"{h}x{w}",
                             params_m=r["params_m"], gflops=r["gflops"], latency_ms=r.get("latency_ms"),
                             threads=r.get("threads")))
    df = pd.DataFrame(rows, columns=cols)
    if not df.empty:  # lookups take the last row of a key: put the rows with a latency last
        df = df.assign(_lat=df.latency_ms.notna()).sort_values("_lat", kind="stable").drop(columns="_lat")
        df = df.reset_index(drop=True)
    for c in ("params_m", "gflops", "latency_ms"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def load_profile_protocol(results_dir: str | os.PathLike = "results", name: str | None = None) -> dict[str, Any]:
    """The measurement protocol stored with ``results/profile/<name>.json`` (default: the first file there)."""
    paths = [Path(results_dir, "profile", f"{name}.json")] if name else sorted(Path(results_dir, "profile").glob("*.json"))
    paths = [p for p in paths if p.is_file()]
    return _read_json(paths[0]).get("protocol", {}) if paths else {}


def load_latency_ratios(results_dir: str | os.PathLike = "results", setting: str = LATENCY_SETTING
                        ) -> dict[str, float]:
    """Model -> median latency over LR-ASPP MobileNetV3-Large's, measured in one run of ``benchmarks/latency.py``
    (``<results_dir>/benchmarks/latency.json``, summary ``setting``). Empty if the file or setting is absent; a model
    the benchmark did not run is absent."""
    path = Path(results_dir, "benchmarks", "latency.json")
    if not path.is_file():
        return {}
    entry = _read_json(path).get("summary", {}).get(setting, {})
    return {m: float(e["ratio"]) for m, e in entry.items() if isinstance(e, dict) and e.get("ratio") is not None}


def load_pretrain(results_dir: str | os.PathLike = "results") -> dict[str, Any] | None:
    """The ImageNet pretraining result (``results/pretrain/*.json`` holding a ``top1``), or None."""
    for path in sorted(Path(results_dir, "pretrain").glob("*.json")):
        obj = _read_json(path)
        if isinstance(obj, dict):
            m = obj.get("metrics", obj)
            if isinstance(m, dict) and m.get("top1") is not None:
                return obj
    return None


# ----------------------------------------------------------------------------------------------- building
def _profile_value(profile: pd.DataFrame, model: str, size: tuple[int, int], num_classes: int, col: str) -> float:
    if profile.empty:
        return math.nan
    hit = profile[(profile.model == model) & (profile["size"] == f"{size[0]}x{size[1]}")
                  & (profile.num_classes == num_classes)]
    if hit.empty or pd.isna(hit.iloc[-1][col]):
        return math.nan
    return float(hit.iloc[-1][col])


def _ours(spec: TableSpec, model: str, runs: pd.DataFrame, profile: pd.DataFrame,
          pretrain: dict[str, Any] | None) -> dict[str, Any]:
    """Our values of ``spec.metrics`` for ``model`` (NaN where we have none) and the run they come from."""
    out: dict[str, Any] = {m: math.nan for m in spec.metrics}
    out.update({f"{m}_std": math.nan for m in spec.metrics}, run="", n=math.nan)
    hit = runs[(runs.dataset == spec.dataset) & (runs.model == model)] if not runs.empty else runs
    if not hit.empty:
        row = hit.iloc[-1]
        out["run"], out["n"] = row.run_name, row.get("n", 1)
        for m in ("miou", "miou59", "miou60"):
            if m in spec.metrics:
                out[m], out[f"{m}_std"] = row[m], row.get(f"{m}_std", math.nan)
    if "top1" in spec.metrics and pretrain is not None:
        out["top1"] = float(pretrain.get("metrics", pretrain)["top1"])
        out["run"] = pretrain.get("run_name", "pretrain")
    for m in ("gflops", "params_m", "latency_ms"):
        if m in spec.metrics:
            out[m] = _profile_value(profile, model, spec.size_of(model), spec.num_classes, m)
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal as numbers when both are (iterrows turns an all-numeric row into floats), else as strings."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def paper_vs_ours(name: str, runs: pd.DataFrame, profile: pd.DataFrame,
                  pretrain: dict[str, Any] | None = None, latency: dict[str, float] | None = None) -> pd.DataFrame:
    """Paper table ``name`` with, per metric, ``"<m> (paper)"``, ``"<m> (ours)"`` and ``"Δ <m>"`` columns.

    Every paper row is kept. ``ours: model`` names our registry model for reproduced rows, ``ours: run`` the run
    whose accuracy is shown. ``runs`` should hold one run per (dataset, model), see :func:`best_runs`. Table 1
    (``spec.published``, ``spec.source``, ``spec.latency_ratio_to``, ``spec.peers``) labels its published columns
    "(published)" with a ``source`` column, shows latency as ratios to LR-ASPP (``latency``: model -> our measured
    ratio, :func:`load_latency_ratios`) and ends with the "beyond the paper" block.
    """
    if name not in SPECS:
        raise ValueError(f"unknown paper table {name!r}; choose from {sorted(SPECS)}")
    spec, paper = SPECS[name], load_table(name)
    key_cols = [k for k in spec.keys if k in paper.columns]
    pub = spec.published
    ref_ms = math.nan
    if spec.latency_ratio_to is not None:
        ref = paper[[all(_same(r[k], v) for k, v in spec.latency_ratio_to.items()) for _, r in paper.iterrows()]]
        ref_ms = float(ref["latency_ms"].iloc[0])
    latency = latency or {}

    def latency_cells(published_ms: float, model: str) -> dict[str, Any]:
        if spec.latency_ratio_to is None:
            return {}
        ours = latency.get(model, math.nan) if model else math.nan
        return {"latency_ms (published)": published_ms, "latency ratio (published)": published_ms / ref_ms,
                "latency ratio (ours)": ours}

    rows = []
    for idx, prow in paper.iterrows():
        model = next((m for m, keyvals in spec.models.items()
                      if all(_same(prow[k], v) for k, v in keyvals.items())), "")
        ours = _ours(spec, model, runs, profile, pretrain) if model else {m: math.nan for m in spec.metrics}
        row: dict[str, Any] = {k: paper.at[idx, k] for k in key_cols}  # .at keeps the column's dtype
        if spec.source:
            row["source"] = spec.source
        for m in spec.metrics:
            p = prow[m] if m in paper.columns else math.nan
            p = float(p) if pd.notna(p) else math.nan
            o = float(ours[m]) if pd.notna(ours[m]) else math.nan
            row[f"{m} ({pub})"], row[f"{m} (ours)"], row[f"Δ {m}"] = p, o, o - p
            if m in SEED_METRICS:
                row[f"{m} std (ours)"] = ours.get(f"{m}_std", math.nan)
        lat = prow["latency_ms"] if "latency_ms" in paper.columns and pd.notna(prow["latency_ms"]) else math.nan
        row.update(latency_cells(float(lat), model))
        row["ours: model"] = model
        row["ours: run"] = ours.get("run", "") if model else ""
        row["ours: n"] = ours.get("n", math.nan) if model else math.nan
        rows.append(row)
    if spec.peers:
        from lemore.paper import load_peers

        for p in load_peers().itertuples(index=False):
            ours = _ours(spec, p.registry, runs, profile, pretrain)
            row = {"model": p.model, "encoder": p.encoder, "group": BEYOND_GROUP, "source": p.short_source}
            for m in spec.metrics:
                o = float(ours[m]) if pd.notna(ours[m]) else math.nan
                published = float(getattr(p, m))
                row[f"{m} ({pub})"], row[f"{m} (ours)"], row[f"Δ {m}"] = published, o, o - published
                if m in SEED_METRICS:
                    row[f"{m} std (ours)"] = ours.get(f"{m}_std", math.nan)
            # Published latencies of the peers are on other hardware than the paper's 51 ms: no published ratio.
            row.update(latency_cells(math.nan, p.registry))
            row["ours: model"], row["ours: run"], row["ours: n"] = p.registry, ours.get("run", ""), ours["n"]
            rows.append(row)
    return pd.DataFrame(rows)


def ours_table(dataset: str, runs: pd.DataFrame, profile: pd.DataFrame) -> pd.DataFrame:
    """Our runs on ``dataset`` (no paper counterpart, e.g. the synthetic set): accuracy (mean over the ``n`` seeds,
    with its standard deviation), size and cost.

    GFLOPs and latency are those of ``results/profile`` at the dataset's recipe crop and class count.
    """
    from lemore.config import recipe

    d = recipe(dataset).data
    size, k = tuple(d.crop_size), d.num_classes
    hit = runs[runs.dataset == dataset] if not runs.empty else runs
    rows = []
    for _, r in hit.iterrows():
        rows.append({"model": display_name(r.model), "run": r.run_name, "iters": int(r.iters),
                     "n": int(r.get("n", 1)), "miou": r.miou, "miou std": r.get("miou_std", math.nan),
                     "aacc": r.aacc, "macc": r.macc,
                     "params_m": r.params_m if pd.notna(r.params_m) else _profile_value(profile, r.model, size, k,
                                                                                        "params_m"),
                     f"gflops ({size[0]}x{size[1]})": _profile_value(profile, r.model, size, k, "gflops"),
                     f"latency_ms ({size[0]}x{size[1]})": _profile_value(profile, r.model, size, k, "latency_ms")})
    return pd.DataFrame(rows)


def build_all(results_dir: str | os.PathLike = "results") -> dict[str, pd.DataFrame]:
    """Every paper table (paper vs ours) and one ``ours_<dataset>`` table per dataset without a paper table."""
    runs = best_runs(load_runs(results_dir))
    profile = load_profile(results_dir)
    pretrain = load_pretrain(results_dir)
    latency = load_latency_ratios(results_dir)
    out = {name: paper_vs_ours(name, runs, profile, pretrain, latency) for name in TABLES}
    paper_datasets = {s.dataset for s in SPECS.values()}
    for dataset in sorted(set(runs.dataset) - paper_datasets) if not runs.empty else []:
        out[f"ours_{dataset}"] = ours_table(dataset, runs, profile)
    return out


def caption(name: str) -> str:
    if name == "table1_ade20k":
        return (TABLES[name] + " -- published vs this reproduction (Δ = ours - published; `source` says whose figures "
                "the published columns hold). Last block, beyond the paper: LeMoRe's closest relatives with what their "
                "authors published. Latency as the ratio to LR-ASPP MobileNetV3-Large: published = the paper's ms / "
                "its 51 ms; ours = one interleaved run of benchmarks/latency.py (results/benchmarks/latency.json, "
                f"{LATENCY_SETTING}: the network only, fastest form of each model; end-to-end label maps in "
                "results/benchmarks/latency.md), empty where a model was not in that run")
    if name in TABLES:
        return TABLES[name] + " -- paper vs this reproduction (Δ = ours - paper)"
    return f"Our runs on the {name.removeprefix('ours_')} dataset (no paper counterpart)"


# ----------------------------------------------------------------------------------------- the CamVid study
#: The evaluation of a learning curve that the last-quarter gain starts from: 3/4 of the schedule.
LAST_QUARTER = 0.75
#: A mean last-quarter gain (mIoU points) below this counts as a plateau: more iterations would change little.
PLATEAU_GAIN = 1.0
#: Table 2 read as the paper reads it: (the switch, the row without it, the row with it), registry names; the full
#: row is ``lemore``.
ABLATION_GAINS = (
    ("+F", "lemore_t", "lemore_tf"),
    ("+L", "lemore_tf", "lemore_tfl"),
    ("+CA", "lemore_tfl", "lemore_tfl_ca"),
    ("+NA on T", "lemore_t", "lemore_t_na"),
    ("+NA on T+F", "lemore_tf", "lemore_tf_na"),
    ("+NA on T+F+L", "lemore_tfl", "lemore_tfl_na"),
    ("+NA on T+F+L+CA", "lemore_tfl_ca", "lemore"),
)
#: What the CamVid study calls its initialisation when every run of a model started from random weights.
FROM_SCRATCH = "from scratch, no ImageNet weights"
CAMVID_CAPTIONS = {
    "camvid_models": "CamVid (SegNet's 11 classes, 360x480), every model trained from scratch (no ImageNet weights) "
                     "with the same recipe but the learning rate, each model at its best of one declared grid "
                     "(lemore.config.SEARCHED_LRS; lr = the peak rate its runs used), several seeds each: val mIoU = "
                     "mean over the seeds, std = their sample standard deviation, n = seeds; per-class IoU = mean "
                     "over the seeds. Params, GFLOPs (fvcore MACs) and latency (ONNX Runtime, 1 thread, batch 1) "
                     "for a 360x480 frame from profile.json (run at: padded to a multiple of 64 for the models whose "
                     "exported graph needs it); latency ratio = the model's time over LR-ASPP MobileNetV3-Large's in the same run. Last-quarter gain: mIoU "
                     "at the end minus at 3/4 of the schedule, mean over the seeds. The ADE20K column is what its "
                     "source published (ImageNet-pretrained, ADE20K 512x512), not measured here. Empty = not run",
    "camvid_ablation": "The rows of the paper's Table 2 on CamVid: the switches, the paper's params, GFLOPs and ADE20K "
                       "mIoU (paper: 512x512, ImageNet-pretrained) beside our CamVid val mIoU (from scratch; mean, "
                       "sample std over the seeds, n seeds); the full row is LeMoRe's runs. Empty = not run",
    "camvid_gains": "Each switch's gain as the paper reads Table 2: the paper's ADE20K gain beside ours on CamVid "
                    "(the difference of the two rows' seed means, its 95% interval and p from Welch's t-test, "
                    "scipy.stats.ttest_ind with equal_var=False). Verdict: holds = p < 0.05 and our gain has the "
                    "paper's sign; reversed = p < 0.05 and the opposite sign; undecided = p >= 0.05; one seed = a "
                    "row with one seed (nothing to test); empty = a row not run",
    "camvid_pairs": "LeMoRe against each other study model on CamVid val: the difference of the mean val mIoU "
                    "(LeMoRe minus the model; n = seeds of each), its 95% interval and p from Welch's t-test "
                    "(scipy.stats.ttest_ind with equal_var=False); verdict: LeMoRe ahead or behind = p < 0.05, "
                    "undecided = p >= 0.05 (no difference the seeds can resolve), one seed = nothing to test; "
                    "latency ratio = LeMoRe's ONNX Runtime time over the model's at the profile's size "
                    "(below 1: LeMoRe faster)",
    "camvid_plateau": "Learning curves: val mIoU at every evaluation of each run (model, seed), and the last-quarter "
                      "gain (mIoU at the end minus at 3/4 of the schedule); per model a `mean` row (means over its "
                      f"seeds) with plateau = yes when its mean gain is below {PLATEAU_GAIN:.1f} mIoU point",
    "camvid_schedules": "The plateau rule's doubling check: seed 0 of every model at the study's schedule and at twice "
                        "it (results/camvid/long/), its final val mIoU, last-quarter gain and rank (1 = best) at each; "
                        "empty = not run at that schedule",
    "camvid_times": "What each run cost, from the timing its results file records (the machine: docs/camvid.md): "
                    "minutes of training and of the validation passes, over every process of a stage cut into "
                    "resumed ones; threads = the run's torch threads; core-minutes = minutes x threads; the last "
                    "row sums them",
    "camvid_per_image": "How the visual comparison picks its images: per-image val mIoU (classes in the image's "
                        "ground truth or prediction) of the seed-0 weights of both models, ranked by their "
                        "difference; `shown` = the figure's row (evenly spaced quantiles of the ranking)",
}


def published_ade20k_miou() -> dict[str, tuple[float, str]]:
    """Registry model -> (ADE20K val mIoU its authors published, source): the LeMoRe paper's Table 1 for the rows it
    has, the peers' own papers for TopFormer-T and SeaFormer-T (:func:`lemore.paper.load_peers`)."""
    from lemore.paper import load_peers

    spec, t1 = SPECS["table1_ade20k"], load_table("table1_ade20k")
    out = {}
    for model, keys in spec.models.items():
        hit = t1[[all(_same(r[k], v) for k, v in keys.items()) for _, r in t1.iterrows()]]
        if len(hit):
            out[model] = (float(hit["miou"].iloc[0]), "LeMoRe paper, Table 1")
    for p in load_peers().itertuples(index=False):
        out[p.registry] = (float(p.miou), p.short_source)
    return out


def ablation_label(model: str) -> str:
    """A Table 2 row's switches as the paper writes them, e.g. ``"T+F+L"`` (``model``: a key of ABLATION_MODELS)."""
    short = {"transverse": "T", "frontal": "F", "lateral": "L", "channel_attention": "CA", "nested_attention": "NA"}
    return "+".join(short[s] for s, on in zip(SWITCHES, ABLATION_MODELS[model]) if on)


def study_label(model: str) -> str:
    """The display name of a study model; a Table 2 variant as ``"LeMoRe (T+F)"``."""
    if model in ABLATION_MODELS and model != "lemore":
        return f"LeMoRe ({ablation_label(model)})"
    return display_name(model)


def study_runs(results_dir: str | os.PathLike, dataset: str = "camvid") -> pd.DataFrame:
    """Every run of a study on ``dataset`` that stands for its model (:func:`setting_runs`), one row per seed."""
    runs = load_runs(results_dir)
    return setting_runs(runs[runs.dataset == dataset].reset_index(drop=True))


def load_study_profile(results_dir: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The rows and the protocol of ``<results_dir>/profile.json`` (``python -m lemore.study profile``).

    Rows: model, size ("HxW", the frame), run_size (the padded size the model ran at), num_classes, params_m, gflops,
    latency_ms, latency_ratio (to LR-ASPP
    MobileNetV3-Large in the same run), in_study. Without the file: no rows (these columns) and ``{}``.
    """
    cols = ["model", "size", "run_size", "num_classes", "params_m", "gflops", "latency_ms", "latency_ratio", "in_study"]
    path = Path(results_dir, "profile.json")
    if not path.is_file():
        return pd.DataFrame(columns=cols), {}
    obj = _read_json(path)
    rows = [dict(model=r["model"], size="x".join(str(v) for v in r["input_size"]),
                 run_size="x".join(str(v) for v in r.get("run_size", r["input_size"])), num_classes=r["num_classes"],
                 params_m=r.get("params_m"), gflops=r.get("gflops"), latency_ms=r.get("latency_ms"),
                 latency_ratio=r.get("latency_ratio"), in_study=bool(r.get("in_study", True)))
            for r in obj.get("rows", [])]
    df = pd.DataFrame(rows, columns=cols)
    for c in ("params_m", "gflops", "latency_ms", "latency_ratio"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df, obj.get("protocol", {})


def last_quarter_gain(curve: Sequence[Mapping[str, Any]], iters: int) -> float:
    """mIoU at the end of the schedule minus mIoU at 3/4 of it (:data:`LAST_QUARTER`), from a run's learning curve
    (``[{"iteration", "miou"}, ...]``).

    The end is the evaluation at ``iters``; the start the evaluation nearest to ``0.75 * iters``, within 1/16 of the
    schedule (an evaluation every 1/8 of it puts one there exactly). NaN when either is missing.
    """
    points = {int(p["iteration"]): float(p["miou"]) for p in curve if p.get("miou") is not None}
    if int(iters) not in points:
        return math.nan
    target = LAST_QUARTER * iters
    near = [it for it in points if abs(it - target) <= iters / 16 and it < iters]
    if not near:
        return math.nan
    start = min(near, key=lambda it: (abs(it - target), it))
    return points[int(iters)] - points[start]


#: The significance level of Table 2's gains: a gain counts when Welch's t-test gives p below it (the 95% interval
#: of the difference then excludes 0).
GAIN_ALPHA = 0.05


def welch_gain(before: Sequence[float], after: Sequence[float], alpha: float = GAIN_ALPHA
               ) -> tuple[float, float, float, float]:
    """``after`` minus ``before`` (one value per seed) with Welch's t-test (``scipy.stats.ttest_ind``,
    ``equal_var=False``): ``(gain, ci_low, ci_high, p)``, the interval at ``1 - alpha``. NaN where a side has no value;
    only the gain where a side has one value (no variance to test with)."""
    from scipy import stats

    a, b = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if not len(a) or not len(b):
        return math.nan, math.nan, math.nan, math.nan
    gain = float(b.mean() - a.mean())
    if min(len(a), len(b)) < 2:
        return gain, math.nan, math.nan, math.nan
    res = stats.ttest_ind(b, a, equal_var=False)
    ci = res.confidence_interval(1 - alpha)
    return gain, float(ci.low), float(ci.high), float(res.pvalue)


def gain_verdict(paper_gain: float, gain: float, p: float, alpha: float = GAIN_ALPHA) -> str:
    """``"holds"``: Welch's ``p < alpha`` and ``gain`` has the sign of ``paper_gain``; ``"reversed"``: ``p < alpha``
    and the opposite sign; ``"undecided"``: ``p >= alpha``; ``"one seed"`` when ``p`` is missing (a row with one
    seed: nothing to test); ``""`` when ``gain`` is (a row not run)."""
    if not math.isfinite(gain):
        return ""
    if not math.isfinite(p):
        return "one seed"
    if p >= alpha:
        return "undecided"
    return "holds" if math.copysign(1, gain) == math.copysign(1, paper_gain) else "reversed"


def _mean_gain(chosen: pd.DataFrame, model: str) -> float:
    hit = chosen[chosen.model == model] if not chosen.empty else chosen
    gains = [last_quarter_gain(r.curve, int(r.iters)) for r in hit.itertuples(index=False)]
    gains = [g for g in gains if math.isfinite(g)]
    return float(np.mean(gains)) if gains else math.nan


def _seed_cells(best: pd.DataFrame, model: str) -> pd.Series | None:
    hit = best[best.model == model] if not best.empty else best
    return hit.iloc[-1] if len(hit) else None


def study_models_table(chosen: pd.DataFrame, profile: pd.DataFrame, models: Sequence[str],
                       classes: Sequence[str], size: str) -> pd.DataFrame:
    """One row per study model, sorted by mean val mIoU (models without runs last, empty cells).

    Args:
        chosen: the runs that stand for each model, one per seed (:func:`study_runs`).
        profile: :func:`load_study_profile`'s rows (params, GFLOPs, latency at ``size``).
        models: registry names, the Table 2 variants left out.
        classes: the dataset's class names (one per-class IoU column each, mean over the seeds).
        size: "HxW" of the profile, for the column names.
    """
    best = best_runs(chosen)
    published = published_ade20k_miou()
    rows = []
    for m in models:
        r = _seed_cells(best, m)
        prof = profile[profile.model == m] if not profile.empty else profile
        p = prof.iloc[-1] if len(prof) else None
        inits = sorted(set(chosen[chosen.model == m].pretrained)) if not chosen.empty else []  # "": from scratch
        lrs = sorted(set(chosen[chosen.model == m].lr.dropna())) if not chosen.empty else []
        ade, source = published.get(m, (math.nan, ""))
        row: dict[str, Any] = {
            "model": display_name(m), "val miou": r.miou if r is not None else math.nan,
            "val miou std": r.miou_std if r is not None else math.nan, "n": int(r.n) if r is not None else 0,
            "seeds": r.seeds if r is not None else "",
            "lr": ", ".join(f"{x:g}" for x in lrs)}  # one per model unless its seeds ran at different rates
        for c in classes:
            row[f"iou {c}"] = r.per_class_iou.get(c, math.nan) if r is not None else math.nan
        row.update({
            "run at": p.run_size if p is not None else "",
            "params_m": p.params_m if p is not None else math.nan,
            f"gflops ({size})": p.gflops if p is not None else math.nan,
            f"latency_ms ({size})": p.latency_ms if p is not None else math.nan,
            "latency ratio to LR-ASPP": p.latency_ratio if p is not None else math.nan,
            "last-quarter gain": _mean_gain(chosen, m),
            "ade20k miou (published)": ade, "ade20k source (published)": source,
            "initialisation": "; ".join(f"pretrained: {i}" if i else FROM_SCRATCH for i in inits),
            "registry": m})
        rows.append(row)
    cols = ["model", "val miou", "val miou std", "n", "seeds", "lr", *[f"iou {c}" for c in classes], "run at",
            "params_m", f"gflops ({size})", f"latency_ms ({size})", "latency ratio to LR-ASPP", "last-quarter gain",
            "ade20k miou (published)", "ade20k source (published)", "initialisation", "registry"]
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values("val miou", ascending=False, kind="stable", na_position="last").reset_index(drop=True)


def study_ablation_table(chosen: pd.DataFrame, dataset: str = "camvid") -> pd.DataFrame:
    """Table 2's eight rows in the paper's order: switches, the paper's params / GFLOPs / ADE20K mIoU, and ours on
    ``dataset`` (mean, sample std, n seeds; empty when not run). The full row is ``lemore``'s runs."""
    best = best_runs(chosen)
    paper = load_table("table2_ablation")
    by_switch = {v: k for k, v in ABLATION_MODELS.items()}
    rows = []
    for _, prow in paper.iterrows():
        model = by_switch[tuple(int(prow[c]) for c in SWITCHES)]
        r = _seed_cells(best, model)
        rows.append({"row": ablation_label(model), **{c: int(prow[c]) for c in SWITCHES},
                     "params_m (paper)": float(prow["params_m"]), "gflops (paper)": float(prow["gflops"]),
                     "ade20k miou (paper)": float(prow["miou"]),
                     f"{dataset} miou (ours)": r.miou if r is not None else math.nan,
                     f"{dataset} miou std (ours)": r.miou_std if r is not None else math.nan,
                     "n (ours)": int(r.n) if r is not None else 0, "registry": model})
    return pd.DataFrame(rows)


def study_gains_table(ablation: pd.DataFrame, chosen: pd.DataFrame, dataset: str = "camvid") -> pd.DataFrame:
    """Each switch's gain (:data:`ABLATION_GAINS`): the paper's ADE20K gain from :func:`study_ablation_table` and
    ours from the two rows' runs in ``chosen`` (one final val mIoU per seed, :func:`study_runs`): the difference of
    the means, its 95% interval and p from Welch's t-test (:func:`welch_gain`), and a verdict
    (:func:`gain_verdict`)."""
    rows = []
    by_model = ablation.set_index("registry")
    ours = f"{dataset} gain (ours)"
    for switch, a, b in ABLATION_GAINS:
        ra, rb = by_model.loc[a], by_model.loc[b]
        paper = float(rb["ade20k miou (paper)"] - ra["ade20k miou (paper)"])
        seeds = [chosen[chosen.model == m].miou.astype(float).dropna().tolist() if not chosen.empty else []
                 for m in (a, b)]
        gain, low, high, p = welch_gain(*seeds)
        rows.append({"switch": switch, "from": ra["row"], "to": rb["row"], "ade20k gain (paper)": paper,
                     ours: gain, f"{dataset} gain 95% ci low (ours)": low, f"{dataset} gain 95% ci high (ours)": high,
                     "welch p (ours)": p, "n (from, to)": f"{len(seeds[0])}, {len(seeds[1])}",
                     "verdict": gain_verdict(paper, gain, p)})
    return pd.DataFrame(rows)


def study_pairs_table(chosen: pd.DataFrame, models_table: pd.DataFrame, size: str, reference: str = "lemore"
                      ) -> pd.DataFrame:
    """``reference`` against each other model of ``models_table`` (:func:`study_models_table`, in its order): the
    difference of the mean val mIoU (reference minus the model), its 95% interval and p from Welch's t-test over the
    seeds (:func:`welch_gain`), a verdict (``"<reference> ahead"`` / ``"<reference> behind"``: p < :data:`GAIN_ALPHA`;
    ``"undecided"``: p >= it; ``"one seed"``: a side with one seed; ``""``: a side not run), and the latency ratio
    (the reference's time over the model's, the models table's ``latency_ms (<size>)``). Empty when the reference has
    no row."""
    cols = ["model", "registry", "n (model, reference)", "val miou", "difference (reference - model)", "95% ci low",
            "95% ci high", "welch p", "verdict", "latency ratio (reference / model)"]
    rows_by = models_table.set_index("registry")
    if reference not in rows_by.index:
        return pd.DataFrame(columns=cols)
    ref = rows_by.loc[reference]
    seeds = {m: chosen[chosen.model == m].miou.astype(float).dropna().tolist() if not chosen.empty else []
             for m in models_table.registry}
    name = display_name(reference)
    rows = []
    for m, row in rows_by.iterrows():
        if m == reference:
            continue
        diff, low, high, p = welch_gain(seeds[m], seeds[reference])
        if not math.isfinite(diff) or not math.isfinite(p):
            verdict = "" if not math.isfinite(diff) else "one seed"
        else:
            verdict = "undecided" if p >= GAIN_ALPHA else f"{name} {'ahead' if diff > 0 else 'behind'}"
        lat = ref[f"latency_ms ({size})"], row[f"latency_ms ({size})"]
        rows.append({"model": row["model"], "registry": m, "n (model, reference)": f"{len(seeds[m])}, "
                     f"{len(seeds[reference])}", "val miou": row["val miou"], "difference (reference - model)": diff,
                     "95% ci low": low, "95% ci high": high, "welch p": p, "verdict": verdict,
                     "latency ratio (reference / model)": lat[0] / lat[1] if lat[1] else math.nan})
    return pd.DataFrame(rows, columns=cols)


def study_schedule_table(chosen: pd.DataFrame, longer: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """The doubling check of the plateau rule: seed 0 of each of ``models`` at the study's schedule (``chosen``) and
    at the longer one (``longer``, :func:`study_runs` of the long runs' folder): final val mIoU, last-quarter gain and
    rank (1 = best) at each. Models with no seed-0 run at either schedule are left out; a rank is empty where the
    model has no run at that schedule. :func:`rank_changes` lists the pairs whose order differs."""
    cols = ["model", "registry", "iters", "seed-0 miou", "rank", "last-quarter gain", "iters (long)",
            "seed-0 miou (long)", "rank (long)", "last-quarter gain (long)"]
    rows = []
    for m in models:
        short = [r for r in (chosen[chosen.model == m] if not chosen.empty else chosen).itertuples() if r.seed == 0]
        long_ = [r for r in (longer[longer.model == m] if not longer.empty else longer).itertuples() if r.seed == 0]
        if not short and not long_:
            continue
        row: dict[str, Any] = {"model": study_label(m), "registry": m}
        for suffix, hit in (("", short), (" (long)", long_)):
            r = hit[-1] if hit else None
            row[f"iters{suffix}"] = int(r.iters) if r is not None else 0
            row[f"seed-0 miou{suffix}"] = float(r.miou) if r is not None else math.nan
            row[f"last-quarter gain{suffix}"] = last_quarter_gain(r.curve, int(r.iters)) if r is not None else math.nan
        rows.append(row)
    df = pd.DataFrame(rows, columns=cols)
    for suffix in ("", " (long)"):
        df[f"rank{suffix}"] = df[f"seed-0 miou{suffix}"].rank(ascending=False, method="min")
    return df[cols]


def _study_order(runs: pd.DataFrame, order: Sequence[str]) -> tuple[list[str], list[str]]:
    """The models that have runs in ``runs``: those in ``order`` first, then the other study models (as they come),
    then Table 2's variants in the paper's order; and the variants among them (the full row, ``lemore``, is a study
    model, not a variant)."""
    present = list(dict.fromkeys(runs.model))
    table2 = [m for m in ablation_order() if m in present and m != "lemore"]
    models = [m for m in order if m in present] + [m for m in present if m not in order and m not in table2]
    return models + [m for m in table2 if m not in models], table2


def study_times_table(chosen: pd.DataFrame, longer: pd.DataFrame, order: Sequence[str] = ()) -> pd.DataFrame:
    """What each run of a study cost, from the ``timing`` its results file records: one row per run named by its
    stage of studies/camvid/dvc.yaml (``finetune@<model>-<seed>``, ``ablation@<row>-<seed>``, ``long@<model>``),
    the study's models in ``order`` first, then Table 2's rows, then the long runs; the minutes of the training loop
    and of the validation passes over all the processes the run took (a stage cut into resumed processes counts
    each once), the threads it ran at and its core-minutes (minutes x threads); a last row sums them."""
    cols = ["stage", "model", "seed", "iters", "train minutes", "eval minutes", "minutes", "threads", "core-minutes"]
    rows = []
    for kind, runs in (("", chosen), ("long", longer)):
        if runs.empty:
            continue
        models, table2 = _study_order(runs, order)
        for m in models:
            for r in runs[runs.model == m].sort_values("seed").itertuples(index=False):
                total = r.timing.get("total", r.timing) if isinstance(r.timing, dict) else {}
                if "loop_s" not in total:
                    continue  # a run that predates the timing record
                stage = (f"long@{m}" if kind else
                         f"{'ablation' if m in table2 else 'finetune'}@{m}-{r.seed}")
                train, ev = total["loop_s"] / 60, total.get("eval_s", 0.0) / 60
                threads = int(r.timing.get("threads") or 0)
                rows.append({"stage": stage, "model": study_label(m), "seed": str(r.seed), "iters": int(r.iters),
                             "train minutes": train, "eval minutes": ev, "minutes": train + ev,
                             "threads": threads or math.nan, "core-minutes": (train + ev) * threads or math.nan})
    df = pd.DataFrame(rows, columns=cols)
    if len(df):
        total = {"stage": "total", "model": "", "seed": "", "iters": int(df.iters.sum()),
                 **{c: float(df[c].sum()) for c in ("train minutes", "eval minutes", "minutes", "core-minutes")},
                 "threads": math.nan}
        df = pd.concat([df, pd.DataFrame([total], columns=cols)], ignore_index=True)
    return df


def rank_changes(schedules: pd.DataFrame) -> list[tuple[str, str]]:
    """The pairs of models (display names, the one ahead at the study's schedule first) whose order is the other way
    round at the longer schedule (:func:`study_schedule_table`); pairs missing a value at either are skipped."""
    both = schedules.dropna(subset=["seed-0 miou", "seed-0 miou (long)"]).to_dict("records")
    return [(a["model"], b["model"]) for a in both for b in both
            if a["seed-0 miou"] > b["seed-0 miou"] and a["seed-0 miou (long)"] < b["seed-0 miou (long)"]]


def study_plateau_table(chosen: pd.DataFrame, order: Sequence[str] = ()) -> pd.DataFrame:
    """Every run's learning curve (``miou @<iteration>`` columns) and last-quarter gain, models in ``order`` (then
    the others, Table 2's rows in the paper's order), seeds ascending, and after each model's runs a ``mean`` row:
    the curve and gain averaged over its seeds, ``plateau (< 1.0)`` = "yes" when that mean gain is below
    :data:`PLATEAU_GAIN` (empty when no run has a gain)."""
    plateau = f"plateau (< {PLATEAU_GAIN:.1f})"
    if chosen.empty:
        return pd.DataFrame(columns=["model", "registry", "seed", "iters", "last-quarter gain", plateau])
    models, _ = _study_order(chosen, order)
    its = sorted({int(p["iteration"]) for c in chosen.curve for p in c})
    rows = []
    for m in models:
        runs = chosen[chosen.model == m]
        seed_rows = []
        for r in runs.itertuples(index=False):
            points = {int(p["iteration"]): p.get("miou") for p in r.curve}
            row = {"model": study_label(m), "registry": m, "seed": str(r.seed), "iters": int(r.iters)}
            row.update({f"miou @{it}": float(points[it]) if points.get(it) is not None else math.nan for it in its})
            row["last-quarter gain"], row[plateau] = last_quarter_gain(r.curve, int(r.iters)), ""
            seed_rows.append(row)
        mean = pd.DataFrame(seed_rows).mean(numeric_only=True)
        gain = float(mean["last-quarter gain"])
        rows += seed_rows
        rows.append({"model": study_label(m), "registry": m, "seed": "mean", "iters": int(runs.iters.iloc[0]),
                     **{f"miou @{it}": float(mean[f"miou @{it}"]) for it in its}, "last-quarter gain": gain,
                     plateau: "" if not math.isfinite(gain) else ("yes" if gain < PLATEAU_GAIN else "no")})
    return pd.DataFrame(rows)


def ablation_order() -> list[str]:
    """Table 2's rows as registry names, in the paper's order (the full row is ``lemore``)."""
    by_switch = {v: k for k, v in ABLATION_MODELS.items()}
    return [by_switch[tuple(int(r[c]) for c in SWITCHES)] for _, r in load_table("table2_ablation").iterrows()]


def study_models(chosen: pd.DataFrame, profile: pd.DataFrame) -> list[str]:
    """The models of a study, Table 2's variants left out: those profile.json marks ``in_study``, then any other
    model with runs (sorted)."""
    variants = set(ABLATION_ROWS) | set(ABLATION_MODELS)
    variants.discard("lemore")
    listed = [m for m in profile[profile.in_study.astype(bool)].model] if not profile.empty else []
    ran = sorted(set(chosen.model)) if not chosen.empty else []
    return [m for m in dict.fromkeys(listed + ran) if m not in variants]


def camvid_tables(results_dir: str | os.PathLike = "results/camvid", models: Sequence[str] | None = None,
                  dataset: str = "camvid", long_dir: str | os.PathLike | None = None) -> dict[str, pd.DataFrame]:
    """The CamVid study's tables, from ``<results_dir>/metrics`` (every run) and ``<results_dir>/profile.json``.

    ``camvid_models`` (:func:`study_models_table`; ``models`` default: :func:`study_models`), ``camvid_ablation``
    (:func:`study_ablation_table`), ``camvid_gains`` (:func:`study_gains_table`), ``camvid_pairs``
    (:func:`study_pairs_table`: LeMoRe against each other model) and ``camvid_plateau``
    (:func:`study_plateau_table`), and ``camvid_schedules`` (:func:`study_schedule_table`) with the seed-0 runs at the
    longer schedule from ``<long_dir>/metrics`` (default ``<results_dir>/long``), and ``camvid_times``
    (:func:`study_times_table`: every run's minutes). Rows without runs keep empty cells; nothing is filled in from
    the papers.
    """
    from lemore.config import recipe
    from lemore.data import DATASETS

    chosen = study_runs(results_dir, dataset)
    profile, _ = load_study_profile(results_dir)
    if models is None:
        models = study_models(chosen, profile)
    d = recipe(dataset).data
    # the profile's input size; without one, the recipe's evaluation size (scale = (long, short), a landscape set)
    size = profile["size"].iloc[0] if not profile.empty else f"{min(d.scale)}x{max(d.scale)}"
    table = study_models_table(chosen, profile, models, DATASETS[dataset].CLASSES, size)
    ablation = study_ablation_table(chosen, dataset)
    longer = study_runs(Path(results_dir, "long") if long_dir is None else long_dir, dataset)
    return {f"{dataset}_models": table, f"{dataset}_ablation": ablation,
            f"{dataset}_gains": study_gains_table(ablation, chosen, dataset),
            f"{dataset}_pairs": study_pairs_table(chosen, table, size),
            f"{dataset}_plateau": study_plateau_table(chosen, list(table.registry) if len(table) else []),
            f"{dataset}_schedules": study_schedule_table(
                chosen, longer, list(table.registry) if len(table) else []),
            f"{dataset}_times": study_times_table(chosen, longer, list(table.registry) if len(table) else [])}


def write_camvid_tables(built: dict[str, pd.DataFrame], out_dir: str | os.PathLike) -> list[Path]:
    """:func:`write_table` for each table of ``built`` (captions: :data:`CAMVID_CAPTIONS`) and an ``index.md``."""
    written = []
    index = ["# The CamVid study", "",
             "Built by `notebooks/camvid.ipynb` from `results/camvid/` only: the runs' results files (`metrics/`), "
             "the profile at 360x480 (`profile.json`) and, for the visual comparison, the seed-0 weights "
             "(`weights/`) on the CamVid val images. Every model is trained "
             "from scratch (no ImageNet weights) with the same recipe but the learning rate: each model at its best "
             "of one declared grid (lemore.config.SEARCHED_LRS, chosen on val by studies/camvid/search.py); Table 2's "
             "rows all at LeMoRe's. Columns marked `(paper)` or `(published)` are "
             "ADE20K figures from the papers, for reference; `(ours)` and the unmarked accuracy columns are "
             "measured here on CamVid val. Empty cells: not run.", ""]
    for name, df in built.items():
        written += write_table(df, out_dir, name, CAMVID_CAPTIONS.get(name, name))
        index.append(f"- [{name}]({name}.md): {CAMVID_CAPTIONS.get(name, name)}")
    write_text_atomic(Path(out_dir) / "index.md", "\n".join(index) + "\n")
    return written + [Path(out_dir) / "index.md"]


# --------------------------------------------------------------------------------------------- profiling
def profile_plan(models: list[str], datasets: list[str], all_models: list[str],
                 paper_tables: bool = True) -> list[tuple[str, tuple[int, int], int, bool]]:
    """What a profile stage measures, as ``(model, (H, W), num_classes, with_latency)``, without duplicates.

    With ``paper_tables`` (the ``profile`` stage):

    * every model in ``all_models`` at the paper's Table 1 setting (512x512, 150 classes; LeMoRe* 448x448, the
      ImageNet classifier 224x224 / 1000 classes), with latency;
    * the models of each other paper table at that table's crop and classes, without latency (those tables have
      no latency column).

    And for each of ``datasets`` (the ``profile@<dataset>`` stages): each fine-tuned ``model`` at the dataset
    recipe's crop and class count, with latency (the dataset's table of our runs and its bubble plot).
    """
    from lemore.config import recipe

    plan: dict[tuple[str, tuple[int, int], int], bool] = {}

    def add(model: str, size: tuple[int, int], k: int, latency: bool) -> None:
        key = (model, tuple(size), k)
        plan[key] = plan.get(key, False) or latency

    if paper_tables:
        t1, cls = SPECS["table1_ade20k"], SPECS["table_imagenet"]
        for m in all_models:
            if m in cls.models:
                add(m, cls.size, cls.num_classes, True)
            else:
                add(m, t1.size_of(m), t1.num_classes, True)
        for spec in SPECS.values():
            for m in spec.models:
                if m in all_models:
                    add(m, spec.size_of(m), spec.num_classes, False)
    for ds in datasets:
        d = recipe(ds).data
        for m in models:
            add(m, tuple(d.crop_size), d.num_classes, True)
    return [(m, s, k, lat) for (m, s, k), lat in plan.items()]


# ------------------------------------------------------------------------------------------------ writing
#: Columns not shown with 2 decimals (a p-value of 0.004 would read "0.00").
_COLUMN_FORMATS = {"welch p (ours)": "{:.2g}"}


def _fmt(v: Any, na: str, fmt: str | None = None) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return na
        return fmt.format(v) if fmt else f"{v + 0.0:.2f}".replace("-0.00", "0.00")  # no "-0.00" for a tiny Δ
    if v is None or (isinstance(v, str) and not v):
        return na if v is None else ""
    return str(v)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(s: str) -> str:
    out = "".join(_LATEX_ESCAPES.get(c, c) for c in s)
    return out.replace("Δ", r"$\Delta$")


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table; numbers with 2 decimals, missing values as "–"."""
    if df.empty:
        return "_(no rows)_\n"
    cells = df.apply(lambda col: col.map(lambda v: _fmt(v, "–", _COLUMN_FORMATS.get(col.name))))
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    align = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns) + "|"
    body = ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join([head, align, *body]) + "\n"


def to_latex(df: pd.DataFrame, caption_text: str = "", label: str = "") -> str:
    """A booktabs ``table`` (pandas' Styler needs jinja2, which the project depends on through it)."""
    cells = df.apply(lambda col: col.map(lambda v: latex_escape(_fmt(v, "--", _COLUMN_FORMATS.get(col.name)))))
    cells.columns = [latex_escape(str(c)) for c in df.columns]
    return cells.to_latex(index=False, escape=False, caption=latex_escape(caption_text) or None,
                          label=label or None, column_format="".join(
                              "r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns))


def write_table(df: pd.DataFrame, out_dir: str | os.PathLike, name: str, caption_text: str = "") -> list[Path]:
    """Write ``<out_dir>/<name>.csv``, ``.md`` and ``.tex`` atomically; returns the paths."""
    out_dir = Path(out_dir)
    paths = [out_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex")]
    write_text_atomic(paths[0], df.to_csv(index=False, float_format="%.4g"))
    md = (f"**{caption_text}**\n\n" if caption_text else "") + to_markdown(df)
    write_text_atomic(paths[1], md)
    write_text_atomic(paths[2], to_latex(df, caption_text, f"tab:{name}"))
    return paths


def write_all(tables: dict[str, pd.DataFrame], out_dir: str | os.PathLike) -> list[Path]:
    """Write every table (see :func:`write_table`) and an ``index.md`` that lists them with their captions."""
    written = []
    index = ["# Tables: the paper vs this reproduction", "",
             "Built by `notebooks/results.ipynb` from the files under `results/` only. Columns `(paper)` are the "
             "paper's numbers (`lemore.paper`), `(ours)` are measured here, `Δ` = ours - paper; empty = not run. "
             "Table 1's `(published)` columns hold the figures its `source` column names (the paper's, or a peer's "
             "own).", ""]
    for name, df in tables.items():
        written += write_table(df, out_dir, name, caption(name))
        index.append(f"- [{name}]({name}.md): {caption(name)}")
    write_text_atomic(Path(out_dir) / "index.md", "\n".join(index) + "\n")
    return written + [Path(out_dir) / "index.md"]


def bubble_frame(dataset: str, runs: pd.DataFrame, profile: pd.DataFrame, include_paper: bool = True) -> pd.DataFrame:
    """Points of the mIoU-vs-params bubble plot for ``dataset``: ours (measured) and, where the paper has a table
    for the dataset with params (ADE20K), the paper's (``source == "paper"``): its lightweight models and the
    rows we reproduced.

    Columns: label, source ("ours" | "paper"), miou, miou_std (ours: sample std over the seeds of :func:`best_runs`,
    NaN for one seed or the paper), n (seeds; NaN for the paper), params_m, gflops, latency_ms, size.
    GFLOPs / latency of our points are measured at the dataset's recipe crop (``profile_plan``).
    """
    from lemore.config import recipe

    rows = []
    if dataset in {s.dataset for s in SPECS.values() if s.dataset != "imagenet"} or dataset == "synthetic":
        d = recipe(dataset).data
        size, k = tuple(d.crop_size), d.num_classes
    else:
        raise ValueError(f"no bubble plot for dataset {dataset!r}")
    hit = runs[runs.dataset == dataset] if not runs.empty else runs
    for _, r in hit.iterrows():
        # params: of the trained model itself (its results JSON); cost: profiled at the dataset's recipe crop
        params = r.params_m if pd.notna(r.params_m) else _profile_value(profile, r.model, size, k, "params_m")
        rows.append(dict(label=display_name(r.model), source="ours", miou=r.miou,
                         miou_std=r.get("miou_std", math.nan), n=r.get("n", math.nan), params_m=params,
                         gflops=_profile_value(profile, r.model, size, k, "gflops"),
                         latency_ms=_profile_value(profile, r.model, size, k, "latency_ms"),
                         size=f"{size[0]}x{size[1]}"))
    if include_paper:
        for name, spec in SPECS.items():
            if spec.dataset != dataset or "params_m" not in load_table(name).columns or name == "table2_ablation":
                continue
            ours_rows = {tuple(v.values()) for m, v in spec.models.items() if m in set(hit.model)}
            for _, p in load_table(name).iterrows():
                # the paper's lightweight models (its Fig. 1) and the rows we reproduced
                if p.get("group", "lightweight") != "lightweight" and (p["model"], p["encoder"]) not in ours_rows:
                    continue
                enc = p.get("encoder", p["model"])
                label = p["model"] if enc == p["model"] else f"{p['model']} ({enc})"
                rows.append(dict(label=label, source="paper", miou=p["miou"], miou_std=math.nan, n=math.nan,
                                 params_m=p["params_m"],
                                 gflops=p.get("gflops", math.nan), latency_ms=p.get("latency_ms", math.nan),
                                 size=f"{spec.size[0]}x{spec.size[1]}"))
    return pd.DataFrame(rows, columns=["label", "source", "miou", "miou_std", "n", "params_m", "gflops", "latency_ms",
                                       "size"])
