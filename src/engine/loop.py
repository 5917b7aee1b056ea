"""The one training and evaluation loop shared by fine-tuning and pretraining.

Reads top to bottom: build (task model, device, DDP/FSDP2, compile), data (sharded, resumable
order), optimizer, then per epoch: train steps (autocast, scaler, clip, step), evaluation with
exact-once sharding, model selection, snapshots and a resumable checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset
from tqdm import tqdm

from lxrt.checkpoint import atomic_write, save_state_dict
from lxrt.fileio import append_text
from lxrt.snapshot import write_facts

from . import distributed as dist_utils
from .batch import Batch
from .config import TrainConfig
from .device_features import move_features_to_device
from .distributed import DistEnv, ShardSampler
from .flops import device_peak_flops, train_flops
from .optim import build_optimizer, clip_grad_norm, current_lr
from .report import RunReport, get_logger, setup_logging
from .runfiles import start_new_run, trim_original_log
from .state import RESUME_FILE, load_training_state, rng_state, save_training_state, seed_everything, set_rng_state
from .task import Task
from .validate import check_resume_config

STEPS_FILE = "steps.jsonl"


def autocast_dtype(amp: str, device: torch.device, training: bool = True) -> torch.dtype | None:
    """``--amp``: auto = bf16 when training on CUDA (when supported); full precision on CPU and in
    evaluation-only runs, so that released checkpoints give the released predictions."""
    if amp == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if training and cuda_bf16 else None
    choices = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None, "fp32": None}
    if amp not in choices:
        raise ValueError(f"--amp must be auto, bf16, fp16 or none, got {amp!r}")
    return choices[amp]


class Trainer:
    """Runs one task: ``fit`` (train + validate + snapshots) and ``test`` (predict + write files)."""

    def __init__(self, task: Task, cfg: TrainConfig, env: DistEnv) -> None:
        self.task, self.cfg, self.env = task, cfg, env
        self.log = get_logger()
        self.out = cfg.output_dir
        self._steps_per_epoch: int | None = None
        self.started = time.perf_counter()
        self.report = RunReport(self.out, enabled=env.is_main)
        self._pending_parts: list[Mapping[str, Tensor]] = []  # per-step loss parts not yet in steps.jsonl
        model = task.build_model()
        task.load_pretrained(model)
        self.model = model.to(env.device)
        self.wrapped: nn.Module = dist_utils.wrap_model(self.model, env, fsdp=cfg.fsdp)
        if cfg.compile:
            self.wrapped = torch.compile(self.wrapped)
        self.amp_dtype = autocast_dtype(cfg.amp, env.device, training=bool(cfg.train) and not cfg.test)
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=self.amp_dtype == torch.float16)
        self.device_features: Any = None
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log.info(
            f"{task.name}: {n_params:,} parameters on {env.device} x{env.world_size}, "
            f"precision {self.amp_dtype or torch.float32}, compile={cfg.compile}, fsdp={cfg.fsdp}"
        )

    # ----------------------------------------------------------------------------- helpers
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.amp_dtype)

    def _loader(self, dataset: Dataset, sampler: ShardSampler, batch: int, drop_last: bool, seed: int) -> DataLoader:
        # A generator of our own keeps DataLoader start-up from drawing on the global RNG, so a
        # resumed run sees the same dropout masks as an uninterrupted one. Features already on the
        # device are gathered in this process: no worker sits between them and the model.
        on_device = self.device_features is not None and getattr(dataset, "features", None) is self.device_features
        return DataLoader(
            dataset,
            batch_sampler=BatchSampler(sampler, batch, drop_last=drop_last),
            collate_fn=self.task.collator(dataset),
            num_workers=0 if on_device else self.cfg.num_workers,
            pin_memory=self.env.device.type == "cuda" and not on_device,
            generator=torch.Generator().manual_seed(seed),
        )

    def _features_on_device(self, *datasets: Dataset | None) -> None:
        """``--features-on-device``: copy the features these datasets use into device memory once."""
        if self.cfg.features_on_device:
            self.device_features = move_features_to_device(datasets, self.env.device, self.log)

    def _decode(self, codes: list[Tensor], ids: list[Any]) -> dict[Any, Any]:
        """Predictions from the prediction codes of many batches: one read from the device."""
        if not codes:
            return {}
        return self.task.decode_predictions(torch.cat(codes).tolist(), ids)

    def _collect(self, output: Any, batch: Batch, codes: list[Tensor], ids: list[Any],
                 predictions: dict[Any, Any]) -> None:
        """Keep this batch's predictions: as device codes when the task gives them, else decoded now."""
        batch_codes = self.task.prediction_codes(output, batch)
        if batch_codes is None:
            predictions.update(self.task.predict(output, batch))
        else:
            codes.append(batch_codes.detach())
            ids.extend(batch.ids)

    def _per_rank(self, global_batch: int) -> int:
        if global_batch % self.env.world_size:
            raise ValueError(
                f"batch size {global_batch} is not divisible by the {self.env.world_size} processes"
            )
        return global_batch // self.env.world_size

    def _progress(self, it: Any, total: int, desc: str) -> Any:
        if not (self.cfg.progress and self.env.is_main):
            return it
        return tqdm(it, total=total, desc=desc, dynamic_ncols=True, leave=False)

    def _save_weights(self, name: str | None) -> None:
        """The weights in the original layout, and beside them what the snapshot is (``lxrt.snapshot``)."""
        if name is None:
            return
        state = dist_utils.full_state_dict(self.wrapped)
        if self.env.is_main:
            facts = self.task.snapshot_facts(self.model)
            save_state_dict(state, self.out / name, facts=facts)
            if facts is not None:
                write_facts(self.out / name, facts)
            self.log.info(f"saved {self.out / name}")

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, dataset: Dataset, split: str) -> tuple[dict[Any, Any], dict[str, float]]:
        """Predictions for every example of ``dataset`` (exactly once) and its metrics."""
        per_rank = self._per_rank(self.cfg.eval_batch_size or self.task.default_eval_batch(self.env.world_size))
        per_rank = max(per_rank, 1)
        sampler = ShardSampler(len(dataset), shuffle=False, seed=self.cfg.seed, env=self.env)
        loader = self._loader(dataset, sampler, per_rank, drop_last=False, seed=self.cfg.seed)
        self.wrapped.eval()
        predictions: dict[Any, Any] = {}
        codes: list[Tensor] = []
        ids: list[Any] = []
        sums: dict[str, Tensor] = {}
        batches = 0
        for batch in self._progress(loader, len(loader), f"eval {split}"):
            batch = batch.to(self.env.device, non_blocking=True)
            with self._autocast():
                output = self.task.forward(self.wrapped, batch)
                if batch.targets:
                    total, parts = self.task.loss(output, batch)
                    for k, v in {"loss": total, **parts}.items():
                        sums[k] = sums.get(k, 0) + v.detach().float()
                    batches += 1
            self._collect(output, batch, codes, ids, predictions)
        predictions.update(self._decode(codes, ids))
        predictions = dist_utils.gather_dicts(predictions, self.env)
        metrics = {k: float(v) / batches for k, v in sums.items()} if batches else {}
        metrics = dist_utils.all_reduce_mean(metrics, self.env)
        metrics = {("loss" if k == "loss" else f"loss/{k}"): v for k, v in metrics.items()}
        metrics.update(self.task.score(predictions, dataset))
        return predictions, metrics

    # ----------------------------------------------------------------------------- training
    def _train_step(self, batch: Batch, optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[Tensor, Any]:
        with self._autocast():
            output = self.task.forward(self.wrapped, batch)
            loss, parts = self.task.loss(output, batch)
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        clip_grad_norm(self.wrapped, self.cfg.clip_norm)
        self.scaler.step(optimizer)
        self.scaler.update()
        if scheduler is not None:
            scheduler.step()
        return loss.detach(), (output, parts)

    def _training_states(self, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
        """Full model and optimizer states (FSDP shards gathered)."""
        if self.cfg.fsdp and self.env.distributed:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_state_dict(self.wrapped, optimizer, options=opts)
        return dist_utils.full_state_dict(self.model), optimizer.state_dict()

    def _resume_state(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
        path = self.out / RESUME_FILE
        state = load_training_state(path)
        check_resume_config(state.get("config"), self.cfg, path, state.get("steps_per_epoch"), self._steps_per_epoch)
        if self.cfg.fsdp and self.env.distributed:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            set_model_state_dict(self.wrapped, state["model"], options=StateDictOptions(full_state_dict=True))
            # Parameters that never received a gradient (the branches a pooled-only model skips)
            # have no optimizer state to restore, as in the uninterrupted run.
            set_optimizer_state_dict(self.wrapped, optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True, strict=False))
        else:
            self.model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.report.history = state.get("history", [])
        self.log.info(f"resumed from {path}: epoch {state['epoch']}, step {state['step']}")
        return state

    def _checkpoint(self, optimizer: torch.optim.Optimizer, scheduler: Any, **position: Any) -> None:
        model_state, optim_state = self._training_states(optimizer)
        if self.env.is_main:
            state = {
                "model": model_state,
                "optimizer": optim_state,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": self.scaler.state_dict(),
                "rng": rng_state(),
                "history": self.report.history,
                "config": self.cfg.to_dict(),
                "steps_per_epoch": self._steps_per_epoch,
                **position,
            }
            save_training_state(self.out / RESUME_FILE, state)
        dist_utils.barrier()

    def _epoch_progress(
        self, train_preds: dict[Any, Any], loss_sum: Tensor, part_sums: Mapping[str, Tensor], batches: int,
        seen: int, t0: float,
    ) -> dict[str, Any]:
        """The running epoch's counts so far (every rank's predictions), kept in a mid-epoch checkpoint."""
        return {
            "train_preds": dist_utils.gather_dicts(train_preds, self.env),
            "loss_sum": float(loss_sum),
            "part_sums": {k: float(v) for k, v in part_sums.items()},
            "batches": batches,
            "seen": seen,
            "seconds": time.perf_counter() - t0,
        }

    def _log_steps(self, first_step: int, losses: list[Tensor], lrs: list[float], times: list[float]) -> None:
        """Append one JSON line per step: index, loss, its named parts (pretraining: Mask_LM, ...), lr, and
        seconds since the run started; the parts also go to TensorBoard as ``train/loss/<name>``."""
        parts, self._pending_parts = self._pending_parts[-len(losses):] if losses else [], []
        if not (self.env.is_main and losses):
            return
        values = torch.stack(losses).float().tolist()
        names = sorted(parts[0]) if parts else []
        part_values = torch.stack([torch.stack([p[k].float() for k in names]) for p in parts]).tolist() if names else []
        lines = []
        for i, (loss, lr, t) in enumerate(zip(values, lrs, times)):
            named = dict(zip(names, part_values[i])) if names else {}
            record = {"step": first_step + i, "loss": loss, **named, "lr": lr, "time": round(t, 4)}
            lines.append(json.dumps(record) + "\n")
            if named:
                self.report.scalars(first_step + i + 1, {f"loss/{k}": v for k, v in named.items()}, "train")
        append_text(self.out / STEPS_FILE, "".join(lines))  # whole lines, or none on a full disk

    def _original_log(self, text: str | None) -> None:
        """Print the original's epoch report and append it to ``log.log``."""
        if not (text and self.env.is_main):
            return
        for line in text.strip("\n").splitlines():
            self.log.info(line)
        self.report.original_text(text)

    def _truncate_steps(self, upto: int) -> None:
        """After a resume, forget step records past the checkpoint (they are re-run)."""
        path = self.out / STEPS_FILE
        if not (self.env.is_main and path.is_file()):
            return
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] < upto]
        text = "".join(ln + "\n" for ln in keep)
        atomic_write(path, lambda tmp: tmp.write_text(text))

    def _is_better(self, metrics: Mapping[str, float], best: float | None) -> tuple[bool, float | None]:
        if self.task.select_by_loss:
            value = metrics.get("loss")
            return value is not None and (best is None or value < best), value
        value = metrics.get(self.task.main_metric)
        return value is not None and (best is None or value > best), value

    def fit(self) -> dict[str, Any]:
        cfg, task, env = self.cfg, self.task, self.env
        train_set = task.dataset(cfg.train, train=True)
        valid_set = task.dataset(cfg.valid, train=False) if cfg.valid else None
        self._features_on_device(train_set, valid_set)
        per_rank = self._per_rank(cfg.batch_size)
        sampler = ShardSampler(len(train_set), True, cfg.seed, env, per_rank_batch=per_rank, drop_last=True)
        steps_per_epoch = len(sampler) // per_rank
        if steps_per_epoch == 0:
            raise ValueError(
                f"{len(train_set)} training examples give no full batch of {cfg.batch_size}: "
                "lower --batchSize or add data"
            )
        t_total = steps_per_epoch * cfg.epochs
        self._steps_per_epoch = steps_per_epoch
        optimizer, scheduler = build_optimizer(
            self.wrapped, cfg.optim, cfg.lr, t_total, cfg.warmup, cfg.weight_decay
        )
        self.log.info(
            f"train {cfg.train}: {len(train_set)} examples, {steps_per_epoch} steps/epoch x {cfg.epochs} "
            f"epochs, batch {cfg.batch_size} ({per_rank}/process), optimizer {cfg.optim}, lr {cfg.lr}"
        )
        start_epoch, start_step, best = 0, 0, task.initial_best()
        resumed_progress: dict[str, Any] = {}
        if cfg.resume and (self.out / RESUME_FILE).is_file():
            state = self._resume_state(optimizer, scheduler)
            start_epoch, start_step, best = state["epoch"], state["step"], state.get("best", best)
            self._truncate_steps(start_epoch * steps_per_epoch + start_step)
            if env.is_main:
                trim_original_log(self.out, start_epoch)
                self.report.resume_at(start_epoch * steps_per_epoch + start_step + 1)
            resumed_progress = state.get("epoch_progress") or {}
        elif cfg.resume:
            self.log.info(f"--resume: no {RESUME_FILE} in {self.out}, starting from the beginning")
        oracle = task.oracle_score(valid_set) if valid_set is not None and env.is_main else None
        if oracle is not None:
            self.log.info(f"Valid Oracle: {oracle * 100:0.2f}")
        flops = train_flops(self.model.config if hasattr(self.model, "config") else cfg.model)
        peak = device_peak_flops(env.device)
        global_step = start_epoch * steps_per_epoch + start_step
        done = False
        for epoch in range(start_epoch, cfg.epochs):
            sampler.set_epoch(epoch, start=start_step * per_rank)
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            loader = self._loader(train_set, sampler, per_rank, drop_last=True, seed=cfg.seed + epoch)
            self.wrapped.train()
            # A resumed epoch continues the counts of its first part, so its record covers it whole.
            train_preds: dict[Any, Any] = dict(resumed_progress.get("train_preds", {}))
            train_codes: list[Tensor] = []
            train_ids: list[Any] = []
            losses: list[Tensor] = []
            lrs: list[float] = []
            times: list[float] = []
            epoch_loss = torch.tensor(float(resumed_progress.get("loss_sum", 0.0)), device=env.device)
            epoch_batches = int(resumed_progress.get("batches", 0))
            epoch_parts: dict[str, Tensor] = {
                k: torch.tensor(float(v), device=env.device) for k, v in resumed_progress.get("part_sums", {}).items()
            }
            t0 = time.perf_counter() - float(resumed_progress.get("seconds", 0.0))
            seen = int(resumed_progress.get("seen", 0))
            resumed_progress = {}
            bar = self._progress(loader, len(loader), f"epoch {epoch + 1}/{cfg.epochs}")
            for batch in bar:
                batch = batch.to(env.device, non_blocking=True)
                loss, (output, parts) = self._train_step(batch, optimizer, scheduler)
                self._pending_parts.append(parts)
                for k, v in parts.items():
                    epoch_parts[k] = epoch_parts.get(k, 0) + v.float()
                self._collect(output, batch, train_codes, train_ids, train_preds)
                losses.append(loss)
                lrs.append(current_lr(optimizer))
                times.append(time.perf_counter() - self.started)
                epoch_loss += loss.float()
                epoch_batches += 1
                seen += len(batch) * env.world_size
                global_step += 1
                start_step += 1
                if len(losses) >= cfg.log_every or start_step == steps_per_epoch:
                    self._log_steps(global_step - len(losses), losses, lrs, times)
                    rate = seen / (time.perf_counter() - t0)
                    scalars = {"loss": float(losses[-1]), "lr": lrs[-1], "examples_per_s": rate}
                    if peak:
                        scalars["mfu"] = rate * flops / peak
                    self.report.scalars(global_step, scalars, "train")
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(loss=f"{scalars['loss']:.4f}", ex_s=f"{rate:.1f}")
                    losses, lrs, times = [], [], []
                if cfg.save_every and global_step % cfg.save_every == 0:
                    self._log_steps(global_step - len(losses), losses, lrs, times)
                    losses, lrs, times = [], [], []
                    train_preds.update(self._decode(train_codes, train_ids))
                    train_codes, train_ids = [], []
                    progress = self._epoch_progress(train_preds, epoch_loss, epoch_parts, epoch_batches, seen, t0)
                    self._checkpoint(optimizer, scheduler, epoch=epoch, step=start_step, best=best,
                                     epoch_progress=progress)
                if cfg.max_steps and global_step >= cfg.max_steps:
                    done = True
                    break
            self._log_steps(global_step - len(losses), losses, lrs, times)
            elapsed = time.perf_counter() - t0
            record: dict[str, Any] = {
                "epoch": epoch,
                **train_loss_means(epoch_loss, epoch_parts, epoch_batches, env),
                "train/examples_per_s": seen / elapsed if elapsed > 0 else math.nan,
            }
            train_preds.update(self._decode(train_codes, train_ids))
            if done and start_step < steps_per_epoch:
                # Stopped mid-epoch (--max-steps): keep a resumable checkpoint, skip epoch-end work
                # (the epoch's "Train" line is written when a resumed run finishes it).
                progress = self._epoch_progress(train_preds, epoch_loss, epoch_parts, epoch_batches, seen, t0)
                self._checkpoint(optimizer, scheduler, epoch=epoch, step=start_step, best=best,
                                 epoch_progress=progress)
                break
            train_preds = dist_utils.gather_dicts(train_preds, env)
            train_metrics = task.score(train_preds, train_set)
            record.update({f"train/{k}": v for k, v in train_metrics.items()})
            metrics = None
            if valid_set is not None:
                _, metrics = self.evaluate(valid_set, cfg.valid)
                record.update({f"valid/{k}": v for k, v in metrics.items()})
                better, value = self._is_better(metrics, best)
                if better:
                    best = value
                    self._save_weights(task.best_name)
                self.report.scalars(global_step, metrics, "valid")
                shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
                self.log.info(f"epoch {epoch + 1}: train loss {record['train/loss']:.4f}; valid {shown}")
            else:
                self.log.info(f"epoch {epoch + 1}: train loss {record['train/loss']:.4f}")
            train_summary = {k[len("train/"):]: v for k, v in record.items() if k.startswith("train/")}
            self._original_log(task.epoch_log_text(epoch, train_summary, metrics, best))
            self._save_weights(task.snapshot_name(epoch))
            self.report.epoch_end(record)
            start_step = 0
            self._checkpoint(optimizer, scheduler, epoch=epoch + 1, step=0, best=best)
            if done:
                break
        if not done or start_step == 0:
            self._save_weights(task.last_name)
        self.report.close()
        return {"best": best, "history": self.report.history}

    def test(self, splits: str, name: str | None = None) -> dict[str, float]:
        """Predict every example of ``splits`` and write the task's files (``<name>_predict...``)."""
        dataset = self.task.dataset(splits, train=False, full=True)
        self._features_on_device(dataset)
        predictions, metrics = self.evaluate(dataset, splits)
        name = name or splits
        if self.env.is_main:
            files = self.task.write_predictions(predictions, dataset, self.out, name)
            for f in files:
                self.log.info(f"wrote {f}")
            if metrics:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
                self.log.info(f"{splits}: {shown}")
                text = json.dumps(metrics, indent=2)
                atomic_write(self.out / f"{name}_metrics.json", lambda tmp: tmp.write_text(text))
        return metrics


