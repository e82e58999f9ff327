"""Learning-curve figures from a run's ``log.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402


def read_log(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_learning_curve(log_path: str | Path, out_path: str | Path) -> None:
    """Validation HR@10 and NDCG@10 per evaluated epoch (left) and training loss per epoch (right)."""
    records = read_log(log_path)
    evaluated = [r for r in records if "valid" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key in ("HR@10", "NDCG@10"):
        left.plot([r["epoch"] for r in evaluated], [r["valid"].get(key) for r in evaluated], label=key)
    left.set(xlabel="epoch", ylabel="validation", title="validation metrics")
    left.legend()
    left.grid(alpha=0.3)
    right.plot([r["epoch"] for r in records], [r["loss"] for r in records], color="tab:red")
    right.set(xlabel="epoch", ylabel="loss", title="training loss")
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
