"""PNG plots for the demo: learning curves and a grid of test predictions.

Figures are drawn with Matplotlib's object API on an Agg canvas, so importing this module never
changes the global backend, and PNGs are written atomically.
"""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

RIGHT, WRONG = "#1a7f37", "#cf222e"


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    """Render ``fig`` to ``path`` as PNG through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            fig.savefig(f, format="png", dpi=fig.dpi)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _series(history: Sequence[Mapping[str, Any]], word: str) -> dict[str, tuple[list[float], list[float]]]:
    """Every key containing ``word`` -> (epochs, values), skipping epochs that lack it."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for i, row in enumerate(history):
        epoch = float(row.get("epoch", i + 1))
        for key, value in row.items():
            if word in key and isinstance(value, (int, float)) and np.isfinite(value):
                xs, ys = out.setdefault(key, ([], []))
                xs.append(epoch)
                ys.append(float(value))
    return out


def plot_learning_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Loss (every key containing "loss") and accuracy (keys containing "acc") per epoch.

    ``history`` holds one dict per epoch, e.g. ``{"epoch": 1, "train_loss": 0.41,
    "valid_acc": 0.83, "test_acc": 0.82}``; ``epoch`` defaults to the position + 1. Accuracies in
    [0, 1] are shown as percentages.
    """
    losses, accs = _series(history, "loss"), _series(history, "acc")
    if not history or not (losses or accs):
        raise ValueError("history needs at least one epoch with a numeric '*loss*' or '*acc*' value")
    panels = [(name, s) for name, s in (("loss", losses), ("accuracy (%)", accs)) if s]
    fig = Figure(figsize=(5.2 * len(panels), 3.8), dpi=110, layout="constrained")
    for ax, (name, series) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for key, (xs, ys) in sorted(series.items()):
            values = np.asarray(ys)
            if name.startswith("accuracy") and values.max() <= 1.0:
                values = values * 100
            ax.plot(xs, values, marker="o", markersize=3, label=key)
            if name.startswith("accuracy"):
                ax.annotate(f"{values[-1]:.1f}", (xs[-1], values[-1]), textcoords="offset points", xytext=(4, 4))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def _is_right(prediction: str, truth: str | Mapping[str, float]) -> bool:
    if isinstance(truth, Mapping):
        return float(truth.get(prediction, 0.0)) > 0
    return prediction == truth


def _truth_text(truth: str | Mapping[str, float]) -> str:
    if isinstance(truth, Mapping):
        return ", ".join(a for a, _ in sorted(truth.items(), key=lambda kv: -kv[1])) or "(none)"
    return truth


def plot_prediction_grid(
    examples: Sequence[tuple[str | os.PathLike, str, str, str | Mapping[str, float]]],
    path: str | os.PathLike,
    cols: int = 4,
) -> Path:
    """A grid of images, each with its question above, and below it the prediction (green if right,
    red if wrong) and the truth (an answer, or a VQA label dict {answer: score})."""
    if not examples:
        raise ValueError("no examples to plot")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    cols = min(cols, len(examples))
    rows = -(-len(examples) // cols)
    # Fixed cell geometry (inches): question lines, square image, two answer lines. Placing
    # everything by hand keeps long questions from running into the row above or below.
    cell_w, top, img, bottom = 2.5, 0.55, 2.1, 0.55
    cell_h = top + img + bottom
    fig = Figure(figsize=(cell_w * cols, cell_h * rows), dpi=100)
    fig_w, fig_h = cell_w * cols, cell_h * rows
    for k, (image_file, question, prediction, truth) in enumerate(examples):
        r, c = divmod(k, cols)
        x0, y0 = c * cell_w, fig_h - (r + 1) * cell_h  # bottom-left corner of the cell
        try:
            with Image.open(image_file) as im:
                pixels = np.asarray(im.convert("RGB"))
        except OSError as err:
            raise ValueError(f"{image_file}: cannot read the image to plot ({err})") from None
        side = img * 0.95
        ax = fig.add_axes(((x0 + (cell_w - side) / 2) / fig_w, (y0 + bottom) / fig_h, side / fig_w, side / fig_h))
        ax.imshow(pixels, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        centre = (x0 + cell_w / 2) / fig_w
        text = "\n".join(textwrap.wrap(question, 30)[:2])
        fig.text(centre, (y0 + bottom + img + 0.05) / fig_h, text, ha="center", va="bottom", fontsize=9)
        colour = RIGHT if _is_right(prediction, truth) else WRONG
        fig.text(
            centre, (y0 + bottom - 0.05) / fig_h, f"pred: {prediction}",
            ha="center", va="top", fontsize=10, fontweight="bold", color=colour,
        )  # fmt: skip
        fig.text(centre, (y0 + 0.08) / fig_h, f"truth: {_truth_text(truth)}", ha="center", va="bottom", fontsize=9)
    return _save(fig, path)
