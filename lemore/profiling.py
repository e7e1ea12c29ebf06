"""Parameters, GFLOPs and latency of registered models, with the protocol stated in every output.

Protocol (also written into every JSON this module produces, see :func:`protocol`):

- **Parameters**: all parameters of the model (``numel`` summed), in millions.
- **GFLOPs**: fvcore's ``FlopCountAnalysis`` of one forward pass at batch 1 in eval mode, which counts one
  *multiply-accumulate* per "flop" (convolutions, matmuls incl. attention's Q K^T and A V, linear layers,
  BatchNorm, pooling, bilinear upsampling); element-wise ops (add, mul, activations, softmax) are not
  counted. This is the count segmentation papers print as "GFLOPs" (mmcv's ``get_model_complexity_info``
  and timm's ``benchmark.py`` count the same MACs). Attention runs with explicit matmuls while it is counted
  (:func:`eager_attention`: SegFormer trains and infers with SDPA, which fvcore does not count). The
  network is counted up to its
  logits at the decoder's stride (``forward_logits``): the final bilinear resize of the logits to the input
  size happens outside the network in MMSegmentation (``encode_decode``) and mmcv does not count it.
- **Latency**: batch 1, ``torch.inference_mode``, warm-up iterations then the median of N timed forward
  passes (``time.perf_counter``, ``torch.cuda.synchronize`` around each on CUDA), threads and device
  recorded. Random normal input.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def eager_attention(model: nn.Module):
    """Run the block with every submodule that has a settable ``attn_implementation`` (SegFormer) set to
    ``"eager"``: explicit matmuls that fvcore counts, where ``scaled_dot_product_attention`` is not counted."""
    switchable = [m for m in model.modules() if isinstance(getattr(type(m), "attn_implementation", None), property)]
    before = [m.attn_implementation for m in switchable]
    try:
        for m in switchable:
            m.attn_implementation = "eager"
        yield model
    finally:
        for m, impl in zip(switchable, before):
            m.attn_implementation = impl


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
    with warnings.catch_warnings(), eager_attention(model):
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
    p.add_argument("--compare", action="store_true",
                   help="side-by-side latency of LeMoRe, LeMoRe* (448), SegFormer-B0, LR-ASPP (512), eager and "
                        "ONNX Runtime, 1 thread and all, interleaved (benchmarks/latency.py has all options)")


def cli_main(args) -> int:
    if args.compare:
        reuse_freed_memory()
        result = compare_latency(runs=args.latency_runs or 20, warmup=args.warmup,
                                 threads=(args.threads,) if args.threads else (1, None))
        text = compare_to_markdown(result)
        print(text)
        if args.json:
            write_json_atomic(args.json, result)
        if args.markdown:
            write_text_atomic(args.markdown, text)
        return 0
    from lemore.progress import progress as tqdm

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


# ------------------------------------------------------------------ side-by-side latency (``profile --compare``)
#: Table 1's efficiency comparison: (model, input size). LeMoRe* is Table 1's row at its own 448x448.
COMPARE_MODELS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("lemore", (512, 512)), ("lemore_star", (448, 448)),
    ("segformer_b0", (512, 512)), ("lraspp_mobilenet_v3_large", (512, 512)),
)
COMPARE_REFERENCE = "lraspp_mobilenet_v3_large"  # the ratios' denominator, as in the paper's claim
#: eager: the model as built (NCHW), fuse_for_inference (NCHW), fuse_for_inference in channels_last.
EAGER_VARIANTS = ("reference", "fused", "fused_cl")
#: ONNX Runtime: the export of the model as built, and of fuse_for_inference(model).
ORT_VARIANTS = ("reference", "fused")


_MALLOC_REUSED = [False]  # set by reuse_freed_memory, recorded in the protocol


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (no mmap for large blocks, no trimming); True if applied.

    Every forward allocates its (1, 150, 512, 512) output, 157 MB. With glibc's defaults that block is mmap'd
    fresh and page-faulted in on every call (about 90 ms on this machine's VM, for every model alike), which
    measures the kernel rather than the model. Caching allocators (jemalloc/tcmalloc, which PyTorch's CPU
    tuning guide recommends, and ONNX Runtime's own arena) reuse it; this is the glibc equivalent.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        ok = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        ok = False
    _MALLOC_REUSED[0] = _MALLOC_REUSED[0] or ok
    return ok


def cpu_model_name() -> str:
    """The CPU as /proc/cpuinfo names it, with family/model (a VM may only say "AMD EPYC") and its SIMD level."""
    try:
        info = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
        flags = set(info.get("flags", "").split())
        simd = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "avx" if "avx" in flags else "sse"
        return (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}, "
                f"{simd}{'+fma' if 'fma' in flags else ''})")
    except OSError:
        return platform.processor() or platform.machine()


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _interleaved(cases: dict, runs: int, warmup: int) -> dict:
    """Round-robin timing: each repetition runs every case once, starting one case later each time (so that
    no model always follows the same one) and machine noise hits all cases alike. Wall time (latency) and the
    calling thread's CPU time (robust to preemption by other processes; meaningful with 1 thread)."""
    keys = list(cases)
    for _ in range(warmup):
        for k in keys:
            cases[k]()
    wall = {k: [] for k in keys}
    cpu = {k: [] for k in keys}
    for r in range(runs):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            c0, t0 = time.thread_time(), time.perf_counter()
            cases[k]()
            wall[k].append((time.perf_counter() - t0) * 1e3)
            cpu[k].append((time.thread_time() - c0) * 1e3)
    out = {}
    for k in keys:
        w = sorted(wall[k])
        out[k] = {"median_ms": statistics.median(w), "p10_ms": w[int(0.1 * (len(w) - 1))],
                  "p90_ms": w[int(0.9 * (len(w) - 1))], "cpu_median_ms": statistics.median(cpu[k])}
    return out


