"""The engine's training data, batch by batch: the two-stage pipeline against mmseg's one sample at a time, and the
allocator setting of the training step.

    python benchmarks/train_loader.py                       # both parts, ~6 minutes on 2 cores
    python benchmarks/train_loader.py --part loader         # only the pipelines
    python benchmarks/train_loader.py --part allocator --models lemore segformer_b0

**loader**: for each recipe (``synthetic``: 128x128 crops of the synthetic set; ``camvid``: 192x192 crops, resize
0.75-1.5, the first study's recipe; ``camvid_240x320``: 240x320 crops, resize 0.5-1.5), batches of 8 as the engine
draws them (``lemore.engine.train.train_batches``, no worker, the recipe's splits decoded once and held in memory):
with the two-stage pipeline (``lemore.data.transforms.SegTrainTransform``: draws and shape per sample, the photometric
distortion and normalisation on the batch) and with mmseg's pipeline one sample at a time (``mmseg_train_transform``,
each sample under the global generators seeded by its place, as the engine did before). The two alternate in blocks
of ``--batches`` in one process (``--blocks`` each) with ``--threads`` threads; the median ms per batch of each
block, the fastest block of each kept. The batches are checked equal, bit for bit, before timing.

**allocator**: the model-only training step at the CamVid recipe (batch 8, ``--crop``) with glibc's default
allocator and with ``lemore.system.keep_freed_memory`` (the engine's setting), each in a fresh process (the setting
cannot be undone in a process), alternated ``--rounds`` times; the median step of each process, the median over
processes per setting.

CamVid from ``--camvid-root`` (default ``$LEMORE_DATA/CamVid``), else the stand-in of
``benchmarks/engine_throughput.py`` (CamVid's layout and sizes) in a temporary folder. Writes
results/benchmarks/train_loader.{json,md} (atomically), naming the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lemore.config import load
from lemore.profiling import available_cores, cpu_model_name, write_json_atomic, write_text_atomic

RECIPES = {"synthetic": ("synthetic", {}),
           "camvid": ("camvid", {"data.crop_size": [192, 192], "data.ratio_range": [0.75, 1.5]}),
           "camvid_240x320": ("camvid", {"data.crop_size": [240, 320], "data.ratio_range": [0.5, 1.5]})}


def loader_rows(recipes: list[str], camvid_root: str, batches: int, blocks: int) -> list[dict]:
    from lemore.data import build_dataset
    from lemore.data.transforms import mmseg_train_transform
    from lemore.engine.train import train_batches

    rows = []
    for name in recipes:
        dataset, overrides = RECIPES[name]
        root = {"data.root": camvid_root} if dataset == "camvid" else {}
        cfg = load(dataset=dataset, overrides={**overrides, **root})
        staged = build_dataset(cfg.data, "train", cache=True)
        single = build_dataset(cfg.data, "train", transform=mmseg_train_transform(cfg.data), cache=True)
        a, b = train_batches(staged, 8, seed=0), train_batches(single, 8, seed=0)
        for _ in range(3):  # warm-up, and the check that both give the same batches
            (xa, ya), (xb, yb) = next(a), next(b)
            if not (torch.equal(xa, xb) and torch.equal(ya, yb)):
                raise SystemExit(f"{name}: the two pipelines gave different batches")
        times = {"two stages": [], "one sample at a time": []}
        for _ in range(blocks):
            for label, stream in (("two stages", a), ("one sample at a time", b)):
                block = []
                for _ in range(batches):
                    t0 = time.perf_counter()
                    next(stream)
                    block.append(time.perf_counter() - t0)
                times[label].append(statistics.median(block) * 1e3)
        two, one = min(times["two stages"]), min(times["one sample at a time"])
        h, w = cfg.data.crop_size
        rows.append({"recipe": name, "crop": f"{h}x{w}", "ratio_range": list(cfg.data.ratio_range),
                     "ms_two_stages": round(two, 2), "ms_one_at_a_time": round(one, 2),
                     "speedup": round(one / two, 2), "blocks_ms": times})
        print(f"{name}: {one:.1f} -> {two:.1f} ms per batch of 8", flush=True)
    return rows


STEP = """
import json, statistics, sys, time, torch
from lemore.system import keep_freed_memory
if sys.argv[2] == "keep_freed_memory":
    assert keep_freed_memory()
from lemore.config import load
from lemore.engine.train import build_optimizer, cpu_channels_last, criterion
from lemore.registry import build_model
torch.set_num_threads(int(sys.argv[4]))
h, w = map(int, sys.argv[3].split("x"))
cfg = load(dataset="camvid", overrides={"model.name": sys.argv[1], "data.crop_size": [h, w]})
fmt = torch.channels_last if cpu_channels_last(sys.argv[1], 11) else torch.contiguous_format
torch.manual_seed(0)
model = build_model(cfg).train().to(memory_format=fmt)
opt = build_optimizer(model, cfg.train)
x = torch.randn(8, 3, h, w).contiguous(memory_format=fmt)
y = torch.randint(0, 11, (8, h, w))
def step():
    loss = criterion(model(x), y); loss.backward(); opt.step(); opt.zero_grad(set_to_none=True); loss.item()
