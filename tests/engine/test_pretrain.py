"""ImageNet pretraining on a fake class-folder tree, then fine-tuning that loads the encoder it wrote."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import lemore.engine.train as T
from lemore.checkpoint import load_checkpoint
from lemore.engine.pretrain import PretrainCfg, cosine_lr, load_pretrain_cfg, pretrain


@pytest.fixture
def fake_imagenet(tmp_path):
    """``imagenet/{train,val}/<wnid>/*.JPEG``: 2 classes, 4 train + 2 val images each, 72x80 pixels."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imagenet"
    for split, n in (("train", 4), ("val", 2)):
        for c, wnid in enumerate(("n01440764", "n01443537")):
            d = root / split / wnid
            d.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 128, (72, 80, 3)) + 127 * c  # class 1 is brighter
                Image.fromarray(pixels.astype(np.uint8)).save(d / f"{wnid}_{i}.JPEG", format="JPEG")
    return root


def test_cosine_schedule():
    assert cosine_lr(0, 100, 1.0, 0.0, 10) == pytest.approx(0.1)
    assert cosine_lr(9, 100, 1.0, 0.0, 10) == pytest.approx(1.0)
    assert cosine_lr(10, 100, 1.0, 0.0, 10) == pytest.approx(1.0)
    assert cosine_lr(55, 100, 1.0, 0.1, 10) == pytest.approx(0.55)
    assert cosine_lr(100, 100, 1.0, 0.1, 10) == pytest.approx(0.1)


def test_config_overrides_are_type_checked():
    cfg = load_pretrain_cfg(overrides=["batch_size=256", "lr=5e-4"], root="/x")
    assert cfg.batch_size == 256 and cfg.lr == 5e-4 and cfg.root == "/x"
    assert PretrainCfg().run_name() == "lemore_cls_1024x1-300e_imagenet-224"
    with pytest.raises(KeyError, match="unknown config key 'epoch'"):
        load_pretrain_cfg(overrides=["epoch=3"])
    with pytest.raises(TypeError, match="bad value 'many' for epochs"):
        load_pretrain_cfg(overrides=["epochs=many"])


def test_pretrain_then_finetune_loads_the_encoder(fake_imagenet, tiny_cfg, tmp_path):
    cfg = load_pretrain_cfg(root=str(fake_imagenet), overrides={
        "num_classes": 2, "img_size": 64, "iters": 2, "batch_size": 4, "num_workers": 0, "device": "cpu",
        "wandb": "disabled", "log_interval": 1, "out_dir": str(tmp_path / "runs")})
    run_dir = pretrain(cfg)
    assert run_dir.name == "lemore_cls_4x1-2it_imagenet-64"
    result = json.loads((run_dir / "metrics.json").read_text())
    assert result["metrics"]["num_images"] == 4 and 0 <= result["metrics"]["top1"] <= 100
    assert result["metrics"]["top5"] == 100.0  # 2 classes: the true one is always in the top 5
    encoder = load_file(run_dir / "encoder.safetensors")
    assert encoder and all(k.startswith("backbone.") for k in encoder)
    classifier = load_checkpoint(run_dir / "model.pt")["model"]
    key = "backbone.stem.0.0.weight"
    assert torch.equal(encoder[key], classifier[key])

    # Fine-tune with lr 0: the loaded encoder weights must arrive unchanged in the segmentation model.
    seg = tiny_cfg(**{"model.pretrained": str(run_dir / "encoder.safetensors"), "train.lr": 0.0, "train.iters": 1,
                      "train.ckpt_interval": 1})
    seg_dir = T.train(seg)
    weights = load_checkpoint(seg_dir / "model.pt")["model"]
    for k, v in encoder.items():
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # BatchNorm statistics move in train mode even with lr 0
        assert torch.equal(weights[k], v), k
    report = json.loads((seg_dir / "metrics.json").read_text())["pretrained"]
    assert report["missing_keys"] == [] and report["unexpected_keys"] == []
    assert report["loaded"] == len(encoder)
    assert "pretrained encoder" in (seg_dir / "train.log").read_text()


def test_pretrained_mismatch_is_reported_not_ignored(tiny_cfg, tmp_path):
    from safetensors.torch import save_file

    import lemore

    enc = lemore.create_model("lemore_cls", num_classes=2, img_size=64).encoder_state_dict()
    enc = {k: v for k, v in enc.items() if ".stages.3." not in k}  # an incomplete encoder
    enc["backbone.extra.weight"] = torch.zeros(3)
    save_file(enc, tmp_path / "enc.safetensors")
    with pytest.warns(UserWarning, match="missing keys .*stages.3.*unexpected keys .*backbone.extra.weight"):
        run_dir = T.train(tiny_cfg(**{"model.pretrained": str(tmp_path / "enc.safetensors"), "train.iters": 1}))
    report = json.loads((run_dir / "metrics.json").read_text())["pretrained"]
    assert report["unexpected_keys"] == ["backbone.extra.weight"]
    assert report["missing_keys"] and all(".stages.3." in k for k in report["missing_keys"])
