"""The ``butd`` region extractor: the bottom-up-attention detector behind the extractor registry.

    extractor = create_extractor("butd", weights="snap/detector/pytorch_model.bin", preset="lxmert")
    regions = extractor(Image.open("photo.jpg"))        # 36 boxes (original pixels) x 2048-d features
    many = extractor.batch([img1, img2, img3])           # images of one network size run as one batch

Preprocessing (:meth:`ButdExtractor.preprocess`) is separate from the network (:meth:`ButdExtractor.run`)
so that data-loading workers can decode and resize while the main process runs the model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from features.butd.model import Detector, DetectorConfig
from features.butd.pipeline import Detections, StageTimer, detect, memory_format
from features.butd.presets import Prepared, Preset, get_preset, preprocess
from features.butd.weights import DEFAULT_WEIGHTS, DOWNLOAD_HINT, load_weights
from features.extractors import Regions, to_rgb


def resolve_weights(weights: str | os.PathLike | None) -> Path:
    """The weights file to use: ``weights`` or the default download location, which must exist."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such detector weights file")
        return path
    if not DEFAULT_WEIGHTS.is_file():
        raise FileNotFoundError(
            f"no detector weights at {DEFAULT_WEIGHTS}: download them with `{DOWNLOAD_HINT}` "
            "or pass --weights PATH (a pytorch_model.bin of unc-nlp/frcnn-vg-finetuned)"
        )
    return DEFAULT_WEIGHTS


class Preprocessor:
    """Picklable image -> :class:`Prepared` step of a preset (runs in data-loading workers)."""

    def __init__(self, preset: Preset) -> None:
        self.preset = preset

    def __call__(self, image: Image.Image) -> Prepared:
        return preprocess(to_rgb(image), self.preset)


class ButdExtractor:
    """Bottom-up-attention Faster R-CNN regions: 36 (or ``min_boxes``..``max_boxes``) boxes in original
    pixels, 2048-d features, VG object and attribute ids with confidences.

    ``weights``: a ``pytorch_model.bin`` path or a state dict (default ``snap/detector/pytorch_model.bin``).
    ``preset``: ``lxmert`` or ``hf-demo`` (see :mod:`features.butd.presets`); ``short_side``/``max_side``
    override its resize, ``rpn_post_nms`` its proposal count (300). ``device``: ``cpu`` or ``cuda``;
    ``amp``: ``bf16`` (accelerators) or ``none``.
    ``fast_numerics``: override the preset's choice (folded BatchNorm and channels-last, or the HF port's
    conv-then-BatchNorm in NCHW, see :class:`features.butd.presets.Preset`).
    ``config``: a smaller architecture (tests). ``threads``: torch CPU threads (default: torch's).
    """

    name = "butd"

    def __init__(
        self,
        weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
        preset: str = "lxmert",
        device: str = "cpu",
        amp: str = "none",
        min_boxes: int | None = None,
        max_boxes: int | None = None,
        short_side: int | None = None,
        max_side: int | None = None,
        rpn_post_nms: int | None = None,
        fast_numerics: bool | None = None,
        roi_chunk: int = 60,
        config: DetectorConfig | None = None,
        threads: int | None = None,
    ) -> None:
        if amp not in ("none", "bf16"):
            raise ValueError(f"amp must be 'none' or 'bf16', got {amp!r}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.preset = get_preset(preset).with_options(
            min_boxes=min_boxes,
            max_boxes=max_boxes,
            short_side=short_side,
            max_side=max_side,
            rpn_post_nms=rpn_post_nms,
            fast_numerics=fast_numerics,
        )
        self.amp = amp == "bf16"
        self.roi_chunk = int(roi_chunk)
        self.model = Detector(config)
        if isinstance(weights, Mapping):
            self.model.load_state_dict(dict(weights), strict=True)
        else:
            load_weights(self.model, resolve_weights(weights))
        self.model.eval()
        if self.preset.fast_numerics:
            self.model.fold_batchnorm()
        self.model.to(self.device, memory_format=memory_format(self.preset))
        self.feat_dim = self.model.cfg.feat_dim
        self.preprocessor = Preprocessor(self.preset)
        self.timer = StageTimer()

    def __repr__(self) -> str:
        return f"ButdExtractor(preset={self.preset.name!r}, device={str(self.device)!r}, amp={self.amp})"

    def preprocess(self, image: Image.Image) -> Prepared:
        return self.preprocessor(image)

    def run(self, prepared: Sequence[Prepared], max_batch: int = 64) -> list[Regions]:
        """Regions of preprocessed images, in order; images of one network size share a forward pass."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(prepared):
            groups.setdefault(p.net_size, []).append(i)
        out: list[Regions | None] = [None] * len(prepared)
        for indices in groups.values():
            for start in range(0, len(indices), max_batch):
                chunk = indices[start : start + max_batch]
                found = detect(
                    self.model,
                    [prepared[i] for i in chunk],
                    self.preset,
                    self.device,
                    amp=self.amp,
                    roi_chunk=self.roi_chunk,
                    timer=self.timer,
                )
                for i, det in zip(chunk, found):
                    out[i] = to_regions(det)
        return out  # type: ignore[return-value]

    def batch(self, images: Sequence[Image.Image]) -> list[Regions]:
        """Regions of several images (see :meth:`run`)."""
        return self.run([self.preprocess(im) for im in images])

    def __call__(self, image: Image.Image) -> Regions:
        return self.run([self.preprocess(image)])[0]


def to_regions(det: Detections) -> Regions:
    return Regions(
        boxes=det.boxes.numpy().astype(np.float32),
        features=det.features.numpy().astype(np.float32),
        objects_id=det.objects_id.numpy().astype(np.int64),
        objects_conf=det.objects_conf.numpy().astype(np.float32),
        attrs_id=det.attrs_id.numpy().astype(np.int64),
        attrs_conf=det.attrs_conf.numpy().astype(np.float32),
    )
