"""Bit-reproducible training: the same seed and data give the same weights, optimizer state, log, results and
checkpoint files, run after run at a thread count and at 1 and 2 threads, while another process keeps the CPU
busy. (On AMD CPUs, MKL's products of some shapes give other last bits at another thread count, so there
the agreement at 1 and 2 threads holds for these tests' shapes only: docs/training.md.)

The faults these tests catch are last-bit float differences (~1e-9) that come and go with thread scheduling,
so every comparison is exact (``torch.equal``, file bytes) and each test repeats enough steps to see them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sasrec.config import resolve
from sasrec.data.dataset import write_sasrec_file
from sasrec.data.synthetic import make_synthetic
from sasrec.losses import fixed_order_mean, fixed_order_sum, item_rows, softplus
from sasrec.model import LayerNorm
from sasrec.runs import RunDir
from sasrec.train import Trainer, train

# A small catalogue, so that every batch draws the same items many times: the gradient rows that several
# positions add into are where a thread-dependent summation order shows. Batches of ~2300 positions of
# width 32, so that gathers and sums are large enough for ATen to split them between threads.
DATA = {"num_users": 600, "num_items": 80, "seed": 1}
MODEL = {
    "hidden": 32,
    "maxlen": 30,
    "batch_size": 256,
    "quiet": True,
    "seed": 5,
    "val_protocol": "full",
    "eval_negatives": 20,
}

LOSSES = [
    pytest.param("bce", 1, {}, id="bce"),
    # 16 negatives: (P, 16) scores of over 32768 elements, which ATen splits between threads
    pytest.param("bce", 16, {}, id="bce-16-per-position"),
    pytest.param("bce", 16, {"shared": True}, id="bce-16-shared"),
    pytest.param("ce", 0, {}, id="ce"),
    pytest.param("sampled-ce", 16, {"shared": True}, id="sampled-ce-shared"),
    pytest.param("sampled-ce", 16, {"shared": False}, id="sampled-ce-per-position"),
    pytest.param("gbce", 16, {"shared": False}, id="gbce"),
]


@pytest.fixture(scope="module")
def busy_cpu() -> Iterator[None]:
    """Another process burning a core for the whole module, as on a shared machine."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        burner.kill()
        burner.wait()


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "small.txt"
    write_sasrec_file(make_synthetic(**DATA), path)
    return path


def state_after_epoch(config_values: dict, tmp_path: Path) -> dict[str, torch.Tensor]:
    """Weights and Adam moments after one epoch of a fresh trainer (the moments hold the gradients)."""
    config = resolve({**MODEL, **config_values})
    trainer = Trainer(config, RunDir(tmp_path), data=make_synthetic(**DATA))
    trainer.train_epoch()
    state = {f"model.{k}": v.clone() for k, v in trainer.model.state_dict().items()}
    for index, param_state in trainer.optimizer.state_dict()["state"].items():
        for key, value in param_state.items():
            state[f"optim.{index}.{key}"] = torch.as_tensor(value).clone()
    return state


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize("loss, negatives, options", LOSSES)
def test_training_steps_repeat_bit_for_bit(busy_cpu, tmp_path: Path, loss, negatives, options) -> None:
    """Two epochs from the same seed at 2 threads, and one at 1 thread, end in the same state; so do two at 3.

    Before gathers went through ``item_rows``, one such pair of epochs differed 30 times out of 30."""
    values = {"loss": loss, "negatives": negatives, "loss_options": options}
    first = state_after_epoch({**values, "threads": 2}, tmp_path)
    assert differing(first, state_after_epoch({**values, "threads": 2}, tmp_path)) == [], "again at 2 threads"
    assert differing(first, state_after_epoch({**values, "threads": 1}, tmp_path)) == [], "at 1 thread"
    third = state_after_epoch({**values, "threads": 3}, tmp_path)
    assert differing(third, state_after_epoch({**values, "threads": 3}, tmp_path)) == [], "again at 3 threads"


