"""Ranking metrics as pure functions of where the held-out items landed in each user's ranked list.

Input: ``positions``, ``(U, R)`` 0-based positions of each user's R held-out items in the ranked candidate
list (pessimistic ties already applied by the protocol), with ``-1`` marking "no item" when users have
different numbers of held-out items, and :data:`UNREACHABLE` marking a held-out item that is not in the list
at all (a miss at every K: a seen item when seen items are filtered). For user u with relevant set R_u and
hits h = #{r in R_u: pos_r < K}:

    HR@K        1 if h > 0
    Precision@K h / K
    Recall@K    h / |R_u|
    NDCG@K      sum_{r: pos_r < K} 1 / log2(pos_r + 2)  /  sum_{i < min(|R_u|, K)} 1 / log2(i + 2)
    MRR@K       1 / (min_r pos_r + 1) if that is < K, else 0

each averaged over users. With one held-out item, Recall@K = HR@K and Precision@K = HR@K / K.
"""

from __future__ import annotations

import numpy as np

DEFAULT_KS = (1, 5, 10, 20, 50)
METRICS = ("HR", "NDCG", "Precision", "Recall", "MRR")
UNREACHABLE = np.iinfo(np.int64).max  # position of a held-out item that is not among the candidates


def ranking_metrics(positions: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """Mean HR, NDCG, Precision, Recall and MRR at each K over users (see module docstring)."""
    return (
        {name: value / len(positions) for name, value in metric_sums(positions, ks).items()} if len(positions) else {}
    )


def metric_sums(positions: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """Per-metric sums over users (for averaging across batches or processes)."""
    positions = np.asarray(positions)
    if positions.ndim == 1:
        positions = positions[:, None]
    valid = positions >= 0
    num_relevant = valid.sum(1)
    if (num_relevant == 0).any():
        raise ValueError("every user needs at least one held-out item")
    first = np.where(valid, positions, np.iinfo(np.int64).max).min(1)
    gains = np.where(valid, 1.0 / np.log2(positions.clip(min=0) + 2.0), 0.0)
    out: dict[str, float] = {}
    for k in ks:
        hit = valid & (positions < k)
        hits = hit.sum(1)
        # The ideal DCG needs only as many terms as a user has relevant items (at most the history's width).
        depth = int(min(num_relevant.max(), k))
        ideal = np.cumsum(1.0 / np.log2(np.arange(depth) + 2.0))[np.minimum(num_relevant, k) - 1]
        out[f"HR@{k}"] = float((hits > 0).sum())
        out[f"NDCG@{k}"] = float((np.where(hit, gains, 0.0).sum(1) / ideal).sum())
        out[f"Precision@{k}"] = float((hits / k).sum())
        out[f"Recall@{k}"] = float((hits / num_relevant).sum())
        out[f"MRR@{k}"] = float(np.where(first < k, 1.0 / (first + 1.0), 0.0).sum())
    return out
