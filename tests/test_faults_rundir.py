"""Faults around the run folder: links out of it, a linked lock, an output root inside a run,
full disks, read-only or forbidden folders. Each is refused in one line and loses nothing.

The runs here go through the real pipeline with light steps (no training), so that the whole
command runs in a second; the steps' own work is tested elsewhere."""
from __future__ import annotations

import errno
import json
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

import flow.pipeline as pipeline
from flow.cli import main
from flow.core.errors import FileSystemError, RunFolderError
from flow.core.io import atomic_write_text, remove_tree
from flow.finn.deploy import MARKER, _prepare_folder
from flow.run.folder import MARK, STEPS_DIR, RunFolder, StepRecord
from flow.run.table import STEP_NAMES, step_folder

REPO = Path(__file__).resolve().parents[1]

TINY = {"name": "tiny", "data": {"dataset": "digits", "limit": 300}, "train": {"epochs": 1},
        "qat": {"epochs": 1}, "method": {"name": "uniform", "weight_bits": 3, "act_bits": 3},
        "simulate": {"frames": 20}}


class Done(BaseModel):
    step: str


def light_step(name: str):
    """A step that writes one file (and the report step a summary.json) instead of its work."""
    def fn(run, out: Path) -> Done:
        atomic_write_text(out / "made.txt", f"{name}\n")
        if name == "report":
            atomic_write_text(run.dir / "summary.json", '{"old": true}\n')
        return Done(step=name)
    return fn


@pytest.fixture()
def light_steps(monkeypatch):
    for n in STEP_NAMES:
        monkeypatch.setitem(pipeline.STEP_FUNCTIONS, n, light_step(n))


