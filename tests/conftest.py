"""Shared fixtures: FINN needs a build folder and dummy settings before any transformation."""
import os
import warnings

import pytest

warnings.filterwarnings("ignore", message="fast_hadamard_transform")


@pytest.fixture(scope="session", autouse=True)
def finn_build_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("finn_build")
    os.environ.setdefault("FINN_BUILD_DIR", str(path))
    return path
