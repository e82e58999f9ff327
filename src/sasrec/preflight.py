"""Pre-flight checks: every setting that cannot work on this dataset is refused before the first epoch.

A run samples negatives for training, ranks held-out items against sampled negatives for validation and
for the final test, and selects epochs by a metric. Each of these can be impossible on a given dataset (a
user who has seen every item, a catalogue smaller than ``--eval-negatives``, ...), and would otherwise
fail or hang hours later. :func:`check_run` checks them all against the split, in milliseconds, and raises
one :class:`~sasrec.errors.ConfigError` naming the option to change (or the users to remove). It also
refuses a model too large for the machine (:func:`check_memory`): a ``--hidden`` or ``--maxlen`` far beyond
the memory would otherwise fail inside PyTorch with a traceback, or swap for hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sasrec.config import Config, split_metric
from sasrec.data.dataset import Sequences, Split
from sasrec.errors import ConfigError
from sasrec.runs import pick_device
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
    check_memory(config, split, loss)


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
    if k > num_items:  # every user a hit, every model alike: as evaluate --k
        raise ConfigError(
            f"--metric {config.metric}: a cut-off can be at most the catalogue's {num_items} items; lower it"
        )
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


# ---------------------------------------------------------------------------------------------- memory

GIB = 2**30
FLOAT = 4  # bytes of a float32
# A trained parameter holds four float32 values: the weight, its gradient and Adam's two moments.
PER_PARAMETER = 4 * FLOAT


@dataclass(frozen=True)
class MemoryPart:
    """What one part of a training step holds at least: ``nbytes``, ``what`` (for the message) and the
    options that size it (Config field names, in the order a user would lower them)."""

    nbytes: int
    what: str
    options: tuple[str, ...]


def training_memory(config: Config, split: Split, loss: nn.Module) -> list[MemoryPart]:
    """A lower bound of what one training step of ``config`` on ``split`` holds in memory, by part.

    Counted: the parameters (with gradients and Adam's moments) and, per block, the attention probabilities
    and four ``(B, T, hidden)`` activations kept for the backward pass, and the negatives' embeddings. ``B``
    is the batch (at most the number of trained users, except under ``--batching random``), ``T`` the longest
    training example (at most ``maxlen``). The real peak is higher (temporaries, the allocator's slack), so a
    configuration refused on this bound cannot run.
    """
    h, blocks = config.hidden, config.num_blocks
    trained = int((split.train.lengths >= 2).sum())
    batch = config.batch_size if config.batching == "random" else min(config.batch_size, max(trained, 1))
    length = min(config.maxlen, max(int(split.train.lengths.max(initial=2)) - 1, 1))
    tables = 1 if config.tied_output else 2  # item embeddings: the input's, and a separate output's
    n = loss.num_negatives
    negatives = n * h * 2 + batch * length * n * 2 if loss.shared else batch * length * n * h * 2  # (+ gradient)
    return [
        MemoryPart(PER_PARAMETER * tables * (split.num_items + 1) * h, "the item embeddings", ("hidden",)),
        MemoryPart(PER_PARAMETER * config.maxlen * h, "the position embeddings", ("maxlen", "hidden")),
        # attention's in/out projections (4 h^2) and the feed-forward's two layers (2 ffn_factor h^2)
        MemoryPart(
            PER_PARAMETER * blocks * (4 + 2 * config.ffn_factor) * h * h,
            "the blocks' weights",
            ("hidden", "num_blocks", "ffn_factor"),
        ),
        MemoryPart(
            FLOAT * blocks * 2 * batch * config.num_heads * length * length,  # probabilities and their gradient
            "the attention probabilities",
            ("maxlen", "batch_size", "num_blocks"),
        ),
        MemoryPart(FLOAT * blocks * 4 * batch * length * h, "the blocks' activations", ("batch_size", "hidden")),
        MemoryPart(FLOAT * negatives, "the negatives' embeddings", ("negatives", "batch_size")),
    ]


def machine_memory(device: str) -> tuple[int, str] | None:
    """Bytes of memory of the device ``device`` (Config.device) names and where the number comes from, or
    None when unknown. CPU: ``MemTotal`` of ``/proc/meminfo`` (all of it: what other processes use changes)."""
    where = pick_device(device)
    if where.type == "cuda":
        index = where.index if where.index is not None else torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        return properties.total_memory, f"GPU {index} ({properties.name})"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024, "this machine (MemTotal in /proc/meminfo)"
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(config: Config, split: Split, loss: nn.Module, available: tuple[int, str] | None = None) -> None:
    """Refuse a configuration whose training step needs more memory than the device has.

    ``available``: (bytes, what they are) to hold it to; default :func:`machine_memory` of ``config.device``
    (no check where that is unknown).

    Raises:
        ConfigError: naming the total, the largest part, the device's memory and the options that size it.
    """
    available = available or machine_memory(config.device)
    if available is None:
        return
    limit, where = available
    parts = training_memory(config, split, loss)
    total = sum(p.nbytes for p in parts)
    if total <= limit:
        return
    largest = max(parts, key=lambda p: p.nbytes)
    given = " ".join(f"--{name.replace('_', '-')} {getattr(config, name)}" for name in largest.options)
    lower = " or ".join(f"--{name.replace('_', '-')}" for name in largest.options)
    raise ConfigError(
        f"{given}: training needs at least {total / GIB:.1f} GiB of memory ({largest.what}: "
        f"{largest.nbytes / GIB:.1f} GiB), but {where} has {limit / GIB:.1f} GiB; lower {lower}"
    )
