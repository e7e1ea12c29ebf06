"""ONNX export of registered models, and ONNX Runtime sessions to run them.

``python -m lemore export --model lemore --num-classes 150 --size 512 512 --out lemore.onnx [--fuse] [--check]``

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)`` by default, ``--exporter dynamo`` for
the torch.export-based one (needs ``onnxscript``). Both export all registered models with outputs equal to
PyTorch's and graphs that run equally fast in ONNX Runtime (measured on LeMoRe and LR-ASPP at 512x512: within
2%). TorchScript is the default because it is 5-10x faster to export (seconds instead of tens of seconds per
model on a 2-core CPU, which keeps ``tests/test_export.py`` over every model fast), writes one self-contained
``.onnx`` file (the dynamo exporter writes weights to a side ``.onnx.data`` file unless told otherwise), and
does not depend on ``torch.export`` tracing transformers' SegFormer code. It is deprecated upstream since
torch 2.9: if it goes, ``--exporter dynamo`` is the drop-in replacement (also tested).

The graph has a static input shape (batch 1, ``--size``): the LeMoRe view matrices are built for one resolution
and the benchmark measures one. Opset 18 (>= 17: LayerNormalization for SegFormer is a single op).
``--fuse`` exports :func:`lemore.models.fuse.fuse_for_inference` of the model (BatchNorm folded, nested
attention branches folded, copies removed); ONNX Runtime folds BatchNorm itself, so for the baselines
``--fuse`` changes nothing measurable, for LeMoRe it removes ops that ORT cannot rewrite.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lemore.registry import create_model, list_models

DEFAULT_OPSET = 18
EXPORTERS = ("torchscript", "dynamo")
OPT_LEVELS = ("disable", "basic", "extended", "all")


class LogitsOnly(nn.Module):
    """Exports ``forward_logits`` (logits at the decoder stride, no resize to the input size)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_logits(x)


class LabelHead(nn.Module):
    """Logits at the decoder stride -> the label map at ``size`` (:func:`lemore.labels.upsampled_argmax`)."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)

    def forward(self, logits):  # (1, K, h, w) -> (1, H, W) int64
        from lemore.labels import upsampled_argmax

        return upsampled_argmax(logits, self.size)


class ResizeHead(nn.Module):
    """Logits at the decoder stride -> logits at ``size``: the models' own final bilinear resize."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)

    def forward(self, logits):  # (1, K, h, w) -> (1, K, H, W)
        return F.interpolate(logits, self.size, mode="bilinear", align_corners=False)


def build_model(name: str, num_classes: int, size: tuple[int, int], *, fuse: bool = False, **overrides) -> nn.Module:
    """A registered model in eval mode; LeMoRe models are built for ``size`` (their view matrices)."""
    if name.startswith("lemore") and "img_size" not in overrides:
        overrides["img_size"] = tuple(size)
    model = create_model(name, num_classes=num_classes, **overrides).eval()
    if fuse:
        from lemore.models.fuse import fuse_for_inference

        model = fuse_for_inference(model, inplace=True)
    return model


def export_onnx(model: nn.Module, path: str | Path, size: tuple[int, int], *, opset: int = DEFAULT_OPSET,
                exporter: str = "torchscript", logits: bool = False, labels: bool = False) -> Path:
    """Export ``model`` (eval mode, batch 1, ``size`` = (H, W)) to ``path``; returns the path.

    The input is named ``image`` (1, 3, H, W) and the output ``logits``: (1, K, H, W), or the decoder-stride
    logits with ``logits=True``; with ``labels=True`` the output is ``labels``, (1, H, W) int64, the argmax of
    the upsampled logits computed without upsampling them (:mod:`lemore.labels`; exact but at float ties): the
    network's logits graph with :class:`LabelHead`'s graph attached (:func:`export_heads`).
    """
    if logits and labels:
        raise ValueError("export either logits=True (decoder-stride logits) or labels=True (label map), not both")
    if labels:
        return export_heads(model, Path(path).parent, size, heads=("labels",), opset=opset, exporter=exporter,
                            names={"labels": Path(path).name})["labels"]
    _check_export_args(opset, exporter)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_view_size(model, size)
    module = LogitsOnly(model) if logits else model
    _export_module(module.eval(), torch.randn(1, 3, *size), path, "image", "logits", opset, exporter)
    return path


