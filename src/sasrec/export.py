"""Export a run's scoring network to ONNX.

The exported graph maps histories to the score of every item:

* input ``histories``: ``(B, T)`` int64 internal item ids, ``B`` and ``T >= 0`` dynamic. Ids outside
  ``1..num_items`` (0, negative, too large) are skipped wherever they stand: 0 is padding (right or left
  padding both work), and an out-of-range id is ignored like an unknown item in
  ``Recommender.recommend(..., unknown="skip")``. Of the remaining ids, only the most recent ``maxlen`` are
  read, as :class:`sasrec.recommend.Recommender` does, so any ``T`` is accepted.
* output ``scores``: ``(B, num_items + 1)`` float32, ``scores[b, i]`` for internal item ``i``. Column 0 is
  padding and must be ignored (it is never a recommendation). The graph does not leave the history's own items
  out; mask them yourself if you want them excluded.
* output ``items_read``: ``(B,)`` int64, how many ids the row's scores read (its valid ids, at most
  ``maxlen``). A row with 0 read is an empty history (``T = 0``, only padding, or only invalid ids): there
  is nothing to recommend from, and its scores are all 0, a tie that ranks nothing. Refuse such a row, as
  :class:`sasrec.recommend.Recommender`, ``sasrec recommend`` and the service (422) refuse an empty history.
* output ``ids_skipped``: ``(B,)`` int64, how many non-zero ids of the row were outside ``1..num_items``. A
  non-zero count usually means the ids were not translated with the run's item map.

Internal ids are the dataset file's ids; translate them with the ``NAME.item_map.tsv`` map written by
``sasrec preprocess`` (see :mod:`sasrec.recommend`). The model's ``maxlen`` and ``num_items`` are stored in
the ONNX metadata (``metadata_props``).

Non-finite scores: a model whose weights are not all finite (a diverged training) is refused at export, and so
is one that gives non-finite scores on probe histories. The graph itself checks nothing at run time: float32
overflow on unusual inputs would show as ``inf`` or ``NaN`` in ``scores`` (check with ``numpy.isfinite`` if
that matters to you); the service (:mod:`sasrec.serve`) answers such a request with a 500 instead.

The output file is written only after every check, through a temporary file in the same folder, so a failed
export leaves nothing behind; an existing file is replaced only with ``overwrite=True`` (``--force``).
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from sasrec.atomic import default_mode, temp_beside
from sasrec.errors import ConfigError, SASRecError
from sasrec.model import SASRec

OPSET = 17
MIN_OPSET = 14  # scaled_dot_product_attention exports from opset 14 on
# The newest opset torch's TorchScript exporter supports (it only warns above it, and may export a wrong graph).
MAX_OPSET = getattr(getattr(torch.onnx, "_constants", None), "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)
OUTPUTS = ("scores", "items_read", "ids_skipped")


class ScoringNetwork(nn.Module):
    """``(B, T)`` int64 histories -> ``(scores (B, num_items + 1), items_read (B,), ids_skipped (B,))``.

    See the module docstring for what is read: ids outside ``1..num_items`` are skipped wherever they stand,
    and only the last ``maxlen`` valid ids are read.
    """

    def __init__(self, model: SASRec):
        super().__init__()
        self.model = model

    def forward(self, histories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        maxlen = self.model.maxlen
        # One padding column more, so that T = 0 (an empty history) is a width-1 row of padding below.
        histories = torch.nn.functional.pad(histories, (0, 1))
        valid = (histories > 0) & (histories <= self.model.num_items)  # (B, T)
        width = histories.shape[1]
        cols = torch.arange(width, device=histories.device)  # (T,)
        # Columns of the valid ids first, in history order: sort by column, invalid ones pushed past the end.
        order = torch.where(valid, cols, cols + width).argsort(dim=1)  # (B, T)
        num_valid = valid.sum(1, keepdim=True)  # (B, 1)
        read = num_valid.clamp(max=maxlen)  # (B, 1)
        # Window column j holds valid id number num_valid - read + j: the most recent `read` valid ids,
        # right-padded with 0 (the model's layout). Picks past the last column only land on padding.
        pick = torch.minimum(cols + (num_valid - read), cols[-1])  # (B, T)
        window = histories.gather(1, order.gather(1, pick)).masked_fill(cols >= read, 0)[:, :maxlen]
        scores = self.model.score(self.model.last_hidden(window))
        scores = torch.where(read > 0, scores, torch.zeros_like(scores))  # an empty history ranks nothing
        skipped = ((histories != 0) & ~valid).sum(1)
        return scores, read.squeeze(1), skipped


def check_opset(opset: int) -> None:
    """Raise ConfigError unless ``opset`` is one this model exports to (``MIN_OPSET..MAX_OPSET``)."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(
            f"ONNX opset {opset} (--opset) is not supported: this model exports to opsets "
            f"{MIN_OPSET}..{MAX_OPSET} (default {OPSET})"
        )


