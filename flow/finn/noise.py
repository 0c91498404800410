"""FINN's and QONNX's warnings and log records during a build go to a log file, not the terminal.

Every clean build makes FINN and QONNX talk (QONNX's `UserWarning: Assuming 4D input is NCHW`,
FINN's "inputDataType changing" records on `finn_logger`); none of it asks the user to act.
densiflow's own warnings (targets missed, nodes over target) stay on densiflow's loggers.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOG_FILE = "finn.log"  # in the build's work folder
NOISY_PACKAGES = ("finn", "qonnx")
# finn_logger: FINN's custom ops and passes; mip: the solver FINN's Floorplan imports (it logs)
NOISY_LOGGERS = ("finn", "finn_logger", "qonnx", "mip")


def _package_dirs(packages: tuple[str, ...]) -> tuple[str, ...]:
    """Installed folders of `packages` (each ending in a separator), without importing them."""
    dirs = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        for loc in (spec.submodule_search_locations or []) if spec else []:
            dirs.append(os.path.realpath(loc) + os.sep)
    return tuple(dirs)


def _warning_router(handler: logging.Handler, dirs: tuple[str, ...]):
    """A warnings.showwarning that sends warnings raised in `dirs` to `handler`."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not os.path.realpath(filename).startswith(dirs):
            previous(message, category, filename, lineno, file, line)
            return
        handler.handle(logging.LogRecord("py.warnings", logging.WARNING, filename, lineno,
                                         "%s: %s", (category.__name__, message), None))

    return show


@contextmanager
def finn_output_to(log_path: Path | str) -> Iterator[Path]:
    """Within the block, FINN's and QONNX's warnings and log records are appended to log_path."""
    path = Path(log_path)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    propagate = [lg.propagate for lg in loggers]
    try:
        with warnings.catch_warnings():
            # once per place and build, whatever the process filters say (they are restored)
            warnings.filterwarnings("default", module=rf"({'|'.join(NOISY_PACKAGES)})(\.|$)")
            warnings.showwarning = _warning_router(handler, _package_dirs(NOISY_PACKAGES))
            for lg in loggers:
                lg.addHandler(handler)
                lg.propagate = False
            yield path
    finally:
        for lg, prop in zip(loggers, propagate):
            lg.removeHandler(handler)
            lg.propagate = prop
        handler.close()
