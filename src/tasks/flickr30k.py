"""Image-text retrieval on Flickr30k: ``python -m tasks.flickr30k --help`` (or ``run/flickr30k_*.bash``).

A pair's score is LXMERT's pretraining matching head on the pooled output, logit(matched) - logit(not), which
``--loadLXMERT`` loads too. Training: each caption with its image, ``--negatives`` random other images and
``--hard-negatives`` top-scoring images of the batch's other captions; softmax cross-entropy, the positive being the
class (it ranks, as recall does; a 1:k binary loss mostly learns "not matched"). Evaluation: every caption against
every gallery image (``--gallery N``: the first N images, their captions), R@1/5/10 both ways and their sum ``rsum``
(selects BEST); ``--test`` writes ``<split>_scores.npy`` and ``<split>_recall.json``. Data: ``flickr30k_data.py``."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.batch import Batch
from engine.config import TrainConfig
from engine.recipes import LXR955, register
from engine.report import get_logger
from engine.validate import non_negative_int, positive_int
from lxrt import CheckpointError, TaskEncoder, init_bert_weights, load_state, read_state_dict, resolve_checkpoint
from lxrt.fileio import atomic_write, atomic_write_text
from tasks.base import FinetuneTask, model_config_for
from tasks.finetune import main as run_main
from tasks.flickr30k_data import Captions, TrainView, recalls, rows_of
from tasks.presentation import Presentation
from tasks.registry import register_task


class Matcher(nn.Module):
    """The encoder and the matching head (``seq_relationship``, index 1: matched): pairs -> scores."""

    def __init__(self, config: Any, pooled_only: bool = True) -> None:
        super().__init__()
        self.config, self.pooled_only = config, pooled_only
        self.lxrt_encoder = TaskEncoder(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)
        self.seq_relationship.apply(init_bert_weights)

    def forward(self, input_ids: Tensor, feats: Tensor, boxes: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, visual_mask: Tensor | None = None) -> Tensor:
        out = self.lxrt_encoder(input_ids, feats, boxes, attention_mask, token_type_ids, visual_mask,
                                pooled_only=self.pooled_only)
        logits = self.seq_relationship(out.pooled).float()
        return logits[:, 1] - logits[:, 0]


@register_task
class Flickr30kTask(FinetuneTask):
    """Captions ranked against images (``presentation``: a caption and a gallery -> a ranking)."""

    name, dataset_class, num_classes, metrics, main_metric = "flickr30k", Captions, 2, {}, "rsum"
    recipe, known_splits, model_class = "flickr30k_lxr955", ("train", "valid", "test"), Matcher
    description = "Fine-tune / test LXMERT on Flickr30k image-text retrieval."
    presentation = Presentation(images="gallery", text="caption", output="ranking")
    eval_batch_size = 8  # examples of up to BLOCK pairs each
    head = "cls.seq_relationship."  # the matching head in a pretraining snapshot

    def __init__(self, cfg: TrainConfig, negatives: int = 7, hard_negatives: int = 0, gallery: int = 0) -> None:
        super().__init__(cfg)
        self.options = {"negatives": negatives, "hard_negatives": hard_negatives, "gallery": gallery}

    @classmethod
    def add_arguments(cls, group: Any) -> None:
        group.add_argument("--negatives", type=positive_int, default=7, help="random other images per caption")
        group.add_argument("--hard-negatives", type=non_negative_int, default=0,
                           help="per caption, the N top-scoring images of the batch's other captions as negatives")
        group.add_argument("--gallery", type=non_negative_int, default=0, help="evaluate on the first N images")

    @classmethod
    def from_args(cls, cfg: TrainConfig, args: Any) -> Flickr30kTask:
        return cls(cfg, args.negatives, args.hard_negatives, args.gallery)

    def options_dict(self) -> dict[str, Any]:
        return self.options

    def make_dataset(self, splits: str, topk: int | None, train: bool = False) -> Captions:
        if train:
            return TrainView(splits, self.cfg.data_root, topk, 0, self.options["negatives"], self.cfg.seed)
        return Captions(splits, self.cfg.data_root, topk, self.options["gallery"])

    def build_model(self) -> nn.Module:
        return Matcher(model_config_for(self.cfg, self.first_dataset(), self.load_facts()), self.cfg.pooled_only)

    def load_pretrained(self, model: nn.Module) -> None:
        super().load_pretrained(model)
        if self.cfg.load_lxmert and not self.cfg.load:  # --load replaces every weight anyway
            file = resolve_checkpoint(self.cfg.load_lxmert)
            head = {k[len(self.head) :]: v for k, v in read_state_dict(file).items() if k.startswith(self.head)}
            if not head:
                raise CheckpointError(f"{file}: no matching head ({self.head}*) to score pairs with")
            report = load_state(model.seq_relationship, head, source=str(file))
            get_logger().info(f"--loadLXMERT matching head: {report.summary()}")

    def forward(self, model: nn.Module, batch: Batch) -> Tensor:
        """Scores, a row per example: (B, 1 + negatives + hard negatives) in training, (B, block) in evaluation."""
        scores = super().forward(model, batch).view(len(batch), -1)
        hard, n = self.options["hard_negatives"], len(batch)
        if not (hard and "image" in batch.targets):
            return scores
        pos = torch.arange(n, device=scores.device) * scores.shape[1]  # the rows of the positive pairs
        with torch.no_grad():  # every caption against every caption's image
            grid = super().forward(model, rows_of(batch, pos.repeat_interleave(n), pos.repeat(n))).view(n, n)
        image = batch.targets["image"]
        top = grid.masked_fill(image[:, None] == image[None], -torch.inf).topk(min(hard, n - 1), 1)
        picked = rows_of(batch, pos.repeat_interleave(top.indices.shape[1]), pos[top.indices].flatten())
        more = super().forward(model, picked).view(n, -1).masked_fill(top.values.isinf(), -torch.inf)
        return torch.cat([scores, more], 1)

    def loss(self, output: Tensor, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        return F.cross_entropy(output, output.new_zeros(len(output), dtype=torch.long)), {}

    def predict(self, output: Tensor, batch: Batch) -> dict[Any, Any]:
        return {}  # training batches: recall is measured on the gallery only

    def prediction_codes(self, output: Tensor, batch: Batch) -> Tensor | None:
        return None if batch.targets else output  # (the base's decode_predictions keeps the rows as they are)

    def score(self, predictions: dict[Any, Any], dataset: Captions) -> dict[str, float]:
        return recalls(dataset.matrix(predictions), dataset.gold) if predictions else {}

    def write_predictions(self, predictions: dict[Any, Any], dataset: Captions, output: Path, split: str) -> list[Path]:
        scores, buffer = dataset.matrix(predictions), io.BytesIO()
        np.save(buffer, scores)
        npy = atomic_write(Path(output) / f"{split}_scores.npy", lambda tmp: tmp.write_bytes(buffer.getvalue()))
        shown = {k: round(100 * v, 2) for k, v in recalls(scores, dataset.gold).items()}
        text = json.dumps({**shown, "captions": len(dataset.captions), "images": len(dataset.gallery)}, indent=2)
        return [npy, atomic_write_text(Path(output) / f"{split}_recall.json", text)]


# The original's fine-tuning settings (NLVR2's), not tuned for retrieval.
register("flickr30k_lxr955", TrainConfig(task="flickr30k", train="train", valid="valid", batch_size=32, optim="bert",
                                         lr=5e-5, epochs=4, load_lxmert="snap/pretrained/model", model=LXR955))
register("flickr30k_test", TrainConfig(task="flickr30k", batch_size=32, lr=5e-5, epochs=4, model=LXR955))


def main(argv: list[str] | None = None) -> dict:
    return run_main(Flickr30kTask, argv)


if __name__ == "__main__":
    main()