for _ in range(2):
    step()
t = []
for _ in range(int(sys.argv[5])):
    t0 = time.perf_counter(); step(); t.append(time.perf_counter() - t0)
print(json.dumps(statistics.median(t) * 1e3))
"""


def allocator_rows(models: list[str], crop: str, threads: int, rounds: int, steps: int) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows = []
    for model in models:
        ms: dict[str, list[float]] = {"default": [], "keep_freed_memory": []}
        for _ in range(rounds):
            for setting in ms:
                out = subprocess.run([sys.executable, "-c", STEP, model, setting, crop, str(threads), str(steps)],
                                     capture_output=True, text=True, env=env, check=True)
                ms[setting].append(json.loads(out.stdout.strip().splitlines()[-1]))
        d, k = statistics.median(ms["default"]), statistics.median(ms["keep_freed_memory"])
        rows.append({"model": model, "crop": crop, "ms_default": round(d, 1), "ms_keep_freed_memory": round(k, 1),
                     "speedup": round(d / k, 2), "processes_ms": ms})
        print(f"{model}: {d:.0f} -> {k:.0f} ms per step", flush=True)
    return rows


def markdown(result: dict) -> str:
    p = result["protocol"]
    lines = ["# The engine's training data and the allocator", "",
             f"`{p['command']}` on {p['cpu']} ({p['cores']} cores), {p['threads']} torch threads, torch {p['torch']}; "
             "the module docstring of benchmarks/train_loader.py gives the protocol.", ""]
    if result.get("loader"):
        lines += ["## Two stages against one sample at a time (ms per batch of 8, the engine's loader, no worker)", "",
                  "| recipe | crop | random resize | one sample at a time | two stages | speed-up |",
                  "|---|---|---|--:|--:|--:|"]
        lines += [f"| {r['recipe']} | {r['crop']} | {r['ratio_range'][0]:g}-{r['ratio_range'][1]:g} | "
                  f"{r['ms_one_at_a_time']:.1f} | {r['ms_two_stages']:.1f} | {r['speedup']:.2f}x |"
                  for r in result["loader"]]
        lines += ["", f"CamVid: {p['camvid_data']}. Both give the same batches, bit for bit (checked first).", ""]
    if result.get("allocator"):
        lines += ["## The training step with glibc's default allocator and with keep_freed_memory "
                  "(ms per step, the model alone)", "",
                  "| model | crop, batch 8 | default | keep_freed_memory | speed-up |", "|---|---|--:|--:|--:|"]
        lines += [f"| {r['model']} | {r['crop']} | {r['ms_default']:.0f} | {r['ms_keep_freed_memory']:.0f} | "
                  f"{r['speedup']:.2f}x |" for r in result["allocator"]]
        lines += ["", f"Median over {p['rounds']} processes per setting, alternated (each process: the median of "
                  f"{p['steps']} steps after 2 warm-up).", ""]
    return "\n".join(lines)


def camvid_root_or_standin(arg: str, tmp: Path) -> tuple[str, bool]:
    """The CamVid folder to read, and whether it is the stand-in written to ``tmp``."""
    from engine_throughput import camvid_standin  # benchmarks/ is this script's folder

    root = arg or str(load(dataset="camvid").data.resolved_root())
    if Path(root, "train").is_dir():
        return root, False
    return str(camvid_standin(tmp / "CamVid")), True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["loader", "allocator", "both"], default="both")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--models", nargs="+", default=["lemore", "segformer_b0", "topformer_t"])
    p.add_argument("--crop", default="240x320", help="HxW of the allocator part's step")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, default=15, help="batches per block (loader)")
    p.add_argument("--blocks", type=int, default=3, help="blocks per pipeline (loader)")
    p.add_argument("--rounds", type=int, default=3, help="processes per setting (allocator)")
    p.add_argument("--steps", type=int, default=6, help="timed steps per process (allocator)")
    p.add_argument("--camvid-root", default="")
    p.add_argument("--out-dir", default=str(ROOT / "results" / "benchmarks"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="train-loader-") as tmp:
        root, standin = camvid_root_or_standin(args.camvid_root, Path(tmp))
        if args.part in ("loader", "both"):
            result["loader"] = loader_rows(args.recipes, root, args.batches, args.blocks)
    if args.part in ("allocator", "both"):
        result["allocator"] = allocator_rows(args.models, args.crop, args.threads, args.rounds, args.steps)
    result["protocol"] = {
        "command": "python benchmarks/train_loader.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu": cpu_model_name(), "cores": available_cores(), "threads": args.threads, "torch": torch.__version__,
        "camvid_data": "stand-in (CamVid layout and sizes, temporary)" if standin else root,
        "rounds": args.rounds, "steps": args.steps, "batches": args.batches, "blocks": args.blocks,
        "load_average_end": list(os.getloadavg())}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "train_loader.json", result)
    write_text_atomic(out / "train_loader.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
