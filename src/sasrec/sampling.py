"""Training batches and negative sampling, vectorised over whole batches (no per-user Python loop).

A training example for user u is the reference's: input = the last ``maxlen`` items of u's training prefix
except the final one, target at each position = the item that follows it. Batches are right-padded and
trimmed to their longest row (see :mod:`sasrec.model` for why that is exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sasrec.data.dataset import Sequences, gather_windows
from sasrec.errors import ConfigError

BATCHING = ("random", "shuffle", "bucket")


@dataclass
class Batch:
    """``seq``/``pos``: ``(B, T)`` int64, right-padded with 0; ``users``: ``(B,)``; ``neg``: ``(B, T, N)``, or
    ``(N,)`` when the batch shares one set of negatives."""

    users: np.ndarray
    seq: np.ndarray
    pos: np.ndarray
    neg: np.ndarray


class ItemSets:
    """Fast vectorised membership test "is item i in user u's sequence?" via one sorted key array."""

    def __init__(self, seqs: Sequences):
        self.stride = seqs.num_items + 1
        users = np.repeat(np.arange(seqs.num_users, dtype=np.int64), seqs.lengths)
        # Sort and drop repeats: 100x faster than np.unique's hashing on int64 (NumPy 2.4, 1M keys: 25 ms).
        keys = np.sort(users * self.stride + seqs.items)
        self.keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """users broadcastable to items -> bool array shaped like items."""
        q = users * self.stride + items
        idx = np.searchsorted(self.keys, q).clip(max=len(self.keys) - 1)
        return self.keys[idx] == q

    def unseen(self, user: int, num_items: int) -> np.ndarray:
        """The items of ``1..num_items`` not in ``user``'s sequence, ascending."""
        lo, hi = np.searchsorted(self.keys, [user * self.stride, (user + 1) * self.stride])
        seen = self.keys[lo:hi] - user * self.stride
        return np.setdiff1d(np.arange(1, num_items + 1), seen, assume_unique=True)


# Redraw rounds before the sampler draws a user's remaining negatives from their unseen items directly.
# A user who has seen 70% of the catalogue (the most on ML-1m) still has a collision after 64 rounds with
# probability 1e-10, so the fallback only runs for users who have seen nearly every item.
REDRAW_ROUNDS = 64


def sample_uniform_unseen(
    rng: np.random.Generator, sets: ItemSets, users: np.ndarray, shape: tuple[int, ...], num_items: int
) -> np.ndarray:
    """Items drawn uniformly from ``1..num_items`` excluding each user's own items (with replacement).

    ``users``: ``(B,)``; returns ``(B, *shape)``. Collisions are redrawn, as the reference's ``random_neq``
    does one item at a time; after :data:`REDRAW_ROUNDS` rounds the few left are drawn from the user's
    unseen items directly (the same distribution), so a user who has seen nearly every item never stalls.

    Raises:
        ConfigError: a user has seen every item, so has no negative to draw.
    """
    out = rng.integers(1, num_items + 1, size=(len(users), *shape))
    flat_users = np.repeat(users, int(np.prod(shape)))
    flat = out.reshape(-1)
    bad = np.flatnonzero(sets.contains(flat_users, flat))
    for _ in range(REDRAW_ROUNDS):
        if not len(bad):
            return out
        flat[bad] = rng.integers(1, num_items + 1, size=len(bad))
        bad = bad[sets.contains(flat_users[bad], flat[bad])]
    for user in np.unique(flat_users[bad]):
        where = bad[flat_users[bad] == user]
        unseen = sets.unseen(int(user), num_items)
        if not len(unseen):
            raise ConfigError(
                f"user #{user + 1} (in ascending id order) has interacted with all {num_items} items, "
                "so no negative can be sampled for them; pass --loss-option shared=true or --loss ce, "
                "or remove the user"
            )
        flat[where] = unseen[rng.integers(len(unseen), size=len(where))]
    return out


class TrainSampler:
    """Yields training batches for one epoch at a time from a seeded NumPy generator.

    Batching modes (``batching``):
        ``random``  the reference's: each batch draws ``batch_size`` users uniformly with replacement,
                    ``num_users // batch_size`` batches per epoch (kang205/SASRec ``WarpSampler``).
        ``shuffle`` every user once per epoch, in a random order.
        ``bucket``  every user once per epoch; users of similar length share a batch (shuffled within equal
                    lengths and across batches), so trimming removes nearly all padding.
    Users whose training prefix has fewer than 2 items give no example and are never drawn (as the
    reference, which redraws them).

    Negatives: ``num_negatives`` per position, never one of the user's items (the reference's); with
    ``shared_negatives``, one set of ``num_negatives`` distinct items per batch, uniform over the catalogue.
    """

    def __init__(
        self,
        train: Sequences,
        maxlen: int,
        batch_size: int,
        num_negatives: int = 1,
        batching: str = "bucket",
        seed: int = 0,
        shared_negatives: bool = False,
    ):
        if batching not in BATCHING:
            raise ConfigError(f"unknown batching {batching!r}; choose one of {', '.join(BATCHING)}")
        if shared_negatives and num_negatives > train.num_items:
            raise ConfigError(
                f"{num_negatives} shared negatives asked, but the catalogue has only "
                f"{train.num_items} items; lower --negatives"
            )
        self.shared_negatives = shared_negatives
        self.train = train
        self.maxlen = maxlen
        self.batch_size = batch_size
        self.num_negatives = num_negatives
        self.batching = batching
        self.rng = np.random.default_rng(seed)
        self.sets = ItemSets(train)
        self.users = np.flatnonzero(train.lengths >= 2)
        if len(self.users) == 0:
            raise ConfigError("no user has 2 or more training items: the dataset is too small to train on")
        # Number of positions each user contributes: its prefix minus the last item, capped at maxlen.
        self.example_lengths = np.minimum(train.lengths - 1, maxlen)

    def __len__(self) -> int:
        return (
            max(1, len(self.users) // self.batch_size)
            if self.batching == "random"
            else -(-len(self.users) // self.batch_size)
        )

    def epoch_order(self) -> list[np.ndarray]:
        """The users of each batch of the next epoch (advances the generator)."""
        if self.batching == "random":
            draws = self.rng.choice(self.users, size=(len(self), self.batch_size))
            return list(draws)
        order = self.rng.permutation(self.users)
        if self.batching == "bucket":
            order = order[np.argsort(self.example_lengths[order], kind="stable")]
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.batching == "bucket":
            batches = [batches[i] for i in self.rng.permutation(len(batches))]
        return batches

    def positions(self, batches: list[np.ndarray]) -> int:
        """Real (trained) positions in ``batches``."""
        return int(self.example_lengths[np.concatenate(batches)].sum()) if batches else 0

    def make_batch(self, users: np.ndarray) -> Batch:
        """Right-padded, trimmed ``seq``/``pos`` and negatives for ``users`` (one vectorised gather)."""
        n = self.example_lengths[users]  # real positions per row
        seq = gather_windows(self.train, users, n, skip_last=1)
        pos = gather_windows(self.train, users, n, skip_last=0)
        real = seq > 0
        if self.shared_negatives:
            neg = self.rng.choice(self.train.num_items, size=self.num_negatives, replace=False) + 1
            return Batch(users, seq, pos, neg.astype(np.int64))
        T = seq.shape[1]
        neg = sample_uniform_unseen(self.rng, self.sets, users, (T, self.num_negatives), self.train.num_items)
        neg *= real[:, :, None]
        return Batch(users, seq, pos, neg)
