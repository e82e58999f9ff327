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

import contextlib
import datetime as _dt
import difflib
import io
import json
import math
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sasrec.argtypes import check_output_dir, check_writable
from sasrec.config import BATCHINGS, FIELDS, LOSS_SPECS, PRECISIONS, resolve
from sasrec.data import readers
from sasrec.data.preprocess import length_stats, preprocess_rows, write_outputs
from sasrec.errors import ConfigError, SASRecError
from sasrec.recommend import ItemId, UnknownUserError
from sasrec.recommend import Recommender as Predictor

OUTPUTS = ("pandas", "polars", "dict")
ID_KINDS = "id_kinds.json"  # in data/: which id columns fit got as integers
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_INT64 = 2**63


def _columns(data: Any, names: Sequence[str]) -> tuple[list[list[Any]], str]:
    """The named columns of a pandas/polars DataFrame or a mapping of arrays, and the input's kind.

    Date/time columns of polars and NumPy come as int nanoseconds since the epoch (``None`` for a missing
    one), so that no precision is lost in conversion; pandas gives Timestamps, which hold nanoseconds.
    """
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
    columns = [_values(data[n], kind) for n in names]
    lengths = {len(c) for c in columns}
    if len(lengths) > 1:
        raise ConfigError(f"columns {', '.join(names)} have different lengths {sorted(lengths)}")
    return columns, kind


def _values(column: Any, kind: str) -> list[Any]:
    """One column as a list of Python values (date/times of polars and NumPy as int ns, see :func:`_columns`)."""
    if kind == "polars":
        import polars as pl

        if column.dtype == pl.Datetime:
            return column.dt.epoch("ns").to_list()
        return column.to_list()
    if kind == "pandas":
        return column.to_list()
    array = np.asarray(column)
    if array.dtype.kind == "M":  # datetime64 of any unit; NaT -> None
        ns = array.astype("datetime64[ns]")
        return [None if np.isnat(v) else int(v.view("int64")) for v in ns]
    return array.tolist()


def _missing(value: Any) -> bool:
    """None, NaN, pandas' NA and NaT: a value the DataFrame does not have."""
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(value, float) and math.isnan(value)


def _where(column: str, row: int) -> str:
    return f"column {column!r}, row {row} (counting from 0)"