@pytest.fixture()
def recipe(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture()
def out(tmp_path) -> Path:
    return tmp_path / "out"


@pytest.fixture()
def run_dir(light_steps, recipe, out) -> Path:
    """A finished run of the tiny recipe (light steps) at out/tiny."""
    from flow.recipe.config import load_recipe

    pipeline.run_recipe(load_recipe(recipe), out)
    return out / "tiny"


def error_text(capsys) -> str:
    """The command's output, its one error line unwrapped (the console wraps at 140 columns)."""
    text = capsys.readouterr().out
    assert "Traceback" not in text and text.count("error:") == 1, text
    return " ".join(text.split())


def precious(tmp_path) -> Path:
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    return folder


def relink(link: Path, target: Path) -> None:
    link.unlink()
    link.symlink_to(target)


# ----------------------------------------------------------------------------- links out


def test_step_link_to_an_outside_folder_is_refused_and_the_folder_kept(run_dir, recipe, out,
                                                                      tmp_path, capsys):
    """Defect 1: `ln -sfn ~/precious RUN/09_report; densiflow run` deleted ~/precious."""
    keep = precious(tmp_path)
    relink(run_dir / "09_report", keep)
    assert main(["run", str(recipe), "--out", str(out)]) == 1
    line = error_text(capsys)
    assert "09_report leads to" in line and "outside this run's .steps/" in line
    assert (keep / "thesis.tex").read_text() == "years of work"


def test_commit_never_deletes_through_a_link_out_of_the_run(run_dir, tmp_path):
    keep = precious(tmp_path)
    relink(run_dir / "09_report", keep)
    folder = RunFolder.open(run_dir)
    work = folder.new_step_dir("09_report")
    record = StepRecord(step="report", id="x", inputs="i", upstream=None, seconds=0,
                        artefacts={}, result={})
    with pytest.raises(FileSystemError, match="outside this run's .steps/"):
        folder.commit("09_report", work, record)
    assert (keep / "thesis.tex").read_text() == "years of work"


def test_link_to_another_runs_step_is_refused_and_that_step_kept(run_dir, light_steps,
                                                                  tmp_path, capsys):
    """Defect 1: a link to another run's step folder deleted that step."""
    from flow.recipe.config import parse_recipe

    pipeline.run_recipe(parse_recipe(dict(TINY, name="other")), run_dir.parent)
    other_step = (run_dir.parent / "other" / "09_report").resolve()
    relink(run_dir / "09_report", other_step)
    assert main(["run", str(tmp_path / "tiny.yaml"), "--out", str(run_dir.parent),
                 "--from", "report"]) == 1
    assert "outside this run's .steps/" in error_text(capsys)
    assert (other_step / "made.txt").read_text() == "report\n"
    assert RunFolder.open(run_dir.parent / "other").record("09_report").step == "report"


def test_a_linked_steps_folder_is_refused(run_dir, tmp_path):
    keep = precious(tmp_path)
    steps = run_dir / STEPS_DIR
    steps.rename(tmp_path / "moved_steps")
    steps.symlink_to(keep)
    with pytest.raises(FileSystemError, match=r"\.steps is a link"):
        RunFolder.open(run_dir).new_step_dir("01_baseline")
    assert sorted(p.name for p in keep.iterdir()) == ["thesis.tex"]


def test_linked_lock_is_refused_and_its_target_untouched(run_dir, tmp_path, capsys):
    """Defect 2: a symlinked .lock was followed and the file it points at truncated."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    (run_dir / ".lock").unlink()
    (run_dir / ".lock").symlink_to(notes)
    assert main(["importance", str(run_dir)]) == 1
    line = error_text(capsys)
    assert f"{run_dir / '.lock'}" in line and "symbolic link" in line
    assert notes.read_text() == "my notes\n"


def test_hard_linked_lock_is_refused_and_its_target_untouched(run_dir, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    (run_dir / ".lock").unlink()
    os.link(notes, run_dir / ".lock")
    with pytest.raises(FileSystemError, match="not densiflow's lock file"):
        with RunFolder.open(run_dir).lock():
            pass
    assert notes.read_text() == "my notes\n"


# ----------------------------------------------------------------------------- output root


def test_out_inside_a_runs_steps_is_refused(run_dir, light_steps, tmp_path, capsys):
    """Defect 4: `run a.yaml --out OUT/tiny/.steps` made a run there, deleted by tiny's run."""
    other_recipe = tmp_path / "a.yaml"
    other_recipe.write_text(yaml.safe_dump(dict(TINY, name="a")))
    before = sorted(p.name for p in (run_dir / STEPS_DIR).iterdir())
    assert main(["run", str(other_recipe), "--out", str(run_dir / STEPS_DIR)]) == 2
    assert f"lies inside the run folder {run_dir.resolve()}" in error_text(capsys)
    assert sorted(p.name for p in (run_dir / STEPS_DIR).iterdir()) == before
    assert main(["run", str(other_recipe), "--out", str(run_dir / "sub")]) == 2
    assert "lies inside the run folder" in error_text(capsys)
    assert not (run_dir / "sub").exists()


def test_a_run_folder_inside_steps_survives_the_runs_cleaning(run_dir, recipe, light_steps):
    """Defect 4: a run folder an older densiflow made in OUT/tiny/.steps was deleted."""
    from flow.recipe.config import load_recipe

    inner = run_dir / STEPS_DIR / "a"
    inner.mkdir()
    (inner / MARK).write_text(json.dumps({"format": 1, "name": "a", "redo_from": None}))
    pipeline.run_recipe(load_recipe(recipe), run_dir.parent, from_step="report")
    assert (inner / MARK).is_file()


# ----------------------------------------------------------------------------- refusals


def refusing_open(monkeypatch, code: int, where) -> None:
    """os.open raises OSError(code) for the paths `where` accepts (the rest open as usual)."""
    real = os.open

    def fake(path, *args, **kwargs):
        if where(str(path)):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake)


def test_full_disk_in_the_report_step_keeps_the_previous_result(run_dir, recipe, out,
                                                                monkeypatch, capsys):
    """Defect 7: ENOSPC during the report step was a traceback."""
    summary = (run_dir / "summary.json").read_text()
    report_id = RunFolder.open(run_dir).record("09_report").id
    refusing_open(monkeypatch, errno.ENOSPC, lambda p: "summary.json" in p)
    assert main(["run", str(recipe), "--out", str(out), "--from", "report"]) == 1
    line = error_text(capsys)
    assert "summary.json: No space left on device; free space" in line
    assert (run_dir / "summary.json").read_text() == summary
    assert RunFolder.open(run_dir).record("09_report").id == report_id


