"""FINN's settings for one build, undone afterwards (os.environ and FINN's global settings)."""
from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# FINN's HLS and RTL op registries, and densiflow's RTL ops registered into them
HW_OP_PACKAGES = ("finn.custom_op.fpgadataflow.hls", "finn.custom_op.fpgadataflow.rtl",
                  "hw_models.finn_ops")


def _restore_environ(saved: dict[str, str]) -> None:
    """Make os.environ equal `saved` again (variables added since are removed)."""
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


@contextmanager
def finn_settings(work_dir: Path | str, build_dir: Path | str | None = None) -> Iterator[Path]:
    """FINN ready for transformations inside the block; yields its build folder.

    Registers every HW op module, densiflow's too (Reshape, for one, registers its RTL variant
    only when the RTL package is imported, which would make conversion depend on import order;
    a saved model with densiflow's ops executes only once they are registered), sets
    FINN_BUILD_DIR (`build_dir` if given, else the caller's FINN_BUILD_DIR if set, else
    `<work_dir>/finn_build`) and FINN's dummy settings.
    On exit os.environ (FINN writes FINN_BUILD_DIR, FINN_DEPS, NUM_DEFAULT_WORKERS, ...) and
    FINN's global settings object are as they were before.
    """
    import finn.util.settings as finn_global

    for package in HW_OP_PACKAGES:
        importlib.import_module(package)
    saved_env, saved_settings = dict(os.environ), finn_global._SETTINGS
    build = Path(build_dir or os.environ.get("FINN_BUILD_DIR") or Path(work_dir) / "finn_build")
    build = build.resolve()
    try:
        build.mkdir(parents=True, exist_ok=True)
        os.environ["FINN_BUILD_DIR"] = str(build)
        finn_global.initialize_dummy_settings()
        yield build
    finally:
        _restore_environ(saved_env)
        finn_global._SETTINGS = saved_settings
