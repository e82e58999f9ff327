"""Data-parallel training on several processes (``torchrun``): process group, sharding, reductions.

Launch ``torchrun --nproc_per_node=N -m sasrec train ...``; ``torchrun`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and :func:`init_from_env` joins the process group they
describe: gloo on CPU, NCCL on GPUs (one GPU per process, ``cuda:LOCAL_RANK``). Without ``WORLD_SIZE``
every helper here is a no-op, so the single-process code path is unchanged.

How the work is split between the N processes ("ranks"):

* **Batches.** Every rank loads the whole dataset and builds the same sampler from the same seed, so every
  rank draws the same epoch order, the same global batches *and the same negatives*: each rank samples the
  whole global batch (vectorised NumPy, cheap next to the model's forward and backward) and keeps only its
  rows (:func:`shard_batch`). The sampler's generator thus stays identical on all ranks, an N-rank run
  trains on exactly the batches of the single-process run, and ``--resume`` needs rank 0's state only.
* **Batch size.** ``batch_size`` is the *global* batch: each optimizer step consumes ``batch_size`` users,
  about ``batch_size / N`` per rank, so the learning rate means what it means in a single process.
* **Loss.** The losses average over the real (non-padding) positions of a batch, and ranks hold different
  numbers of positions. With ``S_r`` the sum of rank r's per-position losses over its ``P_r`` positions
  (its mean loss is ``S_r / P_r``) and ``P = sum_r P_r``, the single-process loss is ``sum_r S_r / P``.
  DDP *averages* gradients over the N ranks, so rank r's mean loss is multiplied by ``P_r * N / P``
  (:func:`loss_weight`): ``(1/N) sum_r grad(S_r / P_r * P_r * N / P) = grad(sum_r S_r / P)``, exactly the
  single-process gradient of the whole batch. Every rank knows ``P`` without communication, since it
  sampled the whole batch. Terms that do not depend on the batch (``l2_emb``) are added unweighted: DDP's
  average of N equal gradients is that gradient. This holds for every loss whose value is a mean of
  per-position terms (bce, ce, sampled-ce, gbce); ``sampled-ce`` with ``in_batch`` takes its negatives
  from the batch's other rows, which are then the rank's own rows only (as in most DDP systems), so it is
  not identical to the single-process run.
* **Evaluation.** Users are split across ranks (:func:`shard`), each rank adds up its metric sums, and
  :func:`all_reduce_sums` adds them over ranks before dividing, so the metrics are the single-process ones
  (up to the order of float64 additions, about 1e-16).
* **Side effects.** Only rank 0 (``DistInfo.is_main``) writes checkpoints, logs, plots and prints: the
  training loop makes those calls through :func:`on_main`, which does nothing on the other ranks.
* **Decisions.** Every rank must leave the training loop at the same epoch. Early stopping is decided on
  all-reduced metrics, so ranks agree; a clock-based stop must go through :func:`any_rank`.

A rank that dies or hangs makes the others fail after at most ``SASREC_DIST_TIMEOUT`` seconds (default
600) with a one-line :class:`sasrec.errors.SASRecError` (:func:`fail_clearly`) instead of waiting forever.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from sasrec.errors import ConfigError, SASRecError
from sasrec.evaluate import EvalResult, Evaluator, Scorer
from sasrec.sampling import Batch

T = TypeVar("T")
TIMEOUT_ENV = "SASREC_DIST_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 600.0
# Messages of the errors a failed collective raises (gloo raises plain RuntimeErrors).
_COLLECTIVE_ERROR = re.compile(r"gloo|nccl|timed out|connection (reset|closed|refused)|broken pipe", re.I)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job. The default is the single process: rank 0 of 1, no group.

    Attributes:
        rank: global rank, ``0..world-1``.
        world: number of processes.
        local_rank: rank on this machine (the GPU index on CUDA).
        device: the device this process computes on.
        backend: ``"gloo"`` or ``"nccl"`` when a process group is joined, else None.
        timeout: how long a collective waits for the other ranks.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    timeout: timedelta = timedelta(seconds=DEFAULT_TIMEOUT_SECONDS)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when running under a process group (even of one process)."""
        return self.backend is not None


def on_main(target: T, info: DistInfo) -> T:
    """``target`` itself on rank 0 (and in a single process); on the other ranks a stand-in that ignores every
    call: calling it, or any method of it, does nothing and returns None.

    The seam for side effects only one process of a job may have (writing the run directory, printing), so
    that the code making them reads as single-process code::

        out = on_main(run, info)      # a RunDir
        out.append_log(record)        # rank 0 writes, the others skip
        on_main(print, info)("done")

    Only for calls made for their effect: attributes that are not methods, and return values, exist on rank 0
    alone (read those from ``target``).
    """
    return target if info.is_main else _IGNORE


