"""The command line: clear errors with exit code 2, no traceback; listings."""
from pathlib import Path

from flow.cli import main


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
    assert "unknown method 'magic'" in capsys.readouterr().out


def test_simulate_refuses_a_renamed_run_folder(tmp_path, capsys):
    run = tmp_path / "copy_of_r"
    (run / "05_finn").mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: r\n")
    assert main(["simulate", str(run)]) == 2
    assert "folder of run 'r' was renamed; name it r again" in capsys.readouterr().out


def test_estimate_rejects_non_onnx(tmp_path, capsys):
    bogus = tmp_path / "model.onnx"
    bogus.write_text("not onnx")
    assert main(["estimate", str(bogus), "--out", str(tmp_path)]) == 2
    assert "is not a readable ONNX file" in capsys.readouterr().out


def test_compare_needs_finished_runs(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "no summary.json" in capsys.readouterr().out


def test_boards_lists_catalogue(capsys):
    assert main(["boards"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("Pynq-Z1", "ZCU104", "KV260", "U250"))
    assert Path("build/digits.yaml").is_file()
