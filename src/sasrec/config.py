"""Training configuration as plain values: defaults < preset TOML < ``--config`` TOML < command line."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sasrec.errors import ConfigError
from sasrec.metrics import METRICS

PRESETS = ("ml-1m", "games", "beauty", "steam", "synthetic")
# (negatives, shared) when not given. gbce needs per-position negatives: with one set shared by the batch
# it did not learn on Games (full-ranking validation HR@10 0.0007 after 2 epochs vs 0.0192 per position).
SAMPLED_LOSS_DEFAULTS = {"sampled-ce": (256, True), "gbce": (256, False)}
# The names sasrec.sampling.BATCHING and sasrec.losses.LOSSES hold (not imported here: they load torch).
BATCHINGS = ("random", "shuffle", "bucket")
LOSS_NAMES = ("bce", "ce", "sampled-ce", "gbce")
# Dropout masks keep a value when a random uint16 is >= round(p * 65536) (sasrec.model.Dropout.mask): a rate
# that rounds to 65536 would keep nothing and scale by 1/0, so the largest usable rate is 65535/65536.
MAX_DROPOUT = 65535 / 65536


def _dropout_ok(p: float) -> bool:
    return p >= 0 and round(p * 65536) < 65536


# What each numeric field allows: (test, requirement). Config.validate holds presets, --config files and
# saved runs to it; the command line holds option values to it while parsing (sasrec.argtypes.config_value).
LIMITS: dict[str, tuple[Callable[[float], bool], str]] = {
    "maxlen": (lambda v: v >= 1, ">= 1"),
    "hidden": (lambda v: v >= 1, ">= 1"),
    "num_blocks": (lambda v: v >= 0, ">= 0"),
    "num_heads": (lambda v: v >= 1, ">= 1"),
    "dropout": (_dropout_ok, f">= 0 and at most {MAX_DROPOUT:.6f} (dropout masks work in steps of 1/65536)"),
    "lr": (lambda v: v > 0, "> 0"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "epochs": (lambda v: v >= 1, ">= 1"),  # 0 would test an untrained model as if it were a result
    "l2_emb": (lambda v: v >= 0, ">= 0"),
    "negatives": (lambda v: v >= 0, ">= 0"),  # each loss says whether it needs >= 1 (sasrec.losses)
    "eval_every": (lambda v: v >= 1, ">= 1"),
    "patience": (lambda v: v >= 0, ">= 0 (0: never stop early)"),
    "max_minutes": (lambda v: v >= 0, ">= 0 (0: no limit)"),
    "eval_negatives": (lambda v: v >= 1, ">= 1"),
    "seed": (lambda v: 0 <= v < 2**64, "from 0 to 2**64 - 1"),  # torch.manual_seed's range
    "threads": (lambda v: v >= 0, ">= 0 (0: PyTorch's choice)"),
}


@dataclass
class Config:
    # data
    dataset: str = "synthetic"  # a preset name (file looked up in data_dir) or a path to a SASRec-format file
    data_dir: str = "data"
    preset: str | None = None  # hyperparameter preset; defaults to the dataset's own when it has one
    # model (the paper's defaults, Sec. IV-C)
    maxlen: int = 50
    hidden: int = 50
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.2
    norm_first: bool = False
    # Score items with the input item embedding (the paper's shared embedding). False adds a separate
    # output embedding (gSASRec's default); with gbce on Games it learned faster early but ended lower.
    tied_output: bool = True
    # optimisation (Adam with betas (0.9, 0.98), as the reference)
    lr: float = 0.001
    batch_size: int = 128
    epochs: int = 200
    l2_emb: float = 0.0
    loss: str = "bce"
    negatives: int = 1
    loss_options: dict[str, float] = field(default_factory=dict)
    batching: str = "bucket"  # "random" is the reference's sampler (see sampling.TrainSampler)
    # Scale each batch's mean loss by its share of the epoch's positions, so every position weighs the same
    # whatever batch it lands in (as in the reference's random batches, on average). Length-bucketed
    # batches hold very different numbers of positions; unweighted, a batch of short sequences moves the
    # model as much as one of long ones. ``resolve`` turns it on unless batching is "random".
    position_weighting: bool = False
    # validation and model selection (validation split only)
    eval_every: int = 1
    patience: int = 20  # evaluations without improvement before stopping; 0 disables early stopping
    max_minutes: float = 0.0  # stop after the first epoch that ends past this wall time (0: no limit)
    metric: str = "NDCG@10"
    val_protocol: str = "sampled"
    eval_negatives: int = 100
    # run
    seed: int = 42
    device: str = "cpu"
    threads: int = 0  # 0: PyTorch's default
    out: str | None = None
    quiet: bool = False

    def validate(self) -> None:
        """Raise ConfigError naming the first field with a wrong type or value (see :data:`LIMITS`)."""
        for f in dataclasses.fields(self):
            problem = field_problem(f.name, getattr(self, f.name))
            if problem:
                raise ConfigError(f"{f.name} {problem}, got {getattr(self, f.name)!r}")
        self._check_loss()
        checks = [
            (self.hidden % self.num_heads == 0,
             f"hidden ({self.hidden}) must be divisible by num_heads ({self.num_heads})"),
            (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:"),
             f"device must be cpu, cuda or auto, got {self.device!r}"),
            (self.val_protocol in ("sampled", "full"),
             f"val_protocol must be sampled or full, got {self.val_protocol!r}"),
            (self.batching in BATCHINGS, f"batching must be one of {', '.join(BATCHINGS)}, got {self.batching!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        split_metric(self.metric)

    def _check_loss(self) -> None:
        """The loss, its negatives and options, checked now rather than once a run directory exists."""
        from sasrec.losses import make_loss

        make_loss(self.loss, self.negatives, **self.loss_options)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(Config)}
# The Python types each annotation accepts, and their name in errors (annotations are strings here).
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "an integer"), "float": ((int, float), "a number"), "bool": ((bool,), "true or false"),
    "str": ((str,), "a string"), "str | None": ((str, type(None)), "a string"),
    "dict[str, float]": ((dict,), "a table of numbers and true/false"),
}
FIELD_TYPES = {f.name: _TYPES[f.type] for f in dataclasses.fields(Config)}


def field_type(name: str) -> type:
    """The type that parses a command-line value of numeric field ``name``: ``int`` or ``float``."""
    return float if float in FIELD_TYPES[name][0] else int


def field_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for field ``name`` (e.g. ``"must be >= 1"``), or None if it is allowed."""
    types, kind = FIELD_TYPES[name]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        return f"must be {kind}"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if name in LIMITS and not LIMITS[name][0](value):
        return f"must be {LIMITS[name][1]}"
    return None


