"""NLVR2 fine-tuning and testing: ``python -m tasks.nlvr2 --help`` (or ``run/nlvr2_*.bash``).

Splits: train, valid (dev), test (test-P) and hidden (test-U, for the server). ``--test`` as the
original reads it: a name containing ``hidden`` predicts it into ``hidden_predict.csv``; a name
containing ``test`` or ``valid`` evaluates it into ``<name>_predict.csv``. Metrics: accuracy and the
official consistency (the fraction of sentences right on all of their image pairs). The prediction
file has one ``identifier,True|False`` line per example, no header.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.config import TrainConfig
from engine.recipes import LXR955, register
from engine.task import PredictSplit, SplitNameError
from lxrt.fileio import atomic_write_text
from tasks.base import FinetuneTask
from tasks.finetune import main as run_main
from tasks.metrics import check_predictions, register_metric
from tasks.nlvr2_data import NLVR2Dataset
from tasks.presentation import Presentation
from tasks.registry import register_task
from tasks.submission import check_complete, register_writer


@register_task
class NLVR2Task(FinetuneTask):
    """True/false about a sentence and a pair of images; cross-entropy over 2 classes."""

    name = "nlvr2"
    dataset_class = NLVR2Dataset
    num_classes = 2
    metrics = {"accuracy": "nlvr2_accuracy", "consistency": "nlvr2_consistency"}
    recipe = "nlvr2_lxr955"
    description = "Fine-tune / test LXMERT on NLVR2."
    known_splits = ("train", "valid", "test", "hidden")
    server_splits = ("test", "hidden")
    presentation = Presentation(images="pair", text="statement", output="true_false")

    @classmethod
    def missing_data_hints(cls, missing: Sequence[Path], root: Path) -> tuple[list[str], list[str]]:
        """The NLVR2 JSON files are built from the raw release (the ``nlvr2`` download group)."""
        if not any(p.parent == root / cls.folder() and p.suffix == ".json" for p in missing):
            return [], []
        command = f"python -m tasks.nlvr2_prepare --raw {root}/nlvr2/nlvr/nlvr2/data --out {root}/nlvr2"
        return ["nlvr2"], [f"then build the NLVR2 files: {command}"]

    @classmethod
    def predict_splits(cls, name: str) -> list[PredictSplit]:
        name = name.strip()
        if "hidden" in name:
            return [PredictSplit(name, "hidden")]
        if "test" in name or "valid" in name:
            return [PredictSplit(name, name)]
        raise SplitNameError(
            f"--test {name!r} is not a NLVR2 test split; accepted: a name containing 'hidden' (-> "
            "hidden_predict.csv), 'test' or 'valid' (NAME -> NAME_predict.csv)"
        )


def _as_label(value: Any, what: str) -> int:
    if isinstance(value, str) and value in ("True", "False"):
        return int(value == "True")
    if value in (0, 1):  # also True / False
        return int(value)
    raise ValueError(f"{what}: expected 0/1, True/False, got {value!r}")


@register_metric("nlvr2_accuracy")
def nlvr2_accuracy(predictions: Mapping[str, Any], labels: Mapping[str, Any]) -> float:
    """Fraction of examples whose predicted truth value equals the label."""
    check_predictions(predictions, labels)
    right = sum(_as_label(p, i) == _as_label(labels[i], i) for i, p in predictions.items())
    return right / len(predictions)


def nlvr2_sentence_id(identifier: str) -> str:
    """The sentence an NLVR2 example belongs to, keyed as the official evaluation script does.

    Identifiers are ``split-set-pair-sentence`` (``dev-850-0-0``; the images are
    ``dev-850-0-img0/1``). One sentence is paired with several image pairs, so the official
    script blanks the pair field: ``dev-850-0-0`` -> ``dev-850--0``.
    """
    parts = identifier.split("-")
    if len(parts) < 4:
        raise ValueError(f"NLVR2 identifier {identifier!r} is not split-set-pair-sentence")
    parts[2] = ""
    return "-".join(parts)


@register_metric("nlvr2_consistency")
def nlvr2_consistency(predictions: Mapping[str, Any], labels: Mapping[str, Any]) -> float:
    """Fraction of sentences all of whose predicted image pairs are right (official NLVR2 metric)."""
    check_predictions(predictions, labels)
    consistent: dict[str, bool] = defaultdict(lambda: True)
    for ident, pred in predictions.items():
        sid = nlvr2_sentence_id(ident)
        consistent[sid] = consistent[sid] and _as_label(pred, ident) == _as_label(labels[ident], ident)
    return sum(consistent.values()) / len(consistent)


@register_writer("nlvr2", ".csv")
def write_nlvr2_predictions(
    predictions: Mapping[str, Any], path: str | Path, expected: Iterable[str] | None = None
) -> Path:
    """NLVR2 CSV: ``identifier,True`` for a prediction of 1 (or True), ``identifier,False`` for 0."""
    check_complete(predictions, expected, str(path))
    lines = []
    for ident, pred in predictions.items():
        if pred not in (0, 1):
            raise ValueError(f"NLVR2 prediction for {ident!r} must be 0/1 or a bool, got {pred!r}")
        if "," in ident or "\n" in ident:
            raise ValueError(f"NLVR2 identifier {ident!r} cannot be written to a CSV line")
        lines.append(f"{ident},{'True' if pred == 1 else 'False'}\n")
    return atomic_write_text(path, "".join(lines))



register("nlvr2_lxr955", TrainConfig(
    task="nlvr2", train="train", valid="valid", load_lxmert="snap/pretrained/model",
    batch_size=32, optim="bert", lr=5e-5, epochs=4, warmup=0.1, clip_norm=5.0, model=LXR955,
))  # fmt: skip
register("nlvr2_test", TrainConfig(task="nlvr2", train="", valid="", batch_size=32, lr=5e-5, epochs=4, model=LXR955))

make_task = NLVR2Task.from_args


def main(argv: Sequence[str] | None = None) -> dict:
    return run_main(NLVR2Task, argv)


if __name__ == "__main__":
    main()