def test_full_disk_at_commit_keeps_the_previous_step(run_dir, monkeypatch):
    folder = RunFolder.open(run_dir)
    before = folder.record("09_report")
    work = folder.new_step_dir("09_report")
    refusing_open(monkeypatch, errno.ENOSPC, lambda p: "result.json" in p)
    with pytest.raises(FileSystemError, match="No space left on device; free space"):
        folder.commit("09_report", work, before.model_copy(update={"id": "new"}))
    assert folder.record("09_report") == before
    assert (folder.step_link("09_report") / "made.txt").read_text() == "report\n"


def test_full_disk_deep_inside_a_step_is_one_line(run_dir, recipe, out, monkeypatch, capsys):
    """An OSError raised by a tool inside a step (FINN writing its files) is one line, exit 1."""
    def finn(run, out_dir):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out_dir / "model.onnx"))

    monkeypatch.setitem(pipeline.STEP_FUNCTIONS, "finn", finn)
    assert main(["run", str(recipe), "--out", str(out), "--from", "finn"]) == 1
    assert "model.onnx: No space left on device; free space" in error_text(capsys)
    assert (run_dir / "05_finn" / "made.txt").read_text() == "finn\n"


@pytest.mark.parametrize("command", [["run", "RECIPE", "--out", "OUT"], ["simulate", "RUN"],
                                     ["synth", "RUN"], ["deploy", "RUN"], ["importance", "RUN"],
                                     ["hil", "RUN", "--target", "127.0.0.1:1"]])
def test_read_only_lock_is_one_line_in_every_command(command, run_dir, recipe, out,
                                                     monkeypatch, capsys):
    """Defect 7: EROFS on .lock was a traceback in every command."""
    args = [{"RECIPE": str(recipe), "OUT": str(out), "RUN": str(run_dir)}.get(a, a)
            for a in command]
    refusing_open(monkeypatch, errno.EROFS, lambda p: p.endswith(".lock"))
    assert main(args) == 1
    line = error_text(capsys)
    assert f"cannot open the lock {run_dir / '.lock'}: Read-only file system" in line
    assert "choose a writable --out" in line


@pytest.mark.parametrize("code, hint", [(errno.EACCES, "check its permissions"),
                                        (errno.EROFS, "read-only"),
                                        (errno.ENOSPC, "free space")])
def test_a_new_run_folder_that_cannot_be_written(code, hint, light_steps, recipe, out,
                                                 monkeypatch, capsys):
    refusing_open(monkeypatch, code, lambda p: MARK in p)
    assert main(["run", str(recipe), "--out", str(out)]) == 1
    line = error_text(capsys)
    assert MARK in line and os.strerror(code) in line and hint in line


class FullDisk:
    def write(self, text: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self) -> None:
        pass


def test_a_step_log_on_a_full_disk_prints_no_traceback(tmp_path, capsys):
    with pipeline.step_log(tmp_path / "step.log"):
        handler = next(h for h in logging.getLogger().handlers
                       if getattr(h, "baseFilename", None) == str(tmp_path / "step.log"))
        handler.stream = FullDisk()
        logging.getLogger("finn.builder").warning("a FINN message")
    assert "Traceback" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- shared lock


def test_shared_lock_of_an_agent_refuses_an_exclusive_one(run_dir):
    folder = RunFolder.open(run_dir)
    with folder.lock():
        pid_line = (run_dir / ".lock").read_text()
    with folder.lock(shared=True), RunFolder(run_dir).lock(shared=True):  # two agents
        assert (run_dir / ".lock").read_text() == pid_line  # a shared holder writes no pid
        with pytest.raises(RunFolderError, match="served by a densiflow agent; stop it"):
            with RunFolder(run_dir).lock():
                pass
    with folder.lock():
        with pytest.raises(RunFolderError, match=f"in use by another densiflow process "
                                                 f"\\(pid {os.getpid()}\\)"):
            with RunFolder(run_dir).lock(shared=True):
                pass


