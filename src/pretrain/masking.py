"""Input corruption of one pretraining example: masked words, masked regions, sampled QA answers.

Every function draws from a ``numpy.random.Generator`` passed in, so an example built twice with
the same generator state is identical (the dataset seeds one generator per example and epoch).
The 80/10/10 rule is the original's: of the selected items 80 % are masked ([MASK] / zero
feature), 10 % replaced by a random item, 10 % left unchanged; all selected items are targets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

IGNORE = -1
"""Label of positions without a target (the losses' ``ignore_index``)."""
MASK_FRACTION = 0.8
RANDOM_FRACTION = 0.1


def _split_selected(u: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Selected / masked / randomized flags from one uniform draw per item.

    As in the original, a single draw decides both: ``u < rate`` selects, and ``u / rate`` (uniform
    on [0, 1) given selection) picks mask (< 0.8), random (< 0.9) or keep.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"mask rate must be in [0, 1], got {rate}")
    selected = u < rate
    scaled = u / rate if rate > 0 else np.ones_like(u)
    masked = selected & (scaled < MASK_FRACTION)
    randomized = selected & (scaled >= MASK_FRACTION) & (scaled < MASK_FRACTION + RANDOM_FRACTION)
    return selected, masked, randomized


def mask_words(
    tokens: Sequence[int], rng: np.random.Generator, rate: float, vocab_size: int, mask_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Masked-LM corruption of wordpieces (without [CLS]/[SEP], which are therefore never masked).

    Returns (corrupted ids, labels); labels hold the original id of every selected token and
    ``IGNORE`` elsewhere. Random replacements come uniformly from the whole vocabulary, special and
    ``[unused]`` tokens included, like the original.
    """
    ids = np.asarray(tokens, dtype=np.int64)
    u = rng.random(ids.shape[0])
    replacements = rng.integers(0, vocab_size, size=ids.shape[0])  # drawn always: a fixed draw order
    selected, masked, randomized = _split_selected(u, rate)
    out = ids.copy()
    out[masked] = mask_id
    out[randomized] = replacements[randomized]
    labels = np.where(selected, ids, IGNORE)
    return out, labels


def frame_tokens(
    tokens: np.ndarray, labels: np.ndarray, max_length: int, cls_id: int, sep_id: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[CLS] tokens [SEP]`` right-padded to ``max_length``: (input ids, input mask, LM labels).

    ``tokens`` must already be truncated to ``max_length - 2``; [CLS], [SEP] and padding get
    ``IGNORE`` labels.
    """
    n = tokens.shape[0]
    if n > max_length - 2:
        raise ValueError(f"{n} wordpieces do not fit max_length {max_length} with [CLS] and [SEP]")
    input_ids = np.full(max_length, pad_id, dtype=np.int64)
    input_mask = np.zeros(max_length, dtype=np.int64)
    lm_labels = np.full(max_length, IGNORE, dtype=np.int64)
    input_ids[0] = cls_id
    input_ids[1 : n + 1] = tokens
    input_ids[n + 1] = sep_id
    input_mask[: n + 2] = 1
    lm_labels[1 : n + 1] = labels
    return input_ids, input_mask, lm_labels


def mask_regions(
    feats: np.ndarray,
    rng: np.random.Generator,
    rate: float,
    random_feature: Callable[[np.random.Generator], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Masked-region corruption of (N, D) features: (corrupted float32 copy, feat_mask (N,) float32).

    Selected regions get feat_mask 1; of them 80 % are zeroed, 10 % take ``random_feature(rng)``
    (a region of a random training image) and 10 % stay. Boxes are never corrupted.
    """
    out = np.array(feats, dtype=np.float32, copy=True)
    u = rng.random(out.shape[0])
    selected, masked, randomized = _split_selected(u, rate)
    out[masked] = 0.0
    for i in np.flatnonzero(randomized):
        out[i] = random_feature(rng)
    return out, selected.astype(np.float32)


def sample_answer(label: Mapping[str, float], answer_ids: Mapping[str, int], rng: np.random.Generator) -> int:
    """One answer id drawn with probability proportional to its score; ``IGNORE`` if none is usable.

    ``label`` is already normalized and filtered to the answer table; zero-score answers can
    never be drawn (all-zero labels give ``IGNORE``).
    """
    if not label:
        return IGNORE
    answers = list(label)
    if len(answers) == 1:
        return answer_ids[answers[0]]
    scores = np.array([label[a] for a in answers], dtype=np.float64)
    total = scores.sum()
    if not total > 0:
        return IGNORE
    return answer_ids[answers[int(rng.choice(len(answers), p=scores / total))]]
