"""Checkpoints: one ``.safetensors`` file holding weights, optimizer tensors and JSON metadata.

safetensors never unpickles, so loading a stranger's checkpoint cannot run code. Every write goes to a
temporary file in the same directory and is renamed over the target, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from sasrec.atomic import write_file
from sasrec.errors import SASRecError


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write model weights (``model.*``), optimizer state (``optim.*``) and ``meta`` (JSON) atomically."""
    path = Path(path)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = dict(meta)
    if optimizer is not None:
        state = optimizer.state_dict()
        for index, param_state in state["state"].items():
            for key, value in param_state.items():
                tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).cpu().contiguous()
        meta["optimizer_param_groups"] = state["param_groups"]
    for key, value in (extra_tensors or {}).items():
        tensors[f"extra.{key}"] = value.cpu().contiguous()
    blob = save(tensors, metadata={"meta": json.dumps(meta)})
    write_file(path, lambda f: f.write(blob), mode="wb")


def _check_weights(path: Path, model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Raise SASRecError naming the first tensor that ``weights`` lacks, has in excess or shapes otherwise
    than ``model`` (torch's own message spreads this over many lines, after a header that says nothing)."""
    expected = model.state_dict()
    problems = [
        f"it has no tensor {name} (shape {tuple(t.shape)})"
        if name not in weights
        else f"tensor {name} has shape {tuple(weights[name].shape)} where the model of config.json has {tuple(t.shape)}"
        for name, t in expected.items()
        if name not in weights or weights[name].shape != t.shape
    ]
    problems += [f"it has a tensor {name} the model does not" for name in sorted(set(weights) - set(expected))]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SASRecError(
            f"checkpoint {path} does not match the run's config.json: {problems[0]}{more}; was one of them replaced?"
        )


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    check_meta: Callable[[dict[str, Any]], None] | None = None,
    fix: str = "retrain the run",
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Load into ``model``/``optimizer`` (when given); return ``(meta, extra_tensors)``.

    ``check_meta(meta)`` runs before any tensor is loaded (it raises to refuse the checkpoint). ``fix`` ends the
    message when the file is missing or damaged: what the caller's user can do about it.

    Raises:
        SASRecError: ``path`` is missing, damaged, not a sasrec checkpoint, or does not fit ``model``.
    """
    path = Path(path)
    if not path.exists():
        raise SASRecError(f"checkpoint {path} not found; {fix}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["meta"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, KeyError, ValueError, TypeError, SafetensorError) as exc:
        raise SASRecError(f"checkpoint {path} is damaged or not a SASRec checkpoint ({exc}); {fix}") from None
    if not isinstance(meta, dict):
        raise SASRecError(f"checkpoint {path} is damaged: its metadata is not a JSON object; {fix}")
    if check_meta is not None:
        check_meta(meta)
    try:
        if model is not None:
            weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
            _check_weights(path, model, weights)
            model.load_state_dict(weights)
        if optimizer is not None:
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in tensors.items():
                if key.startswith("optim."):
                    _, index, name = key.split(".", 2)
                    state.setdefault(int(index), {})[name] = value
            optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_param_groups"]})
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise SASRecError(
            f"checkpoint {path} does not match the run's config.json ({first}); "
            "restore the config.json it was trained with, or retrain"
        ) from None
    extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
    return meta, extra
