"""Pretraining losses against values computed by hand (plain Python), in both compatibility modes."""

from __future__ import annotations

import math

import pytest
import torch

from lxrt import PretrainingOutput
from pretrain.losses import LossOptions, pretraining_loss

W = 1 / 0.15


def ce(logits: list[float], target: int) -> float:
    """-log softmax(logits)[target], written out."""
    m = max(logits)
    log_z = m + math.log(sum(math.exp(x - m) for x in logits))
    return log_z - logits[target]


def smooth_l1(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


@pytest.fixture
def example() -> tuple[PretrainingOutput, dict[str, torch.Tensor]]:
    """B=2 pairs (the second mismatched), L=4 tokens, V=5 words, N=3 regions, 4 classes, 3 attrs,
    2-d features, 3 answers."""
    g = torch.Generator().manual_seed(0)
    out = PretrainingOutput(
        lang_logits=torch.randn(2, 4, 5, generator=g),
        match_logits=torch.randn(2, 2, generator=g),
        visual_logits={
            "obj": torch.randn(2, 3, 4, generator=g),
            "attr": torch.randn(2, 3, 3, generator=g),
            "feat": torch.randn(2, 3, 2, generator=g) * 2,
        },
        answer_logits=torch.randn(2, 3, generator=g),
        pooled=torch.zeros(2, 8),
    )
    targets = {
        "lm_labels": torch.tensor([[-1, 3, -1, 1], [-1, -1, 2, -1]]),
        "is_matched": torch.tensor([1, 0]),
        "qa_labels": torch.tensor([2, 1]),  # a mismatched pair's label, as a careless pipeline might give
        "obj_labels": torch.tensor([[0, 3, 1], [2, 2, 0]]),
        "obj_conf": torch.tensor([[0.9, 0.5, 0.2], [0.7, 0.3, 0.6]]),
        "attr_labels": torch.tensor([[1, 0, 2], [0, 1, 1]]),
        "attr_conf": torch.tensor([[0.4, 0.8, 0.1], [0.2, 0.9, 0.5]]),
        "feat_targets": torch.randn(2, 3, 2, generator=g),
        "feat_mask": torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]),
    }
    return out, targets


def expected(out: PretrainingOutput, t: dict[str, torch.Tensor], corrected: bool) -> dict[str, float]:
    lang, lm = out.lang_logits.tolist(), t["lm_labels"].tolist()
    matched = t["is_matched"].tolist()
    terms = [
        ce(lang[b][i], lm[b][i])
        for b in range(2)
        for i in range(4)
        if lm[b][i] != -1 and not (corrected and matched[b] == 0)
    ]
    values = {"Mask_LM": sum(terms) / len(terms)}
    values["Matched"] = sum(ce(out.match_logits[b].tolist(), matched[b]) for b in range(2)) / 2
    fm = t["feat_mask"].tolist()
    for key, name in (("obj", "Obj"), ("attr", "Attr")):
        logits = out.visual_logits[key].tolist()
        labels, conf = t[f"{key}_labels"].tolist(), t[f"{key}_conf"].tolist()
        total = 0.0
        for b in range(2):
            for n in range(3):
                weight = conf[b][n] * (fm[b][n] if corrected else 1.0)
                total += ce(logits[b][n], labels[b][n]) * weight
        values[name] = total / 6 * W
    pred, target = out.visual_logits["feat"].tolist(), t["feat_targets"].tolist()
    feat = 0.0
    for b in range(2):
        for n in range(3):
            per_region = sum(smooth_l1(pred[b][n][d] - target[b][n][d]) for d in range(2)) / 2
            feat += per_region * fm[b][n]
    values["Feat"] = feat / 6 * W
    qa, answers = t["qa_labels"].tolist(), out.answer_logits.tolist()
    kept = [b for b in range(2) if qa[b] != -1 and not (corrected and matched[b] == 0)]
    values["QA"] = sum(ce(answers[b], qa[b]) for b in kept) / len(kept)
    return values


