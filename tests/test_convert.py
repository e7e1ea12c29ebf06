"""Official checkpoints of the peers: key mapping, strict loading, and safe reading (nothing in a file runs).

No official weights can be downloaded here: the state dicts carry the official key names and shapes
(tests/fixtures/*_official_keys.json, derived from the official code, see tests/fixtures/README.md) with random
values. SegFormer-B0's Hugging Face folder is written by transformers' own ``save_pretrained``, which uses the hub
checkpoints' key names.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import lemore
from lemore.checkpoint import CheckpointError
from lemore.convert import FORMATS, NUMPY_DATA_GLOBALS, convert_state_dict, load_official, read_official

FIXTURES = Path(__file__).parent / "fixtures"
MMSEG_MODELS = ["topformer_t", "seaformer_t"]


class RunsCode:
    """Unpickling this creates a folder: proof that pickled code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def official_state(name: str, num_classes: int = 150) -> dict[str, torch.Tensor]:
    """Random tensors with the official names and shapes (the classifier resized to ``num_classes``)."""
    shapes = json.loads((FIXTURES / f"{name}_official_keys.json").read_text())
    g = torch.Generator().manual_seed(0)
    out = {}
    for key, shape in shapes.items():
        if key.startswith("decode_head.conv_seg."):
            shape = [num_classes, *shape[1:]]
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        else:
            out[key] = torch.randn(shape, generator=g) * 0.1
    return out


def save_mmseg(path: Path, state: dict, **meta) -> Path:
    """An mmseg-style checkpoint: meta (with numpy scalars and arrays, as mmcv writes them), state_dict, optimizer."""
    meta = {"mmseg_version": "0.19.0", "iter": np.int64(160000), "seed": np.int64(0), "lr": np.float64(3e-4),
            "PALETTE": np.zeros((2, 3), np.uint8), "CLASSES": ("wall", "building"), **meta}
    torch.save({"meta": meta, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)
    return path


@pytest.mark.parametrize("name", MMSEG_MODELS)
def test_official_state_dict_converts_and_loads_strictly(name):
    state = official_state(name)
    converted = convert_state_dict(name, state, source="fixture")
    model = lemore.create_model(name, num_classes=150).eval()
    own = model.state_dict()
    assert set(converted) == set(own)  # every official key has one of ours and every one of ours is filled
    assert all(converted[k].shape == own[k].shape for k in own)
    model.load_state_dict(converted, strict=True)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 150, 64, 64) and torch.isfinite(out).all()
    # the values went where the names say: the official classifier is our classifier
    assert torch.equal(dict(model.named_parameters())[_ours(name, "decode_head.conv_seg.weight")],
                       state["decode_head.conv_seg.weight"])


def _ours(name: str, official: str) -> str:
    from lemore.convert import official_key_function

    return official_key_function(name)(official)


@pytest.mark.parametrize("name,official,ours", [
    ("topformer_t", "backbone.tpm.layer3.conv.4.bn.running_var", "backbone.blocks.2.conv.2.1.running_var"),
    ("topformer_t", "backbone.tpm.layer1.conv.2.c.weight", "backbone.blocks.0.conv.1.0.weight"),  # t=1: no expansion
    ("topformer_t", "backbone.SIM.1.global_act.conv.weight", "backbone.injection.0.global_gate.0.weight"),
    ("topformer_t", "backbone.trans.transformer_blocks.3.attn.proj.1.bn.weight",
     "backbone.transformer.3.attn.proj.1.1.weight"),
    ("topformer_t", "decode_head.linear_fuse.conv.weight", "head.0.0.weight"),
    ("seaformer_t", "backbone.smb5.layer1.conv.4.c.weight", "backbone.stages.4.0.conv.2.0.weight"),
    ("seaformer_t", "backbone.trans2.transformer_blocks.1.attn.pos_emb_columnk.pos_embed",
     "backbone.transformers.1.1.attn.col_k.pos_embed"),
    ("seaformer_t", "backbone.trans1.transformer_blocks.0.attn.dwconv.bn.bias",
     "backbone.transformers.0.0.attn.detail_dw.1.bias"),
    ("seaformer_t", "decode_head.fuse2.global_act.bn.weight", "head.fusions.1.global_gate.1.weight"),
])
def test_key_mapping_examples(name, official, ours):
    assert _ours(name, official) == ours


