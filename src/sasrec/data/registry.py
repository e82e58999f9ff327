"""The named datasets (``--dataset ml-1m``, ``sasrec download games``): everything known about each, in one record.

A :class:`Dataset` holds where the raw file comes from and its checksum (``sasrec download``), the raw format
and the output name (``sasrec preprocess --dataset``), the SASRec-format file names looked up in ``--data-dir``
(``sasrec train --dataset NAME``), the sha256 of the paper's own file where it is known
(``scripts/reproduce.py``) and the paper's hyperparameters for it (the ``--preset`` of the same name).
Nothing else in the package lists datasets: add one here and every command knows it.

Checksums of raw files: only ``ml-1m`` is pinned. Its sha256 and size are the ones recorded by TensorFlow
Datasets (``tensorflow_datasets/url_checksums/movielens.txt``), which computes them from the downloaded file;
the file's MD5 ``c4d9eecfca2ab87c1945afe126590906`` (published by GroupLens as ``ml-1m.zip.md5``) agrees with
several independent projects. The Amazon 2014 and Steam files are not pinned (``None``): no trustworthy
published hash was found, so ``sasrec download`` prints their sha256 for you to record.

This module imports nothing heavy (no torch, no numpy): the command line reads it before parsing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from sasrec.errors import ConfigError


@dataclass(frozen=True)
class Source:
    """Where a dataset's raw file comes from.

    Attributes:
        url: public download URL.
        sha256: expected sha256 of the downloaded file, or None when not pinned.
        size: expected size in bytes, or None.
        member: for a zip archive, the member holding the interactions (extracted next to the archive).
        raw_file: path of the raw interaction file relative to the download directory (``--raw-dir``).
    """

    url: str
    sha256: str | None
    size: int | None
    member: str | None
    raw_file: str

    @property
    def filename(self) -> str:
        """The downloaded file's name (the URL's last part)."""
        return Path(urlsplit(self.url).path).name


@dataclass(frozen=True)
class Dataset:
    """One named dataset.

    Attributes:
        name: the name on the command line (``--dataset``, ``--preset``, ``sasrec download NAME``).
        description: one line for humans.
        files: SASRec-format file names looked up in ``--data-dir``, in order; the first that exists is used.
            Empty for the embedded synthetic dataset.
        output_name: the ``NAME`` of what ``sasrec preprocess --dataset`` writes (``NAME.txt``, id maps,
            stats): the spelling of kang205/SASRec's ``data/`` folder. One of ``files`` once suffixed ``.txt``.
        raw_format: the :mod:`sasrec.data.readers` format of the raw file, or None (nothing to preprocess).
        source: the public raw file (:class:`Source`), or None when it cannot be downloaded.
        paper_file, paper_sha256: the file of kang205/SASRec's ``data/`` folder and its sha256, where it is
            known (``shared/data/PROVENANCE.md``); ``scripts/reproduce.py`` checks copies against it.
        hyperparameters: :class:`sasrec.config.Config` values of the paper for this dataset (Sec. IV-C),
            applied by ``resolve`` when this dataset is the run's preset.
    """

    name: str
    description: str
    files: tuple[str, ...]
    output_name: str | None
    raw_format: str | None
    source: Source | None
    paper_file: str | None
    paper_sha256: str | None
    hyperparameters: Mapping[str, Any]


_AMAZON_2014 = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
# The paper's settings shared by every dataset: d = 50, 2 blocks, 1 head, batch 128, Adam lr 0.001, 200 epochs.
_PAPER = {"hidden": 50, "num_blocks": 2, "num_heads": 1, "batch_size": 128, "lr": 0.001, "epochs": 200}
# Sparse datasets: shorter sequences, more dropout (the paper's Sec. IV-C).
_SPARSE = MappingProxyType({**_PAPER, "maxlen": 50, "dropout": 0.5})


def _amazon(name: str, category: str, output_name: str, files: tuple[str, ...], paper_sha256: str | None) -> Dataset:
    """An Amazon 2014 review category (the same source, format and preset for each)."""
    raw = f"reviews_{category}.json.gz"
    return Dataset(
        name=name,
        description=f"Amazon 2014 {raw}",
        files=files,
        output_name=output_name,
        raw_format="amazon-json",
        source=Source(_AMAZON_2014 + raw, sha256=None, size=None, member=None, raw_file=raw),
        paper_file=f"{output_name}.txt",
        paper_sha256=paper_sha256,
        hyperparameters=_SPARSE,
    )


_ALL = (
    Dataset(
        name="ml-1m",
        description="MovieLens-1M ratings.dat",
        files=("ml-1m.txt",),
        output_name="ml-1m",
        raw_format="movielens-dat",
        source=Source(
            "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
            sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            size=5917549,
            member="ml-1m/ratings.dat",
            raw_file="ml-1m/ratings.dat",
        ),
        paper_file="ml-1m.txt",
        paper_sha256="b725f3acb3986fe3130bffd1e77a74d182a1f51799567a236dbd60270f95b0a2",
        hyperparameters=MappingProxyType({**_PAPER, "maxlen": 200, "dropout": 0.2}),
    ),
    # Amazon Games is "Video" in kang205/SASRec.
    _amazon(
        "games",
        category="Video_Games",
        output_name="Video",
        files=("games.txt", "Video.txt"),
        paper_sha256="b7376fe24430743f411dc7f567285657b2adb3f74361cc7ba0aee94f3024b651",
    ),
    _amazon("beauty", category="Beauty", output_name="Beauty", files=("beauty.txt", "Beauty.txt"), paper_sha256=None),
    Dataset(
        name="steam",
        description="UCSD steam_reviews.json.gz",
        files=("steam.txt", "Steam.txt"),
        output_name="Steam",
        raw_format="steam",
        source=Source(
            "https://cseweb.ucsd.edu/~wckang/steam_reviews.json.gz",
            sha256=None,
            size=None,
            member=None,
            raw_file="steam_reviews.json.gz",
        ),
        paper_file="Steam.txt",
        paper_sha256=None,
        hyperparameters=_SPARSE,
    ),
    # The embedded default (sasrec.data.synthetic): small, so `python train.py` ends in well under a minute.
    Dataset(
        name="synthetic",
        description="simulated sessions generated from a seed (sasrec.data.synthetic)",
        files=(),
        output_name=None,
        raw_format=None,
        source=None,
        paper_file=None,
        paper_sha256=None,
        hyperparameters=MappingProxyType({**_PAPER, "maxlen": 50, "dropout": 0.2, "epochs": 30}),
    ),
)
DATASETS: dict[str, Dataset] = {d.name: d for d in _ALL}
NAMES = tuple(DATASETS)


@dataclass(frozen=True)
class Recipe:
    """A published training recipe for one dataset, applied as ``--preset NAME`` (over the dataset's paper
    hyperparameters; options given on the command line still win).

    Attributes:
        name: the ``--preset`` name. dataset: the dataset it is for (trained when ``--dataset`` is not given).
        description: one line for humans. source: who published it, and where.
        hyperparameters: :class:`sasrec.config.Config` values that differ from the dataset's paper preset.
        data_file: the data version its numbers are on, when that is not ``dataset``'s own file: such a
            recipe needs ``--dataset FILE`` (it would otherwise train another version of the data).
    """

    name: str
    dataset: str
    description: str
    source: str
    hyperparameters: Mapping[str, Any]
    data_file: str | None = None


# The Scalable-SASRec paper's settings for Beauty (d 64, dropout 0.6, maxlen 200) with a full softmax.
_BEAUTY_CE = MappingProxyType(
    {
        "loss": "ce",
        "hidden": 64,
        "dropout": 0.6,
        "maxlen": 200,
        "adam_beta2": 0.999,
        "val_protocol": "full",
        "metric": "NDCG@10",
        "eval_every": 2,
        "patience": 10,
    }
)
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "ml-1m-sasrec-plus",
            "ml-1m",
            "SASRec+: full softmax cross-entropy, d = 64, dropout 0.1, selection and early stopping on full ranking",
            "Klenitskiy & Vasilev, RecSys 2023 (antklen/sasrec-bert4rec-recsys23): full-ranking HR@10 0.3152, "
            "NDCG@10 0.1821 with this full-softmax loss (0.3159 / 0.1857 with 3,000 sampled negatives)",
            MappingProxyType(
                {
                    "loss": "ce",
                    "hidden": 64,
                    "dropout": 0.1,
                    "adam_beta2": 0.999,  # torch.optim.Adam's default, which the recipe's code uses
                    "val_protocol": "full",
                    "metric": "NDCG@10",
                    "patience": 10,
                }
            ),
        ),
        Recipe(
            "ml-1m-best",
            "ml-1m",
            "SASRec+ (full softmax cross-entropy, d = 64, dropout 0.1) with early stopping after 20 validations "
            "instead of 10: patience 10 stopped each of 3 seeds before its best validation epoch (best epochs "
            "63, 67, 99 -> 104, 89, 143; mean validation NDCG@10 0.1883 -> 0.1902)",
            "our best full-ranking MovieLens-1M row (docs/results.md, 'Recipe search on validation'): test HR@10 "
            "0.3123, NDCG@10 0.1808 (3 seeds); the published SASRec+ full-softmax result is 0.3152 / 0.1821 "
            "(Klenitskiy & Vasilev, 2023)",
            MappingProxyType(
                {
                    "loss": "ce",
                    "hidden": 64,
                    "dropout": 0.1,
                    "adam_beta2": 0.999,
                    "val_protocol": "full",
                    "metric": "NDCG@10",
                    "patience": 20,
                }
            ),
        ),
        Recipe(
            "games-gsasrec",
            "games",
            "gSASRec's loss: gbce with 256 negatives per position (t = 0.75), selection on full ranking",
            "Petrov & Macdonald, RecSys 2023 (asash/gSASRec-pytorch); on Games our best full-ranking row "
            "(test HR@10 0.1153, NDCG@10 0.0624, one seed; no published Games number)",
            MappingProxyType(
                {
                    "loss": "gbce",
                    "negatives": 256,
                    "val_protocol": "full",
                    "metric": "NDCG@10",
                    "eval_every": 2,  # a full-ranking validation of 30,901 users costs a third of an epoch
                    "patience": 8,
                }
            ),
        ),
        Recipe(
            "beauty-sampled-ce",
            "beauty",
            "softmax over 3,000 uniform negatives shared by the batch (SASRec+'s sampled variant), selection on "
            "full ranking; its numbers are on BERT4Rec's Beauty file: pass it with --dataset",
            "Klenitskiy & Vasilev, RecSys 2023 (antklen/sasrec-bert4rec-recsys23): on BERT4Rec's Beauty file "
            "HR@10 0.0533, NDCG@10 0.0327; ours 0.0512 / 0.0281 (one seed)",
            MappingProxyType(
                {
                    "loss": "sampled-ce",
                    "negatives": 3000,
                    "loss_options": MappingProxyType({"shared": True}),
                    "val_protocol": "full",
                    "metric": "NDCG@10",
                    "eval_every": 2,
                    "patience": 8,
                }
            ),
            data_file="BERT4Rec's Beauty file (Beauty_BERT4Rec.txt in the shared data)",
        ),
        Recipe(
            "beauty-s3rec-ce",
            "beauty",
            "full softmax cross-entropy, d = 64, dropout 0.6, maxlen 200, selection on full ranking; its numbers "
            "are on S3-Rec's 5-core Beauty file: pass it with --dataset",
            "Mezentsev et al., 2024 (AIRI-Institute/Scalable-SASRec): SASRec with cross-entropy on this file, "
            "full-ranking HR@10 0.0935, NDCG@10 0.0544 (their batch 1024, patience 50); ours, with the paper's "
            "batch 128 and patience 10: 0.0972 / 0.0577 (3 seeds)",
            _BEAUTY_CE,
            data_file="S3-Rec's 5-core Beauty file (Beauty_S3Rec_5core.txt, converted with "
            "`sasrec preprocess --format per-user --min-count 1`)",
        ),
        Recipe(
            "beauty-bert4rec-ce",
            "beauty",
            "beauty-s3rec-ce's settings (full softmax cross-entropy, d = 64, dropout 0.6, maxlen 200) on "
            "BERT4Rec's Beauty file: pass it with --dataset",
            "RecTools SASRec with softmax on this file (blondered/bert4rec_repro): full-ranking HR@10 0.0595, "
            "NDCG@10 0.0359; SASRec+ 0.0533 / 0.0327 (Klenitskiy & Vasilev, 2023); ours 0.0577 / 0.0342 (one seed)",
            _BEAUTY_CE,
            data_file="BERT4Rec's Beauty file (Beauty_BERT4Rec.txt in the shared data)",
        ),
    )
}
PRESETS = (*NAMES, *RECIPES)  # what --preset accepts


def preset_values(name: str) -> Mapping[str, Any]:
    """The Config values of preset ``name``: a dataset's paper hyperparameters, or a recipe's over its
    dataset's. Raises ConfigError listing the presets for an unknown name."""
    if name in RECIPES:
        recipe = RECIPES[name]
        values = {**DATASETS[recipe.dataset].hyperparameters, **recipe.hyperparameters}
        return {k: dict(v) if isinstance(v, Mapping) else v for k, v in values.items()}  # a table: a fresh dict
    if name in DATASETS:
        return DATASETS[name].hyperparameters
    raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")


def get(name: str) -> Dataset:
    """The dataset called ``name``; ConfigError listing the names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


def with_source() -> list[str]:
    """Names of the datasets ``sasrec download`` can fetch (those with a :class:`Source`)."""
    return [name for name, d in DATASETS.items() if d.source is not None]


def with_raw_format() -> list[str]:
    """Names of the datasets ``sasrec preprocess --dataset`` knows (those with a raw format)."""
    return [name for name, d in DATASETS.items() if d.raw_format is not None]


def locate(name: str, data_dir: str | Path) -> Path:
    """The first of dataset ``name``'s :attr:`Dataset.files` that exists in ``data_dir``.

    Raises:
        ConfigError: none exists; the message says how to make one.
    """
    dataset = get(name)
    for file in dataset.files:
        candidate = Path(data_dir) / file
        if candidate.exists():
            return candidate
    hint = (
        f"Preprocess it with `sasrec preprocess --dataset {name} --input RAW --out {data_dir}` (or "
        f"`sasrec download {name} --preprocess --out {data_dir}`), or pass --data-dir"
        if dataset.raw_format
        else "pass --data-dir"
    )
    raise ConfigError(f"dataset {name!r}: none of {', '.join(dataset.files)} found in {str(data_dir)!r}. {hint}")
