"""Data-parallel training (sasrec.distributed) with 2 CPU processes, gloo backend, on 127.0.0.1.

What is shown, on a small synthetic dataset and a tiny model:
  * one optimizer step with 2 ranks, each on its rows of a batch, equals one single-process step on the
    whole batch (gradients and parameters to 1e-5), although the ranks hold different numbers of positions;
  * a whole epoch on 2 ranks ends at the single-process epoch's parameters, and both ranks agree;
  * evaluating a checkpoint with the users split over 2 ranks gives the single-process metrics;
  * a rank that hangs makes the other fail within the timeout with a clear SASRecError;
  * ``torchrun -m sasrec train`` end to end, with --resume, matches a single-process run and exits cleanly.

Workers are module-level functions started with the ``spawn`` method (each joins the group through
:func:`sasrec.distributed.init_from_env`, as under torchrun) and report through files; one launch of 2
ranks serves the step, epoch and evaluation tests (a launch costs seconds).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sasrec.checkpoint import load_checkpoint, save_checkpoint
from sasrec.data.dataset import split_leave_one_out
from sasrec.data.synthetic import make_synthetic
from sasrec.distributed import (
    TIMEOUT_ENV,
    DistInfo,
    all_reduce_sums,
    barrier,
    broadcast_object,
    cleanup,
    evaluate,
    fail_clearly,
    finish,
    init_from_env,
    loss_weight,
    mean_over_ranks,
    on_main,
    seed_epoch,
    shard,
    shard_batch,
    wrap_model,
)
from sasrec.errors import SASRecError
from sasrec.evaluate import Evaluator, ModelScorer
from sasrec.losses import make_loss
from sasrec.model import SASRec
from sasrec.sampling import Batch, TrainSampler

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available",
)

WORLD = 2
HIDDEN = 16
L2_EMB = 1e-3  # a batch-independent term: it must NOT be weighted per rank
SRC = Path(__file__).resolve().parents[1] / "src"


# ---------------------------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, port: int, timeout_seconds: float | None = None) -> DistInfo:
    """Set torchrun's environment variables for this rank and join the group, as ``sasrec train`` does."""
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD)
    )
    if timeout_seconds is not None:
        os.environ[TIMEOUT_ENV] = str(timeout_seconds)
    return init_from_env("cpu")


def _spawn(worker, *args) -> None:
    mp.spawn(worker, args=(_free_port(), *args), nprocs=WORLD, join=True)


def _setup(
    seed: int = 0,
    batching: str = "shuffle",
    batch_size: int = 48,
    loss: str = "bce",
    negatives: int = 1,
    **loss_options,
):
    """The same data, model (dropout 0), loss, optimizer and sampler on every process."""
    split = split_leave_one_out(make_synthetic(num_users=240, num_items=120, seed=3))
    torch.manual_seed(seed)
    model = SASRec(split.num_items, maxlen=20, hidden=HIDDEN, num_blocks=2, num_heads=2, dropout=0.0)
    loss_fn = make_loss(loss, negatives, **loss_options)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    sampler = TrainSampler(
        split.train, 20, batch_size, loss_fn.num_negatives, batching, seed=seed, shared_negatives=loss_fn.shared
    )
    return split, model, loss_fn, optimizer, sampler


