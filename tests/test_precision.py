"""Mixed precision (``--precision``): what each setting resolves to, the bfloat16 loss paths against float32,
bf16 training end to end, and evaluation that ranks in float32 whatever the training precision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sasrec import precision
from sasrec.config import resolve
from sasrec.data.dataset import split_leave_one_out
from sasrec.data.synthetic import make_synthetic
from sasrec.errors import ConfigError
from sasrec.evaluate import Evaluator, ModelScorer
from sasrec.losses import chunked_logsumexp, make_loss
from sasrec.train import train


def test_precision_resolves_to_fp32_or_bf16(monkeypatch) -> None:
    cpu = torch.device("cpu")
    assert precision.resolve("fp32", cpu) == "fp32" and precision.resolve("bf16", cpu) == "bf16"
    assert precision.resolve("auto", cpu) == "fp32"  # measured no faster on a CPU, even with AMX-BF16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert precision.resolve("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert precision.resolve("auto", torch.device("cuda")) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, auto"):
        precision.resolve("fp16", cpu)
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, auto, got 'half'"):
        resolve({"precision": "half"})


def test_chunked_logsumexp_under_bf16_autocast_is_close_to_float32_and_returns_float32() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(300, 32, requires_grad=True)
    weight = torch.randn(1000, 32, requires_grad=True)
    exact = torch.logsumexp(hidden @ weight.T, dim=1)
    grads = torch.autograd.grad(exact.sum(), (hidden, weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lse = chunked_logsumexp(hidden, weight, 128)
    assert lse.dtype == torch.float32
    got = torch.autograd.grad(lse.sum(), (hidden, weight))
    assert got[0].dtype == got[1].dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa: scores of size ~10 are off by ~0.05, so is their logsumexp
    torch.testing.assert_close(lse, exact, rtol=0, atol=0.1)
    for g, e in zip(got, grads, strict=True):
        assert torch.nn.functional.cosine_similarity(g.flatten(), e.flatten(), dim=0) > 0.999
    # the products really ran in bfloat16 (float32 would agree to ~1e-6)
    assert (lse - exact).abs().max() > 1e-4


@pytest.mark.parametrize("loss", ["bce", "ce", "sampled-ce", "gbce"])
def test_every_loss_runs_under_bf16_autocast_in_float32(loss: str) -> None:
    torch.manual_seed(0)
    fn = make_loss(loss, 0 if loss == "ce" else 8)
    hidden = torch.randn(50, 16, requires_grad=True)
    weight = torch.randn(41, 16, requires_grad=True)
    positives = torch.randint(1, 41, (50,))
    negatives = torch.randint(1, 41, (50, fn.num_negatives)) if not fn.shared else torch.randint(1, 41, (8,))
    reference = fn(hidden, positives, negatives, weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = fn(hidden, positives, negatives, weight)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(reference.item(), rel=0.03)
    value.backward()
    assert torch.isfinite(weight.grad).all() and torch.isfinite(hidden.grad).all()


def test_bf16_training_learns_and_evaluation_ranks_in_float32(tmp_path: Path) -> None:
    runs = {}
    for name in ("fp32", "bf16"):
        config = resolve({"epochs": 4, "quiet": True, "threads": 2, "precision": name, "out": str(tmp_path / name)})
        train(config)
        runs[name] = [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        results = json.loads((tmp_path / name / "results.json").read_text())
        assert results["precision"] == name
    losses = {name: [r["loss"] for r in log] for name, log in runs.items()}
    assert losses["bf16"][-1] < losses["bf16"][0] * 0.95, losses  # it learns
    assert losses["bf16"] != losses["fp32"]  # and bfloat16 really ran
    for a, b in zip(losses["bf16"], losses["fp32"], strict=True):
        assert a == pytest.approx(b, rel=0.02)  # yet stays close to float32


def test_evaluation_inside_an_autocast_region_is_unchanged() -> None:
    """A bf16 training step may call validation from inside its autocast region: the ranks must not change."""
    from sasrec.model import SASRec

    split = split_leave_one_out(make_synthetic(num_users=200, num_items=120, seed=2))
    torch.manual_seed(0)
    scorer = ModelScorer(SASRec(split.num_items, maxlen=20, hidden=16))
    for protocol in ("full", "sampled"):
        evaluator = Evaluator(split, "valid", protocol, num_negatives=30)
        outside = evaluator.run(scorer, progress=False).metrics
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = evaluator.run(scorer, progress=False).metrics
        assert inside == outside, protocol


def test_attention_kernel_in_bfloat16_is_close_to_float32() -> None:
    """bfloat16 q, k, v (as the autocast projections give them): products in bfloat16, softmax in float32."""
    from sasrec.kernels import CausalAttentionWithDropout

    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 2, 30, 16, requires_grad=True) for _ in range(3))
    keep = torch.rand(4, 2, 30, 30) > 0.2
    exact = CausalAttentionWithDropout.apply(q, k, v, keep, 1.25)
    grads = torch.autograd.grad(exact.square().sum(), (q, k, v))
    low = [t.detach().bfloat16().requires_grad_() for t in (q, k, v)]
    out = CausalAttentionWithDropout.apply(*low, keep, 1.25)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), exact, rtol=0.02, atol=0.05)
    for g, e in zip(torch.autograd.grad(out.float().square().sum(), low), grads, strict=True):
        assert torch.nn.functional.cosine_similarity(g.float().flatten(), e.flatten(), dim=0) > 0.999
