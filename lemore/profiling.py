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

from lemore.system import available_cores  # noqa: F401  (re-exported: the benchmarks name the machine with it)
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
    with warnings.catch_warnings():  # importing fvcore.nn scripts its focal loss: torch's jit.script deprecation
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
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
                   help="side-by-side latency of LeMoRe, LeMoRe* (448) and its peers (512), network only and "
                        "label maps, eager and ONNX Runtime, 1 thread and all, interleaved (benchmarks/latency.py "
                        "has all options)")


def cli_main(args) -> int:
    if args.compare:
        reuse_freed_memory()
        result = compare_latency(runs=args.latency_runs or 15, warmup=min(args.warmup, 2),
                                 threads=(args.threads,) if args.threads else (1, None))
        result["protocol"]["command"] = "python -m lemore profile --compare " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in (("latency_runs", args.latency_runs), ("threads", args.threads))
            if v)
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
#: Table 1's efficiency comparison and the other peers: (model, input size). LeMoRe* is Table 1's row at its own
#: 448x448. Peers not registered in this checkout are skipped (:func:`compare_models`).
COMPARE_MODELS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("lemore", (512, 512)), ("lemore_star", (448, 448)),
    ("segformer_b0", (512, 512)), ("lraspp_mobilenet_v3_large", (512, 512)),
    ("topformer_t", (512, 512)), ("seaformer_t", (512, 512)), ("lraspp_mobilenet_v3_large_reduced", (512, 512)),
)
COMPARE_REFERENCE = "lraspp_mobilenet_v3_large"  # the ratios' denominator, as in the paper's claim
#: What is timed. ``labels`` and ``output`` include the network; ``output`` is what earlier runs called it
#: (Table 1's latency ratio, lemore.tables.LATENCY_SETTING, reads ``logits``).
OUTPUTS = {
    "logits": "network only: forward_logits, the logits at the decoder stride (1/8; SegFormer 1/4)",
    "labels": "end to end: the (H, W) int64 label map, lemore.predict in eager, the --labels export in ORT "
              "(argmax of the upsampled logits without upsampling them, lemore.labels)",
    "output": "the models' forward: the 150 logits resized to the input size (a 157 MB float output, no argmax)",
}
#: The issue's goals (ONNX Runtime, 1 thread): LeMoRe / LR-ASPP network only, LeMoRe's end-to-end labels / its
#: network only, LeMoRe / LR-ASPP end to end.
GOALS = {"network_ratio": 0.45, "labels_over_network": 1.3, "labels_ratio": 0.50}


def compare_models(models=COMPARE_MODELS) -> tuple[tuple[str, tuple[int, int]], ...]:
    """The registered ones of ``models``."""
    have = set(list_models())
    return tuple((n, tuple(sz)) for n, sz in models if n in have)


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


#: AMD EPYC generations by (family, model) as /proc/cpuinfo gives them: VMs often name the CPU only "AMD EPYC".
_AMD_CORES = {(23, 1): "Zen, Naples", (23, 49): "Zen 2, Rome", (25, 1): "Zen 3, Milan", (25, 17): "Zen 4, Genoa",
              (25, 160): "Zen 4c, Bergamo", (26, 2): "Zen 5, Turin"}


def cpu_info() -> dict:
    """The CPU: name, family/model (and the EPYC generation when known), SIMD level, and ONNX Runtime's NCHWc
    block (MLAS packs channels in blocks of 16 with AVX-512F, 8 otherwise: widths are padded up to it)."""
    info: dict = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        return {"name": platform.processor() or platform.machine(), "simd": "?", "nchwc_block": None}
    flags = set(info.get("flags", "").split())
    simd = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "avx" if "avx" in flags else "sse"
    fam, mod = info.get("cpu family", "?"), info.get("model", "?")
    gen = _AMD_CORES.get((int(fam), int(mod))) if fam.isdigit() and mod.isdigit() and "AMD" in info.get(
        "vendor_id", "") + info.get("model name", "") else None
    name = f"{info.get('model name', '?')} (family {fam}, model {mod}{', ' + gen if gen else ''})"
    return {"name": name, "simd": simd + ("+fma" if "fma" in flags else ""),
            "nchwc_block": 16 if "avx512f" in flags else 8 if "avx2" in flags else None}


