"""The run directory: the only code that creates, names, locks, writes and reads one.

A run directory holds everything about one training run:

    config.json         the resolved configuration (:class:`sasrec.config.Config` as JSON)
    fingerprint.json    dataset fingerprint (file sha256, or generator and seed), package versions, git commit
    log.jsonl           one JSON line per epoch: loss, seconds, validation metrics when evaluated
    last.safetensors    weights + optimizer + RNG state after the last completed epoch (for ``--resume``)
    best.safetensors    weights of the epoch with the best validation metric
    learning_curve.png  validation HR@10 / NDCG@10 per evaluated epoch, and the loss per epoch
    results.json        test metrics of the best checkpoint under both protocols (written once, at the end)

Building a run's model and loading its dataset live here too, so that evaluation, recommendation, serving
and export read runs without importing the training loop.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import sasrec
from sasrec.atomic import write_text
from sasrec.checkpoint import load_checkpoint, save_checkpoint
from sasrec.config import Config, config_from_dict, dataset_path
from sasrec.data.dataset import Sequences, file_sha256, read_sasrec_file
from sasrec.errors import ConfigError, SASRecError
from sasrec.model import SASRec, TorchKernels

CONFIG, FINGERPRINT, LOG, LAST, BEST, RESULTS, CURVE = (
    "config.json",
    "fingerprint.json",
    "log.jsonl",
    "last.safetensors",
    "best.safetensors",
    "results.json",
    "learning_curve.png",
)


# ------------------------------------------------------------------------------------ building blocks
def load_dataset(config: Config) -> tuple[Sequences, str]:
    """The configured dataset and its fingerprint (``sha256:<hex>`` of the file, or the generator's name)."""
    path = dataset_path(config)
    if path is None:
        from sasrec.data.synthetic import make_synthetic

        return make_synthetic(), "synthetic:default"
    return read_sasrec_file(path), f"sha256:{file_sha256(path)}"


def build_model(config: Config, num_items: int, kernels: TorchKernels | None = None) -> SASRec:
    """A freshly initialised :class:`SASRec` with the config's architecture over ``num_items`` items.

    ``kernels``: the model's dropout and attention-with-dropout computation in training (see
    :class:`sasrec.model.TorchKernels`; the default is the plain one).
    """
    return SASRec(
        num_items,
        maxlen=config.maxlen,
        hidden=config.hidden,
        num_blocks=config.num_blocks,
        num_heads=config.num_heads,
        dropout=config.dropout,
        norm_first=config.norm_first,
        tied_output=config.tied_output,
        kernels=kernels,
    )


def pick_device(name: str) -> torch.device:
    """``cpu``, ``cuda[:N]`` or ``auto`` (CUDA when PyTorch sees a GPU). Raises ConfigError for absent CUDA."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def default_run_dir(config: Config) -> Path:
    name = Path(config.dataset).stem if config.dataset != "synthetic" else "synthetic"
    return Path("runs") / f"{name}-{config.loss}-seed{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


# ------------------------------------------------------------------------------------ the directory
class RunDir:
    """One run directory. Create a new one with :meth:`create`, open an existing one with :meth:`open`.

    Writing methods are atomic (a crash never leaves half a file). :meth:`lock` takes an exclusive advisory
    lock on the directory itself, so two processes never train into it at once and no lock file is left.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ---------------------------------------------------------------- creating and locking
    @classmethod
    def check_new(cls, path: str | Path) -> RunDir:
        """Refuse, before any work, a ``path`` that holds a run or is a file. Raises SASRecError."""
        run = cls(path)
        if (run / LAST).exists() or (run / CONFIG).exists():
            raise SASRecError(f"{run.path} already holds a run; use --resume {run.path} or another --out")
        for parent in (run.path, *run.path.parents):
            if parent.exists():
                if not parent.is_dir():
                    raise SASRecError(f"--out {run.path}: {parent} is a file, not a directory; choose another --out")
                if not os.access(parent, os.W_OK | os.X_OK):
                    raise SASRecError(f"--out {run.path}: {parent} is not writable; choose another --out")
                break
        return run

    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        """Make ``path`` (which must not already hold a run). Raises SASRecError naming ``--resume``."""
        run = cls.check_new(path)
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            probe = run.path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise SASRecError(
                f"cannot write the run directory {run.path} ({exc.strerror}); choose a writable --out"
            ) from None
        return run

    @classmethod
    def open(cls, path: str | Path, need: str = CONFIG) -> RunDir:
        """An existing run directory; raises SASRecError if ``need`` (a file name) is not in it."""
        run = cls(path)
        if not run.path.is_dir() or not (run / need).exists():
            raise SASRecError(f"{run.path} is not a run directory (no {need}); train one with `sasrec train`")
        return run

    def lock(self) -> RunDir:
        """Take the exclusive lock (held until :meth:`unlock` or process exit). Raises if another holds it."""
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks
            return self
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SASRecError(f"{self.path} is in use by another training process; wait for it or stop it") from None
        self._lock_fd = fd
        return self

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove_if_unfinished(self) -> None:
        """Delete the directory if no epoch was saved in it (a run that failed before its first epoch)."""
        if not (self / LAST).exists():
            self.unlock()
            shutil.rmtree(self.path, ignore_errors=True)

    # ---------------------------------------------------------------- config and fingerprint
    def write_config(self, config: Config) -> None:
        write_text(self / CONFIG, json.dumps(config.to_dict(), indent=2))

    def read_config(self) -> Config:
        """The saved config; raises SASRecError for a missing, malformed or incompatible ``config.json``."""
        path = self / CONFIG
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise SASRecError(
                f"{self.path} is not a run directory (no {CONFIG}); train one with `sasrec train`"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SASRecError(f"{path} is damaged ({exc}); it is not a config written by sasrec") from None
        if not isinstance(values, dict):
            raise SASRecError(f"{path} is damaged: expected a JSON object")
        return config_from_dict(values, source=str(path))

    def write_fingerprint(self, dataset: str) -> None:
        write_text(
            self / FINGERPRINT,
            json.dumps(
                {
                    "dataset": dataset,
                    "sasrec_version": sasrec.__version__,
                    "git_commit": git_commit(),
                    "torch": torch.__version__,
                    "numpy": np.__version__,
                },
                indent=2,
            ),
        )

    def dataset_fingerprint(self) -> str | None:
        try:
            return json.loads((self / FINGERPRINT).read_text()).get("dataset")
        except (OSError, ValueError, AttributeError):
            return None

    def check_dataset(self, dataset: str, fingerprint: str) -> None:
        """Refuse a dataset whose fingerprint differs from the one this run was trained on."""
        saved = self.dataset_fingerprint()
        if saved and saved != fingerprint:
            raise SASRecError(
                f"the dataset {dataset!r} changed since {self.path} was trained "
                f"({fingerprint} != {saved}); restore the original file or train a new run"
            )

    # ---------------------------------------------------------------- log
    def append_log(self, record: dict[str, Any]) -> None:
        with open(self / LOG, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_log(self) -> list[dict[str, Any]]:
        path = self / LOG
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def truncate_log(self, epoch: int) -> None:
        """Keep one line per epoch up to ``epoch`` (drops lines written after the last checkpoint)."""
        if not (self / LOG).exists():
            return
        records = {r["epoch"]: r for r in self.read_log() if r["epoch"] <= epoch}
        write_text(self / LOG, "".join(json.dumps(records[e]) + "\n" for e in sorted(records)))

    # ---------------------------------------------------------------- checkpoints and results
    def save_best(self, model: torch.nn.Module, meta: dict[str, Any]) -> None:
        save_checkpoint(self / BEST, model, meta)

    def save_last(
        self,
        model: torch.nn.Module,
        meta: dict[str, Any],
        optimizer: torch.optim.Optimizer,
        extra: dict[str, torch.Tensor],
    ) -> None:
        save_checkpoint(self / LAST, model, meta, optimizer, extra)

    def load_checkpoint(
        self, name: str, model: torch.nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        return load_checkpoint(self / f"{name}.safetensors", model, optimizer)

    def write_results(self, results: dict[str, Any]) -> None:
        write_text(self / RESULTS, json.dumps(results, indent=2))

    def plot(self) -> None:
        from sasrec.plots import plot_learning_curve

        plot_learning_curve(self / LOG, self / CURVE)


# ------------------------------------------------------------------------------------ reading a run
@dataclass
class Run:
    """A trained run loaded for use: its directory, config, model (eval mode) and checkpoint metadata."""

    path: Path
    config: Config
    model: SASRec
    meta: dict


def load_config(run_dir: str | Path) -> Config:
    return RunDir.open(run_dir).read_config()


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> Run:
    """The run's config and its ``best`` (or ``last``) model, in eval mode on ``device``.

    Raises:
        SASRecError: not a run directory, a missing, damaged or mismatched checkpoint (named), or weights
            that are not all finite (a diverged run).
    """
    run = RunDir.open(run_dir)
    config = run.read_config()
    name = f"{checkpoint}.safetensors"
    meta_probe, _ = run.load_checkpoint(checkpoint)
    num_items = meta_probe.get("num_items")
    if not isinstance(num_items, int) or num_items < 1:
        raise SASRecError(f"{run / name} has no valid num_items; was it written by sasrec?")
    model = build_model(config, num_items)
    meta, _ = run.load_checkpoint(checkpoint, model)
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise SASRecError(
            f"{run / name} holds non-finite weights ({', '.join(bad[:3])}): the run diverged; "
            "retrain it with a lower --lr"
        )
    model.to(pick_device(device)).eval()
    return Run(run.path, config, model, meta)


def load_run_data(run: Run) -> Sequences:
    """The run's dataset, refusing one whose fingerprint differs from the one it was trained on."""
    data, fingerprint = load_dataset(run.config)
    RunDir(run.path).check_dataset(run.config.dataset, fingerprint)
    return data


def write_run(
    path: str | Path, config: Config, model: SASRec, dataset: str, meta: dict[str, Any] | None = None
) -> RunDir:
    """Write a minimal usable run (config, fingerprint, ``best`` weights) for an already-built model.

    For tests, benchmarks and users who train outside :mod:`sasrec.train`.
    """
    run = RunDir.create(path)
    run.write_config(config)
    run.write_fingerprint(dataset)
    run.save_best(model, {"epoch": 0, "num_items": model.num_items, **(meta or {})})
    return run
