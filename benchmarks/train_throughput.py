"""Training throughput of LeMoRe against SegFormer-B0 (and optionally LR-ASPP) at the same batch and crop.

    python benchmarks/train_throughput.py                                   # batch 4, 256x256 crops, ~4 min on 2 cores
    python benchmarks/train_throughput.py --batch 8 --crop 512 512 --iters 20   # the paper's crop, on a real machine
    python benchmarks/train_throughput.py --channels-last-ab                # NCHW vs channels_last, every model

One training iteration = forward in train mode, pixel-wise cross-entropy (ignore_index 255) on the logits at the
crop size, backward, AdamW step, zero_grad: what ``lemore.engine`` does per iteration, without data loading
(random images and labels, fixed for the run) so that only the model is timed. Iterations of the models are
interleaved round-robin (machine noise hits all alike); the median iteration time after warm-up gives the
iterations/s. LeMoRe is built for the crop (its view matrices have the crop's size, as in training).

Writes results/benchmarks/train_throughput.json and .md (atomically).

``--channels-last-ab`` answers another question: for every registered segmentation model, is a CPU training step
faster with the model and the images in ``torch.channels_last`` than in the default NCHW layout? Two copies of
each model with the same initial weights, one per layout, step in turns (A B B A ...) in one process with one
thread; the ratios of the median step times decide ``lemore.engine.train.cpu_channels_last``. Defaults: the
synthetic recipe's shape (batch 8, 128x128 crops, 8 classes), the only training that runs on CPU in practice, and
the same with the benchmarks' class counts (19 Cityscapes, 60 PASCAL Context, 150 ADE20K): the loss on
channels_last logits is slow on CPU, so the gain shrinks as the classes grow.
Writes results/benchmarks/channels_last_cpu.json and .md.
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


def channels_last_ab(names: list[str], *, batch: int, crop: tuple[int, int], iters: int, warmup: int,
                     num_classes: list[int], lr: float = 6e-5) -> dict:
    """Median step time of each model in NCHW (A) and in channels_last (B), A and B stepping in turns.

    Each step is what the engine does per iteration: the images are converted to the model's layout (a no-op for
    NCHW), forward in train mode, the engine's criterion, backward, AdamW step, zero_grad. ``time.thread_time``
    (the CPU time of this single-threaded process) is the statistic: other programs on the machine slow both
    layouts' wall time alike but do not change it. Wall times are recorded too.
    """
    import copy

    from tqdm import tqdm

    from lemore.engine.train import criterion

    rows = []
    cases_list = [(name, k) for k in num_classes for name in names]
    for name, k in tqdm(cases_list, desc="channels_last A/B", unit="model"):
        torch.manual_seed(0)
        x = torch.randn(batch, 3, *crop)
        y = torch.randint(0, k, (batch, *crop))
        y[:, :8] = 255
        a = build(name, k, crop)
        b = copy.deepcopy(a).to(memory_format=torch.channels_last)
        cases = {}
        losses = {}
        for key, model, fmt in (("nchw", a, torch.contiguous_format), ("channels_last", b, torch.channels_last)):
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)

            def step(model=model, opt=opt, fmt=fmt, key=key):
                loss = criterion(model(x.contiguous(memory_format=fmt)), y)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.setdefault(key, loss.item())

            cases[key] = step
        for _ in range(warmup):
            cases["nchw"]()
            cases["channels_last"]()
        cpu = {key: [] for key in cases}
        wall = {key: [] for key in cases}
        for i in range(iters):
            for key in ("nchw", "channels_last") if i % 2 == 0 else ("channels_last", "nchw"):
                c0, t0 = time.thread_time(), time.perf_counter()
                cases[key]()
                cpu[key].append(time.thread_time() - c0)
                wall[key].append(time.perf_counter() - t0)
        med = {key: statistics.median(v) for key, v in cpu.items()}
        rows.append({"model": name, "num_classes": k, "nchw_cpu_s": med["nchw"],
                     "channels_last_cpu_s": med["channels_last"], "speedup": med["nchw"] / med["channels_last"],
                     "nchw_wall_s": statistics.median(wall["nchw"]),
                     "channels_last_wall_s": statistics.median(wall["channels_last"]),
                     "first_loss_abs_diff": abs(losses["nchw"] - losses["channels_last"])})
    return {"rows": rows}


def channels_last_markdown(result: dict) -> str:
    from lemore.engine.train import cpu_channels_last

    p = result["protocol"]
    ks = p["num_classes"]
    lines = ["# Channels-last on CPU: training step, NCHW vs channels_last", "",
             f"Batch {p['batch']}, crop {p['crop'][0]}x{p['crop'][1]}, {p['threads']} thread on {p['cpu']}; median "
             f"CPU time of {p['iters']} steps per layout after {p['warmup']} warm-up, the two layouts stepping in "
             "turns (A B B A ...) in one process. Speedup = NCHW time / channels_last time (> 1: channels_last is "
             "faster), for logits of K classes. **cl** marks where CPU training uses channels_last "
             "(`lemore.engine.train.cpu_channels_last`).", "",
             "| model | NCHW s/step (K=" + str(ks[0]) + ") | " + " | ".join(f"speedup K={k}" for k in ks) + " |",
             "|---|---:|" + "---:|" * len(ks)]
    by = {(r["model"], r["num_classes"]): r for r in result["rows"]}
    for name in dict.fromkeys(r["model"] for r in result["rows"]):
        cells = [f"{by[(name, k)]['speedup']:.2f}x{' **cl**' if cpu_channels_last(name, k) else ''}" for k in ks]
        lines.append(f"| {name} | {by[(name, ks[0])]['nchw_cpu_s']:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "## Protocol", ""] + [f"- **{k}**: {v}" for k, v in p.items()]
    return "\n".join(lines) + "\n"


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
    p.add_argument("--num-classes", type=int, nargs="+", default=[150],
                   help="classes of the logits (several values: --channels-last-ab only)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--out-dir", default=str(ROOT / "results" / "benchmarks"))
    p.add_argument("--channels-last-ab", action="store_true",
                   help="NCHW vs channels_last per model (defaults: every segmentation model, batch 8, 128x128, "
                        "8, 19, 60 and 150 classes, 1 thread, 15 steps): "
                        "results/benchmarks/channels_last_cpu.{json,md}")
    args = p.parse_args(argv)
    if args.channels_last_ab:
        return main_channels_last(args, argv)
    if args.batch < 2:
        raise SystemExit("--batch must be at least 2: BatchNorm over LeMoRe's 1/64 tokens needs >1 value in training")
    threads = args.threads or available_cores()
    crop = tuple(args.crop)
    if len(args.num_classes) != 1:
        raise SystemExit("--num-classes takes one value here (several only with --channels-last-ab)")
    args.num_classes = args.num_classes[0]
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


def main_channels_last(args: argparse.Namespace, argv: list[str] | None) -> int:
    from lemore.launch import segmentation_models

    given = argv if argv is not None else sys.argv[1:]
    defaults = {"--models": segmentation_models(), "--batch": 8, "--crop": [128, 128], "--iters": 15,
                "--num-classes": [8, 19, 60, 150], "--threads": 1}
    for flag, value in defaults.items():  # this mode's own defaults, where the command line gives none
        if not any(a == flag or a.startswith(flag + "=") for a in given):
            setattr(args, flag[2:].replace("-", "_"), value)
    torch.set_num_threads(args.threads)
    crop = tuple(args.crop)
    result = channels_last_ab(args.models, batch=args.batch, crop=crop, iters=args.iters, warmup=args.warmup,
                              num_classes=args.num_classes)
    result["protocol"] = {
        "what": "one training step: images converted to the layout, forward (train mode), cross-entropy, backward, "
                "AdamW step, zero_grad; random data held fixed; two copies of the model (same initial weights), "
                "NCHW and channels_last, stepping in turns A B B A ...",
        "statistic": "median of time.thread_time per step (CPU time of the one thread); speedup = NCHW / channels_last",
        "batch": args.batch, "crop": list(crop), "num_classes": args.num_classes, "iters": args.iters,
        "warmup": args.warmup, "threads": args.threads, "cpu": cpu_model_name(), "cores": available_cores(),
        "torch": torch.__version__, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": list(os.getloadavg()),
        "command": "OMP_NUM_THREADS=1 python benchmarks/train_throughput.py " + " ".join(given),
    }
    text = channels_last_markdown(result)
    out = Path(args.out_dir)
    write_json_atomic(out / "channels_last_cpu.json", result)
    write_text_atomic(out / "channels_last_cpu.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
