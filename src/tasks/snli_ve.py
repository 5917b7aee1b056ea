"""SNLI-VE (visual entailment): does a Flickr30k image entail, contradict, or leave neutral a sentence?

``python -m tasks.snli_ve --help`` (or ``run/snli_ve_*.bash``). Data, as ``python -m
tasks.snli_ve_prepare`` writes it from the SNLI-VE release::

    data/snli_ve/{train,valid,test}.json        [{"pair_id": "2248275918.jpg#2r1e", "img_id": "2248275918",
                                                  "sent": "A dog runs.", "label": "entailment"}, ...]
    data/flickr30k_imgfeat/flickr30k_obj36.tsv  obj36 features of every Flickr30k image (all splits)

The model is LXMERT's classifier on the pooled output over the three labels; the metric is
accuracy; ``<split>_predict.json`` is ``[{"label": "entailment", "pair_id": ...}, ...]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from engine.config import TrainConfig
from engine.recipes import LXR955, register
from tasks.base import FinetuneTask
from tasks.data_common import TaskDataset
from tasks.finetune import main as run_main
from tasks.presentation import Presentation
from tasks.registry import register_task
from tasks.submission import register_writer, write_json_rows

LABELS = ("contradiction", "neutral", "entailment")
FEATURES = Path("flickr30k_imgfeat") / "flickr30k_obj36.tsv"


class SNLIVEDataset(TaskDataset):
    """Hypotheses about Flickr30k images whose features are loaded. Every split reads the one
    Flickr30k feature file, so ``--tiny``/``--fast`` keep the records on the images of the first
    512/5000 records (``subset_by = "records"``) instead of the file's first lines."""

    task = "snli_ve"
    id_key = "pair_id"
    image_keys = ("img_id",)
    label_classes = LABELS
    subset_by = "records"

    @classmethod
    def feature_files(cls, splits: Sequence[str], root: Path, topk: int | None) -> dict[Path, int | None]:
        return {Path(root) / FEATURES: topk}


@register_task
class SNLIVETask(FinetuneTask):
    """Cross-entropy over the three labels (the base task's defaults), accuracy, a JSON submission."""

    name = "snli_ve"
    dataset_class = SNLIVEDataset
    metrics = {"accuracy": "exact_match"}
    recipe = "snli_ve_lxr955"
    description = "Fine-tune / test LXMERT on SNLI-VE (visual entailment)."
    known_splits = ("train", "valid", "test")
    presentation = Presentation(images="one", text="hypothesis", output="labels")


@register_writer("snli_ve", ".json")
def write_snli_ve_predictions(
    predictions: Mapping[str, str], path: str | Path, expected: Iterable[str] | None = None
) -> Path:
    """``[{"label": "entailment", "pair_id": "2248275918.jpg#2r1e"}, ...]``, indent 4, sorted keys."""
    bad = next(((i, p) for i, p in predictions.items() if p not in LABELS), None)
    if bad is not None:
        raise ValueError(f"SNLI-VE prediction for {bad[0]!r} is {bad[1]!r}, expected one of {list(LABELS)}")
    return write_json_rows(predictions, path, expected, "pair_id", "label")


# The original's fine-tuning settings (NLVR2's: encoder from pretraining, BertAdam 5e-5, batch 32,
# 4 epochs); not tuned for SNLI-VE.
register("snli_ve_lxr955", TrainConfig(
    task="snli_ve", train="train", valid="valid", load_lxmert="snap/pretrained/model",
    batch_size=32, optim="bert", lr=5e-5, epochs=4, warmup=0.1, clip_norm=5.0, model=LXR955,
))  # fmt: skip
register("snli_ve_test", TrainConfig(task="snli_ve", batch_size=32, lr=5e-5, epochs=4, model=LXR955))


def main(argv: Sequence[str] | None = None) -> dict:
    return run_main(SNLIVETask, argv)


if __name__ == "__main__":
    main()