def compare_latency(models=COMPARE_MODELS, *, num_classes: int = 150, backends=("ort", "eager"),
                    threads=(1, None), runs: int = 20, warmup: int = 3, logits: bool = True,
                    ort_spinning: bool = False, workdir: str | os.PathLike | None = None, log=print) -> dict:
    """LeMoRe against its Table 1 peers in one process, interleaved; see ``benchmarks/latency.py``.

    For every backend (``eager``: PyTorch; ``ort``: ONNX Runtime CPU, graph optimisation ORT_ENABLE_ALL) and
    thread count (``None``: all cores), every (model, variant) is timed round-robin. ``logits`` adds the same
    for ``forward_logits`` (no resize to the input size) of the fused variants.
    Returns ``{"protocol": ..., "results": [rows], "summary": {...}}``.
    """
    import tempfile

    from lemore.export import build_model, export_onnx, ort_session
    from lemore.models.fuse import fuse_for_inference

    all_threads = available_cores()
    models = [(n, tuple(s)) for n, s in models]
    names = [n for n, _ in models]
    if COMPARE_REFERENCE not in names:
        raise ValueError(f"the comparison needs {COMPARE_REFERENCE} (the ratios' denominator)")
    tmp = tempfile.TemporaryDirectory(prefix="lemore-latency-") if workdir is None else None
    workdir = Path(workdir or tmp.name)
    torch.manual_seed(0)
    built, onnx_paths, inputs, gflops = {}, {}, {}, {}
    for name, size in models:
        model = build_model(name, num_classes, size)
        gflops[name] = count_flops(model, size) / 1e9
        fused = fuse_for_inference(model)
        fused_cl = fuse_for_inference(model).to(memory_format=torch.channels_last)
        built[name] = {"reference": model, "fused": fused, "fused_cl": fused_cl}
        x = torch.randn(1, 3, *size)
        inputs[name] = {"nchw": x, "cl": x.contiguous(memory_format=torch.channels_last), "np": x.numpy()}
        if "ort" in backends:
            log(f"exporting {name} {size[0]}x{size[1]}")
            for variant, m, lg in (("reference", model, False), ("fused", fused, False), ("fused_logits", fused, True)):
                if lg and not logits:
                    continue
                onnx_paths[name, variant] = export_onnx(m, workdir / f"{name}_{variant}.onnx", size, logits=lg)

    rows = []
    for backend in backends:
        for th in threads:
            n_threads = th or all_threads
            setting = f"{backend}, {n_threads} thread{'s' if n_threads > 1 else ''}"
            for what in (("output", "logits") if logits else ("output",)):
                cases = {}
                for name, size in models:
                    if backend == "eager":
                        variants = EAGER_VARIANTS if what == "output" else ("fused_cl",)
                        for v in variants:
                            m = built[name][v]
                            fn = m if what == "output" else m.forward_logits
                            x = inputs[name]["cl" if v == "fused_cl" else "nchw"]
                            cases[name, v] = (lambda fn=fn, x=x: fn(x))
                    else:
                        variants = ORT_VARIANTS if what == "output" else ("fused",)
                        for v in variants:
                            path = onnx_paths[name, v if what == "output" else "fused_logits"]
                            sess = ort_session(path, threads=n_threads, spinning=ort_spinning)
                            feed = {sess.get_inputs()[0].name: inputs[name]["np"]}
                            cases[name, v] = (lambda s=sess, f=feed: s.run(None, f))
                log(f"timing {setting}, {what}: {len(cases)} cases x {runs} runs")
                prev = torch.get_num_threads()
                torch.set_num_threads(n_threads)
                try:
                    with torch.inference_mode():
                        timed = _interleaved(cases, runs, warmup)
                finally:
                    torch.set_num_threads(prev)
                for (name, v), t in timed.items():
                    size = dict(models)[name]
                    rows.append({"backend": backend, "threads": n_threads, "setting": setting, "output": what,
                                 "model": name, "input_size": list(size), "variant": v, **t,
                                 "cpu_time_meaningful": n_threads == 1})
    if tmp is not None:
        tmp.cleanup()
    return {"protocol": compare_protocol(runs, warmup, backends, threads, num_classes, ort_spinning),
            "gflops": gflops, "results": rows, "summary": summarize_comparison(rows)}


