"""Config round-trip, overrides, recipes and validation errors."""

from __future__ import annotations

import pytest
import yaml

from wideberth.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    list_recipes,
    load_config,
    load_recipe,
    save_config,
)


def test_roundtrip_through_yaml(tmp_path):
    cfg = apply_overrides(
        load_recipe("digits-standard"),
        ["optim.lr=0.05", "method.params.eps=0.3", "model.params.hidden=[32, 16]"],
    )
    path = tmp_path / "c.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert again == cfg
    assert config_to_dict(again)["model"]["params"] == {"hidden": [32, 16]}


def test_overrides_parse_yaml_values():
    cfg = apply_overrides(
        Config(),
        [
            "optim.lr=1e-3",
            "optim.nesterov=true",
            "run.steps=7",
            "data.train_subset=null",
            "schedule.values=[0.1, 0.01]",
            "schedule.milestones=[5]",
            "schedule.name=piecewise",
        ],
    )
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.nesterov is True
    assert cfg.run.steps == 7
    assert cfg.data.train_subset is None
    assert cfg.schedule.values == [0.1, 0.01]


def test_int_widens_to_float_but_not_the_reverse():
    assert config_from_dict({"optim": {"lr": 1}}).optim.lr == 1.0
    with pytest.raises(ConfigError, match=r"data.batch_size: expected an integer"):
        config_from_dict({"data": {"batch_size": 1.5}})


@pytest.mark.parametrize(
    "data, pattern",
    [
        (
            {"optim": {"lrr": 0.1}},
            r"unknown key optim.lrr; valid keys of optim: name, lr, momentum",
        ),
        ({"nonsense": {}}, r"unknown key nonsense; valid keys: data, model"),
        ({"optim": {"lr": -0.1}}, r"optim.lr must be >= 0"),
        ({"optim": {"lr": "fast"}}, r"optim.lr: expected a number, got 'fast'"),
        ({"method": {"params": {"eps": -0.3}}}, r"method.params.eps must be >= 0"),
        ({"run": {"epochs": None, "steps": None}}, r"set a budget"),
        ({"optim": {"nesterov": True, "name": "adam"}}, r"nesterov needs optim.name: sgd"),
        (
            {"schedule": {"name": "piecewise", "milestones": [10], "values": [0.1]}},
            r"one more entry than schedule.milestones",
        ),
        ({"data": {"augment": "mixup"}}, r"data.augment must be one of"),
        ({"run": {"device": "tpu"}}, r"run.device must be auto, cpu, cuda"),
    ],
)
def test_validation_errors_say_what_is_wrong(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        config_from_dict(data)


def test_unknown_override_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key optim.learning_rate"):
        apply_overrides(Config(), ["optim.learning_rate=0.1"])
    with pytest.raises(ConfigError, match=r"unknown key data.nme; valid keys here: name"):
        apply_overrides(Config(), ["data.nme.x=1"])
    with pytest.raises(ConfigError, match=r"expects key=value"):
        apply_overrides(Config(), ["optim.lr"])


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("data: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_recipes_load_and_validate():
    names = list_recipes()
    assert "digits-standard" in names and "fashion-mnist-standard" in names
    for name in names:
        cfg = load_recipe(name)
        assert cfg.description
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; available recipes: "):
        load_recipe("nope")


def test_saved_yaml_is_plain(tmp_path):
    path = tmp_path / "c.yaml"
    save_config(load_recipe("digits-standard"), path)
    assert yaml.safe_load(path.read_text())["data"]["name"] == "digits"


def test_older_model_kwargs_spelling_loads_as_params():
    # Configs and checkpoints written before ``model.params`` was named so used ``kwargs``.
    cfg = config_from_dict({"model": {"name": "mlp", "kwargs": {"hidden": [8]}}})
    assert cfg.model.params == {"hidden": [8]}
    again = apply_overrides(cfg, ["model.kwargs.hidden=[4]"])
    assert again.model.params == {"hidden": [4]}
    with pytest.raises(ConfigError, match="both params and kwargs"):
        config_from_dict({"model": {"kwargs": {}, "params": {}}})
