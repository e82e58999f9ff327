"""Mixed precision for training: which dtype the matrix products use, and the context that applies it.

``fp32`` (default) computes everything in float32, as the reference code. ``bf16`` runs the matrix products
of the model and of the losses in bfloat16 through :func:`torch.autocast`, while everything that accumulates
stays float32: the parameters and Adam's moments (autocast casts a weight to bfloat16 for the product only),
the residual stream, LayerNorm, softmax, the losses' log-sum-exp and every mean. Products accumulate in
float32 inside the kernels (oneDNN on CPU, cuBLAS on CUDA) and round their outputs to bfloat16.

``auto`` picks ``bf16`` only where it was measured to be faster: on CUDA devices that support it. On a CPU it
picks ``fp32``: even on a CPU with AMX-BF16 (bfloat16 matrix products 3.6x the float32 peak), whole training
epochs at the paper's sizes (d = 50) were no faster in bf16 (MovieLens-1M ``bce`` 7.5 s fp32 vs 7.7 s bf16,
``ce`` 22.5 vs 21.6 s, Amazon Games ``bce`` 3.2 vs 3.9 s): those steps are bound by memory passes over the
attention weights and the scores, by per-operation overhead, and by the conversions bf16 adds, not by the
products. ``bf16`` stays available on a CPU for larger models; the measurements are in ``docs/speed.md``.

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


def resolve(precision: str, device: torch.device) -> str:
    """``fp32`` or ``bf16`` for a requested ``precision`` (one of :data:`PRECISIONS`) on ``device``; ``auto`` is
    ``bf16`` on a CUDA device that supports it, else ``fp32`` (see the module docstring).

    Raises:
        ValueError: an unknown ``precision``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


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
