"""What a study's pipeline does besides training: export a run's weights, profile the models at the study's size.

    python -m lemore.study weights results/camvid/metrics/lemore/seed0 --out results/camvid/weights/lemore.safetensors
    python -m lemore.study profile --models lemore segformer_b0 lraspp_mobilenet_v3_large --size 360 480 \\
        --num-classes 11 --out results/camvid/profile.json

``weights``: the finished run named by the results JSON in a folder (``<results_dir>/<run name>.json``, written by the
engine) is read from its checkpoint (the JSON's ``checkpoint``, weights only) and written as ``.safetensors`` with
its training config in the metadata (:func:`lemore.checkpoint.save_weights`; tensors of two or more dimensions in
float16). The exported weights are evaluated again on the validation split when the data is there (``--evaluate``),
so that the file's own mIoU is on record beside the run's (float16 rounding moves it by a few hundredths at most),
in ``<out>.json``. The checkpoint lives in the run directory (``runs/``), which a fresh clone does not have: the
stage only runs where the study was trained.

``profile``: parameters, GFLOPs (fvcore MACs, attention matmuls counted) and batch-1 latency of each model on a frame of
one size, with one class count, built for the size it runs at (:func:`deploy_size`: the frame padded up to a multiple
of 64 for LeMoRe and TopFormer-T, whose exported graphs need it; LeMoRe's view matrices resampled to it, as the
trained weights load);
latency with ONNX Runtime, 1 thread, the network's logits, every model interleaved in one process
(:func:`lemore.profiling.compare_latency`), and the ratio to LR-ASPP MobileNetV3-Large of the same run. The CPU is
named in the output; milliseconds from two machines are not comparable, ratios within one run are.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from lemore.profiling import write_json_atomic, write_text_atomic


def results_file(folder: str | Path) -> Path:
    """The one results JSON (``<run name>.json``) in a run's results folder; a clear error otherwise."""
    files = sorted(Path(folder).glob("*.json"))
    if len(files) != 1:
        raise FileNotFoundError(f"{folder}: expected the one results file of a finished run (<run name>.json), "
                                f"found {[f.name for f in files] or 'none'}")
    return files[0]


def export_weights(folder: str | Path, out: str | Path, *, evaluate: bool = True, data_root: str = "") -> dict[str, Any]:
    """Export the run of ``folder`` to ``out`` (safetensors + config); returns what ``<out>.json`` records."""
    from lemore.checkpoint import load_weights, save_weights

    res = json.loads(results_file(folder).read_text())
    ckpt = Path(res["checkpoint"])
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} (the checkpoint of {res['run_name']}, named in {results_file(folder)}) does "
                                "not exist: the weights are exported where the run was trained")
    state = load_weights(ckpt)
    out = save_weights(state, out, config=res["config"], run_name=res["run_name"], source=str(ckpt))
    info: dict[str, Any] = {"weights": str(out), "run_name": res["run_name"], "model": res["config"]["model"]["name"],
                            "run_val_miou": res["metrics"]["miou"], "params_m": res.get("params_m"),
                            "bytes": out.stat().st_size}
    if evaluate:
        info["file_val_miou"] = evaluate_weights(out, data_root)["miou"]
    write_json_atomic(Path(f"{out}.json"), info)
    return info


def evaluate_weights(path: str | Path, data_root: str = "", split: str = "val") -> dict[str, Any]:
    """The metrics of a ``.safetensors`` file of :func:`lemore.checkpoint.save_weights` on ``split`` (CPU)."""
    from lemore.data import build_dataset
    from lemore.data.transforms import eval_transform
    from lemore.engine.evaluate import eval_loader
    from lemore.engine.evaluate import evaluate as run_evaluation
    from lemore.viz import load_weights_model

    model, cfg = load_weights_model(path, data_root)
    ds = build_dataset(cfg.data, split, transform=eval_transform(cfg.data), cache=True)
    return run_evaluation(model, eval_loader(ds, cfg, device="cpu"), cfg, class_names=list(ds.classes))


#: Model families whose exported graph needs the input's height and width to be multiples of a number: LeMoRe's
#: view matrices and TopFormer-T's token pooling work at 1/64 (ONNX has no adaptive pooling to a size that does not
#: divide the input). A frame of another size is padded up to it, which is what deploying them at that size costs.
INPUT_MULTIPLE = {"lemore": 64, "topformer": 64}


