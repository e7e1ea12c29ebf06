import pytest

import lemore
from lemore.models.lemore import ABLATION_ROWS
from lemore.paper import load_table

EXPECTED = {
    "lemore", "lemore_star", "lemore_cls", "segformer_b0", "lraspp_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large_reduced", "topformer_t", "seaformer_t",
    "lemore_t", "lemore_tf", "lemore_tfl", "lemore_tfl_ca",
    "lemore_t_na", "lemore_tf_na", "lemore_tfl_na", "lemore_tfl_ca_na",
}


def test_exact_set_of_names():
    assert set(lemore.list_models()) == EXPECTED
    assert lemore.list_models() == sorted(EXPECTED)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'lemore_xl'") as e:
        lemore.create_model("lemore_xl")
    assert "segformer_b0" in str(e.value) and "lemore_tfl_na" in str(e.value)


def test_unknown_option_lists_valid_options():
    with pytest.raises(TypeError, match="unknown LeMoRe option") as e:
        lemore.create_model("lemore", lateal=False)
    assert "lateral" in str(e.value)


@pytest.mark.parametrize("name,option,valid", [("topformer_t", "drop_pth_rate", "drop_path_rate"),
                                               ("seaformer_t", "key_dim", "key_dims")])
def test_peer_options_are_checked(name, option, valid):
    with pytest.raises(TypeError, match="unknown .* option") as e:
        lemore.create_model(name, **{option: 0})
    assert valid in str(e.value)


def test_one_name_per_table2_row():
    table = load_table("table2_ablation")
    cols = ["transverse", "frontal", "lateral", "channel_attention", "nested_attention"]
    rows = {tuple(bool(v) for v in r) for r in table[cols].itertuples(index=False)}
    assert rows == set(ABLATION_ROWS.values())
    assert set(ABLATION_ROWS) <= set(lemore.list_models())


@pytest.mark.parametrize("name,switches", list(ABLATION_ROWS.items()))
def test_table2_names_equal_lemore_with_switches(name, switches):
    """create_model("lemore", lateral=False, ...) builds exactly the named Table 2 variant."""
    kw = dict(zip(["transverse", "frontal", "lateral", "channel_attention", "nested_attention"], switches))
    a, b = lemore.create_model(name, num_classes=10), lemore.create_model("lemore", num_classes=10, **kw)
    assert a.cfg == b.cfg
    assert [k for k in a.state_dict()] == [k for k in b.state_dict()]
