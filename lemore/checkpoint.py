"""Checkpoint files: atomic writes, safe loads, and state-dict loading that says exactly what did not fit.

* Writes are atomic: the bytes go to a temporary file in the same directory, are fsync'ed, then
  ``os.replace``'d over the target (and the directory entry is fsync'ed), so a run killed mid-save leaves
  the previous checkpoint intact instead of a truncated one.
* Loads always use ``torch.load(..., weights_only=True)``: a model file is data, never code. Only tensors and
  plain containers/scalars unpickle; anything else (a pickled class, a ``__reduce__`` payload) is refused.
  Every object we save (RNG states included) is therefore converted to tensors / lists / dicts first.
* Encoder weights from ``lemore pretrain`` are ``.safetensors`` (no pickle at all) or weights-only ``.pt``.
* A write that fails (disk full, read-only file system) raises :class:`WriteError` naming the file and saying
  that the previous version is intact; :func:`check_writable` and :func:`check_free_space` let a run find out
  before it starts, and :func:`remove_stale_temp_files` clears the temp files a killed writer leaves behind.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lemore.faults import maybe_fault
from lemore.metrics import jsonable


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, is unsafe, or does not fit the model."""


class WriteError(OSError):
    """A file or folder that cannot be written (disk full, read-only, not a folder); keeps the ``errno``."""


# ------------------------------------------------------------------------------------------------- writing
#: Temp files of :func:`atomic_write_bytes` / :func:`check_writable`: ``.<target name>.<8 random chars>.tmp``
#: (``tempfile.mkstemp``'s names). Only a writer killed between writing and renaming leaves one behind.
_TEMP_FILE = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{8}\.tmp$")


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fault_key: str | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, ``os.replace``).

    Raises:
        WriteError: the folder cannot be created or the file cannot be written (the message names the file
            and says that the previous version, if any, is untouched); no temp file is left behind.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Same directory: os.replace is only atomic within one file system.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        maybe_fault("write", fault_key or path.name)  # tests: a kill / ENOSPC between the write and the rename
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            kept = f"the previous {path.name} is intact" if path.is_file() else f"{path.name} was not written"
            raise WriteError(e.errno, f"cannot write {str(path)!r} ({e.strerror or e}); {kept}. Free space "
                             "or choose a writable folder (out_dir / --run-dir / --results-dir)") from e
        raise
    _fsync_dir(path.parent)
    return path


def check_writable(directory: str | os.PathLike, what: str = "folder") -> Path:
    """Create ``directory`` if needed and prove that a file can be written there (a probe, removed at once).

    A run calls this for its run and results folders before it trains, so a read-only or mistyped folder
    fails in a second, not after hours of training. (``os.access`` is not enough: it says yes to root on a
    read-only mount, and to anyone on a folder whose disk is full.)

    Raises:
        WriteError: naming the folder, what it is for, and the reason.
    """
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=d)
        try:
            os.write(fd, b"lemore")
            os.fsync(fd)
            maybe_fault("probe", d.name)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise WriteError(e.errno, f"the {what} {str(d)!r} is not writable ({e.strerror or e}); nothing was "
                         "run. Choose another folder or fix its permissions / mount") from e
    return d


def check_free_space(directory: str | os.PathLike, need_bytes: int, what: str = "checkpoints") -> None:
    """Raise :class:`WriteError` (ENOSPC) when the file system of ``directory`` has less than ``need_bytes``."""
    free = shutil.disk_usage(directory).free
    if free < need_bytes:
        raise WriteError(errno.ENOSPC, f"only {free / 2**20:.1f} MiB free under {str(directory)!r}, but the "
                         f"{what} need about {need_bytes / 2**20:.1f} MiB; free some space before training")


def remove_stale_temp_files(directory: str | os.PathLike, target: str | None = None) -> list[Path]:
    """Delete the temp files a killed writer left in ``directory`` (all of them, or only those of ``target``).

    Call it only where no other process is writing (a run's own folder, or ``target`` = this run's file):
    another writer's temp file in flight would be deleted under it.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    for p in d.iterdir():
        m = _TEMP_FILE.match(p.name)
        if m and p.is_file() and (target is None or m["target"] == target):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented, strict JSON (NaN -> null)."""
    text = json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode())


