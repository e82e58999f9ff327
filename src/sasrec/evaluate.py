"""Evaluation protocols: they turn a scorer's scores into the held-out items' ranks, then into metrics.

Protocols:
    ``full``     the held-out item against every item of the catalogue; by default the items of the user's
                 input history are removed from the candidates (``filter_seen``). The one to trust
                 (Krichene & Rendle, KDD 2020).
    ``sampled``  the paper's: the held-out item against 100 negatives drawn without replacement from items
                 the user never interacted with (train, validation and test items all excluded), uniformly
                 or in proportion to popularity. The negatives are drawn once per evaluator from a fixed
                 seed, so every evaluation of every model sees the same candidates.

Ties are pessimistic: a candidate whose score equals the held-out item's ranks above it, so a model that
scores everything alike gets HR@10 = 0 under full ranking rather than a lucky hit. Non-finite scores are
pessimistic too: a candidate scored NaN or +-inf ranks above the held-out item, and a held-out item scored
NaN or +-inf ranks last; every result counts them (``nonfinite_target_scores``, ``users_with_nonfinite_scores``).

Repeat consumption: with ``filter_seen`` the held-out item gets no exception from the filter. If it is already
in the user's input history it is not a candidate, exactly as :class:`sasrec.recommend.Recommender` (which
leaves seen items out by default) can never show it, so it counts as a miss at every K. Every result reports
how many held-out items were already in the input history (``held_out_in_history`` and its share), under
both protocols; the sampled protocol ranks such an item against its negatives as the paper does.

Any object with ``encode(histories, users)`` and ``score(state, items)`` is a scorer: the model
(:class:`ModelScorer`) and the baselines (:mod:`sasrec.baselines`) go through the same code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from sasrec.data.dataset import Sequences, Split, gather_windows
from sasrec.errors import ConfigError
from sasrec.metrics import DEFAULT_KS, UNREACHABLE, metric_sums
from sasrec.sampling import ItemSets

PROTOCOLS = ("full", "sampled")
SCORE_BUDGET = 1 << 25  # floats in one (users x items) score block: 128 MiB
# Per-user counts that every result reports next to its metrics (summed like the metrics across processes).
COUNTS = ("held_out_in_history", "nonfinite_target_scores", "users_with_nonfinite_scores")


class Scorer(Protocol):
    num_items: int

    def encode(self, histories: Sequences, users: np.ndarray) -> Any:
        """Per-batch state (e.g. the model's last hidden states) for ``users``' histories."""

    def score(self, state: Any, items: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``(B, C)`` of items ``(C,)`` shared by all rows, or ``(B, C)`` per-row items. ``out``: a
        ``(B, C)`` float32 buffer the scores may be written into and returned (a scorer may ignore it)."""


class ModelScorer:
    """Scores from a :class:`sasrec.model.SASRec`: the last hidden state dotted with item embeddings.

    Always in the model's own dtype (float32), even inside a bfloat16 autocast region: ranks must not depend
    on the training precision (see :mod:`sasrec.precision`).
    """

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu"):
        self.model = model
        self.num_items = model.num_items
        self.device = torch.device(device)

    @torch.no_grad()
    def encode(self, histories: Sequences, users: np.ndarray) -> torch.Tensor:
        self.model.eval()
        n = np.minimum(histories.lengths[users], self.model.maxlen)
        seq = torch.from_numpy(gather_windows(histories, users, n)).to(self.device)
        with torch.autocast(self.device.type, enabled=False):
            return self.model.last_hidden(seq)

    @torch.no_grad()
    def score(self, state: torch.Tensor, items: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(self.device.type, enabled=False):
            if out is not None and items.dim() == 1 and state.device.type == "cpu" and state.dtype == out.dtype:
                # SASRec.score's product, into a reused buffer: a fresh (B, C) block of 100 MB is mapped
                # from the OS at every call and its first write page-faults (a third of a Games test's time).
                return torch.mm(state, self.model.output_weight[items].T, out=out)
            return self.model.score(state, items.to(self.device)).float().cpu()


@dataclass
class EvalResult:
    """One protocol's metrics on one split.

    ``users``: users evaluated. ``held_out_in_history``: of them, those whose held-out item is already in their
    input history (under ``filter_seen`` each is a miss). ``nonfinite_target_scores``: users whose held-out
    item the scorer scored NaN or +-inf (ranked last); ``users_with_nonfinite_scores``: users with any
    non-finite score among the held-out item and its candidates. Non-zero counts of the last two mean a
    diverged model.
    """

    protocol: str
    split: str
    users: int
    metrics: dict[str, float]
    seconds: float
    options: dict[str, Any] = field(default_factory=dict)
    held_out_in_history: int = 0
    nonfinite_target_scores: int = 0
    users_with_nonfinite_scores: int = 0

    @property
    def held_out_in_history_share(self) -> float:
        return self.held_out_in_history / self.users if self.users else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "split": self.split,
            "users": self.users,
            "metrics": self.metrics,
            "seconds": round(self.seconds, 3),
            "held_out_in_history": self.held_out_in_history,
            "held_out_in_history_share": self.held_out_in_history_share,
            "nonfinite_target_scores": self.nonfinite_target_scores,
            "users_with_nonfinite_scores": self.users_with_nonfinite_scores,
            **self.options,
        }


class Evaluator:
    """Ranks one split's held-out items under one protocol; build once, run on any number of scorers.

    Args:
        split: the leave-one-out split.
        which: ``"valid"`` (input: training prefix) or ``"test"`` (input: training prefix + validation item).
        protocol: ``"full"`` or ``"sampled"``.
        ks: cut-offs for the metrics.
        filter_seen: full protocol only: drop the input history's items from the candidates, the held-out item
            included (then a miss), as recommendations that leave seen items out do.
        num_negatives, negatives: sampled protocol only: how many, and ``"uniform"`` or ``"popularity"``.
        max_users: evaluate a seeded random subset of this many users (the paper used 10,000).
        seed: seeds the user subset and the sampled negatives.
    """

    def __init__(
        self,
        split: Split,
        which: str = "test",
        protocol: str = "full",
        ks: tuple[int, ...] = DEFAULT_KS,
        filter_seen: bool = True,
        num_negatives: int = 100,
        negatives: str = "uniform",
        max_users: int | None = None,
        seed: int = 0,
    ):
        if protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if negatives not in ("uniform", "popularity"):
            raise ConfigError(f"negatives must be 'uniform' or 'popularity', not {negatives!r}")
        self.which, self.protocol, self.ks = which, protocol, tuple(sorted(set(ks)))
        self.filter_seen = filter_seen
        self.num_items = split.num_items
        self.histories = split.history(which)
        self.targets = split.targets(which)
        users = np.flatnonzero((self.targets > 0) & (self.histories.lengths > 0))
        rng = np.random.default_rng(seed)
        if max_users is not None and len(users) > max_users:
            users = np.sort(rng.choice(users, size=max_users, replace=False))
        self.users = users
        # Repeat consumption: is each user's held-out item already in the input history (aligned with users)?
        owner = np.repeat(np.arange(len(self.targets)), self.histories.lengths)
        repeats = owner[self.histories.items == self.targets[owner]]
        self.in_history = np.isin(users, repeats)
        self.options: dict[str, Any] = {"ks": list(self.ks)}
        if protocol == "full":
            self.options["filter_seen"] = filter_seen
        else:
            full = split.history("test")  # train + valid; add the test item so no negative is a held-out item
            everything = ItemSets(full)
            self.negatives = sample_unseen_without_replacement(
                rng,
                everything,
                users,
                num_negatives,
                self.num_items,
                extra=split.test[users],
                weights=_popularity(full, split.test) if negatives == "popularity" else None,
            )
            self.options.update(negatives=negatives, num_negatives=num_negatives, seed=seed)

    def run(
        self, scorer: Scorer, users: np.ndarray | None = None, batch_size: int = 1024, progress: bool | None = None
    ) -> EvalResult:
        """Evaluate ``scorer`` on all of this evaluator's users (or on the given subset of them).

        ``progress``: a progress bar over user batches on stderr; None (default) shows it only when stderr
        is a terminal.
        """
        start = time.perf_counter()
        sums, count = self.sums(scorer, users, batch_size, progress)
        return self.result(sums, count, time.perf_counter() - start)

    def sum_keys(self) -> list[str]:
        """The names :meth:`sums` returns, the same whatever the users (to add up across processes)."""
        return [*metric_sums(np.zeros(1, dtype=np.int64), self.ks), *COUNTS]

    def result(self, sums: dict[str, float], count: int, seconds: float) -> EvalResult:
        """The :class:`EvalResult` of :meth:`sums`' totals (possibly added up over processes)."""
        metrics = {k: v / count for k, v in sums.items() if k not in COUNTS} if count else {}
        counts = {k: int(round(sums.get(k, 0.0))) for k in COUNTS}
        return EvalResult(self.protocol, self.which, count, metrics, seconds, self.options, **counts)

    def sums(
        self, scorer: Scorer, users: np.ndarray | None = None, batch_size: int = 1024, progress: bool | None = None
    ) -> tuple[dict[str, float], int]:
        """Metric sums and :data:`COUNTS`, and the user count (to add up across processes before dividing)."""
        index = np.arange(len(self.users)) if users is None else np.searchsorted(self.users, users)
        # Users of similar history length share a batch, so the model reads little padding.
        index = index[np.argsort(self.histories.lengths[self.users[index]], kind="stable")]
        if self.protocol == "full":
            batch_size = max(1, min(batch_size, SCORE_BUDGET // (self.num_items + 1)))
        totals: dict[str, float] = dict.fromkeys(COUNTS, 0.0)
        buffers: dict[str, torch.Tensor] = {}  # score blocks reused from batch to batch
        starts = range(0, len(index), batch_size)
        bar = tqdm(
            starts,
            desc=f"{self.protocol} {self.which}",
            unit="batch",
            leave=False,
            disable=None if progress is None else not progress,
        )
        for lo in bar:
            rows = index[lo : lo + batch_size]
            ranks, nonfinite_target, nonfinite_any = self._ranks(scorer, rows, buffers)
            for k, v in metric_sums(ranks, self.ks).items():
                totals[k] = totals.get(k, 0.0) + v
            totals["held_out_in_history"] += float(self.in_history[rows].sum())
            totals["nonfinite_target_scores"] += float(nonfinite_target.sum())
            totals["users_with_nonfinite_scores"] += float(nonfinite_any.sum())
        return totals, len(index)

    def _ranks(
        self, scorer: Scorer, rows: np.ndarray, buffers: dict[str, torch.Tensor]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pessimistic 0-based ranks of ``rows``' held-out items (``UNREACHABLE`` when not a candidate), and
        per row: is the held-out item's score non-finite, is any score (held-out item or candidate) non-finite.
        ``buffers``: work space kept between calls (see :meth:`_full_ranks`)."""
        users = self.users[rows]
        state = scorer.encode(self.histories, users)
        targets = torch.from_numpy(self.targets[users])
        if self.protocol == "sampled":
            candidates = torch.from_numpy(np.concatenate([self.targets[users, None], self.negatives[rows]], 1))
            scores = scorer.score(state, candidates)
            target_ok = torch.isfinite(scores[:, 0])
            negatives = _nonfinite_above(scores[:, 1:])
            ranks = (negatives >= _nonfinite_below(scores[:, 0])[:, None]).sum(1).numpy()
            return ranks, (~target_ok).numpy(), (~target_ok | (negatives.amax(1) == torch.inf)).numpy()
        ranks, target_ok, any_nonfinite = self._full_ranks(scorer, state, users, targets, buffers)
        if self.filter_seen:
            ranks[self.in_history[rows]] = UNREACHABLE
        return ranks, ~target_ok, ~target_ok | any_nonfinite

    def _full_ranks(
        self, scorer: Scorer, state: Any, users: np.ndarray, targets: torch.Tensor, buffers: dict[str, torch.Tensor]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pessimistic rank of each target among all items (minus seen ones), in item chunks of bounded size;
        and per user: is the target's score finite, is any candidate's score non-finite.

        A row whose scores are all finite is counted in one pass: the items scoring at least the target's
        score, less the non-candidates among them (padding, the target itself and, with ``filter_seen``, the
        history), which are few and gathered. A row with any non-finite score (rare: a diverged model) takes
        the exact path of :func:`_nonfinite_above` and :func:`_nonfinite_below`. Both count the same
        comparisons of the same float32 scores, so the ranks are the same whichever path a row takes.

        ``buffers`` holds the score block and the comparison block between calls, so that their memory is
        not requested from the operating system again for every batch.
        """

        def buffer(name: str, shape: tuple[int, int]) -> torch.Tensor:
            if name not in buffers or buffers[name].numel() < shape[0] * shape[1]:
                buffers[name] = torch.empty(shape[0] * shape[1], dtype=torch.float32)
            return buffers[name][: shape[0] * shape[1]].view(shape)

        B = len(users)
        chunk = max(1, min(SCORE_BUDGET // B, 1 << 24))
        # Each row's non-candidates, sorted, each counted once (flag ``first``); 0 pads the history windows.
        history = (
            gather_windows(self.histories, users, self.histories.lengths[users])
            if self.filter_seen
            else np.zeros((B, 0), dtype=np.int64)
        )
        excluded = np.concatenate([np.zeros((B, 1), history.dtype), targets.numpy()[:, None], history], 1)
        excluded = torch.from_numpy(excluded).to(torch.int64).sort(1).values  # (B, 2 + L)
        first = torch.ones_like(excluded, dtype=torch.bool)
        first[:, 1:] = excluded[:, 1:] != excluded[:, :-1]
        bounds = range(0, self.num_items + 1, chunk)
        # Pass 1 takes the target's score from the same score block that pass 2 compares it with, so
        # float rounding can never make the target beat or tie an item computed by another kernel.
        target_score = torch.empty(0)
        blocks = []
        for lo in bounds:
            items = torch.arange(lo, min(lo + chunk, self.num_items + 1))
            scores = scorer.score(state, items, out=buffer("scores", (B, len(items))))
            if lo == 0:
                target_score = torch.empty(B, dtype=scores.dtype)
            inside = (targets >= lo) & (targets < lo + len(items))
            target_score[inside] = scores[inside.nonzero()[:, 0], targets[inside] - lo]
            if len(bounds) == 1:
                blocks.append(scores)
        target_ok = torch.isfinite(target_score)
        threshold = _nonfinite_below(target_score)[:, None]  # (B, 1)
        ranks = torch.zeros(B, dtype=torch.int64)
        any_nonfinite = torch.zeros(B, dtype=torch.bool)
        for lo in bounds:
            items = torch.arange(lo, min(lo + chunk, self.num_items + 1))
            scores = blocks[0] if blocks else scorer.score(state, items, out=buffer("scores", (B, len(items))))
            # The block's non-candidates: where each sits in it (clamped when outside), and whether it does.
            here = first & (excluded >= lo) & (excluded < lo + len(items))
            column = (excluded - lo).clamp_(0, len(items) - 1)
            # 1.0 where an item scores at least the target: summing floats is several times faster than bools,
            # and exact (a chunk has fewer than 2**24 items).
            above = torch.ge(scores, threshold, out=buffer("above", scores.shape)).sum(1).to(torch.int64)
            count = above - ((scores.gather(1, column) >= threshold) & here).sum(1)
            # A non-finite score makes its row's sum non-finite (a finite row whose sum overflows is merely
            # recounted on the exact path).
            slow = (~torch.isfinite(scores.sum(1))).nonzero()[:, 0]
            if len(slow):
                exact = _nonfinite_above(scores[slow])
                r, c = here[slow].nonzero(as_tuple=True)
                exact[r, column[slow][r, c]] = -torch.inf  # non-candidates rank below any target
                count[slow] = (exact >= threshold[slow]).sum(1)
                any_nonfinite[slow] |= exact.amax(1) == torch.inf  # only non-finite scores became +inf
            ranks += count
        return ranks.numpy(), target_ok.numpy(), any_nonfinite.numpy()


# Non-finite scores are pessimistic under plain "candidate >= target" counting once rewritten by these two: a
# NaN or +-inf candidate ranks above any target, and a NaN or +-inf target below every candidate (only the
# items masked to -inf, which are not candidates, stay below it). So a diverged model never gains a hit.
def _nonfinite_above(scores: torch.Tensor) -> torch.Tensor:
    """A copy of candidate ``scores`` with NaN and +-inf replaced by +inf."""
    return torch.nan_to_num(scores, nan=torch.inf, posinf=torch.inf, neginf=torch.inf)


def _nonfinite_below(target: torch.Tensor) -> torch.Tensor:
    """A copy of target scores ``(B,)`` with NaN and +-inf replaced by the lowest finite value."""
    return torch.where(torch.isfinite(target), target, torch.finfo(target.dtype).min)


def _popularity(full: Sequences, test: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.concatenate([full.items, test[test > 0]]), minlength=full.num_items + 1)
    return counts[1:].astype(np.float64)


def sample_unseen_without_replacement(
    rng: np.random.Generator,
    sets: ItemSets,
    users: np.ndarray,
    n: int,
    num_items: int,
    extra: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """``(U, n)`` distinct items per user, none in the user's set (nor equal to ``extra[u]``).

    Drawn uniformly from ``1..num_items`` or with probability proportional to ``weights`` (``(num_items,)``),
    by rejection: each round draws a block of candidates for the rows still short and keeps the valid,
    not-yet-chosen ones in draw order.
    """
    U = len(users)
    per_user = np.bincount(sets.keys // sets.stride, minlength=int(users.max(initial=0)) + 1)[users]
    pool = num_items if weights is None else int((weights > 0).sum())
    if U and (pool - per_user - 1).min() < n:
        short = int(((pool - per_user - 1) < n).sum())
        raise ConfigError(
            f"{short} users have fewer than {n} unseen items to sample as negatives; "
            f"lower the number of negatives or use the full protocol"
        )
    p = None if weights is None else weights / weights.sum()
    # Blocks of users bound the temporary arrays (a few (block, 2n) arrays) for millions of users.
    block = 16384
    blocks = [
        _sample_block(
            rng, sets, users[lo : lo + block], n, num_items, p, None if extra is None else extra[lo : lo + block]
        )
        for lo in range(0, U, block)
    ]
    return np.concatenate(blocks) if blocks else np.zeros((0, n), dtype=np.int32)


def _sample_block(
    rng: np.random.Generator,
    sets: ItemSets,
    users: np.ndarray,
    n: int,
    num_items: int,
    p: np.ndarray | None,
    extra: np.ndarray | None,
) -> np.ndarray:
    U = len(users)
    out = np.zeros((U, n), dtype=np.int32)
    filled = np.zeros(U, dtype=np.int64)
    pending = np.arange(U)
    for _ in range(1000):
        if not len(pending):
            return out
        m = n + 8
        if p is None:
            cand = rng.integers(1, num_items + 1, size=(len(pending), m))
        else:
            cand = rng.choice(num_items, size=(len(pending), m), p=p) + 1
        ok = ~sets.contains(users[pending, None], cand)
        if extra is not None:
            ok &= cand != extra[pending, None]
        # Drop candidates already chosen for the row or repeated earlier in this draw.
        both = np.concatenate([out[pending], cand], 1)
        order = np.argsort(both, axis=1, kind="stable")
        sorted_vals = np.take_along_axis(both, order, 1)
        repeat = np.zeros_like(both, dtype=bool)
        same_as_previous = np.c_[np.zeros(len(pending), bool), sorted_vals[:, 1:] == sorted_vals[:, :-1]]
        np.put_along_axis(repeat, order, same_as_previous, 1)
        ok &= ~repeat[:, n:]
        need = n - filled[pending]
        rank = np.cumsum(ok, 1)
        take = ok & (rank <= need[:, None])
        r, c = np.nonzero(take)
        out[pending[r], filled[pending[r]] + rank[r, c] - 1] = cand[r, c]
        filled[pending] += take.sum(1)
        pending = pending[filled[pending] < n]
    raise RuntimeError("negative sampling did not converge")  # pragma: no cover
