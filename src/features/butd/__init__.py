"""The bottom-up-attention Faster R-CNN detector (``--extractor butd``).

Importing this package registers the ``butd`` extractor with :mod:`features.extractors`; torch and
the model are loaded only when one is built (:class:`features.butd.extractor.ButdExtractor`).
Entry points that offer ``--extractor butd`` import this package.
"""

from __future__ import annotations

from features.extractors import RegionExtractor, register_extractor


@register_extractor("butd")
def butd_extractor(**options: object) -> RegionExtractor:
    """The bottom-up-attention Faster R-CNN (:class:`features.butd.extractor.ButdExtractor`)."""
    from features.butd.extractor import ButdExtractor  # torch and the model: only when one is built

    return ButdExtractor(**options)  # type: ignore[arg-type]
