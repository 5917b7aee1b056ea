"""Run reporting: the log file beside each run, TensorBoard scalars, history and curve plots."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from lxrt.checkpoint import atomic_write

LOGGER_NAME = "lxmert"


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


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
        handlers.append(logging.FileHandler(output_dir / "run.log"))
    for h in handlers:
        h.setFormatter(fmt)
        h._lxmert = True  # type: ignore[attr-defined]
        root.addHandler(h)
    return get_logger()


class RunReport:
    """Everything a run writes about its progress; inert on non-main ranks."""

    def __init__(self, output_dir: Path, enabled: bool, tensorboard: bool = True) -> None:
        self.output_dir = output_dir
        self.enabled = enabled
        self.history: list[dict[str, Any]] = []
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(output_dir / "tb"))
            except ImportError:  # tensorboard is optional at run time
                get_logger().warning("tensorboard is not installed: no TensorBoard scalars")

    def resume_at(self, step: int) -> None:
        """A resumed run: TensorBoard readers drop the earlier run's scalars from ``step`` on (they are
        logged again)."""
        if self._tb is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb.close()
            self._tb = SummaryWriter(str(self.output_dir / "tb"), purge_step=step)

    def original_log(self, line: str) -> None:
        """Append to ``log.log`` the lines the original wrote ("Epoch 0: Valid 65.43")."""
        if self.enabled:
            with open(self.output_dir / "log.log", "a") as f:
                f.write(line + "\n")

    def original_text(self, text: str) -> None:
        """Append ``text`` to ``log.log`` as it is (the original's epoch reports)."""
        if self.enabled:
            with open(self.output_dir / "log.log", "a") as f:
                f.write(text)

    def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{prefix}/{k}", v, step)

    def epoch_end(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.history.append(record)
        text = json.dumps(self.history, indent=1)
        atomic_write(self.output_dir / "history.json", lambda tmp: tmp.write_text(text))
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
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
