"""Pre-flight checks: every setting that cannot work on this dataset is refused before the first epoch.

A run samples negatives for training, ranks held-out items against sampled negatives for validation and
for the final test, and selects epochs by a metric. Each of these can be impossible on a given dataset (a
user who has seen every item, a catalogue smaller than ``--eval-negatives``, ...), and would otherwise
fail or hang hours later. :func:`check_run` checks them all against the split, in milliseconds, and raises
one :class:`~sasrec.errors.ConfigError` naming the option to change (or the users to remove).
"""

from __future__ import annotations

import numpy as np
from torch import nn

from sasrec.config import Config, split_metric
from sasrec.data.dataset import Sequences, Split
from sasrec.errors import ConfigError
from sasrec.sampling import ItemSets

# Metrics that are the same for every model once K reaches the number of candidates (HR = Recall = 1,
# Precision = 1/K); NDCG@K and MRR@K then equal the untruncated metrics, which still tell models apart.
SATURATING = ("HR", "Recall", "Precision")


def check_run(config: Config, split: Split, loss: nn.Module) -> None:
    """Refuse ``config`` if training, validation or the final test could not run on ``split``.

    ``loss``: the run's loss module (its ``num_negatives`` and ``shared`` say what the sampler will draw).

    Raises:
        ConfigError: the first impossible condition, naming the option to change.
    """
    check_splits(split)
    check_training_negatives(split.train, loss, config.loss)
    check_eval_negatives(split, config.eval_negatives)
    check_metric(config, split.num_items)


def distinct_items(seqs: Sequences) -> np.ndarray:
    """``(num_users,)`` number of distinct items in each user's sequence."""
    sets = ItemSets(seqs)
    return np.bincount(sets.keys // sets.stride, minlength=seqs.num_users)


def some_users(users: np.ndarray) -> str:
    """``users`` (indices) as a person can find them: how many, and the first as numbered in the file."""
    count = f"{len(users)} users" if len(users) > 1 else "1 user"
    return f"{count} (the first: user #{users[0] + 1}, counting users in ascending id order)"


def check_splits(split: Split) -> None:
    """Validation and test need a user with 3+ interactions; training needs one with 2+ training items."""
    if not (split.valid > 0).any():
        raise ConfigError(
            "dataset too small to split: no user has 3 or more interactions "
            "(leave-one-out needs one training, one validation and one test item)"
        )
    if not (split.train.lengths >= 2).any():
        raise ConfigError(
            "dataset too small to train on: no user has 4 or more interactions (leave-one-out "
            "holds out each user's last 2 items, and a training example needs 2 more)"
        )


def check_training_negatives(train: Sequences, loss: nn.Module, loss_name: str) -> None:
    """The training sampler can draw ``loss.num_negatives`` negatives for every batch.

    Shared negatives are distinct items of the whole catalogue; per-position ones are drawn (with
    replacement) among the items of the user's training part, so every trained user needs one unseen item.
    """
    n = loss.num_negatives
    if n == 0:
        return
    if loss.shared:
        if n > train.num_items:
            raise ConfigError(
                f"--negatives {n}: shared negatives (--loss-option shared=true) are {n} distinct "
                f"items, but the catalogue has only {train.num_items}; lower --negatives to at "
                f"most {train.num_items}, or pass --loss-option shared=false"
            )
        return
    trained = np.flatnonzero(train.lengths >= 2)  # the users the sampler draws
    full = trained[distinct_items(train)[trained] >= train.num_items]
    if len(full):
        raise ConfigError(
            f"{some_users(full)} interacted with all {train.num_items} items in their training part, so "
            f"--loss {loss_name} finds no unseen item to sample as their negative; pass --loss-option "
            "shared=true (negatives from the whole catalogue) or --loss ce, or remove those users"
        )


def check_eval_negatives(split: Split, num_negatives: int) -> None:
    """The sampled protocol can draw ``num_negatives`` distinct unseen items for every evaluated user.

    The final test always runs it (validation too, under ``--val-protocol sampled``). A user's negatives
    exclude their training, validation and test items (counted as in
    :func:`sasrec.evaluate.sample_unseen_without_replacement`).
    """
    users = np.flatnonzero(split.test > 0)
    available = split.num_items - distinct_items(split.history("test"))[users] - 1
    if available.min(initial=num_negatives) >= num_negatives:
        return
    most = int(available.min())
    if most < 1:
        raise ConfigError(
            f"{some_users(users[available < 1])} left no item of the {split.num_items} unseen: the sampled "
            "protocol of the final test has no negative to rank their held-out item against; remove those "
            "users from the dataset"
        )
    raise ConfigError(
        f"--eval-negatives {num_negatives}: the sampled protocol (the final test, and validation "
        f"under --val-protocol sampled) ranks each held-out item against {num_negatives} items the "
        f"user never interacted with, but {some_users(users[available < num_negatives])} have "
        f"fewer (the catalogue has {split.num_items} items, the fewest left to a user is {most}); "
        f"lower --eval-negatives to at most {most}"
    )


def check_metric(config: Config, num_items: int) -> None:
    """The selection metric can tell models apart: K is below the number of ranked candidates."""
    name, k = split_metric(config.metric)
    if name not in SATURATING:
        return
    if config.val_protocol == "sampled" and k > config.eval_negatives:
        raise ConfigError(
            f"--metric {config.metric} is the same for every model under --val-protocol sampled: each "
            f"user's list holds only {config.eval_negatives + 1} candidates (--eval-negatives "
            f"{config.eval_negatives}); choose K <= {config.eval_negatives}, a larger "
            "--eval-negatives, or --val-protocol full"
        )
    if config.val_protocol == "full" and k >= num_items:
        raise ConfigError(
            f"--metric {config.metric} is the same for every model: the catalogue has only {num_items} "
            f"items; choose K < {num_items}"
        )