def untimed(value: object) -> object:
    """``value`` (parsed JSON) without its timing fields (keys containing "seconds"), which vary run to run."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def run_files(run: Path) -> dict[str, object]:
    """What a run wrote, for exact comparison: log and results without timings, and the checkpoint bytes."""
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {
        "log": untimed(log),
        "results": untimed(json.loads((run / "results.json").read_text())),
        "last": (run / "last.safetensors").read_bytes(),
        "best": (run / "best.safetensors").read_bytes(),
    }


def test_runs_are_identical_at_any_thread_count(busy_cpu, data_file: Path, tmp_path: Path) -> None:
    """Two runs at 2 threads and one at 1 thread write the same log, results and checkpoint files."""
    runs = {}
    for name, threads in (("a", 2), ("b", 2), ("c", 1)):
        config = resolve(
            {**MODEL, "dataset": str(data_file), "epochs": 3, "threads": threads, "out": str(tmp_path / name)}
        )
        train(config)
        runs[name] = run_files(tmp_path / name)
    for name in ("b", "c"):
        for part in ("log", "results", "last", "best"):
            assert runs[name][part] == runs["a"][part], f"run {name}: {part} differs"


# The mechanisms, one by one: each of these failed before the fix, and names what broke if it fails again.
def at_threads(counts: tuple[int, ...], compute) -> list:
    out = []
    for threads in counts:
        torch.set_num_threads(threads)
        out.append(compute())
    return out


def test_item_gather_backward_repeats_bit_for_bit(busy_cpu) -> None:
    """Gradients of gathered item rows (an item drawn many times) are the same on every call."""
    torch.manual_seed(0)
    weight = torch.randn(51, 16, requires_grad=True)
    items = torch.randint(1, 51, (4000, 5))
    upstream = torch.randn(4000, 5, 16)

    def grad() -> torch.Tensor:
        (g,) = torch.autograd.grad(item_rows(weight, items), weight, upstream)
        return g

    first, *rest = at_threads((2,) * 10 + (1, 3), grad)
    assert all(torch.equal(first, g) for g in rest)


def test_layer_norm_gradients_do_not_depend_on_thread_count() -> None:
    torch.manual_seed(0)
    norm = LayerNorm(32, eps=1e-8)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x, upstream = torch.randn(64, 50, 32), torch.randn(64, 50, 32)

    def grads() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(norm(x.requires_grad_()), (x, norm.weight, norm.bias), upstream)

    first, *rest = at_threads((1, 2, 3), grads)
    assert all(torch.equal(a, b) for other in rest for a, b in zip(first, other, strict=True))


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="thread-independent products need MKL's CNR mode")
def test_matrix_products_do_not_depend_on_thread_count() -> None:
    """A weight gradient's product sums over every position of a batch: MKL must not split that sum by thread."""
    torch.manual_seed(0)
    a, b = torch.randn(32, 20000), torch.randn(20000, 32)
    first, *rest = at_threads((1, 2, 3), lambda: a @ b)
    assert all(torch.equal(first, r) for r in rest)


@pytest.mark.parametrize("size", [33_584, 2_099 * 16 + 8, 100_003])
def test_softplus_and_its_gradient_do_not_depend_on_thread_count(busy_cpu, size: int) -> None:
    """The BCE-family losses' softplus, at sizes whose split between threads leaves a scalar tail.

    ``F.softplus`` gave 5 different values of 33,584 at 1 and 2 threads on an AVX-512 CPU (gbce's
    per-position negatives of one batch), and the state after one epoch differed in 42 tensors."""
    torch.manual_seed(0)
    x, upstream = torch.randn(size) * 6, torch.rand(size)

    def values_and_grad() -> tuple[torch.Tensor, torch.Tensor]:
        leaf = x.clone().requires_grad_()
        out = softplus(leaf)
        (grad,) = torch.autograd.grad(out, leaf, upstream)
        return out.detach(), grad

    first, *rest = at_threads((1, 2, 3, 4), values_and_grad)
    assert all(torch.equal(a, b) for other in rest for a, b in zip(first, other, strict=True))
    assert torch.allclose(first[0], torch.nn.functional.softplus(x), rtol=1e-6, atol=1e-6)
    assert torch.allclose(first[1], torch.sigmoid(x) * upstream, rtol=1e-6, atol=1e-7)


def test_fixed_order_sum_does_not_depend_on_thread_count() -> None:
    torch.manual_seed(0)
    x = torch.rand(100_003, requires_grad=True)
    first, *rest = at_threads((1, 2, 3), lambda: fixed_order_sum(x))
    assert all(torch.equal(first, r) for r in rest)
    assert first.item() == pytest.approx(x.double().sum().item(), rel=1e-6)
    (grad,) = torch.autograd.grad(fixed_order_mean(x), x)
    assert torch.equal(grad, torch.full_like(x, 1 / x.numel()))


@pytest.mark.parametrize("loss, negatives", [("bce", 1), ("ce", 0)])
def test_bf16_training_steps_repeat_bit_for_bit(busy_cpu, tmp_path: Path, loss: str, negatives: int) -> None:
    """``--precision bf16`` is as reproducible as float32: the same state again at 2 threads and at 1 thread."""
    values = {"loss": loss, "negatives": negatives, "precision": "bf16"}
    first = state_after_epoch({**values, "threads": 2}, tmp_path)
    assert differing(first, state_after_epoch({**values, "threads": 2}, tmp_path)) == [], "again at 2 threads"
    assert differing(first, state_after_epoch({**values, "threads": 1}, tmp_path)) == [], "at 1 thread"
    fp32 = state_after_epoch({**values, "precision": "fp32", "threads": 2}, tmp_path)
    assert differing(first, fp32), "bf16 must actually change the computation"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_ce_normaliser_gradients_do_not_depend_on_thread_count(precision: str) -> None:
    """At a real catalogue's size (ML-1M's 3,416 items): oneDNN's bfloat16 product for (64 rows) x (long inner
    dimension) changes with the thread count, so the hidden gradient's product must stay float32."""
    from sasrec.losses import chunked_logsumexp

    torch.manual_seed(0)
    hidden, weight = torch.randn(3000, 50) * 0.3, torch.randn(3416, 50) * 0.3
    upstream = torch.rand(3000)

    def grads() -> tuple[torch.Tensor, ...]:
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            lse = chunked_logsumexp(h, w, 64)
        return (lse, *torch.autograd.grad(lse, (h, w), upstream))

    first, *rest = at_threads((1, 2, 3), grads)
    assert all(torch.equal(a, b) for other in rest for a, b in zip(first, other, strict=True))
