"""The run directory: the only code that creates, names, locks, writes and reads one.

A run directory holds everything about one training run:

    config.json         the resolved configuration (:class:`sasrec.config.Config` as JSON)
    fingerprint.json    dataset fingerprint (file sha256, or generator and seed), package versions, git commit,
                        and the working directory the run was started from (relative paths in config.json
                        are read against it)
    log.jsonl           one JSON line per epoch: loss, seconds, validation metrics when evaluated
    last.safetensors    weights + optimizer + RNG state after the last completed epoch (for ``--resume``)
    best.safetensors    weights of the epoch with the best validation metric
    learning_curve.png  validation HR@10 / NDCG@10 per evaluated epoch, and the loss per epoch
    results.json        test metrics of the best checkpoint under both protocols (written once, at the end)

Both checkpoints record the architecture they were trained with (:data:`ARCHITECTURE`); loading one checks it
against ``config.json``, so an edited config never silently changes what the network computes. Checkpoints
written before that record existed load unchecked (their shapes are still checked).

A directory without ``last.safetensors`` holds no trained epoch (a run killed before its first checkpoint):
``train --out`` may reuse it and ``train --resume`` starts it over from epoch 0.

Building a run's model and loading its dataset live here too, so that evaluation, recommendation, serving
and export read runs without importing the training loop.
"""

from __future__ import annotations

import dataclasses
import json
import os
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
from sasrec.config import Config, config_from_dict, dataset_path, named_file
from sasrec.data import registry
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


# Config fields that change what the network computes, in training or in scoring; with the catalogue size
# they are recorded in every checkpoint and must agree with config.json when it is loaded.
ARCHITECTURE = ("maxlen", "hidden", "num_blocks", "num_heads", "dropout", "norm_first", "tied_output", "ffn_factor")


# Settings a resumed run may change; every other one makes it a different run. ``last.safetensors`` records
# the others (:func:`settings`), and a resume refuses a config.json edited since.
RESUMABLE = ("epochs", "patience", "max_minutes", "eval_every", "device", "threads", "quiet")
# Where the data and the run are, not what they are (the dataset's identity is its fingerprint).
LOCATIONS = ("dataset", "data_dir", "out")


def settings(config: Config) -> dict[str, Any]:
    """The config fields a resume must find unchanged: all but :data:`RESUMABLE` and :data:`LOCATIONS`."""
    return {k: v for k, v in config.to_dict().items() if k not in RESUMABLE and k not in LOCATIONS}


# ------------------------------------------------------------------------------------ building blocks
def architecture(config: Config, num_items: int) -> dict[str, Any]:
    """The network's shape and behaviour as a checkpoint records it: ``num_items`` and :data:`ARCHITECTURE`."""
    return {"num_items": num_items, **{name: getattr(config, name) for name in ARCHITECTURE}}


def load_dataset(config: Config, run: str | Path | None = None) -> tuple[Sequences, str]:
    """The configured dataset and its fingerprint (``sha256:<hex>`` of the file, or the generator's name).

    ``run``: the run directory whose dataset this is; a missing file is then reported as a moved one, naming
    ``--data-dir``. Raises ConfigError (no run) or SASRecError (a run's) for a dataset that is not there.
    """
    if run is not None and config.dataset not in ("synthetic", *registry.DATASETS):
        if not Path(config.dataset).is_file():
            raise SASRecError(
                f"the dataset file {config.dataset} of run {run} is not there (moved or deleted?); pass "
                f"--data-dir DIR, the folder that now holds {Path(config.dataset).name} (its sha256 is still checked)"
            )
    try:
        path = dataset_path(config)
    except ConfigError as exc:
        if run is None:
            raise
        raise SASRecError(f"cannot find the dataset of run {run}: {exc}") from None
    if path is None:
        from sasrec.data.synthetic import make_synthetic

        return make_synthetic(), "synthetic:default"
    return read_sasrec_file(path), f"sha256:{file_sha256(path)}"


def absolute_dataset(config: Config, base: str | Path | None = None) -> Config:
    """``config`` with its dataset file (or a named dataset's ``data_dir``) as an absolute path, so that a run
    finds its data from any working directory. Relative paths are read against ``base`` (default: the current
    working directory)."""
    if config.dataset == "synthetic":
        return config
    base = Path(base) if base is not None else Path.cwd()
    if config.dataset in registry.DATASETS:
        return dataclasses.replace(config, data_dir=str((base / config.data_dir).resolve()))
    named = named_file(config.dataset, base / config.data_dir)  # a name looked up in data_dir (dataset_path)
    if not (base / config.dataset).exists() and named is not None:
        return dataclasses.replace(config, dataset=str(named.resolve()))
    return dataclasses.replace(config, dataset=str((base / config.dataset).resolve()))


