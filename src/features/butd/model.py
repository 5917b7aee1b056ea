"""The bottom-up-attention Faster R-CNN: ResNet-101 C4 backbone, RPN, res5 RoI head with the Visual
Genome object and attribute predictors.

The module tree is laid out so that ``state_dict()`` has exactly the keys and shapes of the public
``pytorch_model.bin`` of that detector (640 entries, see ``tests/data/butd_keys.txt``). The model only
computes tensors; proposal selection and box post-processing live in :mod:`features.butd.pipeline`.

Frozen BatchNorm is folded into the convolution weights by :meth:`Detector.fold_batchnorm` (kept in
non-persistent buffers, so the state-dict keys stay exact); until then every conv applies its BatchNorm
with the running statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DetectorConfig:
    """Sizes of the detector. The defaults are the released Visual Genome model; smaller widths and
    fewer blocks give the same architecture at a fraction of the cost (used by tests)."""

    width: int = 64  # bottleneck channels of res2; stage k has width * 2**k and outputs 4x that
    stem_channels: int = 64
    blocks: tuple[int, int, int, int] = (3, 4, 23, 3)  # res2, res3, res4, res5
    rpn_hidden: int = 512
    num_classes: int = 1600  # without background (which is the last logit)
    num_attrs: int = 400  # without "no attribute" (the last logit)
    anchor_sizes: tuple[float, ...] = (64.0, 128.0, 256.0, 512.0)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    pooler_resolution: int = 14
    stride: int = 16  # of the res4 feature map
    bn_eps: float = 1e-5

    @property
    def res4_channels(self) -> int:
        return self.width * 4 * 4

    @property
    def feat_dim(self) -> int:
        """Width of a region feature (res5 output): 2048 for the released model."""
        return self.width * 4 * 8

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_sizes) * len(self.anchor_ratios)


def cell_anchors(sizes: tuple[float, ...], ratios: tuple[float, ...]) -> torch.Tensor:
    """(len(sizes) * len(ratios), 4) anchors x1 y1 x2 y2 centred on 0, size-major: for each size, each
    aspect ratio h/w, a box of area size**2."""
    rows = []
    for size in sizes:
        for ratio in ratios:
            w = math.sqrt(size * size / ratio)
            h = ratio * w
            rows.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(rows, dtype=torch.float32)


class ConvBN(nn.Conv2d):
    """A bias-free convolution followed by a frozen BatchNorm (keys ``weight`` and ``norm.*``)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1, eps: float = 1e-5
    ) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.norm = nn.BatchNorm2d(cout, eps=eps)
        self.register_buffer("folded_weight", None, persistent=False)
        self.register_buffer("folded_bias", None, persistent=False)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of the conv with the BatchNorm's running statistics folded in."""
        bn = self.norm
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = self.weight * scale.reshape(-1, 1, 1, 1)
        return weight, bn.bias - bn.running_mean * scale

    def fold(self) -> None:
        with torch.no_grad():
            weight, bias = self.folded()
        self.folded_weight = weight  # keeps the weight's memory format (channels_last or not)
        self.folded_bias = bias.contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded_weight is not None:
            return F.conv2d(x, self.folded_weight, self.folded_bias, self.stride, self.padding, self.dilation)
        return self.norm(F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation))


class Bottleneck(nn.Module):
    """ResNet bottleneck with the stride in the first 1x1 conv (the MSRA layout)."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, dilation: int, eps: float) -> None:
        super().__init__()
        self.shortcut = ConvBN(cin, cout, 1, stride=stride, eps=eps) if cin != cout else None
        self.conv1 = ConvBN(cin, mid, 1, stride=stride, eps=eps)
        self.conv2 = ConvBN(mid, mid, 3, padding=dilation, dilation=dilation, eps=eps)
        self.conv3 = ConvBN(mid, cout, 1, eps=eps)
        self.register_buffer("merged_weight", None, persistent=False)  # conv1 and shortcut as one conv
        self.register_buffer("merged_bias", None, persistent=False)

    def fold(self) -> None:
        convs = [self.conv1, self.conv2, self.conv3] + ([self.shortcut] if self.shortcut is not None else [])
        for conv in convs:
            conv.fold()
        if self.shortcut is not None and self.shortcut.stride == self.conv1.stride:
            # Both read the block input with the same 1x1 stride: one wider GEMM instead of two.
            self.merged_weight = torch.cat([self.conv1.folded_weight, self.shortcut.folded_weight])
            self.merged_bias = torch.cat([self.conv1.folded_bias, self.shortcut.folded_bias])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged_weight is not None:
            both = F.conv2d(x, self.merged_weight, self.merged_bias, self.conv1.stride)
            mid = self.conv1.out_channels
            out, shortcut = both[:, :mid], both[:, mid:]
            out = F.relu(out)
        else:
            out = F.relu(self.conv1(x))
            shortcut = x if self.shortcut is None else self.shortcut(x)
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        out += shortcut
        return F.relu_(out)


def _stage(cin: int, mid: int, cout: int, blocks: int, stride: int, dilation: int, eps: float) -> nn.Sequential:
    layers = [Bottleneck(cin, mid, cout, stride, dilation, eps)]
    layers += [Bottleneck(cout, mid, cout, 1, dilation, eps) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class Stem(nn.Module):
    """7x7/2 conv + BN + ReLU, then a Caffe-style 3x3/2 max pool (no padding, ceil mode)."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.conv1 = ConvBN(3, channels, 7, stride=2, padding=3, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)


