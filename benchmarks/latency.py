"""Latency of LeMoRe against its Table 1 peers on this machine's CPU, side by side (issue 6).

    python benchmarks/latency.py                       # full run: ~17 min on 2 shared cores
    python benchmarks/latency.py --runs 5 --warmup 1   # quick look
    python -m lemore profile --compare                 # the same comparison from the package CLI

LeMoRe (512x512), LeMoRe* (448x448, Table 1's row), SegFormer-B0 and LR-ASPP MobileNetV3-Large (512x512), batch 1,
150 classes, in one process: PyTorch eager and ONNX Runtime, with 1 thread and with all cores. Within a setting
every (model, variant) runs once per repetition, round-robin, so machine noise hits all alike; medians of the
timed runs. Each model is timed as built, after ``fuse_for_inference`` and (eager) in channels_last, and the
ratios use each model's fastest variant: the headline is LeMoRe's ratio to LR-ASPP. The protocol (CPU, threads,
runs, warm-up, versions, ORT graph optimisation, allocator, load average) is written into both result files.

Writes results/benchmarks/latency.json and latency.md (atomically).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lemore.profiling import (COMPARE_MODELS, compare_latency, compare_to_markdown, reuse_freed_memory,
                              write_json_atomic, write_text_atomic)

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20, help="timed repetitions per setting (each runs every case)")
    p.add_argument("--warmup", type=int, default=3, help="untimed repetitions before them")
    p.add_argument("--backends", nargs="+", choices=["ort", "eager"], default=["ort", "eager"])
    p.add_argument("--threads", nargs="+", default=["1", "all"], help="thread counts: integers or 'all'")
    p.add_argument("--models", nargs="+", default=None, metavar="NAME=HxW",
                   help="override the model list, e.g. lemore=512x512 lraspp_mobilenet_v3_large=512x512 "
                        "(must include lraspp_mobilenet_v3_large, the ratios' denominator)")
    p.add_argument("--no-logits", action="store_true", help="skip the forward_logits (no final resize) timings")
    p.add_argument("--default-malloc", action="store_true",
                   help="keep glibc's allocator defaults (every forward page-faults its 157 MB output anew)")
    p.add_argument("--ort-spinning", action="store_true", help="let ORT worker threads spin-wait (its default)")
    p.add_argument("--out-dir", default=str(ROOT / "results" / "benchmarks"))
    args = p.parse_args(argv)

    if not args.default_malloc:
        reuse_freed_memory()
    models = COMPARE_MODELS
    if args.models:
        models = tuple((m.split("=")[0], tuple(int(v) for v in m.split("=")[1].split("x"))) for m in args.models)
    threads = tuple(None if t == "all" else int(t) for t in args.threads)
    result = compare_latency(models, backends=tuple(args.backends), threads=threads, runs=args.runs,
                             warmup=args.warmup, logits=not args.no_logits, ort_spinning=args.ort_spinning,
                             log=lambda msg: print(msg, file=sys.stderr, flush=True))
    result["protocol"]["command"] = "python benchmarks/latency.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = compare_to_markdown(result)
    out = Path(args.out_dir)
    write_json_atomic(out / "latency.json", result)
    write_text_atomic(out / "latency.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
