"""Mixed precision for training: which dtype the matrix products use, and the context that applies it.

``fp32`` (default) computes everything in float32, as the reference code. ``bf16`` runs the matrix products
of the model and of the losses in bfloat16 through :func:`torch.autocast`, while everything that accumulates
stays float32: the parameters and Adam's moments (autocast casts a weight to bfloat16 for the product only),
the residual stream, LayerNorm, softmax, the losses' log-sum-exp and every mean. Products accumulate in
float32 inside the kernels (oneDNN on CPU, cuBLAS on CUDA) and round their outputs to bfloat16.

``auto`` picks ``bf16`` where it was measured to be faster: on CUDA devices that support it, and on CPUs with
AMX or AVX-512 BF16 instructions for the workloads whose matrix products are large (the full softmax ``ce``,
or sequences of 100 items or more; MovieLens-1M ran 10-15% faster per step). Short sequences with sampled
losses stay ``fp32`` (Amazon Games with ``bce`` ran 10-20% slower in bf16: its steps are dominated by
per-operation overhead that the conversions add to), and so does every CPU without native bfloat16, where it is
emulated. What was measured is in ``docs/speed.md``.

Evaluation never uses bfloat16: validation, test and the recommenders rank with float32 scores, so a faster
training path cannot change a rank.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path

import torch

from sasrec.config import PRECISIONS


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU has bfloat16 matrix instructions (AMX-BF16 or AVX512-BF16), read from /proc/cpuinfo.

    Elsewhere (other operating systems, older CPUs) False: bfloat16 is then emulated and slower than float32.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"amx_bf16", "avx512_bf16"})
    return False


# ``auto`` on a CPU with native bfloat16: sequences at least this long make the products worth converting.
AUTO_MIN_MAXLEN = 100


def resolve(precision: str, device: torch.device, loss: str = "bce", maxlen: int = 50) -> str:
    """``fp32`` or ``bf16`` for a requested ``precision`` (one of :data:`PRECISIONS`) on ``device``, for a run
    with this ``loss`` and ``maxlen`` (what ``auto`` decides on; see the module docstring).

    Raises:
        ValueError: an unknown ``precision``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    large = loss == "ce" or maxlen >= AUTO_MIN_MAXLEN
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() and large else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context to run a training forward (model and loss) in: bfloat16 autocast for ``bf16``, else nothing.

    ``precision`` must already be resolved (``fp32`` or ``bf16``, see :func:`resolve`).
    """
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype autocast would give a matrix product of ``tensor`` here: bfloat16 inside a bf16 autocast
    region on ``tensor``'s device, else ``tensor.dtype``. For custom autograd functions, whose backward runs
    outside the region: they record it in forward and use it in both passes."""
    kind = tensor.device.type
    if torch.is_autocast_enabled(kind) and tensor.is_floating_point():
        return torch.get_autocast_dtype(kind)
    return tensor.dtype
