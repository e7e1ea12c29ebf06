"""Every registered model: forward + backward on CPU at two sizes, logits at the input size."""

import pytest
import torch

import lemore

SIZES = [(64, 64), (96, 80)]  # the second is not divisible by 64 (nor by 32)


@pytest.mark.parametrize("name", lemore.list_models())
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_forward_backward(name, size):
    model = lemore.create_model(name, num_classes=10)
    x = torch.randn(2, 3, *size, requires_grad=True)  # batch 2: BN over 1x1 tokens needs >1 value in training
    out = model(x)
    expected = (2, 10) if name == "lemore_cls" else (2, 10, *size)
    assert out.shape == expected
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", [n for n in lemore.list_models() if n != "lemore_cls"])
def test_forward_logits_is_forward_before_resize(name):
    model = lemore.create_model(name, num_classes=5).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        low = model.forward_logits(x)
        full = model(x)
    assert low.shape[:2] == (1, 5) and low.shape[-1] < 128
    up = torch.nn.functional.interpolate(low, (96, 128), mode="bilinear", align_corners=False)
    torch.testing.assert_close(full, up)
