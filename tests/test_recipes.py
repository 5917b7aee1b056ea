"""Every task recipe carries the original run scripts' settings (run/*_finetune.bash and the training code).

The original: BertAdam (``--optim bert``) with warmup 0.1, gradients clipped to norm 5.0 outside the
optimizer, batch 32, 4 epochs, seed 9595, 9/5/5 layers; lr 5e-5 (VQA, NLVR2) or 1e-5 (GQA); VQA and GQA
start from the pretraining snapshot with its QA head (``--loadLXMERTQA``), NLVR2 from the encoder alone
(``--loadLXMERT``). SNLI-VE has no original recipe: it takes NLVR2's.
"""

from __future__ import annotations

import pytest

from engine import recipes
from tasks import gqa, nlvr2, snli_ve, vqa

ORIGINAL = {
    "vqa_lxr955": dict(task="vqa", train="train,nominival", valid="minival", load_lxmert_qa="snap/pretrained/model",
                       load_lxmert="", lr=5e-5),
    "gqa_lxr955": dict(task="gqa", train="train,valid", valid="testdev", load_lxmert_qa="snap/pretrained/model",
                       load_lxmert="", lr=1e-5),
    "nlvr2_lxr955": dict(task="nlvr2", train="train", valid="valid", load_lxmert="snap/pretrained/model",
                         load_lxmert_qa="", lr=5e-5),
    "snli_ve_lxr955": dict(task="snli_ve", train="train", valid="valid", load_lxmert="snap/pretrained/model",
                           load_lxmert_qa="", lr=5e-5),
}  # fmt: skip
COMMON = dict(batch_size=32, epochs=4, optim="bert", warmup=0.1, clip_norm=5.0, seed=9595, from_scratch=False)
TEST_RECIPES = {"vqa_test": 5e-5, "gqa_test": 1e-5, "nlvr2_test": 5e-5, "snli_ve_test": 5e-5}
MODULES = {"vqa": vqa, "gqa": gqa, "nlvr2": nlvr2, "snli_ve": snli_ve}


@pytest.mark.parametrize("name", sorted(ORIGINAL))
def test_task_recipe_has_the_original_settings(name: str) -> None:
    cfg = recipes.get(name)
    for field, value in {**COMMON, **ORIGINAL[name]}.items():
        assert getattr(cfg, field) == value, f"{name}.{field}"
    assert (cfg.model.llayers, cfg.model.xlayers, cfg.model.rlayers) == (9, 5, 5), name
    assert MODULES[cfg.task].main.__module__ == MODULES[cfg.task].__name__  # the task's own entry point


@pytest.mark.parametrize("name", sorted(TEST_RECIPES))
def test_test_recipe_has_the_original_model_and_batch(name: str) -> None:
    cfg = recipes.get(name)
    assert (cfg.batch_size, cfg.lr, cfg.epochs) == (32, TEST_RECIPES[name], 4), name
    assert (cfg.model.llayers, cfg.model.xlayers, cfg.model.rlayers) == (9, 5, 5), name
    assert (cfg.clip_norm, cfg.optim, cfg.seed) == (5.0, "bert", 9595), name