def check_output(path: str | Path, overwrite: bool = False) -> Path:
    """Raise SASRecError unless ``path`` can be written: not a folder, not an existing file unless
    ``overwrite``, and its folder (or the nearest existing parent, when it is still to be created) writable.
    """
    path = Path(path)
    if path.is_dir():
        raise SASRecError(f"output {path} is a folder; give a file name, e.g. {path / 'model.onnx'}")
    if path.exists() and not overwrite:
        raise SASRecError(f"output {path} already exists; pass --force to overwrite it, or choose another --out")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise SASRecError(f"cannot write {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SASRecError(f"cannot write {path}: no write permission in {folder}")
    return path


def check_finite(model: SASRec, source: str = "the model") -> None:
    """Raise SASRecError if a weight of ``model`` is NaN or infinite, or probe histories get such scores."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise SASRecError(
            f"{source} has non-finite weights (NaN or infinity in {shown}): its training diverged; "
            "export another checkpoint or retrain"
        )
    generator = torch.Generator().manual_seed(0)
    probe = torch.randint(1, model.num_items + 1, (16, model.maxlen), generator=generator)
    probe[8:, model.maxlen // 2 :] = 0  # short histories too
    with torch.no_grad():
        scores, _, _ = ScoringNetwork(model).cpu().eval()(probe)
    if not scores.isfinite().all():
        raise SASRecError(
            f"{source} gives non-finite scores (NaN or infinity) although its weights are finite: "
            "they overflow float32; export another checkpoint or retrain"
        )


def export_onnx(
    model: SASRec, path: str | Path, opset: int = OPSET, overwrite: bool = False, source: str = "the model"
) -> Path:
    """Write ``model``'s scoring network to ``path`` as ONNX (legacy TorchScript exporter, opset ``opset``).

    ``source`` names the model in error messages (e.g. its checkpoint file). Returns the path.

    Raises:
        ConfigError: ``opset`` outside ``MIN_OPSET..MAX_OPSET``.
        SASRecError: ``path`` cannot be written or exists (without ``overwrite``), the model's weights or
            scores are not finite, the ``onnx`` extra is not installed, or the exporter fails.
    """
    check_opset(opset)
    path = check_output(path, overwrite)
    try:
        import onnx
    except ImportError:
        raise SASRecError("ONNX export needs the onnx package: pip install 'sasrec[onnx]'") from None
    check_finite(model, source)
    network = ScoringNetwork(model).cpu().eval()
    # Wider than maxlen, with padding and an invalid id, so that the trace is taken on a general input.
    example = torch.ones(2, model.maxlen + 2, dtype=torch.int64)
    example[1, 0], example[1, -1] = -1, 0
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = temp_beside(path)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python values
            torch.onnx.export(
                network,
                (example,),
                str(temporary),
                input_names=["histories"],
                output_names=list(OUTPUTS),
                opset_version=opset,
                dynamo=False,
                dynamic_axes={
                    "histories": {0: "batch", 1: "length"},
                    "scores": {0: "batch"},
                    "items_read": {0: "batch"},
                    "ids_skipped": {0: "batch"},
                },
            )
        proto = onnx.load(str(temporary))
        for key, value in {
            "maxlen": model.maxlen,
            "num_items": model.num_items,
            "input_layout": "int64 item ids; ids outside 1..num_items (0 = padding) are skipped, "
            "then the last maxlen are read",
            "output": "scores of items 0..num_items (column 0 is padding, ignore it); items_read "
            "and ids_skipped per row",
        }.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(value)
        onnx.save(proto, str(temporary))
        os.chmod(temporary, default_mode())
        os.replace(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, SASRecError) or not isinstance(exc, Exception):
            raise
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        raise SASRecError(f"ONNX export to {path} failed ({type(exc).__name__}: {first_line})") from exc
    return path


# ------------------------------------------------------------------------------------------------- CLI


def export_command(args: argparse.Namespace) -> int:
    """``sasrec export`` (arguments: :mod:`sasrec.cli`)."""
    from sasrec.runs import load_run

    check_opset(args.opset)
    out = check_output(Path(args.out) if args.out else Path(args.run) / "model.onnx", args.force)
    loaded = load_run(args.run, args.checkpoint, "cpu")
    export_onnx(
        loaded.model,
        out,
        args.opset,
        overwrite=args.force,
        source=f"checkpoint {loaded.path / f'{args.checkpoint}.safetensors'}",
    )
    print(
        f"wrote {out}: input histories (B, T) int64 (the last {loaded.model.maxlen} valid ids are read), "
        f"outputs scores (B, {loaded.model.num_items + 1}) float32, items_read (B,), ids_skipped (B,)"
    )
    return 0