def export_heads(model: nn.Module, folder: str | Path, size: tuple[int, int], *,
                 heads=("logits", "labels", "output"), opset: int = DEFAULT_OPSET, exporter: str = "torchscript",
                 names: dict[str, str] | None = None) -> dict[str, Path]:
    """Export the network once and attach output heads; returns ``{head: path}``.

    ``logits``: the decoder-stride logits (``forward_logits``); ``labels``: (1, H, W) int64 label map
    (:class:`LabelHead`); ``output``: (1, K, H, W) logits at the input size (:class:`ResizeHead`, the models'
    own final resize, so the same graph as exporting ``model`` itself). The heads are traced on their own, with
    logits of the network's shape, and joined to the network graph with ``onnx.compose`` (tracing the network
    once instead of once per head).
    """
    import onnx

    _check_export_args(opset, exporter)
    bad = sorted(set(heads) - {"logits", "labels", "output"})
    if bad:
        raise ValueError(f"unknown head(s) {bad}; choose from ['logits', 'labels', 'output']")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _check_view_size(model, size)
    names = {h: f"{type(model).__name__.lower()}_{h}.onnx" for h in heads} | (names or {})
    x = torch.randn(1, 3, *size)
    net_path = folder / names.get("logits", f".{type(model).__name__.lower()}_logits.tmp.onnx")
    k, h, w = _export_module(LogitsOnly(model).eval(), x, net_path, "image", "logits", opset, exporter).shape[1:]
    out = {"logits": net_path} if "logits" in heads else {}
    net = onnx.load(str(net_path))
    _rename_output(net, "logits", "decoder_logits")  # the head's output takes the public name
    for head in [h_ for h_ in heads if h_ != "logits"]:
        head_path = folder / f".{head}_head.tmp.onnx"
        # example logits: smooth regions with a margin (a few mixed cells), so that tracing is quick
        example = F.interpolate(torch.randn(1, k, 3, 3) * 4, size=(h, w), mode="bilinear", align_corners=False)
        module = LabelHead(size) if head == "labels" else ResizeHead(size)
        _export_module(module, example, head_path, "logits", "labels" if head == "labels" else "logits", opset,
                       "torchscript")  # the head's data-dependent shapes: TorchScript tracing handles them
        head_model = onnx.load(str(head_path))
        head_path.unlink()
        head_model.ir_version = net.ir_version
        head_model = onnx.compose.add_prefix(head_model, "head/")  # no name shared with the network graph
        merged = onnx.compose.merge_models(net, head_model, io_map=[("decoder_logits", head_model.graph.input[0].name)])
        _rename_output(merged, merged.graph.output[0].name, "labels" if head == "labels" else "logits")
        out[head] = folder / names[head]
        onnx.save(merged, str(out[head]))
    if "logits" not in heads:
        net_path.unlink()
    return out


def _rename_output(model, old: str, new: str) -> None:
    for node in model.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for o in model.graph.output:
        if o.name == old:
            o.name = new


def _check_export_args(opset: int, exporter: str) -> None:
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter {exporter!r}; choose from {EXPORTERS}")
    if opset < 17:
        raise ValueError(f"opset {opset}: use 17 or newer")


def _export_module(module: nn.Module, x: torch.Tensor, path: Path, in_name: str, out_name: str, opset: int,
                   exporter: str) -> torch.Tensor:
    """Export ``module`` traced on ``x``; returns its eager output."""
    with torch.no_grad():
        out = module(x)  # fills the fused model's caches of resampled view matrices: constants in the graph
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic; the TorchScript deprecation note
        if exporter == "torchscript":
            torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=opset,
                              input_names=[in_name], output_names=[out_name], do_constant_folding=True)
        else:
            program = torch.onnx.export(module, (x,), dynamo=True, opset_version=opset,
                                        input_names=[in_name], output_names=[out_name], verbose=False)
            program.save(str(path), external_data=False)
    return out


