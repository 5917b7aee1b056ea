"""LXMERT pretraining as a ``Task`` of the shared training loop.

The task builds ``LXMERTForPretraining`` (keys ``bert.*``, ``cls.*``, ``obj_predict_head.*``,
``answer_head.*``), serves corrupted examples from ``pretrain.data``, sums the losses of
``pretrain.losses`` and reports image-QA accuracy. The loop saves ``EpochXX_LXRT.pth`` after every
epoch and ``BEST_EVAL_LOSS_LXRT.pth`` at the lowest mean validation loss, as the original did.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from engine.batch import Batch
from engine.config import TrainConfig
from engine.original_log import pretrain_epoch_text
from engine.report import get_logger
from engine.task import Task
from features.store import FeatureStore
from lxrt import (
    VISUAL_LOSSES,
    CheckpointError,
    LXMERTForPretraining,
    LXRTConfig,
    PretrainingOutput,
    atomic_write,
    load_state,
    read_state_dict,
    resolve_checkpoint,
)
from lxrt.bert_init import BERT_BASE_NAME, BertNotFoundError, load_bert_pretraining
from lxrt.snapshot import AnswerTableId, SnapshotFacts
from lxrt.tokenizer import LXRTTokenizer
from tasks.answers import PretrainAnswerTable, convert_ans
from tasks.bert import find_bert
from tasks.registry import register_task

from .data import SPLIT_FEATURES, ExampleOptions, PretrainDataset, collate, feature_files, image_limit, load_corpus
from .losses import LOSS_COMPAT, LossOptions, labels_positions, pretraining_loss

SCHEDULES = ("single", "paper")
PRINTED_LOSSES = ("Mask_LM", "Matched", "Obj", "Attr", "Feat", "QA")  # the original's LOSSES_NAME order
VALID_BATCH, MULTI_GPU_VALID_BATCH = 512, 2048
SHIPPED_ANSWERS = Path(__file__).resolve().parents[2] / "data" / "lxmert" / "all_ans.json"


@dataclass(frozen=True)
class PretrainOptions:
    """The pretraining flags of the original (``--taskMaskLM`` ...) plus the loss/schedule choices.

    ``loss_compat``: ``original`` (default) reproduces the released losses exactly, ``corrected``
    restricts Obj/Attr to masked regions and drops Mask_LM/QA targets of mismatched pairs (see
    ``pretrain.losses``). ``schedule``: ``single`` trains image QA from the first epoch (the
    repository's script); ``paper`` switches it on after ``qa_start_epoch`` epochs (the EMNLP
    paper: 10 of 20).
    """

    task_mask_lm: bool = True
    task_obj_predict: bool = True
    task_matched: bool = True
    task_qa: bool = True
    visual_losses: tuple[str, ...] = VISUAL_LOSSES
    word_mask_rate: float = 0.15
    obj_mask_rate: float = 0.15
    qa_sets: tuple[str, ...] | None = None
    loss_compat: str = "original"
    schedule: str = "single"
    qa_start_epoch: int = 10

    def __post_init__(self) -> None:
        if self.loss_compat not in LOSS_COMPAT:
            raise ValueError(f"--lossCompat must be one of {LOSS_COMPAT}, got {self.loss_compat!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.qa_start_epoch < 0:
            raise ValueError(f"--qaStartEpoch must be >= 0, got {self.qa_start_epoch}")
        unknown = set(self.visual_losses) - set(VISUAL_LOSSES)
        if unknown:
            known = ",".join(VISUAL_LOSSES)
            raise ValueError(f"--visualLosses: unknown {sorted(unknown)}; choose from {known}")
        if not (self.task_mask_lm or self.task_matched or self.task_qa or self.task_obj_predict):
            raise ValueError("every pretraining task is off: enable at least one --task* flag")

    def qa_active(self, epoch: int) -> bool:
        """Whether the image-QA loss is on during 0-based ``epoch``."""
        return self.task_qa and (self.schedule == "single" or epoch >= self.qa_start_epoch)

    def loss_options(self) -> LossOptions:
        return LossOptions(
            compat=self.loss_compat,
            mask_lm=self.task_mask_lm,
            matched=self.task_matched,
            visual_losses=tuple(self.visual_losses) if self.task_obj_predict else (),
            qa=self.task_qa,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def answer_table_path(data_root: str | Path) -> Path:
    """``<data_root>/lxmert/all_ans.json``, else the copy shipped with the code."""
    candidate = Path(data_root) / "lxmert" / "all_ans.json"
    return candidate if candidate.is_file() else SHIPPED_ANSWERS


@register_task
class PretrainTask(Task):
    """Masked LM, matching, masked-object prediction and image QA over the pretraining corpus."""

    name = "lxmert_pretrain"
    data_folder = "lxmert"
    known_splits = tuple(SPLIT_FEATURES)
    main_metric = "accuracy"  # image-QA accuracy, reported; the best snapshot is chosen by loss
    select_by_loss = True
    best_name = "BEST_EVAL_LOSS_LXRT.pth"
    last_name = None  # the last epoch's EpochXX_LXRT.pth is the final model

    @classmethod
    def feature_files(cls, splits: Sequence[str], root: Path, topk: int | None) -> dict[Path, int | None]:
        return feature_files(splits, root, topk)

    def __init__(self, cfg: TrainConfig, options: PretrainOptions | None = None) -> None:
        self.cfg = cfg
        self.options = options or PretrainOptions()
        self.answers = PretrainAnswerTable(answer_table_path(cfg.data_root), self.options.qa_sets)
        self.tokenizer = LXRTTokenizer(max_length=cfg.max_seq_length)
        self.model_config: LXRTConfig = cfg.model.replace(num_qa_labels=len(self.answers))
        if self.tokenizer.vocab_size != self.model_config.vocab_size:
            raise ValueError(
                f"the vocabulary {self.tokenizer.vocab_path} has {self.tokenizer.vocab_size} tokens but the "
                f"model config has vocab_size {self.model_config.vocab_size}"
            )
        self.loss_options = self.options.loss_options()
        self.example_options = ExampleOptions(
            max_seq_length=cfg.max_seq_length,
            word_mask_rate=self.options.word_mask_rate,
            obj_mask_rate=self.options.obj_mask_rate,
            task_matched=self.options.task_matched,
            drop_mismatched_lm=self.options.loss_compat == "corrected",
        )
        self._train_set: PretrainDataset | None = None
        start = self.options.qa_start_epoch
        if self.options.schedule == "paper" and self.options.task_qa and start >= cfg.epochs:
            get_logger().warning(f"--qaStartEpoch {start} >= --epochs {cfg.epochs}: QA is never trained")

    def options_dict(self) -> dict[str, Any]:
        """Task options printed by ``--print-config`` and saved beside the run."""
        return {"pretrain": self.options.to_dict()}

    def default_eval_batch(self, world_size: int) -> int:
        """The original's validation batch: 512, or 2048 over all GPUs with --multiGPU (rounded up to a
        multiple of the process count)."""
        if world_size <= 1:
            return VALID_BATCH
        return -(-MULTI_GPU_VALID_BATCH // world_size) * world_size

    def epoch_log_text(
        self, epoch: int, train: Mapping[str, float], valid: Mapping[str, float] | None, best: float | None
    ) -> str | None:
        """The original's epoch report: mean total and per-task losses, then image-QA accuracy, for the
        training epoch and the validation pass."""
        return pretrain_epoch_text(epoch, train, valid, PRINTED_LOSSES)

    def snapshot_facts(self, model: nn.Module) -> SnapshotFacts:
        return SnapshotFacts(
            task=self.name,
            model=self.model_config,
            num_outputs=len(self.answers),
            answers=AnswerTableId.of(self.answers.answers, str(self.answers.path)),
            recipe=self.cfg.recipe,
            max_seq_length=self.cfg.max_seq_length,
        )

    def snapshot_name(self, epoch: int) -> str | None:
        """``Epoch01_LXRT.pth`` after the first (0-based ``epoch`` 0) epoch, as the original names it."""
        return f"Epoch{epoch + 1:02d}_LXRT.pth"

    @property
    def epoch(self) -> int:
        """The training epoch under way (the loop sets it on the training set), 0 before training."""
        return self._train_set.epoch if self._train_set is not None else 0

    # ----------------------------------------------------------------------------- model
    def build_model(self) -> nn.Module:
        o = self.options
        return LXMERTForPretraining(
            self.model_config,
            task_mask_lm=o.task_mask_lm,
            task_matched=o.task_matched,
            task_obj_predict=o.task_obj_predict,
            task_qa=o.task_qa,
            visual_losses=o.visual_losses,
        )

    def load_pretrained(self, model: nn.Module) -> None:
        """BERT (with --fromScratch only its MLM output bias), then --loadLXMERT (encoder + heads but the
        answer head), then --load (strict: every weight of the model from PATH_LXRT.pth)."""
        cfg, log = self.cfg, get_logger()
        if cfg.load_lxmert_qa:
            raise ValueError("--loadLXMERTQA is for fine-tuning; pretraining takes --loadLXMERT or --load")
        if not (cfg.load or cfg.load_lxmert):
            self._init_from_bert(model)
        if cfg.load_lxmert:
            file = resolve_checkpoint(cfg.load_lxmert)
            # The original drops the QA head (its answer table may differ) and keeps everything else.
            state = {k: v for k, v in read_state_dict(file).items() if "answer" not in k}
            report = load_state(model, state, strict=False, source=str(file))
            lost = [k for k in report.missing if k.startswith("bert.")]
            if lost:
                raise CheckpointError(f"--loadLXMERT {file}: encoder weights missing in the file: {lost[:5]}")
            log.info(f"--loadLXMERT: {report.summary()}")
        if cfg.load:
            file = resolve_checkpoint(cfg.load)
            report = load_state(model, read_state_dict(file), strict=True, source=str(file))
            log.info(f"--load: {report.summary()}")

    def _init_from_bert(self, model: nn.Module) -> None:
        """Where the original starts: BERT's language layers and MLM/matching heads, or with --fromScratch
        only BERT's MLM output bias (taken when the weights are here; never downloaded for it alone)."""
        cfg = self.cfg
        if not cfg.from_scratch:
            load_bert_pretraining(model, find_bert(cfg.bert or BERT_BASE_NAME, progress=cfg.progress))
            return
        try:
            path = find_bert(cfg.bert or BERT_BASE_NAME, download=False)
            load_bert_pretraining(model, path, from_scratch=True)
        except CheckpointError as err:
            if cfg.bert:
                raise
            why = (f"no BERT weights in {err.folder} (bash run/download_data.bash bert fetches them)"
                   if isinstance(err, BertNotFoundError) else str(err))
            get_logger().warning(f"cls.predictions.bias starts at zero where the original takes BERT's: {why}")

    # ----------------------------------------------------------------------------- data
    def dataset(self, splits: str, train: bool, full: bool = False) -> Dataset:
        cfg = self.cfg
        topk = None if full else image_limit(train, cfg.tiny, cfg.fast)
        corpus = load_corpus(cfg.data_root, splits, self.answers.ans2id, convert_ans, topk, cfg.progress)
        self._check_stores(corpus.stores)
        # Masked regions are replaced by regions of *training* images, also in validation.
        pool = None if train or self._train_set is None else self._train_set.region_pool
        data = PretrainDataset(
            corpus, self.tokenizer, self.answers.ans2id, self.example_options, cfg.seed, region_pool=pool
        )
        if train:
            self._train_set = data
        return data

    def _check_stores(self, stores: list[FeatureStore]) -> None:
        config = self.model_config
        for store in stores:
            if store.feat_dim != config.visual_feat_dim:
                raise ValueError(
                    f"{store.path}: {store.feat_dim}-d features but the model takes {config.visual_feat_dim} "
                    "(--model-config)"
                )
            needed = {"obj": "objects_id", "attr": "attrs_id"}
            wanted = [needed[k] for k in self.loss_options.visual_losses if k in needed]
            missing = [name for name in wanted if name not in store.labels]
            if missing:
                raise ValueError(
                    f"{store.path}: no detector outputs {missing} for the obj/attr losses "
                    "(features without labels: drop them with --visualLosses feat)"
                )

    def collator(self, dataset: Dataset) -> Callable[[list[Any]], Batch]:
        """``pretrain.data.collate``, checking class ids against the model's label counts."""
        visual = self.loss_options.visual_losses
        return partial(
            collate,
            num_object_labels=self.model_config.num_object_labels if "obj" in visual else None,
            num_attr_labels=self.model_config.num_attr_labels if "attr" in visual else None,
        )

    # ----------------------------------------------------------------------------- loss and metrics
    def forward(self, model: nn.Module, batch: Batch) -> PretrainingOutput:
        """The model on a batch, scoring only the masked tokens with the LM head."""
        labels = batch.targets.get("lm_labels")
        return model(
            input_ids=batch.input_ids,
            feats=batch.feats,
            boxes=batch.boxes,
            attention_mask=batch.attention_mask,
            token_type_ids=batch.token_type_ids,
            visual_mask=batch.visual_mask,
            lm_positions=None if labels is None or not self.options.task_mask_lm else labels_positions(labels),
        )

    def loss(self, output: PretrainingOutput, batch: Batch) -> tuple[Tensor, Mapping[str, Tensor]]:
        qa_active = self.options.qa_active(self.epoch)
        return pretraining_loss(output, batch.targets, self.loss_options, batch.visual_mask, qa_active)

    def predict(self, output: PretrainingOutput, batch: Batch) -> dict[Any, Any]:
        """Argmax answer of every pair from a QA source (the only ones ``score`` counts)."""
        if output.answer_logits is None:
            return {}
        best = output.answer_logits.argmax(-1).tolist()
        scored = batch.targets["qa_scored"].tolist()
        return {uid: self.answers.answer(a) for uid, a, s in zip(batch.ids, best, scored) if s}

    def prediction_codes(self, output: PretrainingOutput, batch: Batch) -> Tensor | None:
        """The argmax answer of pairs from a QA source, -1 for the others."""
        if output.answer_logits is None:
            return None
        best = output.answer_logits.argmax(-1)
        return torch.where(batch.targets["qa_scored"].bool(), best, torch.full_like(best, -1))

    def decode_predictions(self, codes: list[int], ids: list[Any]) -> dict[Any, Any]:
        return {uid: self.answers.answer(a) for uid, a in zip(ids, codes) if a >= 0}

    def score(self, predictions: Mapping[Any, Any], dataset: Dataset) -> dict[str, float]:
        """QA accuracy as the original computes it: mean label score of the predicted answer over
        every pair of a QA source (mismatched ones included, scored against their own label)."""
        corpus = dataset.corpus
        labeled = corpus.labeled_uids()
        total, count = 0.0, 0
        by_source: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        for uid, answer in predictions.items():
            index = labeled.get(uid)
            if index is None:
                continue
            value = corpus.labels[index].get(answer, 0.0)
            entry = by_source[corpus.source(index)]
            entry[0] += value
            entry[1] += 1
            total += value
            count += 1
        if not count:
            return {}
        metrics = {"accuracy": total / count}
        metrics.update({f"accuracy_{src}": s / n for src, (s, n) in sorted(by_source.items())})
        return metrics

    def write_predictions(
        self, predictions: Mapping[Any, Any], dataset: Dataset, output_dir: Path, split: str
    ) -> list[Path]:
        """``<split>_qa_predict.json`` (uid -> answer) and ``<split>_qa_accuracy.json`` (per source)."""
        name = split.replace(",", "+")
        answers = json.dumps(dict(sorted(predictions.items())), indent=1)
        accuracy = json.dumps(self.score(predictions, dataset), indent=2, sort_keys=True)
        return [
            atomic_write(Path(output_dir) / f"{name}_qa_predict.json", lambda tmp: tmp.write_text(answers)),
            atomic_write(Path(output_dir) / f"{name}_qa_accuracy.json", lambda tmp: tmp.write_text(accuracy)),
        ]