def deploy_size(model: str, size: tuple[int, int]) -> tuple[int, int]:
    """The input size ``model`` runs a ``size`` frame at: ``size`` padded up to :data:`INPUT_MULTIPLE` of its family."""
    m = INPUT_MULTIPLE.get(model.split("_", 1)[0], 1)
    return (-(-size[0] // m) * m, -(-size[1] // m) * m)


def profile(models: list[str], size: tuple[int, int], num_classes: int, *, runs: int = 15,
            warmup: int = 2) -> dict[str, Any]:
    """Params, GFLOPs and ORT 1-thread latency of ``models`` on a ``size`` frame, each at :func:`deploy_size` (see
    the module docstring)."""
    from lemore.export import build_model
    from lemore.profiling import COMPARE_REFERENCE, compare_latency, count_params

    names = list(dict.fromkeys([*models, COMPARE_REFERENCE]))
    start = time.perf_counter()
    lat = compare_latency([(n, deploy_size(n, size)) for n in names], num_classes=num_classes, backends=("ort",),
                          threads=(1,),
                          outputs=("logits",), runs=runs, warmup=warmup,
                          log=lambda msg: print(msg, file=sys.stderr, flush=True))
    timing = lat["summary"]["ort, 1 thread | logits"]
    rows = []
    for name in names:
        run_size = deploy_size(name, size)
        rows.append({"model": name, "input_size": list(size), "run_size": list(run_size), "num_classes": num_classes,
                     "params_m": count_params(build_model(name, num_classes, run_size)) / 1e6,
                     "gflops": lat["gflops"][name], "latency_ms": timing[name]["median_ms"],
                     "latency_ratio": timing[name]["ratio"], "in_study": name in models})
    protocol = {**lat["protocol"], "what": f"ONNX Runtime, 1 thread, batch 1, the network's logits at the decoder "
                f"stride for a {size[0]}x{size[1]} frame, padded to a multiple of 64 for the models whose graph needs "
                "it (run size); medians of interleaved runs; ratio = the model's time / LR-ASPP "
                "MobileNetV3-Large's in the same run", "wall_time_s": round(time.perf_counter() - start, 1)}
    return {"protocol": protocol, "rows": rows}


def profile_markdown(result: dict[str, Any]) -> str:
    p = result["protocol"]
    r0 = result["rows"][0]
    lines = [f"# Models at {r0['input_size'][0]}x{r0['input_size'][1]}, {r0['num_classes']} classes", "",
             f"{p['what']}. CPU: {p.get('cpu', '?')}.", "",
             "| model | run at | params (M) | GFLOPs | latency (ms) | ratio to LR-ASPP |", "|---|---|--:|--:|--:|--:|"]
    for r in result["rows"]:
        h, w = r.get("run_size", r["input_size"])
        lines.append(f"| {r['model']} | {h}x{w} | {r['params_m']:.2f} | {r['gflops']:.2f} | {r['latency_ms']:.1f} | "
                     f"{r['latency_ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def _cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lemore.study", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("weights", help="export a finished run's weights (safetensors, config in the metadata)")
    w.add_argument("folder", help="the run's results folder (holding <run name>.json)")
    w.add_argument("--out", required=True, help="the .safetensors file to write")
    w.add_argument("--no-evaluate", action="store_true", help="do not evaluate the exported file on val")
    w.add_argument("--data-root", default="", help="the dataset folder for that evaluation (default: the run's)")
    pr = sub.add_parser("profile", help="params, GFLOPs and ORT latency of models at one size")
    pr.add_argument("--models", nargs="+", help="registry names (default: --params' models)")
    pr.add_argument("--params", default=None, help="a study's params.yaml: models and its profile section")
    pr.add_argument("--size", nargs=2, type=int, metavar=("H", "W"))
    pr.add_argument("--num-classes", type=int, default=None)
    pr.add_argument("--runs", type=int, default=None)
    pr.add_argument("--out", required=True, help="JSON to write (and the same table as .md beside it)")
    args = p.parse_args(argv)
    if args.cmd == "weights":
        if not str(args.out).endswith(".safetensors"):
            p.error(f"--out {args.out}: the weights file must end in .safetensors")
        info = export_weights(args.folder, args.out, evaluate=not args.no_evaluate, data_root=args.data_root)
        print(json.dumps(info, indent=2))
        return 0
    import yaml

    params = yaml.safe_load(Path(args.params).read_text()) if args.params else {}
    section = params.get("profile", {})
    models = args.models or params.get("models")
    size = tuple(args.size or section.get("size") or ())
    num_classes = args.num_classes or section.get("num_classes")
    if not models or len(size) != 2 or not num_classes:
        p.error("give --models, --size H W and --num-classes, or a --params file with models and a profile section "
                "(size, num_classes)")
    from lemore.launch import segmentation_models

    unknown = sorted(set(models) - set(segmentation_models()))
    if unknown:
        p.error(f"unknown models {unknown}; choose from {segmentation_models()}")
    result = profile(list(models), (int(size[0]), int(size[1])), int(num_classes),
                     runs=args.runs or section.get("runs", 15), warmup=section.get("warmup", 2))
    out = Path(args.out)
    write_json_atomic(out, result)
    write_text_atomic(out.with_suffix(".md"), profile_markdown(result))
    print(profile_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_cli())