def _fsync_dir(d: Path) -> None:
    # Makes the rename itself durable; not supported on every platform/file system, hence best effort.
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically. ``obj`` must be weights-only loadable (tensors, dicts,
    lists, tuples, str/int/float/bool/None), which this checks before writing so a bad save fails loudly."""
    buf = io.BytesIO()
    torch.save(dict(obj), buf)
    try:  # refuse to write what we could not read back safely
        torch.load(io.BytesIO(buf.getvalue()), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refusing to save {str(path)!r}: it holds objects a weights-only load rejects "
                              f"(convert them to tensors/plain containers first): {e}") from None
    key = f"{Path(path).name}@{obj['iteration']}" if "iteration" in obj else None
    return atomic_write_bytes(path, buf.getvalue(), fault_key=key)


# ------------------------------------------------------------------------------------------------- reading
def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True`` and turn every failure into a :class:`CheckpointError`
    that names the file: missing, truncated/corrupt, or holding pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes): the write was interrupted")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refused to load {str(path)!r}: it contains objects other than tensors and plain containers, "
            f"and a model file is data, never code (torch.load weights_only=True): {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r} ({path.stat().st_size} bytes): it is "
                              f"truncated or corrupt ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def load_weights(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file, a weights-only ``.pt`` state dict, or a lemore checkpoint
    (``{"model": state_dict, ...}`` as written by ``train``: ``model.pt`` / ``last.pt``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"cannot read safetensors file {str(path)!r}: truncated or corrupt ({e})") from None
    obj = load_checkpoint(path, map_location)
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{str(path)!r} is not a state dict (name -> tensor) nor a checkpoint with a 'model' "
                              "entry")
    return dict(obj)


def save_weights(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, *, config: Mapping[str, Any],
                 half: bool = True, **metadata: str) -> Path:
    """Write a model's weights as ``.safetensors`` (no pickle) with its training config in the metadata, atomically.

    ``half``: tensors of two or more dimensions (convolution and linear weights, view matrices) are stored in float16,
    one-dimensional ones (biases, BatchNorm scales and statistics) and integer buffers as they are; loading into the
    float32 model converts them back. Enough is recorded to rebuild the model: ``config`` (``RunCfg.to_dict()``) goes
    into the metadata as JSON (:func:`read_weights_config`), with ``metadata``'s other strings.
    """
    import json

    from safetensors.torch import save

    def stored(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().cpu()
        t = t.half() if half and t.is_floating_point() and t.ndim >= 2 else t
        return t.contiguous()  # a model trained in channels_last keeps that layout in its state dict

    tensors = {k: stored(v) for k, v in state_dict.items()}
    meta = {"format": "lemore", "config": json.dumps(config), "dtype": "float16 (ndim >= 2)" if half else "as trained",
            **{k: str(v) for k, v in metadata.items()}}
    return atomic_write_bytes(path, _sorted_header(save(tensors, metadata=meta)))


def _sorted_header(blob: bytes) -> bytes:
    """A safetensors file with its JSON header's keys sorted, so that the same weights and metadata give the same bytes.

    safetensors writes the metadata in hash-map order, which changes from one call to the next; a file whose bytes
    change when nothing did makes a pipeline's downstream stages look stale. The format: 8 bytes of header length
    (little-endian), the header (JSON, padded with spaces to a multiple of 8), the tensor data, whose offsets are
    relative to the data and so unchanged.
    """
    import json

    n = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + blob[8 + n :]


def read_weights_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The training config stored in a ``.safetensors`` file by :func:`save_weights`; None if it has none."""
    import json

    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read safetensors file {str(path)!r}: truncated or corrupt ({e})") from None
    if "config" not in meta:
        return None
    try:
        return json.loads(meta["config"])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{str(path)!r}: its metadata 'config' is not valid JSON ({e})") from None


def load_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "<state dict>",
    strict: bool = True,
) -> tuple[list[str], list[str]]:
    """Load ``state_dict`` into ``model``; explain any mismatch.

    Shape mismatches always raise (``nn.Module.load_state_dict`` would too, but without naming the file).
    With ``strict``, missing or unexpected keys raise a :class:`CheckpointError` naming the checkpoint
    (``source``), the model class and the keys; without it they are returned for the caller to report.
    A ``module.`` prefix (a DDP-wrapped model saved as is) is stripped.

    Returns:
        (missing_keys, unexpected_keys)
    """
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    own = model.state_dict()
    model_name = type(model).__name__
    shape_bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                 for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    problems = []
    if shape_bad:
        problems.append(f"{len(shape_bad)} shape mismatches: {_short(shape_bad)}")
    if strict and missing:
        problems.append(f"{len(missing)} missing keys: {_short(missing)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_short(unexpected)}")
    if problems:
        raise CheckpointError(f"checkpoint {source!r} does not fit model {model_name}: " + "; ".join(problems)
                              + ". Was it written for another model (model.name) or num_classes?")
    model.load_state_dict(sd, strict=False)
    return missing, unexpected


def _short(items: list[str], n: int = 10) -> str:
    return str(items[:n]) + (f" ... (+{len(items) - n} more)" if len(items) > n else "")
