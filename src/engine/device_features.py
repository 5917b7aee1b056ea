"""``--features-on-device``: the region features a run needs, copied once into device memory.

Batches then gather their features on the device (an index into one resident table) instead of
reading the memory-mapped store in DataLoader workers and copying every batch to the device.
``DeviceFeatures.gather`` gives exactly what ``ImageFeatures.gather`` gives (same width, padding,
truncation and mask), as device tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

GiB = 1024**3


def _torch_dtype(dtype: Any) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=np.dtype(dtype))).dtype


class DeviceFeatures:
    """Features (M, W, D), boxes (M, W, 4) and region counts of M images, resident on one device."""

    def __init__(self, feats: Tensor, boxes: Tensor, counts: np.ndarray, ids: Sequence[str], stores: dict) -> None:
        self.feats, self.boxes = feats, boxes
        self.counts = counts  # host copy: batch widths and masks are decided without reading the device
        self.counts_device = torch.from_numpy(counts).to(feats.device)
        self.index = {img_id: i for i, img_id in enumerate(ids)}
        self.stores = stores
        self.feat_dim = int(feats.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.feats.device

    def __contains__(self, img_id: object) -> bool:
        return img_id in self.index

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def load(
        cls, sources: Sequence[Any], img_ids: Sequence[str], device: torch.device, chunk: int = 512
    ) -> DeviceFeatures:
        """Copy ``img_ids`` (each read from the first of ``sources`` holding it) onto ``device``."""
        plan = table_shape(sources, img_ids)
        n, width, dim, dtype = plan["images"], plan["width"], plan["feat_dim"], plan["dtype"]
        feats = torch.zeros((n, width, dim), dtype=_torch_dtype(dtype), device=device)
        boxes = torch.zeros((n, width, 4), dtype=torch.float32, device=device)
        counts = np.zeros(n, dtype=np.int64)
        owner = [next(s for s in sources if i in s) for i in img_ids]
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            for source in {id(o): o for o in owner[start:stop]}.values():
                rows = [r for r in range(start, stop) if owner[r] is source]
                f, b, m = source.gather([img_ids[r] for r in rows], num_boxes=None, dtype=None)
                k = f.shape[1]
                index = torch.as_tensor(rows, device=device)
                feats[index, :k] = torch.from_numpy(np.ascontiguousarray(f)).to(device)
                boxes[index, :k] = torch.from_numpy(np.ascontiguousarray(b)).to(device)
                counts[rows] = k if m is None else m.sum(1)
        stores = {name: s for src in sources for name, s in getattr(src, "stores", {}).items()}
        return cls(feats, boxes, counts, img_ids, stores)

    def gather(
        self, img_ids: Sequence[str], num_boxes: int | None = None, dtype: Any = np.float32
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``ImageFeatures.gather`` on the device: (B, N, D) features in ``dtype`` (None: the
        stored dtype), (B, N, 4) boxes, (B, N) int64 mask or None when no row is padded."""
        if num_boxes is not None and num_boxes < 1:
            raise ValueError(f"num_boxes must be >= 1, got {num_boxes}")
        try:
            rows = np.fromiter((self.index[i] for i in img_ids), dtype=np.int64, count=len(img_ids))
        except KeyError as e:
            raise KeyError(f"image id {e.args[0]!r} was not copied to the device (--features-on-device)") from None
        counts = self.counts[rows]
        n = int(num_boxes) if num_boxes is not None else (int(counts.max()) if len(rows) else 0)
        index = torch.from_numpy(rows).to(self.device, non_blocking=True)
        keep = min(n, self.feats.shape[1])
        feats = self.feats[index, :keep]
        boxes = self.boxes[index, :keep]
        if n > keep:
            feats = torch.nn.functional.pad(feats, (0, 0, 0, n - keep))
            boxes = torch.nn.functional.pad(boxes, (0, 0, 0, n - keep))
        if dtype is not None:
            feats = feats.to(_torch_dtype(dtype))
        if len(rows) and int(counts.min()) >= n:
            return feats, boxes, None
        positions = torch.arange(n, device=self.device)
        mask = (positions[None, :] < self.counts_device[index][:, None]).long()
        return feats, boxes, mask


def table_shape(sources: Sequence[Any], img_ids: Sequence[str]) -> dict[str, Any]:
    """Size of the device table for ``img_ids``: images, widest region count, width, dtype, bytes."""
    stores = [s for src in sources for s in getattr(src, "stores", {}).values()]
    if not stores:
        raise ValueError("no feature stores to copy")
    dtypes = {np.dtype(s.dtype) for s in stores}
    if len(dtypes) > 1:
        raise ValueError(f"feature stores have different dtypes: {sorted(map(str, dtypes))}")
    dtype = dtypes.pop()
    width = max(s.max_boxes for s in stores)
    dim = int(stores[0].feat_dim)
    n = len(img_ids)
    nbytes = n * width * (dim * dtype.itemsize + 4 * 4) + n * 8
    return {"images": n, "width": width, "feat_dim": dim, "dtype": dtype, "bytes": nbytes}


def free_memory(device: torch.device) -> int:
    """Bytes the device can still hold: free CUDA memory, or the host's available memory."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def move_features_to_device(
    datasets: Sequence[Any], device: torch.device, log: logging.Logger, headroom: float = 0.25,
    budget: int | None = None,
) -> DeviceFeatures | None:
    """Point every dataset at one device-resident table of the images they use, when it fits.

    ``budget`` (bytes; default: free memory minus a ``headroom`` fraction kept for the model and
    its activations) bounds the table. Returns None, after saying why, when the features stay in
    the store: datasets that do not read features through ``ImageFeatures.gather`` (pretraining
    masks regions per example), or a table larger than the budget.
    """
    datasets = [d for d in datasets if d is not None]
    unsupported = [type(d).__name__ for d in datasets if not all(
        hasattr(d, a) for a in ("features", "data", "image_keys"))]
    if unsupported:
        log.warning(f"--features-on-device: {', '.join(unsupported)} does not gather features per batch; "
                    "reading them from the store instead")
        return None
    ids = list(dict.fromkeys(rec[k] for d in datasets for rec in d.data for k in d.image_keys))
    sources = list({id(d.features): d.features for d in datasets}.values())
    plan = table_shape(sources, ids)
    if budget is None:
        budget = int(free_memory(device) * (1 - headroom))
    if plan["bytes"] > budget:
        log.warning(
            f"--features-on-device: the features of {plan['images']:,} images need {plan['bytes'] / GiB:.2f} GiB "
            f"on {device}, more than the {budget / GiB:.2f} GiB available for them; reading them from the "
            "store through the DataLoader instead"
        )
        return None
    table = DeviceFeatures.load(sources, ids, device)
    for d in datasets:
        d.features = table
    log.info(f"--features-on-device: {plan['images']:,} images ({plan['bytes'] / GiB:.2f} GiB, "
             f"{plan['width']} regions x {plan['feat_dim']} {plan['dtype']}) copied to {device}")
    return table
