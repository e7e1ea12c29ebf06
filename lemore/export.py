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


class LabelsOnly(nn.Module):
    """Exports the label map at the input size (:func:`lemore.predict.upsampled_argmax` of ``forward_logits``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):  # (1, 3, H, W) -> (1, H, W) int64
        from lemore.labels import upsampled_argmax

        return upsampled_argmax(self.model.forward_logits(x), x.shape[-2:])


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
    the upsampled logits computed without upsampling them (:mod:`lemore.predict`; exact but at float ties).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter {exporter!r}; choose from {EXPORTERS}")
    if opset < 17:
        raise ValueError(f"opset {opset}: use 17 or newer")
    if logits and labels:
        raise ValueError("export either logits=True (decoder-stride logits) or labels=True (label map), not both")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_view_size(model, size)
    module = LabelsOnly(model) if labels else LogitsOnly(model) if logits else model
    module.eval()
    out_name = "labels" if labels else "logits"
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        module(x)  # fills the fused model's caches of resampled view matrices: constants in the graph
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic; the TorchScript deprecation note
        if exporter == "torchscript":
            torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=opset,
                              input_names=["image"], output_names=[out_name], do_constant_folding=True)
        else:
            program = torch.onnx.export(module, (x,), dynamo=True, opset_version=opset,
                                        input_names=["image"], output_names=[out_name], verbose=False)
            program.save(str(path), external_data=False)
    return path


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
