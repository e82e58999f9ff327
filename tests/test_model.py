"""The model computes what the reference computes, respects causality, and ignores padding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sasrec.data.dataset import Sequences
from sasrec.evaluate import ModelScorer
from sasrec.export import ScoringNetwork
from sasrec.kernels import CausalAttentionWithDropout, CPUKernels
from sasrec.losses import BCELoss
from sasrec.model import SASRec, TorchKernels, causal_attention
from sasrec.recommend import Recommender


def make_model(norm_first: bool = False, dropout: float = 0.0, maxlen: int = 8, heads: int = 1) -> SASRec:
    torch.manual_seed(0)
    model = SASRec(
        num_items=20, maxlen=maxlen, hidden=12, num_blocks=2, num_heads=heads, dropout=dropout, norm_first=norm_first
    )
    with torch.no_grad():  # non-zero biases and LayerNorm affine, so nothing hides behind a zero
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.double().eval()


def reference_attention(attn, queries: torch.Tensor, keys: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Attention as the reference writes it: scores, masked softmax (disallowed keys get -inf), values."""
    L, d = queries.shape
    h = attn.num_heads
    q = attn.q_proj(queries).view(L, h, d // h).transpose(0, 1)
    k, v = attn.kv_proj(keys).view(L, 2, h, d // h).permute(1, 2, 0, 3)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // h)
    scores = scores.masked_fill(~allowed, -1e30)
    return attn.out_proj((torch.softmax(scores, -1) @ v).transpose(0, 1).reshape(L, d))


def reference_forward(model: SASRec, history: list[int]) -> torch.Tensor:
    """kang205/SASRec's computation, written out: left-padded window of maxlen, positions 0..maxlen-1,
    padding keys masked, timeline mask after every block. Returns the states of the real positions."""
    L, d = model.maxlen, model.item_emb.embedding_dim
    seq = torch.tensor([0] * (L - len(history)) + history)
    real = (seq > 0).double()[:, None]
    x = model.item_emb.weight[seq] * math.sqrt(d) + model.pos_emb.weight[torch.arange(L)]
    x = x * real
    allowed = torch.tril(torch.ones(L, L, dtype=torch.bool)) & (seq > 0)[None, :]
    for block in model.blocks:

        def attention(queries: torch.Tensor, keys: torch.Tensor, attn=block.attn) -> torch.Tensor:
            return reference_attention(attn, queries, keys, allowed)

        if block.norm_first:
            n = block.attn_norm(x)
            x = x + attention(n, n)
            x = x + block.ffn(block.ffn_norm(x))
        else:
            q = block.attn_norm(x)
            x = q + attention(q, x)
            y = block.ffn_norm(x)
            x = y + block.ffn(y)
        x = x * real
    return model.last_norm(x)[L - len(history) :]


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("heads", [1, 2])
def test_matches_reference_left_padded_computation(norm_first: bool, heads: int) -> None:
    model = make_model(norm_first, heads=heads)
    histories = [[3, 5, 7], [1, 2, 3, 4, 5, 6, 7, 8], [9]]
    width = max(map(len, histories))
    batch = torch.tensor([h + [0] * (width - len(h)) for h in histories])
    with torch.no_grad():
        out = model(batch)
        for row, h in enumerate(histories):
            expected = reference_forward(model, h)
            torch.testing.assert_close(out[row, : len(h)], expected, rtol=1e-10, atol=1e-10)


def test_causality_future_items_do_not_change_the_past() -> None:
    model = make_model()
    a = torch.tensor([[4, 2, 7, 1, 9, 3]])
    b = a.clone()
    b[0, 3:] = torch.tensor([11, 12, 13])
    with torch.no_grad():
        out_a, out_b = model(a), model(b)
    torch.testing.assert_close(out_a[0, :3], out_b[0, :3])
    assert not torch.allclose(out_a[0, 3:], out_b[0, 3:])


def test_padding_does_not_change_real_positions() -> None:
    model = make_model()
    alone = torch.tensor([[4, 2, 7]])
    padded = torch.tensor([[4, 2, 7, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model(alone)[0], model(padded)[0, :3])


def test_long_history_positions_follow_the_reference_window() -> None:
    """The most recent item always sits at position maxlen - 1, whatever the row's length."""
    model = make_model(maxlen=8)
    with torch.no_grad():
        short = model(torch.tensor([[5, 6]]))
        longer = model(torch.tensor([[5, 6, 0, 0]]))
    torch.testing.assert_close(short, longer[:, :2])
    torch.testing.assert_close(short[0], reference_forward(model, [5, 6]))


def test_trimmed_batch_gives_same_loss_and_gradients_as_padded() -> None:
    model = make_model(dropout=0.0).float().train()
    loss_fn = BCELoss(1)
    seq = torch.tensor([[3, 4, 5, 0], [7, 8, 0, 0]])
    pos = torch.tensor([[4, 5, 6, 0], [8, 9, 0, 0]])
    neg = torch.tensor([[[11], [12], [13], [0]], [[14], [15], [0], [0]]])

    def loss_and_grads(width: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        s = F.pad(seq, (0, width - seq.shape[1]))
        p = F.pad(pos, (0, width - pos.shape[1]))
        n = F.pad(neg, (0, 0, 0, width - neg.shape[1]))
        real = p > 0
        loss = loss_fn(model(s)[real], p[real], n[real], model.item_emb.weight)
        loss.backward()
        return loss.detach(), [q.grad.clone() for q in model.parameters()]

    trimmed_loss, trimmed_grads = loss_and_grads(3)
    full_loss, full_grads = loss_and_grads(model.maxlen)
    torch.testing.assert_close(trimmed_loss, full_loss, rtol=1e-5, atol=1e-5)
    for a, b in zip(trimmed_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_padding_row_starts_at_zero_and_scores_shape() -> None:
    model = SASRec(num_items=30, maxlen=5, hidden=8)
    assert model.item_emb.weight[0].abs().sum() == 0
    hidden = torch.randn(4, 8)
    assert model.score(hidden).shape == (4, 31)
    assert model.score(hidden, torch.tensor([1, 2, 3])).shape == (4, 3)
    assert model.score(hidden, torch.randint(1, 31, (4, 6))).shape == (4, 6)


def test_untied_output_scores_with_its_own_embedding() -> None:
    tied = SASRec(num_items=30, maxlen=5, hidden=8)
    assert tied.out_emb is None and tied.output_weight is tied.item_emb.weight
    model = SASRec(num_items=30, maxlen=5, hidden=8, tied_output=False)
    assert model.out_emb.weight[0].abs().sum() == 0 and model.output_weight is model.out_emb.weight
    hidden = torch.randn(4, 8)
    torch.testing.assert_close(model.score(hidden), hidden @ model.out_emb.weight.T)
    torch.testing.assert_close(model.score(hidden, torch.tensor([3, 7])), hidden @ model.out_emb.weight[[3, 7]].T)
    seq = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    BCELoss()(
        model(seq)[seq > 0],
        torch.tensor([2, 3, 4, 5, 6]),
        torch.tensor([[7], [8], [9], [10], [11]]),
        model.output_weight,
    ).backward()
    assert model.out_emb.weight.grad.abs().sum() > 0 and model.item_emb.weight.grad.abs().sum() > 0


def test_cpu_dropout_keeps_expected_fraction_and_mean() -> None:
    x = torch.ones(200_000)
    y = CPUKernels(np.random.default_rng(0)).dropout(x, 0.3)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.01
    # Same generator state, same mask: dropout is reproducible.
    torch.testing.assert_close(CPUKernels(np.random.default_rng(0)).dropout(x, 0.3), y)


class SameMasks(TorchKernels):
    """The model's plain computation (``x * mask`` and :func:`causal_attention`), with CPUKernels' masks."""

    def __init__(self, seed: int):
        self.masks = CPUKernels(np.random.default_rng(seed))

    def dropout(self, x: torch.Tensor, p: float) -> torch.Tensor:
        keep, scale = self.masks.mask(x.shape, p)
        return x * keep * scale

    def causal_attention_with_dropout(self, q, k, v, p: float) -> torch.Tensor:
        keep, scale = self.masks.mask((*q.shape[:-1], k.shape[-2]), p)
        return causal_attention(q, k, v, dropout=lambda weights: weights * keep * scale)


@pytest.mark.parametrize("heads", [1, 2])
def test_cpu_kernels_train_as_the_plain_computation_with_the_same_masks(heads: int) -> None:
    """A training step through CPUKernels gives the plain path's loss and gradients, for the same masks."""
    seq = torch.tensor([[3, 4, 5, 6, 0], [7, 8, 0, 0, 0], [1, 2, 3, 4, 5]])
    pos = torch.tensor([[4, 5, 6, 7, 0], [8, 9, 0, 0, 0], [2, 3, 4, 5, 6]])
    neg = torch.randint(1, 21, (3, 5, 2), generator=torch.Generator().manual_seed(0))

    def step(kernels: TorchKernels) -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(0)
        model = SASRec(num_items=20, maxlen=8, hidden=12, num_heads=heads, dropout=0.4, kernels=kernels)
        model = model.double().train()
        real = pos > 0
        loss = BCELoss(2)(model(seq)[real], pos[real], neg[real], model.output_weight)
        loss.backward()
        return loss.detach(), [p.grad for p in model.parameters()]

    fast_loss, fast_grads = step(CPUKernels(np.random.default_rng(5)))
    plain_loss, plain_grads = step(SameMasks(5))
    other_loss, _ = step(SameMasks(6))
    torch.testing.assert_close(fast_loss, plain_loss, rtol=1e-12, atol=1e-12)
    for a, b in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(fast_loss, other_loss)  # the masks matter: the comparison is not vacuous


def test_tiny_model_fits_tiny_dataset() -> None:
    """With enough steps, the training loss of a small deterministic dataset must approach zero."""
    torch.manual_seed(0)
    model = SASRec(num_items=6, maxlen=5, hidden=16, num_blocks=1, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.98))
    loss_fn = BCELoss(1)
    seq = torch.tensor([[1, 2, 3, 4, 5], [2, 3, 4, 5, 0]])
    pos = torch.tensor([[2, 3, 4, 5, 6], [3, 4, 5, 6, 0]])
    neg = torch.tensor([[[6], [1], [2], [3], [4]], [[1], [2], [3], [4], [0]]])  # never the target
    real = pos > 0
    for _ in range(300):
        loss = loss_fn(model(seq)[real], pos[real], neg[real], model.item_emb.weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("blocks", [0, 1, 2])
def test_last_hidden_equals_forward_at_last_positions(norm_first: bool, heads: int, blocks: int) -> None:
    torch.manual_seed(1)
    model = (
        SASRec(
            num_items=20, maxlen=8, hidden=12, num_blocks=blocks, num_heads=heads, dropout=0.0, norm_first=norm_first
        )
        .double()
        .eval()
    )
    seq = torch.tensor([[3, 5, 7, 0, 0], [1, 2, 3, 4, 5], [9, 0, 0, 0, 0]])
    with torch.no_grad():
        expected = model(seq)[torch.arange(3), torch.tensor([2, 4, 0])]
        torch.testing.assert_close(model.last_hidden(seq), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("heads", [1, 2])
def test_attention_with_dropout_matches_autograd_of_the_plain_expression(heads: int) -> None:
    """The hand-written backward of the dropout-attention kernel equals autograd of the model's plain
    :func:`causal_attention` with the same mask."""
    g = torch.Generator().manual_seed(0)
    B, T, dh = 3, 6, 4
    q, k, v = (torch.randn(B, heads, T, dh, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    keep = torch.rand(B, heads, T, T, generator=g) > 0.3
    scale = 1 / 0.7

    upstream = torch.randn(B, heads, T, dh, generator=g, dtype=torch.float64)
    got = CausalAttentionWithDropout.apply(q, k, v, keep, scale)
    want = causal_attention(q, k, v, dropout=lambda weights: weights * keep * scale)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    grads_got = torch.autograd.grad(got, (q, k, v), upstream)
    grads_want = torch.autograd.grad(want, (q, k, v), upstream)
    for a, b in zip(grads_got, grads_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda q, k, v: CausalAttentionWithDropout.apply(q, k, v, keep, scale), (q, k, v))


def test_numpy_dropout_masks_stay_off_non_cpu_devices() -> None:
    """With CPUKernels (as the trainer builds it), a model on another device (here PyTorch's shape-only
    ``meta`` device, standing in for CUDA) uses torch's dropout everywhere and draws no NumPy mask."""
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    model = SASRec(num_items=20, maxlen=8, hidden=12, dropout=0.3, kernels=CPUKernels(rng)).to("meta")
    model.train()
    out = model(torch.ones(2, 5, dtype=torch.long, device="meta"))
    assert out.shape == (2, 5, 12) and out.device.type == "meta"
    assert rng.bit_generator.state == before


# ------------------------------------------------------------------ sequences longer than maxlen


def test_a_sequence_longer_than_maxlen_is_refused() -> None:
    model = make_model(maxlen=4)
    too_long = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 0, 0, 0]])
    for method in (model.forward, model.last_hidden):
        with pytest.raises(ValueError, match="5 items are longer than this model's maxlen 4"):
            method(too_long)
    assert model(too_long[:, :4]).shape == (2, 4, 12)  # maxlen itself is fine


def test_callers_read_the_last_maxlen_items_of_a_long_history() -> None:
    """recommend (and serve, which calls it), evaluation and the exported network truncate a long history to
    its last maxlen items before the model sees it, and give what the truncated history gives."""
    model = make_model(maxlen=4)
    history = [3, 9, 1, 14, 6, 2, 11]
    recent = history[-4:]
    rec = Recommender(model)
    assert rec.recommend(history, k=5, exclude_seen=False) == rec.recommend(recent, k=5, exclude_seen=False)
    long_scores = rec.score_ids([history])
    torch.testing.assert_close(long_scores, rec.score_ids([recent]))
    assert not torch.equal(long_scores, rec.score_ids([history[:4]]))  # the window is the *last* items

    histories = Sequences.from_lists([history, recent], num_items=20)
    scorer = ModelScorer(model)
    torch.testing.assert_close(*scorer.encode(histories, np.array([0, 1])))

    exported, _, _ = ScoringNetwork(model)(torch.tensor([history]))
    torch.testing.assert_close(exported[0], model.score(model.last_hidden(torch.tensor([recent])))[0])


def test_ffn_factor_widens_the_feed_forward_layer_and_is_recorded_as_architecture(tmp_path) -> None:
    from sasrec.config import resolve
    from sasrec.runs import ARCHITECTURE, build_model

    assert resolve({}).ffn_factor == 1  # the paper's FFN: d -> d -> d
    config = resolve({"ffn_factor": 4, "hidden": 8})
    model = build_model(config, num_items=20)
    assert model.blocks[0].ffn.fc1.weight.shape == (32, 8) and model.blocks[0].ffn.fc2.weight.shape == (8, 32)
    assert "ffn_factor" in ARCHITECTURE  # checkpoints record it; an edited config.json is refused
    paper = build_model(resolve({"hidden": 8}), num_items=20)
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in paper.parameters()) == 2 * (
        2 * 3 * 8 * 8 + 3 * 8  # per block: two (d x 3d) weight blocks more, and fc1's 3d bias entries
    )
