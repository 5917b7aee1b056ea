"""Run reporting: the log file beside each run, TensorBoard scalars, history and curve plots.

Every file here stops the run with one ``DiskFullError`` line when the disk is full: ``run.log`` and
``log.log`` get whole lines or none, TensorBoard's writer is watched on each call.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from lxrt.checkpoint import atomic_write
from lxrt.fileio import DiskFullError, append_text, atomic_write_text, disk_full_error, is_disk_full

LOGGER_NAME = "lxmert"


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


class RunLogHandler(logging.FileHandler):
    """``<output>/run.log``: each record appended whole. On a full disk the logging call raises
    ``DiskFullError`` once (the run stops with that line) and later records are dropped."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.full = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.full:
            return
        try:
            text = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        try:
            append_text(self.baseFilename, text)
        except DiskFullError:
            self.full = True
            raise
        except OSError:
            self.handleError(record)

    def note(self, message: str) -> None:
        """Append ``message`` as an ERROR record to this file only (not the console); best effort."""
        if self.full:
            return
        record = logging.LogRecord(LOGGER_NAME, logging.ERROR, __file__, 0, message, None, None)
        with suppress(OSError):
            append_text(self.baseFilename, self.format(record) + self.terminator)


def setup_logging(output_dir: Path | None, is_main: bool) -> logging.Logger:
    """Console + ``<output>/run.log`` on rank 0 (every module's logger); warnings only elsewhere."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_lxmert", False):
            root.removeHandler(h)
            h.close()
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if is_main and output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(RunLogHandler(output_dir / "run.log"))
    for h in handlers:
        h.setFormatter(fmt)
        h._lxmert = True  # type: ignore[attr-defined]
        root.addHandler(h)
    return get_logger()


def note_in_run_log(message: str) -> None:
    """Record the message a run ends with in its ``run.log`` too (the console has it already)."""
    for h in logging.getLogger().handlers:
        if isinstance(h, RunLogHandler):
            h.note(message)


def _quiet_tensorboard_thread() -> None:
    """Install (once) a ``threading.excepthook`` that leaves out a full disk in TensorBoard's writer
    thread: the writer raises it again in the run's thread, where ``RunReport`` makes it one line."""
    previous = threading.excepthook
    if getattr(previous, "quiet_tensorboard", False):
        return

    def hook(args: Any) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and is_disk_full(args.exc_value, None):
            return
        previous(args)

    hook.quiet_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class RunReport:
    """Everything a run writes about its progress; inert on non-main ranks."""

    def __init__(self, output_dir: Path, enabled: bool, tensorboard: bool = True) -> None:
        self.output_dir = output_dir
        self.enabled = enabled
        self.history: list[dict[str, Any]] = []
        self._tb: Any = None
        self._tb_started = 0.0
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional at run time
                get_logger().warning("tensorboard is not installed: no TensorBoard scalars")
            else:
                self._open_tensorboard(SummaryWriter)

    @property
    def tb_dir(self) -> Path:
        return self.output_dir / "tb"

    def _open_tensorboard(self, writer_class: Any, **kwargs: Any) -> None:
        _quiet_tensorboard_thread()
        self._tb_started = time.time()
        with self._tensorboard():
            self._tb = writer_class(str(self.tb_dir), **kwargs)

    def _event_file(self) -> Path:
        """This process's newest event file (the one being written), or the folder's pattern."""
        mine = [p for p in self.tb_dir.glob(f"events.out.tfevents.*.{os.getpid()}.*")
                if p.stat().st_mtime >= self._tb_started - 1]
        return max(mine, key=lambda p: p.stat().st_mtime) if mine else self.tb_dir / "events.out.tfevents.*"

    @contextmanager
    def _tensorboard(self) -> Iterator[None]:
        """TensorBoard calls: a full disk (here or in the writer's thread) -> ``DiskFullError``."""
        try:
            yield
        except Exception as err:
            if not is_disk_full(err, self.tb_dir):
                raise
            kept = "the scalars written before are kept" if self._tb is not None else "no scalars were written"
            self._tb = None  # broken: nothing more is written to it
            raise disk_full_error(self._event_file(), kept=kept, action="writing TensorBoard scalars to") from err

    def resume_at(self, step: int) -> None:
        """A resumed run: TensorBoard readers drop the earlier run's scalars from ``step`` on (they are
        logged again)."""
        if self._tb is not None:
            from torch.utils.tensorboard import SummaryWriter

            with self._tensorboard():
                self._tb.close()
            self._open_tensorboard(SummaryWriter, purge_step=step)

    def original_log(self, line: str) -> None:
        """Append to ``log.log`` the lines the original wrote ("Epoch 0: Valid 65.43")."""
        self.original_text(line + "\n")

    def original_text(self, text: str) -> None:
        """Append ``text`` to ``log.log`` as it is (the original's epoch reports)."""
        if self.enabled:
            append_text(self.output_dir / "log.log", text)

    def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
        if self._tb is not None:
            with self._tensorboard():
                for k, v in values.items():
                    self._tb.add_scalar(f"{prefix}/{k}", v, step)

    def epoch_end(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.history.append(record)
        text = json.dumps(self.history, indent=1)
        atomic_write_text(self.output_dir / "history.json", text)
        if self._tb is not None:
            with self._tensorboard():
                self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            with self._tensorboard():
                self._tb.close()
        if self.enabled and self.history:
            plot_curves(self.history, self.output_dir / "curves.png")


def plot_curves(history: list[dict[str, Any]], path: Path) -> Path | None:
    """PNG with the training loss and every validation metric per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] + 1 for r in history]
    metric_keys = sorted({k for r in history for k in r if k.startswith("valid/")})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(epochs, [r.get("train/loss") for r in history], marker="o", label="train loss")
    if any("valid/loss" in r for r in history):
        axes[0].plot(epochs, [r.get("valid/loss") for r in history], marker="o", label="valid loss")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    for key in metric_keys:
        if key == "valid/loss" or key.startswith("valid/loss/"):
            continue
        axes[1].plot(epochs, [r.get(key) for r in history], marker="o", label=key[len("valid/"):])
    if any("train/accuracy" in r for r in history):
        axes[1].plot(epochs, [r.get("train/accuracy") for r in history], marker="o", ls="--", label="train accuracy")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("metric")
    if axes[1].lines:
        axes[1].legend(fontsize=8)
    fig.suptitle(path.parent.name)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path
