"""A scikit-learn-style estimator for interaction logs held in DataFrames: ``Recommender(...).fit(df)``.

    from sasrec import Recommender
    rec = Recommender(epochs=50, maxlen=50).fit(df, user_col="user_id", item_col="item_id", time_col="ts")
    rec.recommend(["i1", "i7"], k=10)              # DataFrame: item, score, rank
    rec.recommend_users(["u1", "u2"], k=10)         # DataFrame: user, item, score, rank
    rec.save("my_run"); rec = Recommender.load("my_run")

``fit`` applies the same preprocessing as ``sasrec preprocess`` (the paper's 5-interaction filter by default,
items and users renumbered with id maps, each user's rows stable-sorted by time), then trains exactly as
``sasrec train`` does (progress, validation, early stopping, test of the best epoch) into a run directory.
Every output uses the original ids. pandas and polars are optional: install ``sasrec[pandas]`` or
``sasrec[polars]``; plain mappings of arrays work without either.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sasrec.config import resolve
from sasrec.data.preprocess import length_stats, preprocess_rows, write_outputs
from sasrec.errors import ConfigError, SASRecError
from sasrec.recommend import ItemId
from sasrec.recommend import Recommender as Predictor

OUTPUTS = ("pandas", "polars", "dict")


def _columns(data: Any, names: Sequence[str]) -> tuple[list[list[Any]], str]:
    """The named columns of a pandas/polars DataFrame or a mapping of arrays, and the input's kind."""
    kind = type(data).__module__.split(".")[0]
    if kind not in ("pandas", "polars"):
        if not isinstance(data, Mapping):
            raise ConfigError("fit() takes a pandas or polars DataFrame, or a mapping of column name -> array")
        kind = "dict"
    available = list(data.columns) if kind != "dict" else list(data.keys())
    missing = [n for n in names if n not in available]
    if missing:
        raise ConfigError(
            f"no column {missing[0]!r} in the data (columns: {', '.join(map(str, available))}); "
            "pass user_col=, item_col= and time_col= with your column names"
        )
    columns = [list(data[n].to_list()) if kind != "dict" else list(np.asarray(data[n]).tolist()) for n in names]
    lengths = {len(c) for c in columns}
    if len(lengths) > 1:
        raise ConfigError(f"columns {', '.join(names)} have different lengths {sorted(lengths)}")
    return columns, kind


def _frame(columns: dict[str, list[Any]], output: str) -> Any:
    if output == "pandas":
        import pandas as pd

        return pd.DataFrame(columns)
    if output == "polars":
        import polars as pl

        return pl.DataFrame(columns)
    return columns


