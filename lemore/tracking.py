"""Experiment tracking: Weights & Biases (offline by default) plus a plain ``metrics.jsonl`` that always exists.

* ``cfg.wandb = "offline"`` (default): the W&B run lives under the run directory
  (``<run_dir>/wandb/offline-run-*/run-<id>.wandb``) and needs no network; ``wandb sync <that dir>`` uploads
  it later. ``"online"`` streams to the server the user has configured (``wandb login`` / ``WANDB_API_KEY``);
  ``"disabled"`` turns W&B off. The mode is passed to ``wandb.init``, so it wins over ``WANDB_MODE``.
* Runs are named by the run name and grouped by dataset, so a W&B table row, the run directory and the
  results JSON share one key.
* W&B is never allowed to stop training: any failure (import, init, log, finish) is reported once with
  ``warnings.warn`` and one log line, and the tracker goes on writing ``metrics.jsonl`` only. An ``"online"``
  run that cannot start (no API key, no network: ``wandb.init`` gives up after ``WANDB_INIT_TIMEOUT``
  seconds, 90 by default; W&B reads its environment variables once per process) falls back to an offline run in
  the run directory, so nothing is lost from W&B either: ``wandb sync <run_dir>/wandb/offline-run-*`` uploads it
  later. The final results are written before ``finish()``, so a W&B upload that hangs there loses nothing.
* ``metrics.jsonl`` can be cut back to a byte offset (``truncate_at``): a resumed run restores it to what it held
  when its checkpoint was written (:meth:`Tracker.offset`), so lines that a killed attempt logged after its last
  checkpoint do not appear twice.
* Only rank 0 tracks (``enabled=False`` on the other DDP ranks makes every call a no-op).

:func:`read_offline_run` reads a ``.wandb`` file back without network or W&B service (tests use it).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lemore.checkpoint import atomic_write_json
from lemore.metrics import jsonable

log = logging.getLogger("lemore")

WANDB_PROJECT_ENV = "WANDB_PROJECT"
DEFAULT_PROJECT = "lemore"


class Tracker:
    """Log scalars, tables and images to W&B and to ``<run_dir>/metrics.jsonl``.

    Args:
        run_dir: the run directory; W&B files go under it.
        config: the resolved run config (a plain dict), stored as ``wandb.config``.
        mode: "offline" | "online" | "disabled".
        name: W&B run name (the run name).
        group: W&B group (the dataset).
        run_id: W&B run id; pass the saved one when resuming so the same W&B run continues.
        enabled: False on non-zero DDP ranks.
        job_type: "train" | "eval" | "pretrain".
        truncate_at: cut ``metrics.jsonl`` to this many bytes first (0: start it over); None appends.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        config: Mapping[str, Any],
        *,
        mode: str = "offline",
        name: str | None = None,
        group: str | None = None,
        run_id: str | None = None,
        enabled: bool = True,
        job_type: str = "train",
        truncate_at: int | None = None,
    ):
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"wandb mode {mode!r}; choose from ['disabled', 'offline', 'online']")
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.run = None
        self.run_id = run_id
        self._jsonl = None
        self._wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        jsonl = self.run_dir / "metrics.jsonl"
        if truncate_at is not None and jsonl.is_file() and jsonl.stat().st_size > truncate_at:
            os.truncate(jsonl, truncate_at)
        # Kept open for the run (closed in finish); line-buffered so that a killed run keeps every line.
        self._jsonl = open(jsonl, "a", buffering=1)  # noqa: SIM115
        if mode == "disabled":
            return
        init = dict(dir=str(self.run_dir), project=os.environ.get(WANDB_PROJECT_ENV, DEFAULT_PROJECT), name=name,
                    group=group, job_type=job_type, config=jsonable(dict(config)),
                    reinit="finish_previous")  # several runs in one process (tests, notebooks)
        try:
            import wandb

            self._wandb = wandb
            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(mode=mode, id=run_id, resume="allow" if run_id else None, **init)
            self.run_id = self.run.id
        except Exception as e:  # noqa: BLE001 - W&B must never stop training
            if mode != "online" or self._wandb is None:  # not importable: nothing to fall back to
                self._fail("init", e)
                return
            try:  # a new offline run: an online run id may not exist offline, and vice versa
                self.run = self._wandb.init(mode="offline", **init)
                self.run_id = self.run.id
                self._warn(f"W&B online init failed ({type(e).__name__}: {_first_line(e)}); training goes on with "
                           f"an offline W&B run: `wandb sync {self.run_dir / 'wandb'}/offline-run-*` uploads it")
            except Exception as e2:  # noqa: BLE001
                self._fail("init", e2)

    def offset(self) -> int:
        """Bytes in ``metrics.jsonl`` so far (every line is flushed); pass it back as ``truncate_at`` on resume."""
        if self._jsonl is None:
            return 0
        self._jsonl.flush()
        return os.fstat(self._jsonl.fileno()).st_size

    @property
    def wandb_active(self) -> bool:
        """Whether a W&B run is live (tables and images go only there: skip computing them otherwise)."""
        return self.run is not None

    # ----------------------------------------------------------------------------------------------- logging
    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log scalars (e.g. ``{"train/loss": 0.7, "train/lr": 1e-4}``) at ``step``."""
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _scalar(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(jsonable(record)) + "\n")
        if self.run is not None:
            try:
                self.run.log(dict(metrics), step=int(step))
            except Exception as e:  # noqa: BLE001
                self._fail("log", e)

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int) -> None:
        """A W&B table, e.g. per-class IoU (``columns=["class", "iou"]``). Not written to metrics.jsonl."""
        if not self.enabled or self.run is None:
            return
        try:
            self.run.log({key: self._wandb.Table(columns=list(columns), data=[list(jsonable(r)) for r in rows])},
                         step=int(step))
        except Exception as e:  # noqa: BLE001
            self._fail("log_table", e)

    def log_images(self, key: str, images: Sequence[np.ndarray], step: int, captions: Sequence[str] | None = None) -> None:
        """A few (H, W, 3) uint8 images, e.g. colourised image | ground truth | prediction strips."""
        if not self.enabled or self.run is None or not images:
            return
        try:
            caps = list(captions) if captions is not None else [None] * len(images)
            # One size for all (black padding at the bottom/right): W&B shows a list of images of different
            # sizes wrongly and says so with a warning on the root logger.
            h, w = max(im.shape[0] for im in images), max(im.shape[1] for im in images)
            images = [np.pad(im, ((0, h - im.shape[0]), (0, w - im.shape[1]), (0, 0))) for im in images]
            self.run.log({key: [self._wandb.Image(im, caption=c) for im, c in zip(images, caps)]}, step=int(step))
        except Exception as e:  # noqa: BLE001
            self._fail("log_images", e)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Final values (shown in the W&B runs table); also appended to metrics.jsonl as a summary line."""
        if not self.enabled:
            return
        self._jsonl.write(json.dumps(jsonable({"summary": dict(values)})) + "\n")
        if self.run is not None:
            try:
                for k, v in values.items():
                    self.run.summary[k] = jsonable(v)
            except Exception as e:  # noqa: BLE001
                self._fail("summary", e)

    def finish(self) -> None:
        if not self.enabled:
            return
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as e:  # noqa: BLE001
                self._fail("finish", e)
            self.run = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def _warn(self, msg: str) -> None:
        warnings.warn(msg, RuntimeWarning, stacklevel=4)
        log.warning(msg)

    def _fail(self, what: str, e: Exception) -> None:
        self._warn(f"W&B {what} failed ({type(e).__name__}: {e}); training goes on, metrics.jsonl is still written")
        if self.run is not None and what != "finish":
            try:
                self.run.finish(exit_code=1)
            except Exception as e2:  # noqa: BLE001 - already failing; the first error is the one reported
                log.debug("W&B finish after a failure also failed: %s", e2)
        self.run = None


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""


