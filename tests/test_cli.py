"""The command line: one-line errors with exit code 2, no traceback, nothing written; listings."""
import pytest

from flow.cli import main
from flow.run.folder import RunFolder


def test_missing_recipe(capsys):
    assert main(["run", "no/such/recipe.yaml"]) == 2
    assert "recipe file no/such/recipe.yaml does not exist" in capsys.readouterr().out


def test_unknown_board_fails_before_any_work(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nhardware: {board: zedboard-9000}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 2
    out = capsys.readouterr().out
    assert "unknown board 'zedboard-9000'" in out and "Pynq-Z1" in out
    assert not (tmp_path / "out").exists()


def test_unknown_method_is_named(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmethod: {name: magic}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path)]) == 2
    assert "method.name: 'magic' is not a method; allowed: uniform, aqp" in capsys.readouterr().out


def test_text_in_brackets_survives(tmp_path, capsys):
    """Defect 10: errors went through Rich markup, and text in [...] vanished."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmethod: {name: aqp, fixed_layers: [bold]}\ntrain: [1\n")
    assert main(["run", str(recipe)]) == 2
    out = capsys.readouterr().out
    assert "train: [1" in out and "^" in out


def test_recipe_that_is_a_folder_or_binary(tmp_path, capsys):
    """Defect 11: a binary recipe gave UnicodeDecodeError; a folder said "does not exist"."""
    assert main(["run", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().out
    binary = tmp_path / "r.yaml"
    binary.write_bytes(bytes(range(256)))
    assert main(["run", str(binary)]) == 2
    assert "is not a text file" in capsys.readouterr().out


def test_simulate_refuses_foreign_and_renamed_folders(tmp_path, capsys):
    run = tmp_path / "copy_of_r"
    (run / "05_finn").mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: r\n")
    assert main(["simulate", str(run)]) == 2
    assert "not a densiflow run folder" in capsys.readouterr().out
    RunFolder.create_or_open(tmp_path / "r", "r")
    (tmp_path / "r" / "recipe.yaml").write_text("name: r\n")
    (tmp_path / "r").rename(run.with_name("renamed"))
    assert main(["simulate", str(run.with_name("renamed"))]) == 2
    assert "folder of run 'r' was renamed; name it r again" in capsys.readouterr().out


def test_estimate_rejects_non_onnx(tmp_path, capsys):
    bogus = tmp_path / "model.onnx"
    bogus.write_text("not onnx")
    assert main(["estimate", str(bogus), "--out", str(tmp_path)]) == 2
    assert "is not a readable ONNX file" in capsys.readouterr().out


@pytest.mark.parametrize("option, value", [("--clock-mhz", "-100"), ("--clock-mhz", "0"),
                                           ("--target-fps", "inf"), ("--target-fps", "nan"),
                                           ("--fifo-depth", "1")])
def test_estimate_refuses_impossible_numbers(tmp_path, capsys, option, value):
    """Defect 9: -100 MHz gave negative frames/s; 0 MHz became 100 MHz; inf fps was accepted."""
    with pytest.raises(SystemExit) as exit_:
        main(["estimate", str(tmp_path / "m.onnx"), option, value])
    assert exit_.value.code == 2
    assert f"argument {option}: {value} is not allowed" in capsys.readouterr().err


def test_compare_needs_finished_runs(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "not a densiflow run folder" in capsys.readouterr().out
    RunFolder.create_or_open(tmp_path / "r", "r")
    assert main(["compare", str(tmp_path / "r")]) == 2
    assert "no summary.json; the run has not finished" in capsys.readouterr().out


def test_boards_lists_catalogue(capsys):
    assert main(["boards"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("Pynq-Z1", "ZCU104", "KV260", "U250"))


def test_estimate_names_the_input_dtype_option(tmp_path, capsys):
    """Defect 14: the error for an unannotated input said "Pass input_dtype"."""
    import torch
    from brevitas.export import export_qonnx

    from flow.models import build_quant, get_architecture

    arch = get_architecture("digits_cnn")
    path = tmp_path / "plain.onnx"
    export_qonnx(build_quant(arch, 16, arch.uniform_plan(4, 4, 5)).eval(),
                 input_t=torch.zeros(1, 1, 8, 8), export_path=str(path), dynamo=False)
    assert main(["estimate", str(path), "--out", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "--input-dtype" in out and "input_dtype" not in out.replace("--input-dtype", "")


def test_empty_test_split_is_refused_before_training(tmp_path, capsys):
    """Defect 11: an MNIST folder with an empty test split crashed in torch.cat after training."""
    import gzip

    import numpy as np

    def idx(path, arr):
        dims = b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        path.write_bytes(gzip.compress(bytes([0, 0, 8, arr.ndim]) + dims + arr.tobytes()))

    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (40, 28, 28), np.uint8))
    idx(folder / "train-labels-idx1-ubyte.gz", (np.arange(40) % 10).astype(np.uint8))
    idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8))
    idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros((0,), np.uint8))
    recipe = tmp_path / "m.yaml"
    recipe.write_text(
        f"name: m\ndata: {{dataset: mnist, path: {folder}}}\nmodel: {{arch: lenet}}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 2
    assert "the test split holds 0 samples" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
