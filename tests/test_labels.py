"""Label maps without upsampling the logits: equal to argmax(interpolate(logits)) for every model and size
(the tie rule is in tests/labels_check.py)."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import lemore
from lemore.cli import main as cli
from lemore.labels import naive_labels, predict, source_index, upsampled_argmax
from lemore.models.fuse import fuse_for_inference
from labels_check import assert_same_labels, segmentation_like

SEG_MODELS = [n for n in lemore.list_models() if n != "lemore_cls"]


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


# ------------------------------------------------------------------------------------------ the algorithm
@pytest.mark.parametrize("n_in,n_out", [(8, 64), (64, 512), (7, 50), (63, 500), (13, 13), (9, 5), (1, 4), (5, 1)])
def test_source_index_is_pytorchs(n_in, n_out):
    i0, i1, w0, w1 = (torch.from_numpy(t) for t in source_index(n_in, n_out))
    # interpolating the identity gives PyTorch's weight matrix (n_in, n_out); equal to a few float32 ulps (its
    # kernel computes the source index with fused multiply-adds)
    ref = F.interpolate(torch.eye(n_in)[None], size=n_out, mode="linear", align_corners=False)[0]
    ours = torch.zeros(n_in, n_out)
    ours[i0, torch.arange(n_out)] += w0
    ours[i1, torch.arange(n_out)] += w1
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    assert ((w0 >= 0) & (w1 >= 0)).all() and (i1 - i0).le(1).all()


SIZES = [((8, 8), (64, 64)), ((7, 9), (50, 61)), ((13, 12), (100, 99)), ((16, 16), (64, 64)), ((5, 4), (5, 4)),
         ((9, 9), (5, 7)), ((1, 6), (8, 48)), ((63, 63), (500, 500))]


@pytest.mark.parametrize("kind", ["random", "segmentation", "integer_ties", "near_ties", "constant"])
@pytest.mark.parametrize("low,size", SIZES, ids=[f"{a[0]}x{a[1]}-{b[0]}x{b[1]}" for a, b in SIZES])
def test_equals_the_naive_argmax(kind, low, size):
    b, k = 2, 10
    if kind == "random":
        logits = torch.randn(b, k, *low)
    elif kind == "segmentation":
        logits = segmentation_like(b, k, *low)
    elif kind == "integer_ties":  # many exact ties, at nodes and along whole cells
        logits = torch.randint(0, 3, (b, k, *low)).float()
    elif kind == "near_ties":  # ties broken by 1e-7: rounding decides, the tie rule applies
        logits = torch.randint(0, 3, (b, k, *low)).float() + 1e-7 * torch.randn(b, k, *low)
    else:
        logits = torch.ones(b, k, *low)
    assert_same_labels(upsampled_argmax(logits, size), logits, size)


@pytest.mark.parametrize("k", [1, 2, 150, 300])  # 300: class indices beyond uint8
def test_number_of_classes(k):
    logits = segmentation_like(1, k, 16, 16, blobs=6)
    assert_same_labels(upsampled_argmax(logits, (128, 128)), logits, (128, 128))


def test_many_candidates_fall_back_to_upsampling():
    """Pure noise over 150 classes: most cells have dozens of candidates, the naive path is cheaper (same labels)."""
    logits = torch.randn(1, 150, 16, 16)
    assert_same_labels(upsampled_argmax(logits, (128, 128)), logits, (128, 128))


# -------------------------------------------------------------------------------------------- the models
def _with_bn_statistics(model: nn.Module, size=(64, 64)) -> nn.Module:
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 3, *size) * 2 + 0.5)
    return model.eval()


def _trained(model: nn.Module, size=(64, 64), steps=6) -> nn.Module:
    """A few Adam steps towards blocky targets: spatially structured logits, as after training."""
    x = torch.randn(2, 3, *size)
    target = F.interpolate(torch.randint(0, model.num_classes, (2, 1, 4, 4)).float(), size=size, mode="nearest")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), target[:, 0].long()).backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("name", SEG_MODELS)
def test_predict_equals_naive_for_every_model(name):
    kw = {"img_size": 64} if name.startswith("lemore") else {}
    model = lemore.create_model(name, num_classes=6, **kw)
    model = _trained(model)
    fused = fuse_for_inference(model)
    for size in [(64, 64), (60, 76), (37, 45)]:  # not multiples of the stride: non-integer scale factors
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            logits = model.forward_logits(x)
        assert_same_labels(predict(fused, x), logits, size)
    cl = fused.to(memory_format=torch.channels_last)  # the layout the benchmark runs CNNs in
    assert_same_labels(predict(cl, x.contiguous(memory_format=torch.channels_last)), logits, size)


def test_predict_checks_its_input():
    model = lemore.create_model("lemore_t", num_classes=3, img_size=64)
    with pytest.raises(RuntimeError, match="eval"):
        predict(model.train(), torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        predict(model.eval(), torch.randn(3, 64, 64))
    with pytest.raises(TypeError, match="forward_logits"):
        predict(lemore.create_model("lemore_cls", num_classes=3).eval(), torch.randn(1, 3, 64, 64))
    assert lemore.predict is predict


# ------------------------------------------------------------------------------------------------------ CLI
def _write_images(folder, sizes):
    from PIL import Image

    paths = []
    for i, (h, w) in enumerate(sizes):
        p = folder / f"img{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_predict_cli_writes_label_pngs(tmp_path, capsys):
    from PIL import Image

    from lemore.checkpoint import save_checkpoint
    from lemore.config import load

    cfg = load(dataset="synthetic", overrides=["model.name=lemore_t", "data.crop_size=[64, 64]"])
    model = _with_bn_statistics(lemore.create_model("lemore_t", num_classes=cfg.data.num_classes, img_size=64))
    save_checkpoint(dict(model=model.state_dict(), config=cfg.to_dict()), tmp_path / "model.pt")
    images = _write_images(tmp_path, [(64, 64), (48, 72)])
    assert cli(["predict", "--checkpoint", str(tmp_path / "model.pt"), "--images", *map(str, images),
                "--out", str(tmp_path / "out")]) == 0
    assert "wrote 2 label map(s)" in capsys.readouterr().out
    from lemore.data.io import read_image
    from lemore.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from torchvision.transforms.v2 import functional as TF

    for path in images:
        labels = np.asarray(Image.open(tmp_path / "out" / f"{path.stem}.png"))
        x = TF.normalize(read_image(path).float() / 255, IMAGENET_MEAN, IMAGENET_STD)[None]
        with torch.no_grad():
            logits = model.forward_logits(x)
        assert labels.dtype == np.uint8 and labels.shape == tuple(x.shape[-2:])
        assert_same_labels(torch.from_numpy(labels.astype(np.int64))[None], logits, x.shape[-2:])


def test_predict_cli_bare_state_dict_and_errors(tmp_path, capsys):
    model = lemore.create_model("lraspp_mobilenet_v3_large", num_classes=4).eval()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    (img,) = _write_images(tmp_path, [(40, 56)])
    base = ["predict", "--checkpoint", str(tmp_path / "sd.pt"), "--out", str(tmp_path / "out")]
    assert cli(base + ["--images", str(img)]) == 1  # no config in the file: --model and --num-classes needed
    assert "pass --model and --num-classes" in capsys.readouterr().err
    assert cli(base + ["--images", str(tmp_path / "missing.png"), "--model", "lraspp_mobilenet_v3_large",
                       "--num-classes", "4"]) == 1
    assert "missing.png" in capsys.readouterr().err
    assert cli(base + ["--images", str(img), "--model", "lemore_cls", "--num-classes", "4"]) == 1
    assert "not a segmentation model" in capsys.readouterr().err
    assert cli(base + ["--images", str(img), "--model", "lraspp_mobilenet_v3_large", "--num-classes", "4"]) == 0
    assert (tmp_path / "out" / "img0.png").is_file()
