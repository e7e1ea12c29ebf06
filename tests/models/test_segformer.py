"""SegFormer-B0 trains and infers with SDPA attention; FLOPs are counted with the eager (explicit matmul) path."""

import pytest
import torch

import lemore
from lemore.profiling import count_flops, eager_attention


@pytest.fixture(scope="module")
def pair():
    """The same weights with SDPA and with eager attention (built once: a SegFormer takes seconds to build)."""
    torch.manual_seed(0)
    sdpa = lemore.create_model("segformer_b0", num_classes=150)
    eager = lemore.create_model("segformer_b0", num_classes=150, attn_implementation="eager")
    eager.load_state_dict(sdpa.state_dict())
    return sdpa, eager


def test_sdpa_is_the_default_and_switchable():
    model = lemore.create_model("segformer_b0", num_classes=3)
    assert model.attn_implementation == "sdpa"
    model.attn_implementation = "eager"
    assert model.attn_implementation == "eager" and model.net.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="'flash'.*choose from"):
        model.attn_implementation = "flash"
    with pytest.raises(ValueError, match="'flash'.*choose from"):
        lemore.create_model("segformer_b0", attn_implementation="flash")


def test_sdpa_and_eager_give_the_same_outputs_and_gradients(pair):
    sdpa, eager = pair
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        torch.testing.assert_close(sdpa.eval()(x), eager.eval()(x), rtol=1e-4, atol=1e-5)
    sdpa.train(), eager.train()
    torch.manual_seed(1)  # drop path draws the same random numbers in both
    a = sdpa(x)
    torch.manual_seed(1)
    b = eager(x)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    a.square().mean().backward()
    b.square().mean().backward()
    for (name, p), q in zip(sdpa.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-6, msg=name)
        p.grad = q.grad = None


def test_flops_are_counted_with_eager_attention_and_the_model_is_restored(pair):
    sdpa, eager = pair
    counted = count_flops(sdpa, (128, 128))
    assert counted == count_flops(eager, (128, 128))
    assert sdpa.attn_implementation == "sdpa"  # restored after counting
    # Without the switch fvcore misses the attention matmuls: the switch is what makes the count right.
    from fvcore.nn import FlopCountAnalysis

    x = torch.randn(1, 3, 128, 128)
    analysis = FlopCountAnalysis(sdpa.eval(), x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert analysis.total() < counted or "aten::scaled_dot_product_attention" in analysis.unsupported_ops()
    with eager_attention(sdpa):
        assert sdpa.attn_implementation == "eager"
    assert sdpa.attn_implementation == "sdpa"
