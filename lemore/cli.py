"""Command line: ``python -m lemore {profile,data,train,eval,pretrain,export,predict} ...``.

Each sub-command lives in the module that does the work; that module defines
``add_cli_arguments(parser)`` and ``cli_main(args) -> int``. Modules are imported only when their command
runs, so ``python -m lemore profile`` does not import the data pipeline.

Errors that bad input causes (a bad config value, a missing or malformed dataset, an unreadable or unsafe
checkpoint, a folder that cannot be written, a missing file, a NaN loss) are printed as one line,
``lemore <command>: error: <message>``, with exit status 1; anything else is a bug and keeps its traceback.
``LEMORE_TRACEBACK=1`` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = {
    "profile": ("lemore.profiling", "params, GFLOPs (fvcore MACs) and latency of registered models"),
    "data": ("lemore.data.check", "verify a dataset tree, or generate the synthetic dataset"),
    "train": ("lemore.engine.train", "fine-tune a segmentation model (the paper's recipe per dataset)"),
    "eval": ("lemore.engine.evaluate", "evaluate a checkpoint: aAcc, mIoU, mAcc, per-class IoU"),
    "pretrain": ("lemore.engine.pretrain", "ImageNet-1K pretraining of the LeMoRe classifier"),
    "export": ("lemore.export", "export a model to ONNX"),
    "predict": ("lemore.labels", "label maps (PNG) of images from a trained checkpoint"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="lemore", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    if not argv or argv[0] not in COMMANDS:
        for name, (_, help_) in COMMANDS.items():
            sub.add_parser(name, help=help_)
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose from {list(COMMANDS)}")
        parser.print_help()
        return 0 if argv else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    p = sub.add_parser(argv[0], help=COMMANDS[argv[0]][1], description=COMMANDS[argv[0]][1])
    module.add_cli_arguments(p)
    args = parser.parse_args(argv)
    try:
        return int(module.cli_main(args) or 0)
    except Exception as e:
        if not _is_input_error(e) or os.environ.get("LEMORE_TRACEBACK"):
            raise
        print(f"lemore {argv[0]}: error: {e}", file=sys.stderr)
        return 1


def _is_input_error(e: Exception) -> bool:
    """Errors whose message says what to fix (the modules are imported already when one is raised)."""
    from lemore.checkpoint import CheckpointError, WriteError
    from lemore.config import ConfigError

    kinds: tuple[type[BaseException], ...] = (ConfigError, CheckpointError, WriteError, FileNotFoundError,
                                              FloatingPointError)
    data = sys.modules.get("lemore.data.io")
    if data is not None:
        kinds += (data.DatasetError,)
    return isinstance(e, kinds)
