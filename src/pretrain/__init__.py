"""LXMERT pretraining on the shared loop: corpus and example building (``data``), input corruption
(``masking``), the six losses (``losses``), the ``PretrainTask`` (``task``) and the entry point
(``lxmert_pretrain``)."""

from .data import ExampleOptions, PretrainCorpus, PretrainDataset, RegionPool, collate, load_corpus
from .losses import LOSS_COMPAT, LossOptions, pretraining_loss
from .task import PretrainOptions, PretrainTask

__all__ = [
    "LOSS_COMPAT",
    "ExampleOptions",
    "LossOptions",
    "PretrainCorpus",
    "PretrainDataset",
    "PretrainOptions",
    "PretrainTask",
    "RegionPool",
    "collate",
    "load_corpus",
    "pretraining_loss",
]
