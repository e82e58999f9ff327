"""The training loop: sample batches, BCE (or another loss), Adam; validate, keep the best, test once.

A run directory holds everything about one run:
    config.json        the resolved configuration
    fingerprint.json   dataset sha256, package version, git commit
    log.jsonl          one JSON line per epoch: loss, seconds, validation metrics when evaluated
    last.safetensors   weights + optimizer + RNG state after the last completed epoch (for --resume)
    best.safetensors   weights of the epoch with the best validation metric
    learning_curve.png validation HR@10 / NDCG@10 per evaluated epoch, and the loss per epoch
    results.json       test metrics of the best checkpoint under both protocols (written once, at the end)

Under ``torchrun`` every process trains on its share of each global batch and evaluates its share of the
users, and only rank 0 writes the run directory (see :mod:`sasrec.distributed`).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import sasrec
from sasrec import distributed
from sasrec.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from sasrec.config import Config, dataset_path
from sasrec.data.dataset import Sequences, Split, file_sha256, read_sasrec_file, split_leave_one_out
from sasrec.distributed import DistInfo
from sasrec.errors import ConfigError, SASRecError
from sasrec.evaluate import Evaluator, ModelScorer
from sasrec.losses import make_loss
from sasrec.model import SASRec
from sasrec.sampling import TrainSampler


def load_dataset(config: Config) -> tuple[Sequences, str]:
    """The configured dataset and its fingerprint (file sha256, or the generator's name and seed)."""
    path = dataset_path(config)
    if path is None:
        from sasrec.data.synthetic import make_synthetic

        return make_synthetic(), "synthetic:default"
    return read_sasrec_file(path), f"sha256:{file_sha256(path)}"


def build_model(config: Config, num_items: int) -> SASRec:
    return SASRec(num_items, maxlen=config.maxlen, hidden=config.hidden, num_blocks=config.num_blocks,
                  num_heads=config.num_heads, dropout=config.dropout, norm_first=config.norm_first,
                  tied_output=config.tied_output)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class Trainer:
    """Owns one run: data, model, optimizer, sampler, validation evaluator and the run directory.

    ``dist``: this process's place in a torchrun job (default: a single process). Only its main rank writes.
    """

    def __init__(self, config: Config, run_dir: Path, data: Sequences | None = None, fingerprint: str = "",
                 dist: DistInfo | None = None):
        self.config = config
        self.run_dir = run_dir
        self.dist = dist or DistInfo()
        self.quiet = config.quiet or not self.dist.is_main
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        if data is None:
            data, fingerprint = load_dataset(config)
        self.fingerprint = fingerprint
        self.split: Split = split_leave_one_out(data)
        if int((self.split.valid > 0).sum()) == 0:
            raise SASRecError("dataset too small to split: no user has 3 or more interactions "
                              "(leave-one-out needs one training, one validation and one test item)")
        self.device = self.dist.device if self.dist.enabled else pick_device(config.device)
        self.model = build_model(config, data.num_items).to(self.device)
        self.net = distributed.wrap_model(self.model, self.dist)  # training forward (DDP averages gradients)
        # Dropout masks from NumPy's generator: bit-reproducible, resumable, and 5x cheaper on CPU.
        self.dropout_rng = np.random.default_rng([config.seed, 1])
        self.model.set_dropout_generator(self.dropout_rng)
        self.loss_fn = make_loss(config.loss, config.negatives, **config.loss_options)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=(0.9, 0.98),
                                          fused=self.device.type == "cpu" or None)
        self.sampler = TrainSampler(self.split.train, config.maxlen, config.batch_size,
                                    self.loss_fn.num_negatives, config.batching, seed=config.seed,
                                    shared_negatives=self.loss_fn.shared)
        self.validator = Evaluator(self.split, "valid", config.val_protocol, ks=(10,),
                                   num_negatives=config.eval_negatives, seed=config.seed)
        self.epoch = 0
        self.best = {"epoch": 0, "value": -np.inf, "bad_evals": 0}

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self) -> tuple[float, int]:
        """One pass of the sampler; returns (mean loss, real positions trained on).

        Distributed, every rank draws the same global batches and trains on its rows of each; its mean loss
        is weighted so that DDP's gradient average is the whole batch's gradient (``shard_batch``).
        """
        self.model.train()
        # Distributed: per-rank dropout masks, re-created by --resume (no-op in a single process).
        distributed.seed_epoch(self.config.seed, self.epoch, self.dist, self.dropout_rng)
        total, steps, positions = 0.0, 0, 0
        batches = self.sampler.epoch_order()
        mean_positions = self.sampler.positions(batches) / len(batches)
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}", leave=False, disable=self.quiet, unit="batch")
        for users in bar:
            batch = self.sampler.make_batch(users)
            batch_positions = int((batch.pos > 0).sum())  # the global batch's, the same on every rank
            positions += batch_positions
            share = batch_positions / mean_positions if self.config.position_weighting else 1.0
            batch, rank_share = distributed.shard_batch(batch, self.dist)  # (batch, 1.0) in a single process
            share *= rank_share
            seq = torch.from_numpy(batch.seq).to(self.device)
            pos = torch.from_numpy(batch.pos).to(self.device)
            neg = torch.from_numpy(batch.neg).to(self.device)
            real = pos > 0
            hidden = self.net(seq)[real]  # (P, d): only real positions enter the loss
            neg = neg[real] if neg.dim() == 3 else neg  # (P, N) per position, or (N,) shared by the batch
            loss = self.loss_fn(hidden, pos[real], neg, self.model.output_weight) * share
            if self.config.l2_emb:  # tf l2_regularizer on the input item embedding, as the reference
                loss = loss + self.config.l2_emb * 0.5 * self.model.item_emb.weight.pow(2).sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item()
            steps += 1
            bar.set_postfix(loss=f"{total / steps:.4f}")
        return distributed.mean_over_ranks(total, self.dist) / max(steps, 1), positions

    def validate(self) -> dict[str, float]:
        return distributed.evaluate(self.validator, ModelScorer(self.model, self.device), self.dist).metrics

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        cfg = self.config
        log_path = self.run_dir / "log.jsonl"
        started = time.perf_counter()
        while self.epoch < cfg.epochs:
            start = time.perf_counter()
            loss, positions = self.train_epoch()
            self.epoch += 1
            record: dict[str, Any] = {"epoch": self.epoch, "loss": round(loss, 6),
                                      "train_seconds": round(time.perf_counter() - start, 3),
                                      "positions": positions}
            stop = False
            if self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs:
                t0 = time.perf_counter()
                metrics = self.validate()
                record["eval_seconds"] = round(time.perf_counter() - t0, 3)
                record["valid"] = metrics
                value = metrics[cfg.metric] if cfg.metric in metrics else self._metric_missing(metrics)
                if value > self.best["value"]:
                    self.best = {"epoch": self.epoch, "value": value, "bad_evals": 0}
                    if self.dist.is_main:
                        meta = {"epoch": self.epoch, cfg.metric: value, "num_items": self.split.num_items}
                        save_checkpoint(self.run_dir / "best.safetensors", self.model, meta)
                else:
                    self.best["bad_evals"] += 1
                    stop = cfg.patience > 0 and self.best["bad_evals"] >= cfg.patience
            if self.dist.is_main:
                with open(log_path, "a") as f:  # log first: resume drops lines newer than the checkpoint
                    f.write(json.dumps(record) + "\n")
                self._save_last()
            if not self.quiet:
                print(_format_record(record, cfg.metric), flush=True)
            if stop:
                if self.dist.is_main:
                    print(f"early stop: {cfg.metric} has not improved for {cfg.patience} evaluations",
                          flush=True)
                break
            over_budget = time.perf_counter() - started > 60 * cfg.max_minutes
            if cfg.max_minutes and distributed.any_rank(over_budget, self.dist):  # all ranks stop together
                if self.dist.is_main:
                    print(f"time budget of {cfg.max_minutes} minutes reached after epoch {self.epoch}",
                          flush=True)
                break
        return self.best

    def _metric_missing(self, metrics: dict[str, float]) -> float:
        raise ConfigError(f"validation metric {self.config.metric!r} not computed; available: {', '.join(metrics)}")

    # ------------------------------------------------------------------ state
    def _save_last(self) -> None:
        meta = {"epoch": self.epoch, "best": {**self.best, "value": float(self.best["value"])},
                "sampler_rng": self.sampler.rng.bit_generator.state,
                "dropout_rng": self.dropout_rng.bit_generator.state, "num_items": self.split.num_items}
        save_checkpoint(self.run_dir / "last.safetensors", self.model, meta, self.optimizer,
                        {"torch_rng": torch.get_rng_state()})

    def resume(self) -> None:
        meta, extra = load_checkpoint(self.run_dir / "last.safetensors", self.model, self.optimizer)
        self.epoch = meta["epoch"]
        self.best = meta["best"]
        self.sampler.rng.bit_generator.state = meta["sampler_rng"]
        self.dropout_rng.bit_generator.state = meta["dropout_rng"]
        torch.set_rng_state(extra["torch_rng"])
        log_path = self.run_dir / "log.jsonl"
        if log_path.exists() and self.dist.is_main:
            records = {}  # by epoch: drops lines newer than the checkpoint and any repeated epoch
            for line in log_path.read_text().splitlines():
                if line.strip() and json.loads(line)["epoch"] <= self.epoch:
                    records[json.loads(line)["epoch"]] = line
            atomic_write_text(log_path, "".join(records[e] + "\n" for e in sorted(records)))

    def test(self) -> dict[str, Any]:
        """Evaluate the best checkpoint once on the test split, under both protocols."""
        distributed.barrier(self.dist)  # rank 0 may still be writing best.safetensors
        if (self.run_dir / "best.safetensors").exists():
            load_checkpoint(self.run_dir / "best.safetensors", self.model)
        scorer = ModelScorer(self.model, self.device)
        results = {"best_epoch": self.best["epoch"], f"valid_{self.config.metric}": float(self.best["value"])}
        for protocol in ("sampled", "full"):
            evaluator = Evaluator(self.split, "test", protocol, num_negatives=self.config.eval_negatives,
                                  seed=self.config.seed)
            results[protocol] = distributed.evaluate(evaluator, scorer, self.dist).to_json()
        if self.dist.is_main:
            atomic_write_text(self.run_dir / "results.json", json.dumps(results, indent=2))
        return results


