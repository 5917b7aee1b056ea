"""The text the original scripts print and append to ``log.log`` after each epoch, and their starting scores.

Fine-tuning (``tasks/vqa.py`` ...) appends a blank line and ``Epoch 0: Train 71.23``, ``Epoch 0: Valid 69.90``,
``Epoch 0: Best 69.90``; pretraining (``pretrain/lxmert_pretrain.py``) prints the mean total and per-task
losses and the image-QA accuracy of the training epoch and of the validation pass."""

from __future__ import annotations

from collections.abc import Mapping

# The original's model selection starts from these: fine-tuning saves BEST when the validation score
# beats 0 (strictly), pretraining saves BEST_EVAL_LOSS when the validation loss is below 9595.
INITIAL_BEST_SCORE = 0.0
INITIAL_BEST_LOSS = 9595.0


def finetune_epoch_text(
    epoch: int, train_score: float | None, valid_score: float | None, best: float | None
) -> str | None:
    """``log_str`` of the original fine-tuning loop (scores are fractions, printed as percents).

    A task whose selection metric is not measured on the training batches (retrieval recall) has
    no ``Train`` line; nothing at all is written when neither score is there.
    """
    if train_score is None and valid_score is None:
        return None
    text = "\n" if train_score is None else f"\nEpoch {epoch}: Train {train_score * 100.0:0.2f}\n"
    if valid_score is not None:
        best = valid_score if best is None else best
        text += f"Epoch {epoch}: Valid {valid_score * 100.0:0.2f}\n"
        text += f"Epoch {epoch}: Best {best * 100.0:0.2f}\n"
    return text


def losses_line(losses: Mapping[str, float]) -> str:
    """``The losses are Mask_LM: 1.2345 Matched: 0.6931 ...`` (each value followed by a space, as printed)."""
    return "The losses are " + "".join(f"{name}: {value:0.4f} " for name, value in losses.items())


def qa_accuracy_line(overall: float, per_source: Mapping[str, float]) -> str:
    """``Overall Accu 0.1234, vqa Accu 0.2345, `` with the sources sorted, as the pretraining evaluator prints."""
    text = f"Overall Accu {overall:0.4f}, "
    for source in sorted(per_source):
        text += f"{source} Accu {per_source[source]:0.4f}, "
    return text


def pretrain_epoch_text(
    epoch: int,
    train: Mapping[str, float],
    valid: Mapping[str, float] | None,
    loss_names: tuple[str, ...],
) -> str:
    """The original's pretraining epoch report from this loop's metrics.

    ``train``/``valid`` hold ``loss``, ``loss/<name>`` for each task loss and, when image QA is on,
    ``accuracy`` and ``accuracy_<source>``. ``loss_names`` gives the print order.
    """
    lines = [f"The training loss for Epoch {epoch} is {train['loss']:0.4f}"]
    lines.append(losses_line({n: train[f"loss/{n}"] for n in loss_names if f"loss/{n}" in train}))
    lines += _accuracy_lines(train)
    if valid is not None and "loss" in valid:
        lines.append(f"The valid loss is {valid['loss']:0.4f}")
        lines.append(losses_line({n: valid[f"loss/{n}"] for n in loss_names if f"loss/{n}" in valid}))
        lines += _accuracy_lines(valid)
    return "".join(line + "\n" for line in lines)


def _accuracy_lines(metrics: Mapping[str, float]) -> list[str]:
    if "accuracy" not in metrics:
        return []
    per_source = {k[len("accuracy_"):]: v for k, v in metrics.items() if k.startswith("accuracy_")}
    return [qa_accuracy_line(metrics["accuracy"], per_source)]
