"""Config: defaults that depend on other fields are filled in one place whatever builds the Config, every
field (loss options included) is checked by Config.validate, and the optimizer's settings are fields."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sasrec
from sasrec import cli, losses
from sasrec.config import LOSS_SPECS, Config, config_from_dict, loss_settings, resolve
from sasrec.data.synthetic import make_synthetic
from sasrec.errors import ConfigError
from sasrec.runs import RunDir
from sasrec.train import Trainer


@pytest.mark.parametrize(
    "given, negatives, options, weighting",
    [
        ({}, 1, {}, True),  # bce: the paper's one negative
        ({"loss": "ce"}, 0, {}, True),  # ce draws none
        ({"loss": "sampled-ce"}, 256, {"shared": True}, True),
        ({"loss": "sampled-ce", "loss_options": {"in_batch": True}}, 256, {"in_batch": True}, True),
        ({"loss": "gbce", "loss_options": {"t": 0.5}}, 256, {"t": 0.5, "shared": False}, True),
        ({"loss": "gbce", "negatives": 8, "loss_options": {"shared": True}}, 8, {"shared": True}, True),
        ({"batching": "random"}, 1, {}, False),
        ({"batching": "random", "position_weighting": True}, 1, {}, True),
    ],
)
def test_dependent_defaults_are_the_same_however_the_config_is_built(given, negatives, options, weighting) -> None:
    for config in (Config(**given), resolve(given)):
        assert (config.negatives, config.loss_options, config.position_weighting) == (negatives, options, weighting)


def test_loss_option_table_matches_the_losses() -> None:
    """sasrec.config.LOSS_SPECS states each loss's options and defaults; the classes must agree with it."""
    assert list(LOSS_SPECS) == list(losses.LOSSES)
    for name, spec in LOSS_SPECS.items():
        parameters = inspect.signature(losses.LOSSES[name].__init__).parameters
        defaults = {k: p.default for k, p in parameters.items() if k not in ("self", "num_negatives")}
        assert defaults == {k: option.default for k, option in spec.options.items()}
        loss = losses.make_loss(name, spec.negatives)
        assert loss.num_negatives == spec.negatives


@pytest.mark.parametrize(
    "loss, options, message",
    [
        ("ce", {"block_rows": 2.5}, "option block_rows must be an integer >= 0, got 2.5"),
        ("ce", {"block_rows": -1}, "option block_rows must be an integer >= 0"),
        ("ce", {"chunk_size": 64}, "option chunk_size (items per chunk) was replaced by block_rows"),
        ("gbce", {"t": 1.5}, "option t must be a number in [0, 1], got 1.5"),
        ("gbce", {"t": True}, "option t must be a number in [0, 1], got True"),
        ("bce", {"shared": "maybe"}, "option shared must be true or false"),
        ("sampled-ce", {"in_batch": True, "shared": True}, "in_batch and shared exclude each other"),
        ("bce", {"t": 0.5}, "unknown option(s) t; valid options: shared"),
    ],
)
def test_loss_options_are_checked_by_validate(loss, options, message) -> None:
    with pytest.raises(ConfigError) as raised:
        Config(loss=loss, loss_options=options).validate()
    assert message in str(raised.value)


def test_loss_options_are_converted_to_their_types() -> None:
    values = loss_settings("sampled-ce", 4, {"in_batch": "false", "shared": 1.0})
    assert values == {"in_batch": False, "shared": True} and type(values["shared"]) is bool
    assert loss_settings("ce", 0, {"block_rows": 64.0}) == {"block_rows": 64}  # TOML may give a float
    assert losses.make_loss("ce", 0, block_rows=64.0).block_rows == 64


def test_validation_needs_no_torch() -> None:
    """Checking a config (the CLI does it before any work) loads neither torch nor the losses."""
    code = "import sys; from sasrec.config import resolve; resolve({'loss': 'gbce'}); print('torch' in sys.modules)"
    src = str(Path(sasrec.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_adam_betas_are_config_fields(tmp_path: Path) -> None:
    data = make_synthetic(num_users=30, num_items=40, seed=1)
    for given, betas in (({}, (0.9, 0.98)), ({"adam_beta1": 0.8, "adam_beta2": 0.999}, (0.8, 0.999))):
        config = resolve({"hidden": 8, "maxlen": 10, "eval_negatives": 5, "quiet": True, **given})
        trainer = Trainer(config, RunDir(tmp_path / "run"), data)
        assert trainer.optimizer.param_groups[0]["betas"] == betas
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="adam_beta2 must be >= 0 and < 1"):
        resolve({"adam_beta2": 1.0})


def test_a_run_saved_before_the_optimizer_fields_loads_with_the_reference_betas() -> None:
    saved = Config().to_dict()
    del saved["adam_beta1"], saved["adam_beta2"]
    config = config_from_dict(saved, "config.json")
    assert (config.adam_beta1, config.adam_beta2) == (0.9, 0.98)


def test_help_states_the_dependent_defaults() -> None:
    text = " ".join(cli.build_parser(only="train").format_help().split())
    assert "(default: 1 for bce, 0 for ce, 256 for sampled-ce and gbce)" in text
    assert "shared (true/false, default true unless in_batch)" in text
    assert "t (number in [0, 1], default 0.75)" in text
    assert "default: on unless --batching random" in text
    assert "--adam-beta2" in text and "default 0.98" in text


def test_trainer_uses_the_resolved_negatives(tmp_path: Path) -> None:
    data = make_synthetic(num_users=30, num_items=400, seed=1)
    config = resolve({"loss": "gbce", "hidden": 8, "maxlen": 10, "eval_negatives": 5, "quiet": True})
    trainer = Trainer(config, RunDir(tmp_path / "run"), data)
    assert (trainer.loss_fn.num_negatives, trainer.loss_fn.shared, trainer.loss_fn.t) == (256, False, 0.75)
    assert isinstance(trainer.loss_fn, torch.nn.Module)


def test_a_bad_value_of_a_config_file_names_the_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "run.toml"
    path.write_text("epochs = 0\n")
    assert cli.main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"error: config file {path}: epochs must be from 1 to 2147483647, got 0\n"
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="config file .*epochs must be"):  # even when the command line
        resolve({"epochs": 3}, path)  # overrides it: the file is bad on its own


def test_a_problem_not_due_to_the_config_file_does_not_name_it(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("hidden = 64\n")
    with pytest.raises(ConfigError) as raised:
        resolve({"num_heads": 3}, path)  # the default hidden (50) is not divisible by 3 either
    assert str(raised.value) == "hidden (64) must be divisible by num_heads (3)"
    path.write_text("num_heads = 3\n")
    with pytest.raises(ConfigError, match=rf"^config file {path}: hidden \(50\) must be divisible by num_heads \(3\)$"):
        resolve({}, path)


def test_a_bad_config_file_value_is_refused_even_when_the_command_line_overrides_it(tmp_path) -> None:
    from sasrec.config import resolve
    from sasrec.errors import ConfigError

    bad = tmp_path / "bad.toml"
    for line, name in (("epochs = 0", "epochs"), ("hidden = 8.5", "hidden")):
        bad.write_text(line + "\n")
        with pytest.raises(ConfigError, match=f"config file {bad}: {name} "):
            resolve({"epochs": 1, "hidden": 8}, config_file=bad)