def split_metric(metric: str) -> tuple[str, int]:
    """``"NDCG@20"`` -> ``("NDCG", 20)``. Raises ConfigError naming ``--metric`` for a name not computed."""
    name, _, k = metric.partition("@")
    if name not in METRICS or not (k.isascii() and k.isdigit()) or int(k) < 1:
        raise ConfigError(f"--metric {metric!r}: expected NAME@K with NAME one of {', '.join(METRICS)} and "
                          "K >= 1, e.g. NDCG@10")
    return name, int(k)


def config_from_dict(values: dict[str, Any], source: str) -> Config:
    """A validated Config from saved values (e.g. a run's ``config.json``); ``source`` names it in errors."""
    unknown = set(values) - FIELDS
    if unknown:
        raise ConfigError(f"{source}: unknown keys {', '.join(sorted(unknown))} (written by another version "
                          "of sasrec?)")
    config = Config(**values)
    try:
        config.validate()
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def load_preset(name: str) -> dict[str, Any]:
    """The preset's values (hyperparameters, plus ``files``: the file names to look for)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return tomllib.loads(resources.files("sasrec.presets").joinpath(f"{name}.toml").read_text())


def load_toml(path: str | Path) -> dict[str, Any]:
    try:
        values = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    unknown = set(values) - FIELDS
    if unknown:
        raise ConfigError(f"config file {path}: unknown keys {', '.join(sorted(unknown))}")
    return values


def resolve(overrides: dict[str, Any], config_file: str | None = None) -> Config:
    """Build the config: defaults, then the preset, then ``config_file``, then ``overrides`` (non-None)."""
    file_values = load_toml(config_file) if config_file else {}
    given = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    dataset = given.get("dataset", Config.dataset)
    preset = given.get("preset") or (dataset if dataset in PRESETS else None)
    values = {k: v for k, v in (load_preset(preset) if preset else {}).items() if k in FIELDS}
    values.update(given)
    values["preset"] = preset
    values.setdefault("position_weighting", values.get("batching", Config.batching) != "random")
    if values.get("loss") in SAMPLED_LOSS_DEFAULTS:
        # One negative (the dataclass default, the paper's for bce) starves these losses: unless told
        # otherwise they get 256; sampled-ce shares them across the batch (7x faster than per position).
        negatives, shared = SAMPLED_LOSS_DEFAULTS[values["loss"]]
        values.setdefault("negatives", negatives)
        options = dict(values.get("loss_options") or {})
        if not options.get("in_batch"):
            options.setdefault("shared", shared)
        values["loss_options"] = options
    config = Config(**values)
    config.validate()
    return config


def dataset_path(config: Config) -> Path | None:
    """The SASRec-format file to train on, or None for the embedded synthetic dataset."""
    if config.dataset == "synthetic":
        return None
    if config.dataset in PRESETS:
        names = load_preset(config.dataset).get("files", [])
        for name in names:
            candidate = Path(config.data_dir) / name
            if candidate.exists():
                return candidate
        raise ConfigError(
            f"dataset {config.dataset!r}: none of {', '.join(names)} found in {config.data_dir!r}. "
            f"Preprocess it with `sasrec preprocess --dataset {config.dataset} --input RAW --output "
            f"{config.data_dir}` (or `sasrec download {config.dataset}`), or pass --data-dir")
    path = Path(config.dataset)
    if not path.exists():
        raise ConfigError(f"dataset {config.dataset!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
    return path