def summarize_comparison(rows: list[dict]) -> dict:
    """Per setting and output: each model's fastest variant, and its ratio to LR-ASPP's fastest."""
    summary = {}
    for key in sorted({(r["setting"], r["output"]) for r in rows}):
        sel = [r for r in rows if (r["setting"], r["output"]) == key]
        best = {}
        for r in sel:
            if r["model"] not in best or r["median_ms"] < best[r["model"]]["median_ms"]:
                best[r["model"]] = r
        ref = best[COMPARE_REFERENCE]
        entry = {}
        for name, r in best.items():
            entry[name] = {"variant": r["variant"], "input_size": r["input_size"], "median_ms": r["median_ms"],
                           "cpu_median_ms": r["cpu_median_ms"],
                           "ratio": r["median_ms"] / ref["median_ms"],
                           # the calling thread's CPU time is the whole work only with one thread
                           "cpu_ratio": r["cpu_median_ms"] / ref["cpu_median_ms"] if r["cpu_time_meaningful"] else None}
        lemore_ref = [r for r in sel if r["model"] == "lemore" and r["variant"] == "reference"]
        if lemore_ref:
            entry["lemore"]["speedup_vs_reference"] = lemore_ref[0]["median_ms"] / entry["lemore"]["median_ms"]
        # "fastest" among the models at the reference's input size (LeMoRe* at 448 is the same network on
        # fewer pixels: it is reported, not ranked)
        same_size = [n for n in best if best[n]["input_size"] == ref["input_size"]]
        entry["fastest"] = min(same_size, key=lambda n: best[n]["median_ms"])
        summary[f"{key[0]} | {key[1]}"] = entry
    return summary