def cpu_model_name() -> str:
    """One line: the CPU, its SIMD level (see :func:`cpu_info`)."""
    c = cpu_info()
    return f"{c['name'][:-1]}, {c['simd']})" if c["name"].endswith(")") else c["name"]


def _interleaved(cases: dict, runs: int, warmup: int, *, slow_runs: int | None = None,
                 reference: str | None = None) -> dict:
    """Round-robin timing: each repetition runs every case once, starting one case later each time (so that
    no model always follows the same one) and machine noise hits all cases alike. Wall time (latency) and the
    calling thread's CPU time (robust to preemption by other processes; meaningful with 1 thread).

    Cases whose warm-up took over 4x the ``reference`` case's get only ``slow_runs`` timed runs, spread evenly
    over the repetitions (SegFormer-B0: 4-8x LeMoRe's time for the same information).
    """
    keys = list(cases)
    last = {}  # the last warm-up round's times
    for _ in range(warmup):
        for k in keys:
            t0 = time.perf_counter()
            cases[k]()
            last[k] = time.perf_counter() - t0
    slow = set()
    if slow_runs and reference in last and slow_runs < runs:
        slow = {k for k in keys if last[k] > 4 * last[reference]}
    every = max(1, round(runs / slow_runs)) if slow else 1
    wall = {k: [] for k in keys}
    cpu = {k: [] for k in keys}
    for r in range(runs):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            if k in slow and r % every:
                continue
            c0, t0 = time.thread_time(), time.perf_counter()
            cases[k]()
            wall[k].append((time.perf_counter() - t0) * 1e3)
            cpu[k].append((time.thread_time() - c0) * 1e3)
    out = {}
    for k in keys:
        w = sorted(wall[k])
        out[k] = {"median_ms": statistics.median(w), "p10_ms": w[int(0.1 * (len(w) - 1))],
                  "p90_ms": w[int(0.9 * (len(w) - 1))], "cpu_median_ms": statistics.median(cpu[k]), "runs": len(w)}
    return out


def _prepare(name: str, size, num_classes: int, backends, outputs, reference: bool, workdir: Path, log) -> dict:
    """One model for the comparison: GFLOPs, its fused copy in the faster eager layout, its ONNX exports."""
    from lemore.export import build_model, export_heads, export_onnx
    from lemore.labels import cell_statistics
    from lemore.models.fuse import fuse_for_inference

    model = build_model(name, num_classes, size)
    prep = {"gflops": count_flops(model, size) / 1e9, "size": tuple(size)}
    fused = fuse_for_inference(model)
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        prep["cells"] = cell_statistics(fused.forward_logits(x), size)  # how much work the label map has
    prep["inputs"] = {"nchw": x, "cl": x.contiguous(memory_format=torch.channels_last), "np": x.numpy()}
    if "eager" in backends:
        # the faster layout for this model (1 thread, forward_logits, 1 + 2 runs each): channels_last runs
        # oneDNN convolutions, NCHW the transformers' matmuls without layout copies
        cl = fuse_for_inference(model).to(memory_format=torch.channels_last)
        times = {}
        with torch.inference_mode():
            for layout, m in (("nchw", fused), ("cl", cl)):
                xin = prep["inputs"][layout]
                m.forward_logits(xin)
                t0 = time.perf_counter()
                for _ in range(2):
                    m.forward_logits(xin)
                times[layout] = (time.perf_counter() - t0) / 2 * 1e3
        prep["eager_layout"] = min(times, key=times.get)
        prep["eager_layout_ms"] = times
        prep["eager"] = cl if prep["eager_layout"] == "cl" else fused
        prep["eager_reference"] = model
    if "ort" in backends:
        log(f"exporting {name} {size[0]}x{size[1]}")
        prep["onnx"] = export_heads(fused, workdir / name, size, heads=tuple(outputs))
        if reference:
            prep["onnx_reference"] = export_onnx(model, workdir / name / "reference_logits.onnx", size, logits=True)
    return prep