def _loss(net: torch.nn.Module, model: SASRec, loss_fn: torch.nn.Module, batch: Batch, share: float) -> torch.Tensor:
    """The training loss of ``sasrec.train.Trainer.train_epoch``: weighted mean loss + unweighted L2."""
    seq, pos, neg = (torch.from_numpy(a) for a in (batch.seq, batch.pos, batch.neg))
    real = pos > 0
    neg = neg[real] if neg.dim() == 3 else neg  # shared negatives: (N,) for every position
    loss = loss_fn(net(seq)[real], pos[real], neg, model.output_weight) * share
    return loss + L2_EMB * 0.5 * model.item_emb.weight.pow(2).sum()


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _without_key_bias(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The parameters less the attention's key bias, to compare weights after Adam steps.

    The key bias's true gradient is 0 (softmax ignores a shift shared by all keys), so its computed gradient
    is float noise (~1e-10) and Adam's step ``lr * g / (|g| + eps)`` turns that noise into moves of up to
    ``lr`` in any run, distributed or not. Its gradient is compared instead (it is in ``_grads``).
    """
    return {n: (p[HIDDEN:] if n.endswith("attn.kv_proj.bias") else p) for n, p in params.items()}


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float, rtol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


# ---------------------------------------------------------------------------------------------- no processes
def test_single_process_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_from_env("cpu")
    assert not info.enabled and info.is_main and (info.rank, info.world) == (0, 1)
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, info) is model
    users = np.arange(7)
    assert np.array_equal(shard(users, info), users)
    assert all_reduce_sums({"HR@10": 3.0}, 5, info) == ({"HR@10": 3.0}, 5)
    assert mean_over_ranks(2.5, info) == 2.5 and broadcast_object("x", info) == "x"
    _, _, _, _, sampler = _setup()
    batch = sampler.make_batch(sampler.epoch_order()[0])
    part, share = shard_batch(batch, info)
    assert part is batch and share == 1.0
    barrier(info)
    finish(info)
    cleanup(info)


def test_on_main_runs_side_effects_on_rank_zero_only(tmp_path, capsys):
    from sasrec.runs import RunDir

    run = RunDir(tmp_path)
    assert on_main(run, DistInfo()) is run and on_main(print, DistInfo(rank=0, world=2)) is print
    other = DistInfo(rank=1, world=2)
    assert on_main(run, other).append_log({"epoch": 1}) is None
    assert on_main(RunDir.check_new, other)(tmp_path / "x") is None
    on_main(print, other)("from rank 1")
    assert list(tmp_path.iterdir()) == [] and capsys.readouterr().out == ""
    on_main(run, DistInfo()).append_log({"epoch": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]


def test_shard_batch_splits_rows_and_weights_sum_to_world():
    _, _, _, _, sampler = _setup()
    batch = sampler.make_batch(sampler.epoch_order()[0])
    parts = [shard_batch(batch, DistInfo(rank=r, world=3, backend="gloo")) for r in range(3)]
    assert sorted(np.concatenate([p.users for p, _ in parts]).tolist()) == sorted(batch.users.tolist())
    assert sum(int((p.pos > 0).sum()) for p, _ in parts) == int((batch.pos > 0).sum())
    assert sum(w for _, w in parts) == pytest.approx(3.0)
    for part, _ in parts:  # trimmed to the longest local row, real items first
        assert (part.seq[:, -1] > 0).any() and part.neg.shape[:2] == part.seq.shape
    # Fewer rows than ranks: the rank without rows borrows row 0 with weight 0.
    tiny = Batch(batch.users[:1], batch.seq[:1], batch.pos[:1], batch.neg[:1])
    (p0, w0), (p1, w1) = (shard_batch(tiny, DistInfo(rank=r, world=2, backend="gloo")) for r in range(2))
    assert (w0, w1) == (2.0, 0.0) and len(p1.users) == 1
    assert loss_weight(30, 100, DistInfo(world=2, backend="gloo")) == pytest.approx(0.6)


def test_seed_epoch_gives_each_rank_and_epoch_its_own_reproducible_stream():
    def draws(rank: int, epoch: int, backend: str | None = "gloo") -> tuple[bytes, float]:
        rng = np.random.default_rng(0)
        seed_epoch(42, epoch, DistInfo(rank=rank, world=2, backend=backend), rng)
        return rng.bytes(8), torch.rand(1).item()

    assert draws(0, 3) == draws(0, 3)  # what --resume relies on
    assert len({draws(0, 3), draws(1, 3), draws(0, 4)}) == 3
    assert draws(1, 3, backend=None)[0] == np.random.default_rng(0).bytes(8)  # single process: untouched


@pytest.mark.parametrize(
    "loss, negatives, options",
    [
        ("bce", 1, {}),
        ("bce", 60, {"shared": True}),
        ("sampled-ce", 60, {"shared": True}),
        ("gbce", 60, {"shared": True}),
        ("ce", 0, {}),
    ],
)
def test_weighting_is_what_makes_the_gradient_exact(loss, negatives, options):
    """Simulated without processes: DDP's average of the 2 ranks' gradients equals the whole batch's
    gradient only with the P_r * N / P weights; the plain per-rank mean loss is off."""
    _, model, loss_fn, _, sampler = _setup(loss=loss, negatives=negatives, **options)
    batch = sampler.make_batch(sampler.epoch_order()[0])
    _loss(model, model, loss_fn, batch, 1.0).backward()
    whole = _grads(model)
    infos = [DistInfo(rank=r, world=WORLD, backend="gloo") for r in range(WORLD)]
    assert len({int((shard_batch(batch, i)[0].pos > 0).sum()) for i in infos}) == WORLD  # unequal positions
    for weighted in (True, False):
        model.zero_grad()
        for info in infos:
            part, share = shard_batch(batch, info)
            (_loss(model, model, loss_fn, part, share if weighted else 1.0) / WORLD).backward()
        if weighted:
            _assert_close(_grads(model), whole, atol=1e-6, rtol=1e-5)
        else:
            assert max((_grads(model)[n] - whole[n]).abs().max().item() for n in whole) > 1e-4


# ---------------------------------------------------------------------------------------------- 2 processes
def _train_epoch(
    model, net, loss_fn, optimizer, sampler, info: DistInfo, first_step: str | None = None
) -> tuple[float, int]:
    """The loop of ``Trainer.train_epoch`` with the proposed train.py hooks; saves the gradients and
    weights after the first step to ``first_step`` when given."""
    total, steps, positions = 0.0, 0, 0
    for users in sampler.epoch_order():
        batch = sampler.make_batch(users)
        positions += int((batch.pos > 0).sum())
        part, share = shard_batch(batch, info)
        loss = _loss(net, model, loss_fn, part, share)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = _grads(model) if steps == 0 and first_step else None
        optimizer.step()
        if grads is not None:
            torch.save({"grads": grads, "params": _params(model)}, first_step)
        total += loss.item()
        steps += 1
    return mean_over_ranks(total, info) / steps, positions


def _worker(rank: int, port: int, out: str) -> None:
    """One rank: evaluate the parent's checkpoint, then train one epoch (saving its first step)."""
    info = _join(rank, port)
    assert broadcast_object(f"from rank {rank}", info) == "from rank 0"
    split, model, *_ = _setup(seed=rank + 10)  # weights differ until the checkpoint is loaded
    load_checkpoint(f"{out}/model.safetensors", model)
    results = {}
    for which in ("valid", "test"):
        for protocol in ("sampled", "full"):
            evaluator = Evaluator(split, which, protocol, num_negatives=50, seed=7)
            result = evaluate(evaluator, ModelScorer(model), info)
            results[f"{which}-{protocol}"] = {"users": result.users, "metrics": result.metrics}
    Path(f"{out}/eval.{rank}").write_text(json.dumps(results))

    _, model, loss_fn, optimizer, sampler = _setup()
    net = wrap_model(model, info)
    loss, positions = _train_epoch(model, net, loss_fn, optimizer, sampler, info, f"{out}/step.{rank}")
    torch.save(
        {"params": _params(model), "loss": loss, "positions": positions, "rng": sampler.rng.bit_generator.state},
        f"{out}/epoch.{rank}",
    )
    finish(info)  # as sasrec.train.train: every rank past its last collective before leaving
    cleanup(info)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """Runs the 2 ranks once (a launch costs seconds) for the three tests below; returns their folder."""
    out = tmp_path_factory.mktemp("ranks")
    _, model, *_ = _setup(seed=5)
    save_checkpoint(out / "model.safetensors", model, {"epoch": 0})
    _spawn(_worker, str(out))
    return out


def test_one_step_two_ranks_half_batch_each_equals_one_process_whole_batch(two_ranks):
    _, model, loss_fn, optimizer, sampler = _setup()
    optimizer.zero_grad(set_to_none=True)
    _loss(model, model, loss_fn, sampler.make_batch(sampler.epoch_order()[0]), 1.0).backward()
    grads = _grads(model)
    optimizer.step()
    for rank in range(WORLD):
        got = torch.load(two_ranks / f"step.{rank}")
        _assert_close(got["grads"], grads, atol=1e-6, rtol=1e-5)
        _assert_close(_without_key_bias(got["params"]), _without_key_bias(_params(model)), atol=1e-5)


def test_one_epoch_on_two_ranks_matches_one_process(two_ranks):
    """Training completes, both ranks end with the same weights, and those are the single-process ones
    (same batches and negatives, the epoch's smaller last batch included)."""
    _, model, loss_fn, optimizer, sampler = _setup()
    loss, positions = _train_epoch(model, model, loss_fn, optimizer, sampler, DistInfo())
    got = [torch.load(two_ranks / f"epoch.{r}") for r in range(WORLD)]
    _assert_close(got[1]["params"], got[0]["params"], atol=0.0)  # DDP keeps the replicas identical
    _assert_close(_without_key_bias(got[0]["params"]), _without_key_bias(_params(model)), atol=1e-5)
    for g in got:
        assert g["positions"] == positions and g["loss"] == pytest.approx(loss, rel=1e-6)
        assert g["rng"] == sampler.rng.bit_generator.state  # every rank's sampler stays in step


def test_distributed_evaluation_equals_single_process(two_ranks):
    split, model, *_ = _setup(seed=5)
    load_checkpoint(two_ranks / "model.safetensors", model)
    got = [json.loads((two_ranks / f"eval.{r}").read_text()) for r in range(WORLD)]
    assert got[0] == got[1]  # every rank gets the totals
    for key, value in got[0].items():
        which, protocol = key.split("-")
        expected = Evaluator(split, which, protocol, num_negatives=50, seed=7).run(ModelScorer(model))
        assert value["users"] == expected.users > 0
        assert list(value["metrics"]) == list(expected.metrics)  # same names, same order
        for name, v in value["metrics"].items():
            if name.startswith(("HR@", "Recall@")):  # integer hit counts / users: exactly equal
                assert v == expected.metrics[name], (key, name)
            assert v == pytest.approx(expected.metrics[name], rel=1e-12, abs=1e-15), (key, name)


def _stall_worker(rank: int, port: int, out: str) -> None:
    info = _join(rank, port, timeout_seconds=2)
    if rank == 1:
        time.sleep(60)  # hung: never joins the collective (the test kills it)
        return
    start = time.perf_counter()
    try:
        with fail_clearly(info):
            all_reduce_sums({"HR@10": 1.0}, 1, info)
        message = "no error"
    except SASRecError as exc:
        message = str(exc)
    Path(out).write_text(json.dumps({"message": message, "seconds": time.perf_counter() - start}))


def test_a_hung_rank_fails_the_others_with_a_clear_message(tmp_path):
    out, port = tmp_path / "stall.json", _free_port()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_stall_worker, args=(r, port, str(out))) for r in range(WORLD)]
    for p in procs:
        p.start()
    try:
        procs[0].join(timeout=45)
        assert out.exists(), "rank 0 neither failed nor finished"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
    report = json.loads(out.read_text())
    assert "rank 0 of 2" in report["message"] and TIMEOUT_ENV in report["message"], report
    assert report["seconds"] < 30


