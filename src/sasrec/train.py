"""The training loop: sample batches, BCE (or another loss), Adam; validate, keep the best, test once.

What a run writes, and where, is :mod:`sasrec.runs`'s business (:class:`sasrec.runs.RunDir`). Under
``torchrun`` every process trains on its share of each global batch and evaluates its share of the users,
and only rank 0 writes the run directory (see :mod:`sasrec.distributed`).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sasrec import distributed, precision, stops
from sasrec.config import Config, split_metric
from sasrec.data.dataset import Sequences, Split, split_leave_one_out
from sasrec.distributed import DistInfo
from sasrec.errors import ConfigError, SASRecError
from sasrec.evaluate import Evaluator, ModelScorer
from sasrec.kernels import CPUKernels
from sasrec.losses import fixed_order_sum, make_loss
from sasrec.preflight import check_run
from sasrec.runs import (
    CONFIG,
    RESUMABLE,
    RunDir,
    build_model,
    default_run_dir,
    load_dataset,
    pick_device,
    relocate_dataset,
)
from sasrec.sampling import TrainSampler


class Trainer:
    """Owns one run: data, model, optimizer, sampler, the evaluators and the run directory.

    Construction checks every setting against the data (:func:`sasrec.preflight.check_run`) and draws the
    sampled protocol's negatives for validation and the final test, so a run that cannot finish fails here,
    before its first epoch, and writes nothing: ``run``'s directory need not exist yet.

    ``dist``: this process's place in a torchrun job (default: a single process). Only its main rank writes
    and prints: those calls go through ``self.out`` (the run directory) and ``self.say``, which do nothing on
    the other ranks (:func:`sasrec.distributed.on_main`).

    Raises:
        ConfigError: a setting that cannot work on this dataset, naming the option (see :mod:`sasrec.preflight`).
    """

    def __init__(
        self,
        config: Config,
        run: RunDir,
        data: Sequences | None = None,
        fingerprint: str = "",
        dist: DistInfo | None = None,
        temporary: bool = False,
    ):
        self.config = config
        self.run = run
        self.temporary = temporary  # the caller removes the run directory after a failure (see train())
        self.dist = dist or DistInfo()
        self.out = distributed.on_main(run, self.dist)
        self.say = distributed.on_main(say, self.dist)
        self.quiet = config.quiet or not self.dist.is_main
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        if data is None:
            data, fingerprint = load_dataset(config)
        self.fingerprint = fingerprint
        self.split: Split = split_leave_one_out(data)
        self.loss_fn = make_loss(config.loss, config.negatives, **config.loss_options)
        check_run(config, self.split, self.loss_fn)
        self.device = self.dist.device if self.dist.enabled else pick_device(config.device)
        # Dropout masks from NumPy's generator: bit-reproducible, resumable, and 5x cheaper on CPU.
        self.dropout_rng = np.random.default_rng([config.seed, 1])
        self.model = build_model(config, data.num_items, CPUKernels(self.dropout_rng)).to(self.device)
        self.precision = precision.resolve(config.precision, self.device)  # "fp32" or "bf16"
        self.net = distributed.wrap_model(self.model, self.dist)  # training forward (DDP averages gradients)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=config.lr,
            betas=(config.adam_beta1, config.adam_beta2),
            fused=self.device.type == "cpu" or None,
        )
        self.sampler = TrainSampler(
            self.split.train,
            config.maxlen,
            config.batch_size,
            self.loss_fn.num_negatives,
            config.batching,
            seed=config.seed,
            shared_negatives=self.loss_fn.shared,
        )
        # HR@10 and NDCG@10 for the per-epoch line, plus the selection metric's K.
        ks = (10, split_metric(config.metric)[1])
        self.validator = Evaluator(
            self.split, "valid", config.val_protocol, ks=ks, num_negatives=config.eval_negatives, seed=config.seed
        )
        self.testers = {
            protocol: Evaluator(self.split, "test", protocol, num_negatives=config.eval_negatives, seed=config.seed)
            for protocol in ("sampled", "full")
        }
        self.epoch = 0
        self.saved_epoch = 0  # the epoch last.safetensors holds (what a stop keeps)
        self.best = {"epoch": 0, "value": -np.inf, "bad_evals": 0}

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self) -> tuple[float, int]:
        """One pass of the sampler; returns (mean loss, real positions trained on).

        Distributed, every rank draws the same global batches and trains on its rows of each; its mean loss
        is weighted so that DDP's gradient average is the whole batch's gradient (``shard_batch``).

        Raises:
            SASRecError: a step's loss is not finite (the model diverged). The model in memory is then
                unusable; the run directory still holds the last completed epoch.
        """
        self.model.train()
        # Distributed: per-rank dropout masks, re-created by --resume (no-op in a single process).
        distributed.seed_epoch(self.config.seed, self.epoch, self.dist, self.dropout_rng)
        total, steps, positions = 0.0, 0, 0
        batches = self.sampler.epoch_order()
        mean_positions = self.sampler.positions(batches) / len(batches)
        # disable=None: a bar only when stderr is a terminal, never thousands of redrawn lines in a log file
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}", leave=False, disable=self.quiet or None, unit="batch")
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
            with precision.autocast(self.precision, self.device):
                hidden = self.net(seq)[real]  # (P, d): only real positions enter the loss
                neg = neg[real] if neg.dim() == 3 else neg  # (P, N) per position, or (N,) shared by the batch
                loss = self.loss_fn(hidden, pos[real], neg, self.model.output_weight).float() * share
            if self.config.l2_emb:  # tf l2_regularizer on the input item embedding, as the reference
                loss = loss + self.config.l2_emb * 0.5 * fixed_order_sum(self.model.item_emb.weight.pow(2))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            value = loss.item()
            if not math.isfinite(value):
                raise self._diverged(f"step {steps + 1} of {len(batches)} has loss {value}")
            total += value
            steps += 1
            bar.set_postfix(loss=f"{total / steps:.4f}")
        return distributed.mean_over_ranks(total, self.dist) / max(steps, 1), positions

    def validate(self) -> dict[str, float]:
        scorer = ModelScorer(self.model, self.device)
        return distributed.evaluate(self.validator, scorer, self.dist, progress=False if self.quiet else None).metrics

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        cfg = self.config
        started = time.perf_counter()
        while self.epoch < cfg.epochs:
            start = time.perf_counter()
            loss, positions = self.train_epoch()
            # A last step can leave non-finite weights behind a finite loss; they must not be saved.
            bad = [name for name, p in self.model.named_parameters() if not torch.isfinite(p).all()]
            if bad:
                raise self._diverged(f"its last step left non-finite weights in {', '.join(bad[:3])}")
            self.epoch += 1
            record: dict[str, Any] = {
                "epoch": self.epoch,
                "loss": round(loss, 6),
                "train_seconds": round(time.perf_counter() - start, 3),
                "positions": positions,
            }
            stop = improved = False
            if self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs:
                t0 = time.perf_counter()
                metrics = self.validate()
                record["eval_seconds"] = round(time.perf_counter() - t0, 3)
                record["valid"] = metrics
                value = metrics[cfg.metric]
                improved = value > self.best["value"]
                if improved:
                    self.best = {"epoch": self.epoch, "value": value, "bad_evals": 0}
                else:
                    self.best["bad_evals"] += 1
                    stop = cfg.patience > 0 and self.best["bad_evals"] >= cfg.patience
            # The epoch's files are written together: Ctrl-C or SIGTERM arriving meanwhile takes effect after.
            with stops.deferred():
                if improved:
                    meta = {"epoch": self.epoch, cfg.metric: value, "num_items": self.split.num_items}
                    self.out.save_best(self.model, meta)
                self.out.append_log(record)  # log first: resume drops lines newer than the checkpoint
                self._save_last()
            if not self.quiet:
                print(_format_record(record, cfg.metric, cfg.val_protocol), flush=True)
            if stop:
                self.say(f"early stop: {cfg.metric} has not improved for {cfg.patience} evaluations")
                break
            over_budget = time.perf_counter() - started > 60 * cfg.max_minutes
            if cfg.max_minutes and distributed.any_rank(over_budget, self.dist):  # all ranks stop together
                self.say(f"time budget of {cfg.max_minutes} minutes reached after epoch {self.epoch}")
                break
        return self.best

    def _diverged(self, what: str) -> SASRecError:
        """The error that stops a diverged run: where, what, what to try, and what was kept."""
        cfg = self.config
        tries = f"a lower --lr (now {cfg.lr:g})" + (f" or --l2-emb (now {cfg.l2_emb:g})" if cfg.l2_emb else "")
        if self.temporary:
            kept = "the run was in a temporary directory, so nothing was kept"
        elif self.epoch:
            kept = f"{self.run.path} keeps epoch {self.epoch}, the last good one (no results were written)"
        else:
            kept = "no epoch was saved"
        return SASRecError(f"training diverged in epoch {self.epoch + 1}: {what}; try {tries} in a new run; {kept}")

    # ------------------------------------------------------------------ state
    def _save_last(self) -> None:
        meta = {
            "epoch": self.epoch,
            "best": {**self.best, "value": float(self.best["value"])},
            "sampler_rng": self.sampler.rng.bit_generator.state,
            "dropout_rng": self.dropout_rng.bit_generator.state,
            "num_items": self.split.num_items,
        }
        self.out.save_last(self.model, meta, self.optimizer, {"torch_rng": torch.get_rng_state()})
        self.saved_epoch = self.epoch

    def resume(self) -> None:
        """Continue from ``last.safetensors``, or from epoch 0 when no epoch was saved (a run killed early).

        Raises:
            SASRecError: the dataset changed, or ``last.safetensors`` is damaged (named, with what to do).
            ConfigError: the run is complete and the settings would not train it further.
        """
        path = self.run.path
        if self.fingerprint:
            self.run.check_dataset(self.config.dataset, self.fingerprint)
        if not self.run.has_epoch():
            self.out.discard_unsaved()
            if self.fingerprint and self.run.dataset_fingerprint() is None:
                self.out.write_fingerprint(self.fingerprint)
            return
        meta, extra = self.run.load_checkpoint(
            "last",
            self.model,
            self.optimizer,
            fix=f"delete it and run `sasrec train --resume {path}` to train again from epoch 0 (replacing "
            f"its log and best checkpoint), or evaluate the best checkpoint as it is",
        )
        self.run.check_settings(meta)
        self.epoch = self.saved_epoch = meta["epoch"]
        self.best = meta["best"]
        if (self.run / "results.json").exists():
            cfg = self.config
            needs = []
            if self.epoch >= cfg.epochs:
                needs.append(f"--epochs N with N > {self.epoch} (the total to reach)")
            if cfg.patience and self.best["bad_evals"] >= cfg.patience:
                needs.append(
                    f"--patience N with N > {self.best['bad_evals']} ({cfg.metric} has not improved in its last "
                    f"{self.best['bad_evals']} evaluations)"
                )
            if needs:
                raise ConfigError(
                    f"{path} is complete: it trained {self.epoch} epoch{'s' if self.epoch != 1 else ''} and wrote its "
                    "test results; "
                    f"to train it further, pass {' and '.join(needs)}"
                )
        self.sampler.rng.bit_generator.state = meta["sampler_rng"]
        self.dropout_rng.bit_generator.state = meta["dropout_rng"]
        torch.set_rng_state(extra["torch_rng"])
        self.out.truncate_log(self.epoch)

    def test(self) -> dict[str, Any]:
        """Evaluate the best checkpoint once on the test split, under both protocols."""
        distributed.barrier(self.dist)  # rank 0 may still be writing best.safetensors
        if (self.run / "best.safetensors").exists():
            self.run.load_checkpoint("best", self.model)
        scorer = ModelScorer(self.model, self.device)
        results = {
            "best_epoch": self.best["epoch"],
            f"valid_{self.config.metric}": float(self.best["value"]),
            "precision": self.precision,
        }
        for protocol, evaluator in self.testers.items():
            results[protocol] = distributed.evaluate(
                evaluator, scorer, self.dist, progress=False if self.quiet else None
            ).to_json()
        self.out.write_results(results)
        return results


def _format_record(record: dict[str, Any], metric: str, protocol: str) -> str:
    text = f"epoch {record['epoch']:4d}  loss {record['loss']:.4f}  {record['train_seconds']:.2f}s"
    if "valid" in record:
        v, k = record["valid"], split_metric(metric)[1]  # at the selection metric's K: what picks the best epoch
        hr, ndcg = v.get(f"HR@{k}", float("nan")), v.get(f"NDCG@{k}", float("nan"))
        text += f"  valid {protocol} HR@{k} {hr:.4f}  NDCG@{k} {ndcg:.4f}"  # the two protocols differ 10-fold
    return text


def resume_config(run: RunDir, changes: dict[str, Any]) -> Config:
    """The run's saved config with ``changes`` (non-None command-line values) applied; refuses the others.

    ``data_dir`` is where to look for the run's dataset file when it has moved (its fingerprint is still
    checked); a ``dataset`` naming the run's own file, in any spelling, is no change.

    Raises:
        ConfigError: a change outside :data:`RESUMABLE`, named with the flags a resume accepts.
    """
    given = {k: v for k, v in changes.items() if v is not None}
    saved = relocate_dataset(run.read_config(), given.pop("data_dir", None))
    if "dataset" in given and Path(given["dataset"]).resolve() == Path(saved.dataset).resolve():
        del given["dataset"]
    refused = sorted(k for k, v in given.items() if k not in RESUMABLE and v != getattr(saved, k, v))
    if refused:
        flags = ", ".join("--loss-option" if k == "loss_options" else "--" + k.replace("_", "-") for k in refused)
        allowed = ", ".join("--" + k.replace("_", "-") for k in RESUMABLE)
        raise ConfigError(
            f"--resume continues {run.path} with its saved settings; {flags} cannot change "
            f"(a resume accepts {allowed}, and --data-dir to find a moved dataset file); "
            "start a new run with --out to change them"
        )
    values = {**saved.to_dict(), **{k: v for k, v in given.items() if k in RESUMABLE}}
    config = Config(**values)
    config.validate()
    return config


def train(
    config: Config | None = None,
    resume: str | Path | None = None,
    data: Sequences | None = None,
    changes: dict[str, Any] | None = None,
    temporary: bool = False,
) -> dict[str, Any]:
    """Train a new run (``config``) or resume one (``resume``: its directory; ``changes``: values to apply,
    see :func:`resume_config`), then test its best checkpoint; returns the test results.

    ``temporary``: the run directory is removed after a stop (the caller's temporary directory), so the
    stop message offers no resume.

    Under torchrun (``WORLD_SIZE`` set) this process joins the job's process group first.
    """
    if resume is not None:
        run = RunDir.open(resume, need=CONFIG)  # without last.safetensors: resumed from epoch 0
        config = resume_config(
            run, {**(changes or {}), **({"device": config.device, "quiet": config.quiet} if config is not None else {})}
        )
    elif config is None:
        raise ConfigError("train() needs a config or a run directory to resume")
    info = distributed.init_from_env(pick_device(config.device))
    try:
        with distributed.fail_clearly(info), stops.sigterm_as_interrupt():
            results = _train(config, resume, data, info, temporary)
            try:
                distributed.finish(info)
            except KeyboardInterrupt:
                pass  # the run is complete and its results printed: a stop now only skips the last wait
            return results
    finally:
        distributed.cleanup(info)


def _train(
    config: Config, resume: str | Path | None, data: Sequences | None, info: DistInfo, temporary: bool = False
) -> dict[str, Any]:
    fingerprint = ""
    try:
        if data is None:  # before the run directory exists: a bad dataset leaves nothing behind
            data, fingerprint = load_dataset(config, resume)
        if resume is not None:
            run = RunDir.open(resume, need=CONFIG)
        else:
            # Every rank takes rank 0's name: the default one holds the time, which may differ between ranks.
            run = RunDir(distributed.broadcast_object(str(config.out or default_run_dir(config)), info))
            distributed.on_main(RunDir.check_new, info)(run.path)
        # Before the directory is made: a run that could not finish fails here, leaving nothing behind.
        trainer = Trainer(config, run, data, fingerprint, dist=info, temporary=temporary)
    except KeyboardInterrupt as exc:
        with stops.ignored():
            changed = "the run was not changed" if resume is not None else "nothing was written"
            distributed.on_main(say_stop, info)(f"\n{stops.reason(exc)} while starting; {changed}")
            stops.mark_reported(exc)
        raise
    out = trainer.out
    try:
        if resume is None:
            out.create(run.path)
        out.lock()
        results = _run(trainer, resume is not None)
    except BaseException as exc:
        with stops.ignored():
            tell = distributed.on_main(say_stop, info)
            try:
                what = stops.reason(exc)
                if resume is None and not run.has_epoch():
                    out.remove_if_unfinished()  # nothing to resume: leave no half-made run directory
                    if isinstance(exc, KeyboardInterrupt):
                        tell(f"\n{what} before the first epoch was saved; nothing was kept")
                elif isinstance(exc, KeyboardInterrupt) and temporary:
                    tell(f"\n{what}; the run was in a temporary directory, so nothing was kept")
                elif isinstance(exc, KeyboardInterrupt):
                    kept = f"epoch {trainer.saved_epoch} is saved"
                    tell(f"\n{what}; {kept}; continue with `sasrec train --resume {run.path}`")
                if isinstance(exc, KeyboardInterrupt):
                    stops.mark_reported(exc)
            finally:
                run.unlock()
        raise
    with stops.ignored():  # the run is complete (results.json written): a stop now would only garble the report
        run.unlock()
        distributed.on_main(print_results, info)(results, config.metric, config.val_protocol)
    return results


def _run(trainer: Trainer, resuming: bool) -> dict[str, Any]:
    config, run, info, out = trainer.config, trainer.run, trainer.dist, trainer.out
    if resuming:
        trainer.resume()
        out.write_config(config)  # the settings a resume changed (--epochs ...) hold for later resumes
        trainer.say(
            f"resuming {run.path} after epoch {trainer.epoch}"
            if trainer.epoch
            else f"{run.path} holds no saved epoch; training it from epoch 0"
        )
    else:
        out.begin(config, trainer.fingerprint)
    if not trainer.quiet:  # --quiet, or not rank 0
        s = trainer.split
        print(
            f"run {run.path}: {s.num_users} users, {s.num_items} items, {len(s.train.items)} training items; "
            f"{sum(p.numel() for p in trainer.model.parameters())} parameters; precision {trainer.precision}"
            + (" (auto)" if config.precision == "auto" else "")
            + (f"; {info.world} processes ({info.backend})" if info.enabled else ""),
            flush=True,
        )
    trainer.fit()
    out.plot()
    return trainer.test()


def say(text: str) -> None:
    """Print a line now (a log file may be watched while the run goes on)."""
    print(text, flush=True)


def say_stop(text: str) -> None:
    """Print what a stop kept, on stderr like an error's line, so that piped results stay clean."""
    print(text, file=sys.stderr, flush=True)


def print_results(results: dict[str, Any], metric: str, protocol: str) -> None:
    """The final test metrics (always printed, even with --quiet: they are the run's answer); ``protocol``:
    the validation protocol that chose the best epoch."""
    value = results[f"valid_{metric}"]
    print(f"best epoch {results['best_epoch']} (validation {protocol} {metric} {value:.4f}); test metrics:")
    for protocol in ("sampled", "full"):
        m = results[protocol]["metrics"]
        users = results[protocol]["users"]
        print(f"  {protocol:8s} HR@10 {m['HR@10']:.4f}  NDCG@10 {m['NDCG@10']:.4f}  ({users} users)", flush=True)
