"""Parameters, GFLOPs and latency of registered models, with the protocol stated in every output.

Protocol (also written into every JSON this module produces, see :func:`protocol`):

- **Parameters**: all parameters of the model (``numel`` summed), in millions.
- **GFLOPs**: fvcore's ``FlopCountAnalysis`` of one forward pass at batch 1 in eval mode, which counts one
  *multiply-accumulate* per "flop" (convolutions, matmuls incl. attention's Q K^T and A V, linear layers,
  BatchNorm, pooling, bilinear upsampling); element-wise ops (add, mul, activations, softmax) are not
  counted. This is the count segmentation papers print as "GFLOPs" (mmcv's ``get_model_complexity_info``
  and timm's ``benchmark.py`` count the same MACs). Attention runs with explicit matmuls (SegFormer is
  built with ``attn_implementation="eager"``) so that it is counted. The network is counted up to its
  logits at the decoder's stride (``forward_logits``): the final bilinear resize of the logits to the input
  size happens outside the network in MMSegmentation (``encode_decode``) and mmcv does not count it.
- **Latency**: batch 1, ``torch.inference_mode``, warm-up iterations then the median of N timed forward
  passes (``time.perf_counter``, ``torch.cuda.synchronize`` around each on CUDA), threads and device
  recorded. Random normal input.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from lemore.registry import create_model, list_models


class _Logits(nn.Module):
    """Counts a segmentation model up to ``forward_logits`` (see the module docstring)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        fn = getattr(self.model, "forward_logits", None)
        return fn(x) if fn is not None else self.model(x)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: tuple[int, int], by_module: bool = False):
    """fvcore multiply-accumulates of one forward at batch 1 (see the module docstring).

    Returns the total, or ``(total, {module_name: count})`` for the top-level children if ``by_module``.
    """
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    x = torch.randn(1, 3, *input_size)
    analysis = FlopCountAnalysis(_Logits(model), x)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python control flow
        total = analysis.total()
    model.train(was_training)
    if by_module:
        return total, {k.removeprefix("model."): v for k, v in analysis.by_module().items() if k.count(".") == 1}
    return total


@torch.inference_mode()
def measure_latency(model: nn.Module, input_size: tuple[int, int], *, device: str = "cpu", threads: int | None = None,
                    warmup: int = 10, runs: int = 50, channels_last: bool = False) -> dict:
    """Median latency in milliseconds of a batch-1 forward (plus p10/p90 and the settings used)."""
    prev_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model = model.eval().to(device)
        x = torch.randn(1, 3, *input_size, device=device)
        if channels_last:
            model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        for _ in range(warmup):
            model(x)
        sync()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        return {
            "median_ms": statistics.median(times),
            "p10_ms": times[int(0.1 * (len(times) - 1))],
            "p90_ms": times[int(0.9 * (len(times) - 1))],
            "threads": torch.get_num_threads(),
            "runs": runs,
            "warmup": warmup,
        }
    finally:
        torch.set_num_threads(prev_threads)


def protocol(device: str = "cpu") -> dict:
    """The measurement protocol and the machine, stored with every profile."""
    info = {
        "flops": "fvcore FlopCountAnalysis, multiply-accumulates reported as GFLOPs, batch 1, eval mode, "
                 "counted up to the logits at the decoder stride (final resize to input size not counted); "
                 "element-wise ops not counted",
        "params": "sum of numel over all parameters",
        "latency": "batch 1, torch.inference_mode, warm-up then median of timed runs, random input",
        "torch": torch.__version__,
        "device": device if not device.startswith("cuda") else torch.cuda.get_device_name(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "dtype": "float32",
    }
    return info


@dataclass
class ProfileRow:
    model: str
    num_classes: int
    input_size: tuple[int, int]
    params_m: float
    gflops: float
    latency_ms: float | None = None
    latency_p10_ms: float | None = None
    latency_p90_ms: float | None = None
    threads: int | None = None


def profile_model(name: str, num_classes: int, input_size: tuple[int, int], *, build_size: bool = True,
                  latency_runs: int = 0, warmup: int = 5, device: str = "cpu", threads: int | None = None,
                  **overrides) -> ProfileRow:
    """Profile one registered model. LeMoRe models are built for ``input_size`` unless ``build_size=False``."""
    if build_size and name.startswith("lemore") and "img_size" not in overrides:
        overrides["img_size"] = input_size
    model = create_model(name, num_classes=num_classes, **overrides)
    row = ProfileRow(name, num_classes, tuple(input_size), count_params(model) / 1e6,
                     count_flops(model, input_size) / 1e9)
    if latency_runs:
        lat = measure_latency(model, input_size, device=device, threads=threads, warmup=warmup, runs=latency_runs)
        row.latency_ms, row.latency_p10_ms, row.latency_p90_ms = lat["median_ms"], lat["p10_ms"], lat["p90_ms"]
        row.threads = lat["threads"]
    return row


def rows_to_markdown(rows: list[ProfileRow]) -> str:
    head = "| model | classes | input (HxW) | params (M) | GFLOPs | latency (ms) | threads |\n|---|---:|---|---:|---:|---:|---:|"
    lines = [head]
    for r in rows:
        lat = f"{r.latency_ms:.1f}" if r.latency_ms is not None else "-"
        lines.append(f"| {r.model} | {r.num_classes} | {r.input_size[0]}x{r.input_size[1]} | {r.params_m:.3f} | "
                     f"{r.gflops:.3f} | {lat} | {r.threads or '-'} |")
    return "\n".join(lines)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write JSON via a temporary file and ``os.replace`` so that readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------ CLI
def add_cli_arguments(p) -> None:
    p.add_argument("--models", nargs="+", default=None, metavar="NAME",
                   help=f"registered models (default: all). Choices: {', '.join(list_models())}")
    p.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="input size (default 512 512; 224 224 for lemore_cls)")
    p.add_argument("--num-classes", type=int, default=None, help="default 150 (1000 for lemore_cls)")
    p.add_argument("--latency-runs", type=int, default=20, help="timed runs per model (0: skip latency)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads for latency (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", default=None, help="write rows + protocol to this JSON file")
    p.add_argument("--markdown", default=None, help="write the table to this Markdown file")


def cli_main(args) -> int:
    from tqdm import tqdm

    names = args.models or list_models()
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {list_models()}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
    rows = []
    for name in tqdm(names, desc="profiling", unit="model"):
        cls = name == "lemore_cls"
        size = tuple(args.size) if args.size else ((224, 224) if cls else (512, 512))
        k = args.num_classes or (1000 if cls else 150)
        rows.append(profile_model(name, k, size, latency_runs=args.latency_runs, warmup=args.warmup,
                                  device=args.device, threads=args.threads))
    print(rows_to_markdown(rows))
    if args.json:
        write_json_atomic(args.json, {"protocol": protocol(args.device), "rows": [asdict(r) for r in rows]})
    if args.markdown:
        write_text_atomic(args.markdown, rows_to_markdown(rows) + "\n")
    return 0
