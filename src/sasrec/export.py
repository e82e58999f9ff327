"""Export a run's scoring network to ONNX.

The exported graph maps right-padded histories to the score of every item:

* input ``histories``: ``(B, T)`` int64 internal item ids, right-padded with 0 (the layout of
  :mod:`sasrec.model`), ``B`` dynamic and ``1 <= T <= maxlen`` dynamic. Keep only the most recent ``maxlen``
  items of longer histories.
* output ``scores``: ``(B, num_items + 1)`` float32, ``scores[b, i]`` for internal item ``i``. Column 0 is
  padding and must be ignored (it is never a recommendation).

Internal ids are the dataset file's ids; translate them with the ``NAME.item_map.tsv`` map written by
``sasrec preprocess`` (see :mod:`sasrec.recommend`). The model's ``maxlen`` and ``num_items`` are stored in
the ONNX metadata (``metadata_props``).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
from torch import nn

from sasrec.errors import ConfigError, SASRecError
from sasrec.model import SASRec

FORMATS = ("onnx",)
OPSET = 17


class ScoringNetwork(nn.Module):
    """``(B, T)`` right-padded int64 histories -> ``(B, num_items + 1)`` scores of every item."""

    def __init__(self, model: SASRec):
        super().__init__()
        self.model = model

    def forward(self, histories: torch.Tensor) -> torch.Tensor:
        return self.model.score(self.model.last_hidden(histories))


def export_onnx(model: SASRec, path: str | Path, opset: int = OPSET) -> Path:
    """Write ``model``'s scoring network to ``path`` as ONNX (legacy TorchScript exporter, opset ``opset``).

    Returns the path. Raises SASRecError when the ``onnx`` extra is not installed.
    """
    try:
        import onnx
    except ImportError:
        raise SASRecError("ONNX export needs the onnx package: pip install 'sasrec[onnx]'") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = ScoringNetwork(model).cpu().eval()
    example = torch.ones(2, min(model.maxlen, 3), dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values
        torch.onnx.export(network, (example,), str(path), input_names=["histories"], output_names=["scores"],
                          dynamic_axes={"histories": {0: "batch", 1: "length"}, "scores": {0: "batch"}},
                          opset_version=opset, dynamo=False)
    proto = onnx.load(str(path))
    for key, value in {"maxlen": model.maxlen, "num_items": model.num_items,
                       "input_layout": "right-padded int64 item ids, 0 = padding, length <= maxlen",
                       "output": "scores of items 0..num_items; column 0 is padding, ignore it"}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(proto, str(path))
    return path


# ------------------------------------------------------------------------------------------------- CLI


def export_command(args: argparse.Namespace) -> int:
    """``sasrec export`` (arguments: :mod:`sasrec.cli`)."""
    from sasrec.runs import load_run

    if args.format not in FORMATS:
        raise ConfigError(f"unsupported format {args.format!r}; choose one of {', '.join(FORMATS)}")
    loaded = load_run(args.run, args.checkpoint, "cpu")
    out = Path(args.out) if args.out else loaded.path / "model.onnx"
    export_onnx(loaded.model, out, args.opset)
    print(f"wrote {out}: input histories (B, T<={loaded.model.maxlen}) int64, "
          f"output scores (B, {loaded.model.num_items + 1}) float32")
    return 0
