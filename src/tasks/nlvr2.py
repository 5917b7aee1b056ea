"""NLVR2 fine-tuning and testing: ``python -m tasks.nlvr2 --help`` (or ``run/nlvr2_*.bash``)."""

from __future__ import annotations

from collections.abc import Sequence

from engine.config import TrainConfig
from engine.recipes import LXR955, register
from tasks.base import FinetuneTask
from tasks.finetune import main as run_main
from tasks.nlvr2_data import NLVR2Dataset


class NLVR2Task(FinetuneTask):
    """True/false about a sentence and a pair of images; cross-entropy over 2 classes."""

    name = "nlvr2"
    dataset_class = NLVR2Dataset
    num_classes = 2
    metrics = {"accuracy": "nlvr2_accuracy", "consistency": "nlvr2_consistency"}
    recipe = "nlvr2_lxr955"
    description = "Fine-tune / test LXMERT on NLVR2."


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
