"""Initial weights of a fine-tuning model, in the original's order: BERT, then ``--loadLXMERT`` /
``--loadLXMERTQA`` (the pretraining QA head remapped onto the task's answers), then ``--load``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from engine.config import TrainConfig
from engine.report import get_logger
from lxrt import (
    CheckpointError,
    load_bert_weights,
    load_encoder,
    load_state,
    read_state_dict,
    remap_answer_head,
    resolve_checkpoint,
)
from lxrt.bert_init import BERT_BASE_NAME
from tasks.bert import find_bert


def init_language_from_bert(model: nn.Module, cfg: TrainConfig) -> None:
    """Without ``--fromScratch`` the original starts the language layers from BERT-base: ``--bert PATH``,
    else ``snap/bert/bert-base-uncased/`` (downloaded there on first use)."""
    if cfg.from_scratch:
        return
    path = find_bert(cfg.bert or BERT_BASE_NAME, progress=cfg.progress)
    report = load_bert_weights(model.lxrt_encoder.bert, path)
    get_logger().info(f"language layers from BERT: {report.summary()}")


def load_lxmert_qa(
    model: nn.Module,
    path: str,
    task_answers: Sequence[str],
    pretrain_answers: Sequence[str],
    normalize: Callable[[str], str],
) -> int:
    """``--loadLXMERTQA``: encoder + the pretraining QA head remapped onto the task's answers.

    The MLP's first layers are copied; each task answer takes the row of its normalized form in
    the pretraining table, other rows are zero (as the original). Returns answers found.
    """
    log = get_logger()
    file = resolve_checkpoint(path)
    state = read_state_dict(file)
    encoder = {k: v for k, v in state.items() if k.startswith("bert.")}
    if not encoder:
        raise CheckpointError(f"{file}: not a pretraining snapshot (no bert.* keys)")
    load_state(model.lxrt_encoder.model, encoder, strict=True, source=str(file), ignore_missing=())
    head = {k[len("answer_head.") :]: v for k, v in state.items() if k.startswith("answer_head.")}
    if not head:
        raise CheckpointError(f"{file}: no pretraining QA head (answer_head.*); use --loadLXMERT instead")
    weight, bias, found = remap_answer_head(
        head["logit_fc.3.weight"], head["logit_fc.3.bias"], pretrain_answers, task_answers, normalize
    )
    head["logit_fc.3.weight"], head["logit_fc.3.bias"] = weight, bias
    load_state(model, head, strict=False, source=str(file))
    log.info(
        f"loaded encoder and QA head from {file}: {found} answers from LXMERT QA pretraining, "
        f"{len(task_answers) - found} not"
    )
    return found


def load_initial_weights(
    model: nn.Module,
    cfg: TrainConfig,
    qa_tables: tuple[Sequence[str], Sequence[str], Callable[[str], str]] | None = None,
) -> None:
    """Apply, in the original's order: BERT (unless --fromScratch), then --loadLXMERT /
    --loadLXMERTQA, then --load (a fine-tuned snapshot, strict)."""
    log = get_logger()
    if not (cfg.load_lxmert or cfg.load_lxmert_qa or cfg.load):
        init_language_from_bert(model, cfg)
    if cfg.load_lxmert:
        report = load_encoder(model.lxrt_encoder.bert, cfg.load_lxmert)
        log.info(f"--loadLXMERT: {report.summary()}")
    if cfg.load_lxmert_qa:
        if qa_tables is None:
            raise ValueError("--loadLXMERTQA needs the task's answer table (a question-answering task)")
        load_lxmert_qa(model, cfg.load_lxmert_qa, *qa_tables)
    if cfg.load:
        file = resolve_checkpoint(cfg.load, suffixes=(".pth", ""))
        report = load_state(model, read_state_dict(file), strict=True, source=str(file))
        log.info(f"--load: {report.summary()}")
