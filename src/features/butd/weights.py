"""Detector weights: strict loading of ``pytorch_model.bin`` and a random-weight file of the same layout.

``python -m features.butd.weights --random OUT.bin [--seed N]`` writes random weights with exactly the
released key list (for tests and benchmarks without the 260 MB download); ``--check FILE`` loads a file
strictly and reports what does not match.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from features.butd.model import Bottleneck, ConvBN, Detector, DetectorConfig, cell_anchors
from lxrt.checkpoint import CheckpointError, load_state, torch_load
from lxrt.fileio import atomic_write

DEFAULT_WEIGHTS = Path("snap/detector/pytorch_model.bin")
DOWNLOAD_HINT = "bash run/download_data.bash butd-detector"


class WeightsError(ValueError):
    """A weights file that cannot be loaded strictly into the detector; the message names the file."""


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a detector ``pytorch_model.bin``, read by :func:`lxrt.checkpoint.torch_load`
    (``weights_only=True``; web pages, LFS pointers, empty or truncated files are named as such)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such detector weights file")
    try:
        obj = torch_load(path, expected="the detector's pytorch_model.bin")
    except CheckpointError as err:
        raise WeightsError(f"{path}: not a readable PyTorch state dict: {err}") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a mapping of parameter names to tensors, got {type(obj).__name__}")
    return dict(obj)


def load_weights(model: Detector, path: str | os.PathLike) -> Detector:
    """Load ``path`` into ``model`` key for key through :func:`lxrt.checkpoint.load_state` (strict);
    :class:`WeightsError` names the file and the first reshaped key, or the missing and unexpected
    keys. Floating tensors take the model's dtype."""
    state = read_weights(path)
    try:
        load_state(model, state, strict=True, source=str(path))
    except CheckpointError as err:
        raise WeightsError(
            f"{err}\n(the bottom-up-attention detector has {len(model.state_dict())} entries, the file {len(state)})"
        ) from None
    return model


# ---- random weights ---------------------------------------------------------------------------------------


def random_state_dict(seed: int = 0, cfg: DetectorConfig | None = None) -> dict[str, torch.Tensor]:
    """Random weights with the released key list and shapes.

    Convolutions are He-initialised; BatchNorm statistics are near identity (mean ~ 0, var ~ 1) but not
    exactly, so folding them matters; the last BatchNorm of every residual branch is scaled down so
    activations stay finite through the 33 blocks. The cell anchors are the real ones.
    """
    cfg = cfg or DetectorConfig()
    gen = torch.Generator().manual_seed(int(seed))
    model = Detector(cfg)

    def normal(shape: Sequence[int], std: float) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=gen) * std

    def uniform(shape: Sequence[int], lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(tuple(shape), generator=gen)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ConvBN):
                w = module.weight
                fan_in = w.shape[1] * w.shape[2] * w.shape[3]
                # Pixels minus the means spread over about +-60: the stem's conv brings them to ~unit scale.
                gain = 1.0 / 60.0 if w.shape[1] == 3 else 1.0
                w.copy_(normal(w.shape, gain * math.sqrt(2.0 / fan_in)))
                n = module.norm
                n.weight.copy_(uniform(n.weight.shape, 0.8, 1.2))
                n.bias.copy_(normal(n.bias.shape, 0.1))
                n.running_mean.copy_(normal(n.running_mean.shape, 0.1))
                n.running_var.copy_(uniform(n.running_var.shape, 0.8, 1.2))
                n.num_batches_tracked.zero_()
        for module in model.modules():
            if isinstance(module, Bottleneck):
                module.conv3.norm.weight.mul_(0.2)  # keep the residual branches small
        head = model.proposal_generator.rpn_head
        for conv, std in ((head.conv, 0.01), (head.objectness_logits, 0.01), (head.anchor_deltas, 0.003)):
            conv.weight.copy_(normal(conv.weight.shape, std))
            conv.bias.copy_(normal(conv.bias.shape, std))
        pred = model.roi_heads.box_predictor
        for lin, std in (
            (pred.cls_score, 0.01),
            (pred.bbox_pred, 0.001),
            (pred.fc_attr, 0.02),
            (pred.attr_score, 0.02),
        ):
            lin.weight.copy_(normal(lin.weight.shape, std))
            lin.bias.copy_(normal(lin.bias.shape, std))
        pred.cls_embedding.weight.copy_(normal(pred.cls_embedding.weight.shape, 1.0))
        model.proposal_generator.anchor_generator.cell_anchors[0].copy_(
            cell_anchors(cfg.anchor_sizes, cfg.anchor_ratios)
        )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def save_random_weights(path: str | os.PathLike, seed: int = 0, cfg: DetectorConfig | None = None) -> Path:
    """Write :func:`random_state_dict` to ``path`` (atomically) as a ``pytorch_model.bin``."""
    state = random_state_dict(seed, cfg)
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m features.butd.weights",
        description="Write random detector weights with the released key list, or check a weights file.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--random", type=Path, metavar="OUT.bin", help="write random weights to this file")
    what.add_argument("--check", type=Path, metavar="FILE", help="load FILE strictly and report mismatches")
    p.add_argument("--seed", type=int, default=0, help="random seed for --random (default %(default)s)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.random:
            out = save_random_weights(args.random, args.seed)
            print(f"Wrote random detector weights (seed {args.seed}) to {out}")
        else:
            load_weights(Detector(), args.check)
            print(f"{args.check}: loads strictly into the detector")
    except (OSError, WeightsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
