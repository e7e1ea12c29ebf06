"""Training throughput of LeMoRe against SegFormer-B0 (and optionally LR-ASPP) at the same batch and crop.

    python benchmarks/train_throughput.py                                   # batch 4, 256x256 crops, ~4 min on 2 cores
    python benchmarks/train_throughput.py --batch 8 --crop 512 512 --iters 20   # the paper's crop, on a real machine

One training iteration = forward in train mode, pixel-wise cross-entropy (ignore_index 255) on the logits at the
crop size, backward, AdamW step, zero_grad: what ``lemore.engine`` does per iteration, without data loading
(random images and labels, fixed for the run) so that only the model is timed. Iterations of the models are
interleaved round-robin (machine noise hits all alike); the median iteration time after warm-up gives the
iterations/s. LeMoRe is built for the crop (its view matrices have the crop's size, as in training).

Writes results/benchmarks/train_throughput.json and .md (atomically).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lemore.profiling import available_cores, count_params, cpu_model_name, write_json_atomic, write_text_atomic
from lemore.registry import create_model

ROOT = Path(__file__).resolve().parents[1]


def build(name: str, num_classes: int, crop: tuple[int, int]) -> torch.nn.Module:
    kw = {"img_size": crop} if name.startswith("lemore") else {}
    return create_model(name, num_classes=num_classes, **kw).train()


def measure(names: list[str], *, batch: int, crop: tuple[int, int], iters: int, warmup: int, num_classes: int,
            threads: int, lr: float = 6e-5) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    x = torch.randn(batch, 3, *crop)
    y = torch.randint(0, num_classes, (batch, *crop))
    y[:, :8] = 255  # some ignored pixels, as in real labels
    steps = {}
    params = {}
    for name in names:
        model = build(name, num_classes, crop)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        params[name] = count_params(model)

        def step(model=model, opt=opt):
            loss = F.cross_entropy(model(x), y, ignore_index=255)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()

        steps[name] = step
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times = {n: [] for n in names}
    for i in range(iters):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t0 = time.perf_counter()
            loss = steps[name]()
            times[name].append(time.perf_counter() - t0)
            assert torch.isfinite(torch.tensor(loss)), f"{name}: loss {loss}"
    rows = []
    for name in names:
        med = statistics.median(times[name])
        rows.append({"model": name, "params_m": params[name] / 1e6, "median_s_per_iter": med,
                     "iters_per_s": 1 / med, "images_per_s": batch / med,
                     "p10_s": sorted(times[name])[int(0.1 * (iters - 1))],
                     "p90_s": sorted(times[name])[int(0.9 * (iters - 1))]})
    return {"rows": rows}


def to_markdown(result: dict) -> str:
    p = result["protocol"]
    lines = ["# Training throughput", "",
             f"Batch {p['batch']}, crop {p['crop'][0]}x{p['crop'][1]}, {p['num_classes']} classes, {p['threads']} "
             f"thread(s) on {p['cpu']}; median of {p['iters']} interleaved iterations after {p['warmup']} warm-up.", "",
             "| model | params (M) | s / iter | iters/s | images/s | ratio to segformer_b0 |",
             "|---|---:|---:|---:|---:|---:|"]
    ref = {r["model"]: r for r in result["rows"]}.get("segformer_b0")
    for r in result["rows"]:
        ratio = f"{r['iters_per_s'] / ref['iters_per_s']:.2f}" if ref else "-"
        lines.append(f"| {r['model']} | {r['params_m']:.2f} | {r['median_s_per_iter']:.3f} | {r['iters_per_s']:.2f} | "
                     f"{r['images_per_s']:.2f} | {ratio} |")
    lines += ["", "## Protocol", ""] + [f"- **{k}**: {v}" for k, v in p.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lemore", "segformer_b0"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", nargs=2, type=int, default=[256, 256], metavar=("H", "W"))
    p.add_argument("--iters", type=int, default=10, help="timed iterations per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--num-classes", type=int, default=150)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--out-dir", default=str(ROOT / "results" / "benchmarks"))
    args = p.parse_args(argv)
    if args.batch < 2:
        raise SystemExit("--batch must be at least 2: BatchNorm over LeMoRe's 1/64 tokens needs >1 value in training")
    threads = args.threads or available_cores()
    crop = tuple(args.crop)
    result = measure(args.models, batch=args.batch, crop=crop, iters=args.iters, warmup=args.warmup,
                     num_classes=args.num_classes, threads=threads)
    ips = {r["model"]: r["iters_per_s"] for r in result["rows"]}
    if "lemore" in ips and "segformer_b0" in ips:
        result["lemore_over_segformer_iters_per_s"] = ips["lemore"] / ips["segformer_b0"]
    result["protocol"] = {
        "what": "training iterations per second: forward (train mode) + cross-entropy at crop size + backward + "
                "AdamW step + zero_grad; random data held fixed (no data loading); models interleaved round-robin",
        "batch": args.batch, "crop": list(crop), "num_classes": args.num_classes, "iters": args.iters,
        "warmup": args.warmup, "threads": threads, "cpu": cpu_model_name(), "cores": available_cores(),
        "torch": torch.__version__, "dtype": "float32", "optimizer": "AdamW(lr=6e-5, weight_decay=0.01)",
        "load_average": list(os.getloadavg()),
        "command": "python benchmarks/train_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    text = to_markdown(result)
    out = Path(args.out_dir)
    write_json_atomic(out / "train_throughput.json", result)
    write_text_atomic(out / "train_throughput.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