def train_loss_means(
    loss_sum: Tensor, part_sums: Mapping[str, Tensor], batches: int, env: DistEnv
) -> dict[str, float]:
    """Mean training loss of the epoch and of each named part over batches and processes."""
    n = max(batches, 1)
    means = {"loss": float(loss_sum) / n, **{f"loss/{k}": float(v) / n for k, v in part_sums.items()}}
    return {f"train/{k}": v for k, v in dist_utils.all_reduce_mean(means, env).items()}


def run(task: Task, cfg: TrainConfig, device: str = "auto") -> dict[str, Any]:
    """Train and/or test ``task`` as ``cfg`` says, in this process (one of torchrun's, or alone)."""
    if cfg.task != task.name:
        raise ValueError(f"the run's config is for task {cfg.task!r}, but the task given is {task.name!r}")
    env = dist_utils.setup(device)
    out = cfg.output_dir
    moved: list = []
    if env.is_main:
        if cfg.train and not (cfg.resume and (out / RESUME_FILE).is_file()):
            moved = start_new_run(out)
        out.mkdir(parents=True, exist_ok=True)
    logger = setup_logging(out, env.is_main)  # first: run.log then says what the first write into out/ swept
    if env.is_main:
        atomic_write(out / "config.json", lambda tmp: tmp.write_text(cfg.to_json()))
    if moved:
        logger.warning(
            f"{out} held an earlier run: moved its {', '.join(p.name for p in moved)} into {out / 'previous'} "
            "(add --resume to continue a run instead)"
        )
    seed_everything(cfg.seed)
    result: dict[str, Any] = {}
    try:
        # --test means predicting only, as the original; its split name is checked before anything is built.
        plan = task.test_splits(cfg.test) if cfg.test else []
        trainer = Trainer(task, cfg, env)
        if cfg.train and not cfg.test:
            result["fit"] = trainer.fit()
        for load, name in plan:
            result["test"] = result.setdefault("tests", {})[name] = trainer.test(load, name)
        if not cfg.train and not cfg.test:
            logger.warning("nothing to do: neither --train nor --test is set")
    finally:
        dist_utils.teardown()
    return result