def _id_text(value: Any) -> str | None:
    """An id as the text it is known by: a string without surrounding whitespace (as ``sasrec preprocess``
    reads files), an integer's digits, an integral float's integer (``3.0`` -> ``"3"``: a pandas column of
    integer ids turns float when a merge brings in NaN). None for anything else."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, float | np.floating) and math.isfinite(value) and value == int(value):
        return str(int(value))
    return None


def _ids(values: list[Any], column: str) -> list[str]:
    """``values`` as id texts (:func:`_id_text`). Raises ConfigError naming the column and the first row
    that is missing, empty, a non-integral number or not an id at all."""
    out = []
    for row, value in enumerate(values):
        text = _id_text(value)
        if text is None:
            if _missing(value) or isinstance(value, str):
                problem = f"missing id ({value!r}); remove such rows first (every row is one interaction)"
            elif isinstance(value, float | np.floating):
                problem = f"{value!r} is not an integral number, so not an id"
            else:
                problem = f"{value!r} ({type(value).__name__}) is not an id: give strings or integers"
            raise ConfigError(f"{_where(column, row)}: {problem}")
        out.append(text)
    return out


def _own_data_dir(root: Path | None, dataset: str) -> Path | None:
    """``root/data`` when it holds the run's dataset file (by name): a saved copy reads its own files,
    wherever it was moved. None otherwise (a run of ``sasrec train``: its configured path)."""
    if root is None or not (root / "data" / Path(dataset).name).is_file():
        return None
    return root / "data"


def _id_kind(values: list[Any]) -> str:
    """``"int"`` for a column of integer ids (integral floats included: :func:`_id_text`), else ``"str"``."""
    return "str" if any(isinstance(v, str) for v in values) else "int"


def _known_as(value: Any) -> str:
    """The id text ``fit`` gave ``value`` (:func:`_id_text`), so ``3.0`` finds item ``"3"``; an id that no
    row could have had stays as it is, for the lookup to report as unknown."""
    return _id_text(value) or str(value)


def _datetime_ns(value: Any) -> int | None:
    """Nanoseconds since the epoch of a date or date-time (naive ones are UTC, as the file readers read
    them), or None if ``value`` is neither."""
    if hasattr(value, "value") and isinstance(value, _dt.datetime):  # a pandas Timestamp: ns, UTC-based
        return int(value.value)
    if isinstance(value, _dt.datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=_dt.UTC)
        return (moment - _EPOCH) // _dt.timedelta(microseconds=1) * 1000
    if isinstance(value, _dt.date):
        return (value.toordinal() - _EPOCH.toordinal()) * 86_400 * 10**9
    if isinstance(value, np.datetime64) and not np.isnat(value):
        return int(value.astype("datetime64[ns]").view("int64"))
    return None


def _time(value: Any) -> tuple[int | float, str]:
    """A timestamp and its kind, ``"number"`` (any unit) or ``"date/time"`` (ns since the epoch).

    Numbers: ints and finite floats in the int64 range, and strings of the readers' grammar (``1700000000``,
    ``1.7e9``); date/times: datetime, date, numpy datetime64 and ISO-8601 strings (``2023-11-14T22:13:20Z``).

    Raises:
        readers.BadLine: anything else, saying what is accepted.
    """
    ns = _datetime_ns(value)
    if ns is not None:
        return ns, "date/time"
    if isinstance(value, str):
        text = value.strip()
        seconds = readers._timestamp("timestamp", text)  # the file readers' grammar, so a file and a frame agree
        if readers._INTEGER.fullmatch(text) or readers._DECIMAL.fullmatch(text):
            return seconds, "number"
        moment = _dt.datetime.fromisoformat(text)  # what readers._timestamp has just accepted
        return _datetime_ns(moment), "date/time"
    number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)
    if number and math.isfinite(value) and -_INT64 <= value < _INT64:
        return (int(value) if isinstance(value, int | np.integer) else float(value)), "number"
    raise readers.BadLine(
        f"timestamp {value!r} ({type(value).__name__}) is not a finite number in the 64-bit range, a date/time "
        "or a string of one (e.g. 1700000000, 1700000000.5 or 2023-11-14T22:13:20Z)"
    )


def _times(values: list[Any], column: str) -> list[int | float]:
    """``values`` as timestamps (:func:`_time`), all of one kind: numbers and date/times have no common unit.
    Raises ConfigError naming the column and the first bad row."""
    out: list[int | float] = []
    first: tuple[str, int] | None = None  # the column's kind, and the row that set it
    for row, value in enumerate(values):
        if _missing(value):
            raise ConfigError(f"{_where(column, row)}: missing timestamp ({value!r}); drop or fill such rows first")
        try:
            t, kind = _time(value)
        except readers.BadLine as exc:
            raise ConfigError(f"{_where(column, row)}: {exc}") from None
        if first is None:
            first = (kind, row)
        elif kind != first[0]:
            raise ConfigError(
                f"{_where(column, row)}: a {kind} ({value!r}) in a column whose row {first[1]} is a {first[0]}; "
                "give one kind, numbers or date/times, in the whole column"
            )
        out.append(t)
    return out


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


_USER_NUMBER = re.compile(r"user #(\d+), counting users in ascending id order")
_LOSS_OPTION = re.compile(r"(?<![\w/.-])--loss-option (\w+)=([\w.]+)")
# The command-line flags of this API's parameters (the hyperparameters and min_count; not the paths, which
# fit and save take), as whole words.
_NAMES = {*FIELDS - {"dataset", "data_dir", "out"}, "min_count"}
_FLAGS = "|".join(sorted((n.replace("_", "-") for n in _NAMES), key=len, reverse=True))
_OPTION = re.compile(rf"(?<![\w/.-])--({_FLAGS})(?![\w-])(?: ([\w.@'-]+))?")
_CHOICES = {*LOSS_SPECS, *PRECISIONS, *BATCHINGS, "sampled", "full", "cpu", "cuda", "auto"}  # word values


def _in_api_terms(message: str, user_ids: Sequence[str] | None = None) -> str:
    """A message worded for the command line, in this API's terms.

    ``--eval-negatives 5`` becomes ``eval_negatives=5``, ``--loss-option shared=true`` becomes
    ``loss_options={'shared': True}``, and a user numbered in the preprocessed file becomes the user id
    given to ``fit`` (``user_ids[n - 1]`` is user #n's).
    """

    def option(match: re.Match) -> str:
        name, value = match.group(1).replace("-", "_"), match.group(2)
        word = value in _CHOICES or bool(value and re.fullmatch(r"[A-Za-z]+@\d+", value))  # a str value
        if value is None or not (word or value.lstrip("-")[:1] in tuple("'0123456789")):
            return name + match.group(0)[len(match.group(1)) + 2 :]  # a flag followed by prose
        return f"{name}={value!r}" if word else f"{name}={value}"

    def loss_option(match: re.Match) -> str:
        value = {"true": "True", "false": "False"}.get(match.group(2).lower(), match.group(2))
        return f"loss_options={{{match.group(1)!r}: {value}}}"

    message = _OPTION.sub(option, _LOSS_OPTION.sub(loss_option, message))
    if user_ids is not None:
        message = _USER_NUMBER.sub(lambda m: f"user {user_ids[int(m.group(1)) - 1]!r}", message)
    return message


@contextlib.contextmanager
def _api_errors(user_ids: Sequence[str] | None = None):
    """Re-raise an error of the code shared with the command line (configuration, pre-flight, training) in
    this API's terms; an error of a more specific kind (a data file's, which names its line) as it is."""
    try:
        yield
    except SASRecError as exc:
        if type(exc) not in (SASRecError, ConfigError):
            raise
        raise type(exc)(_in_api_terms(str(exc), user_ids)) from None


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool | np.bool_):  # "no" would read as True
        raise ConfigError(f"{name} must be True or False, got {value!r}")


def _frame(columns: dict[str, list[Any]], output: str) -> Any:
    if output == "pandas":
        import pandas as pd

        return pd.DataFrame(columns)
    if output == "polars":
        import polars as pl

        return pl.DataFrame(columns)
    return columns


# Other libraries' names for a Config field, suggested when given (difflib cannot see these).
_ALIASES = {
    "learning_rate": ["lr"],
    "n_factors": ["hidden"],
    "hidden_units": ["hidden"],
    "embedding_dim": ["hidden"],
    "dropout_rate": ["dropout"],
    "max_len": ["maxlen"],
    "session_max_len": ["maxlen"],
    "n_blocks": ["num_blocks"],
    "n_heads": ["num_heads"],
    "num_epochs": ["epochs"],
    "n_negatives": ["negatives"],
    "num_negatives": ["negatives"],
}


class Recommender:
    """SASRec as an estimator: hyperparameters in, ``fit`` on a DataFrame, recommendations out.

    Args:
        preset: a hyperparameter preset (``ml-1m``, ``games``, ``beauty``, ``steam``) or None for the
            paper's defaults; individual ``hyperparameters`` override it.
        min_count: drop users and items with fewer interactions, in one pass (the paper's rule; 5). Use 1
            to keep everything.
        output: ``"pandas"``, ``"polars"`` or ``"dict"`` for the results; default: the kind ``fit`` got.
        **hyperparameters: any :class:`sasrec.config.Config` field (``epochs``, ``maxlen``, ``hidden``,
            ``loss``, ``lr``, ``seed``, ``quiet``...; see ``sasrec train --help``), held to the same limits
            as the command line's options (:data:`sasrec.config.LIMITS`).

    Raises:
        ConfigError: an unknown or invalid parameter (at construction, before any work).
    """

    def __init__(
        self, preset: str | None = None, min_count: int = 5, output: str | None = None, **hyperparameters: Any
    ):
        if output is not None and output not in OUTPUTS:
            raise ConfigError(f"output must be one of {', '.join(OUTPUTS)}, not {output!r}")
        for name in ("dataset", "data_dir", "out", "run_dir"):
            if name in hyperparameters:
                raise ConfigError(
                    f"{name!r} is not a hyperparameter: fit() takes the data and run_dir, save() the location"
                )
        unknown = sorted(set(hyperparameters) - FIELDS)
        if unknown:
            close = {name: _ALIASES.get(name) or difflib.get_close_matches(name, FIELDS, n=1) for name in unknown}
            hints = "; ".join(f"{n!r}" + (f" (did you mean {c[0]!r}?)" if c else "") for n, c in close.items())
            raise ConfigError(f"unknown hyperparameter(s) {hints}; they are the fields of sasrec.config.Config")
        self.preset = preset
        self.min_count = _count("min_count", min_count, 0)  # sasrec preprocess --min-count's rule
        self.output = output
        self.hyperparameters = hyperparameters
        with _api_errors():
            resolve({"preset": preset, **hyperparameters})  # fail fast on bad values
        self.run_dir: Path | None = None
        self._root: Path | None = None  # the directory of run/ and data/, for a fitted or saved model
        self._id_kinds = {"user": "str", "item": "str"}  # "int" for a column fit got as integers
        self.results: dict[str, Any] | None = None
        self._predictor: Predictor | None = None
        self._temporary: tempfile.TemporaryDirectory | None = None

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
            data: pandas or polars DataFrame, or a mapping of column name -> array (``N`` rows).
            user_col, item_col: id columns, three distinct columns with ``time_col``. An id is a string
                (surrounding whitespace dropped, as ``sasrec preprocess`` reads files), an integer, or an
                integral float (``3.0`` is the id ``"3"``, as ``3``).
            time_col: timestamps, all numbers (any unit; also numeric strings) or all date/times (datetime64,
                datetime, ISO-8601 strings; naive ones are UTC); None keeps each user's rows in the order
                given. Only their order matters.
            run_dir: a new or empty directory for the run: ``data/`` (the preprocessed dataset and its id
                maps) and ``run/`` (everything ``sasrec train`` writes). Default: a temporary directory,
                removed when this Recommender is garbage-collected or the interpreter exits (:meth:`save`
                keeps a copy).

        Raises:
            ConfigError: a missing column; a missing (None, NaN, NaT, empty) or non-integral id, or a missing
                or unreadable timestamp, naming the column and the row (0-based position); a setting that
                cannot work on this data; a ``run_dir`` that is not empty. Nothing is left behind: a
                ``run_dir`` that fit created is removed (one that was empty is emptied), except once an
                epoch is saved (Ctrl-C, divergence, out of memory): ``run_dir/run`` is then kept, to continue
                with ``sasrec train --resume`` or to load.
        """
        names = [user_col, item_col] + ([time_col] if time_col is not None else [])
        labels = ["user_col", "item_col", "time_col"]
        for n, name in enumerate(names):
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{labels[n]} must be a column name, got {name!r}")
            if name in names[:n]:
                raise ConfigError(f"{labels[names.index(name)]} and {labels[n]} both name column {name!r}")
        if run_dir is not None:
            if not str(run_dir).strip():
                raise ConfigError(f"run_dir must be a directory path, got {run_dir!r}")
            check_output_dir("run_dir", run_dir)
            if Path(run_dir).is_dir() and any(Path(run_dir).iterdir()):
                raise ConfigError(
                    f"run_dir {run_dir} is not empty; give a new or empty directory (a fitted model's copy "
                    "goes elsewhere with save())"
                )
        columns, kind = _columns(data, names)
        users, items = _ids(columns[0], user_col), _ids(columns[1], item_col)
        id_kinds = {"user": _id_kind(columns[0]), "item": _id_kind(columns[1])}
        times = _times(columns[2], time_col) if time_col is not None else [0] * len(users)
        rows = ((u, i, t, n) for n, (u, i, t) in enumerate(zip(users, items, times, strict=True)))
        with _api_errors():
            processed = preprocess_rows(rows, min_count=self.min_count, source="fit() data")

        temporary = tempfile.TemporaryDirectory(prefix="sasrec-") if run_dir is None else None
        root = Path(temporary.name if temporary else run_dir).resolve()
        made = [p for p in (root, *root.parents) if not p.exists()]  # removed if fit fails
        try:
            self._train(processed, root, kind, id_kinds, temporary=temporary is not None)
        except BaseException:
            if temporary:
                temporary.cleanup()
            elif (root / "run" / "last.safetensors").exists():
                pass  # a saved epoch (stopped, diverged, out of memory): kept, as the run's message says
            elif made:
                shutil.rmtree(made[-1], ignore_errors=True)
            else:  # the user's empty directory: emptied again
                for child in ("data", "run"):
                    shutil.rmtree(root / child, ignore_errors=True)
            raise
        if self._temporary is not None:  # a previous fit's run: this one replaces it
            self._temporary.cleanup()
        self._temporary = temporary
        return self

    def _train(self, processed: Any, root: Path, kind: str, id_kinds: dict[str, str], temporary: bool) -> None:
        stats = {
            "interactions": int(len(processed.sequences.items)),
            "users": processed.sequences.num_users,
            "items": processed.sequences.num_items,
            "sequence_length": length_stats(processed.sequences.lengths),
        }
        paths = write_outputs(processed, root / "data", "data", stats, force=True)
        (root / "data" / ID_KINDS).write_text(json.dumps(id_kinds) + "\n")
        with _api_errors(processed.user_ids):
            config = resolve(
                {
                    "preset": self.preset,
                    **self.hyperparameters,
                    "dataset": str(paths["sequences"]),
                    "out": str(root / "run"),
                }
            )
            from sasrec.train import train  # only fitting needs the training loop

            # The command line always prints the final test metrics (the run's answer); quiet=True: silent.
            # What a stop kept goes to stderr either way.
            with contextlib.redirect_stdout(io.StringIO()) if config.quiet else contextlib.nullcontext():
                self.results = train(config, temporary=temporary)
        self.run_dir, self._root, self._id_kinds = root / "run", root, id_kinds
        self._predictor = Predictor.load(self.run_dir)
        self.output = self.output or kind

    # ------------------------------------------------------------------------------------------ use
    @property
    def predictor(self) -> Predictor:
        if self._predictor is None:
            raise SASRecError("this Recommender is not fitted; call fit() or Recommender.load()")
        return self._predictor

    def _ids_out(self, column: str, ids: list[str]) -> list[Any]:
        """Ids as ``fit`` got them: integers for a column of integers (so results merge with the input)."""
        return [int(i) for i in ids] if self._id_kinds[column] == "int" else ids

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

    def recommend(
        self, history: Iterable[ItemId], k: int = 10, exclude_seen: bool = True, unknown: str = "error"
    ) -> Any:
        """Top-``k`` items after one history of original item ids (oldest first): columns item, score, rank.

        The same arguments as :meth:`sasrec.recommend.Recommender.recommend`: ``exclude_seen`` leaves the
        history's items out; ``unknown="skip"`` drops ids the model does not know instead of raising.

        Returns:
            ``k`` rows, or every item left when fewer than ``k`` remain (a small catalogue minus the history's
            items): check ``len(...)`` rather than assume ``k``.

        Raises:
            SASRecError: ``history`` is a single string (pass a list of ids), or holds unknown ids.
        """
        if isinstance(history, str | bytes):
            raise SASRecError(f"history must be a list of item ids, not the string {history!r}; pass [{history!r}]")
        _check_flag("exclude_seen", exclude_seen)
        pairs = self.predictor.recommend([_known_as(i) for i in history], k, exclude_seen=exclude_seen, unknown=unknown)
        return _frame(
            {
                "item": self._ids_out("item", [i for i, _ in pairs]),
                "score": [s for _, s in pairs],
                "rank": list(range(1, len(pairs) + 1)),
            },
            self._out(),
        )

    def recommend_users(
        self, users: Iterable[ItemId], k: int = 10, exclude_seen: bool = True, unknown: str = "error"
    ) -> Any:
        """Top-``k`` items for users of the fitted data, from their whole history: user, item, score, rank.

        ``unknown="skip"`` leaves out users the data does not hold instead of raising. A user gets fewer than
        ``k`` rows when fewer than ``k`` items are left after excluding their history.

        Raises:
            SASRecError: ``users`` is a single string (pass a list of ids), or holds an unknown user.
        """
        if isinstance(users, str | bytes):
            raise SASRecError(f"users must be a list of user ids, not the string {users!r}; pass [{users!r}]")
        _check_flag("exclude_seen", exclude_seen)
        if unknown not in ("error", "skip"):
            raise ConfigError(f"unknown must be 'error' or 'skip', not {unknown!r}")
        out: dict[str, list[Any]] = {"user": [], "item": [], "score": [], "rank": []}
        for user in users:
            try:
                pairs = self.predictor.recommend_user(_known_as(user), k, exclude_seen=exclude_seen)
            except UnknownUserError:
                if unknown == "error":
                    raise
                continue
            out["user"] += self._ids_out("user", [_known_as(user)]) * len(pairs)
            out["item"] += self._ids_out("item", [i for i, _ in pairs])
            out["score"] += [s for _, s in pairs]
            out["rank"] += list(range(1, len(pairs) + 1))
        return _frame(out, self._out())

    def similar_items(self, item: ItemId, k: int = 10) -> Any:
        """The ``k`` items nearest to ``item`` (one item id) by cosine of item embeddings: item, score, rank.

        Raises:
            SASRecError: ``item`` is a list of ids, or not in the catalogue.
        """
        if isinstance(item, list | tuple | set | np.ndarray):
            raise SASRecError(f"similar_items takes one item id, not {type(item).__name__} {item!r}")
        pairs = self.predictor.similar_items(_known_as(item), k)
        return _frame(
            {
                "item": self._ids_out("item", [i for i, _ in pairs]),
                "score": [s for _, s in pairs],
                "rank": list(range(1, len(pairs) + 1)),
            },
            self._out(),
        )

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Copy the model to ``path``, which must not exist: its run directory to ``path/run`` and its dataset
        and id maps to ``path/data``. The copy is self-contained: it can be moved or copied again.

        Raises:
            SASRecError: not fitted; ``path`` exists or cannot be written (nothing is left half-copied).
        """
        if self.run_dir is None:
            raise SASRecError("nothing to save: call fit() first")
        if not str(path).strip():
            raise ConfigError(f"save() needs a directory path, got {path!r}")
        path = Path(path)
        if path.exists():
            raise SASRecError(f"{path} already exists; choose a new path")
        check_writable("save()", path)
        made = [p for p in (path, *path.parents) if not p.exists()]
        try:
            self._copy(path)
        except BaseException as exc:
            shutil.rmtree(made[-1], ignore_errors=True)
            if isinstance(exc, OSError):
                raise SASRecError(
                    f"save() {path}: cannot write it ({exc.strerror or exc}); choose another path"
                ) from None
            raise
        return path

    def _copy(self, path: Path) -> None:
        """The run directory to ``path/run``; its dataset file, id maps and id kinds to ``path/data``."""
        from sasrec.recommend import locate_dataset, map_paths
        from sasrec.runs import RunDir

        assert self.run_dir is not None
        config = RunDir(self.run_dir).read_config()
        _, source = locate_dataset(config, self.run_dir, _own_data_dir(self._root, config.dataset))
        shutil.copytree(self.run_dir, path / "run")
        if source is not None:  # None: the embedded synthetic dataset
            (path / "data").mkdir()
            target = path / "data" / "data.txt"
            shutil.copyfile(source, target)
            beside = [*zip(map_paths(source), map_paths(target), strict=True)]
            beside.append((source.parent / ID_KINDS, path / "data" / ID_KINDS))
            for copied_from, copied_to in beside:
                if copied_from.exists():
                    shutil.copyfile(copied_from, copied_to)
            config.dataset = str(target.resolve())
        RunDir(path / "run").write_config(config)

    @classmethod
    def load(cls, path: str | Path, checkpoint: str = "best", output: str | None = None) -> Recommender:
        """A Recommender from :meth:`save`'s (or ``fit(run_dir=...)``'s) directory, wherever it was moved, or
        from a run directory of ``sasrec train``. ``checkpoint``: ``"best"`` (the validation-selected epoch)
        or ``"last"``. ``results`` holds the run's test results when it has them.

        Raises:
            ConfigError: an empty ``path``, an unknown ``checkpoint`` or ``output``.
            SASRecError: not a run directory, or its model or dataset cannot be read (named).
        """
        if not str(path).strip():
            raise ConfigError("Recommender.load: the path is empty; give a directory from save() or sasrec train")
        if output is not None and output not in OUTPUTS:
            raise ConfigError(f"output must be one of {', '.join(OUTPUTS)}, not {output!r}")
        from sasrec.recommend import locate_dataset
        from sasrec.runs import RunDir

        path = Path(path).resolve()
        saved = (path / "run" / "config.json").exists()  # save()'s layout: run/ and data/
        run_dir = path / "run" if saved else path
        rec = cls.__new__(cls)
        rec.preset, rec.min_count, rec.output, rec.hyperparameters = None, 5, output, {}
        rec._temporary = None
        rec.run_dir, rec._root = run_dir, path if saved else None
        config = RunDir.open(run_dir).read_config()
        data_dir = _own_data_dir(rec._root, config.dataset)
        rec._predictor = Predictor.load(run_dir, checkpoint, data_dir=data_dir)
        _, source = locate_dataset(config, run_dir, data_dir)
        kinds = source.parent / ID_KINDS if source is not None else None  # written by fit beside its dataset
        rec._id_kinds = json.loads(kinds.read_text()) if kinds and kinds.exists() else {"user": "str", "item": "str"}
        results = run_dir / "results.json"
        rec.results = json.loads(results.read_text()) if results.exists() else None
        return rec
