"""fuse_for_inference: the same outputs as the trained model, with BatchNorm and attention branches folded."""

import warnings

import pytest
import torch
import torch.nn as nn

import lemore
from lemore.export import LogitsOnly
from lemore.models.fuse import FusedAttention, FusedCartesianEncoder, fold_conv_bn, fuse_for_inference
from lemore.models.lemore import CartesianEncoder, NestedAttention

SEG_MODELS = [n for n in lemore.list_models() if n != "lemore_cls"]


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: faster without thread hand-offs on a shared 2-core machine
    yield
    torch.set_num_threads(prev)


def _with_bn_statistics(model: nn.Module, size=(64, 64)) -> nn.Module:
    """Training-mode forwards on shifted, scaled inputs: running mean/var far from 0/1, as after training."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 3, *size) * 3 + 1)
        for m in model.modules():  # and non-trivial affine parameters
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def _assert_close(a, b):
    scale = max(1.0, b.abs().max().item())
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("name", lemore.list_models())
def test_fused_model_has_the_same_outputs(name):
    kw = {"img_size": 64} if name.startswith("lemore") else {}
    model = _with_bn_statistics(lemore.create_model(name, num_classes=10, **kw))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_for_inference(model)
    assert fused is not model and not fused.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())  # every BatchNorm was folded
    for k, v in model.state_dict().items():  # the trained model is untouched
        assert torch.equal(v, before[k]), k
    for size in [(64, 64), (64, 128)]:  # the second is away from the build size: resampled view matrices
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            ref = model(x)
            _assert_close(fused(x), ref)
            if name != "lemore_cls":
                _assert_close(fused.forward_logits(x), model.forward_logits(x))
            cl = fused.to(memory_format=torch.channels_last)
            _assert_close(cl(x.contiguous(memory_format=torch.channels_last)), ref)
            fused.to(memory_format=torch.contiguous_format)


def test_lemore_blocks_are_replaced_and_method_matches():
    model = _with_bn_statistics(lemore.create_model("lemore", num_classes=5, img_size=64))
    fused = model.fuse_for_inference()
    assert not any(isinstance(m, (CartesianEncoder, NestedAttention)) for m in fused.modules())
    assert sum(isinstance(m, FusedCartesianEncoder) for m in fused.modules()) == 4
    attn = [m for m in fused.modules() if isinstance(m, FusedAttention)]
    assert len(attn) == 2 and all(isinstance(a.qkv, nn.Conv2d) for a in attn)  # nine Q_i K_j maps -> one
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _assert_close(fused(x), model(x))


def test_inplace_rewrites_the_model_itself():
    model = _with_bn_statistics(lemore.create_model("lraspp_mobilenet_v3_large", num_classes=4))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    assert fuse_for_inference(model, inplace=True) is model
    with torch.no_grad():
        _assert_close(model(x), ref)


@pytest.mark.parametrize("switches", [
    dict(), dict(transverse=False), dict(frontal=False), dict(lateral=False), dict(frontal=False, lateral=False),
    dict(transverse=False, lateral=False, channel_attention=False),
], ids=lambda d: "-".join(f"no_{k}" for k in d) or "all")
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_fused_cartesian_encoder(switches, layout):
    enc = CartesianEncoder(8, (12, 20), **switches)
    enc.train()
    with torch.no_grad():
        enc(torch.randn(4, 8, 12, 20) * 2 - 1)
        enc.norm.weight.uniform_(0.5, 1.5)
    enc.eval()
    fused = fold_conv_bn(FusedCartesianEncoder(enc).eval())
    for shape in [(2, 8, 12, 20), (1, 8, 6, 10)]:  # build size, then resampled views
        x = torch.randn(*shape)
        if layout == "channels_last":
            fused = fused.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            _assert_close(fused(x), enc(x))


def test_fused_attention_folds_the_nested_branches():
    att = NestedAttention(dim=16, key_dim=4, value_dim=6, num_heads=2, branches=3)
    att.train()
    with torch.no_grad():
        att(torch.randn(4, 16, 3, 3) + 1)
    att.eval()
    x = torch.randn(2, 16, 3, 4)
    fused = fold_conv_bn(FusedAttention(att).eval())
    assert fused.qkv.out_channels == 2 * 2 * 4 + 2 * 6
    with torch.no_grad():
        _assert_close(fused(x), att(x))


def test_folding_needs_eval_mode():
    with pytest.raises(RuntimeError, match="eval"):
        fold_conv_bn(lemore.create_model("lemore_t", num_classes=2, img_size=64).train())


@pytest.mark.parametrize("n_in,n_out", [(128, 8), (64, 8), (9, 4), (7, 3), (5, 5), (3, 1)])
def test_adaptive_pool_matrix_is_adaptive_avg_pool(n_in, n_out):
    from lemore.models.fuse import adaptive_pool_matrix

    x = torch.randn(2, 3, n_in, n_in + 1)
    ph, pw = adaptive_pool_matrix(n_in, n_out), adaptive_pool_matrix(n_in + 1, n_out)
    _assert_close(ph @ x @ pw.t(), torch.nn.functional.adaptive_avg_pool2d(x, n_out))


def test_traced_graph_forms_give_the_same_outputs():
    """The forms only the ONNX graph takes (pooling as matmuls, the views' BatchNorm scale as a 1x1 conv) equal
    the eager ones; traced at a size whose 1/64 pooling windows are unequal (the export refuses those sizes for
    other reasons, the trace here checks the arithmetic)."""
    model = _with_bn_statistics(lemore.create_model("lemore", num_classes=5, img_size=64))
    fused = fuse_for_inference(model)
    for size in [(64, 128), (96, 80)]:
        x = torch.randn(1, 3, *size)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings on shape arithmetic
            traced = torch.jit.trace(LogitsOnly(fused), x, check_trace=False)
            _assert_close(traced(x), model.forward_logits(x))
