"""Where LeMoRe's time goes, op by op and block by block, against its FLOPs (ONNX Runtime and eager, 1 thread).

    python benchmarks/latency_ops.py            # ~1 min on 2 cores; writes results/benchmarks/latency_ops.{json,md}

For each model (default LeMoRe and LR-ASPP MobileNetV3-Large at 512x512, network only, fused as in the latency
benchmark): ONNX Runtime's own profile (SessionOptions.enable_profiling, per-node kernel times, median over the
runs) summed per op type and per block of the network (the node names carry the PyTorch module path), next to
fvcore's multiply-accumulates of the same block; and torch.profiler's self CPU time per aten op in eager
(channels_last). "MMAC/ms" is the rate a block runs at: a block far below the model's average costs more than
its FLOPs. Times are per-op sums of medians, so they do not add up exactly to the end-to-end latency. A
diagnostic times LeMoRe with other widths of its 1/2 and 1/4 stages (what ONNX Runtime's channel padding costs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from lemore.export import LogitsOnly, build_model, export_onnx, ort_session
from lemore.models.fuse import fuse_for_inference
from lemore.profiling import available_cores, cpu_info, cpu_model_name, write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]


def _module_path(node_name: str) -> str:
    """'/backbone/stages.0/stages.0.1/dw/dw.0/dw.0.0/Conv' -> 'backbone.stages.0.1.dw.0.0' (TorchScript scopes)."""
    out, prev = [], None
    for comp in [c for c in node_name.split("/") if c][:-1]:
        out.append(comp[len(prev) + 1:] if prev is not None and comp.startswith(prev + ".") else comp)
        prev = comp
    return ".".join(out)


def ort_profile(path: Path, x: np.ndarray, runs: int) -> list[dict]:
    """Per node of the optimized graph: op type, module path, median kernel time (ms)."""
    sess = ort_session(path, threads=1, spinning=False, profile=True)
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(runs + 2):
        sess.run(None, feed)
    prof = Path(sess.end_profiling())
    events = json.loads(prof.read_text())
    prof.unlink()
    times, ops = defaultdict(list), {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            times[name].append(e["dur"] / 1e3)
            ops[name] = e["args"]["op_name"]
    # the first two runs of each node are warm-up
    return [{"node": n, "op": ops[n], "module": _module_path(n), "ms": statistics.median(t[2:] or t)}
            for n, t in times.items()]


def macs_by_module(model: torch.nn.Module, size) -> dict[str, float]:
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(LogitsOnly(model), torch.randn(1, 3, *size))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k.removeprefix("model."): v for k, v in analysis.by_module().items()}


def block_of(module: str, depth: int, macs: dict) -> str:
    """The block a node belongs to: the longest prefix of its module path (at most ``depth`` parts) with
    multiply-accumulates, so that a conv fused with its activation (named after the activation) lands in the
    block of the conv."""
    if not module:
        return "(no module scope: layout reorders, the output conv)"
    parts = module.split(".")[:depth]
    for n in range(len(parts), 0, -1):
        for prefix in ("", "net."):  # torchvision's LR-ASPP sits in the wrapper's `net`, absent from ONNX scopes
            if macs.get(prefix + ".".join(parts[:n]), 0) > 0:
                return prefix + ".".join(parts[:n])
    return ".".join(parts)


#: LeMoRe with other widths of its 1/2 and 1/4 stages: a diagnostic of what ONNX Runtime's NCHWc padding costs
#: (not the paper's model: these change the network)
WIDTH_PROBE = {"paper: stem 20, 1/4 stage 24": {}, "stem 16, 1/4 stage 16": dict(stem_width=16, widths=(16, 48, 80, 96)),
               "stem 16, 1/4 stage 24": dict(stem_width=16), "stem 20, 1/4 stage 32": dict(widths=(32, 48, 80, 96)),
               "stem 32, 1/4 stage 32": dict(stem_width=32, widths=(32, 48, 80, 96))}


def width_probe(size, x: np.ndarray, runs: int, tmp: Path) -> dict:
    """Network-only ORT latency (1 thread, interleaved, thread CPU time) and GMACs of the WIDTH_PROBE variants."""
    import time

    from lemore.profiling import count_flops

    sessions, macs = {}, {}
    for label, kw in WIDTH_PROBE.items():
        model = build_model("lemore", 150, size, **kw)
        macs[label] = count_flops(model, size) / 1e9
        path = export_onnx(fuse_for_inference(model), tmp / f"probe{len(sessions)}.onnx", size, logits=True)
        sessions[label] = ort_session(path, threads=1, spinning=False)
    keys, times = list(sessions), {k: [] for k in sessions}
    for r in range(runs + 2):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            c0 = time.thread_time()
            sessions[k].run(None, {"image": x})
            if r >= 2:
                times[k].append((time.thread_time() - c0) * 1e3)
    return {k: {"gmacs": macs[k], "cpu_ms": statistics.median(v)} for k, v in times.items()}


def eager_profile(model: torch.nn.Module, size, runs: int) -> dict[str, float]:
    """torch.profiler self CPU time per aten op (ms per forward), channels_last, 1 thread."""
    m = model.to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, *size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(2):
            m.forward_logits(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                m.forward_logits(x)
    return {e.key: e.self_cpu_time_total / 1e3 / runs for e in prof.key_averages()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lemore", "lraspp_mobilenet_v3_large"])
    p.add_argument("--size", type=int, nargs=2, default=(512, 512))
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--depth", type=int, default=4, help="module-path depth of a block")
    p.add_argument("--no-probe", action="store_true", help="skip the width diagnostic")
    p.add_argument("--out-dir", default=str(ROOT / "results" / "benchmarks"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    size = tuple(args.size)
    x = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    result = {"protocol": {"machine": f"{cpu_model_name()}, {available_cores()} cores", "size": list(size),
                           "runs": args.runs, "threads": 1, "command": "python benchmarks/latency_ops.py " +
                           " ".join(argv)}, "models": {}}
    lines = ["# Where the time goes: per op and per block, ONNX Runtime and eager, 1 thread", "",
             f"Machine: {result['protocol']['machine']}. {size[0]}x{size[1]}, network only (forward_logits), "
             f"fused models; medians of {args.runs} runs. Command: `{result['protocol']['command']}`.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = build_model(name, 150, size)
            macs = macs_by_module(model, size)
            fused = fuse_for_inference(model)
            path = export_onnx(fused, Path(tmp) / f"{name}.onnx", size, logits=True)
            nodes = ort_profile(path, x, args.runs)
            total_ms = sum(n["ms"] for n in nodes)
            by_op, by_block = defaultdict(float), defaultdict(float)
            count = defaultdict(int)
            for n in nodes:
                by_op[n["op"]] += n["ms"]
                count[n["op"]] += 1
                by_block[block_of(n["module"], args.depth, macs)] += n["ms"]
            eager = eager_profile(fused, size, max(3, args.runs // 4))
            total_macs = macs.get("", sum(v for k, v in macs.items() if "." not in k))
            result["models"][name] = {"ort_total_ms": total_ms, "gmacs": total_macs / 1e9, "ort_by_op": by_op,
                                      "ort_by_block": by_block, "eager_by_op": eager, "nodes": nodes}
            lines += [f"## {name}: {total_macs / 1e9:.2f} GMAC, ONNX Runtime {total_ms:.1f} ms "
                      f"({total_macs / 1e6 / total_ms:.0f} MMAC/ms on average)", "",
                      "| ONNX Runtime op | ms | share | nodes |", "|---|---:|---:|---:|"]
            for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1]):
                lines.append(f"| {op} | {ms:.2f} | {100 * ms / total_ms:.1f}% | {count[op]} |")
            lines += ["", "| block | ms | share | MMAC | share | MMAC/ms |", "|---|---:|---:|---:|---:|---:|"]
            for blk, ms in sorted(by_block.items(), key=lambda kv: -kv[1])[:25]:
                m = macs.get(blk)
                lines.append(f"| {blk} | {ms:.2f} | {100 * ms / total_ms:.1f}% | "
                             + (f"{m / 1e6:.1f} | {100 * m / total_macs:.1f}% | {m / 1e6 / ms:.0f} |"
                                if m else "- | - | - |"))
            eager_total = sum(eager.values())
            lines += ["", f"Eager (channels_last), self CPU time per aten op, {eager_total:.1f} ms in all:", "",
                      "| aten op | ms | share |", "|---|---:|---:|"]
            for op, ms in sorted(eager.items(), key=lambda kv: -kv[1])[:12]:
                lines.append(f"| {op} | {ms:.2f} | {100 * ms / eager_total:.1f}% |")
            lines.append("")
            print(f"{name}: ORT {total_ms:.1f} ms, eager {eager_total:.1f} ms", file=sys.stderr)
        if "lemore" in args.models and not args.no_probe:
            probe = width_probe(size, x, args.runs, Path(tmp))
            result["width_probe"] = probe
            base = probe["paper: stem 20, 1/4 stage 24"]
            lines += ["## Diagnostic: LeMoRe with other widths at 1/2 and 1/4 (not the paper's model)", "",
                      "ONNX Runtime pads channels to its NCHWc block "
                      f"({cpu_info()['nchwc_block']} here): the paper's 20-channel stem and 24-channel 1/4 stage "
                      "run as 32. Network only, 1 thread, thread CPU time, interleaved.", "",
                      "| widths | GMAC | ms | vs paper's widths |", "|---|---:|---:|---:|"]
            for label, v in probe.items():
                lines.append(f"| {label} | {v['gmacs']:.3f} | {v['cpu_ms']:.1f} | {v['cpu_ms'] / base['cpu_ms']:.2f} |")
            lines.append("")
    out = Path(args.out_dir)
    write_json_atomic(out / "latency_ops.json", result)
    write_text_atomic(out / "latency_ops.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