class _Ignore:
    """Off rank 0, what :func:`on_main` returns: every call, and every method's call, does nothing."""

    def __getattr__(self, name: str) -> _Ignore:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __repr__(self) -> str:
        return "<ignored off rank 0>"


_IGNORE = _Ignore()


def timeout_from_env() -> timedelta:
    """``SASREC_DIST_TIMEOUT`` (seconds) or the default, 600 s."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(raw) if raw else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if seconds <= 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be > 0 seconds, got {raw!r}")
    return timedelta(seconds=seconds)


def init_from_env(device: torch.device | str = "cpu", timeout: timedelta | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables; no-op without ``WORLD_SIZE``.

    Args:
        device: the configured device. ``cuda`` becomes ``cuda:LOCAL_RANK`` (backend NCCL); anything else
            runs on the CPU with gloo.
        timeout: how long collectives wait for a missing rank (default: :func:`timeout_from_env`).
    Returns:
        This process's :class:`DistInfo`; ``DistInfo(device=device)`` when not launched by torchrun.
    """
    device = torch.device(device)
    if "WORLD_SIZE" not in os.environ:
        return DistInfo(device=device)
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE is set (torchrun?) but this PyTorch build has no torch.distributed")
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"bad torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK): {exc}") from None
    timeout = timeout or timeout_from_env()
    if device.type == "cuda":
        visible = torch.cuda.device_count()
        if local_rank >= visible:
            raise ConfigError(
                f"rank {rank}: LOCAL_RANK {local_rank} but only {visible} GPU(s) visible; "
                f"use at most --nproc_per_node={visible} on this machine"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend, timeout=timeout, rank=rank, world_size=world, device_id=device if backend == "nccl" else None
        )
    return DistInfo(rank, world, local_rank, device, dist.get_backend(), timeout)


def cleanup(info: DistInfo) -> None:
    """Leave the process group (no-op in a single process).

    Call :func:`finish` first on a successful run (see there).
    """
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def finish(info: DistInfo) -> None:
    """Wait until every rank is past its last collective; call it right before :func:`cleanup` on success.

    Why: DDP keeps the gloo process group alive past ``destroy_process_group`` (torch 2.13), so its worker
    threads live until the interpreter shuts down. A worker that finishes an all-reduce releases the
    reduced tensor (a Python object) just *after* the caller has been told the result is ready; if the
    process is already finalizing Python by then, that release aborts the process ("terminate called
    without an active exception", SIGABRT) after all the work is done, now and then and more often on a loaded
    machine. A barrier is one more network round trip, by which time the workers have let go.
    """
    barrier(info)


