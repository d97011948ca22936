"""The training loop: ``fit(cfg)`` turns a config into a run folder with checkpoints and metrics.

Resumable (``resume=True`` continues from ``last.pt``: weights, optimiser, scheduler, EMA, RNG
and epoch — and extends a finished run when ``train.epochs`` grew), interruptible (Ctrl-C saves
``last.pt`` and returns), and strict about divergence (a non-finite loss stops the run with a
clear message; the last good checkpoint is kept). Under ``torchrun`` it trains with DDP.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from seg.config import Config
from seg.config_diff import config_changes
from seg.data.datalist import build_datalist
from seg.data.loaders import build_loaders
from seg.engine import distributed as dist
from seg.engine.checkpoint import (
    Checkpoint,
    TrainingState,
    capture_rng,
    load_checkpoint,
    load_weights,
    restore_rng,
    save_checkpoint,
)
from seg.engine.optim import build_ema, build_optimizer, build_scheduler, seed_everything
from seg.engine.run_folder import RunFolder
from seg.engine.validate import validate
from seg.errors import CheckpointError, SegError
from seg.losses import build_loss
from seg.models import create_model
from seg.models.factory import check_model_config, is_deep_supervised

log = logging.getLogger(__name__)


class TrainingError(SegError, RuntimeError):
    """Training cannot go on (diverged, bad run folder...); the message says why and what to do."""


@dataclass
class FitResult:
    """Where the run is and how it ended."""

    run_dir: Path
    epochs_done: int
    best_metric: float | None  # None: never validated (an empty validation split)
    interrupted: bool = False


class Trainer:
    """Holds the model, optimisation state and run folder of one run."""

    def __init__(self, cfg: Config, run_dir: Path, progress: bool = True) -> None:
        self.cfg = cfg
        self.ctx = dist.init()
        self.device = dist.pick_device(cfg.train.device, self.ctx)
        # Bars only on a terminal: in a log file each refresh would be a line (the epoch lines stay).
        self.progress = progress and self.ctx.is_main and sys.stderr.isatty()
        self.folder = RunFolder(run_dir) if self.ctx.is_main else None
        self.run_dir = Path(run_dir)
        seed_everything(cfg.seed + self.ctx.rank, cfg.train.deterministic)
        dist.main_first(self.ctx, lambda: build_datalist(cfg.data))  # e.g. synthetic data written once
        self.loaders = build_loaders(cfg, seed=cfg.seed, rank=self.ctx.rank, world_size=self.ctx.world_size,
                                     barrier=lambda: dist.barrier(self.ctx))
        self.model = create_model(cfg).to(self.device)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=_channels_last(cfg.data.spatial_dims))
        self.deep_supervision = is_deep_supervised(self.model)
        self.net = dist.wrap(self.model, self.ctx, self.device)
        if cfg.train.compile:
            self.net = torch.compile(self.net)
        self.loss_fn = build_loss(cfg, self.deep_supervision)
        self.opt = build_optimizer(self.model, cfg.train)
        self.sched = build_scheduler(self.opt, cfg.train, cfg.train.epochs * cfg.train.iters_per_epoch)
        self.ema = build_ema(self.model, cfg.train.ema)
        self.amp = cfg.train.amp and self.device.type == "cuda"
        self.epoch = 0
        self.best = -math.inf
        self.interrupted_mid_epoch = False

    # ---------------------------------------------------------------- checkpoints
    def checkpoint(self, path: Path) -> Checkpoint:
        """The run as it stands: evaluation weights, config, and the state to resume from."""
        eval_model = self.ema.module if self.ema is not None else self.model
        training = TrainingState(
            model_state=self.model.state_dict(), optimizer=self.opt.state_dict(),
            scheduler=self.sched.state_dict(), epoch=self.epoch, best_metric=self.best, rng=capture_rng(),
            ema=self.ema.state_dict() if self.ema is not None else None,
            split={"train": self.loaders.train_ids, "val": self.loaders.val_ids},
            interrupted_mid_epoch=self.interrupted_mid_epoch)
        provenance = {"model_name": self.cfg.model.name, "labels": dict(self.cfg.data.labels),
                      "regions": {k: list(v) for k, v in self.cfg.data.regions.items()}}
        return Checkpoint(path, self.cfg.to_dict(), eval_model.state_dict(), training, provenance)

    def save(self, best: bool = False) -> None:
        if self.folder is None:
            return
        checkpoint = self.checkpoint(self.folder.last)
        save_checkpoint(checkpoint)
        if best:
            save_checkpoint(checkpoint, self.folder.best)

    def restore(self, path: Path) -> None:
        ck = load_checkpoint(path, map_location=self.device)
        state = ck.training
        if state is None:
            raise CheckpointError(f"{path}: not a resumable checkpoint (no training state: model_state, "
                                  "optimizer, scheduler, epoch, best_metric, rng)")
        load_weights(self.model, state.model_state, path, "model_state")
        if self.ema is not None and state.ema is not None:
            load_weights(self.ema, state.ema, path, "ema")
        try:
            self.opt.load_state_dict(state.optimizer)
            self.sched.load_state_dict(state.scheduler)
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{path}: optimiser/scheduler state does not fit this run ({err})") from None
        self.epoch, self.best = state.epoch, state.best_metric
        restore_rng(state.rng)
        if self.folder is not None:
            self.folder.truncate_metrics(self.epoch)
        log.info("resumed from %s at epoch %d", path, self.epoch)

    # ---------------------------------------------------------------- loop
    def train_epoch(self) -> float:
        self.net.train()
        self._reseed_epoch()
        total, count = 0.0, 0
        bar = tqdm(self.loaders.train, desc=f"epoch {self.epoch + 1}/{self.cfg.train.epochs}",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        for batch in bar:
            loss = self.train_step(batch)
            total, count = total + loss, count + 1
            bar.set_postfix(loss=f"{total / count:.4f}")
        return dist.mean_across(total / max(count, 1), self.ctx, self.device)

    def train_step(self, batch: dict) -> float:
        x = batch["image"].to(self.device, non_blocking=True)
        y = batch["label"].to(self.device, non_blocking=True).float()  # DS resizes labels: needs float
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=_channels_last(self.cfg.data.spatial_dims))
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.net(x)
            loss = self.loss_fn(out, y) if self.deep_supervision else self.loss_fn(_single(out), y)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at epoch {self.epoch + 1}: training diverged. The last good "
                f"checkpoint is kept in {self.run_dir}; lower train.lr or set train.grad_clip.")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.opt.step()
        self.sched.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return float(loss.detach())

    def _reseed_epoch(self) -> None:
        """Tie the patch sampler and augmentation RNG to (seed, rank, epoch): resume is exact."""
        seed = (self.cfg.seed * 1_000_003 + self.ctx.rank * 10_007 + self.epoch) % (2**31)
        self.loaders.train.sampler.generator.manual_seed(seed)
        if self.loaders.train.generator is not None:  # seeds the loader workers' augmentation
            self.loaders.train.generator.manual_seed(seed + 1)
        transform = getattr(self.loaders.train.dataset, "transform", None)
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=seed)

    def run(self, resume: bool, stop_after: int | None = None) -> FitResult:
        if resume:
            self.restore(self.run_dir / "last.pt")
        if self.folder is not None:
            self.folder.write_config(self.cfg)
            self.folder.start_logging()
        try:
            return self._loop(stop_after)
        finally:
            if self.folder is not None:
                self.folder.stop_logging()
            dist.cleanup(self.ctx)

    def _loop(self, stop_after: int | None) -> FitResult:
        cfg = self.cfg.train
        end = cfg.epochs if stop_after is None else min(cfg.epochs, self.epoch + stop_after)
        while self.epoch < end:
            start = time.perf_counter()
            try:
                train_loss = self.train_epoch()
            except KeyboardInterrupt:
                self.interrupted_mid_epoch = True
                self.save()
                log.warning("interrupted: saved %s; continue with --resume", self.run_dir / "last.pt")
                return FitResult(self.run_dir, self.epoch, self._best(), interrupted=True)
            self.epoch += 1
            self.interrupted_mid_epoch = False
            record = {"epoch": self.epoch, "train_loss": train_loss, "lr": self.opt.param_groups[0]["lr"]}
            improved = False
            if self.epoch % cfg.val_every == 0 or self.epoch == cfg.epochs:
                record.update(self.run_validation())
                score = record["val_dice_mean"]
                improved = score is None or score >= self.best or not math.isfinite(self.best)
                self.best = max(self.best, score) if improved and score is not None else self.best
            record["seconds"] = round(time.perf_counter() - start, 3)
            self.save(best=improved)
            if self.folder is not None:
                self.folder.log_epoch(record)
            log.info("epoch %d: %s", self.epoch, {k: v if v is None else round(v, 4) for k, v in record.items()
                                                 if k != "epoch"})
        return FitResult(self.run_dir, self.epoch, self._best())

    def _best(self) -> float | None:
        """The best validation score, or None when no validation ever scored a case."""
        return self.best if math.isfinite(self.best) else None

    def run_validation(self) -> dict[str, float | None]:
        if not self.ctx.is_main or len(self.loaders.val) == 0:
            return {"val_dice_mean": None}  # not a score: no case was validated (an empty split, or a non-main rank)
        model = self.ema.module if self.ema is not None else self.model
        return validate(model, self.loaders.val, self.cfg, self.device, limit=self.cfg.train.val_cases)


def _single(out):
    return out[0] if isinstance(out, (list, tuple)) else out


def _channels_last(spatial_dims: int) -> torch.memory_format:
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def default_run_dir(cfg: Config) -> Path:
    return Path(cfg.output_dir) / cfg.name


def resumed_config(ck: Checkpoint, cfg: Config) -> Config:
    """The config a resumed run trains with: ``cfg`` where it only changes what resuming may change
    (more epochs, where it runs and caches, how it predicts), never silently the run's own otherwise.

    Raises:
        TrainingError: ``cfg`` changes a training setting (named with both values): resuming would
            ignore it.
        CheckpointError: the stored weights do not fit the stored config (checked before any data).
    """
    stored = ck.config
    if ck.training is not None:  # fail on wrong weights before any data is read (restore checks the rest)
        ck.build_model("trained")
    changes = config_changes(ck.config_dict, cfg.to_dict())
    if changes:
        shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
        raise TrainingError(f"{ck.path}: --resume continues the run as it was configured, so these settings "
                            f"would be ignored: {shown}. Drop them, or train a new run (name=...)")
    resumed = cfg.model_copy(deep=True)
    resumed.train.epochs = max(stored.train.epochs, cfg.train.epochs)
    return resumed


def fit(cfg: Config, run_dir: Path | None = None, resume: bool = False, progress: bool = True,
        stop_after: int | None = None) -> FitResult:
    """Train ``cfg`` into ``run_dir`` (default ``output_dir/name``).

    Args:
        resume: continue from ``run_dir/last.pt``; ``cfg`` may raise ``train.epochs`` (to extend a
            finished run) and change where the run executes and caches; any other change is refused
            (see :func:`resumed_config`).
        stop_after: train at most this many epochs in this call (e.g. a job's time slice);
            ``resume`` continues exactly where it stopped.

    Raises:
        ConfigError: an unknown model name or a setting the model cannot honour (before any data is read).
        CheckpointError: ``last.pt`` does not fit the model its config describes (resume).
        TrainingError: the run folder already holds a run (and resume is off), there is nothing to
            resume, or the loss diverged.
    """
    check_model_config(cfg)
    run_dir = Path(run_dir or default_run_dir(cfg))
    last = run_dir / "last.pt"
    if resume:
        if not last.is_file():
            raise TrainingError(f"nothing to resume: {last} does not exist")
        cfg = resumed_config(load_checkpoint(last), cfg)
    elif last.is_file():
        raise TrainingError(f"{run_dir} already holds a run; pass --resume to continue it, or choose "
                            "another run folder (name=... or output_dir=...)")
    return Trainer(cfg, run_dir, progress=progress).run(resume, stop_after)
