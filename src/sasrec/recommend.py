"""Recommendations from a trained run, in the dataset's ORIGINAL item and user ids.

A run's model works on internal ids (items ``1..num_items``, 0 = padding). Preprocessing writes the maps from
internal ids to the original ones next to the SASRec-format file: ``NAME.item_map.tsv`` and
``NAME.user_map.tsv`` (header ``new_id<TAB>original_id``, one row per id). :class:`Recommender` reads them so
that callers only ever see original ids:

* Where no map exists (the embedded synthetic dataset, kang205's ``data/*.txt``, any hand-made file), the ids
  ARE the dataset's own integer ids: item ``7`` is written ``"7"`` in the output and accepted as ``7`` or
  ``"7"`` in input; user ``u`` is the ``u``-th user of the file (its file id when, as usual, users are
  numbered ``1..N``).
* Leading zeros: in an integer id space ``03`` and ``3`` are one id, as when the dataset was read (the readers
  and the SASRec-format loader drop leading zeros). An id space is integer when there is no map, or when every
  original id of the map is an integer written without leading zeros (what ``sasrec preprocess`` writes for
  integer-id formats such as ``sasrec`` and ``movielens-dat``); so ``--history 3`` and ``--history 03`` (and
  ``--user 3``, ``--user 03``) give the same answer there. Any other map holds text ids, matched exactly:
  ``"03"`` and ``"3"`` are then different ids, as they were in the raw file.
* An item id that is not in the catalogue is never mapped to anything: it raises :class:`UnknownItemsError`
  naming it, or is skipped (and reported) with ``unknown="skip"``.
* ``k`` above the catalogue's size (``num_items``) is refused (ConfigError; ``sasrec recommend`` names
  ``--k``). Fewer than ``k`` results: when leaving out the history's items leaves fewer than ``k`` to
  recommend, all of them are returned; ``sasrec recommend`` then says so on stderr and in its JSON
  (``"requested"`` and ``"returned"``), and the service in its response.
* An empty history (no item id, or none known with ``unknown="skip"``) is refused with a message, here, by
  ``sasrec recommend`` and by the service (422); the ONNX graph (:mod:`sasrec.export`) flags such a row with
  ``items_read == 0`` and scores it all 0, for the caller to refuse the same way.

No score returned is ever NaN or infinite. A model whose weights diverged in training (loss ``nan``) scores
items NaN or +-inf, and then no ranking of it means anything: every scoring call (:meth:`Recommender.score_ids`,
which all recommendations go through, and :meth:`Recommender.similar_items`) raises :class:`DivergedModelError`
instead of dropping the bad items and returning a quietly shorter, meaningless list.

Example::

    rec = Recommender.load("runs/ml-1m-bce-seed42-...")
    rec.recommend(["1193", "661", "914"], k=5)   # [("2355", 7.31), ...]
    rec.recommend_user("6040", k=10)
    rec.similar_items("1193", k=5)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sasrec.config import Config, dataset_path
from sasrec.data.dataset import Sequences
from sasrec.data.registry import DATASETS
from sasrec.errors import ConfigError, SASRecError
from sasrec.model import SASRec

ItemId = str | int
UNKNOWN_MODES = ("error", "skip")
DEFAULT_CHUNK = 256  # histories per forward pass in recommend_batch


class UnknownUserError(SASRecError):
    """A user id the dataset does not hold (``Recommender.recommend_users(..., unknown="skip")`` skips it)."""


class UnknownItemsError(SASRecError):
    """Item ids that are not in the run's catalogue (``ids`` holds them, as strings, in input order)."""

    def __init__(self, ids: Sequence[str], where: str = "history"):
        shown = ", ".join(repr(i) for i in ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        fix = "remove them, or skip them (unknown='skip', --skip-unknown)" if where == "history" else "give another"
        super().__init__(
            f"unknown item id(s) in the {where}: {shown}. They are not in the catalogue the run was trained on; {fix}"
        )
        self.ids = list(ids)


class DivergedModelError(SASRecError):
    """The model gives non-finite (NaN or infinite) scores: its weights diverged, so it must be retrained."""

    def __init__(self, count: int, total: int):
        super().__init__(
            f"the model gave {count} of {total} scores as NaN or infinity: its weights diverged in "
            "training, so its rankings mean nothing. Retrain it with a lower --lr"
        )
        self.count = count


def check_finite(scores: torch.Tensor) -> None:
    """Raise :class:`DivergedModelError` if ``scores`` (any shape) holds a NaN or an infinity."""
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        raise DivergedModelError(bad, scores.numel())


@dataclass(frozen=True)
class Encoded:
    """A history in internal ids: ``ids`` (known items, in order) and ``skipped`` (unknown original ids)."""

    ids: list[int]
    skipped: list[str]


# ------------------------------------------------------------------------------------------------ id maps

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


def _unescape(value: str) -> str:
    """Undo preprocessing's escaping of tab, newline, carriage return and backslash in original ids."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), value)


def read_id_map(path: str | Path) -> list[str]:
    """Read a ``new_id<TAB>original_id`` map; returns ``ids`` with ``ids[new_id - 1] == original_id``.

    Raises:
        SASRecError: a malformed line, new ids that are not exactly ``1..N``, or a repeated original id.
    """
    path = Path(path)
    ids: dict[int, str] = {}
    with open(path, encoding="utf-8", newline="\n") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if number == 1 and line.startswith("new_id"):
                continue
            if not line:
                continue
            new_id, sep, original = line.partition("\t")
            if not sep or not new_id.isdigit():
                raise SASRecError(f"{path}, line {number}: expected 'new_id<TAB>original_id', got {line[:80]!r}")
            ids[int(new_id)] = _unescape(original)
    if sorted(ids) != list(range(1, len(ids) + 1)):
        raise SASRecError(f"{path}: new ids must be exactly 1..{len(ids)}; re-run `sasrec preprocess`")
    values = [ids[i] for i in range(1, len(ids) + 1)]
    if len(set(values)) != len(values):
        raise SASRecError(f"{path}: an original id appears twice, so ids cannot be mapped back unambiguously")
    return values


def map_paths(dataset_file: Path) -> tuple[Path, Path]:
    """``(NAME.item_map.tsv, NAME.user_map.tsv)`` paths next to a SASRec-format file ``NAME.txt``."""
    name = dataset_file.name.removesuffix(".gz")
    stem = Path(name).stem
    return dataset_file.with_name(f"{stem}.item_map.tsv"), dataset_file.with_name(f"{stem}.user_map.tsv")


def locate_dataset(config: Config, run_dir: Path, data_dir: str | Path | None = None) -> tuple[Config, Path | None]:
    """The run's dataset file (None for the synthetic one); ``data_dir`` overrides where it is looked up.

    For a dataset name, ``data_dir`` replaces the run's ``data_dir``; for a file path, the file's name is looked up
    in ``data_dir``. Returns the (possibly updated) config and the path.
    """
    if data_dir is not None and config.dataset != "synthetic":
        if config.dataset in DATASETS:
            config = dataclasses.replace(config, data_dir=str(data_dir))
        else:
            config = dataclasses.replace(config, dataset=str(Path(data_dir) / Path(config.dataset).name))
    try:
        return config, dataset_path(config)
    except ConfigError as exc:
        raise SASRecError(
            f"cannot find the dataset of run {run_dir}, whose id maps lie next to it ({exc}). "
            "Pass data_dir= (--data-dir) pointing at the folder that holds it"
        ) from None


# ------------------------------------------------------------------------------------------- recommender


class Recommender:
    """Top-k recommendations and similar items from a SASRec model, in original ids.

    Args:
        model: a :class:`SASRec` (put in eval mode here).
        item_ids: original id of every internal item id ``1..num_items`` (``item_ids[i - 1]``), or None
            when the dataset has no map (original ids are then the integer ids themselves).
        user_ids: original id of every user (``user_ids[u]`` for user row ``u``), or None (users ``1..N``).
        load_data: returns the dataset's sequences, for :meth:`recommend_user` (called once, lazily).
        chunk_size: histories per forward pass in batched calls.
    """

    def __init__(
        self,
        model: SASRec,
        item_ids: Sequence[str] | None = None,
        user_ids: Sequence[str] | None = None,
        load_data: Callable[[], Sequences] | None = None,
        chunk_size: int = DEFAULT_CHUNK,
    ):
        self.model = model.eval()
        self.num_items = model.num_items
        self.maxlen = model.maxlen
        self.device = next(model.parameters()).device
        self.chunk_size = chunk_size
        if item_ids is not None and len(item_ids) != self.num_items:
            raise SASRecError(
                f"the item map has {len(item_ids)} ids but the model has {self.num_items} "
                "items; is it the map of the dataset this run was trained on?"
            )
        self.has_item_map = item_ids is not None
        self._item_names = ["<pad>"] + (
            list(item_ids) if item_ids is not None else [str(i) for i in range(1, self.num_items + 1)]
        )
        self._item_index = {name: i for i, name in enumerate(self._item_names) if i > 0}
        self._user_index = {u: i for i, u in enumerate(user_ids)} if user_ids is not None else None
        # Integer id spaces read "03" as "3" (module docstring); text ids match exactly.
        self._integer_items = item_ids is None or all(map(_is_canonical_integer, item_ids))
        self._integer_users = user_ids is None or all(map(_is_canonical_integer, user_ids))
        self._load_data = load_data
        self._data: Sequences | None = None
        self._data_lock = threading.Lock()
        self._unit_emb: torch.Tensor | None = None

    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        checkpoint: str = "best",
        device: str = "cpu",
        data_dir: str | Path | None = None,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> Recommender:
        """Load a run directory's ``best`` (or ``last``) model and the id maps of its dataset.

        ``data_dir`` overrides where the dataset file (and its maps) are looked up, when the run was trained
        elsewhere. The dataset itself is read only by :meth:`recommend_user`, on first use.
        """
        from sasrec.runs import load_run, load_run_data

        run = load_run(run_dir, checkpoint, device)
        config, path = locate_dataset(run.config, run.path, data_dir)
        run = dataclasses.replace(run, config=config)
        item_ids = user_ids = None
        if path is not None:
            item_map, user_map = map_paths(path)
            item_ids = read_id_map(item_map) if item_map.exists() else None
            user_ids = read_id_map(user_map) if user_map.exists() else None
        return cls(run.model, item_ids, user_ids, lambda: load_run_data(run), chunk_size)

    # -------------------------------------------------------------------------------------- id handling
    def item_id(self, index: int) -> str:
        """Original id of internal item ``index`` (``1..num_items``)."""
        return self._item_names[index]

    def item_index(self, item: ItemId) -> int | None:
        """Internal id of an original item id, or None if it is not in the catalogue (leading zeros: see the
        module docstring)."""
        text = str(item)
        index = self._item_index.get(text)
        if index is None and self._integer_items and _is_integer(text):
            index = self._item_index.get(text.lstrip("0") or "0")
        return index

    def encode(self, history: Iterable[ItemId], unknown: str = "error") -> Encoded:
        """Original item ids -> internal ids; unknown ids raise :class:`UnknownItemsError` or are skipped."""
        if unknown not in UNKNOWN_MODES:
            raise ConfigError(f"unknown must be 'error' or 'skip', not {unknown!r}")
        if isinstance(history, str | bytes):
            raise SASRecError("history must be a sequence of item ids, not one string")
        ids, skipped = [], []
        for item in history:
            index = self.item_index(item)
            if index is None:
                skipped.append(str(item))
            else:
                ids.append(index)
        if skipped and unknown == "error":
            raise UnknownItemsError(skipped)
        return Encoded(ids, skipped)

    def _check_k(self, k: int) -> None:
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or not 1 <= k <= self.num_items:
            raise ConfigError(f"k must be an integer between 1 and the number of items ({self.num_items}), got {k!r}")

    # ---------------------------------------------------------------------------------- recommendations
    def recommend(
        self, history: Iterable[ItemId], k: int = 10, exclude_seen: bool = True, unknown: str = "error"
    ) -> list[tuple[str, float]]:
        """Top-``k`` next items for one history of original item ids (oldest first).

        Only the most recent ``maxlen`` items are read by the model; with ``exclude_seen`` every item of the
        history (also those older than the window) is left out of the results. Returns ``(item_id, score)``
        pairs, best first; fewer than ``k`` when fewer items are left to recommend.
        """
        return self.recommend_batch([history], k, exclude_seen, unknown)[0]

    def recommend_batch(
        self, histories: Sequence[Iterable[ItemId]], k: int = 10, exclude_seen: bool = True, unknown: str = "error"
    ) -> list[list[tuple[str, float]]]:
        """:meth:`recommend` for many histories: one forward pass per ``chunk_size`` histories."""
        self._check_k(k)
        encoded = []
        for row, history in enumerate(histories):
            try:
                enc = self.encode(history, unknown)
            except UnknownItemsError as exc:
                where = f"history at index {row}" if len(histories) > 1 else "history"
                raise UnknownItemsError(exc.ids, where) from None
            if not enc.ids:
                raise SASRecError(
                    f"history at index {row} has no known item"
                    if enc.skipped
                    else f"history at index {row} is empty; give at least one item id"
                )
            encoded.append(enc.ids)
        return self.recommend_ids(encoded, k, exclude_seen)

    @torch.inference_mode()
    def recommend_ids(
        self, histories: Sequence[Sequence[int]], k: int = 10, exclude_seen: bool = True
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` for histories already in internal ids (each non-empty, ids in ``1..num_items``).

        Raises:
            DivergedModelError: the model scores some item of some history NaN or +-inf.
        """
        self._check_k(k)
        results: list[list[tuple[str, float]]] = []
        for start in range(0, len(histories), self.chunk_size):
            chunk = histories[start : start + self.chunk_size]
            scores = self.score_ids(chunk, exclude_seen)  # (B, num_items + 1)
            values, indices = scores.topk(k, dim=1)
            for vals, idx in zip(values.cpu().tolist(), indices.cpu().tolist(), strict=True):
                results.append([(self._item_names[i], v) for v, i in zip(vals, idx, strict=True) if v != float("-inf")])
        return results

    @torch.inference_mode()
    def score_ids(self, histories: Sequence[Sequence[int]], exclude_seen: bool = False) -> torch.Tensor:
        """Scores ``(B, num_items + 1)`` of every item for ``B`` internal-id histories, in one forward pass.

        Column 0 (padding) is ``-inf``, and so are the history's items when ``exclude_seen``; every other score
        is finite.

        Raises:
            DivergedModelError: the model scores some item NaN or +-inf (its weights diverged).
        """
        seq = _right_pad([h[-self.maxlen :] for h in histories]).to(self.device)  # (B, T), T <= maxlen
        scores = self.model.score(self.model.last_hidden(seq)).float()  # (B, num_items + 1)
        # Checked before any masking: the -inf written below marks excluded items, not a diverged model.
        check_finite(scores[:, 1:])
        scores[:, 0] = float("-inf")
        if exclude_seen:
            seen = _right_pad(histories).to(self.device)  # (B, L); its padding hits column 0, already -inf
            scores.scatter_(1, seen, float("-inf"))
        return scores

    # --------------------------------------------------------------------------------------------- users
    @property
    def data(self) -> Sequences:
        """The run's dataset (read, and checked against the run's fingerprint, on first use)."""
        with self._data_lock:
            if self._data is None:
                if self._load_data is None:
                    raise SASRecError("this Recommender has no dataset; create it with Recommender.load()")
                self._data = self._load_data()
        return self._data

    def user_index(self, user_id: ItemId) -> int:
        """Row of an original user id in the dataset; raises SASRecError if there is no such user."""
        num_users = self.data.num_users
        if self._user_index is not None:
            if len(self._user_index) != num_users:
                raise SASRecError(
                    f"the user map has {len(self._user_index)} users but the dataset has "
                    f"{num_users}; is it the map of this dataset?"
                )
            text = str(user_id)
            index = self._user_index.get(text)
            if index is None and self._integer_users and _is_integer(text):
                index = self._user_index.get(text.lstrip("0") or "0")
        else:  # no map: the file's own integer user ids
            text, file_ids = str(user_id), self.data.user_ids
            index = None
            if text.isascii() and text.isdigit():
                if file_ids is None:
                    index = int(text) - 1 if 1 <= int(text) <= num_users else None
                else:
                    row = int(np.searchsorted(file_ids, int(text)))
                    index = row if row < num_users and file_ids[row] == int(text) else None
        if index is None:
            hint = (
                "an original user id of the dataset (preprocessing drops users with fewer than the minimum "
                "count of interactions; for them, recommend from their history of item ids)"
                if self._user_index is not None or self.data.user_ids is not None
                else f"1..{num_users}"
            )
            raise UnknownUserError(f"unknown user {str(user_id)!r}; give {hint}")
        return index

    def user_history(self, user_id: ItemId) -> list[str]:
        """The user's full item sequence in the dataset, in original ids, oldest first."""
        return [self._item_names[i] for i in self.data[self.user_index(user_id)].tolist()]

    def recommend_user(self, user_id: ItemId, k: int = 10, exclude_seen: bool = True) -> list[tuple[str, float]]:
        """Top-``k`` next items for a user of the dataset, reading the user's whole sequence as history."""
        history = self.data[self.user_index(user_id)].tolist()
        if not history:
            raise SASRecError(f"user {user_id!r} has no interactions")
        if max(history) > self.num_items:
            raise SASRecError(
                f"the dataset has item ids above the model's {self.num_items}; "
                "is it the dataset the run was trained on?"
            )
        return self.recommend_ids([history], k, exclude_seen)[0]

    # ---------------------------------------------------------------------------------- similar items
    @torch.inference_mode()
    def similar_items(self, item: ItemId, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` items whose embeddings have the highest cosine similarity with ``item``'s.

        The input item embedding is used (for a model trained with ``--no-tied-output`` too).

        The item itself and padding are never returned. Returns ``(item_id, cosine)`` pairs, best first.

        Raises:
            UnknownItemsError: ``item`` is not in the catalogue.
            DivergedModelError: some embedding holds a NaN or infinity (the weights diverged in training).
        """
        self._check_k(k)
        index = self.item_index(item)
        if index is None:
            raise UnknownItemsError([str(item)], "request")
        if self._unit_emb is None:
            weight = self.model.item_emb.weight.float()  # (num_items + 1, d)
            self._unit_emb = torch.nn.functional.normalize(weight, dim=1)
        sims = self._unit_emb @ self._unit_emb[index]  # (N + 1,)
        check_finite(sims[1:])
        sims[0] = sims[index] = float("-inf")
        values, indices = sims.topk(min(k, self.num_items - 1))
        return [
            (self._item_names[i], v)
            for v, i in zip(values.tolist(), indices.tolist(), strict=True)
            if v != float("-inf")
        ]


def _is_integer(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _is_canonical_integer(text: str) -> bool:
    """An integer written as the readers write one: ASCII digits, no leading zero (``"0"`` itself is one)."""
    return _is_integer(text) and (text == "0" or not text.startswith("0"))


def _right_pad(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Lists of ids -> ``(B, max length)`` int64 tensor, right-padded with 0."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    out = np.zeros((len(rows), max(int(lengths.max()), 1) if len(rows) else 1), dtype=np.int64)
    mask = np.arange(out.shape[1]) < lengths[:, None]
    out[mask] = np.fromiter((i for r in rows for i in r), dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(out)


# ------------------------------------------------------------------------------------------------- CLI


def read_history_file(path: str) -> list[str]:
    """Item ids from ``--history-file``: one original id per line, verbatim (commas, spaces and quotes are
    part of the id; only the line ending is removed), empty lines skipped; ``-`` reads standard input."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SASRecError(f"--history-file {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise SASRecError(f"--history-file {path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    ids = [line.removesuffix("\r") for line in text.split("\n")]
    ids = [i for i in ids if i]
    if not ids:
        raise SASRecError(f"--history-file {path} has no item id; give one original item id per line, oldest first")
    return ids


def history_argument(args: argparse.Namespace) -> list[str]:
    """The history ``sasrec recommend`` was given: ``--item`` (repeated, verbatim), ``--history-file`` or
    ``--history`` (comma-separated, each id stripped of surrounding spaces).

    Raises SASRecError for a ``--history`` with no id, or with an empty one (``1,,2``, ``1,2,``): no item id is
    empty, so an empty one is a typo or an unset shell variable, and dropping it would answer another question.
    """
    if getattr(args, "item", None):
        return list(args.item)
    if getattr(args, "history_file", None) is not None:
        return read_history_file(args.history_file)
    history = [h.strip() for h in args.history.split(",")]
    if not any(history):
        raise SASRecError(
            "--history is empty; give comma-separated item ids, e.g. --history '12,7,31' "
            "(for ids that contain a comma: --item ID, repeated, or --history-file FILE)"
        )
    empty = [str(n) for n, h in enumerate(history, start=1) if not h]
    if empty:
        where = f"the id at position {empty[0]}" if len(empty) == 1 else f"the ids at positions {', '.join(empty)}"
        raise SASRecError(
            f"--history {args.history!r}: {where} (of {len(history)}) {'is' if len(empty) == 1 else 'are'} empty; "
            "give comma-separated item ids with nothing empty between or after the commas, e.g. '12,7,31'"
        )
    return history


def shortfall_note(k: int, returned: int, exclude_seen: bool) -> str:
    """Why fewer than ``k`` items came back ("" when ``k`` did): one line for the user."""
    if returned >= k:
        return ""
    why = "the history's items are left out" if exclude_seen else "the catalogue is that small"
    return f"returned {returned} of the {k} items asked for: only {returned} are left to recommend ({why})"


def recommend_command(args: argparse.Namespace) -> int:
    """``sasrec recommend`` (arguments: :mod:`sasrec.cli`)."""
    rec = Recommender.load(args.run, args.checkpoint, args.device, data_dir=args.data_dir)
    if args.k > rec.num_items:  # argparse checked k >= 1; the catalogue's size is known only now
        raise ConfigError(f"--k {args.k}: a cut-off can be at most the catalogue's {rec.num_items} items; lower it")
    exclude_seen = not args.include_seen
    skipped: list[str] = []
    if args.user is not None:
        items = rec.recommend_user(args.user, args.k, exclude_seen)
    else:
        encoded = rec.encode(history_argument(args), "skip" if args.skip_unknown else "error")
        if not encoded.ids:
            raise SASRecError(
                f"none of the history's items is in the catalogue (skipped: {', '.join(encoded.skipped[:10])})"
            )
        skipped = encoded.skipped
        items = rec.recommend_ids([encoded.ids], args.k, exclude_seen)[0]
    short = shortfall_note(args.k, len(items), exclude_seen)
    if short:
        print(f"note: {short}", file=sys.stderr)
    if args.json:
        ranked = [{"rank": r, "item_id": i, "score": s} for r, (i, s) in enumerate(items, start=1)]
        out = {"user": args.user, "skipped": skipped, "requested": args.k, "returned": len(items), "items": ranked}
        # allow_nan=False: strict JSON; the scores are finite (score_ids refuses a diverged model).
        print(json.dumps(out, indent=2, ensure_ascii=False, allow_nan=False))
        return 0
    if skipped:
        print(f"skipped {len(skipped)} unknown item id(s): {', '.join(skipped[:10])}", file=sys.stderr)
    width = max([len("item id")] + [len(i) for i, _ in items])
    print(f"{'rank':>4}  {'item id':<{width}}  {'score':>10}")
    for rank, (item, score) in enumerate(items, start=1):
        print(f"{rank:>4}  {item:<{width}}  {score:>10.4f}")
    return 0
