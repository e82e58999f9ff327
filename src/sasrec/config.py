"""Training configuration as plain values: defaults < preset < ``--config`` TOML < command line.

:meth:`Config.validate` checks every field (types and ranges from :data:`LIMITS`, the loss, its negatives and
typed options from :data:`LOSS_SPECS`, the metric) before anything is written: ``sasrec train`` creates no run
directory for a config that fails it. The command line checks each value with the same rules while parsing
(:func:`sasrec.argtypes.config_value`).

Defaults that depend on other fields are ``None`` in the dataclass and filled in ONE place,
:meth:`Config.__post_init__`, whatever builds the Config (``resolve``, ``Config(...)``, a saved run):

=====================  ==========================================================================
``negatives``          the loss's count in :data:`LOSS_SPECS`: 1 for bce (the paper's), 0 for ce (draws
                       none), 256 for sampled-ce and gbce
``position_weighting`` on unless ``batching`` is ``"random"`` (the reference's batches need none)
``loss_options``       ``shared`` for sampled-ce (true, unless ``in_batch``) and gbce (false), when not given
=====================  ==========================================================================

A run's ``config.json`` holds the filled values. The hyperparameter preset (``preset``, by default the
dataset's own when it is a named dataset of :mod:`sasrec.data.registry`) is applied by :func:`resolve`,
which loads its values before building the Config.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sasrec.data import registry
from sasrec.errors import ConfigError
from sasrec.metrics import METRICS

PRECISIONS = ("fp32", "bf16", "auto")  # --precision; see sasrec.precision
MAX_K = 2**31 - 1  # the largest cut-off K of a metric (the catalogue bounds it further where it is known)

# The names sasrec.sampling.BATCHING holds (not imported here: it loads torch).
BATCHINGS = ("random", "shuffle", "bucket")
# Dropout masks keep a value when a random uint16 is >= round(p * 65536) (sasrec.kernels.CPUKernels.mask): a rate
# that rounds to 65536 would keep nothing and scale by 1/0, so the largest usable rate is 65535/65536.
MAX_DROPOUT = 65535 / 65536
# Counts without a tighter bound stay within int32, what the samplers' and index tensors' arithmetic holds;
# whether a large value fits in memory is checked against the data before training (sasrec.preflight).
MAX_COUNT = 2**31 - 1
# torch.set_num_threads(100000) crashes the process; far more threads than cores only adds contention.
MAX_THREADS = 1024
# 1000 blocks take seconds to build and 100000 minutes, before the first step; no SASRec variant is that deep.
MAX_BLOCKS = 256


@dataclass(frozen=True)
class Limit:
    """The allowed range of a numeric field: ``minimum <= v <= maximum`` (``minimum < v`` when ``above``;
    ``below``: ``v < maximum``); ``note`` says what a special value means. ``None``: no bound on that side."""

    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    below: bool = False
    note: str = ""

    def ok(self, v: float) -> bool:
        low = self.minimum is None or (v > self.minimum if self.above else v >= self.minimum)
        high = self.maximum is None or (v < self.maximum if self.below else v <= self.maximum)
        return low and high

    @property
    def requirement(self) -> str:
        """E.g. ``from 1 to 2147483647``, ``> 0``, ``>= 0 and < 1``."""
        low = None if self.minimum is None else f"{'>' if self.above else '>='} {self.minimum:g}"
        if self.maximum is None:
            text = low or ""
        elif self.below:
            text = f"{low} and < {self.maximum:g}" if low else f"< {self.maximum:g}"
        elif low and not self.above:
            text = f"from {self.minimum:g} to {_exact(self.maximum)}"
        else:
            text = f"{low} and <= {_exact(self.maximum)}" if low else f"<= {_exact(self.maximum)}"
        return f"{text} ({self.note})" if self.note else text


def _exact(value: float) -> str:
    """``value`` in full: a bound shown rounded would name a value on the wrong side of it."""
    return str(int(value)) if value == int(value) else repr(value)


# What each numeric field allows. Config.validate holds presets, --config files and saved runs to it; the
# command line holds option values to it while parsing (sasrec.argtypes.config_value), the Python API its
# parameters (sasrec.api.Recommender).
LIMITS: dict[str, Limit] = {
    "maxlen": Limit(1, MAX_COUNT),
    "hidden": Limit(1, MAX_COUNT),
    "num_blocks": Limit(0, MAX_BLOCKS),
    "num_heads": Limit(1, MAX_COUNT),
    "ffn_factor": Limit(1, MAX_BLOCKS),
    "dropout": Limit(0, MAX_DROPOUT, note="65535/65536: dropout masks work in steps of 1/65536"),
    "lr": Limit(0, above=True),
    "adam_beta1": Limit(0, 1, below=True),
    "adam_beta2": Limit(0, 1, below=True),
    "batch_size": Limit(1, MAX_COUNT),
    "epochs": Limit(1, MAX_COUNT),  # 0 would test an untrained model as if it were a result
    "l2_emb": Limit(0),
    "negatives": Limit(0, MAX_COUNT),  # whether the loss needs >= 1: LOSS_SPECS
    "eval_every": Limit(1, MAX_COUNT),
    "patience": Limit(0, MAX_COUNT, note="0: never stop early"),
    "max_minutes": Limit(0, note="0: no limit"),
    "eval_negatives": Limit(1, MAX_COUNT),
    "seed": Limit(0, 2**64 - 1),  # torch.manual_seed's range
    "threads": Limit(0, MAX_THREADS, note="0: PyTorch's choice"),
}


# ---------------------------------------------------------------------------------------------- losses


@dataclass(frozen=True)
class LossOption:
    """One option of a loss (``--loss-option KEY=VALUE``, ``loss_options`` in TOML).

    ``kind``: ``bool`` (true/false; 1/0 and their strings are accepted), ``int`` (an integral number: TOML and
    the command line may give ``8192.0``) or ``float``; ``test``/``requirement``: the allowed range of a
    number; ``default``: the loss's own; ``default_text``: how ``--help`` states it, when it depends on more.
    """

    kind: type
    default: Any
    help: str
    test: Callable[[float], bool] = lambda v: True
    requirement: str = ""
    default_text: str | None = None

    def convert(self, loss: str, name: str, value: Any) -> Any:
        """``value`` as ``kind``; ConfigError naming the loss and option otherwise."""
        if self.kind is bool:
            converted = _as_bool(value)
            if converted is None:
                raise ConfigError(f"loss {loss!r}: option {name} must be true or false, got {value!r}")
            return converted
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if self.kind is int:
            if not number or value != int(value) or not self.test(value):
                raise ConfigError(f"loss {loss!r}: option {name} must be an integer {self.requirement}, got {value!r}")
            return int(value)
        if not number or not self.test(value):
            raise ConfigError(f"loss {loss!r}: option {name} must be a number {self.requirement}, got {value!r}")
        return float(value)


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    return None


@dataclass(frozen=True)
class LossSpec:
    """What :class:`Config` knows of a loss of :mod:`sasrec.losses`, without loading torch.

    ``negatives``: the count when ``Config.negatives`` is None; ``needs_negatives``: whether fewer than one is
    refused (sampled-ce: unless ``in_batch``); ``shared``: the ``shared`` option when not given (None: the
    loss's own default).
    """

    negatives: int
    needs_negatives: bool
    options: Mapping[str, LossOption]
    shared: bool | None = None


_SHARED_HELP = "one set of negatives for the whole batch instead of one per position"
LOSS_SPECS: dict[str, LossSpec] = {
    "bce": LossSpec(1, True, {"shared": LossOption(bool, False, _SHARED_HELP)}),
    "ce": LossSpec(
        0,
        False,
        {
            "block_rows": LossOption(
                int, 0, "positions per block of the normaliser (0: automatic)", lambda v: v >= 0, ">= 0"
            )
        },
    ),
    # Shared negatives: 7x faster than per position for sampled-ce. gbce needs per-position ones: shared by the
    # batch it did not learn on Games (full-ranking validation HR@10 0.0007 after 2 epochs vs 0.0192).
    "sampled-ce": LossSpec(
        256,
        True,
        {
            "in_batch": LossOption(bool, False, "the batch's other targets as negatives, with logQ correction"),
            "shared": LossOption(bool, False, _SHARED_HELP, default_text="true unless in_batch"),
        },
        shared=True,
    ),
    "gbce": LossSpec(
        256,
        True,
        {
            "t": LossOption(float, 0.75, "calibration (0: plain BCE)", lambda v: 0 <= v <= 1, "in [0, 1]"),
            "shared": LossOption(bool, False, _SHARED_HELP),
        },
        shared=False,
    ),
}
LOSS_NAMES = tuple(LOSS_SPECS)


def loss_settings(loss: str, negatives: int, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` of ``loss`` converted to their types, after checking the loss's name, its ``negatives``
    count and every option; raises ConfigError naming the first problem. (:func:`sasrec.losses.make_loss`
    builds losses from these values.)"""
    spec = LOSS_SPECS.get(loss)
    if spec is None:
        raise ConfigError(f"unknown loss {loss!r}; choose one of {', '.join(LOSS_SPECS)}")
    if isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 0:
        raise ConfigError(f"negatives must be >= 0, got {negatives!r}")
    unknown = sorted(set(options) - set(spec.options))
    if loss == "ce" and "chunk_size" in unknown:  # its unit changed from items to positions with its name
        raise ConfigError(
            "loss 'ce': option chunk_size (items per chunk) was replaced by block_rows (positions per block; "
            "0, the default, picks it)"
        )
    if unknown:
        raise ConfigError(
            f"loss {loss!r}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(spec.options) or 'none'}"
        )
    values = {name: spec.options[name].convert(loss, name, value) for name, value in options.items()}
    if values.get("in_batch") and values.get("shared"):
        raise ConfigError(f"loss {loss!r}: options in_batch and shared exclude each other; pick one")
    if spec.needs_negatives and negatives < 1 and not values.get("in_batch"):
        alternative = " (or in_batch = true)" if "in_batch" in spec.options else ""
        raise ConfigError(f"loss {loss!r} needs negatives >= 1{alternative}, got {negatives}")
    return values


def loss_help() -> tuple[str, str]:
    """``--help`` texts of ``--negatives`` and ``--loss-option``: the defaults of :data:`LOSS_SPECS`."""
    by_count: dict[int, list[str]] = {}
    for name, spec in LOSS_SPECS.items():
        by_count.setdefault(spec.negatives, []).append(name)
    negatives = ", ".join(f"{n} for {' and '.join(names)}" for n, names in by_count.items())
    kinds = {bool: "true/false", int: "integer", float: "number"}
    options = "; ".join(
        f"{loss}: "
        + ", ".join(
            f"{key} ({kinds[o.kind]}{' ' + o.requirement if o.requirement else ''}, default "
            f"{o.default_text or str(o.default).lower()}): {o.help}"
            for key, o in spec.options.items()
        )
        for loss, spec in LOSS_SPECS.items()
    )
    return negatives, options


# ---------------------------------------------------------------------------------------------- config


@dataclass
class Config:
    """Every setting of a training run. ``None`` marks a default that depends on other fields; see the module
    docstring for the rule of each and :meth:`__post_init__`, which fills them."""

    # data
    dataset: str = "synthetic"  # a name of sasrec.data.registry (file looked up in data_dir) or a file path
    data_dir: str = "data"
    preset: str | None = None  # hyperparameter preset (a dataset name); resolve() defaults it to the dataset's own
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
    ffn_factor: int = 1  # the feed-forward layer's width / hidden (the paper: 1; eSASRec: 4)
    # optimisation: Adam, with the reference's betas (kang205/SASRec's tf.train.AdamOptimizer(beta2=0.98))
    lr: float = 0.001
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    batch_size: int = 128
    epochs: int = 200
    l2_emb: float = 0.0
    loss: str = "bce"
    negatives: int | None = None  # None: LOSS_SPECS[loss].negatives (1 bce, 0 ce, 256 sampled-ce and gbce)
    loss_options: dict[str, float | bool] = field(default_factory=dict)  # the loss's LossOptions
    batching: str = "bucket"  # "random" is the reference's sampler (see sampling.TrainSampler)
    # Scale each batch's mean loss by its share of the epoch's positions, so every position weighs the same
    # whatever batch it lands in (as in the reference's random batches, on average). Length-bucketed
    # batches hold very different numbers of positions; unweighted, a batch of short sequences moves the
    # model as much as one of long ones. None: on unless batching is "random".
    position_weighting: bool | None = None
    # validation and model selection (validation split only): the validator computes the metric at its K
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
    # Matrix products of training in bfloat16 (see sasrec.precision); evaluation always ranks in float32.
    precision: str = "fp32"
    out: str | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        """Fill the defaults that depend on other fields (the table in the module docstring). Values given
        are kept; an unknown loss is left for :meth:`validate` to name."""
        if self.position_weighting is None:
            self.position_weighting = self.batching != "random"
        spec = LOSS_SPECS.get(self.loss) if isinstance(self.loss, str) else None
        if spec is None:
            return
        if self.negatives is None:
            self.negatives = spec.negatives
        options = self.loss_options
        if spec.shared is not None and isinstance(options, dict) and "shared" not in options:
            if not _as_bool(options.get("in_batch", False)):  # in-batch negatives are not drawn at all
                self.loss_options = {**options, "shared": spec.shared}

    def validate(self) -> None:
        """Raise ConfigError naming the first field with a wrong type or value (see :data:`LIMITS`)."""
        for f in dataclasses.fields(self):
            problem = field_problem(f.name, getattr(self, f.name))
            if problem:
                raise ConfigError(f"{f.name} {problem}, got {getattr(self, f.name)!r}")
        loss_settings(self.loss, self.negatives, self.loss_options)
        checks = [
            (
                self.hidden % self.num_heads == 0,
                f"hidden ({self.hidden}) must be divisible by num_heads ({self.num_heads})",
            ),
            (
                self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:"),
                f"device must be cpu, cuda or auto, got {self.device!r}",
            ),
            (
                self.val_protocol in ("sampled", "full"),
                f"val_protocol must be sampled or full, got {self.val_protocol!r}",
            ),
            (
                self.precision in PRECISIONS,
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
            ),
            (self.batching in BATCHINGS, f"batching must be one of {', '.join(BATCHINGS)}, got {self.batching!r}"),
            (
                self.preset is None or self.preset in registry.PRESETS,
                f"preset must be one of {', '.join(registry.PRESETS)}, got {self.preset!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        split_metric(self.metric)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(Config)}
# The Python types each annotation accepts, and their name in errors (annotations are strings here).
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "an integer"),
    "float": ((int, float), "a number"),
    "bool": ((bool,), "true or false"),
    "str": ((str,), "a string"),
    "str | None": ((str, type(None)), "a string"),
    # None only before __post_init__ fills it, or with an unknown loss (validate then names the loss)
    "int | None": ((int, type(None)), "an integer"),
    "bool | None": ((bool, type(None)), "true or false"),
    "dict[str, float | bool]": ((dict,), "a table (a dict in Python) of numbers and true/false"),
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
    if isinstance(value, str) and not value.strip():  # no setting means "nothing"; "" would read as "." for a path
        return "must not be empty"
    if name in LIMITS and value is not None and not LIMITS[name].ok(value):
        return f"must be {LIMITS[name].requirement}"
    return None


def split_metric(metric: str) -> tuple[str, int]:
    """``"NDCG@20"`` -> ``("NDCG", 20)``. Raises ConfigError naming ``--metric`` for a name not computed."""
    name, _, k = metric.partition("@")
    if name not in METRICS or not (k.isascii() and k.isdigit()) or not 1 <= int(k) <= MAX_K:
        raise ConfigError(
            f"--metric {metric!r}: expected NAME@K with NAME one of {', '.join(METRICS)} and K from 1 to "
            f"{MAX_K}, e.g. NDCG@10"
        )
    return name, int(k)


def config_from_dict(values: dict[str, Any], source: str) -> Config:
    """A validated Config from saved values (e.g. a run's ``config.json``); ``source`` names it in errors."""
    unknown = set(values) - FIELDS
    if unknown:
        raise ConfigError(
            f"{source}: unknown keys {', '.join(sorted(unknown))} (written by another version of sasrec?)"
        )
    config = Config(**values)
    try:
        config.validate()
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


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
    # Each value on its own, even one the command line overrides: a bad file is reported, not hidden.
    for name, value in values.items():
        problem = field_problem(name, value)
        if problem:
            raise ConfigError(f"config file {path}: {name} {problem}, got {value!r}")
    return values


def resolve(overrides: dict[str, Any], config_file: str | Path | None = None) -> Config:
    """Build and validate the config: defaults, then the preset's hyperparameters, then ``config_file``, then
    ``overrides`` (None values ignored). The preset is ``preset`` if given, else the dataset's own when
    ``dataset`` is a name of :mod:`sasrec.data.registry`.

    Raises ConfigError naming the first bad value; it starts ``config file PATH:`` when the file's values
    are what makes the config bad (without them, the rest would pass), so that the user knows where to look.
    """
    file_values = load_toml(config_file) if config_file else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return _resolved({**file_values, **given})
    except ConfigError as exc:
        if not file_values:
            raise
        try:
            _resolved(given)
        except ConfigError:
            raise exc from None  # bad without the file too: the file is not (only) to blame
        raise ConfigError(f"config file {config_file}: {exc}") from None


def _resolved(given: dict[str, Any]) -> Config:
    """:func:`resolve` for the values the user set (the ``--config`` file's and the overrides, merged)."""
    for name, value in given.items():  # each on its own first: the merging below reads some of them
        problem = field_problem(name, value) if name in FIELD_TYPES and value is not None else None
        if problem:
            raise ConfigError(f"{name} {problem}, got {value!r}")
    recipe = registry.RECIPES.get(given.get("preset"))
    if recipe and recipe.data_file and "dataset" not in given:
        raise ConfigError(
            f"--preset {recipe.name} is measured on {recipe.data_file}: pass that file with --dataset FILE "
            f"(the {recipe.dataset!r} dataset is another version of the data)"
        )
    dataset = given.get("dataset", recipe.dataset if recipe else Config.dataset)
    preset = given.get("preset") or (dataset if dataset in registry.DATASETS else None)
    preset_values = dict(registry.preset_values(preset)) if preset else {}
    if "loss" in given and given["loss"] != preset_values.get("loss", given["loss"]):
        # A recipe's negatives and loss options belong to its loss: with another loss they would be
        # silently misread (256 per-position negatives for bce) or refused as unknown options.
        preset_values.pop("negatives", None)
        preset_values.pop("loss_options", None)
    if "loss_options" in given and _as_bool(dict(given["loss_options"]).get("in_batch", False)):
        preset_values.pop("negatives", None)  # in-batch negatives are not drawn: no count to record
    values = {**preset_values, **given, "preset": preset}
    if recipe and "dataset" not in given:
        values["dataset"] = recipe.dataset
    config = Config(**values)
    config.validate()
    check_no_ignored_values(given, config)
    config.loss_options = loss_settings(config.loss, config.negatives, config.loss_options)  # typed: 64, not 64.0
    return config


def check_no_ignored_values(given: Mapping[str, Any], config: Config) -> None:
    """Raise ConfigError for a value in ``given`` (what the user set: command line, ``--config`` file, API)
    that ``config``'s loss would ignore: a run must not look as if it used a setting it did not.

    Loss options of another loss are refused by :func:`loss_settings` (``unknown option(s)``); this covers
    ``negatives``, which every loss accepts but ``ce`` and in-batch ``sampled-ce`` never draw.
    """
    negatives = given.get("negatives")
    if negatives is None or negatives == 0:
        return
    if config.loss == "ce":
        raise ConfigError(
            f"--negatives {negatives} does nothing with --loss ce, which draws no negatives (its softmax covers "
            "the whole catalogue); leave --negatives out, or choose --loss bce, sampled-ce or gbce"
        )
    if config.loss == "sampled-ce" and config.loss_options.get("in_batch"):
        raise ConfigError(
            f"--negatives {negatives} does nothing with --loss-option in_batch=true, whose negatives are the "
            "batch's other targets; leave --negatives out, or drop in_batch to sample negatives"
        )


def named_file(dataset: str, data_dir: str | Path) -> Path | None:
    """For a bare file name, its file in ``data_dir`` if it exists: ``NAME`` is ``data_dir/NAME.txt`` (what
    ``sasrec preprocess --name NAME`` writes), ``NAME.txt`` is ``data_dir/NAME.txt``."""
    named = _named_candidate(dataset, data_dir)
    return named if Path(dataset).name == dataset and named.is_file() else None


def _named_candidate(dataset: str, data_dir: str | Path) -> Path:
    return Path(data_dir) / (dataset if Path(dataset).suffix else f"{dataset}.txt")


def dataset_path(config: Config) -> Path | None:
    """The SASRec-format file to train on, or None for the embedded synthetic dataset."""
    if config.dataset == "synthetic":
        return None
    if config.dataset in registry.DATASETS:
        return registry.locate(config.dataset, config.data_dir)
    path = Path(config.dataset)
    if not path.exists():
        named = named_file(config.dataset, config.data_dir)
        if named is not None:
            return named
        raise ConfigError(
            f"dataset {config.dataset!r} is neither a dataset name ({', '.join(registry.NAMES)}), nor a file, "
            f"nor the name of a file {_named_candidate(config.dataset, config.data_dir)} (sasrec preprocess "
            f"--name NAME --out {config.data_dir})"
        )
    return path
