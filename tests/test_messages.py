"""One clear line for each bad input a fresh user meets: it names the file, line, tensor or option, and the fix."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from helpers import make_run
from safetensors import safe_open
from safetensors.torch import save_file

from sasrec.cli import main
from sasrec.data.dataset import read_sasrec_file, write_sasrec_file
from sasrec.data.readers import read_csv
from sasrec.data.synthetic import make_synthetic
from sasrec.errors import DataError


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_ungrouped_sasrec_file_names_the_command_that_fixes_it(tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "log.txt"
    path.write_text("1 10\n2 20\n1 30\n2 10\n")
    assert main(["train", "--dataset", str(path), "--epochs", "1"]) == 2
    line = one_line_error(capsys)
    assert f"{path}, line 3: user 1 appears again" in line
    command = re.search(r"`(sasrec preprocess [^`]*)`", line).group(1)
    assert command.startswith("sasrec preprocess --format sasrec ")
    # The command as printed works, and its output keeps each user's lines in file order.
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(command)[1:]) == 0
    capsys.readouterr()
    fixed = read_sasrec_file(tmp_path / "renumbered" / "log.txt", report=False)
    assert [fixed[u].tolist() for u in range(fixed.num_users)] == [[1, 3], [2, 1]]  # items 10, 20, 30 -> 1, 2, 3


def without_architecture_record(run: Path) -> Path:
    """The run as written before checkpoints recorded their architecture: only tensor shapes are checked."""
    for name in ("best", "last"):
        path = run / f"{name}.safetensors"
        if path.exists():
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads(f.metadata()["meta"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta.pop("architecture", None)
            save_file(tensors, str(path), metadata={"meta": json.dumps(meta)})
    return run


def test_checkpoint_of_another_shape_names_the_tensor_and_both_shapes(tmp_path: Path, capsys) -> None:
    run = without_architecture_record(make_run(tmp_path))  # hidden 8
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "hidden": 16}))
    assert main(["recommend", "--run", str(run), "--history", "m101"]) == 2
    line = one_line_error(capsys)
    assert f"checkpoint {run / 'best.safetensors'} does not match the run's config.json" in line
    assert "tensor item_emb.weight has shape (21, 8) where the model of config.json has (21, 16)" in line


def test_checkpoint_missing_a_tensor_names_it(tmp_path: Path, capsys) -> None:
    run = without_architecture_record(make_run(tmp_path))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "num_blocks": 3}))
    assert main(["evaluate", "--run", str(run)]) == 2
    line = one_line_error(capsys)
    assert "it has no tensor blocks.2." in line and "more)" in line


@pytest.mark.parametrize("option", ["--num-negatives", "--eval-negatives"])
def test_evaluate_names_the_negatives_option_as_typed(tmp_path: Path, capsys, option: str) -> None:
    run = make_run(tmp_path)
    assert main(["evaluate", "--run", str(run), "--protocol", "sampled", option, "1000000000"]) == 2
    line = one_line_error(capsys)
    assert line.startswith(f"error: {option} 1000000000: ") and "unseen items" in line


def test_epoch_line_shows_the_selection_metrics_k(tmp_path: Path, capsys) -> None:
    data = tmp_path / "small.txt"
    write_sasrec_file(make_synthetic(num_users=60, num_items=150, seed=3), data)
    common = ["train", "--dataset", str(data), "--epochs", "1", "--hidden", "8", "--maxlen", "10"]
    assert main([*common, "--num-blocks", "1", "--metric", "NDCG@20", "--out", str(tmp_path / "run")]) == 0
    epoch_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch"))
    valid = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])["valid"]
    assert f"valid sampled HR@20 {valid['HR@20']:.4f}  NDCG@20 {valid['NDCG@20']:.4f}" in epoch_line
    assert "@10" not in epoch_line


def test_quoted_line_break_in_a_csv_field_is_named(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text('user,item,time\nu,a,1\nu,"b\nc",2\n')
    with pytest.raises(DataError) as info:
        list(read_csv(path, user_col="user", item_col="item", time_col="time"))
    assert info.value.line == 3
    assert "line breaks inside a field are not supported" in str(info.value)


@pytest.mark.parametrize("command", ["evaluate", "recommend --user 1", "export"])
def test_a_run_given_without_run_is_named(command: str, tmp_path: Path, capsys) -> None:
    """Before: "unrecognized arguments: RUN" or "--run is required", with no word of the fix."""
    run = make_run(tmp_path)
    name, *rest = command.split()
    assert main([name, str(run), *rest]) == 2
    assert one_line_error(capsys) == f"error: {run} is a run directory: give it as --run {run}"


@pytest.mark.parametrize(
    ("argv", "only", "expected"),
    [
        (["train", "--epoch", "1"], None, "--epoch 1 (did you mean --epochs?)"),
        (["--negs", "3"], "train", "--negs 3 (did you mean --negatives?)"),
        (["evaluate", "--ru", "x"], None, "--ru x (did you mean --run?)"),
        (["train", "--zzz"], None, "--zzz"),
        (["train", "--batch", "64"], None, "--batch 64 (did you mean --batch-size or --batching?)"),
        (["train", "--k", "10"], None, "--k 10"),  # evaluate's option: no suggestion from another command
        (["--port", "3"], "evaluate", "--port 3"),  # not "--out": a different word
        (["evaluate", "--num-neg", "5"], None, "--num-neg 5 (did you mean --eval-negatives?)"),  # current name
        (["train", "--hiden=3"], None, "--hiden=3 (did you mean --hidden?)"),
    ],
)
def test_an_abbreviated_option_is_refused_with_the_option_it_may_mean(argv, only, expected, tmp_path, capsys) -> None:
    """Before, argparse read a prefix as the option it starts (``--epoch 1`` trained with --epochs 1), so a
    saved command would change meaning once another option shared the prefix; nothing is written."""
    assert main(argv, only=only) == 2
    assert one_line_error(capsys) == f"error: unrecognized arguments: {expected}"


def test_a_dataset_named_as_preprocess_named_it_is_found_in_data_dir(tmp_path: Path, capsys, monkeypatch) -> None:
    """`sasrec preprocess --name mylog --out D` then `sasrec train --dataset mylog --data-dir D`: before, the
    name was refused ("neither a dataset name nor a file") although docs/cli.md promised the lookup."""
    data = tmp_path / "prepared"
    data.mkdir()
    write_sasrec_file(make_synthetic(num_users=60, num_items=200, seed=1), data / "mylog.txt")
    monkeypatch.chdir(tmp_path)
    args = ["--hidden", "8", "--maxlen", "10", "--epochs", "1", "--eval-negatives", "10", "--quiet", "--threads", "1"]
    assert main(["train", "--dataset", "mylog", "--data-dir", str(data), "--out", "run", *args]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["dataset"] == str(data / "mylog.txt")
    assert main(["train", "--dataset", "mylog.txt", "--data-dir", str(data), "--out", "run1", *args]) == 0
    capsys.readouterr()
    assert main(["train", "--dataset", "mylog", "--out", "run2", *args]) == 2  # not in the default data/
    assert one_line_error(capsys) == (
        "error: dataset 'mylog' is neither a dataset name (ml-1m, games, beauty, steam, synthetic), nor a file, "
        "nor the name of a file data/mylog.txt (sasrec preprocess --name NAME --out data)"
    )
    assert not (tmp_path / "run2").exists()
