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

from ask.asker import AskResult, ImageRegions, LocateResult, RankResult, VerifyResult
from ask.inputs import clean_text
from lxrt.fileio import atomic_write

STRONGEST = (224, 49, 49)  # the region that matters most
OTHERS = (245, 159, 0)  # the next ones
TOP_REGIONS = 3
MIN_SIDE, MAX_SIDE = 384, 768  # the picture's longer side on the page and in the PNG


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


Rect = tuple[float, float, float, float]


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(
    boxes: list[Rect], sizes: list[tuple[float, float]], canvas: tuple[int, int], gap: float = 2
) -> list[Rect]:
    """Where to put one label per box, in order (the first gets the best place): rectangles of the given
    sizes, inside the canvas and not overlapping each other. Each label goes just above its box, else
    just inside its top, else below it, else inside its bottom, sliding along the box's width; when all
    of these are taken, the nearest free place in the canvas; when the canvas is full, above the box."""
    width, height = canvas
    placed: list[Rect] = []

    def fits(r: Rect) -> bool:
        inside = r[0] >= 0 and r[1] >= 0 and r[2] <= width and r[3] <= height
        return inside and not any(_overlaps(r, q) for q in placed)

    for (x1, y1, x2, y2), (w, h) in zip(boxes, sizes):
        w, h = min(w, width), min(h, height)
        rows = [y1 - h - gap, y1 + gap, y2 + gap, y2 - h - gap]
        xs = [x1, x2 - w, (x1 + x2 - w) / 2, x1 + w + gap, x1 - w - gap]
        candidates = [(min(max(x, 0.0), width - w), min(max(y, 0.0), height - h)) for y in rows for x in xs]
        choice = next(((x, y) for x, y in candidates if fits((x, y, x + w, y + h))), None)
        if choice is None:  # scan the canvas, nearest to the box's top-left corner first
            grid = [(x, y) for y in range(0, max(1, int(height - h) + 1), max(1, int(h / 2)))
                    for x in range(0, max(1, int(width - w) + 1), max(1, int(w / 4)))]  # fmt: skip
            grid.sort(key=lambda p: (p[0] - x1) ** 2 + (p[1] - y1) ** 2)
            choice = next(((float(x), float(y)) for x, y in grid if fits((x, y, x + w, y + h))), candidates[0])
        placed.append((choice[0], choice[1], choice[0] + w, choice[1] + h))
    return placed


def overlay(regions: ImageRegions, top: int = TOP_REGIONS) -> Image.Image:
    """The image scaled to a readable size (longer side 384-768 px) with the ``top`` most important regions
    outlined (thin lines; the strongest in red, the others in orange) and labelled with rank, weight and
    detector label, the labels inside the picture and not over each other."""
    image = regions.image.convert("RGB")
    scale = display_scale(*image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS
    canvas = image.resize(size, resample) if scale != 1.0 else image.copy()
    draw = ImageDraw.Draw(canvas)
    font = _font(max(13, round(max(size) / 36)))
    width = max(1, round(max(size) / 400))
    chosen = regions.ranked()[:top]
    boxes: list[Rect] = []
    tags: list[str] = []
    for rank, i in enumerate(chosen):
        x1, y1, x2, y2 = (float(v) * scale for v in regions.boxes[i])
        boxes.append((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)))  # boxes are exclusive at the right and bottom
        parts = [f"#{rank + 1}"]
        if regions.importance is not None:
            parts.append(f"{regions.importance[i]:.0%}")
        if regions.labels is not None:
            parts.append(clean_text(regions.labels[i]))
        tags.append(" ".join(parts))
    bounds = [draw.textbbox((0, 0), tag, font=font) for tag in tags]
    pad = 3
    sizes = [(r - left + 2 * pad, b - t + 2 * pad) for left, t, r, b in bounds]
    spots = place_labels(boxes, sizes, size)
    for rank in reversed(range(len(chosen))):  # the strongest drawn last, on top
        colour = STRONGEST if rank == 0 else OTHERS
        draw.rectangle(boxes[rank], outline=colour, width=width * (2 if rank == 0 else 1))
    for rank in reversed(range(len(chosen))):
        colour = STRONGEST if rank == 0 else OTHERS
        (left, top_, _, _), (tx, ty, _, _) = bounds[rank], spots[rank]
        draw.rectangle(spots[rank], fill=colour)
        draw.text((tx + pad - left, ty + pad - top_), tags[rank], fill=(255, 255, 255), font=font)
    return canvas


