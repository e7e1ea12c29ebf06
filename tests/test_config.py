import pytest

from lemore import config


def test_recipes_match_the_paper():
    ade, city = config.recipe("ade20k"), config.recipe("cityscapes")
    assert (ade.train.lr, ade.train.iters, ade.train.batch_size, ade.data.crop_size) == (1.2e-4, 160_000, 16, (512, 512))
    assert (city.train.lr, city.data.crop_size, city.data.eval_mode) == (3e-4, (512, 1024), "slide")
    assert config.recipe("pascal_context").train.iters == 80_000 == config.recipe("coco_stuff").train.iters
    assert config.recipe("pascal_context").data.num_classes == 60
    assert config.recipe("pascal_context_59").data.num_classes == 59
    for name in config.DATASET_NAMES:
        t = config.recipe(name).train
        assert (t.weight_decay, t.poly_power) == (0.01, 1.0)


def test_recipe_returns_a_copy():
    a = config.recipe("ade20k")
    a.train.lr = 1.0
    assert config.recipe("ade20k").train.lr == 1.2e-4


def test_overrides_are_type_checked():
    cfg = config.load(dataset="ade20k", overrides=["train.lr=3e-4", "data.crop_size=[256, 320]", "train.amp=false"])
    assert cfg.train.lr == 3e-4 and cfg.data.crop_size == (256, 320) and cfg.train.amp is False
    cfg = config.load(dataset="ade20k", overrides={"train.iters": 100.0, "data.crop_size": 256})
    assert cfg.train.iters == 100 and cfg.data.crop_size == (256, 256)
    with pytest.raises(TypeError, match="train.iters"):
        config.load(overrides={"train.iters": "many"})
    with pytest.raises(TypeError, match="train.iters"):
        config.load(overrides={"train.iters": 1.5})
    with pytest.raises(TypeError, match="train.amp"):
        config.load(overrides={"train.amp": "maybe"})


def test_unknown_key_lists_valid_keys():
    with pytest.raises(KeyError, match="train.lr") as e:
        config.load(overrides={"train.learning_rate": 1e-3})
    assert "train.learning_rate" in str(e.value)
    with pytest.raises(KeyError, match="is a section"):
        config.load(overrides={"train": 1})


def test_unknown_dataset_lists_valid_choices():
    with pytest.raises(ValueError, match="unknown dataset 'ade'") as e:
        config.load(dataset="ade")
    assert "cityscapes" in str(e.value)


def test_invariants():
    with pytest.raises(ValueError, match="eval_mode"):
        config.load(overrides={"data.eval_mode": "multi"})
    with pytest.raises(ValueError, match="at least 64x64"):
        config.load(overrides={"data.crop_size": 32})
    with pytest.raises(ValueError, match="wandb"):
        config.load(overrides={"wandb": "yes"})


def test_yaml_file_and_round_trip(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("data:\n  dataset: cityscapes\n  root: /data/cs\ntrain:\n  iters: 1000\n")
    cfg = config.load(p, overrides={"train.lr": 1e-3})
    assert (cfg.data.dataset, cfg.data.root, cfg.train.iters, cfg.train.lr) == ("cityscapes", "/data/cs", 1000, 1e-3)
    assert cfg.data.crop_size == (512, 1024)  # the rest comes from the Cityscapes recipe
    again = config.from_dict(config.yaml.safe_load(config.to_yaml(cfg)))
    assert again == cfg
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        config.load(tmp_path / "nope.yaml")


def test_run_name_follows_mmseg():
    cfg = config.recipe("ade20k")
    assert cfg.run_name() == "lemore_16x1-160k_ade20k-512x512"
    assert config.recipe("cityscapes").run_name(world_size=8) == "lemore_2x8-160k_cityscapes-1024x512"


def test_data_root_resolution(monkeypatch, tmp_path):
    cfg = config.recipe("ade20k")
    monkeypatch.setenv(config.DATA_ROOT_ENV, str(tmp_path))
    assert cfg.data.resolved_root() == tmp_path / "ADEChallengeData2016"
    cfg.data.root = "/elsewhere"
    assert str(cfg.data.resolved_root()) == "/elsewhere"