def relocate_dataset(config: Config, data_dir: str | Path | None) -> Config:
    """``config`` reading its dataset from ``data_dir`` (``--data-dir``): a named dataset's files, or the
    dataset file's own name, are looked up there. ``data_dir`` None (or the synthetic dataset): unchanged."""
    if data_dir is None or config.dataset == "synthetic":
        return config
    if config.dataset in registry.DATASETS:
        return dataclasses.replace(config, data_dir=str(Path(data_dir).resolve()))
    return dataclasses.replace(config, dataset=str((Path(data_dir) / Path(config.dataset).name).resolve()))


def build_model(config: Config, num_items: int, kernels: TorchKernels | None = None) -> SASRec:
    """A freshly initialised :class:`SASRec` with the config's architecture over ``num_items`` items.

    ``kernels``: the model's dropout and attention-with-dropout computation in training (see
    :class:`sasrec.model.TorchKernels`; the default is the plain one).
    """
    # ARCHITECTURE is the one list of the config fields the network is built from (and checkpoints record).
    return SASRec(num_items, **{name: getattr(config, name) for name in ARCHITECTURE}, kernels=kernels)


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
        self._config: Config | None = None  # the config.json last written or read: checkpoints record its architecture

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ---------------------------------------------------------------- creating and locking
    def has_epoch(self) -> bool:
        """Whether a trained epoch was saved here (``last.safetensors``): without one there is nothing to keep."""
        return (self / LAST).exists()

    @classmethod
    def check_new(cls, path: str | Path) -> RunDir:
        """Refuse, before any work, a ``path`` that holds a run or is a file. Raises SASRecError.

        A directory that a run killed before its first checkpoint left (config, fingerprint, log lines, no
        ``last.safetensors``) holds no trained epoch and is accepted: :meth:`begin` replaces its files.
        """
        run = cls(path)
        if run.has_epoch() or (run / RESULTS).exists():
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
        if not str(path).strip():  # Path("") would be the current directory
            raise ConfigError("the run directory is an empty path: give the directory of a `sasrec train` run")
        run = cls(path)
        if not run.path.is_dir() or not (run / need).exists():
            raise SASRecError(
                f"{run.path} is not a run directory (no {need}); train one with `sasrec train --out {run.path}`"
            )
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
        """If no epoch was saved here (a run that failed before its first epoch), remove the files a run writes,
        then the directory if that leaves it empty. Other files in it, and the directory then, are kept."""
        if self.has_epoch():
            return
        self.unlock()
        for name in (CONFIG, FINGERPRINT, LOG, BEST, CURVE):
            (self / name).unlink(missing_ok=True)
        try:
            self.path.rmdir()
        except OSError:  # not empty (or already gone): what is left is not ours to delete
            pass

    def discard_unsaved(self) -> None:
        """Remove what an attempt that saved no ``last.safetensors`` left: log lines, a best checkpoint, the
        curve and results of epochs that cannot be resumed. Training then starts here from epoch 0."""
        for name in (LOG, BEST, CURVE, RESULTS):
            (self / name).unlink(missing_ok=True)

    def begin(self, config: Config, fingerprint: str) -> None:
        """Start a new run here: drop an earlier attempt's unsaved files, write config (its dataset path made
        absolute, see :func:`absolute_dataset`) and fingerprint."""
        self.discard_unsaved()
        self.write_config(absolute_dataset(config))
        self.write_fingerprint(fingerprint)

    # ---------------------------------------------------------------- config and fingerprint
    def write_config(self, config: Config) -> None:
        write_text(self / CONFIG, json.dumps(config.to_dict(), indent=2))
        self._config = config

    def read_config(self) -> Config:
        """The saved config; raises SASRecError for a missing, malformed or incompatible ``config.json``.

        A relative dataset path (or a named dataset's relative ``data_dir``) is made absolute against the
        directory the run was started from, as ``fingerprint.json`` records it (else the current one).
        """
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
        self._config = config_from_dict(values, source=str(path))
        return absolute_dataset(self._config, self._fingerprint().get("cwd"))

    def write_fingerprint(self, dataset: str) -> None:
        write_text(
            self / FINGERPRINT,
            json.dumps(
                {
                    "dataset": dataset,
                    "cwd": os.getcwd(),
                    "sasrec_version": sasrec.__version__,
                    "git_commit": git_commit(),
                    "torch": torch.__version__,
                    "numpy": np.__version__,
                },
                indent=2,
            ),
        )

    def _fingerprint(self) -> dict[str, Any]:
        try:
            values = json.loads((self / FINGERPRINT).read_text())
        except (OSError, ValueError):
            return {}
        return values if isinstance(values, dict) else {}

    def dataset_fingerprint(self) -> str | None:
        return self._fingerprint().get("dataset")

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
        """The log's records; a last line cut short (the process was killed while appending it) is left out.

        Raises:
            SASRecError: a line before the last is not a JSON object (the file was edited or damaged).
        """
        path = self / LOG
        if not path.exists():
            return []
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        records = []
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                if number == len(lines):
                    break
                raise SASRecError(f"{path}, line {number}: not a log record; restore the file or delete the line")
            records.append(record)
        return records

    def truncate_log(self, epoch: int) -> None:
        """Keep one line per epoch up to ``epoch`` (drops lines written after the last checkpoint)."""
        if not (self / LOG).exists():
            return
        records = {r["epoch"]: r for r in self.read_log() if r["epoch"] <= epoch}
        write_text(self / LOG, "".join(json.dumps(records[e]) + "\n" for e in sorted(records)))

    # ---------------------------------------------------------------- checkpoints and results
    def _with_architecture(self, meta: dict[str, Any]) -> dict[str, Any]:
        config = self._config or self.read_config()
        return {**meta, "architecture": architecture(config, meta["num_items"])}

    def save_best(self, model: torch.nn.Module, meta: dict[str, Any]) -> None:
        """Write ``best.safetensors``; ``meta`` needs ``num_items``, and gains the config's architecture."""
        save_checkpoint(self / BEST, model, self._with_architecture(meta))

    def save_last(
        self,
        model: torch.nn.Module,
        meta: dict[str, Any],
        optimizer: torch.optim.Optimizer,
        extra: dict[str, torch.Tensor],
    ) -> None:
        config = self._config or self.read_config()
        meta = {**self._with_architecture(meta), "settings": settings(config)}
        save_checkpoint(self / LAST, model, meta, optimizer, extra)

    def check_settings(self, meta: dict[str, Any]) -> None:
        """Refuse to resume from ``last.safetensors`` when ``config.json`` was edited since in a setting a
        resume may not change (its ``meta`` records them; older checkpoints did not). Raises SASRecError."""
        recorded = meta.get("settings")
        if not isinstance(recorded, dict):
            return
        now = settings(self.read_config())
        changed = sorted(k for k in recorded if k in now and now[k] != recorded[k])
        if changed:
            name = changed[0]
            raise SASRecError(
                f"{self / CONFIG} says {name} = {json.dumps(now[name])} but {self / LAST} was trained with "
                f"{name} = {json.dumps(recorded[name])}"
                + (f" (and {', '.join(changed[1:])})" if len(changed) > 1 else "")
                + "; restore the value in config.json to resume, or start a new run with --out to change it"
            )

    def load_checkpoint(
        self,
        name: str,
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        fix: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """Checkpoint ``name`` (``best`` or ``last``) into ``model``/``optimizer``; returns ``(meta, extra)``.

        ``fix``: what the message of a missing or damaged file suggests (default: the other checkpoint).

        Raises:
            SASRecError: the file is missing or damaged, or its recorded architecture differs from config.json.
        """
        path = self / f"{name}.safetensors"
        other = {"best": "last", "last": "best"}.get(name)
        fix = fix or (f"load the {other} checkpoint (--checkpoint {other}) or retrain" if other else "retrain")
        return load_checkpoint(path, model, optimizer, lambda meta: self.check_architecture(path, meta), fix)

    def check_architecture(self, path: Path, meta: dict[str, Any]) -> None:
        """Refuse a checkpoint whose recorded architecture differs from ``config.json`` (a field edited after
        training, which weights of the same shapes would otherwise silently accept). Raises SASRecError."""
        recorded = meta.get("architecture")
        if not isinstance(recorded, dict):  # written before checkpoints recorded it: nothing to compare
            return
        config = self.read_config()
        for name in ARCHITECTURE:
            if name in recorded and recorded[name] != getattr(config, name):
                raise SASRecError(
                    f"{self / CONFIG} says {name} = {json.dumps(getattr(config, name))} but {path} was trained "
                    f'with {name} = {json.dumps(recorded[name])}; restore "{name}": {json.dumps(recorded[name])} '
                    "in config.json, or train a new run with the new value"
                )

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


def load_run(
    run_dir: str | Path, checkpoint: str = "best", device: str = "cpu", data_dir: str | Path | None = None
) -> Run:
    """The run's config and its ``best`` (or ``last``) model, in eval mode on ``device``.

    ``data_dir`` (``--data-dir``): where the run's dataset file is looked up instead of where it was trained
    (see :func:`relocate_dataset`); :func:`load_run_data` still checks its fingerprint.

    Raises:
        SASRecError: not a run directory, a missing, damaged or mismatched checkpoint (named), or weights
            that are not all finite (a diverged run).
    """
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    run = RunDir.open(run_dir)
    config = relocate_dataset(run.read_config(), data_dir)
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
    data, fingerprint = load_dataset(run.config, run.path)
    RunDir(run.path).check_dataset(run.config.dataset, fingerprint)
    return data


def write_run(
    path: str | Path, config: Config, model: SASRec, dataset: str, meta: dict[str, Any] | None = None
) -> RunDir:
    """Write a minimal usable run (config, fingerprint, ``best`` weights) for an already-built model.

    For tests, benchmarks and users who train outside :mod:`sasrec.train`.
    """
    run = RunDir.create(path)
    run.begin(config, dataset)
    run.save_best(model, {"epoch": 0, "num_items": model.num_items, **(meta or {})})
    return run