@pytest.mark.parametrize("name", MMSEG_MODELS)
def test_renamed_missing_and_misshaped_keys_are_named(name, tmp_path):
    model = lemore.create_model(name, num_classes=150)
    good = official_state(name)
    key = next(k for k in good if ".layer2." in k and k.endswith(".weight"))

    renamed = dict(good)
    renamed[key.replace(".weight", ".wieght")] = renamed.pop(key)
    path = save_mmseg(tmp_path / "renamed.pth", renamed)
    with pytest.raises(CheckpointError, match="not " + name) as e:
        load_official(model, name, path)
    assert key.replace(".weight", ".wieght") in str(e.value) and "renamed.pth" in str(e.value)

    missing = dict(good)
    del missing[key]
    path = save_mmseg(tmp_path / "missing.pth", missing)
    with pytest.raises(CheckpointError, match="missing") as e:
        load_official(model, name, path)
    assert _ours(name, key) in str(e.value) and "missing.pth" in str(e.value)  # our name: it has no official one

    path = save_mmseg(tmp_path / "ade_vs_city.pth", official_state(name, num_classes=19))
    with pytest.raises(CheckpointError, match="shape") as e:
        load_official(model, name, path)
    assert "decode_head.conv_seg.weight" in str(e.value) and "ade_vs_city.pth" in str(e.value)
    assert "(19, 128, 1, 1)" in str(e.value) or "(19, 96, 1, 1)" in str(e.value)


def test_numpy_meta_is_allowed_and_nothing_else(tmp_path):
    state = official_state("topformer_t")
    path = save_mmseg(tmp_path / "TopFormer-T.pth", state)
    with pytest.raises(Exception):  # a plain weights-only load refuses the numpy meta: the allowlist is exercised
        torch.load(path, weights_only=True)
    loaded = read_official("topformer_t", path)
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    assert "numpy.core.multiarray.scalar" in NUMPY_DATA_GLOBALS and not any("Object" in g for g in NUMPY_DATA_GLOBALS)


def test_a_checkpoint_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    path = save_mmseg(tmp_path / "evil.pth", official_state("topformer_t"), hook=RunsCode(str(marker)))
    torch.load(path, weights_only=False)  # noqa: S614 - proving that the payload is live
    assert marker.is_dir()
    marker.rmdir()
    with pytest.raises(CheckpointError, match="refused to load") as e:
        read_official("topformer_t", path)
    assert "evil.pth" in str(e.value) and "mkdir" in str(e.value)  # the global it would have called is named
    assert not marker.exists(), "pickled code ran"


def test_not_a_state_dict_and_wrong_form(tmp_path):
    torch.save({"meta": {}, "state_dict": {"a": 1}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        read_official("topformer_t", tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="is a folder"):
        read_official("seaformer_t", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_official("seaformer_t", tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="choose from"):
        read_official("lemore", tmp_path / "odd.pth")
    assert sorted(FORMATS) == ["seaformer_t", "segformer_b0", "topformer_t"]


# ------------------------------------------------------------------------------------- SegFormer-B0 (HF folder)
@pytest.fixture
def hf_folder(tmp_path) -> tuple[Path, dict]:
    """A save_pretrained folder of SegFormer-B0 at 150 classes (hub key names), and its tensors."""
    src = lemore.create_model("segformer_b0", num_classes=150)
    folder = tmp_path / "segformer-b0-finetuned-ade-512-512"
    src.net.save_pretrained(folder)
    return folder, {k: v.clone() for k, v in src.state_dict().items()}


def test_hf_segformer_folder_loads_strictly(hf_folder):
    from safetensors.torch import load_file

    folder, ref = hf_folder
    keys = set(load_file(str(folder / "model.safetensors")))
    assert "segformer.encoder.block.0.0.attention.self.query.weight" in keys  # the hub's names
    assert "decode_head.linear_c.0.proj.weight" in keys
    model = load_official(lemore.create_model("segformer_b0", num_classes=150), "segformer_b0", folder, 150)
    assert all(torch.equal(model.state_dict()[k], ref[k]) for k in ref)


def test_hf_segformer_pytorch_model_bin_and_bad_configs(hf_folder, tmp_path):
    from safetensors.torch import load_file

    folder, _ = hf_folder
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    load_official(lemore.create_model("segformer_b0", num_classes=150), "segformer_b0", folder, 150)
    with pytest.raises(CheckpointError, match="num_labels: 150"):
        load_official(lemore.create_model("segformer_b0", num_classes=19), "segformer_b0", folder, 19)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "hidden_sizes": [64, 128, 320, 512]}))
    with pytest.raises(CheckpointError, match="hidden_sizes"):
        read_official("segformer_b0", folder, 150)


def test_hf_segformer_bin_that_runs_code_is_refused(hf_folder):
    folder, _ = hf_folder
    (folder / "model.safetensors").unlink()
    marker = folder.parent / "code-ran"
    torch.save({"w": torch.zeros(1), "x": RunsCode(str(marker))}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused to load"):
        read_official("segformer_b0", folder, 150)
    assert not marker.exists(), "pickled code ran"
