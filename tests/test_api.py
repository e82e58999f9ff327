"""The estimator API: ``Recommender(...).fit(df)``, recommendations in original ids, save and load."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from sasrec import Recommender
from sasrec.data.synthetic import make_synthetic
from sasrec.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = {"epochs": 2, "hidden": 16, "maxlen": 20, "quiet": True, "eval_negatives": 20}


def interactions(num_users: int = 300, num_items: int = 250) -> dict[str, list]:
    """A log with string ids (user-N, item-N) and shuffled-looking integer timestamps."""
    seqs = make_synthetic(num_users=num_users, num_items=num_items, seed=2)
    rows = [(f"user-{u}", f"item-{i}", 1000 * t + u) for u in range(seqs.num_users) for t, i in enumerate(seqs[u])]
    users, items, times = zip(*rows, strict=True)
    return {"user_id": list(users), "item_id": list(items), "timestamp": list(times)}


def test_readme_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pd = pytest.importorskip("pandas")
    block = re.search(r"<!-- api-example.*?-->\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert len(block.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    pd.DataFrame(interactions()).to_csv("interactions.csv", index=False)
    namespace: dict = {}
    exec(compile(block.replace("epochs=20", "epochs=2"), "README", "exec"), namespace)  # noqa: S102
    assert isinstance(namespace["rec"], Recommender)
    assert (tmp_path / "my-model").is_dir()


@pytest.mark.parametrize("kind", ["pandas", "polars", "dict"])
def test_fit_recommend_save_load(kind: str, tmp_path: Path) -> None:
    log = interactions()
    if kind == "dict":
        data = {k: np.asarray(v) for k, v in log.items()}
    else:
        data = pytest.importorskip(kind).DataFrame(log)
    rec = Recommender(**SMALL).fit(data, time_col="timestamp", run_dir=tmp_path / "fit")
    assert set(rec.results) >= {"sampled", "full", "best_epoch"}
    top = rec.recommend_users(["user-1", "user-2"], k=4)
    cols = top if kind == "dict" else {c: list(top[c]) for c in ("user", "item", "score", "rank")}
    assert cols["user"] == ["user-1"] * 4 + ["user-2"] * 4
    assert cols["rank"] == [1, 2, 3, 4] * 2
    assert all(i.startswith("item-") for i in cols["item"])
    history = [i for u, i in zip(log["user_id"], log["item_id"], strict=True) if u == "user-1"]
    assert not set(cols["item"][:4]) & set(history)  # seen items are filtered by default
    assert all(np.diff(cols["score"][:4]) <= 0)
    saved = rec.save(tmp_path / "saved")
    again = Recommender.load(saved, output=kind)
    top2 = again.recommend_users(["user-1", "user-2"], k=4)
    cols2 = top2 if kind == "dict" else {c: list(top2[c]) for c in ("user", "item", "score", "rank")}
    assert cols2 == cols
    similar = again.similar_items("item-3", k=3)
    assert len(similar["item"] if kind == "dict" else similar) == 3


def test_preprocessing_matches_the_command_line(tmp_path: Path) -> None:
    """Rows are sorted by time within a user: a log given newest-first yields the same model input."""
    log = interactions(120, 100)
    order = np.argsort(-np.asarray(log["timestamp"]), kind="stable")
    reversed_log = {k: [v[j] for j in order] for k, v in log.items()}
    a = Recommender(**SMALL, output="dict").fit(log, time_col="timestamp", run_dir=tmp_path / "a")
    b = Recommender(**SMALL, output="dict").fit(reversed_log, time_col="timestamp", run_dir=tmp_path / "b")
    assert a.predictor.user_history("user-5") == b.predictor.user_history("user-5")


def test_bad_input_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dropout"):
        Recommender(dropout=1.5)
    with pytest.raises(ConfigError, match="epochs"):
        Recommender(epochs=-1)
    with pytest.raises(ConfigError, match="no column 'user'"):
        Recommender(**SMALL).fit(interactions(), user_col="user", run_dir=tmp_path / "x")
    bad = interactions()
    bad["timestamp"][3] = float("nan")
    with pytest.raises(ConfigError, match="row 3"):
        Recommender(**SMALL).fit(bad, time_col="timestamp", run_dir=tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert os.listdir(tmp_path) == []