def _format_record(record: dict[str, Any], metric: str) -> str:
    text = f"epoch {record['epoch']:4d}  loss {record['loss']:.4f}  {record['train_seconds']:.2f}s"
    if "valid" in record:
        v = record["valid"]
        text += f"  valid HR@10 {v.get('HR@10', float('nan')):.4f}  NDCG@10 {v.get('NDCG@10', float('nan')):.4f}"
    return text


def _lock_run_dir(run_dir: Path) -> object:
    """An exclusive lock on the run directory, so two processes never train into it at once."""
    handle = open(run_dir / ".lock", "w")
    try:
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # Windows: no advisory locks, carry on
        pass
    except OSError:
        handle.close()
        raise SASRecError(f"{run_dir} is in use by another training process; wait for it or stop it") from None
    return handle


def default_run_dir(config: Config) -> Path:
    name = Path(config.dataset).stem if config.dataset not in ("synthetic",) else "synthetic"
    return Path("runs") / f"{name}-{config.loss}-seed{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(config: Config, resume: str | None = None, data: Sequences | None = None) -> dict[str, Any]:
    """Train (or resume) a run, then test its best checkpoint; returns the test results.

    Under torchrun (``WORLD_SIZE`` set) this process joins the job's process group first.
    """
    info = distributed.init_from_env(pick_device(config.device))
    try:
        with distributed.fail_clearly(info):
            results = _train(config, resume, data, info)
            distributed.finish(info)
            return results
    finally:
        distributed.cleanup(info)


