"""ONNX export (sasrec.export): onnxruntime's scores equal PyTorch's, long histories are truncated as the
Recommender truncates them, ids outside 1..num_items are skipped, and bad options or models are one-line
errors (exit 2) that write nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import MAXLEN, NUM_ITEMS, make_run

from sasrec.checkpoint import save_checkpoint
from sasrec.cli import main
from sasrec.export import MAX_OPSET, MIN_OPSET, ScoringNetwork
from sasrec.recommend import Recommender
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


def right_pad(rows: list[list[int]]) -> np.ndarray:
    out = np.zeros((len(rows), max(len(r) for r in rows)), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Recommender, ort.InferenceSession]:
    """The tiny run's Recommender and an onnxruntime session of its export."""
    root = tmp_path_factory.mktemp("export")
    run_dir = make_run(root)
    assert main(["export", "--run", str(run_dir), "--out", str(root / "model.onnx")]) == 0
    session = ort.InferenceSession(str(root / "model.onnx"), providers=["CPUExecutionProvider"])
    return Recommender.load(run_dir), session


def pytorch_scores(rec: Recommender, history: list[int]) -> np.ndarray:
    """Scores ``(num_items + 1,)`` of the history as the Recommender reads it: its last ``maxlen`` ids."""
    return rec.score_ids([history])[0].numpy()


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
    assert [o.name for o in session.get_outputs()] == ["scores", "items_read", "ids_skipped"]
    rng = np.random.default_rng(0)
    for batch, width in [(1, 1), (3, 4), (5, MAXLEN), (2, 7), (4, 3 * MAXLEN)]:
        histories = random_histories(rng, batch, width)
        scores, read, skipped = session.run(None, {"histories": histories})
        with torch.no_grad():
            expected = [t.numpy() for t in network(torch.from_numpy(histories))]
        assert scores.shape == (batch, NUM_ITEMS + 1)
        np.testing.assert_allclose(scores, expected[0], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(read, np.minimum((histories > 0).sum(1), MAXLEN))
        np.testing.assert_array_equal(read, expected[1])
        np.testing.assert_array_equal(skipped, 0)


def test_long_histories_read_their_last_maxlen(exported: tuple[Recommender, ort.InferenceSession]) -> None:
    """A history longer than maxlen scores as its last maxlen ids, as Recommender.recommend reads it."""
    rec, session = exported
    rng = np.random.default_rng(1)
    rows = [list(rng.integers(1, NUM_ITEMS + 1, size=n)) for n in (3 * MAXLEN + 1, MAXLEN + 1, MAXLEN, 4)]
    scores, read, skipped = session.run(None, {"histories": right_pad(rows)})
    for row, history in enumerate(rows):
        np.testing.assert_allclose(scores[row, 1:], pytorch_scores(rec, history)[1:], rtol=0, atol=1e-5)
    assert read.tolist() == [MAXLEN, MAXLEN, MAXLEN, 4] and skipped.tolist() == [0, 0, 0, 0]
    # The window really matters for these rows: the oldest maxlen ids score differently, and the model itself
    # refuses the whole history.
    with torch.no_grad():
        oldest = rec.model.score(rec.model.last_hidden(torch.tensor([rows[0][:MAXLEN]])))[0].numpy()
        with pytest.raises(ValueError, match="longer than this model's maxlen"):
            rec.model.last_hidden(torch.tensor([rows[0]]))
    assert np.abs(oldest[1:] - scores[0, 1:]).max() > 1e-3


LONG = [i % NUM_ITEMS + 1 for i in range(3 * MAXLEN + 3)]


@pytest.mark.parametrize(
    ("history", "valid", "skipped"),
    [
        ([-3, 4, 5], [4, 5], 1),  # negative
        ([4, NUM_ITEMS + 1, 5, 10**12], [4, 5], 2),  # too large
        ([0, 0, 4, 5], [4, 5], 0),  # left padding
        ([4, 0, 5, 0, 6], [4, 5, 6], 0),  # zeros inside the history
        ([-1] * 5 + LONG, LONG, 5),  # invalid and long
    ],
)
def test_ids_outside_the_catalogue_are_skipped(
    exported: tuple[Recommender, ort.InferenceSession], history: list[int], valid: list[int], skipped: int
) -> None:
    rec, session = exported
    histories = right_pad([history, [7, 8]])  # the second row checks that rows do not mix
    scores, read, ids_skipped = session.run(None, {"histories": histories})
    np.testing.assert_allclose(scores[0, 1:], pytorch_scores(rec, valid)[1:], rtol=0, atol=1e-5)
    np.testing.assert_allclose(scores[1, 1:], pytorch_scores(rec, [7, 8])[1:], rtol=0, atol=1e-5)
    assert read.tolist() == [min(len(valid), MAXLEN), 2] and ids_skipped.tolist() == [skipped, 0]


def test_row_without_valid_ids(exported: tuple[Recommender, ort.InferenceSession]) -> None:
    _, session = exported
    scores, read, skipped = session.run(None, {"histories": np.array([[0, 0], [-1, NUM_ITEMS + 1]])})
    assert read.tolist() == [0, 0] and skipped.tolist() == [0, 2]
    assert np.isfinite(scores).all()


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.mark.parametrize("opset", [5, MIN_OPSET - 1, MAX_OPSET + 1, 0, -1])
def test_unsupported_opset(tmp_path: Path, opset: int, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = make_run(tmp_path)
    out = tmp_path / "model.onnx"
    assert main(["export", "--run", str(run_dir), "--out", str(out), "--opset", str(opset)]) == 2
    line = one_line_error(capsys)
    assert f"opset {opset}" in line and f"{MIN_OPSET}..{MAX_OPSET}" in line
    assert list(tmp_path.glob("*.onnx*")) == [] and list(tmp_path.glob(".model.onnx*")) == []


def test_existing_output_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = make_run(tmp_path)
    out = tmp_path / "model.onnx"
    out.write_text("keep me")
    assert main(["export", "--run", str(run_dir), "--out", str(out)]) == 2
    assert "already exists" in one_line_error(capsys) and out.read_text() == "keep me"
    # Checked before the run is even read: a missing run is not what gets reported.
    assert main(["export", "--run", str(tmp_path / "no-such-run"), "--out", str(out)]) == 2
    assert "already exists" in one_line_error(capsys)
    assert main(["export", "--run", str(run_dir), "--out", str(out), "--force"]) == 0
    assert len(onnx.load(str(out)).graph.output) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "model.onnx", "run"]  # no temporary left


@pytest.mark.parametrize("kind", ["folder", "under-a-file"])
def test_unwritable_output(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = make_run(tmp_path)
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-folder" if kind == "folder" else tmp_path / "a-file" / "sub" / "model.onnx"
    (tmp_path / "a-folder").mkdir()
    assert main(["export", "--run", str(run_dir), "--out", str(out)]) == 2
    assert ("is a folder" if kind == "folder" else "is a file") in one_line_error(capsys)


def test_export_default_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = make_run(tmp_path)
    assert main(["export", "--run", str(run_dir)]) == 0
    assert (run_dir / "model.onnx").stat().st_size > 0
    assert main(["export", "--run", str(run_dir)]) == 2  # a second export does not overwrite the first
    assert "--force" in one_line_error(capsys)


@pytest.mark.parametrize("fault", ["nan-weight", "overflowing-weights"])
def test_refuses_a_diverged_model(tmp_path: Path, fault: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = make_run(tmp_path)
    model = load_run(run_dir).model
    with torch.no_grad():
        if fault == "nan-weight":
            model.item_emb.weight[3, 0] = float("nan")
        else:
            model.item_emb.weight[1:] = 1e38  # finite, but times sqrt(d) it overflows float32
    save_checkpoint(run_dir / "best.safetensors", model, {"epoch": 0, "num_items": NUM_ITEMS})
    out = tmp_path / "model.onnx"
    assert main(["export", "--run", str(run_dir), "--out", str(out)]) == 2
    line = one_line_error(capsys)
    assert str(run_dir / "best.safetensors") in line and "non-finite" in line
    assert not out.exists() and list(tmp_path.glob(".model.onnx*")) == []