def compare_latency(models=None, *, num_classes: int = 150, backends=("ort", "eager"), threads=(1, None),
                    outputs=("logits", "labels"), runs: int = 15, warmup: int = 2, slow_runs: int | None = 5,
                    multi_runs: int | None = None, multi_outputs=("logits", "labels"), reference: bool = False,
                    ort_spinning: bool = False, workdir: str | os.PathLike | None = None, log=print) -> dict:
    """LeMoRe against its peers in one process, interleaved; see ``benchmarks/latency.py``.

    For every backend (``eager``: PyTorch; ``ort``: ONNX Runtime CPU, graph optimisation ORT_ENABLE_ALL), thread
    count (``None``: all cores) and output (:data:`OUTPUTS`), every model runs round-robin in its fastest form:
    ``fuse_for_inference`` (eager: in the faster of NCHW and channels_last; ORT: its export). ``reference``
    adds the models as built (unfused, NCHW; their export) for ``logits``. Settings with more than one thread
    time only ``multi_outputs`` (of ``outputs``) with ``multi_runs`` runs (default: half of ``runs``, at least 5):
    on a shared machine they take the longest and say the least. Building, exporting and counting FLOPs run
    with one thread (all threads on a loaded 2-core machine made exports 4-6x slower).
    Returns ``{"protocol", "gflops", "cells", "results": [rows], "summary", "headline"}``.
    """
    import tempfile

    from tqdm import tqdm

    from lemore.export import ort_session
    from lemore.labels import predict

    models = compare_models(COMPARE_MODELS) if models is None else tuple((n, tuple(sz)) for n, sz in models)
    names = [n for n, _ in models]
    if COMPARE_REFERENCE not in names:
        raise ValueError(f"the comparison needs {COMPARE_REFERENCE} (the ratios' denominator)")
    unknown = sorted(set(names) - set(list_models()))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list_models()}")
    bad = sorted(set(outputs) - set(OUTPUTS))
    if bad:
        raise ValueError(f"unknown output(s) {bad}; choose from {list(OUTPUTS)}")
    all_threads = available_cores()
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    tmp = tempfile.TemporaryDirectory(prefix="lemore-latency-") if workdir is None else None
    workdir = Path(workdir or tmp.name)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        prep = {n: _prepare(n, sz, num_classes, backends, outputs, reference, workdir, log)
                for n, sz in tqdm(models, desc="build, count, export", unit="model", leave=False)}
    finally:
        torch.set_num_threads(prev)

    settings = [(b, th or all_threads) for b in backends for th in threads]
    multi_runs = multi_runs or min(runs, max(5, runs // 2))
    plan = {st: (tuple(outputs), runs) if st[1] == 1 else (tuple(o for o in outputs if o in multi_outputs), multi_runs)
            for st in settings}
    rows = []
    bar = tqdm(total=sum(len(o) for o, _ in plan.values()), desc="timing", unit="setting", leave=False)
    for backend, n_threads in settings:
        setting = f"{backend}, {n_threads} thread{'s' if n_threads > 1 else ''}"
        sessions = {}
        these_outputs, these_runs = plan[backend, n_threads]
        for what in these_outputs:
            cases = {}
            for name, _ in models:
                p = prep[name]
                if backend == "eager":
                    m = p["eager"]
                    x = p["inputs"][p["eager_layout"]]
                    fn = {"logits": m.forward_logits, "labels": lambda x, m=m: predict(m, x), "output": m}[what]
                    cases[name, "fused"] = (lambda fn=fn, x=x: fn(x))
                    if reference and what == "logits":
                        ref = p["eager_reference"]
                        cases[name, "reference"] = (lambda ref=ref, x=p["inputs"]["nchw"]: ref.forward_logits(x))
                else:
                    paths = [("fused", p["onnx"][what])]
                    if reference and what == "logits":
                        paths.append(("reference", p["onnx_reference"]))
                    for variant, path in paths:
                        sess = sessions.setdefault(path, ort_session(path, threads=n_threads, spinning=ort_spinning))
                        feed = {sess.get_inputs()[0].name: p["inputs"]["np"]}
                        cases[name, variant] = (lambda s=sess, f=feed: s.run(None, f))
            log(f"timing {setting}, {what}: {len(cases)} cases x {these_runs} runs")
            torch.set_num_threads(n_threads)
            try:
                with torch.inference_mode():
                    timed = _interleaved(cases, these_runs, warmup, slow_runs=slow_runs,
                                         reference=(COMPARE_REFERENCE, "fused"))
            finally:
                torch.set_num_threads(prev)
            for (name, variant), t in timed.items():
                rows.append({"backend": backend, "threads": n_threads, "setting": setting, "output": what,
                             "model": name, "input_size": list(prep[name]["size"]), "variant": variant,
                             **({"layout": prep[name]["eager_layout"]} if backend == "eager" else {}), **t,
                             "cpu_time_meaningful": n_threads == 1})
            bar.update()
        sessions.clear()
    bar.close()
    if tmp is not None:
        tmp.cleanup()
    summary = summarize_comparison(rows)
    protocol = compare_protocol(runs, warmup, slow_runs, backends, threads, outputs, num_classes, ort_spinning)
    if any(t > 1 for _, t in settings):
        protocol["more_threads"] = (f"settings with more than one thread: outputs "
                                    f"{list(next(plan[st][0] for st in settings if st[1] > 1))}, "
                                    f"{multi_runs} timed runs per case")
    protocol["load_average_start"] = load_start
    result = {"protocol": protocol,
              "gflops": {n: prep[n]["gflops"] for n in names}, "cells": {n: prep[n]["cells"] for n in names},
              "eager_layout": {n: prep[n].get("eager_layout") for n in names},
              "results": rows, "summary": summary}
    result["headline"] = headline(summary)
    return result


def summarize_comparison(rows: list[dict]) -> dict:
    """Per setting and output: each model's fastest variant, its ratio to LR-ASPP's, and the fastest model;
    per setting and model: end-to-end labels over network only."""
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
                           "cpu_median_ms": r["cpu_median_ms"], "ratio": r["median_ms"] / ref["median_ms"],
                           # the calling thread's CPU time is the whole work only with one thread
                           "cpu_ratio": r["cpu_median_ms"] / ref["cpu_median_ms"] if r["cpu_time_meaningful"] else None}
        lemore_ref = [r for r in sel if r["model"] == "lemore" and r["variant"] == "reference"]
        if lemore_ref and "lemore" in entry:
            entry["lemore"]["speedup_vs_reference"] = lemore_ref[0]["median_ms"] / entry["lemore"]["median_ms"]
        # "fastest" among the models at the reference's input size (LeMoRe* at 448 is the same network on
        # fewer pixels: it is reported, not ranked)
        same_size = [n for n in best if best[n]["input_size"] == ref["input_size"]]
        entry["fastest"] = min(same_size, key=lambda n: best[n]["median_ms"])
        summary[f"{key[0]} | {key[1]}"] = entry
    return summary


def headline(summary: dict) -> dict:
    """The issue's numbers (ONNX Runtime, 1 thread) against its goals (judged on thread CPU time), and whether
    LeMoRe is the fastest model at 512x512 in every setting and output (wall-clock medians)."""
    out: dict = {"goals": dict(GOALS)}
    net, lab = summary.get("ort, 1 thread | logits", {}), summary.get("ort, 1 thread | labels", {})
    if "lemore" in net:
        out["network_ratio"] = net["lemore"]["ratio"]
        out["network_ratio_cpu_time"] = net["lemore"]["cpu_ratio"]
    if "lemore" in lab:
        out["labels_ratio"] = lab["lemore"]["ratio"]
        out["labels_ratio_cpu_time"] = lab["lemore"]["cpu_ratio"]
    if "lemore" in net and "lemore" in lab:
        out["labels_over_network"] = lab["lemore"]["median_ms"] / net["lemore"]["median_ms"]
        out["labels_over_network_cpu_time"] = lab["lemore"]["cpu_median_ms"] / net["lemore"]["cpu_median_ms"]
    # the verdict uses the thread's CPU time: with one thread it is the latency of an idle machine, and other
    # processes on a shared machine do not inflate it (they do inflate wall-clock medians, shown alongside)
    out["met"] = {k: out.get(f"{k}_cpu_time", out[k]) <= g for k, g in GOALS.items() if k in out}
    fastest = {k: v["fastest"] for k, v in summary.items()}
    out["fastest_everywhere"] = all(v == "lemore" for v in fastest.values())
    out["not_fastest"] = {k: v for k, v in fastest.items() if v != "lemore"}
    return out


def compare_protocol(runs, warmup, slow_runs, backends, threads, outputs, num_classes, ort_spinning) -> dict:
    import onnxruntime as ort

    from lemore.export import DEFAULT_OPSET

    cpu = cpu_info()
    return {
        "what": "batch-1 latency of LeMoRe vs its peers, in one process, interleaved round-robin",
        "machine": f"{cpu['name']}, {available_cores()} cores, {cpu['simd']}",
        "latency": f"median (and p10/p90) of {runs} timed runs per case after {warmup} warm-up rounds (cases "
                   f"over 4x LR-ASPP's warm-up time: {slow_runs} runs spread over the rounds); time.perf_counter "
                   "around one call; also the calling thread's CPU time (thread_time), which preemption by other "
                   "processes does not inflate (meaningful with 1 thread)",
        "interleaving": "each repetition runs every model once, starting one model later each time",
        "outputs": {k: OUTPUTS[k] for k in outputs},
        "form": "every model as lemore.models.fuse.fuse_for_inference leaves it (BatchNorm folded; LeMoRe's blocks "
                "rewritten); eager: in the faster of NCHW and channels_last (measured per model, see eager_layout); "
                "ORT: its export (lemore.export.export_heads: the network traced once, output heads attached)",
        "ratio_reference": COMPARE_REFERENCE,
        "labels_work": "cells: share of low-resolution cells where classes meet (interpolated pixel by pixel) and "
                       "their candidate classes, for the benchmark's input; the rest is one gather",
        "num_classes": num_classes, "batch": 1, "dtype": "float32", "input": "random normal, random weights",
        "backends": list(backends),
        "threads": [t or available_cores() for t in threads],
        "cpu": cpu["name"], "simd": cpu["simd"], "ort_nchwc_block": cpu["nchwc_block"],
        "cores": available_cores(), "os_cpu_count": os.cpu_count(),
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


_OUTPUT_TITLES = {"logits": "Network only (forward_logits, logits at the decoder stride)",
                  "labels": "End to end: label map at 512x512 (lemore.predict / the --labels export)",
                  "output": "The models' forward: 150 logits resized to 512x512 (no argmax)"}


def compare_to_markdown(result: dict) -> str:
    """The headline (goals met or not), one table per output (ms and ratio to LR-ASPP), the label step, every
    case, the protocol."""
    p, s, hl = result["protocol"], result["summary"], result.get("headline") or headline(result["summary"])
    settings = sorted({k.split(" | ")[0] for k in s}, key=lambda k: (not k.startswith("ort"), int(k.split(", ")[1].split()[0])))
    outputs = [o for o in OUTPUTS if any(k.endswith(f"| {o}") for k in s)]
    names = list(dict.fromkeys(r["model"] for r in result["results"]))  # in the order they were run
    sizes = {r["model"]: r["input_size"] for r in result["results"]}
    lines = ["# Latency: LeMoRe vs its peers", "",
             f"Machine: {p['machine']} (ONNX Runtime's NCHWc block: {p.get('ort_nchwc_block')} channels); torch "
             f"{p['torch']}, onnxruntime {p['onnxruntime']}. Load average at the end: "
             f"{', '.join(f'{x:.1f}' for x in p['load_average'] or [])}. Command: `{p.get('command', '-')}`.", ""]
    loads = [x[0] for x in (p.get("load_average_start"), p.get("load_average")) if x]
    if loads and max(loads) > p["cores"]:
        lines += [f"**Other processes competed for the {p['cores']} cores** (1-minute load average up to "
                  f"{max(loads):.1f}): medians with more than one thread wait for preempted threads and are "
                  "unreliable, eager PyTorch's most (it synchronises its threads at every op); 1-thread CPU "
                  "times are barely affected.", ""]
    goal_rows = [("network_ratio", "LeMoRe / LR-ASPP, network only", "ratio"),
                 ("labels_over_network", "LeMoRe end-to-end labels / LeMoRe network only", "ratio"),
                 ("labels_ratio", "LeMoRe / LR-ASPP, end-to-end labels", "ratio")]
    lines += ["## Headline (ONNX Runtime, 1 thread)", "",
              "Judged on the thread's CPU time (with one thread the latency of an idle machine; other processes on a "
              "shared machine do not inflate it); wall-clock medians alongside.", "",
              "| quantity | goal | measured (CPU time) | measured (wall clock) | met |", "|---|---:|---:|---:|---|"]
    for key, label, _ in goal_rows:
        if key in hl:
            cpu = hl.get(f"{key}_cpu_time")
            lines.append(f"| {label} | <= {hl['goals'][key]:.2f} | {'-' if cpu is None else f'{cpu:.2f}'} | "
                         f"{hl[key]:.2f} | {'yes' if hl['met'][key] else '**no**'} |")
    slower = "; ".join(f"{k.replace(' | ', ', ')}: {v}" for k, v in hl["not_fastest"].items())
    lines += [f"| LeMoRe the fastest model at 512x512 in every setting and output | | "
              f"{'yes' if hl['fastest_everywhere'] else 'no: ' + slower} | | "
              f"{'yes' if hl['fastest_everywhere'] else '**no**'} |", ""]
    for what in outputs:
        keys = [f"{st} | {what}" for st in settings if f"{st} | {what}" in s]
        lines += [f"## {_OUTPUT_TITLES[what]}: median ms (ratio to LR-ASPP)", "",
                  "**fastest**: of the models at 512x512 (LeMoRe* is the same network on 448x448 inputs).", "",
                  "| model | input | GFLOPs | " + " | ".join(k.split(" | ")[0] for k in keys) + " |",
                  "|---|---|---:|" + "---:|" * len(keys)]
        for n in names:
            cells = []
            for k in keys:
                e = s[k].get(n)
                cells.append("-" if e is None else f"{e['median_ms']:.1f} ({e['ratio']:.2f})" +
                             (" **fastest**" if s[k]["fastest"] == n else ""))
            h, w = sizes[n]
            lines.append(f"| {n} | {h}x{w} | {result['gflops'][n]:.2f} | " + " | ".join(cells) + " |")
        lines.append("")
    if "logits" in outputs and "labels" in outputs:
        lines += ["## The label map's cost: end to end / network only", "",
                  "cells mixed: share of low-resolution cells where classes meet (interpolated pixel by pixel, the "
                  "rest is one gather), with their mean and largest number of candidate classes, for this input "
                  "and these random weights; a trained network has more boundaries.", "",
                  "| model | cells mixed | candidates (mean / max) | " + " | ".join(settings) + " |",
                  "|---|---:|---:|" + "---:|" * len(settings)]
        for n in names:
            c = result.get("cells", {}).get(n) or {}
            cells = []
            for st in settings:
                a, b = s.get(f"{st} | labels", {}).get(n), s.get(f"{st} | logits", {}).get(n)
                cells.append(f"{a['median_ms'] / b['median_ms']:.2f}" if a and b else "-")
            mixed = f"{100 * c['mixed']:.1f}%" if c else "-"
            cand = f"{c['candidates_mean']:.1f} / {c['candidates_max']}" if c else "-"
            lines.append(f"| {n} | {mixed} | {cand} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Every case", "", "| setting | output | model | variant | median ms | p10 | p90 | CPU ms | runs |",
              "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in result["results"]:
        cpu = f"{r['cpu_median_ms']:.1f}" if r["cpu_time_meaningful"] else "-"
        variant = r["variant"] + (f" ({r['layout']})" if r.get("layout") else "")
        lines.append(f"| {r['setting']} | {r['output']} | {r['model']} | {variant} | {r['median_ms']:.1f} | "
                     f"{r['p10_ms']:.1f} | {r['p90_ms']:.1f} | {cpu} | {r.get('runs', '-')} |")
    lines += ["", "## Protocol", ""] + [f"- **{k}**: {v}" for k, v in p.items()]
    return "\n".join(lines) + "\n"
