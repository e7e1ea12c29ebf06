import pytest
import torch

import lemore
from lemore.models.lemore import AxisMix, CartesianEncoder, LeMoRe, NestedAttention, resample_axis_weight
from lemore.profiling import count_flops


@pytest.mark.parametrize("size", [(512, 512), (512, 1024), (480, 480), (448, 448), (224, 224), (100, 130)])
def test_any_input_size_at_least_64(size):
    model = lemore.create_model("lemore", num_classes=19).eval()  # built for 512x512
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 19, *size) and torch.isfinite(out).all()


def test_too_small_build_size_is_an_error():
    with pytest.raises(ValueError, match="at least 64x64"):
        lemore.create_model("lemore", img_size=32)


def test_feature_contract():
    model = lemore.create_model("lemore", num_classes=7, img_size=(128, 192))
    feats, tokens = model.backbone(torch.randn(2, 3, 128, 192))
    assert [f["reduction"] for f in model.backbone.feature_info] == [4, 8, 16, 32]
    for f, info in zip(feats, model.backbone.feature_info):
        assert f.shape == (2, info["num_chs"], 128 // info["reduction"], 192 // info["reduction"])
    assert tokens.shape == (2, 248, 2, 3)


def test_view_matrices_are_sized_for_the_build_resolution():
    model = lemore.create_model("lemore", img_size=(512, 1024))
    sizes = [(s[1].frontal.weight.shape[0], s[1].lateral.weight.shape[0]) for s in model.backbone.stages]
    assert sizes == [(128, 256), (64, 128), (32, 64), (16, 32)]
    # Table 2: each view adds 128^2 + 64^2 + 32^2 + 16^2 parameters at 512x512
    t = lemore.create_model("lemore_t")
    tf = lemore.create_model("lemore_tf")
    assert sum(p.numel() for p in tf.parameters()) - sum(p.numel() for p in t.parameters()) == 21_760


def test_axis_mix_is_a_1x1_conv_over_the_axis():
    mix = AxisMix(6, axis=-2)
    x = torch.randn(2, 3, 6, 5)
    # reference: permute H to the channel axis, apply a 1x1 conv with the same weight, permute back
    ref = torch.nn.functional.conv2d(x.permute(0, 2, 1, 3), mix.weight[:, :, None, None]).permute(0, 2, 1, 3)
    torch.testing.assert_close(mix(x), ref)
    lat = AxisMix(5, axis=-1)
    ref = torch.nn.functional.conv2d(x.permute(0, 3, 2, 1), lat.weight[:, :, None, None]).permute(0, 3, 2, 1)
    torch.testing.assert_close(lat(x), ref)


def test_axis_mix_flops_are_counted_exactly():
    mix = torch.nn.Sequential(AxisMix(32, axis=-2))  # c * h * h * w MACs
    assert count_flops(_Wrap(mix, 8), (32, 16)) == 8 * 32 * 32 * 16
    lat = torch.nn.Sequential(AxisMix(16, axis=-1))
    assert count_flops(_Wrap(lat, 8), (32, 16)) == 8 * 32 * 16 * 16


class _Wrap(torch.nn.Module):
    """Feeds an AxisMix with c channels (count_flops builds a 3-channel input)."""

    def __init__(self, m, c):
        super().__init__()
        self.m, self.c = m, c

    def forward(self, x):
        return self.m(x[:, :1].expand(-1, self.c, -1, -1))


def test_resampled_view_keeps_constant_response():
    w = torch.rand(16, 16)
    x = torch.ones(16)
    w8 = resample_axis_weight(w, 8)
    # a constant column keeps (on average) the same output level after resampling
    assert torch.allclose((w8 @ torch.ones(8)).mean(), (w @ x).mean(), rtol=0.02)
    m = AxisMix(16, -1)
    assert m.weight_for(16) is m.weight


def test_cencoder_switches():
    with pytest.raises(ValueError, match="at least one"):
        CartesianEncoder(8, (16, 16), transverse=False, frontal=False, lateral=False)
    enc = CartesianEncoder(8, (16, 16), frontal=False, channel_attention=False)
    assert enc.frontal is None and enc.lateral is not None and isinstance(enc.ca, torch.nn.Identity)


def test_nested_attention_sums_nine_maps_and_folds():
    torch.manual_seed(0)
    att = NestedAttention(dim=16, key_dim=4, value_dim=4, num_heads=2, branches=3)
    x = torch.randn(2, 16, 3, 3)
    att.train()
    att(x)  # populate BN running stats
    att.eval()
    with torch.no_grad():
        y = att(x)
        # reference: explicit nine-term sum, written out independently
        q = [att._heads(m(x), 4) for m in att.q]
        k = [att._heads(m(x), 4) for m in att.k]
        v = [att._heads(m(x), 4) for m in att.v]
        psi = sum(qi @ kj.transpose(-1, -2) for qi in q for kj in k) * 4**-0.5
        ref = sum(psi.softmax(-1) @ vt for vt in v).transpose(-1, -2).reshape(2, 8, 3, 3)
        torch.testing.assert_close(y, att.proj(ref))
        att.fuse_branches()
        assert len(att.q) == 1
        torch.testing.assert_close(att(x), y, rtol=1e-4, atol=1e-5)


def test_nested_attention_off_has_one_branch():
    m = lemore.create_model("lemore", nested_attention=False)
    assert len(m.backbone.attention[1].attn.q) == 1
    assert len(lemore.create_model("lemore").backbone.attention[1].attn.q) == 3


def test_classifier_encoder_transfers_into_segmentation_model():
    cls = lemore.create_model("lemore_cls", num_classes=1000)
    seg = lemore.create_model("lemore", num_classes=150)
    missing, unexpected = seg.load_encoder_state_dict(cls.encoder_state_dict())
    assert missing == [] and unexpected == []
    a = cls.backbone.stages[2][0].conv[0][0].weight
    b = seg.backbone.stages[2][0].conv[0][0].weight
    assert torch.equal(a, b)
    # view matrices were resampled from the 224 build (56) to the 512 build (128)
    assert cls.backbone.stages[0][1].frontal.weight.shape == (56, 56)
    assert seg.backbone.stages[0][1].frontal.weight.shape == (128, 128)
    torch.testing.assert_close(seg.backbone.stages[0][1].frontal.weight,
                               resample_axis_weight(cls.backbone.stages[0][1].frontal.weight, 128))


def test_encoder_transfer_reports_missing_and_unexpected():
    cls = lemore.create_model("lemore_cls", lateral=False)
    seg = lemore.create_model("lemore", channel_attention=False)
    missing, unexpected = seg.load_encoder_state_dict(cls.encoder_state_dict())
    assert any(".lateral.weight" in k for k in missing)
    assert any(".ca.fc1.weight" in k for k in unexpected)
    assert all(k.startswith("backbone.stages.") for k in missing + unexpected)  # named as in the checkpoint


def test_encoder_transfer_shape_mismatch_names_the_key():
    cls = lemore.create_model("lemore_cls", widths=(24, 48, 80, 112))
    seg = lemore.create_model("lemore")
    with pytest.raises(ValueError, match=r"backbone\.stages\.3"):
        seg.load_encoder_state_dict(cls.encoder_state_dict())


def test_model_is_deterministic_in_eval():
    m = LeMoRe(num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x))
