"""Shared test helpers: where fixtures and the (optional) real datasets are, and a tiny run directory.

Test modules import from here, never from each other: a test module is collected on its own and its names
are not an interface.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sasrec.config import Config
from sasrec.data.dataset import Sequences, file_sha256, write_sasrec_file
from sasrec.model import SASRec
from sasrec.runs import write_run

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SASREC_SHARED_DATA") or REPO / ".." / "shared" / "data")


def shared_file(name: str) -> Path:
    """A file of the shared datasets, or skip the test saying where it was looked for."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not present (set SASREC_SHARED_DATA to the shared data directory)")
    return path


# ------------------------------------------------------------------- a tiny run directory (recommend, serve, export)

NUM_ITEMS, MAXLEN = 20, 10
ITEM_IDS = [f"m{100 + i}" for i in range(1, NUM_ITEMS)] + ["tab\there"]  # the last needs unescaping
USER_IDS = ["alice", "bob", "carol", "dave", "erin", "frank"]


def tiny_sequences(seed: int = 0) -> Sequences:
    """Six users of 12..15 distinct items each, every item 1..NUM_ITEMS used."""
    rng = np.random.default_rng(seed)
    seqs = [list(rng.permutation(NUM_ITEMS)[: 12 + u % 4] + 1) for u in range(len(USER_IDS))]
    seqs[0] = list(range(1, NUM_ITEMS + 1))[:15]
    seqs[1] = list(range(NUM_ITEMS, 0, -1))[:15]
    return Sequences.from_lists(seqs, NUM_ITEMS)


def write_map(path: Path, ids: list[str]) -> None:
    """An id map as ``sasrec preprocess`` writes it (header, ``new_id<TAB>original_id``, escaped tabs)."""
    escaped = [i.replace("\\", "\\\\").replace("\t", "\\t") for i in ids]
    path.write_text("new_id\toriginal_id\n" + "".join(f"{n}\t{v}\n" for n, v in enumerate(escaped, start=1)))


def make_run(root: Path, maps: bool = True, seed: int = 0, **config: object) -> Path:
    """A run directory in ``root/run`` over ``root/data/tiny.txt`` (+ id maps unless ``maps=False``), with a
    randomly initialised model (seeded by ``seed``): built in milliseconds, no training."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    data_file = data_dir / "tiny.txt"
    write_sasrec_file(tiny_sequences(), data_file)
    if maps:
        write_map(data_dir / "tiny.item_map.tsv", ITEM_IDS)
        write_map(data_dir / "tiny.user_map.tsv", USER_IDS)
    cfg = Config(dataset=str(data_file), maxlen=MAXLEN, hidden=8, num_blocks=2, num_heads=2, dropout=0.0, **config)
    torch.manual_seed(seed)
    model = SASRec(
        NUM_ITEMS,
        maxlen=cfg.maxlen,
        hidden=cfg.hidden,
        num_blocks=cfg.num_blocks,
        num_heads=cfg.num_heads,
        dropout=cfg.dropout,
    )
    return write_run(root / "run", cfg, model, f"sha256:{file_sha256(data_file)}").path
