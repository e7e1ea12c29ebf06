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


# ---------------------------------------------------------------------------------- the peers' own recipes (issue 11)
def _train(dataset: str, model: str):
    cfg = config.load(dataset=dataset, overrides={"model.name": model})
    return cfg.train, cfg.data


@pytest.mark.parametrize("model,lr", [("topformer_t", 3e-4), ("seaformer_t", 3e-4), ("segformer_b0", 6e-5)])
def test_peer_recipe_on_ade20k_is_the_official_config(model, lr):
    t, d = _train("ade20k", model)
    assert (t.optimizer, t.lr, t.betas, t.weight_decay) == ("adamw", lr, (0.9, 0.999), 0.01)
    assert (t.head_lr_mult, t.norm_bias_decay) == (10.0, True)  # paramwise_cfg: 'head' lr_mult=10, mmcv decay rule
    assert (t.warmup_iters, t.warmup_ratio, t.poly_power, t.min_lr) == (1500, 1e-6, 1.0, 0.0)
    assert (t.iters, t.batch_size, d.crop_size, d.scale, d.eval_mode) == (160_000, 16, (512, 512), (2048, 512), "whole")
    assert d.eval_size_divisor == 32  # ResizeToMultiple(32) / AlignedResize(size_divisor=32) at test time
    assert config.family_recipe("ade20k", model).source  # every recipe names its source


def test_lraspp_recipe_is_mmseg_sgd():
    for model in ("lraspp_mobilenet_v3_large", "lraspp_mobilenet_v3_large_reduced"):
        t, d = _train("cityscapes", model)
        assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.warmup_iters) == ("sgd", 0.01, 0.9, 5e-4, 0)
        assert (t.poly_power, t.min_lr, t.iters, d.crop_size, d.eval_mode) == (0.9, 1e-4, 320_000, (512, 1024), "whole")
        t, d = _train("ade20k", model)  # carried over from Cityscapes, with ADE20K's schedule: said in the note
        assert (t.optimizer, t.lr, t.iters, t.batch_size) == ("sgd", 0.01, 160_000, 16)
        assert "carried over" in config.family_recipe("ade20k", model).note


def test_lemore_recipe_is_unchanged_and_synthetic_is_the_same_for_every_model():
    t, _ = _train("ade20k", "lemore")
    assert (t.optimizer, t.lr, t.head_lr_mult, t.norm_bias_decay) == ("adamw", 1.2e-4, 1.0, False)
    assert config.recipe("ade20k").train == t
    base = config.recipe("synthetic")
    for model in config.FAMILY_RECIPES:
        cfg = config.load(dataset="synthetic", overrides={"model.name": model})
        assert (cfg.train, cfg.data) == (base.train, base.data) and cfg.model.name == model


def test_every_family_recipe_is_a_valid_config():
    import lemore

    for model, per_dataset in config.FAMILY_RECIPES.items():
        assert model in lemore.list_models()
        for dataset, fam in per_dataset.items():
            assert dataset in config.DATASET_NAMES and fam.source
            cfg = config.recipe(dataset, model)
            config.validate(cfg)
            assert cfg.model.name == model and cfg.data.dataset == dataset


def test_explicit_overrides_beat_the_family_recipe_and_the_notebook_gets_it():
    from lemore import launch

    cfg = config.load(dataset="ade20k", overrides={"model.name": "seaformer_t", "train.lr": 1e-3})
    assert cfg.train.lr == 1e-3 and cfg.train.head_lr_mult == 10.0
    nb = launch.finetune_config("ade20k", "seaformer_t")  # papermill -p dataset ade20k -p model seaformer_t
    assert nb.train == config.recipe("ade20k", "seaformer_t").train and nb.model.name == "seaformer_t"
    launch.check_choices(model="topformer_t")
    launch.check_choices(model="lraspp_mobilenet_v3_large_reduced")


def test_a_searched_learning_rate_never_hides_a_published_recipe_and_yields_to_overrides():
    for dataset, per_model in config.SEARCHED_LRS.items():
        assert dataset in config.DATASET_NAMES
        for model, lr in per_model.items():
            assert config.family_recipe(dataset, model) is None, (dataset, model)  # project's own, not published
            assert config.recipe(dataset, model).train.lr == lr
            assert config.load(dataset=dataset, overrides={"model.name": model, "train.lr": 3e-3}).train.lr == 3e-3
    assert config.recipe("camvid", "lemore").train == config.recipe("camvid").train  # LeMoRe: the recipe's own


def test_new_train_keys_are_checked():
    with pytest.raises(ValueError, match="train.optimizer='adam'.*'adamw', 'sgd'"):
        config.load(overrides={"train.optimizer": "adam"})
    with pytest.raises(ValueError, match="head_lr_mult"):
        config.load(overrides={"train.head_lr_mult": 0})
    with pytest.raises(ValueError, match="momentum"):
        config.load(overrides={"train.momentum": 1.5})
    with pytest.raises(TypeError, match="norm_bias_decay"):
        config.load(overrides={"train.norm_bias_decay": "sometimes"})


def test_a_config_saved_before_the_new_keys_reads_as_it_ran():
    """A run of segformer_b0 on ADE20K saved before the peers' recipes existed trained without a head multiplier:
    its saved config, which lacks the new keys, must not pick them up from today's recipe."""
    old = config.recipe("ade20k").to_dict()
    old["model"]["name"] = "segformer_b0"
    for key in config.ADDED_KEYS:
        section, name = key.split(".")
        del old[section][name]
    cfg = config.from_dict(old)
    assert (cfg.train.lr, cfg.train.head_lr_mult, cfg.train.norm_bias_decay, cfg.data.eval_size_divisor) == \
        (1.2e-4, 1.0, False, 0)
