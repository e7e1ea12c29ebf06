"""Official checkpoints of the peers, loaded safely and mapped onto this project's models.

A user who has the authors' ADE20K weights can evaluate them with this project's pipeline and compare with the
published numbers (TopFormer-T 33.6 mIoU, SeaFormer-T 35.0, SegFormer-B0 37.4)::

    python -m lemore eval --official TopFormer-T_512x512_2x8_160k-33.6.pth --model topformer_t --dataset ade20k \\
        --set data.root=/data/ADEChallengeData2016
    python -m lemore eval --official segformer-b0-finetuned-ade-512-512/ --model segformer_b0 --dataset ade20k

What each family's file looks like (:data:`FORMATS`):

* ``topformer_t`` / ``seaformer_t``: an mmseg ``.pth`` file, ``{"meta": {...}, "state_dict": {...}[, "optimizer"]}``,
  keys such as ``backbone.tpm.layer1.conv.0.c.weight`` and ``decode_head.conv_seg.weight``. Each model file's
  ``official_key`` maps them onto ours (a rule per block, written from the official code).
* ``segformer_b0``: a Hugging Face ``save_pretrained`` folder (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``, e.g. ``nvidia/segformer-b0-finetuned-ade-512-512``) with the hub's key names
  (transformers 4's), renamed by transformers' own conversion mapping (:func:`lemore.models.segformer.hub_key_renamer`)
  and prefixed with our wrapper's ``net.``; ``config.json`` must describe MiT-B0 with the dataset's classes.

Safety: nothing in a checkpoint runs. ``.safetensors`` has no code at all; ``.pth`` / ``.bin`` files are read with
``torch.load(weights_only=True)``. mmseg's ``meta`` may hold numpy scalars and arrays (e.g. a seed or an iteration
counter); if a weights-only load fails only because of such *data-only* numpy globals (:data:`NUMPY_DATA_GLOBALS`),
the file is read again with exactly those allowed, and any other global is refused with its name.

Strictness: every official key must map to one of ours (else: the unmapped keys are named), every one of our keys
must be filled (else: the missing ones), and every shape must agree (else: the key and both shapes), all with the
file's name. Tested with state dicts that carry the official names and shapes (``tests/fixtures/*_official_keys.json``,
derived from the official code, see ``tests/fixtures/README.md``): no official weights can be downloaded here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lemore.checkpoint import CheckpointError, load_checkpoint, load_state_dict, load_weights

__all__ = ["FORMATS", "NUMPY_DATA_GLOBALS", "convert_state_dict", "load_official", "official_key_function",
           "read_official", "safe_torch_load"]


def _segformer_key_function() -> Callable[[str], str | None]:
    """Hub names (transformers 4's, e.g. ``segformer.encoder.block.0.0.attention.self.query.weight``) -> ours:
    transformers' own renaming to its current module names, then our wrapper's ``net.`` prefix."""
    from lemore.models.segformer import SegFormer, hub_key_renamer

    rename = hub_key_renamer(SegFormer(num_classes=2).net)

    def key(k: str) -> str | None:
        return "net." + rename(k) if k.startswith(("segformer.", "decode_head.")) else None

    return key


def official_key_function(model: str) -> Callable[[str], str | None]:
    """``official key -> our key`` (None: not one of ``model``'s) for a model with an official format."""
    if model == "topformer_t":
        from lemore.models.topformer import official_key

        return official_key
    if model == "seaformer_t":
        from lemore.models.seaformer import official_key

        return official_key
    if model == "segformer_b0":
        return _segformer_key_function()
    raise ValueError(f"no official checkpoint format for model {model!r}; choose from {sorted(FORMATS)}")


#: Registry name -> what its official checkpoint is (the ``--official`` argument of ``lemore eval``).
FORMATS = {
    "topformer_t": "mmseg .pth from hustvl/TopFormer (e.g. TopFormer-T_512x512_2x8_160k-33.6.pth)",
    "seaformer_t": "mmseg .pth from fudan-zvg/SeaFormer (SeaFormer-T_512x512_2x8_160k, 35.0 mIoU)",
    "segformer_b0": "Hugging Face folder (config.json + model.safetensors or pytorch_model.bin), e.g. "
                    "nvidia/segformer-b0-finetuned-ade-512-512",
}


def _numpy_data_globals() -> dict[str, Any]:
    """Pickle names of numpy's data-only types (scalars, dtypes, arrays of them) -> the objects."""
    from numpy._core import multiarray

    out: dict[str, Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy < 2 and >= 2 pickles
        out[f"{mod}.scalar"] = multiarray.scalar
        out[f"{mod}._reconstruct"] = multiarray._reconstruct
    out["numpy.dtype"] = np.dtype
    out["numpy.ndarray"] = np.ndarray
    for name in dir(np.dtypes):  # numpy >= 1.25 pickles dtypes by their class, e.g. numpy.dtypes.Int64DType
        cls = getattr(np.dtypes, name)
        if name.endswith("DType") and isinstance(cls, type) and name not in ("ObjectDType", "StringDType"):
            out[f"numpy.dtypes.{name}"] = cls
    return out


#: The only globals a checkpoint may use beyond torch's weights-only set: numpy scalars, dtypes and arrays.
NUMPY_DATA_GLOBALS = tuple(sorted(_numpy_data_globals()))


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)``, allowing :data:`NUMPY_DATA_GLOBALS` and nothing else.

    Raises:
        CheckpointError: naming the file and, for an unsafe file, the globals it would need.
    """
    path = Path(path)
    try:
        return load_checkpoint(path)
    except CheckpointError as e:
        first_error = e
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - not a zip checkpoint (legacy format): only the plain weights-only load
        raise first_error from None
    refused = sorted(set(needed) - set(NUMPY_DATA_GLOBALS))
    if not needed or refused:
        raise CheckpointError(f"refused to load {str(path)!r}: it needs the globals {refused or needed}, which are "
                              f"not data; a model file is data, never code (torch.load weights_only=True allows "
                              f"tensors, plain containers and numpy scalars/arrays only)") from None
    # All of them, not only the globals named in the file: unpickling np.dtype("int64") builds an Int64DType instance,
    # whose class must be allowed too.
    with torch.serialization.safe_globals([(obj, name) for name, obj in _numpy_data_globals().items()]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0]}") from None


def read_official(model: str, path: str | os.PathLike, num_classes: int | None = None) -> dict[str, torch.Tensor]:
    """The state dict stored in an official checkpoint of ``model`` (see :data:`FORMATS`), safely loaded.

    Raises:
        FileNotFoundError: ``path`` does not exist (or a folder without weights).
        CheckpointError: unsafe or unreadable, not a state dict, or a Hugging Face config that is not ``model``'s.
    """
    if model not in FORMATS:
        raise ValueError(f"no official checkpoint format for model {model!r}; choose from {sorted(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"official checkpoint {str(path)!r} does not exist ({model}: {FORMATS[model]})")
    if model == "segformer_b0":
        return _read_hf_segformer(path, num_classes)
    if path.is_dir():
        raise CheckpointError(f"{str(path)!r} is a folder; {model} needs one file: {FORMATS[model]}")
    obj = safe_torch_load(path)
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else obj
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = sorted(obj)[:10] if isinstance(obj, Mapping) else type(obj)
        raise CheckpointError(f"{str(path)!r} holds no state dict (an mmseg checkpoint has a 'state_dict' entry "
                              f"of name -> tensor); found {found}")
    return dict(state)


def _read_hf_segformer(path: Path, num_classes: int | None) -> dict[str, torch.Tensor]:
    if not path.is_dir():
        raise CheckpointError(f"{str(path)!r}: segformer_b0 needs a Hugging Face save_pretrained folder "
                              "(config.json + model.safetensors or pytorch_model.bin)")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{str(cfg_file)!r} not found: {FORMATS['segformer_b0']}")
    try:
        cfg = json.loads(cfg_file.read_text())
    except ValueError as e:
        raise CheckpointError(f"{str(cfg_file)!r} is not valid JSON: {e}") from None
    from lemore.models.segformer import mit_b0_config

    want = mit_b0_config(num_classes or int(cfg.get("num_labels", len(cfg.get("id2label", {})) or 150)))
    bad = [f"{k}: {cfg.get(k)!r} (MiT-B0: {getattr(want, k)!r})"
           for k in ("hidden_sizes", "depths", "sr_ratios", "num_attention_heads", "mlp_ratios", "patch_sizes",
                     "strides", "decoder_hidden_size") if k in cfg and cfg[k] != getattr(want, k)]
    labels = cfg.get("num_labels", len(cfg["id2label"]) if "id2label" in cfg else None)
    if num_classes is not None and labels is not None and labels != num_classes:
        bad.append(f"num_labels: {labels} (the dataset has {num_classes} classes)")
    if bad:
        raise CheckpointError(f"{str(cfg_file)!r} does not describe SegFormer-B0 for this dataset: {'; '.join(bad)}")
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return load_weights(path / name)  # safetensors, or weights-only torch.load
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {str(path)!r}")


def convert_state_dict(model: str, state: Mapping[str, torch.Tensor], *, source: str = "<state dict>",
                       target: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Rename an official state dict of registry model ``model`` to this project's keys.

    With ``target`` (the model to load into), every renamed key must be one of its keys with the same shape, and
    every one of its keys must be filled.

    Raises:
        CheckpointError: naming the file (``source``) and the official keys that map to nothing (or to no key of
            ``target``), keys mapped twice, shape mismatches (official key, our key, both shapes), missing keys.
    """
    fn = official_key_function(model)
    own = target.state_dict() if target is not None else None
    out: dict[str, torch.Tensor] = {}
    unknown, clash, shapes = [], [], []
    for key, value in state.items():
        new = fn(key)
        if new is None or (own is not None and new not in own):
            unknown.append(key)
        elif new in out:
            clash.append(f"{key} -> {new}")
        else:
            if own is not None and tuple(value.shape) != tuple(own[new].shape):
                shapes.append(f"{key} (ours: {new}): checkpoint {tuple(value.shape)} vs model {tuple(own[new].shape)}")
            out[new] = value
    missing = sorted(k for k in own if k not in out) if own is not None else []
    problems = ([f"{len(unknown)} keys that are not {model}'s: {_short(unknown)}"] if unknown else []) + \
               ([f"keys mapped twice: {_short(clash)}"] if clash else []) + \
               ([f"{len(shapes)} shape mismatches: {_short(shapes)}"] if shapes else []) + \
               ([f"{len(missing)} of our keys missing: {_short(missing)}"] if missing else [])
    if problems:
        raise CheckpointError(f"official checkpoint {source!r} does not fit {model}: " + "; ".join(problems)
                              + f". Expected: {FORMATS[model]}" + (" for this number of classes" if shapes else ""))
    return out


def load_official(model: nn.Module, name: str, path: str | os.PathLike, num_classes: int | None = None) -> nn.Module:
    """Load the official checkpoint ``path`` of registry model ``name`` into ``model``, strictly; returns ``model``.

    Raises:
        CheckpointError: unsafe / unreadable file, or a state dict that does not fit (see :func:`convert_state_dict`).
    """
    state = convert_state_dict(name, read_official(name, path, num_classes), source=str(path), target=model)
    load_state_dict(model, state, source=str(path), strict=True)  # checked above; this also says so
    return model


def _short(items: list[str], n: int = 10) -> str:
    return str(items[:n]) + (f" ... (+{len(items) - n} more)" if len(items) > n else "")