def test_shared_lock_held_by_another_process(run_dir):
    holder = textwrap.dedent(f"""
        import sys
        from flow.run.folder import RunFolder
        with RunFolder({str(run_dir)!r}).lock(shared=True):
            print("held", flush=True)
            sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and proc.stdout.readline() == "held\n"
        with pytest.raises(RunFolderError, match="served by a densiflow agent"):
            with RunFolder(run_dir).lock():
                pass
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    with RunFolder(run_dir).lock():  # released when the agent ends
        pass


# ----------------------------------------------------------------------------- other deletions


def test_removing_a_linked_folder_removes_the_link_only(tmp_path):
    keep = precious(tmp_path)
    link = tmp_path / "scratch"
    link.symlink_to(keep)
    remove_tree(link)
    assert not link.is_symlink() and (keep / "thesis.tex").is_file()


def test_deployment_parts_that_are_links_are_unlinked_not_followed(tmp_path):
    keep = precious(tmp_path)
    out = tmp_path / "deployment"
    out.mkdir()
    (out / MARKER).touch()
    (out / "driver").symlink_to(keep)
    _prepare_folder(out)
    assert not (out / "driver").exists() and (keep / "thesis.tex").is_file()


def test_simulations_folder_that_is_a_link_is_refused(run_dir, tmp_path):
    from flow.recipe.config import load_recipe
    from flow.run.run import Run
    from flow.sim.simulations import simulate_again

    keep = precious(tmp_path)
    (run_dir / "simulations").symlink_to(keep)
    run = Run(load_recipe(run_dir / "recipe.yaml"), RunFolder.open(run_dir))
    with pytest.raises(FileSystemError, match="simulations is a link or a file"):
        simulate_again(run, 1, 0.0)
    assert sorted(p.name for p in keep.iterdir()) == ["thesis.tex"]


def test_every_step_of_the_light_run_finished(run_dir):
    """The harness itself: every step link points into .steps/ and holds its file."""
    folder = RunFolder.open(run_dir)
    for name in STEP_NAMES:
        assert (folder.step_target(step_folder(name)) / "made.txt").read_text() == f"{name}\n"


def test_a_linked_search_scratch_folder_is_unlinked_not_written_through(tmp_path):
    from flow.search.evaluate import _cached

    keep = precious(tmp_path)
    scratch = tmp_path / "scratch"
    scratch.symlink_to(keep)

    def compute(work: Path) -> Done:
        work.mkdir(exist_ok=True)  # as FINN makes its build folder
        (work / "build.log").write_text("FINN")
        return Done(step="finn")

    assert _cached(tmp_path / "estimate.json", Done, scratch, compute) == (Done(step="finn"), False)
    assert sorted(p.name for p in keep.iterdir()) == ["thesis.tex"] and not scratch.exists()


@pytest.mark.slow  # a subprocess or a study of its own: seconds
def test_sigterm_cleans_up_as_ctrl_c_does(tmp_path):
    """A command killed with SIGTERM runs its clean-up (finally blocks) and exits 130."""
    marker = tmp_path / "cleaned"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "import flow.cli\n"
        "def slow(args):\n"
        "    Path(sys.argv[1] + '.started').write_text('')\n"
        "    try:\n"
        "        time.sleep(60)\n"
        "    finally:\n"
        "        Path(sys.argv[1]).write_text('yes')\n"
        "flow.cli.cmd_boards = slow\n"
        "sys.exit(flow.cli.main(['boards']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(marker)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not Path(f"{marker}.started").exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    assert marker.read_text() == "yes"
    assert "interrupted" in out and "Traceback" not in out


@pytest.mark.parametrize("command", [["estimate", "model.onnx"], ["search", "recipe.yaml"],
                                     ["compare", "RUN"]])
def test_every_out_inside_a_run_folder_is_refused(tmp_path, capsys, command):
    """--out of estimate, search and compare inside a run folder is refused before any work."""
    run = RunFolder.create_or_open(tmp_path / "tiny", "tiny")
    inside = run.path / STEPS_DIR
    assert main([*command, "--out", str(inside)]) == 2
    assert "lies inside the run folder" in error_text(capsys)
    assert sorted(p.name for p in run.path.iterdir()) == [MARK]