def barrier(info: DistInfo) -> None:
    """Wait until every rank gets here (e.g. before reading a file rank 0 has just written)."""
    if info.enabled:
        dist.barrier(device_ids=[info.device.index] if info.backend == "nccl" else None)


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` (picklable) on every rank, e.g. a run directory named after the clock."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=info.device if info.backend == "nccl" else None)
    return box[0]


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` (``model`` itself when not enabled).

    Call the wrapper for the training forward pass (its backward averages gradients over ranks); keep using
    ``model`` itself for everything else (its other methods, evaluation, checkpoints: no ``module.`` prefix).
    DDP broadcasts rank 0's parameters when wrapping, so every rank starts from the same weights.
    """
    if not info.enabled:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def rank_seed(seed: int, epoch: int, info: DistInfo) -> int:
    """A seed for ``(seed, epoch, rank)`` (see :func:`seed_epoch`)."""
    return int(np.random.SeedSequence([seed, epoch, info.rank]).generate_state(1)[0])


def seed_epoch(seed: int, epoch: int, info: DistInfo, *generators: np.random.Generator) -> None:
    """Distributed only: reseed torch and ``generators`` (e.g. the dropout masks' NumPy generator) in place
    from ``(seed, epoch, rank)`` at the start of an epoch.

    Ranks then draw different dropout masks (the same seed everywhere would repeat one rank's masks on the
    others' rows), and ``--resume`` re-creates every rank's masks from the epoch number alone, although
    the checkpoint holds rank 0's generator states only. No-op in a single process.
    """
    if not info.enabled:
        return
    value = rank_seed(seed, epoch, info)
    torch.manual_seed(value)
    for generator in generators:
        generator.bit_generator.state = np.random.default_rng(value).bit_generator.state


# ---------------------------------------------------------------------------------------------- sharding
def shard(array: np.ndarray, info: DistInfo) -> np.ndarray:
    """This rank's share of ``array``: every ``world``-th element from ``rank`` (order kept, sizes within
    one of each other; a sorted array gives sorted shards; lengths interleave, so work is balanced)."""
    return array[info.rank :: info.world]


def loss_weight(local_positions: int, global_positions: int, info: DistInfo) -> float:
    """Factor for this rank's *mean* loss so DDP's gradient average is the global batch's mean gradient.

    ``mean_r * P_r * N / P`` summed over ranks and divided by N (DDP) is ``sum / P``, the mean over the
    global batch's ``P`` positions (see the module docstring). 1.0 in a single process.
    """
    if not info.enabled:
        return 1.0
    return local_positions * info.world / max(global_positions, 1)


def shard_batch(batch: Batch, info: DistInfo) -> tuple[Batch, float]:
    """This rank's rows of a global batch (trimmed to their longest row) and its :func:`loss_weight`.

    When the global batch has fewer rows than there are ranks (the last batch of an epoch may), a rank
    with no rows gets the batch's first row and weight 0: it still runs forward and backward, as DDP
    requires of every rank, but adds nothing to the gradient. Single process: ``(batch, 1.0)``.
    """
    if not info.enabled:
        return batch, 1.0
    real = batch.pos > 0
    rows = shard(np.arange(len(batch.users)), info)
    local = int(real[rows].sum())
    if len(rows) == 0:
        rows = np.zeros(1, dtype=np.int64)
    width = max(1, int(real[rows].sum(1).max()))  # real items come first: trimming is exact
    neg = batch.neg[rows, :width] if batch.neg.ndim == 3 else batch.neg  # shared negatives: every rank's
    part = Batch(batch.users[rows], batch.seq[rows, :width], batch.pos[rows, :width], neg)
    return part, loss_weight(local, int(real.sum()), info)


# ---------------------------------------------------------------------------------------------- reductions
def all_reduce_sums(
    sums: dict[str, float], count: int, info: DistInfo, keys: Iterable[str] | None = None
) -> tuple[dict[str, float], int]:
    """Add ``sums`` (in float64) and ``count`` over ranks; every rank gets the totals.

    ``keys``: the names to add up, in order (default: ``sums``' own); a rank that lacks a key (e.g. it
    evaluated no user) contributes 0. Every rank must pass the same keys.
    """
    keys = list(sums) if keys is None else list(keys)
    if not info.enabled:
        return {k: float(sums.get(k, 0.0)) for k in keys}, int(count)
    values = torch.tensor(
        [float(sums.get(k, 0.0)) for k in keys] + [float(count)], dtype=torch.float64, device=info.device
    )
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    out = values.cpu().tolist()
    return dict(zip(keys, out[:-1], strict=True)), int(round(out[-1]))


def mean_over_ranks(value: float, info: DistInfo) -> float:
    """The mean of ``value`` over ranks (``value`` itself in a single process)."""
    sums, _ = all_reduce_sums({"value": value}, 0, info)
    return sums["value"] / info.world


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is true on any: for decisions all ranks must take together (stopping
    on a wall-clock budget, say), which a rank must never take alone or the others wait on it forever."""
    if not info.enabled:
        return bool(flag)
    sums, _ = all_reduce_sums({"flag": float(bool(flag))}, 0, info)
    return sums["flag"] > 0


def evaluate(
    evaluator: Evaluator, scorer: Scorer, info: DistInfo, batch_size: int = 1024, progress: bool | None = None
) -> EvalResult:
    """``evaluator.run(scorer)``, with the users split over ranks and the metric sums added up.

    Every rank must hold the same evaluator (same split, protocol and seed: the sampled protocol's
    negatives are drawn from the seed) and a scorer of the same weights; every rank gets the result.
    ``progress`` as in :meth:`Evaluator.run` (a single process only: ranks never draw bars).
    """
    if not info.enabled:
        return evaluator.run(scorer, batch_size=batch_size, progress=progress)
    start = time.perf_counter()
    sums, count = evaluator.sums(scorer, shard(evaluator.users, info), batch_size, progress=False)
    sums, count = all_reduce_sums(sums, count, info, evaluator.sum_keys())  # the same names on every rank
    return evaluator.result(sums, count, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------- failures
@contextmanager
def fail_clearly(info: DistInfo) -> Iterator[None]:
    """Turn a failed collective (a rank died, hung past the timeout, or lost the network) into one clear
    :class:`~sasrec.errors.SASRecError`; other errors pass through unchanged."""
    try:
        yield
    except SASRecError:
        raise
    except RuntimeError as exc:  # dist.DistError is a RuntimeError too
        if not info.enabled or not (isinstance(exc, dist.DistError) or _COLLECTIVE_ERROR.search(str(exc))):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SASRecError(
            f"rank {info.rank} of {info.world}: a collective operation with the other ranks failed "
            f"({first[:300]}). Another rank probably crashed (see its error) or is stuck; ranks wait at most "
            f"{info.timeout.total_seconds():g} s ({TIMEOUT_ENV}) before giving up"
        ) from exc
