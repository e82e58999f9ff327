"""The dataset registry is the one list of named datasets: every command and script reads it, and what one
part writes under a name, another finds under it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
from helpers import FIXTURES, REPO

from sasrec import argtypes, cli
from sasrec.config import FIELDS, Config, dataset_path, resolve
from sasrec.data import download, preprocess, registry
from sasrec.errors import ConfigError


def _choices(parser: argparse.ArgumentParser, dest: str) -> list[str]:
    return next(list(a.choices) for a in parser._actions if a.dest == dest)


def test_every_command_offers_the_registry_names() -> None:
    names = list(registry.DATASETS)
    assert names == ["ml-1m", "games", "beauty", "steam", "synthetic"]
    assert _choices(cli.build_parser(only="train"), "preset") == [*names, *registry.RECIPES]
    assert _choices(cli.build_parser(only="preprocess"), "dataset") == registry.with_raw_format()
    assert _choices(cli.build_parser(only="download"), "dataset") == registry.with_source()
    for name in names:
        assert argtypes.dataset(name) == name
    assert set(registry.with_source()) == set(registry.with_raw_format()) == set(names) - {"synthetic"}


@pytest.mark.parametrize("name", list(registry.DATASETS))
def test_each_record_is_complete(name: str) -> None:
    dataset = registry.DATASETS[name]
    assert dataset.name == name and dataset.description
    assert set(dataset.hyperparameters) <= FIELDS
    config = resolve({"dataset": name})
    assert config.preset == name
    assert {k: getattr(config, k) for k in dataset.hyperparameters} == dict(dataset.hyperparameters)
    if dataset.raw_format is not None:
        # what `sasrec preprocess --dataset NAME` writes is a file `train --dataset NAME` looks for
        assert f"{dataset.output_name}.txt" in dataset.files
        assert dataset.source is not None and dataset.source.raw_file
    if dataset.paper_sha256 is not None:
        assert dataset.paper_file in dataset.files and len(dataset.paper_sha256) == 64


def test_the_paper_hyperparameters() -> None:
    ml1m, games = resolve({"preset": "ml-1m"}), resolve({"preset": "games"})
    assert (ml1m.maxlen, ml1m.dropout, games.maxlen, games.dropout) == (200, 0.2, 50, 0.5)
    for config in (ml1m, games):
        assert (config.hidden, config.num_blocks, config.num_heads, config.batch_size, config.lr, config.epochs) == (
            50,
            2,
            1,
            128,
            0.001,
            200,
        )
    assert resolve({}).epochs == 30  # the embedded synthetic dataset's own preset


def test_preprocessed_output_is_found_by_name(tmp_path: Path, capsys) -> None:
    """preprocess --dataset steam writes Steam.txt; train --dataset steam --data-dir finds it there."""
    out = tmp_path / "data"
    argv = [
        "preprocess",
        "--dataset",
        "steam",
        "--input",
        str(FIXTURES / "steam_reviews_sample.json"),
        "--min-count",
        "1",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    assert dataset_path(Config(dataset="steam", data_dir=str(out))) == out / "Steam.txt"


def test_a_missing_file_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        dataset_path(Config(dataset="games", data_dir=str(tmp_path)))
    message = str(raised.value)
    assert "none of games.txt, Video.txt found" in message
    assert f"sasrec preprocess --dataset games --input RAW --out {tmp_path}" in message
    with pytest.raises(ConfigError, match="unknown dataset 'nope'; choose one of ml-1m, games"):
        registry.get("nope")


def test_download_and_preprocess_read_the_registry() -> None:
    source = registry.DATASETS["ml-1m"].source
    assert download.get_source("ml-1m") is source
    assert download.raw_path("ml-1m", "raw") == Path("raw/ml-1m/ratings.dat")
    assert not hasattr(download, "SOURCES") and not hasattr(preprocess, "PRESETS")


def test_reproduce_checks_the_registry_hashes(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    monkeypatch.setattr(sys, "argv", ["reproduce.py"])
    import reproduce

    assert reproduce.PAPER_SHA256 == {
        "ml-1m.txt": "b725f3acb3986fe3130bffd1e77a74d182a1f51799567a236dbd60270f95b0a2",
        "Video.txt": "b7376fe24430743f411dc7f567285657b2adb3f74361cc7ba0aee94f3024b651",
    }


def test_a_recipe_preset_applies_over_its_datasets_paper_values_and_the_command_line_wins() -> None:
    from sasrec.config import resolve
    from sasrec.data import registry

    config = resolve({"preset": "ml-1m-sasrec-plus"})
    assert (config.dataset, config.maxlen) == ("ml-1m", 200)  # the dataset and its paper values
    assert (config.loss, config.hidden, config.dropout, config.adam_beta2) == ("ce", 64, 0.1, 0.999)
    assert (config.val_protocol, config.metric, config.patience, config.negatives) == ("full", "NDCG@10", 10, 0)
    mine = resolve({"preset": "ml-1m-sasrec-plus", "hidden": 128, "loss": "bce", "dataset": "mine.txt"})
    assert (mine.hidden, mine.loss, mine.negatives, mine.dataset) == (128, "bce", 1, "mine.txt")
    games = resolve({"preset": "games-gsasrec"})
    assert (games.dataset, games.maxlen, games.dropout) == ("games", 50, 0.5)
    assert (games.loss, games.negatives, games.loss_options, games.val_protocol) == (
        "gbce",
        256,
        {"shared": False},
        "full",
    )
    beauty = resolve({"preset": "beauty-sampled-ce", "dataset": "Beauty_BERT4Rec.txt"})
    assert (beauty.loss, beauty.negatives, beauty.loss_options) == ("sampled-ce", 3000, {"shared": True})
    beauty.loss_options["shared"] = False  # a run's own copy: the recipe is unchanged
    assert resolve({"preset": "beauty-sampled-ce", "dataset": "b.txt"}).loss_options == {"shared": True}
    # Another loss drops the recipe's negatives and loss options instead of misreading or refusing them.
    assert (lambda c: (c.loss, c.negatives, c.loss_options))(resolve({"preset": "games-gsasrec", "loss": "bce"})) == (
        "bce",
        1,
        {},
    )
    assert resolve({"preset": "beauty-sampled-ce", "loss": "ce", "dataset": "b.txt"}).negatives == 0  # was: refused
    in_batch = resolve({"preset": "beauty-sampled-ce", "loss_options": {"in_batch": True}, "dataset": "b.txt"})
    assert in_batch.negatives == 256 and in_batch.loss_options == {"in_batch": True}  # no 3,000 left on record
    s3rec = resolve({"preset": "beauty-s3rec-ce", "dataset": "beauty_s3rec.txt"})
    assert (s3rec.loss, s3rec.hidden, s3rec.dropout, s3rec.maxlen, s3rec.val_protocol) == ("ce", 64, 0.6, 200, "full")
    bert4rec = resolve({"preset": "beauty-bert4rec-ce", "dataset": "beauty_s3rec.txt"})
    assert bert4rec.to_dict() == {**s3rec.to_dict(), "preset": "beauty-bert4rec-ce"}
    best = resolve({"preset": "ml-1m-best"})
    plus = resolve({"preset": "ml-1m-sasrec-plus"})
    assert (best.patience, plus.patience) == (20, 10)
    assert {**best.to_dict(), "patience": 10, "preset": ""} == {**plus.to_dict(), "preset": ""}
    # A recipe measured on another version of its dataset's data needs the file: kang205's Beauty is not it.
    for name in ("beauty-sampled-ce", "beauty-s3rec-ce", "beauty-bert4rec-ce"):
        with pytest.raises(ConfigError, match=f"--preset {name} is measured on .*: pass that file with --dataset"):
            resolve({"preset": name})
    for recipe in registry.RECIPES.values():
        assert recipe.dataset in registry.DATASETS and recipe.source
        assert set(recipe.hyperparameters) <= {f.name for f in __import__("dataclasses").fields(type(config))}