def _train(config: Config, resume: str | None, data: Sequences | None, info: DistInfo) -> dict[str, Any]:
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "last.safetensors").exists():
            raise SASRecError(f"cannot resume: {run_dir} has no last.safetensors (is it a run directory?)")
        saved = json.loads((run_dir / "config.json").read_text())
        config = Config(**{**saved, "device": config.device, "quiet": config.quiet})
    else:
        # Every rank takes rank 0's name: the default one holds the time, which may differ between ranks.
        run_dir = Path(distributed.broadcast_object(str(config.out or default_run_dir(config)), info))
        if (run_dir / "last.safetensors").exists():
            raise SASRecError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_run_dir(run_dir) if info.is_main else None  # noqa: F841 - held until training ends
    trainer = Trainer(config, run_dir, data, dist=info)
    quiet = trainer.quiet  # --quiet, or not rank 0
    if resume:
        trainer.resume()
        if info.is_main:
            print(f"resuming {run_dir} after epoch {trainer.epoch}", flush=True)
    elif info.is_main:
        atomic_write_text(run_dir / "config.json", json.dumps(config.to_dict(), indent=2))
        atomic_write_text(run_dir / "fingerprint.json", json.dumps(
            {"dataset": trainer.fingerprint, "sasrec_version": sasrec.__version__, "git_commit": git_commit(),
             "torch": torch.__version__, "numpy": np.__version__}, indent=2))
    if not quiet:
        s = trainer.split
        print(f"run {run_dir}: {s.num_users} users, {s.num_items} items, {len(s.train.items)} training items; "
              f"{sum(p.numel() for p in trainer.model.parameters())} parameters"
              + (f"; {info.world} processes ({info.backend})" if info.enabled else ""), flush=True)
    try:
        trainer.fit()
    except KeyboardInterrupt:
        if info.is_main:
            print(f"\ninterrupted after epoch {trainer.epoch}; continue with --resume {run_dir}", flush=True)
        raise
    if info.is_main:
        from sasrec.plots import plot_learning_curve

        plot_learning_curve(run_dir / "log.jsonl", run_dir / "learning_curve.png")
    results = trainer.test()
    if not quiet:
        print(f"best epoch {results['best_epoch']} (validation {config.metric} "
              f"{results[f'valid_{config.metric}']:.4f}); test metrics:")
        for protocol in ("sampled", "full"):
            m = results[protocol]["metrics"]
            users = results[protocol]["users"]
            print(f"  {protocol:8s} HR@10 {m['HR@10']:.4f}  NDCG@10 {m['NDCG@10']:.4f}  ({users} users)")
    return results
