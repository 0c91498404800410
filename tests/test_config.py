import pytest

from flow.config import load_recipe, parse_recipe
from flow.errors import ConfigError


def test_default_recipe_loads():
    recipe = load_recipe("build/digits.yaml")
    assert recipe.data.dataset == "digits" and recipe.method["name"] == "uniform"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "trian": {}}, "unknown key 'trian'"),
        ({"name": "x", "data": {"seeed": 1}}, "unknown key 'data.seeed'"),
        ({"name": "x", "train": {"epochs": 0}}, "train.epochs"),
        ({"name": "x", "simulate": {"backpressure": 1.5}}, "simulate.backpressure"),
        ({"name": "bad name!"}, "name"),
        ({"name": "x", "method": {"weight_bits": 4}}, "method.name is required"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_recipes_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_recipe(data)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