class Recommender:
    """SASRec as an estimator: hyperparameters in, ``fit`` on a DataFrame, recommendations out.

    Args:
        preset: a hyperparameter preset (``ml-1m``, ``games``, ``beauty``, ``steam``) or None for the
            paper's defaults; individual ``hyperparameters`` override it.
        min_count: drop users and items with fewer interactions, in one pass (the paper's rule; 5). Use 1
            to keep everything.
        output: ``"pandas"``, ``"polars"`` or ``"dict"`` for the results; default: the kind ``fit`` got.
        **hyperparameters: any :class:`sasrec.config.Config` field (``epochs``, ``maxlen``, ``hidden``,
            ``loss``, ``lr``, ``seed``, ``quiet``...; see ``sasrec train --help``).

    Raises:
        ConfigError: an unknown or invalid hyperparameter (at construction, before any work).
    """

    def __init__(
        self, preset: str | None = None, min_count: int = 5, output: str | None = None, **hyperparameters: Any
    ):
        if output is not None and output not in OUTPUTS:
            raise ConfigError(f"output must be one of {', '.join(OUTPUTS)}, not {output!r}")
        for name in ("dataset", "data_dir", "out"):
            if name in hyperparameters:
                raise ConfigError(f"{name!r} is not a hyperparameter: fit() takes the data, save() the location")
        self.preset = preset
        self.min_count = min_count
        self.output = output
        self.hyperparameters = hyperparameters
        resolve({"preset": preset, **hyperparameters})  # fail fast on bad values
        self.run_dir: Path | None = None
        self.results: dict[str, Any] | None = None
        self._predictor: Predictor | None = None

    # ------------------------------------------------------------------------------------------ training
    def fit(
        self,
        data: Any,
        user_col: str = "user_id",
        item_col: str = "item_id",
        time_col: str | None = None,
        run_dir: str | Path | None = None,
    ) -> Recommender:
        """Preprocess ``data`` and train; returns ``self``.

        Args:
            data: pandas or polars DataFrame, or a mapping of column name -> array.
            user_col, item_col: id columns (any type; ids are compared as strings).
            time_col: timestamps (numbers); None keeps each user's rows in the order given.
            run_dir: where the run directory goes (default: a new temporary directory, removed with this
                object or at exit; :meth:`save` copies it). It holds the preprocessed dataset, its id maps
                and everything ``sasrec train`` writes.
        """
        names = [user_col, item_col] + ([time_col] if time_col else [])
        columns, kind = _columns(data, names)
        users, items = columns[0], columns[1]
        times = columns[2] if time_col else [0] * len(users)
        for row, t in enumerate(times):
            if isinstance(t, bool) or not isinstance(t, int | float) or t != t or t in (float("inf"), -float("inf")):
                raise ConfigError(f"column {time_col!r}, row {row}: timestamp {t!r} is not a finite number")
        rows = ((str(u), str(i), t, n) for n, (u, i, t) in enumerate(zip(users, items, times, strict=True)))
        processed = preprocess_rows(rows, min_count=self.min_count)
        root = (Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="sasrec-"))).resolve()
        if run_dir is None:  # a temporary run is removed with its estimator (save() keeps a copy), even on failure
            weakref.finalize(self, shutil.rmtree, root, ignore_errors=True)
        stats = {
            "interactions": int(len(processed.sequences.items)),
            "users": processed.sequences.num_users,
            "items": processed.sequences.num_items,
            "sequence_length": length_stats(processed.sequences.lengths),
        }
        paths = write_outputs(processed, root / "data", "data", stats, force=True)
        config = resolve(
            {
                "preset": self.preset,
                **self.hyperparameters,
                "dataset": str(paths["sequences"]),
                "out": str(root / "run"),
            }
        )
        from sasrec.train import train  # only fitting needs the training loop

        self.results = train(config)
        self.run_dir = root / "run"
        self._predictor = Predictor.load(self.run_dir)
        self.output = self.output or kind
        return self

    # ------------------------------------------------------------------------------------------ use
    @property
    def predictor(self) -> Predictor:
        if self._predictor is None:
            raise SASRecError("this Recommender is not fitted; call fit() or Recommender.load()")
        return self._predictor

    def _out(self) -> str:
        if self.output:
            return self.output
        for name in ("pandas", "polars"):
            try:
                __import__(name)
                return name
            except ImportError:
                continue
        return "dict"

    def recommend(self, history: Iterable[ItemId], k: int = 10, filter_seen: bool = True) -> Any:
        """Top-``k`` items after one history of original item ids (oldest first): columns item, score, rank."""
        pairs = self.predictor.recommend(list(history), k, exclude_seen=filter_seen)
        return _frame(
            {"item": [i for i, _ in pairs], "score": [s for _, s in pairs], "rank": list(range(1, len(pairs) + 1))},
            self._out(),
        )

    def recommend_users(self, users: Iterable[ItemId], k: int = 10, filter_seen: bool = True) -> Any:
        """Top-``k`` items for users of the fitted data, from their whole history: user, item, score, rank."""
        out: dict[str, list[Any]] = {"user": [], "item": [], "score": [], "rank": []}
        for user in users:
            pairs = self.predictor.recommend_user(user, k, exclude_seen=filter_seen)
            out["user"] += [str(user)] * len(pairs)
            out["item"] += [i for i, _ in pairs]
            out["score"] += [s for _, s in pairs]
            out["rank"] += list(range(1, len(pairs) + 1))
        return _frame(out, self._out())

    def similar_items(self, item: ItemId, k: int = 10) -> Any:
        """The ``k`` items nearest to ``item`` by cosine of item embeddings: item, score, rank."""
        pairs = self.predictor.similar_items(item, k)
        return _frame(
            {"item": [i for i, _ in pairs], "score": [s for _, s in pairs], "rank": list(range(1, len(pairs) + 1))},
            self._out(),
        )

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Copy the fitted run (its directory, dataset and id maps) to ``path``, which must not exist."""
        if self.run_dir is None:
            raise SASRecError("nothing to save: call fit() first")
        path = Path(path)
        if path.exists():
            raise SASRecError(f"{path} already exists; choose a new path")
        shutil.copytree(self.run_dir.parent, path)
        # The copied run must read the copied dataset, wherever the copy goes.
        run = path / "run"
        from sasrec.runs import RunDir

        config = RunDir(run).read_config()
        config.dataset = str((path / "data" / "data.txt").resolve())
        RunDir(run).write_config(config)
        return path

    @classmethod
    def load(cls, path: str | Path, checkpoint: str = "best", output: str | None = None) -> Recommender:
        """A Recommender from :meth:`save`'s directory, or from any run directory of ``sasrec train``."""
        path = Path(path)
        run_dir = path / "run" if (path / "run" / "config.json").exists() else path
        rec = cls.__new__(cls)
        rec.preset, rec.min_count, rec.output, rec.hyperparameters = None, 5, output, {}
        rec.results = None
        rec.run_dir = run_dir
        rec._predictor = Predictor.load(run_dir, checkpoint)
        return rec
