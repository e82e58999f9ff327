"""Suite-wide checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", ".pytest_cache", ".ruff_cache", "__pycache__"}


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
