"""Latency of LeMoRe against its peers on this machine's CPU, side by side (issues 6 and 13).

    make bench                                      # this, as set up by the Makefile: ~4 min on 2 cores
    python benchmarks/latency.py                    # the same
    python benchmarks/latency.py --runs 5           # quick look
    python benchmarks/latency.py --outputs logits labels --reference   # without the 150-channel resize,
                                                                      # with the models as built (unfused)
    python -m lemore profile --compare              # the same comparison from the package CLI

LeMoRe (512x512), LeMoRe* (448x448, Table 1's row), SegFormer-B0, LR-ASPP MobileNetV3-Large and the other
registered peers (512x512), batch 1, 150 classes, in one process: PyTorch eager and ONNX Runtime, with 1 thread
and with all cores; network only (logits at the decoder stride) and end to end (the label map at the input size
through ``lemore.predict`` / the ``--labels`` export), and the models' own output (150 logits resized to the input
size, no argmax). Within a setting every model runs once per repetition,
round-robin, so machine noise hits all alike; medians of the timed runs. Each model runs in its fastest form
(``fuse_for_inference``; eager in the faster of NCHW and channels_last). The headline, against the issue's goals,
is LeMoRe's ratio to LR-ASPP in ONNX Runtime with 1 thread. The protocol (CPU, cores, threads, runs, warm-up,
versions, ORT graph optimisation, allocator, load average, command) is written into both result files.

Writes results/benchmarks/latency.json and latency.md (atomically).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lemore.profiling import (COMPARE_MODELS, OUTPUTS, compare_latency, compare_models, compare_to_markdown,
                              reuse_freed_memory, write_json_atomic, write_text_atomic)

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=15, help="timed repetitions per setting (each runs every model)")
    p.add_argument("--warmup", type=int, default=2, help="untimed repetitions before them")
    p.add_argument("--slow-runs", type=int, default=5,
                   help="timed runs of models over 4x slower than LR-ASPP (SegFormer-B0), spread over the repetitions")
    p.add_argument("--backends", nargs="+", choices=["ort", "eager"], default=["ort", "eager"])
    p.add_argument("--threads", nargs="+", default=["1", "all"], help="thread counts: integers or 'all'")
    p.add_argument("--outputs", nargs="+", choices=list(OUTPUTS), default=["logits", "labels", "output"],
                   help="what is timed: " + "; ".join(f"{k}: {v}" for k, v in OUTPUTS.items()))
    p.add_argument("--multi-runs", type=int, default=None,
                   help="timed repetitions with more than one thread (default: half of --runs, at least 5)")
    p.add_argument("--multi-outputs", nargs="+", choices=list(OUTPUTS), default=["logits", "labels"],
                   help="outputs timed with more than one thread")
    p.add_argument("--models", nargs="+", default=None, metavar="NAME=HxW",
                   help="override the model list, e.g. lemore=512x512 lraspp_mobilenet_v3_large=512x512 "
                        "(must include lraspp_mobilenet_v3_large, the ratios' denominator); default: "
                        + " ".join(f"{n}={h}x{w}" for n, (h, w) in COMPARE_MODELS) + " (those registered)")
    p.add_argument("--reference", action="store_true", help="also time the models as built (unfused), logits")
    p.add_argument("--default-malloc", action="store_true",
                   help="keep glibc's allocator defaults (every forward page-faults its large outputs anew)")
    p.add_argument("--ort-spinning", action="store_true", help="let ORT worker threads spin-wait (its default)")
    p.add_argument("--out-dir", default=str(ROOT / "results" / "benchmarks"))
    args = p.parse_args(argv)

    start = time.perf_counter()
    if not args.default_malloc:
        reuse_freed_memory()
    models = compare_models()
    if args.models:
        try:
            models = tuple((m.split("=")[0], tuple(int(v) for v in m.split("=")[1].split("x"))) for m in args.models)
        except (IndexError, ValueError):
            p.error(f"--models {' '.join(args.models)}: write each as NAME=HxW, e.g. lemore=512x512")
    try:
        threads = tuple(None if t == "all" else int(t) for t in args.threads)
    except ValueError:
        p.error(f"--threads {' '.join(args.threads)}: integers or 'all'")
    try:
        result = compare_latency(models, backends=tuple(args.backends), threads=threads, outputs=tuple(args.outputs),
                                 runs=args.runs, warmup=args.warmup, slow_runs=args.slow_runs,
                                 multi_runs=args.multi_runs, multi_outputs=tuple(args.multi_outputs),
                                 reference=args.reference, ort_spinning=args.ort_spinning,
                                 log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except ValueError as e:
        p.error(str(e))
    result["protocol"]["command"] = "python benchmarks/latency.py " + " ".join(argv)
    result["protocol"]["wall_time_s"] = round(time.perf_counter() - start, 1)
    text = compare_to_markdown(result)
    out = Path(args.out_dir)
    write_json_atomic(out / "latency.json", result)
    write_text_atomic(out / "latency.md", text)
    print(text)
    print(f"wrote {out / 'latency.json'} and latency.md in {result['protocol']['wall_time_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
