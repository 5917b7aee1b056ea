"""How ``ask`` and the page present a task: what a user gives it and what comes back.

A task declares its ``presentation`` (and, when its pictures are not the detector's, its
:class:`ImageSettings`); the asking code reads them instead of knowing task names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IMAGES = ("one", "pair", "gallery")
OUTPUTS = ("answers", "true_false", "labels", "ranking", "box")


@dataclass(frozen=True)
class Presentation:
    """``images``: one image, a pair (left, right) or a gallery of several; ``text``: what the user's
    sentence is called ("question", "statement", "hypothesis", "caption", "expression");
    ``output``: an answer distribution, true/false, one of a few labels, a ranking of the gallery, or
    a box on the image; ``photos``: the model reads the detector's features of photos (False: the task's
    own pictures, see ``ask_images``); ``priority``: of two models of one kind, the higher is the default."""

    images: str
    text: str
    output: str
    photos: bool = True
    priority: int = 0

    def __post_init__(self) -> None:
        if self.images not in IMAGES:
            raise ValueError(f"Presentation.images must be one of {IMAGES}, got {self.images!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"Presentation.output must be one of {OUTPUTS}, got {self.output!r}")
        if (self.images == "pair") != (self.output == "true_false"):
            raise ValueError("Presentation: a pair of images is judged true or false, and only a pair")


@dataclass(frozen=True)
class ImageSettings:
    """How a task's pictures become its model's features when they are not the detector's: the registered
    extractor and its options, the dtype the features were stored in, and the standardization
    ``(mean, std)`` its collator applies (None: none)."""

    extractor: str
    options: Mapping[str, Any] = field(default_factory=dict)
    dtype: str = "float16"
    standardize: tuple[np.ndarray, np.ndarray] | None = None
