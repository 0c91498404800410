"""The recipe is checked whole when it is loaded: every field, method parameters included."""
import pytest

from flow.core.errors import ConfigError
from flow.methods.params import AqpParams, UniformParams
from flow.recipe.config import load_recipe, parse_recipe
from flow.recipe.plan import CompressionPlan


def test_default_recipe_loads():
    recipe = load_recipe("build/digits.yaml")
    assert recipe.data.dataset == "digits"
    assert recipe.method == UniformParams(name="uniform", weight_bits=4, act_bits=4)


def test_method_parameters_are_typed_and_defaulted():
    recipe = parse_recipe({"name": "x", "method": {"name": "aqp", "t_margin": 0.05}})
    assert isinstance(recipe.method, AqpParams)
    assert recipe.method.t_margin == 0.05 and recipe.method.mode == "combined"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "trian": {}}, "unknown key 'trian'"),
        ({"name": "x", "data": {"seeed": 1}}, "unknown key 'data.seeed'"),
        ({"name": "x", "train": {"epochs": 0}}, "train.epochs"),
        ({"name": "x", "train": {"lr": float("inf")}}, "train.lr"),
        ({"name": "x", "simulate": {"backpressure": 1.5}}, "simulate.backpressure"),
        ({"name": "x", "simulate": {"min_agreement": 1.5}}, "simulate.min_agreement"),
        ({"name": "bad name!"}, "name"),
        # defect 1: names that would address the output root or a folder densiflow keeps
        ({"name": "."}, "name"),
        ({"name": ".."}, "name"),
        ({"name": ".hidden"}, "name"),
        ({"name": "rtlsim_cache"}, "name: .*reserved"),
        # defect 2: the method and data sections are checked at load, not when a step runs
        ({"name": "x", "method": {"weight_bits": 4}}, "method.name: required"),
        ({"name": "x", "method": {"name": "bogus"}}, "method.name: 'bogus' is not a method"),
        ({"name": "x", "method": {"name": "uniform", "weight_bits": 0, "act_bits": 4}},
         "method.weight_bits"),
        ({"name": "x", "method": {"name": "uniform", "weight_bits": 4}}, "method.act_bits"),
        ({"name": "x", "method": {"name": "aqp", "k_step": 0}}, "method.k_step"),
        ({"name": "x", "method": {"name": "aqp", "modes": "quant"}}, "unknown key 'method.modes'"),
        ({"name": "x", "method": {"name": "aqp", "importance": {"quant": 2.0}}},
         "method.importance.*sum to 1"),
        ({"name": "x", "data": {"dataset": "imagenet"}}, "data.dataset"),
        ({"name": "x", "data": {"dataset": "mnist"}}, "data.path: .*needs the folder"),
        ({"name": "x", "data": {"shape": [3, 32, 32]}}, "data.shape: only for dataset 'synth"),
        ({"name": "x", "data": {"dataset": "synthetic", "shape": [3, 32]}}, "data.shape"),
        ({"name": "x", "data": {"dataset": "synthetic", "shape": [3, 0, 32]}}, "data.shape"),
        ({"name": "x", "model": {"arch": "resnet"}}, "model.arch: .*unknown architecture"),
        ({"name": "x", "model": {"factory": 5}}, "model.factory"),
        ({"name": "x", "method": {"name": "search", "trial_slack_points": -1}},
         "method.trial_slack_points"),
        ({"name": "x", "hardware": {"board": "zedboard"}}, "hardware.board: .*unknown board"),
        ({"name": "x", "hardware": {"clock_mhz": 0}}, "hardware.clock_mhz"),
        ({"name": "x", "hardware": {"fifo_depth": 1}}, "hardware.fifo_depth"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_recipes_name_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_recipe(data)


def test_one_bit_activations_are_refused_with_the_reason():
    """Defect 8: act_bits 1 used to train and then fail export verification."""
    with pytest.raises(ConfigError, match=r"method.act_bits: .*greater than or equal to 2"):
        parse_recipe({"name": "x", "method": {"name": "uniform", "weight_bits": 4, "act_bits": 1}})


def test_one_bit_weights_only_where_hls_layers_are_allowed():
    w1 = {"name": "uniform", "weight_bits": 1, "act_bits": 2}
    with pytest.raises(ConfigError, match="method.weight_bits: 1 bits is below 2: FINN's RTL"):
        parse_recipe({"name": "x", "method": w1})
    with pytest.raises(ConfigError, match="method.baseline_bits: 1 bits"):
        parse_recipe({"name": "x", "method": {"name": "aqp", "baseline_bits": [1, 4]}})
    with pytest.raises(ConfigError, match="simulate.enabled"):
        parse_recipe({"name": "x", "method": w1, "hardware": {"target": "estimate"}})
    recipe = parse_recipe({"name": "x", "method": w1, "hardware": {"target": "estimate"},
                           "simulate": {"enabled": False}})
    assert recipe.hardware.min_weight_bits == 1


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_recipe(tmp_path)
    (tmp_path / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ConfigError, match="not a text file"):
        load_recipe(tmp_path / "binary.yaml")


def test_yaml_errors_keep_the_file_line_and_caret(tmp_path):
    """Defect 10: the YAML error named <unicode string> and lost its line and caret."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(bad)
    text = str(err.value)
    assert "not valid YAML" in text and f'"{bad}", line' in text and "^" in text
    assert "<unicode string>" not in text


def test_synthetic_images_take_the_recipes_shape(tmp_path):
    """cnv takes 3 x 32 x 32 images: a synthetic set of that shape feeds it (default 1 x 8 x 8)."""
    from flow.run.folder import RunFolder
    from flow.run.run import Run

    recipe = parse_recipe({"name": "c", "data": {"dataset": "synthetic", "shape": [3, 32, 32],
                                                 "limit": 20}, "model": {"arch": "cnv"}})
    run = Run(recipe, RunFolder(tmp_path))
    assert tuple(run.data.in_shape) == (3, 32, 32) and run.arch.name == "cnv"


@pytest.mark.parametrize("text, line", [
    ("name: a\ntrain:\n  epochs: 3\n  lr: 0.01\n  epochs: 5\n", 5),
    ("name: a\nname: b\n", 2),
])
def test_a_key_given_twice_is_named_with_file_and_line(tmp_path, text, line):
    """The last one silently won."""
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"{path}: line {line}: key '\w+' is given twice"):
        load_recipe(path)


def test_a_plan_file_with_a_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("input_bits: 5\nlayers: {}\ninput_bits: 4\n")
    with pytest.raises(ConfigError, match=rf"plan file {path}: line 3: key 'input_bits'"):
        CompressionPlan.load(path)


def test_target_fps_1e5_is_a_number(tmp_path):
    """YAML 1.1 reads 1e5 (no dot, unsigned exponent) as a string: 'not a valid number'."""
    path = tmp_path / "r.yaml"
    path.write_text("name: a\nhardware: {target_fps: 1e5, clock_mhz: 1.5E2}\n"
                    "budget: {min_fps: 2e+4}\ntrain: {lr: 3e-3}\n")
    recipe = load_recipe(path)
    assert recipe.hardware.target_fps == 100000.0 and recipe.hardware.clock_mhz == 150.0
    assert recipe.budget.min_fps == 20000.0 and recipe.train.lr == 0.003


def test_merge_keys_still_override(tmp_path):
    path = tmp_path / "r.yaml"
    text = "name: a\ntrain:\n  <<: {epochs: 3, lr: 0.01}\n  epochs: 5\n"
    path.write_text(text)
    assert load_recipe(path).train.epochs == 5


@pytest.mark.slow  # a subprocess or a study of its own: seconds
def test_a_5000_deep_list_is_one_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: a\ndata: {shape: " + "[" * 5000 + "]" * 5000 + "}\n")
    with pytest.raises(ConfigError, match=rf"recipe file {path} nests .* too deep") as err:
        load_recipe(path)
    assert "\n" not in str(err.value)


def test_aqp_k_max_cannot_exceed_the_prune_k_range(tmp_path):
    (tmp_path / "r.yaml").write_text("name: a\nmethod: {name: aqp, k_max: 50.0}\n")
    with pytest.raises(ConfigError, match=r"method\.k_max"):
        load_recipe(tmp_path / "r.yaml")
