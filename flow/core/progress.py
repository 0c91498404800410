"""Progress bars for long work (Verilator builds, simulations, synthesis, searches), on the
terminal through rich; library code gets a plain callback."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Update = Callable[[int, int, str], None]  # done, total, note


@contextmanager
def progress_bar(label: str) -> Iterator[Update]:
    """A bar labelled `label`; the yielded function moves it (done, total, note)."""
    with Progress(TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[note]}"), transient=False) as bar:
        task = bar.add_task(label, total=None, note="")

        def update(done: int, total: int, note: str = "") -> None:
            bar.update(task, completed=done, total=total or None, note=note)

        yield update
