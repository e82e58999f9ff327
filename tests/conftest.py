"""Suite-wide checks."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", ".pytest_cache", ".ruff_cache", "__pycache__"}
# Made once per machine and reused by every later process, so they do not pile up: pytest's tmp_path root,
# onnxruntime's session-id file and torch's compile cache.
REUSED = ("pytest-of-", ".ses", "torchinductor_")
_TEMP_ROOT: list[Path] = []  # the session's private temporary folder (see pytest_configure)


def pytest_configure(config: pytest.Config) -> None:
    # Every temporary file of the session (pytest's tmp_path, tempfile in the tests, the code under test and
    # the subprocesses it starts) goes into one private folder, so that what a test or the code forgets to
    # remove can be told apart from what other processes put in /tmp at the same time.
    root = Path(tempfile.mkdtemp(prefix="sasrec-tests-"))
    _TEMP_ROOT.append(root)
    os.environ["TMPDIR"] = str(root)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


def pytest_unconfigure(config: pytest.Config) -> None:
    if _TEMP_ROOT:
        shutil.rmtree(_TEMP_ROOT.pop(), ignore_errors=True)


def _checkout_files() -> set[Path]:
    files = set()
    for path in REPO.rglob("*"):
        parts = path.relative_to(REPO).parts
        if not any(p in SKIP or p.endswith(".egg-info") for p in parts):
            files.add(path)
    return files


@pytest.fixture(scope="session", autouse=True)
def leaves_checkout_clean() -> Iterator[None]:
    """The suite writes only under pytest's temporary directories, never into the checkout."""
    before = _checkout_files()
    yield
    added = sorted(str(p.relative_to(REPO)) for p in _checkout_files() - before)
    assert not added, f"the tests left files in the checkout: {added[:10]}"


@pytest.fixture(scope="session", autouse=True)
def leaves_temp_clean() -> Iterator[None]:
    """Nothing is left in the temporary folder after the suite but pytest's tmp_path folders and caches that
    are made once and reused (:data:`REUSED`): a run of the suite leaves /tmp as it found it."""
    root = Path(tempfile.gettempdir())
    yield
    left = sorted(p.name for p in root.iterdir() if not p.name.startswith(REUSED))
    assert not left, f"the tests (or the code they ran) left temporary files behind: {left[:10]}"