@pytest.mark.parametrize("compat", ["original", "corrected"])
def test_each_loss_matches_hand_computation(example, compat):
    out, targets = example
    total, parts = pretraining_loss(out, targets, LossOptions(compat=compat))
    want = expected(out, targets, corrected=compat == "corrected")
    assert list(parts) == ["Mask_LM", "Matched", "Obj", "Attr", "Feat", "QA"]
    for name, value in want.items():
        assert float(parts[name]) == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert float(total) == pytest.approx(sum(want.values()), rel=1e-5)
    assert not any(p.requires_grad for p in parts.values())


def test_modes_differ_where_documented(example):
    out, targets = example
    _, original = pretraining_loss(out, targets, LossOptions(compat="original"))
    _, corrected = pretraining_loss(out, targets, LossOptions(compat="corrected"))
    for name in ("Mask_LM", "Obj", "Attr", "QA"):
        assert float(original[name]) != pytest.approx(float(corrected[name])), name
    for name in ("Matched", "Feat"):
        assert float(original[name]) == pytest.approx(float(corrected[name])), name


def test_padded_regions_are_not_counted(example):
    out, targets = example
    box_mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    targets = dict(targets, feat_mask=targets["feat_mask"] * box_mask)
    _, parts = pretraining_loss(out, targets, LossOptions(compat="original"), box_mask=box_mask)
    logits, labels = out.visual_logits["obj"].tolist(), targets["obj_labels"].tolist()
    conf = targets["obj_conf"]
    real = [(b, n) for b in range(2) for n in range(3) if box_mask[b, n]]
    want = sum(ce(logits[b][n], labels[b][n]) * float(conf[b, n]) for b, n in real) / len(real) * W
    assert float(parts["Obj"]) == pytest.approx(want, rel=1e-5)


def test_disabled_losses_and_qa_schedule(example):
    out, targets = example
    options = LossOptions(mask_lm=False, matched=True, visual_losses=("feat",), qa=True)
    total, parts = pretraining_loss(out, targets, options, qa_active=False)
    assert list(parts) == ["Matched", "Feat"]
    assert float(total) == pytest.approx(float(parts["Matched"] + parts["Feat"]))


def test_losses_without_targets_are_zero_not_nan(example):
    out, targets = example
    targets = dict(targets, lm_labels=torch.full((2, 4), -1), qa_labels=torch.tensor([-1, -1]))
    total, parts = pretraining_loss(out, targets, LossOptions())
    assert float(parts["Mask_LM"]) == 0.0 and float(parts["QA"]) == 0.0
    assert math.isfinite(float(total))


def test_gradients_flow_to_every_enabled_head(example):
    out, targets = example
    leaves = [out.lang_logits, out.match_logits, out.answer_logits, *out.visual_logits.values()]
    for t in leaves:
        t.requires_grad_(True)
    total, _ = pretraining_loss(out, targets, LossOptions(compat="corrected"))
    total.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in leaves)
    # corrected: the mismatched pair's tokens and unmasked regions get no obj gradient
    assert out.lang_logits.grad[1].abs().sum() == 0
    assert out.visual_logits["obj"].grad[0, 1].abs().sum() == 0


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="compatibility"):
        LossOptions(compat="newest")
    with pytest.raises(ValueError, match="unknown visual losses"):
        LossOptions(visual_losses=("obj", "depth"))


@pytest.mark.parametrize("matched", [None, torch.tensor([1, 0, 1])])
def test_lm_loss_on_selected_positions_equals_full_scoring(matched):
    """The model scores only labelled tokens (``lm_positions``); the loss is unchanged."""
    from lxrt import LXMERTForPretraining, LXRTConfig
    from pretrain.losses import labels_positions, mask_lm_loss

    torch.manual_seed(0)
    model = LXMERTForPretraining(LXRTConfig.tiny()).eval()
    ids = torch.randint(1000, 2000, (3, 8))
    labels = torch.full((3, 8), -1)
    labels[0, 2], labels[1, 3], labels[1, 5], labels[2, 1] = 5, 6, 7, 8
    feats, boxes = torch.randn(3, 4, 64), torch.rand(3, 4, 4)
    with torch.no_grad():
        full = model(ids, feats, boxes)
        some = model(ids, feats, boxes, lm_positions=labels_positions(labels))
    assert some.lang_logits.shape == (4, 30522)
    torch.testing.assert_close(mask_lm_loss(some.lang_logits, labels, matched),
                               mask_lm_loss(full.lang_logits, labels, matched))
