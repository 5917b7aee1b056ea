"""Region extractors: one RGB image in, region boxes and one feature vector per region out.

An extractor is any object with a ``name``, a ``feat_dim`` and ``__call__(image) -> Regions``
(the :class:`RegionExtractor` protocol). Extractors are built by name from a registry, so command
lines and configs never import classes::

    extractor = create_extractor("grid+object", grid=4)
    regions = extractor(Image.open("cat.png"))   # regions.boxes (N, 4), regions.features (N, D)

Two extractors without learned weights ship here:

* ``grid``: a fixed GxG grid; each cell's pixels resampled to a PxP patch plus mean/std RGB.
* ``grid+object``: the same grid plus object-like regions found against the background (the
  dominant border colour): the box around all non-background pixels, and optionally the largest
  connected blobs. Every region carries its RGB patch, a foreground mask patch (the shape), the
  colour of its foreground pixels and simple statistics, so both colour and shape are easy to read.

Detectors register themselves the same way when their module is imported: the bottom-up-attention
detector ``butd`` when :mod:`features.butd` is (the commands that offer ``--extractor butd`` import
it). Plugging in another detector: write a class with ``name``, ``feat_dim`` and ``__call__``
returning ``Regions(boxes=pixel x1y1x2y2, features=..., objects_id=..., objects_conf=...)``, decorate
a factory with ``@register_extractor("mine")`` in an importable module, and run
``python -m features.extract --plugin that.module --extractor mine ...``. Workers import the plugin
module too, so the registration must happen at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


@dataclass(frozen=True)
class Regions:
    """Regions of one image.

    ``boxes``: (N, 4) float32 pixel coordinates x1, y1, x2, y2 with 0 <= x1 <= x2 <= width and
    0 <= y1 <= y2 <= height (x2/y2 exclusive, like Python slices). ``features``: (N, D) float32.
    ``objects_id`` (N,) int64 / ``objects_conf`` (N,) float32 are a detector's class and
    confidence, ``attrs_id`` / ``attrs_conf`` its attribute and confidence; ``None`` for extractors
    without them.
    """

    boxes: np.ndarray
    features: np.ndarray
    objects_id: np.ndarray | None = None
    objects_conf: np.ndarray | None = None
    attrs_id: np.ndarray | None = None
    attrs_conf: np.ndarray | None = None

    @property
    def labels(self) -> dict[str, np.ndarray]:
        """The detector outputs present, by name (objects_id, objects_conf, attrs_id, attrs_conf)."""
        names = ("objects_id", "objects_conf", "attrs_id", "attrs_conf")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def check(self, width: int, height: int, feat_dim: int) -> None:
        """Raise ``ValueError`` saying what is wrong if these regions break the contract above."""
        boxes, feats = np.asarray(self.boxes), np.asarray(self.features)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must have shape (N, 4), got {boxes.shape}")
        n = boxes.shape[0]
        if feats.shape != (n, feat_dim):
            raise ValueError(f"features must have shape ({n}, {feat_dim}), got {feats.shape}")
        if not (np.isfinite(boxes).all() and np.isfinite(feats).all()):
            raise ValueError("boxes and features must be finite")
        x1, y1, x2, y2 = boxes.T
        tol = 1e-5 * max(width, height)  # the store's tolerance on normalized boxes, in pixels
        inside = (x1 >= -tol) & (y1 >= -tol) & (x2 <= width + tol) & (y2 <= height + tol)
        inside &= (x1 <= x2) & (y1 <= y2)
        if not inside.all():
            bad = int(np.flatnonzero(~inside)[0])
            raise ValueError(f"box {bad} = {boxes[bad].tolist()} is not inside the {width}x{height} image")
        for key, value in self.labels.items():
            if np.asarray(value).shape != (n,):
                raise ValueError(f"{key} must have shape ({n},), got {np.asarray(value).shape}")


@runtime_checkable
class RegionExtractor(Protocol):
    """Anything that maps an RGB image to :class:`Regions` of a fixed feature width."""

    name: str
    feat_dim: int

    def __call__(self, image: Image.Image) -> Regions: ...


Factory = Callable[..., RegionExtractor]
_REGISTRY: dict[str, Factory] = {}


def register_extractor(name: str) -> Callable[[Factory], Factory]:
    """Decorator registering a factory (class or function taking keyword options) under ``name``."""

    def wrap(factory: Factory) -> Factory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"an extractor named {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_extractors() -> list[str]:
    """Names accepted by :func:`create_extractor`."""
    return sorted(_REGISTRY)


def create_extractor(name: str, **options: object) -> RegionExtractor:
    """Build the extractor registered as ``name`` with keyword ``options`` (e.g. ``grid=4``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown extractor {name!r}; known: {', '.join(available_extractors())}")
    try:
        return _REGISTRY[name](**options)
    except TypeError as err:
        raise TypeError(f"bad options {options} for extractor {name!r}: {err}") from err


def to_rgb(image: Image.Image) -> Image.Image:
    """The image as 8-bit RGB without surprises.

    Transparent pixels are composited on white (a plain convert would expose whatever colour
    hides under alpha 0), palette/grey/CMYK/YCbCr go through Pillow's conversions, and 16-bit
    images are scaled down (a plain convert clips everything above 255 to white).
    Raises ``ValueError`` for modes without a sound 8-bit reading, such as floating point.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(image).astype(np.float64)
        grey = np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "F":
        raise ValueError("unsupported image mode 'F' (32-bit floating point has no standard 0-255 range)")
    try:
        return image.convert("RGB")
    except ValueError as err:
        raise ValueError(f"unsupported image mode {mode!r}: {err}") from err


def grid_boxes(width: int, height: int, grid: int) -> np.ndarray:
    """(grid*grid, 4) pixel boxes tiling the image row by row; cell (r, c) spans [c*W/G, (c+1)*W/G)."""
    xs = np.arange(grid + 1, dtype=np.float64) * width / grid
    ys = np.arange(grid + 1, dtype=np.float64) * height / grid
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    return np.stack([xs[cols], ys[rows], xs[cols + 1], ys[rows + 1]], axis=1).astype(np.float32)


def pixel_spans(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 4) integer pixel ranges x1, y1, x2, y2 (exclusive) of the pixels whose centres lie in
    each box, widened to at least one pixel so every region has statistics."""
    lo = np.ceil(np.asarray(boxes, dtype=np.float64) - 0.5).astype(np.int64)
    limit = np.asarray([width, height])
    start = np.clip(lo[:, :2], 0, limit - 1)
    stop = np.clip(np.maximum(lo[:, 2:], start + 1), 1, limit)
    return np.concatenate([start, stop], axis=1)


def box_sums(values: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """(N, C) sums of (H, W, C) ``values`` over each pixel span.

    Written as two products with 0/1 row and column indicators: one matrix multiply is far
    cheaper in numpy than a summed-area table or a Python loop over the regions.
    """
    h, w, c = values.shape
    x1, y1, x2, y2 = (v[:, None] for v in spans.T)
    rows = ((np.arange(h) >= y1) & (np.arange(h) < y2)).astype(np.float64)
    cols = ((np.arange(w) >= x1) & (np.arange(w) < x2)).astype(np.float64)
    per_column = (rows @ values.reshape(h, w * c).astype(np.float64)).reshape(len(spans), w, c)
    return np.einsum("nwc,nw->nc", per_column, cols)


def area_weights(lo: float, hi: float, n: int, size: int) -> np.ndarray:
    """(size, n) weights that average pixels [i, i + 1) of a line of ``n`` over ``size`` equal parts
    of [lo, hi), each pixel weighted by the length it shares with the part (exact area averaging)."""
    if not hi > lo:
        raise ValueError(f"cannot resample an empty range [{lo}, {hi})")
    edges = lo + (hi - lo) * np.arange(size + 1, dtype=np.float64) / size
    start, stop = edges[:-1, None], edges[1:, None]
    pixel = np.arange(n, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(pixel + 1, stop) - np.maximum(pixel, start), 0.0, None)
    return overlap / (stop - start)


def resample(values: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """(size, size, C) area average of (H, W, C) ``values`` over ``box`` (pixel x1 y1 x2 y2, may be
    fractional): every output cell is the mean of the input it covers, partial pixels weighted."""
    h, w, c = values.shape
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = x2 - x1, y2 - y1
    if all(v.is_integer() for v in (x1, y1, bw / size, bh / size)) and bw > 0 and bh > 0:
        # Whole pixels per part: a block mean, the same numbers without small threaded BLAS calls
        # (which are slower than the work itself on a busy machine).
        crop = values[int(y1) : int(y2), int(x1) : int(x2)]
        return crop.reshape(size, int(bh) // size, size, int(bw) // size, c).mean((1, 3))
    c0, c1 = max(0, int(np.floor(x1))), min(w, int(np.ceil(x2)))
    r0, r1 = max(0, int(np.floor(y1))), min(h, int(np.ceil(y2)))
    wy = area_weights(y1 - r0, y2 - r0, r1 - r0, size)
    wx = area_weights(x1 - c0, x2 - c0, c1 - c0, size)
    rows = (wy @ values[r0:r1, c0:c1].reshape(r1 - r0, -1)).reshape(size, c1 - c0, c)
    return (rows.transpose(0, 2, 1) @ wx.T).transpose(0, 2, 1)


def grid_patches(values: np.ndarray, grid: int, size: int) -> np.ndarray:
    """(grid*grid, size*size*C) patches of the :func:`grid_boxes` cells, row by row.

    Splitting the whole image into grid*size parts per side gives each cell's size x size parts,
    so one :func:`resample` call yields every cell exactly as resampling it alone would.
    """
    h, w, c = values.shape
    whole = resample(values, np.asarray([0, 0, w, h]), grid * size)
    cells = whole.reshape(grid, size, grid, size, c).transpose(0, 2, 1, 3, 4)
    return cells.reshape(grid * grid, size * size * c)


def colour_stats(rgb: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """(N, 6) mean and standard deviation per RGB channel (0-1) of the pixels in each span."""
    px = rgb.astype(np.float64) / 255.0
    count = ((spans[:, 2] - spans[:, 0]) * (spans[:, 3] - spans[:, 1]))[:, None]
    mean = box_sums(px, spans) / count
    std = np.sqrt(np.maximum(box_sums(px * px, spans) / count - mean * mean, 0.0))
    return np.concatenate([mean, std], axis=1).astype(np.float32)


def background_colour(rgb: np.ndarray) -> np.ndarray:
    """The dominant colour of the image border (mean of the most common 16-level colour bin)."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.int64)
    bins = (border[:, 0] >> 4) * 256 + (border[:, 1] >> 4) * 16 + (border[:, 2] >> 4)
    top = np.bincount(bins, minlength=4096).argmax()
    return border[bins == top].mean(0)


def background_distance(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(H, W) largest channel difference (0-255) of every pixel from ``background``."""
    diff = np.abs(rgb.astype(np.float32) - background.astype(np.float32))
    return np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2])  # faster than max(-1)


def core_colours(rgb: np.ndarray, distance: np.ndarray, spans: np.ndarray, has_fg: np.ndarray) -> np.ndarray:
    """(N, 3) colour (0-1) of the foreground pixels most unlike the background in each span.

    ``distance`` is the background distance, zero off the foreground. Anti-aliased edges blend an
    object into the background, so a plain mean drifts towards it (small grey shapes start to
    look like the background); averaging only pixels within 10% of the span's largest distance
    recovers the object's own colour. Spans without foreground (``has_fg`` false) get zeros.
    """
    out = np.zeros((len(spans), 3), dtype=np.float32)
    for i in np.flatnonzero(has_fg):
        x1, y1, x2, y2 = spans[i]
        dist = distance[y1:y2, x1:x2]
        out[i] = rgb[y1:y2, x1:x2][dist >= 0.9 * dist.max()].mean(0) / 255.0
    return out


def label_components(mask: np.ndarray) -> np.ndarray:
    """4-connected component labels of a boolean mask (0 = background), by max-label propagation."""
    h, w = mask.shape
    labels = np.where(mask, np.arange(1, h * w + 1, dtype=np.int64).reshape(h, w), 0)
    while True:
        grown = labels.copy()
        np.maximum(grown[1:], labels[:-1], out=grown[1:])
        np.maximum(grown[:-1], labels[1:], out=grown[:-1])
        np.maximum(grown[:, 1:], labels[:, :-1], out=grown[:, 1:])
        np.maximum(grown[:, :-1], labels[:, 1:], out=grown[:, :-1])
        grown[~mask] = 0
        if np.array_equal(grown, labels):
            return labels
        labels = grown


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """Integer pixel box (x1, y1, x2 exclusive, y2 exclusive) around the true pixels, or None."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return None
    return np.asarray([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def component_boxes(mask: np.ndarray, count: int, max_side: int = 128) -> list[np.ndarray]:
    """Boxes of the ``count`` largest connected blobs of ``mask``, largest first.

    Large masks are labelled at a reduced resolution (block "any" pooling keeps thin parts) so
    the propagation stays cheap; their boxes are then accurate to one block.
    """
    h, w = mask.shape
    step = max(1, -(-max(h, w) // max_side))
    small = mask
    if step > 1:
        ph, pw = -h % step, -w % step
        padded = np.pad(mask, ((0, ph), (0, pw)))
        small = padded.reshape(padded.shape[0] // step, step, padded.shape[1] // step, step).any((1, 3))
    labels = label_components(small)
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    order = np.lexsort((ids, -sizes))[:count]  # largest first, ties by label for determinism
    boxes = []
    for i in order:
        box = mask_box(labels == ids[i]) * step
        boxes.append(np.minimum(box, np.asarray([w, h, w, h], dtype=np.float32)))
    return boxes


@register_extractor("grid")
class GridExtractor:
    """A fixed ``grid`` x ``grid`` tiling; per cell: its RGB resampled to ``patch`` x ``patch``, then
    mean and std RGB. ``feat_dim = 3 * patch**2 + 6`` (198 for the default 8x8 patch)."""

    name = "grid"

    def __init__(self, grid: int = 4, patch: int = 8) -> None:
        if grid < 1 or patch < 1:
            raise ValueError(f"grid and patch must be >= 1, got grid={grid}, patch={patch}")
        self.grid, self.patch = int(grid), int(patch)
        self.feat_dim = 3 * self.patch**2 + 6

    def __call__(self, image: Image.Image) -> Regions:
        rgb = np.asarray(to_rgb(image))
        h, w = rgb.shape[:2]
        boxes = grid_boxes(w, h, self.grid)
        spans = pixel_spans(boxes, w, h)
        patches = grid_patches(rgb.astype(np.float64) / 255.0, self.grid, self.patch)
        feats = np.concatenate([patches, colour_stats(rgb, spans)], axis=1)
        return Regions(boxes=boxes, features=feats.astype(np.float32))


@register_extractor("grid+object")
class GridObjectExtractor:
    """The ``grid`` cells followed by ``objects`` object-like regions.

    Object region 0 is the box around every non-background pixel (background = dominant border
    colour, foreground = a channel differs by more than ``threshold``); regions 1.. are the largest
    connected blobs. Slots with nothing to fill repeat region 0 so every image has the same count;
    an image without foreground uses the whole image.

    Features of every region, in order: RGB patch (3P²), foreground-mask patch (P², the shape),
    mean/std RGB of all pixels (6), core colour of the foreground (3, see :func:`core_colours`),
    foreground fraction (1), kind one-hot [grid cell, object] (2).
    ``feat_dim = 4 * patch**2 + 12`` (268 for P = 8).
    """

    name = "grid+object"

    def __init__(self, grid: int = 4, patch: int = 8, objects: int = 1, threshold: int = 32) -> None:
        if grid < 0 or patch < 1 or objects < 1 or not 0 <= threshold < 255:
            raise ValueError(
                f"need grid >= 0, patch >= 1, objects >= 1, 0 <= threshold < 255; got grid={grid}, "
                f"patch={patch}, objects={objects}, threshold={threshold}"
            )
        self.grid, self.patch, self.objects = int(grid), int(patch), int(objects)
        self.threshold = int(threshold)
        self.feat_dim = 4 * self.patch**2 + 12

    @property
    def layout(self) -> dict[str, slice]:
        """Where each part of a region's feature vector sits."""
        sizes = {"rgb_patch": 3 * self.patch**2, "mask_patch": self.patch**2, "mean_rgb": 3, "std_rgb": 3}
        sizes |= {"core_rgb": 3, "fg_fraction": 1, "kind": 2}
        out, start = {}, 0
        for name, size in sizes.items():
            out[name] = slice(start, start + size)
            start += size
        return out

    def object_boxes(self, mask: np.ndarray) -> np.ndarray:
        """(objects, 4) boxes: the foreground's box, then the largest blobs, padded by repetition."""
        h, w = mask.shape
        union = mask_box(mask)
        if union is None:
            union = np.asarray([0, 0, w, h], dtype=np.float32)
        blobs = component_boxes(mask, self.objects - 1) if self.objects > 1 and mask.any() else []
        boxes = [union, *blobs] + [union] * (self.objects - 1 - len(blobs))
        return np.stack(boxes).astype(np.float32)

    def __call__(self, image: Image.Image) -> Regions:
        rgb = np.asarray(to_rgb(image))
        h, w = rgb.shape[:2]
        distance = background_distance(rgb, background_colour(rgb))
        mask = distance > self.threshold
        distance[~mask] = 0
        # RGB and the foreground mask resampled together: channels 0-2 colour, 3 shape.
        values = np.concatenate([rgb.astype(np.float64) / 255.0, mask[:, :, None]], axis=2)

        objects = self.object_boxes(mask)
        patches = [resample(values, box, self.patch).reshape(-1, 4) for box in objects]
        if self.grid:
            cells = grid_patches(values, self.grid, self.patch).reshape(self.grid**2, -1, 4)
            patches = [*cells, *patches]
            boxes = np.concatenate([grid_boxes(w, h, self.grid), objects])
        else:
            boxes = objects
        stacked = np.stack(patches)  # (N, P*P, 4)
        colour_patch = stacked[:, :, :3].reshape(len(boxes), -1)
        shape_patch = stacked[:, :, 3]
        fg_fraction = shape_patch.mean(1, keepdims=True)  # exact: every part has the same area
        spans = pixel_spans(boxes, w, h)
        kind = np.zeros((len(boxes), 2), dtype=np.float32)
        kind[: len(boxes) - len(objects), 0] = 1.0
        kind[len(boxes) - len(objects) :, 1] = 1.0
        feats = np.concatenate(
            [
                colour_patch,
                shape_patch,
                colour_stats(rgb, spans),
                core_colours(rgb, distance, spans, box_sums(mask[:, :, None], spans)[:, 0] > 0),
                fg_fraction,
                kind,
            ],
            axis=1,
        )
        return Regions(boxes=boxes.astype(np.float32), features=feats.astype(np.float32))

