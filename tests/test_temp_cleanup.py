"""Code that makes temporary folders removes them: the estimator's default run directory, and torchrun's logs
in the tests (tests/conftest.py checks that the whole suite leaves the temporary folder as it found it)."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np

from sasrec.api import Recommender


def test_fit_without_run_dir_removes_its_temporary_run(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 8)
    log = {"user_id": users, "item_id": rng.integers(0, 30, len(users)), "timestamp": np.arange(len(users))}
    rec = Recommender(epochs=1, hidden=8, maxlen=10, num_blocks=1, quiet=True, eval_negatives=10).fit(
        log, time_col="timestamp"
    )
    root = rec.run_dir.parent
    assert root.is_dir() and len(rec.recommend([str(log["item_id"][0])], k=3)) == 3
    saved = rec.save(tmp_path / "kept")
    del rec
    gc.collect()
    assert not root.exists()  # the temporary run went with its estimator
    assert len(Recommender.load(saved).recommend([str(log["item_id"][0])], k=3)) == 3  # the saved copy stays
