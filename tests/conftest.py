"""Fixtures shared by unit and integration tests: the package as a user installs it, outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from the repository, as `pip wheel .` builds it for an image or an index."""
    out = tmp_path_factory.mktemp("wheel")
    # from a clean copy: setuptools builds in the source's build/, where files of earlier builds would linger
    source = tmp_path_factory.mktemp("source") / "jobrec"
    # what no build reads, and what another pytest worker may be writing meanwhile (a file renamed away mid-copy)
    skipped = shutil.ignore_patterns(
        *(".git", ".venv", ".cache", ".local", "build", "*.egg-info", ".hypothesis", ".pytest_cache", "__pycache__"),
        *("spark-warehouse", "metastore_db", "derby.log"),
    )
    shutil.copytree(REPO, source, ignore=skipped)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("jobrec-*.whl")
    return wheel


@pytest.fixture(scope="session")
def installed_elsewhere(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a process that runs the wheel unpacked in a folder far from the checkout: its
    PYTHONPATH puts that folder first, so `jobrec` comes from there, not from the editable install."""
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(built_wheel) as whl:
        whl.extractall(target)
    return {**os.environ, "PYTHONPATH": str(target)}
