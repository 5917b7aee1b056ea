"""Run configuration: typed dataclasses, printed and saved with every run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lxrt import LXRTConfig


@dataclass
class TrainConfig:
    """Everything one run of the shared loop needs besides the task's own options.

    Field names follow the original flags (``--batchSize`` -> ``batch_size``). ``batch_size`` is
    the global batch: with N processes each takes ``batch_size // N`` examples per step.
    """

    task: str = ""  # the registered task the run is for (recipes set it)
    recipe: str = ""  # the recipe the run started from (set by the command line)
    output: str = "snap/run"
    train: str = ""
    valid: str = ""
    test: str = ""
    data_root: str = "data"
    batch_size: int = 32
    eval_batch_size: int = 0  # 0: the task's default
    epochs: int = 4
    lr: float = 5e-5
    optim: str = "bert"  # bert (BertAdam, as the original), adamw, adam, adamax, rms, sgd
    warmup: float = 0.1
    weight_decay: float = 0.01
    clip_norm: float = 5.0
    seed: int = 9595
    num_workers: int = 0
    tiny: bool = False
    fast: bool = False
    max_seq_length: int = 20
    load: str = ""  # fine-tuned snapshot to start from (PATH.pth)
    load_lxmert: str = ""  # encoder from a pretraining snapshot (PATH_LXRT.pth)
    load_lxmert_qa: str = ""  # encoder + QA head from a pretraining snapshot
    from_scratch: bool = False
    bert: str = ""  # HF BERT folder for the language layers when not from scratch
    amp: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU), bf16, fp16, none
    compile: bool = False
    fsdp: bool = False
    resume: bool = False
    save_every: int = 0  # steps between resumable checkpoints (0: epoch ends only)
    log_every: int = 50
    max_steps: int = 0  # stop after this many optimizer steps (0: all epochs)
    progress: bool = True
    pooled_only: bool = True  # skip encoder work no pooled-output head uses
    allow_missing: bool = False  # server splits: write the questions that have features (else fail)
    features_on_device: bool = False  # copy the run's region features into device memory once
    model: LXRTConfig = field(default_factory=LXRTConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        model = LXRTConfig.from_dict(d.pop("model", {}))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**d, model=model)

    def replace(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @property
    def output_dir(self) -> Path:
        return Path(self.output)