def _save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # a character the font lacks is drawn as a box; no warning per glyph
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)
        fig.savefig(buffer, format="png", dpi=fig.dpi)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def _bars(ax, labels: list[str], values: list[float], title: str, xlabel: str = "probability") -> None:  # noqa: ANN001
    y = np.arange(len(labels))[::-1]
    colours = ["#1971c2"] + ["#a5d8ff"] * (len(labels) - 1)
    ax.barh(y, values, color=colours)
    ax.set_yticks(y, [clean_text(label) for label in labels], parse_math=False)  # "$" is a dollar
    ax.set_xlim(0, 1)
    for yi, v in zip(y, values):
        ax.text(min(v + 0.02, 0.82), yi, f"{v:.1%}", va="center")
    ax.set_xlabel(xlabel)
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


def softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max())
    return e / e.sum()


def rank_figure(result: RankResult, path: str | os.PathLike, text: int = 0, top: int = 5) -> Path:
    """PNG: text ``text`` above its ``top`` best-matching images, best first, each with its score and its share of
    a softmax over the given images (the retrieval loss's distribution)."""
    order = result.ranking(text)[:top]
    shares = softmax(result.scores[text])
    fig = Figure(figsize=(3 * max(2, len(order)), 3.8), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(2, len(order))))
    for ax in axes[len(order) :]:
        ax.set_axis_off()
    for rank, (ax, i) in enumerate(zip(axes, order), 1):
        ax.imshow(np.asarray(result.images[i].image.convert("RGB")))
        ax.set_axis_off()
        ax.set_title(f"#{rank}  image {i + 1}  score {result.scores[text, i]:.2f}  ({shares[i]:.0%})", loc="left",
                     fontsize=9)  # fmt: skip
    fig.suptitle(textwrap.fill(clean_text(result.texts[text]), 110), x=0.02, ha="left", fontsize=13, parse_math=False)
    return _save_figure(fig, path)


def text_rank_figure(result: RankResult, path: str | os.PathLike, image: int = 0, top: int = 5) -> Path:
    """PNG: image ``image`` and the given texts ranked against it (share of a softmax over the texts)."""
    order = result.text_ranking(image)[:top]
    shares = softmax(result.scores[:, image])
    fig = Figure(figsize=(11, 4.6), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.1, 1])
    left.imshow(np.asarray(result.images[image].image.convert("RGB")))
    left.set_axis_off()
    labels = [textwrap.shorten(clean_text(result.texts[t]), 40) for t in order]
    _bars(right, labels, [float(shares[t]) for t in order], "best-matching texts", "share among the given texts")
    return _save_figure(fig, path)


def locate_figure(result: LocateResult, path: str | os.PathLike, top_regions: int = TOP_REGIONS) -> Path:
    """PNG: the image with the chosen region (red) and the runners-up, and the regions' probabilities."""
    fig = Figure(figsize=(10, 4.6), dpi=100, layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.2, 1])
    left.imshow(np.asarray(overlay(result.regions, top_regions)))
    left.set_axis_off()
    regions = result.regions
    order = regions.ranked()[:5]
    names = [f"region {i}" + (f" ({clean_text(regions.labels[i])})" if regions.labels else "") for i in order]
    _bars(right, names, [float(regions.importance[i]) for i in order], "regions")  # type: ignore[index]
    x, y, w, h = result.box
    fig.suptitle(f"{textwrap.fill(clean_text(result.expression), 90)}\n-> region {result.index}: x {x:.0f}, y {y:.0f}, "
                 f"w {w:.0f}, h {h:.0f}", x=0.02, ha="left", fontsize=13, parse_math=False)  # fmt: skip
    return _save_figure(fig, path)


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of ``text``: ``"What colour?"`` -> ``"what-colour"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "question"
