"""Reading a run directory back: its config, its dataset (checked against the fingerprint) and a model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from sasrec.checkpoint import load_checkpoint
from sasrec.config import Config
from sasrec.data.dataset import Sequences
from sasrec.errors import SASRecError
from sasrec.model import SASRec


@dataclass
class Run:
    path: Path
    config: Config
    model: SASRec
    meta: dict


def load_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise SASRecError(f"{run_dir} is not a run directory (no config.json); train one with `sasrec train`")
    return Config(**json.loads(path.read_text()))


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> Run:
    """The run's config and its ``best`` (or ``last``) model, in eval mode on ``device``."""
    from sasrec.train import build_model, pick_device

    run_dir = Path(run_dir)
    config = load_config(run_dir)
    meta_probe, _ = load_checkpoint(run_dir / f"{checkpoint}.safetensors")
    num_items = meta_probe.get("num_items")
    if num_items is None:
        raise SASRecError(f"{run_dir}/{checkpoint}.safetensors has no num_items; was it written by sasrec?")
    model = build_model(config, num_items)
    meta, _ = load_checkpoint(run_dir / f"{checkpoint}.safetensors", model)
    model.to(pick_device(device)).eval()
    return Run(run_dir, config, model, meta)


def load_run_data(run: Run) -> Sequences:
    """The run's dataset, refusing one whose fingerprint differs from the one it was trained on."""
    from sasrec.train import load_dataset

    data, fingerprint = load_dataset(run.config)
    saved = json.loads((run.path / "fingerprint.json").read_text()).get("dataset")
    if saved and saved != fingerprint:
        raise SASRecError(f"the dataset {run.config.dataset!r} changed since {run.path} was trained "
                          f"({fingerprint} != {saved})")
    return data


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