def _scalar(v: Any) -> Any:
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        return v.item()
    return v


# ------------------------------------------------------------------------------------------ results files
def write_results(
    path: str | os.PathLike,
    *,
    run_name: str,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    **extra: Any,
) -> Path:
    """Atomically write a results JSON: ``{"run_name", "config", "metrics", **extra}`` (NaN -> null)."""
    return atomic_write_json(path, {"run_name": run_name, "config": dict(config), "metrics": dict(metrics), **extra})


# ------------------------------------------------------------------------------------- reading a .wandb file
_BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of (crc32, length, type) + payload
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_wandb_records(path: str | os.PathLike):
    """Yield the ``wandb_internal_pb2.Record`` protobufs of a ``run-<id>.wandb`` file.

    W&B >= 0.19 dropped its Python reader (``wandb.sdk.internal.datastore``) when the internals moved to
    the Go ``wandb-core``; the file format stayed: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then
    LevelDB log records (``<IHB`` header: checksum, length, type FULL/FIRST/MIDDLE/LAST) never straddling a
    32 KiB block, each payload one serialised ``Record``. Checksums are not verified.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{str(path)!r} is not a W&B transaction log (header {data[:7]!r})")
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # a block's tail too short for a record header is zero padding
            pos += left
            continue
        _crc, n, typ = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if typ == 0:  # zero padding up to the end of the block
            pos += left - 7
            continue
        chunk, pos = data[pos:pos + n], pos + n
        if typ == _FULL:
            payload = chunk
        elif typ == _FIRST:
            pending = chunk
            continue
        elif typ == _MIDDLE:
            pending += chunk
            continue
        elif typ == _LAST:
            payload, pending = pending + chunk, b""
        else:
            raise ValueError(f"{str(path)!r}: unknown record type {typ} at byte {pos - n - 7}")
        rec = pb.Record()
        rec.ParseFromString(payload)
        yield rec


def read_offline_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read the (latest) offline W&B run under ``run_dir`` back into plain Python.

    Returns:
        ``{"path", "name", "group", "config": {key: value}, "history": [{key: value}], "summary": {...},
        "complete"}``; nested history keys (tables, images) are joined with "." (``val/predictions._type``).
        ``complete`` is True once the run's final ``exit`` record is in the file: ``wandb-core`` writes the
        file asynchronously and may still be flushing it for a moment after ``run.finish()`` returns.
    """
    files = sorted(Path(run_dir).glob("wandb/*run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no W&B run file (wandb/*run-*/run-*.wandb) under {str(run_dir)!r}")
    out: dict[str, Any] = {"path": str(files[-1]), "name": None, "group": None, "config": {}, "history": [],
                           "summary": {}, "complete": False}

    def key_of(item) -> str:
        return ".".join(item.nested_key) if item.nested_key else item.key

    for rec in iter_wandb_records(files[-1]):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["name"], out["group"] = rec.run.display_name, rec.run.run_group
            for item in rec.run.config.update:
                out["config"][key_of(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out["config"][key_of(item)] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append({key_of(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                if key_of(item):
                    out["summary"][key_of(item)] = json.loads(item.value_json)
        elif kind == "exit":
            out["complete"] = True
    return out
