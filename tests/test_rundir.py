"""The run folder never loses data: marks, one process per folder, atomic step commits, checks."""
import os

import pytest

from flow.core.errors import ArtefactError, RunFolderError
from flow.run.folder import MARK, RunFolder, StepRecord


def record(step: str, upstream: str | None = None) -> StepRecord:
    return StepRecord(step=step, id=f"id-{step}", inputs="i", upstream=upstream, seconds=0.1,
                      artefacts={}, result={"value": 1})


def finished(tmp_path, payload: str = "weights") -> RunFolder:
    folder = RunFolder.create_or_open(tmp_path / "run", "run")
    work = folder.new_step_dir("01_baseline")
    (work / "model.pt").write_text(payload)
    folder.commit("01_baseline", work, record("baseline"))
    return folder


def test_foreign_folders_are_refused_and_left_alone(tmp_path):
    """Defect 1: a folder without densiflow's mark (a cache, a user's data) was deleted."""
    foreign = tmp_path / "rtlsim_cache"
    foreign.mkdir()
    (foreign / "precious.bin").write_bytes(b"x")
    with pytest.raises(RunFolderError, match="not a densiflow run folder"):
        RunFolder.create_or_open(foreign, "rtlsim_cache")
    assert (foreign / "precious.bin").read_bytes() == b"x"
    assert sorted(p.name for p in foreign.iterdir()) == ["precious.bin"]


def test_mark_names_the_run(tmp_path):
    RunFolder.create_or_open(tmp_path / "a", "a")
    with pytest.raises(RunFolderError, match="belongs to run 'a'"):
        RunFolder.create_or_open(tmp_path / "a", "b")
    (tmp_path / "a" / MARK).write_text("{garbled")
    with pytest.raises(RunFolderError, match="damaged"):
        RunFolder.open(tmp_path / "a")


def test_second_process_gets_the_holders_pid(tmp_path):
    """Defect 5: two runs on one folder deleted each other's work."""
    folder = RunFolder.create_or_open(tmp_path / "run", "run")
    with folder.lock():
        with pytest.raises(RunFolderError, match=f"in use by another densiflow process "
                                                 f"\\(pid {os.getpid()}\\)"):
            with RunFolder(folder.path).lock():
                pass
    with folder.lock():  # released on exit
        pass


def test_commit_replaces_only_when_the_successor_is_complete(tmp_path):
    folder = finished(tmp_path, "old")
    link = folder.step_link("01_baseline")
    old_target = link.resolve()
    work = folder.new_step_dir("01_baseline")
    (work / "model.pt").write_text("new, half written")
    # not committed yet (an interrupted step): the old result is still the step's result
    assert (link / "model.pt").read_text() == "old" and folder.record("01_baseline").id
    folder.clean_uncommitted(["01_baseline"])
    assert not work.exists() and old_target.exists()
    work = folder.new_step_dir("01_baseline")
    (work / "model.pt").write_text("new")
    folder.commit("01_baseline", work, record("baseline"))
    assert (link / "model.pt").read_text() == "new" and not old_target.exists()


def test_artefacts_are_checked_when_read(tmp_path):
    """Defect 7: a truncated model.pt gave a raw OSError; a truncated ONNX went unnoticed."""
    folder = finished(tmp_path)
    assert folder.artefact("01_baseline", "model.pt").read_text() == "weights"
    (folder.step_link("01_baseline") / "model.pt").write_text("weigh")
    with pytest.raises(ArtefactError, match=r"01_baseline/model.pt is damaged or was changed "
                                            r"after step 'baseline' wrote it.*--from baseline"):
        folder.artefact("01_baseline", "model.pt")
    with pytest.raises(ArtefactError, match="model.pt is damaged"):
        folder.verify("01_baseline")
    (folder.step_link("01_baseline") / "model.pt").unlink()
    with pytest.raises(ArtefactError, match="model.pt is missing"):
        folder.artefact("01_baseline", "model.pt")
    (folder.step_link("01_baseline") / "result.json").write_text("{")
    with pytest.raises(ArtefactError, match="result.json is damaged"):
        folder.record("01_baseline")


def test_a_real_folder_where_a_step_link_belongs_is_not_replaced(tmp_path):
    folder = RunFolder.create_or_open(tmp_path / "run", "run")
    (folder.path / "01_baseline").mkdir()
    work = folder.new_step_dir("01_baseline")
    with pytest.raises(RunFolderError, match="not a step link"):
        folder.commit("01_baseline", work, record("baseline"))


def test_links_of_steps_that_no_longer_exist_are_removed(tmp_path):
    folder = finished(tmp_path)
    work = folder.new_step_dir("07_deploy")
    folder.commit("07_deploy", work, record("deploy"))
    folder.clean_uncommitted(["01_baseline", "08_deploy"])
    assert not folder.step_link("07_deploy").exists() and not work.exists()
    assert (folder.step_link("01_baseline") / "model.pt").is_file()
