"""Named experiments: each run script's settings as a typed config, reproducible by name.

``get("vqa_lxr955")`` is what ``bash run/vqa_finetune.bash`` runs; command-line flags override
single fields and the resolved config is saved beside the run.
"""

from __future__ import annotations

from lxrt import LXRTConfig

from .config import TrainConfig

_RECIPES: dict[str, TrainConfig] = {}


def register(name: str, cfg: TrainConfig) -> TrainConfig:
    if name in _RECIPES and _RECIPES[name] != cfg:
        raise ValueError(f"recipe {name!r} is already registered with other settings")
    _RECIPES[name] = cfg
    return cfg


def get(name: str) -> TrainConfig:
    try:
        return _RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(sorted(_RECIPES))}") from None


def names() -> list[str]:
    return sorted(_RECIPES)


LXR955 = LXRTConfig(llayers=9, xlayers=5, rlayers=5)

register("vqa_lxr955", TrainConfig(
    task="vqa", train="train,nominival", valid="minival", load_lxmert_qa="snap/pretrained/model",
    batch_size=32, optim="bert", lr=5e-5, epochs=4, warmup=0.1, clip_norm=5.0, model=LXR955,
))
register("vqa_test", TrainConfig(
    task="vqa", train="", valid="", tiny=True, batch_size=32, lr=5e-5, epochs=4, model=LXR955,
))
register("gqa_lxr955", TrainConfig(
    task="gqa", train="train,valid", valid="testdev", load_lxmert_qa="snap/pretrained/model",
    batch_size=32, optim="bert", lr=1e-5, epochs=4, warmup=0.1, clip_norm=5.0, model=LXR955,
))
register("gqa_test", TrainConfig(
    task="gqa", train="", valid="", tiny=True, batch_size=32, lr=1e-5, epochs=4, model=LXR955,
))
register("nlvr2_lxr955", TrainConfig(
    task="nlvr2", train="train", valid="valid", load_lxmert="snap/pretrained/model",
    batch_size=32, optim="bert", lr=5e-5, epochs=4, warmup=0.1, clip_norm=5.0, model=LXR955,
))
register("nlvr2_test", TrainConfig(
    task="nlvr2", train="", valid="", tiny=True, batch_size=32, lr=5e-5, epochs=4, model=LXR955,
))
