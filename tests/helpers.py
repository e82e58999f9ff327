"""Shared test helpers: where fixtures and the (optional) real datasets are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SASREC_SHARED_DATA") or REPO / ".." / "shared" / "data")


def shared_file(name: str) -> Path:
    """A file of the shared datasets, or skip the test saying where it was looked for."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not present (set SASREC_SHARED_DATA to the shared data directory)")
    return path
