"""Named experiments: each run script's settings as a typed config, reproducible by name.

``get("vqa_lxr955")`` is what ``bash run/vqa_finetune.bash`` runs; command-line flags override
single fields and the resolved config is saved beside the run. Recipes are declared next to their
task (``register`` at import of ``tasks/vqa.py`` etc.); ``get`` and ``names`` discover them from any
entry point (``engine.plugins``).
"""

from __future__ import annotations

from lxrt import LXRTConfig

from .config import TrainConfig
from .plugins import discover

_RECIPES: dict[str, TrainConfig] = {}


def register(name: str, cfg: TrainConfig) -> TrainConfig:
    if name in _RECIPES and _RECIPES[name] != cfg:
        raise ValueError(f"recipe {name!r} is already registered with other settings")
    _RECIPES[name] = cfg
    return cfg


def get(name: str) -> TrainConfig:
    """The recipe registered as ``name`` (task modules are imported to find it if needed)."""
    if name not in _RECIPES:
        discover()
    try:
        return _RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(sorted(_RECIPES))}") from None


def names() -> list[str]:
    """Every recipe any task package declares."""
    discover()
    return sorted(_RECIPES)


LXR955 = LXRTConfig(llayers=9, xlayers=5, rlayers=5)
"""The original fine-tuning model: 9 language, 5 cross-modality, 5 vision layers."""
