"""Analytic model FLOPs and device peaks, for examples/s -> FLOP/s -> model FLOPs utilization."""

from __future__ import annotations

import torch

from lxrt import LXRTConfig


def _layer_macs(n: int, h: int, ffn: int) -> int:
    """Self-attention layer on n tokens: QKV + output projections, scores, weighted sum, FFN."""
    return 4 * n * h * h + 2 * n * n * h + 2 * n * h * ffn


def forward_flops(config: LXRTConfig, seq_len: int = 20, boxes: int = 36, head_out: int = 3129) -> float:
    """Forward FLOPs (2 x multiply-adds) of one (sentence, image) pair plus an answer MLP."""
    h, f = config.hidden_size, config.intermediate_size
    t, v = seq_len, boxes
    macs = v * (config.visual_feat_dim + config.visual_pos_dim) * h
    macs += config.llayers * _layer_macs(t, h, f)
    macs += config.rlayers * _layer_macs(v, h, f)
    cross = 0
    # shared cross-attention both ways: Q for the querying side, K/V for the other, output proj.
    cross += t * h * h + 2 * v * h * h + t * v * h * 2 + t * h * h
    cross += v * h * h + 2 * t * h * h + v * t * h * 2 + v * h * h
    cross += _layer_macs(t, h, f) + _layer_macs(v, h, f)
    macs += config.xlayers * cross
    macs += h * h + h * 2 * h + 2 * h * head_out
    return 2.0 * macs


def train_flops(config: LXRTConfig, seq_len: int = 20, boxes: int = 36, head_out: int = 3129) -> float:
    """Forward + backward, the usual 3x-forward convention."""
    return 3.0 * forward_flops(config, seq_len, boxes, head_out)


PEAK_FLOPS = {
    # dense bf16/fp16 tensor-core peaks (FLOP/s)
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10": 125e12,
    "V100": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
}


def device_peak_flops(device: torch.device) -> float | None:
    """The dense bf16 peak of a known GPU, else None (MFU is then not reported)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_FLOPS.items():
        if key in name:
            return peak
    return None
