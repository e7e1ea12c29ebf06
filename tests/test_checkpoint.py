"""Atomic writes, weights-only (safe) loading, and clear errors for files that do not fit."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

import lemore
from lemore.checkpoint import (
    CheckpointError,
    atomic_write_json,
    load_checkpoint,
    load_state_dict,
    load_weights,
    save_checkpoint,
)


class _Payload:
    """Unpickling this runs ``os.makedirs(marker)``: a stand-in for arbitrary code in a model file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_roundtrip_and_no_temp_files(tmp_path):
    obj = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "iteration": 7, "config": {"a": (1, 2)}, "rng": [None]}
    path = save_checkpoint(obj, tmp_path / "last.pt")
    out = load_checkpoint(path)
    assert torch.equal(out["model"]["w"], obj["model"]["w"]) and out["iteration"] == 7
    assert out["config"]["a"] == (1, 2)
    save_checkpoint({"iteration": 8}, path)  # replacing an existing file
    assert load_checkpoint(path)["iteration"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no .tmp left behind


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload(str(marker))}, path)
    # The payload is real: a plain (unsafe) torch.load executes it.
    torch.load(path, weights_only=False)
    assert marker.is_dir()
    marker.rmdir()
    with pytest.raises(CheckpointError, match="refused to load .*evil.pt.*data, never code"):
        load_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        load_weights(path)
    assert not marker.exists()


def test_saving_an_unsafe_object_fails_before_writing(tmp_path):
    with pytest.raises(CheckpointError, match="refusing to save"):
        save_checkpoint({"x": _Payload(str(tmp_path / "m"))}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_truncated_and_empty_files(tmp_path):
    path = save_checkpoint({"model": {"w": torch.randn(64, 64)}}, tmp_path / "last.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="last.pt.*truncated or corrupt"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "enc.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="enc.safetensors"):
        load_weights(bad)


def test_wrong_model_names_the_keys(tmp_path):
    torch.manual_seed(0)
    seg = lemore.create_model("lemore", num_classes=8, img_size=64)
    path = save_checkpoint({"model": seg.state_dict()}, tmp_path / "model.pt")
    # Same architecture, other num_classes: the classifier's shapes differ.
    other = lemore.create_model("lemore", num_classes=5, img_size=64)
    with pytest.raises(CheckpointError) as e:
        load_state_dict(other, load_weights(path), source=str(path))
    msg = str(e.value)
    assert "model.pt" in msg and "LeMoRe" in msg and "classifier.weight: checkpoint (8, 96, 1, 1) vs model (5, 96, 1, 1)" in msg
    # Another model: missing and unexpected keys are listed.
    cls = lemore.create_model("lemore_cls", num_classes=10, img_size=64)
    with pytest.raises(CheckpointError) as e:
        load_state_dict(cls, load_weights(path), source=str(path))
    msg = str(e.value)
    assert "LeMoReClassifier" in msg and "missing keys" in msg and "fc.weight" in msg
    assert "unexpected keys" in msg and "classifier.weight" in msg
    # Non-strict: returned, not raised; the matching tensors are loaded.
    sd = {k: v for k, v in seg.state_dict().items() if not k.startswith("classifier")}
    missing, unexpected = load_state_dict(lemore.create_model("lemore", num_classes=8, img_size=64), sd, strict=False)
    assert missing == ["classifier.bias", "classifier.weight"] and unexpected == []


def test_load_weights_formats(tmp_path):
    sd = {"a.weight": torch.randn(3, 3), "b": torch.zeros(2)}
    save_file(sd, tmp_path / "enc.safetensors")
    torch.save(sd, tmp_path / "plain.pt")
    save_checkpoint({"model": sd, "iteration": 1}, tmp_path / "ckpt.pt")
    for name in ("enc.safetensors", "plain.pt", "ckpt.pt"):
        out = load_weights(tmp_path / name)
        assert out.keys() == sd.keys() and all(torch.equal(out[k], sd[k]) for k in sd)
    # DDP-wrapped state dicts ("module." prefix) load into the bare model.
    m = torch.nn.Linear(2, 2)
    load_state_dict(m, {f"module.{k}": v for k, v in m.state_dict().items()})


def test_save_weights_is_byte_stable(tmp_path):
    """The same weights and metadata give the same file (safetensors alone writes its metadata in hash-map order,
    which differs from call to call), and the file still loads with safetensors and keeps its config."""
    from safetensors import safe_open

    from lemore.checkpoint import read_weights_config, save_weights

    sd = {"conv.weight": torch.randn(4, 3, 3, 3), "bn.bias": torch.randn(4), "bn.num_batches_tracked": torch.tensor(7)}
    cfg = {"model": {"name": "lemore"}, "data": {"dataset": "camvid"}}
    blobs = {save_weights(sd, tmp_path / f"w{i}.safetensors", config=cfg, run_name="r", source="s").read_bytes()
             for i in range(6)}
    assert len(blobs) == 1
    path = tmp_path / "w0.safetensors"
    out = load_weights(path)
    assert out["conv.weight"].dtype == torch.float16 and torch.equal(out["conv.weight"], sd["conv.weight"].half())
    assert torch.equal(out["bn.bias"], sd["bn.bias"]) and out["bn.num_batches_tracked"].item() == 7
    assert read_weights_config(path) == cfg
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["run_name"] == "r" and sorted(f.keys()) == sorted(sd)


def test_atomic_json_is_strict(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"miou": float("nan"), "t": (1, 2)})
    assert json.loads(path.read_text()) == {"miou": None, "t": [1, 2]}
