"""The run directory: module layout, resume rules, damaged runs, nothing half-made."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sasrec.cli import main
from sasrec.data.dataset import write_sasrec_file
from sasrec.data.synthetic import make_synthetic

SRC = Path(__file__).resolve().parents[1] / "src"
ARGS = [
    "--hidden",
    "8",
    "--maxlen",
    "10",
    "--batch-size",
    "64",
    "--epochs",
    "2",
    "--patience",
    "0",
    "--quiet",
    "--seed",
    "5",
]


def import_graph() -> dict[str, set[str]]:
    """Every ``sasrec`` module -> the ``sasrec`` modules it imports anywhere (top level or in a function)."""
    graph: dict[str, set[str]] = {}
    for file in (SRC / "sasrec").rglob("*.py"):
        name = ".".join(file.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sasrec"):
                deps.add(node.module)
                deps |= {
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if (SRC / node.module.replace(".", "/") / f"{a.name}.py").exists()
                }
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("sasrec")}
        graph[name] = deps - {name, "sasrec"}
    return graph


def test_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert "sasrec.train" in graph and "sasrec.runs" in graph
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*path[path.index(dep) :], dep])
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


@pytest.mark.parametrize(
    "module", ["sasrec.recommend", "sasrec.serve", "sasrec.export", "sasrec.evaluate_cli", "sasrec.runs"]
)
def test_inference_does_not_import_the_training_loop(module: str) -> None:
    code = f"import sys, {module}; print('sasrec.train' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(SRC)}
    )
    assert out.stdout.strip() == "False"


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.txt"
    write_sasrec_file(make_synthetic(num_users=120, num_items=300, seed=3), path)
    return path


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "never occur" not in line]
    assert len(err) == 1 and err[0].startswith("error: "), err  # (the loader's note on unused ids aside)
    return err[0]


def test_resume_extends_epochs_and_refuses_other_changes(
    data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data_file), *ARGS, "--out", str(run)]) == 0
    log = run / "log.jsonl"
    assert len(log.read_text().splitlines()) == 2
    capsys.readouterr()
    # A finished run: resuming with the same --epochs has nothing to do, and says which flag to change.
    assert main(["train", "--resume", str(run)]) == 2
    assert "--epochs" in error_line(capsys)
    assert main(["train", "--resume", str(run), "--lr", "0.01"]) == 2
    assert "--lr cannot change" in error_line(capsys)
    assert main(["train", "--resume", str(run), "--epochs", "4", "--quiet"]) == 0
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]
    assert json.loads((run / "config.json").read_text())["epochs"] == 4
    assert "test metrics" in capsys.readouterr().out  # --quiet still prints the final metrics


def test_resume_refuses_a_changed_dataset(data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data_file), *ARGS, "--out", str(run)]) == 0
    with open(data_file, "a") as f:
        f.write("999 1\n999 2\n999 3\n")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 2
    assert "changed since" in error_line(capsys)


def damage(run: Path, how: str) -> None:
    if how == "truncated":
        data = (run / "best.safetensors").read_bytes()
        for name in ("best", "last"):
            (run / f"{name}.safetensors").write_bytes(data[: len(data) // 2])
    elif how == "pickle":
        for name in ("best", "last"):
            torch.save({"weights": torch.zeros(3)}, run / f"{name}.safetensors")
    elif how == "config":
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "hidden": 16, "num_heads": 1}))
    elif how == "config-json":
        (run / "config.json").write_text("{not json")


@pytest.mark.parametrize("how", ["truncated", "pickle", "config", "config-json"])
def test_damaged_run_is_one_clear_error_everywhere(
    how: str, data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data_file), *ARGS, "--out", str(run)]) == 0
    damage(run, how)
    capsys.readouterr()
    named = "config.json" if how.startswith("config") and how != "config" else ".safetensors"
    commands = [
        ["train", "--resume", str(run), "--epochs", "3"],
        ["evaluate", "--run", str(run)],
        ["recommend", "--run", str(run), "--history", "1,2,3"],
        ["export", "--run", str(run), "--out", str(tmp_path / "m.onnx")],
    ]
    for command in commands:
        assert main(command) == 2, command
        line = error_line(capsys)
        assert named in line, (command, line)
    assert not (tmp_path / "m.onnx").exists()


def test_failed_run_leaves_no_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("1 1\n1 2\n2 1\n")  # nobody has 3 interactions: nothing to validate on
    out = tmp_path / "out" / "run"
    assert main(["train", "--dataset", str(tiny), *ARGS, "--out", str(out)]) == 2
    assert "too small" in error_line(capsys)
    assert not out.exists()
    assert main(["train", "--dataset", str(tmp_path / "missing.txt"), *ARGS, "--out", str(out)]) == 2
    error_line(capsys)
    assert not out.exists()


def test_out_must_be_writable(data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--dataset", str(data_file), *ARGS, "--out", str(blocker)]) == 2
    assert "--out" in error_line(capsys)
    assert main(["train", "--dataset", str(data_file), *ARGS, "--out", str(blocker / "run")]) == 2
    assert "--out" in error_line(capsys)
