"""The whole process against the reference, side by side: ``python benchmarks/whole_process.py --reference DIR``.

Times, as fresh processes and alternating between the two, ``sasrec train --dataset games --epochs 3``
(loading, 3 epochs each followed by validation, checkpoints, the final test under both protocols, plots) and
the reference implementation pmixer/SASRec.pytorch on the same file for the same 3 epochs with the paper's
Games settings (``python main.py --dataset=Video --maxlen=50 --dropout_rate=0.5 --device=cpu
--num_epochs=3``; it evaluates only every 20 epochs, so it does less work). ``--reference`` is a checkout of
that repository (not part of this project); ``Video.txt`` is linked into its ``python/data``. Run it on an
otherwise idle machine. Writes ``results/whole_process.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sasrec.bench import cpu_model


def timed(cmd: list[str], cwd: Path, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="where Video.txt is")
    parser.add_argument("--reference", type=Path, help="a checkout of pmixer/SASRec.pytorch (omit: ours only)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="fp32", help="our --precision")
    parser.add_argument("--json", type=Path, default=Path("results/whole_process.json"))
    args = parser.parse_args()
    video = (args.data_dir / "Video.txt").resolve()
    if not video.exists():
        print(f"{video} not found: nothing to measure (pass --data-dir)")
        return 1
    times: dict[str, list[float]] = {"ours": [], "reference": []}
    with tempfile.TemporaryDirectory() as tmp:
        if args.reference:
            data = args.reference / "python" / "data"
            data.mkdir(exist_ok=True)
            link = data / "Video.txt"
            if not link.exists():
                link.symlink_to(video)
        for repeat in range(args.repeats):
            ours = [sys.executable, "-m", "sasrec", "train", "--quiet", "--dataset", "games"]
            ours += ["--data-dir", str(video.parent), "--epochs", str(args.epochs), "--threads", str(args.threads)]
            ours += ["--precision", args.precision, "--out", f"{tmp}/ours{repeat}"]
            times["ours"].append(timed(ours, Path.cwd(), args.threads))
            if args.reference:
                reference = [sys.executable, "main.py", "--dataset=Video", f"--train_dir=bench{repeat}"]
                reference += ["--maxlen=50", "--dropout_rate=0.5", "--device=cpu", f"--num_epochs={args.epochs}"]
                times["reference"].append(timed(reference, args.reference / "python", args.threads))
            print(json.dumps({k: [round(t, 2) for t in v] for k, v in times.items()}), flush=True)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu_model": cpu_model(),
        "threads": args.threads,
        "epochs": args.epochs,
        "precision": args.precision,
        "seconds": {k: [round(t, 2) for t in v] for k, v in times.items() if v},
    }
    if times["reference"]:
        report["speedup_median"] = round(statistics.median(times["reference"]) / statistics.median(times["ours"]), 2)
    print(json.dumps(report))
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
