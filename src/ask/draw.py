"""Pictures of an answer: the image with its strongest regions boxed, and a PNG with the question and
the top answers (Matplotlib's object API on an Agg canvas; files written atomically)."""

from __future__ import annotations

import io
import os
import re
import textwrap
import warnings
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from ask.asker import AskResult, ImageRegions, VerifyResult
from ask.inputs import clean_text
from lxrt.fileio import atomic_write

STRONGEST = (224, 49, 49)  # the region that matters most
OTHERS = (245, 159, 0)  # the next ones
TOP_REGIONS = 3
MIN_SIDE, MAX_SIDE = 384, 768


def display_scale(width: int, height: int, min_side: int = MIN_SIDE, max_side: int = MAX_SIDE) -> float:
    """Factor that brings the longer side between ``min_side`` and ``max_side``."""
    longest = max(width, height)
    if longest < min_side:
        return min_side / longest
    if longest > max_side:
        return max_side / longest
    return 1.0


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def overlay(regions: ImageRegions, top: int = TOP_REGIONS) -> Image.Image:
    """The image (scaled for display) with the ``top`` most important regions boxed: the strongest
    in red and thicker, the others in orange, each tagged with its rank, weight and label."""
    image = regions.image.convert("RGB")
    scale = display_scale(*image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS
    canvas = image.resize(size, resample) if scale != 1.0 else image.copy()
    draw = ImageDraw.Draw(canvas)
    font = _font(max(14, max(size) // 24))
    width = max(2, round(max(size) / 160))
    chosen = regions.ranked()[:top]
    for rank in reversed(range(len(chosen))):  # the strongest drawn last, on top
        i = chosen[rank]
        colour = STRONGEST if rank == 0 else OTHERS
        x1, y1, x2, y2 = (float(v) * scale for v in regions.boxes[i])
        x2, y2 = max(x1, x2 - 1), max(y1, y2 - 1)  # boxes are exclusive at the right and bottom
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width * (2 if rank == 0 else 1))
        parts = [f"#{rank + 1}"]
        if regions.importance is not None:
            parts.append(f"{regions.importance[i]:.0%}")
        if regions.labels is not None:
            parts.append(clean_text(regions.labels[i]))
        tag = " ".join(parts)
        left, top_, right, bottom = draw.textbbox((0, 0), tag, font=font)
        tx = min(max(0.0, x1), size[0] - (right - left) - 4)
        ty = y1 - (bottom - top_) - 6 if y1 - (bottom - top_) - 6 >= 0 else y1 + 2 * width
        draw.rectangle((tx, ty, tx + right - left + 4, ty + bottom - top_ + 4), fill=colour)
        draw.text((tx + 2 - left, ty + 2 - top_), tag, fill=(255, 255, 255), font=font)
    return canvas


def _save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # a character the font lacks is drawn as a box; no warning per glyph
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)
        fig.savefig(buffer, format="png", dpi=fig.dpi)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def _bars(ax, labels: list[str], values: list[float], title: str) -> None:  # noqa: ANN001
    y = np.arange(len(labels))[::-1]
    colours = ["#1971c2"] + ["#a5d8ff"] * (len(labels) - 1)
    ax.barh(y, values, color=colours)
    ax.set_yticks(y, [clean_text(label) for label in labels], parse_math=False)  # "$" is a dollar
    ax.set_xlim(0, 1)
    for yi, v in zip(y, values):
        ax.text(min(v + 0.02, 0.82), yi, f"{v:.1%}", va="center")
    ax.set_xlabel("probability")
    ax.set_title(title, loc="left")
    ax.spines[["top", "right"]].set_visible(False)


def answer_figure(result: AskResult, path: str | os.PathLike, top_regions: int = TOP_REGIONS) -> Path:
    """PNG: the image with its strongest regions, the question and the top answers as bars."""
    fig = Figure(figsize=(10, 4.6), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.2, 1])
    left.imshow(np.asarray(overlay(result.regions, top_regions)))
    left.set_axis_off()
    what = "regions the [CLS] attends to most" if result.regions.importance is not None else "regions"
    left.set_title(what, loc="left", fontsize=10)
    _bars(right, [a for a, _ in result.answers], [p for _, p in result.answers], "top answers")
    question = textwrap.fill(clean_text(result.question), 90)
    question += " (cut to the model's length)" if result.truncated else ""
    fig.suptitle(f"Q: {question}\nA: {clean_text(result.answer)}", x=0.02, ha="left", fontsize=13, parse_math=False)
    return _save_figure(fig, path)


def verify_figure(result: VerifyResult, path: str | os.PathLike, top_regions: int = TOP_REGIONS) -> Path:
    """PNG: both images with their strongest regions, the statement and P(true)."""
    fig = Figure(figsize=(12, 4.6), dpi=100, layout="constrained")
    axes = fig.subplots(1, 3, width_ratios=[2, 2, 1.3])
    for ax, side, name in zip(axes[:2], (result.left, result.right), ("left", "right")):
        ax.imshow(np.asarray(overlay(side, top_regions)))
        ax.set_axis_off()
        ax.set_title(name, loc="left", fontsize=10)
    _bars(axes[2], ["true", "false"], [result.prob_true, 1 - result.prob_true], "judgement")
    fig.suptitle(f"{textwrap.fill(clean_text(result.statement), 110)}\n-> {str(result.answer).lower()}", x=0.02,
                 ha="left", fontsize=13, parse_math=False)  # fmt: skip
    return _save_figure(fig, path)


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of ``text``: ``"What colour?"`` -> ``"what-colour"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "question"