class Backbone(nn.Module):
    """Stem and res2..res4: image (N, 3, H, W) -> res4 map (N, 16 * width, ~H/16, ~W/16)."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        w, eps = cfg.width, cfg.bn_eps
        self.stem = Stem(cfg.stem_channels, eps)
        self.res2 = _stage(cfg.stem_channels, w, 4 * w, cfg.blocks[0], 1, 1, eps)
        self.res3 = _stage(4 * w, 2 * w, 8 * w, cfg.blocks[1], 2, 1, eps)
        self.res4 = _stage(8 * w, 4 * w, 16 * w, cfg.blocks[2], 2, 1, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res4(self.res3(self.res2(self.stem(x))))


class AnchorGenerator(nn.Module):
    """Holds the cell anchors (a parameter in the released checkpoint) and tiles them over a map."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.stride = cfg.stride
        anchors = cell_anchors(cfg.anchor_sizes, cfg.anchor_ratios)
        self.cell_anchors = nn.ParameterList([nn.Parameter(anchors, requires_grad=False)])

    def forward(self, height: int, width: int) -> torch.Tensor:
        """(height * width * A, 4) anchors in image pixels, ordered by row, column, then cell anchor."""
        base = self.cell_anchors[0]
        ys = torch.arange(height, device=base.device, dtype=base.dtype) * self.stride
        xs = torch.arange(width, device=base.device, dtype=base.dtype) * self.stride
        sy, sx = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack([sx, sy, sx, sy], dim=-1).reshape(-1, 1, 4)
        return (shifts + base.reshape(1, -1, 4)).reshape(-1, 4)


class RPNHead(nn.Module):
    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cfg.res4_channels, cfg.rpn_hidden, 3, padding=1)
        self.objectness_logits = nn.Conv2d(cfg.rpn_hidden, cfg.num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(cfg.rpn_hidden, cfg.num_anchors * 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objectness (N, H*W*A) and deltas (N, H*W*A, 4), in the anchor order of AnchorGenerator."""
        t = F.relu_(self.conv(x))
        logits = self.objectness_logits(t)
        deltas = self.anchor_deltas(t)
        n, a, h, w = logits.shape
        logits = logits.permute(0, 2, 3, 1).reshape(n, h * w * a)
        deltas = deltas.reshape(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, h * w * a, 4)
        return logits, deltas


class ProposalGenerator(nn.Module):
    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.anchor_generator = AnchorGenerator(cfg)
        self.rpn_head = RPNHead(cfg)


class BoxPredictor(nn.Module):
    """Class scores (num_classes + 1, background last), class-specific box deltas, and attributes
    predicted from [region feature ; embedding of the argmax class]."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        d = cfg.feat_dim
        self.cls_score = nn.Linear(d, cfg.num_classes + 1)
        self.bbox_pred = nn.Linear(d, cfg.num_classes * 4)
        self.cls_embedding = nn.Embedding(cfg.num_classes + 1, d // 8)
        self.fc_attr = nn.Linear(d + d // 8, d // 4)
        self.attr_score = nn.Linear(d // 4, cfg.num_attrs + 1)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class logits (R, C+1), attribute logits (R, A+1), box deltas (R, 4C)."""
        scores = self.cls_score(feats)
        deltas = self.bbox_pred(feats)
        embedded = self.cls_embedding(scores.argmax(-1))
        hidden = F.relu_(self.fc_attr(torch.cat([feats, embedded.to(feats.dtype)], dim=-1)))
        return scores, self.attr_score(hidden), deltas


class RoIHeads(nn.Module):
    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        w, eps = cfg.width, cfg.bn_eps
        # Visual Genome variant: no stride in res5 and dilation 2, so the 14x14 pooled map stays 14x14.
        self.res5 = _stage(16 * w, 8 * w, 32 * w, cfg.blocks[3], 1, 2, eps)
        self.box_predictor = BoxPredictor(cfg)


class Detector(nn.Module):
    """The detector's modules, named as in the released checkpoint."""

    def __init__(self, cfg: DetectorConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or DetectorConfig()
        self.backbone = Backbone(self.cfg)
        self.proposal_generator = ProposalGenerator(self.cfg)
        self.roi_heads = RoIHeads(self.cfg)

    def fold_batchnorm(self) -> Detector:
        """Fold every frozen BatchNorm into its conv (call again after changing weights)."""
        for module in self.modules():
            if isinstance(module, Bottleneck):
                module.fold()
        self.backbone.stem.conv1.fold()
        return self

    def region_features(self, pooled: torch.Tensor) -> torch.Tensor:
        """(R, 1024, 14, 14) pooled res4 regions -> (R, 2048) mean of the res5 output."""
        return self.roi_heads.res5(pooled).mean(dim=(2, 3))