def _check_view_size(model: nn.Module, size: tuple[int, int]) -> None:
    from lemore.models.lemore import AxisMix

    build = getattr(getattr(model, "cfg", None), "img_size", None)
    if build is not None and (size[0] % 64 or size[1] % 64):
        # LeMoRe pools every stage to ceil(H/64) x ceil(W/64): with H or W not a multiple of 64 that is an
        # adaptive pooling with unequal windows, which torch.onnx rejects or (seen for 96x128) exports wrongly.
        fix = tuple(-(-n // 64) * 64 for n in size)
        raise ValueError(f"ONNX export of LeMoRe needs H and W divisible by 64, got {tuple(size)}; pad the input "
                         f"to {fix} (or export {tuple(n // 64 * 64 or 64 for n in size)})")
    sizes = {m.axis: m.weight.shape[0] for m in model.modules() if isinstance(m, AxisMix)}
    if sizes and build is not None and tuple(build) != tuple(size):
        raise ValueError(f"LeMoRe built for {tuple(build)} cannot be traced at {tuple(size)} (its view matrices "
                         f"would be resampled inside the graph): build it for {tuple(size)} (build_model does) "
                         "or export fuse_for_inference(model), which resamples them once")


def ort_session(path: str | Path, *, threads: int | None = None, opt_level: str = "all", profile: bool = False,
                spinning: bool = True):
    """An ONNX Runtime CPU session. ``threads``: intra-op threads (None: ORT's default, all cores).

    ``spinning=False`` stops idle worker threads from spin-waiting between ops: on a shared machine the spinning
    threads of one session compete with the next session's work and with other processes.
    """
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[opt_level]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if threads:
        so.intra_op_num_threads = threads
    so.enable_profiling = profile
    if profile:  # end_profiling() returns the JSON's path; not the working directory
        import tempfile

        so.profile_file_prefix = str(Path(tempfile.gettempdir()) / "lemore_ort_profile")
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_onnx(session, x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def max_abs_diff(model: nn.Module, path: str | Path, x: torch.Tensor, *, logits: bool = False) -> float:
    """Largest |ORT - PyTorch| on input ``x`` (the model run in eval mode, no grad)."""
    with torch.no_grad():
        ref = (model.forward_logits(x) if logits else model(x)).numpy()
    out = run_onnx(ort_session(path, threads=1), x)
    if out.shape != ref.shape:
        raise AssertionError(f"ONNX output shape {out.shape} != PyTorch {ref.shape}")
    return float(np.abs(out - ref).max())


def label_agreement(model: nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """Fraction of pixels where a ``labels`` export run in ORT equals PyTorch's naive upsample-then-argmax."""
    from lemore.labels import naive_labels

    with torch.no_grad():
        ref = naive_labels(model.forward_logits(x), x.shape[-2:]).numpy()
    out = run_onnx(ort_session(path, threads=1), x)
    if out.shape != ref.shape:
        raise AssertionError(f"ONNX labels shape {out.shape} != PyTorch {ref.shape}")
    return float((out == ref).mean())


# ------------------------------------------------------------------------------------------------------ CLI
def add_cli_arguments(p) -> None:
    p.add_argument("--model", required=True, help=f"registered model: {', '.join(list_models())}")
    p.add_argument("--num-classes", type=int, default=None, help="default 150 (1000 for lemore_cls)")
    p.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="input size (default 512 512; 224 224 for lemore_cls)")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--fuse", action="store_true", help="export fuse_for_inference(model) (BN folded etc.)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--logits", action="store_true", help="export forward_logits (no resize to the input size)")
    out.add_argument("--labels", action="store_true",
                     help="export the label map at the input size, (1, H, W) int64, without upsampling the logits")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--exporter", choices=EXPORTERS, default="torchscript")
    p.add_argument("--check", action="store_true", help="run the export in ONNX Runtime and compare with PyTorch")


def cli_main(args) -> int:
    if args.model not in list_models():
        raise SystemExit(f"unknown model {args.model!r}; choose from {list_models()}")
    cls = args.model == "lemore_cls"
    size = tuple(args.size) if args.size else ((224, 224) if cls else (512, 512))
    k = args.num_classes or (1000 if cls else 150)
    if (args.logits or args.labels) and cls:
        flag = "--logits" if args.logits else "--labels"
        raise SystemExit(f"{flag}: lemore_cls is a classifier (it has no forward_logits); drop {flag}")
    model = build_model(args.model, k, size, fuse=args.fuse)
    path = export_onnx(model, args.out, size, opset=args.opset, exporter=args.exporter, logits=args.logits,
                       labels=args.labels)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opset {args.opset}, {args.exporter} exporter)")
    if args.check:
        torch.manual_seed(0)
        x = torch.randn(1, 3, *size)
        if args.labels:
            same = label_agreement(model, path, x)
            print(f"ONNX Runtime labels equal to PyTorch's naive argmax on {100 * same:.4f}% of pixels")
            return 0 if same > 0.9999 else 1
        diff = max_abs_diff(model, path, x, logits=args.logits)
        print(f"max |ONNX Runtime - PyTorch| = {diff:.2e}")
        if diff > 1e-3:
            print("outputs differ: see tests/test_export.py for the tolerance")
            return 1
    return 0
