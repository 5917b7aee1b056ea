"""LXMERT pretraining on the shared loop: corpus and example building (``data``), input corruption
(``masking``), the six losses (``losses``), the ``PretrainTask`` (``task``) and the entry point
(``lxmert_pretrain``)."""

from lxrt.namespace import with_foreign_portions

from .data import ExampleOptions, PretrainCorpus, PretrainDataset, RegionPool, collate, load_corpus
from .losses import LOSS_COMPAT, LossOptions, pretraining_loss
from .task import PretrainOptions, PretrainTask

# Set after this package's own modules are imported: code written against the original repository
# keeps its own ``pretrain/`` folder (no __init__.py) on sys.path, and its modules are found first.
__path__ = with_foreign_portions(__name__, list(__path__))

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
