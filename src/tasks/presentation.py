"""How ``ask`` and the page present a task: what a user gives it and what comes back.

A task declares its ``presentation``; the asking code reads it instead of knowing task names.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGES = ("one", "pair", "gallery")
OUTPUTS = ("answers", "true_false", "labels", "ranking", "box")


@dataclass(frozen=True)
class Presentation:
    """``images``: one image, a pair (left, right) or a gallery of several; ``text``: what the user's
    sentence is called ("question", "statement", "hypothesis", "caption", "expression");
    ``output``: an answer distribution, true/false, one of a few labels, a ranking of the gallery, or
    a box on the image."""

    images: str
    text: str
    output: str

    def __post_init__(self) -> None:
        if self.images not in IMAGES:
            raise ValueError(f"Presentation.images must be one of {IMAGES}, got {self.images!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"Presentation.output must be one of {OUTPUTS}, got {self.output!r}")
