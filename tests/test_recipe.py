import pytest
import yaml

from otx_nld.errors import ConfigError
from otx_nld.recipe import Recipe, load_recipe, recipe_from_dict


@pytest.mark.parametrize(
    ("data", "message"),
    [({"optimizer": {"lr": "fast"}}, "optimizer.lr: Input should be a valid number"),
     ({"optimizer": {"learning_rate": 0.1}}, "optimizer.learning_rate: unknown key"),
     ({"trainer": {}}, "trainer: unknown key"),
     ({"model": {"backbone": "vgg16"}}, "model.backbone"),
     ({"train": {"epochs": 2.5}}, "train.epochs: Input should be a valid integer"),
     ({"train": {"epochs": 0}}, "train.epochs: Input should be greater than or equal to 1"),
     ({"tracking": {"enabled": "yes"}}, "tracking.enabled: Input should be a valid boolean"),
     ({"data": {"input_size": [300, 320]}}, "multiples of 32"),
     ({"data": {"input_size": [320]}}, "data.input_size"),
     ({"augment": {"scale_range": [1.2, 0.8]}}, "scale_range"),
     ({"optimizer": {"name": "adam"}}, "optimizer.name"),
     ([1, 2], "must be a mapping")],
)
def test_invalid_recipes_name_the_key(data, message):
    with pytest.raises(ConfigError) as info:
        recipe_from_dict(data, source="r.yaml")
    assert str(info.value).startswith("r.yaml: ")
    assert message in str(info.value)


def test_defaults_and_round_trip(tmp_path):
    recipe = recipe_from_dict({"name": "x", "data": {"input_size": [320, 416]}})
    assert recipe.data.input_size == (320, 416)
    assert recipe.optimizer.lr > 0 and recipe.tracking.enabled
    path = recipe.save(tmp_path / "recipe.yaml")
    assert yaml.safe_load(path.read_text())["data"]["input_size"] == [320, 416]
    assert load_recipe(path) == recipe


def test_overrides():
    recipe = Recipe()
    new = recipe.override(["optimizer.lr=0.5", "train.epochs=3", "model.weights=/w.pt",
                           "augment.scale_range=[0.8, 1.2]", "optimizer.grad_clip=null"])
    assert new.optimizer.lr == 0.5 and new.train.epochs == 3 and new.model.weights == "/w.pt"
    assert new.augment.scale_range == (0.8, 1.2) and new.optimizer.grad_clip is None
    assert recipe.optimizer.lr != 0.5  # frozen original unchanged


@pytest.mark.parametrize(
    ("assignment", "message"),
    [("optimizer.lr=abc", "optimizer.lr"), ("optim.lr=1", "unknown section 'optim'"),
     ("lr", "KEY=VALUE"), ("optimizer.xx=1", "unknown key 'optimizer.xx'"),
     ("optimizer.lr.x=1", "unknown section 'optimizer.lr'")],
)
def test_bad_overrides(assignment, message):
    with pytest.raises(ConfigError, match=message):
        Recipe().override([assignment])


def test_yaml_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\noptimizer:\n  lr: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_recipe(path)
    with pytest.raises(ConfigError, match="recipe file does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="built-in recipes"):
        load_recipe("no_such_recipe")
