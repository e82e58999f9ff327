"""A small synthetic dataset generated from a seed: the default data when no real dataset is given.

It is NOT real user behaviour. It is a simulation built so that order matters: a model that uses the
sequence should beat a popularity ranking clearly, and a model that ignores order should not.
"""

from __future__ import annotations

import numpy as np

from sasrec.data.dataset import Sequences

TOPIC_SIZE = 20  # items per latent topic
NUM_SUCCESSORS = 4  # sparse first-order transitions per item
SUCCESSOR_WEIGHTS = np.array([0.45, 0.25, 0.18, 0.12])
P_FOLLOW = 0.70  # next item is one of the last item's successors
P_TOPIC = 0.15  # ... or a random item of the same topic; otherwise (0.15) a popularity-weighted draw
MIN_LENGTH, MAX_LENGTH = 5, 60
_MAX_TRIES = 20


def make_synthetic(num_users: int = 2000, num_items: int = 500, seed: int = 0) -> Sequences:
    """Generate a synthetic sequential dataset, deterministically from ``seed`` (about 30 ms by default).

    How it is made (a simulation, not real data):

    * Items ``1..num_items`` are split at random into latent topics of about 20 items and get a long-tailed
      (Zipf-like) popularity.
    * Every item has 4 fixed successors in its own topic (chosen with a popularity bias) with weights
      0.45 / 0.25 / 0.18 / 0.12: a sparse first-order Markov chain.
    * A user starts at a popularity-weighted item. Each next item is, with probability 0.70, a successor of
      the previous item; with 0.15 a uniform item of the previous item's topic; with 0.15 a
      popularity-weighted item from the whole catalogue (noise). Items never repeat within a user, like the
      paper's datasets: a draw of an already seen item is redrawn.
    * Lengths are long-tailed between 5 and 60 (median about 10), capped at ``num_items``.

    Because the next item depends mostly on the previous one, a transition-count model predicts held-out
    last items far better than a most-popular ranking (see ``tests/test_synthetic.py``).

    Returns:
        :class:`Sequences` with ``num_users`` users and ``num_items`` items.
    """
    if num_users < 1 or num_items < 2:
        raise ValueError(f"need num_users >= 1 and num_items >= 2, got {num_users} and {num_items}")
    rng = np.random.default_rng(seed)
    popularity = _popularity(rng, num_items)
    topic_of, topics = _topics(rng, num_items)
    successors = _successors(rng, topics, popularity)
    lengths = _lengths(rng, num_users, num_items)
    matrix = _walk(rng, lengths, popularity, topic_of, topics, successors)
    offsets = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    mask = np.arange(matrix.shape[1])[None, :] < lengths[:, None]
    return Sequences(offsets, matrix[mask].astype(np.int64), num_items)


def _popularity(rng: np.random.Generator, num_items: int) -> np.ndarray:
    """Probabilities over item ids (index 0 = padding, probability 0), Zipf-like over a random ranking."""
    rank = rng.permutation(num_items)
    weights = 1.0 / (rank + 5.0) ** 1.1
    return np.r_[0.0, weights / weights.sum()]


def _topics(rng: np.random.Generator, num_items: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Random partition of items into topics; returns (topic of each item id, items of each topic)."""
    num_topics = max(1, round(num_items / TOPIC_SIZE))
    topics = np.array_split(rng.permutation(np.arange(1, num_items + 1)), num_topics)
    topic_of = np.zeros(num_items + 1, dtype=np.int64)
    for t, members in enumerate(topics):
        topic_of[members] = t
    return topic_of, topics


def _successors(rng: np.random.Generator, topics: list[np.ndarray], popularity: np.ndarray) -> np.ndarray:
    """``(num_items + 1, NUM_SUCCESSORS)`` successor table: distinct items of the same topic when possible."""
    num_items = len(popularity) - 1
    table = np.zeros((num_items + 1, NUM_SUCCESSORS), dtype=np.int64)
    everyone = np.arange(1, num_items + 1)
    for members in topics:
        for item in members:
            pool = members[members != item]
            if len(pool) < NUM_SUCCESSORS:
                pool = everyone[everyone != item]
            p = popularity[pool] ** 0.5
            table[item] = rng.choice(pool, size=NUM_SUCCESSORS, replace=len(pool) < NUM_SUCCESSORS, p=p / p.sum())
    return table


def _lengths(rng: np.random.Generator, num_users: int, num_items: int) -> np.ndarray:
    """Long-tailed lengths in ``[MIN_LENGTH, MAX_LENGTH]`` (a shifted log-normal), capped at ``num_items``."""
    raw = MIN_LENGTH - 1 + rng.lognormal(mean=1.6, sigma=0.9, size=num_users)
    return np.minimum(np.clip(np.round(raw), MIN_LENGTH, MAX_LENGTH).astype(np.int64), num_items)


def _walk(rng, lengths, popularity, topic_of, topics, successors) -> np.ndarray:
    """Generate all users' sequences at once, one time step per loop iteration; returns a padded matrix."""
    num_users, num_items = len(lengths), len(popularity) - 1
    width = int(lengths.max())
    matrix = np.zeros((num_users, width), dtype=np.int64)
    seen = np.zeros((num_users, num_items + 1), dtype=bool)
    seen[:, 0] = True
    topic_sizes = np.array([len(m) for m in topics])
    topic_start = np.r_[0, np.cumsum(topic_sizes)[:-1]]
    topic_members = np.concatenate(topics)
    cdf = np.cumsum(popularity)
    for step in range(width):
        active = np.flatnonzero(lengths > step)
        prev = matrix[active, step - 1] if step else None
        chosen = np.zeros(len(active), dtype=np.int64)
        todo = np.arange(len(active))
        for _ in range(_MAX_TRIES):
            if not len(todo):
                break
            draw = _draw(
                rng,
                len(todo),
                None if prev is None else prev[todo],
                cdf,
                topic_of,
                topic_start,
                topic_sizes,
                topic_members,
                successors,
            )
            fresh = ~seen[active[todo], draw]
            chosen[todo[fresh]] = draw[fresh]
            todo = todo[~fresh]
        for row in todo:  # rare: fall back to any unseen item
            chosen[row] = rng.choice(np.flatnonzero(~seen[active[row]]))
        matrix[active, step] = chosen
        seen[active, chosen] = True
    return matrix


def _draw(rng, n, prev, cdf, topic_of, topic_start, topic_sizes, topic_members, successors) -> np.ndarray:
    """One candidate next item per row: successor / same topic / popularity mixture (popularity at step 0)."""
    by_popularity = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(cdf) - 1)
    if prev is None:
        return by_popularity
    column = np.searchsorted(np.cumsum(SUCCESSOR_WEIGHTS), rng.random(n) * SUCCESSOR_WEIGHTS.sum(), side="right")
    follow = successors[prev, np.minimum(column, NUM_SUCCESSORS - 1)]
    topic = topic_of[prev]
    same_topic = topic_members[topic_start[topic] + (rng.random(n) * topic_sizes[topic]).astype(np.int64)]
    u = rng.random(n)
    return np.where(u < P_FOLLOW, follow, np.where(u < P_FOLLOW + P_TOPIC, same_topic, by_popularity))
