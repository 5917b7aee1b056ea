"""Fine-tuning tasks (VQA, GQA, NLVR2, SNLI-VE): data, heads, losses, metrics and submission files."""

from lxrt.namespace import with_foreign_portions

# Code written against the original repository keeps its own ``tasks/`` folder (no __init__.py) on
# sys.path: its modules are found first (see lxrt.namespace).
__path__ = with_foreign_portions(__name__, list(__path__))