def compare_protocol(runs, warmup, backends, threads, num_classes, ort_spinning) -> dict:
    import onnxruntime as ort

    from lemore.export import DEFAULT_OPSET

    return {
        "what": "batch-1 latency of LeMoRe vs its Table 1 peers, in one process, interleaved round-robin",
        "latency": f"median (and p10/p90) of {runs} timed runs per case after {warmup} warm-up rounds; "
                   "time.perf_counter around one forward; also the calling thread's CPU time (thread_time), "
                   "which preemption by other processes does not inflate (meaningful with 1 thread)",
        "interleaving": "each repetition runs every (model, variant) once, starting one case later each time",
        "output": "'output' = logits at the input size, the final bilinear resize of the K-class logits included "
                  "(the model's output); 'logits' = forward_logits at the decoder stride (1/8 for LeMoRe and "
                  "LR-ASPP, 1/4 for SegFormer), fused variants only",
        "variants": "eager: reference (as built, NCHW), fused (lemore.models.fuse.fuse_for_inference, NCHW), "
                    "fused_cl (the same in channels_last); ort: exports of reference and fused. Ratios use each "
                    "model's fastest variant in the setting",
        "ratio_reference": COMPARE_REFERENCE,
        "num_classes": num_classes, "batch": 1, "dtype": "float32", "input": "random normal",
        "backends": list(backends),
        "threads": [t or available_cores() for t in threads],
        "cpu": cpu_model_name(), "cores": available_cores(), "os_cpu_count": os.cpu_count(),
        "torch": torch.__version__, "onnxruntime": ort.__version__,
        "onnx_export": f"torch.onnx TorchScript exporter, opset {DEFAULT_OPSET}, static shape (lemore/export.py)",
        "ort_graph_optimization": "ORT_ENABLE_ALL (incl. NCHWc layout transform), sequential execution, "
                                  f"inter_op_num_threads=1, intra_op_num_threads=threads, spin-waiting "
                                  f"{'on' if ort_spinning else 'off (session.intra_op.allow_spinning=0)'}",
        "eager": "torch.inference_mode, torch.set_num_threads(threads)",
        "allocator": "glibc with mmap off and trim threshold 1 GiB (reuse_freed_memory)" if _MALLOC_REUSED[0]
                     else "glibc defaults",
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def compare_to_markdown(result: dict) -> str:
    """The headline table (ratios to LR-ASPP) and every measured case."""
    p, s = result["protocol"], result["summary"]
    settings = sorted({k.split(" | ")[0] for k in s}, key=lambda k: (not k.startswith("ort"), k))
    names = list(dict.fromkeys(r["model"] for r in result["results"]))  # in the order they were run
    sizes = {r["model"]: r["input_size"] for r in result["results"]}
    lines = ["# Latency: LeMoRe vs Table 1 peers", "",
             f"CPU: {p['cpu']} ({p['cores']} cores), torch {p['torch']}, onnxruntime {p['onnxruntime']}. "
             f"Load average at the end: {', '.join(f'{x:.1f}' for x in p['load_average'] or [])}.", ""]
    for what, title in (("output", "Output at the input size (final resize included): median ms (ratio to LR-ASPP)"),
                        ("logits", "forward_logits (no final resize): median ms (ratio to LR-ASPP)")):
        keys = [f"{st} | {what}" for st in settings if f"{st} | {what}" in s]
        if not keys:
            continue
        lines += [f"## {title}", "", "**fastest**: of the models at 512x512 (LeMoRe* is the same network on 448x448 "
                  "inputs).", "", "| model | input | GFLOPs | " + " | ".join(k.split(" | ")[0] for k in keys) + " |",
                  "|---|---|---:|" + "---:|" * len(keys)]
        for n in names:
            cells = []
            for k in keys:
                e = s[k].get(n)
                cells.append("-" if e is None else f"{e['median_ms']:.1f} ({e['ratio']:.2f})" +
                             (" **fastest**" if s[k]["fastest"] == n else ""))  # at 512x512
            h, w = sizes[n]
            lines.append(f"| {n} | {h}x{w} | {result['gflops'][n]:.2f} | " + " | ".join(cells) + " |")
        cpu_cells = [f"{s[k]['lemore']['cpu_ratio']:.2f}" if "lemore" in s[k] and k.split(" | ")[0].endswith(" 1 thread")
                     else "-" for k in keys]
        lines += [f"| lemore, CPU-time ratio | | | " + " | ".join(cpu_cells) + " |", ""]
    # What the final resize costs (output minus forward_logits, same variant) and what fusing buys LeMoRe.
    by = {(r["setting"], r["output"], r["model"], r["variant"]): r["median_ms"] for r in result["results"]}
    lines += ["## Where the time goes", "",
              "| setting | final resize, lemore (ms) | final resize, LR-ASPP (ms) | lemore fused vs as built |",
              "|---|---:|---:|---:|"]
    for st in settings:
        cells = []
        for name in ("lemore", COMPARE_REFERENCE):
            pair = [(by[k], by.get((st, "output", name, k[3]))) for k in by if k[:3] == (st, "logits", name)]
            cells.append(f"{pair[0][1] - pair[0][0]:.1f}" if pair and pair[0][1] is not None else "-")
        sp = s.get(f"{st} | output", {}).get("lemore", {}).get("speedup_vs_reference")
        cells.append(f"{sp:.2f}x" if sp else "-")
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    lines += ["", "The final bilinear resize of the 150-class logits to 512x512 (a 157 MB output) costs every model the "
              "same; it is why the ratios with it are closer to 1 than those of forward_logits.", ""]
    lines += ["## Every case", "", "| setting | output | model | variant | median ms | p10 | p90 | CPU ms |",
              "|---|---|---|---|---:|---:|---:|---:|"]
    for r in result["results"]:
        cpu = f"{r['cpu_median_ms']:.1f}" if r["cpu_time_meaningful"] else "-"
        lines.append(f"| {r['setting']} | {r['output']} | {r['model']} | {r['variant']} | {r['median_ms']:.1f} | "
                     f"{r['p10_ms']:.1f} | {r['p90_ms']:.1f} | {cpu} |")
    lines += ["", "## Protocol", ""] + [f"- **{k}**: {v}" for k, v in p.items()]
    return "\n".join(lines) + "\n"