# ---------------------------------------------------------------------------------------------- the CLI
def test_torchrun_train_and_resume_match_a_single_process_run(tmp_path):
    from sasrec.config import resolve
    from sasrec.train import train

    common = ["--epochs", "2", "--hidden", "16", "--maxlen", "20", "--num-blocks", "1", "--dropout", "0", "--quiet"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("WORLD_SIZE", None)

    def torchrun(*args: str) -> str:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={WORLD}",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            f"--log-dir={tmp_path / 'torchrun-logs'}",  # its default is a new /tmp/torchelastic_* every launch
            "-m",
            "sasrec",
            "train",
            *args,
        ]
        done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    run = tmp_path / "ddp"
    printed = torchrun(*common, "--out", str(run))
    assert printed.count("best epoch") == 1, printed  # the results, printed by rank 0 alone
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "epochs": 3}))  # as if interrupted after epoch 2
    printed = torchrun("--resume", str(run), "--quiet")
    assert printed.count("resuming") == 1 and printed.count("best epoch") == 1, printed
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert {"best.safetensors", "last.safetensors", "results.json", "learning_curve.png"} <= {
        p.name for p in run.iterdir()
    }

    overrides = {
        "epochs": 3,
        "hidden": 16,
        "maxlen": 20,
        "num_blocks": 1,
        "dropout": 0.0,
        "quiet": True,
        "out": str(tmp_path / "single"),
        "threads": 1,
    }
    threads = torch.get_num_threads()
    try:
        train(resolve(overrides))
    finally:
        torch.set_num_threads(threads)
    single = [json.loads(line) for line in (tmp_path / "single" / "log.jsonl").read_text().splitlines()]
    for a, b in zip(log, single, strict=True):
        assert a["positions"] == b["positions"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    results = json.loads((run / "results.json").read_text())
    expected = json.loads((tmp_path / "single" / "results.json").read_text())
    for protocol in ("sampled", "full"):
        assert results[protocol]["users"] == expected[protocol]["users"]
        assert results[protocol]["metrics"]["HR@10"] == pytest.approx(expected[protocol]["metrics"]["HR@10"], abs=2e-3)
