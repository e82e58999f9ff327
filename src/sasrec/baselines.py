"""Non-neural baselines, scorers like the model (``encode`` then ``score``), so one evaluator serves all.

``pop``        most-popular items (interaction counts in the users' input histories).
``transition`` first-order item-to-item transitions: the score of item j after history (..., i) is the
               number of times j followed i in the training histories; popularity breaks ties.
"""

from __future__ import annotations

import numpy as np
import torch

from sasrec.data.dataset import Sequences


class PopularityScorer:
    def __init__(self, train: Sequences):
        self.num_items = train.num_items
        self.counts = torch.from_numpy(np.bincount(train.items, minlength=train.num_items + 1).astype(np.float32))

    def encode(self, histories: Sequences, users: np.ndarray) -> int:
        return len(users)

    def score(self, batch_size: int, items: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.counts[items]
        return scores.expand(batch_size, -1) if items.dim() == 1 else scores


class TransitionScorer:
    """Counts of (previous item -> next item) pairs in the training histories, held in CSR arrays."""

    def __init__(self, train: Sequences):
        self.num_items = train.num_items
        n = train.num_items + 1
        has_next = np.ones(len(train.items), dtype=bool)
        has_next[train.offsets[1:][train.lengths > 0] - 1] = False  # a user's last item has no successor
        src = np.flatnonzero(has_next)
        keys, counts = np.unique(train.items[src] * n + train.items[src + 1], return_counts=True)
        self.indptr = np.searchsorted(keys // n, np.arange(n + 1))
        self.successors = keys % n
        self.counts = counts.astype(np.float32)
        popularity = np.bincount(train.items, minlength=n).astype(np.float32)
        self.tiebreak = torch.from_numpy(popularity / (popularity.max() + 1.0))  # < 1: only breaks ties

    def encode(self, histories: Sequences, users: np.ndarray) -> torch.Tensor:
        """``(B, num_items + 1)`` dense scores for the batch: transition counts from each last item."""
        last = histories.items[histories.offsets[users + 1] - 1]
        starts, ends = self.indptr[last], self.indptr[last + 1]
        rows = np.repeat(np.arange(len(users)), ends - starts)
        idx = (
            np.arange(len(rows))
            - np.repeat(np.cumsum(ends - starts) - (ends - starts), ends - starts)
            + np.repeat(starts, ends - starts)
        )
        dense = self.tiebreak.expand(len(users), -1).clone()
        dense[torch.from_numpy(rows), torch.from_numpy(self.successors[idx])] += torch.from_numpy(self.counts[idx])
        return dense

    def score(self, dense: torch.Tensor, items: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return dense[:, items] if items.dim() == 1 else dense.gather(1, items)


BASELINES = {"pop": PopularityScorer, "transition": TransitionScorer}
