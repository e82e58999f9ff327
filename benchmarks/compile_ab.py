"""``torch.compile`` against eager on Amazon Games training steps: ``python benchmarks/compile_ab.py --data-dir DIR``.

Each mode runs in a fresh process on the same 300 length-bucketed batches (paper settings, ``bce``): 150 steps
that include compilation, then the other 150 twice; the faster of the two is reported per step. Modes: eager
and ``torch.compile(model, dynamic=True)`` (sequence length marked dynamic, so a new batch length does not
recompile), each with the CPU kernels (NumPy dropout masks, kept out of the graph with
``torch.compiler.disable``: Dynamo cannot trace ``Generator.bytes``) and with ``TorchKernels`` (torch's own
dropout, no graph break). Writes ``results/compile_ab.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from sasrec.bench import cpu_model

MODES = ("eager", "compile", "eager-torchkernels", "compile-torchkernels")


def measure(mode: str, data_dir: str, threads: int) -> dict:
    """Time ``mode`` in this process (see the module docstring)."""
    from sasrec import kernels, model
    from sasrec.config import Config
    from sasrec.data.registry import preset_values
    from sasrec.runs import RunDir
    from sasrec.train import Trainer

    values = {**preset_values("games"), "dataset": f"{data_dir}/Video.txt", "threads": threads, "quiet": True}
    trainer = Trainer(Config(**values, seed=1), RunDir(f"/tmp/compile_ab/{mode}"))
    if mode.endswith("torchkernels"):
        for module in trainer.model.modules():
            if hasattr(module, "kernels"):
                module.kernels = model.TorchKernels()
    net = trainer.model
    if mode.startswith("compile"):
        kernels.CPUKernels.mask = torch.compiler.disable(kernels.CPUKernels.mask)
        net = torch.compile(trainer.model, dynamic=True)
    batches = trainer.sampler.epoch_order()[:300]

    def steps(chunk: list) -> float:
        start = time.perf_counter()
        for users in chunk:
            batch = trainer.sampler.make_batch(users)
            seq, pos, neg = (torch.from_numpy(a) for a in (batch.seq, batch.pos, batch.neg))
            real = pos > 0
            hidden = net(seq)[real]
            loss = trainer.loss_fn(hidden, pos[real], neg[real] if neg.dim() == 3 else neg, trainer.model.output_weight)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
        return time.perf_counter() - start

    first = steps(batches[:150])
    later = [steps(batches[150:]) for _ in range(2)]
    return {
        "mode": mode,
        "first_150_steps_s": round(first, 2),
        "next_150_steps_s": [round(t, 2) for t in later],
        "ms_per_step": round(min(later) / 150 * 1000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=MODES, help="(internal) measure one mode in this process")
    parser.add_argument("--json", default="results/compile_ab.json")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.data_dir, args.threads)))
        return 0
    rows = []
    for mode in MODES:
        cmd = [sys.executable, __file__, "--mode", mode, "--data-dir", args.data_dir, "--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu_model": cpu_model(),
        "threads": args.threads,
        "torch": torch.__version__,
        "command": "python benchmarks/compile_ab.py " + " ".join(sys.argv[1:]),
        "rows": rows,
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
