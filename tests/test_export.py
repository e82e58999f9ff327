"""ONNX export (sasrec.export): onnxruntime's scores equal PyTorch's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_recommend import MAXLEN, NUM_ITEMS, make_run

from sasrec.cli import main
from sasrec.export import ScoringNetwork
from sasrec.runs import load_run

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def random_histories(rng: np.random.Generator, batch: int, width: int) -> np.ndarray:
    """``(batch, width)`` right-padded histories; row 0 fills the width, the others are shorter."""
    lengths = np.r_[width, rng.integers(1, width + 1, size=batch - 1)]
    out = np.zeros((batch, width), dtype=np.int64)
    for row, n in enumerate(lengths):
        out[row, :n] = rng.integers(1, NUM_ITEMS + 1, size=n)
    return out


@pytest.mark.parametrize("norm_first", [False, True])
def test_onnx_matches_pytorch(tmp_path: Path, norm_first: bool, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = make_run(tmp_path, norm_first=norm_first)
    out = tmp_path / "model.onnx"
    assert main(["export", "--run", str(run_dir), "--format", "onnx", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["maxlen"] == str(MAXLEN) and meta["num_items"] == str(NUM_ITEMS)

    network = ScoringNetwork(load_run(run_dir).model).eval()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch, width in [(1, 1), (3, 4), (5, MAXLEN), (2, 7)]:
        histories = random_histories(rng, batch, width)
        (scores,) = session.run(["scores"], {"histories": histories})
        with torch.no_grad():
            expected = network(torch.from_numpy(histories)).numpy()
        assert scores.shape == (batch, NUM_ITEMS + 1)
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)


def test_export_default_path(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    assert main(["export", "--run", str(run_dir)]) == 0
    assert (run_dir / "model.onnx").stat().st_size > 0
