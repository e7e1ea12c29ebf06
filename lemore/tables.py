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

Which runs stand for a (dataset, model) pair when there are several: those of the setting with the most iterations
(ties broken by the run name, last in sort order, so the choice never depends on file times), and within that setting
every seed: accuracy columns are the mean over the seeds, with ``<metric>_std`` (sample standard deviation, empty for
one seed) and ``n`` (the number of seeds) beside them (:func:`best_runs`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    Columns: run_name, dataset, model, iters, batch_size, crop, seed, miou, aacc, macc, miou59, miou60, num_images,
    params_m, checkpoint, path, per_class_iou (a dict). Empty (with these columns) when there is no run yet.
    """
    cols = ["run_name", "dataset", "model", "iters", "batch_size", "crop", "seed", "miou", "aacc", "macc", "miou59",
            "miou60", "num_images", "params_m", "checkpoint", "path", "per_class_iou"]
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
            crop=f"{h}x{w}", seed=int(cfg["train"].get("seed", 0)), miou=m.get("miou"), aacc=m.get("aacc"), macc=m.get("macc"), miou59=m.get("miou59"),
            miou60=m.get("miou60"), num_images=m.get("num_images"), params_m=obj.get("params_m"),
            checkpoint=obj.get("checkpoint"), path=str(path), per_class_iou=m.get("per_class_iou") or {}))
    df = pd.DataFrame(rows, columns=cols)
    for c in ("miou", "aacc", "macc", "miou59", "miou60", "params_m"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


#: Accuracy columns averaged over seeds by :func:`best_runs` (each also gets ``<column>_std``).
SEED_METRICS = ("miou", "aacc", "macc", "miou59", "miou60")
#: What makes two runs of a (dataset, model) the same setting, seeds aside.
SETTING = ("dataset", "model", "iters", "batch_size", "crop")


def best_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model): its setting with the most iterations (then the last run name), the accuracy
    averaged over that setting's seeds (see the module docstring).

    Adds ``<metric>_std`` for :data:`SEED_METRICS` (sample standard deviation, NaN for one seed), ``n`` (seeds),
    ``seeds`` ("0,1,2") and ``per_class_iou`` averaged over the seeds; ``run_name``, ``checkpoint`` and ``path`` are
    those of the lowest seed (the run the figures show).
    """
    if runs.empty:
        return runs.assign(**{f"{m}_std": pd.Series(dtype=float) for m in SEED_METRICS}, n=pd.Series(dtype=int),
                           seeds=pd.Series(dtype=str))
    ordered = runs.sort_values(["dataset", "model", "iters", "run_name"])
    chosen = ordered.groupby(["dataset", "model"], as_index=False).tail(1)[list(SETTING)]
    rows = []
    for _, setting in chosen.iterrows():
        same = runs[(runs[list(SETTING)] == setting.values).all(axis=1)].sort_values(["seed", "run_name"])
        same = same.drop_duplicates("seed", keep="last")  # a seed run twice (two names): the last name
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


# ------------------------------------------------------------------------------------------ the proxy study
PROXY_CAPTIONS = {
    "proxy_models": "Synthetic proxy: LeMoRe and its peers, several seeds each (proxy mIoU = mean over the seeds, std "
                    "= their sample standard deviation, n = seeds), beside the ADE20K mIoU their authors published; "
                    "params and GFLOPs measured here at 512x512 with 150 classes",
    "proxy_ablation": "Synthetic proxy: the rows of the paper's Table 2 (ADE20K columns are the paper's), several "
                      "seeds each; the full model's row is LeMoRe's runs",
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


def proxy_tables(results_dir: str | os.PathLike = "results/proxy",
                 profile_dir: str | os.PathLike = "results") -> dict[str, pd.DataFrame]:
    """The proxy study's tables from ``<results_dir>/metrics`` (its runs) and ``<profile_dir>/profile`` (params and
    GFLOPs at the paper's 512x512 / 150-class setting, written by the default pipeline's profile_tables stage).

    ``proxy_models``: every model of the study but the Table 2 variants, sorted by proxy mIoU; ``proxy_ablation``:
    Table 2's rows in the paper's order, the paper's ADE20K figures beside the proxy's. A model without runs keeps
    empty cells.
    """
    runs = best_runs(load_runs(results_dir))
    profile = load_profile(profile_dir)
    published = published_ade20k_miou()

    def proxy_cells(model: str) -> dict[str, Any]:
        hit = runs[runs.model == model] if not runs.empty else runs
        if hit.empty:
            return {"proxy miou": math.nan, "proxy miou std": math.nan, "n": 0, "seeds": "", "iters": math.nan}
        r = hit.iloc[-1]
        return {"proxy miou": r.miou, "proxy miou std": r.miou_std, "n": int(r.n), "seeds": r.seeds,
                "iters": int(r.iters)}

    def cost(model: str) -> dict[str, float]:
        return {"params_m": _profile_value(profile, model, (512, 512), 150, "params_m"),
                "gflops (512x512)": _profile_value(profile, model, (512, 512), 150, "gflops")}

    ablation = set(ABLATION_ROWS) - {"lemore_tfl_ca_na"}
    models = [m for m in sorted(set(runs.model)) if m not in ablation] if not runs.empty else []
    rows = []
    for m in models:
        miou, source = published.get(m, (math.nan, ""))
        rows.append({"model": display_name(m), **proxy_cells(m), **cost(m), "ade20k miou (published)": miou,
                     "source": source, "registry": m})
    models_df = pd.DataFrame(rows, columns=["model", "proxy miou", "proxy miou std", "n", "seeds", "iters", "params_m",
                                            "gflops (512x512)", "ade20k miou (published)", "source", "registry"])
    models_df = models_df.sort_values("proxy miou", ascending=False, kind="stable").reset_index(drop=True)

    paper = load_table("table2_ablation")
    by_switch = {v: k for k, v in ABLATION_MODELS.items()}
    rows = []
    for _, prow in paper.iterrows():
        model = by_switch[tuple(int(prow[c]) for c in SWITCHES)]
        rows.append({**{c: int(prow[c]) for c in SWITCHES}, "params_m (paper)": float(prow["params_m"]),
                     "gflops (paper)": float(prow["gflops"]), "ade20k miou (paper)": float(prow["miou"]),
                     **proxy_cells(model), "registry": model})
    return {"proxy_models": models_df, "proxy_ablation": pd.DataFrame(rows)}


def write_proxy_tables(built: dict[str, pd.DataFrame], out_dir: str | os.PathLike) -> list[Path]:
    """:func:`write_table` for each proxy table, and an ``index.md`` that lists them."""
    written = []
    index = ["# The synthetic proxy study", "",
             "Built by `notebooks/proxy.ipynb` from `results/proxy/metrics` (the study's runs) and `results/profile`. "
             "Proxy mIoU is measured on the synthetic validation split; columns marked `(paper)` or `(published)` "
             "are ADE20K figures from the papers (`source`). What a synthetic proxy can and cannot tell: README.", ""]
    for name, df in built.items():
        written += write_table(df, out_dir, name, PROXY_CAPTIONS.get(name, name))
        index.append(f"- [{name}]({name}.md): {PROXY_CAPTIONS.get(name, name)}")
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
def _fmt(v: Any, na: str) -> str:
    if isinstance(v, float):
        return na if math.isnan(v) else f"{v + 0.0:.2f}".replace("-0.00", "0.00")  # no "-0.00" for a tiny Δ
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
    cells = df.map(lambda v: _fmt(v, "–"))
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    align = "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns) + "|"
    body = ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join([head, align, *body]) + "\n"


def to_latex(df: pd.DataFrame, caption_text: str = "", label: str = "") -> str:
    """A booktabs ``table`` (pandas' Styler needs jinja2, which the project depends on through it)."""
    cells = df.map(lambda v: latex_escape(_fmt(v, "--")))
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

    Columns: label, source ("ours" | "paper"), miou, params_m, gflops, latency_ms, size.
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
        rows.append(dict(label=display_name(r.model), source="ours", miou=r.miou, params_m=params,
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
                rows.append(dict(label=label, source="paper", miou=p["miou"], params_m=p["params_m"],
                                 gflops=p.get("gflops", math.nan), latency_ms=p.get("latency_ms", math.nan),
                                 size=f"{spec.size[0]}x{spec.size[1]}"))
    return pd.DataFrame(rows, columns=["label", "source", "miou", "params_m", "gflops", "latency_ms", "size"])
