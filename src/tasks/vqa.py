"""VQA 2.0 fine-tuning and testing: ``python -m tasks.vqa --help`` (or ``run/vqa_*.bash``)."""

from __future__ import annotations

from collections.abc import Sequence

from engine.config import TrainConfig
from engine.recipes import LXR955, register
from tasks.finetune import main as run_main
from tasks.qa_task import QATask
from tasks.vqa_data import VQADataset


class VQATask(QATask):
    name = "vqa"
    dataset_class = VQADataset
    recipe = "vqa_lxr955"
    description = "Fine-tune / test LXMERT on VQA 2.0."


register("vqa_lxr955", TrainConfig(
    task="vqa", train="train,nominival", valid="minival", load_lxmert_qa="snap/pretrained/model",
    batch_size=32, optim="bert", lr=5e-5, epochs=4, warmup=0.1, clip_norm=5.0, model=LXR955,
))  # fmt: skip
register("vqa_test", TrainConfig(task="vqa", train="", valid="", batch_size=32, lr=5e-5, epochs=4, model=LXR955))

make_task = VQATask.from_args


def main(argv: Sequence[str] | None = None) -> dict:
    return run_main(VQATask, argv)


if __name__ == "__main__":
    main()
