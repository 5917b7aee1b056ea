"""The encoder and heads against an independent implementation: HF transformers' LXMERT."""

from __future__ import annotations

import pytest
import torch

from lxrt import (
    LXMERTForPretraining,
    LXRTConfig,
    LXRTModel,
    from_hf_state_dict,
    hf_config,
    load_state,
    to_hf_state_dict,
)

transformers = pytest.importorskip("transformers")

SMALL = LXRTConfig(
    vocab_size=120, hidden_size=64, num_attention_heads=4, intermediate_size=96,
    max_position_embeddings=40, llayers=2, xlayers=2, rlayers=2, visual_feat_dim=48,
    num_object_labels=11, num_attr_labels=7, num_qa_labels=13,
)


def _inputs(config: LXRTConfig, batch: int, seq: int, boxes: int, seed: int, visual_pad: bool = False):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, config.vocab_size, (batch, seq), generator=g)
    lengths = torch.randint(2, seq + 1, (batch,), generator=g)
    mask = (torch.arange(seq)[None] < lengths[:, None]).long()
    ids = ids * mask
    feats = torch.randn(batch, boxes, config.visual_feat_dim, generator=g).relu()
    xy = torch.rand(batch, boxes, 2, generator=g) * 0.5
    wh = torch.rand(batch, boxes, 2, generator=g) * 0.5
    pos = torch.cat([xy, xy + wh], dim=-1)
    vmask = None
    if visual_pad:
        nb = torch.randint(1, boxes + 1, (batch,), generator=g)
        vmask = (torch.arange(boxes)[None] < nb[:, None]).long()
    return ids, mask, feats, pos, vmask


def _hf_pair(config: LXRTConfig, seed: int = 0):
    torch.manual_seed(seed)
    hf = transformers.LxmertForPreTraining(hf_config(config)).eval()
    ours = LXMERTForPretraining(config).eval()
    report = load_state(ours, from_hf_state_dict(hf.state_dict()), strict=True, source="hf")
    assert not report.missing and not report.unexpected
    return hf, ours


@pytest.mark.parametrize("batch,seq,boxes,visual_pad", [(1, 5, 3, False), (3, 20, 36, False), (4, 11, 10, True)])
def test_encoder_matches_hf(batch, seq, boxes, visual_pad):
    hf, ours = _hf_pair(SMALL)
    ids, mask, feats, pos, vmask = _inputs(SMALL, batch, seq, boxes, seed=batch, visual_pad=visual_pad)
    with torch.no_grad():
        ref = hf.lxmert(
            input_ids=ids, visual_feats=feats, visual_pos=pos, attention_mask=mask,
            visual_attention_mask=vmask, token_type_ids=torch.zeros_like(ids),
        )
        out = ours.bert(ids, feats, pos, attention_mask=mask, visual_mask=vmask)
    torch.testing.assert_close(out.lang, ref.language_output, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.visn, ref.vision_output, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooled, ref.pooled_output, atol=1e-5, rtol=0)


def test_pretraining_heads_match_hf():
    hf, ours = _hf_pair(SMALL, seed=3)
    ids, mask, feats, pos, _ = _inputs(SMALL, 3, 9, 6, seed=7)
    with torch.no_grad():
        ref = hf(input_ids=ids, visual_feats=feats, visual_pos=pos, attention_mask=mask)
        out = ours(ids, feats, pos, attention_mask=mask)
    torch.testing.assert_close(out.lang_logits, ref.prediction_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.match_logits, ref.cross_relationship_score, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.answer_logits, ref.question_answering_score, atol=1e-5, rtol=0)


def test_our_weights_load_into_hf():
    torch.manual_seed(11)
    ours = LXMERTForPretraining(SMALL).eval()
    hf = transformers.LxmertForPreTraining(hf_config(SMALL)).eval()
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours.state_dict()), strict=False)
    assert not unexpected
    assert not [k for k in missing if "decoder" not in k]
    ids, mask, feats, pos, _ = _inputs(SMALL, 2, 7, 5, seed=1)
    with torch.no_grad():
        ref = hf.lxmert(input_ids=ids, visual_feats=feats, visual_pos=pos, attention_mask=mask)
        out = ours.bert(ids, feats, pos, attention_mask=mask)
    torch.testing.assert_close(out.pooled, ref.pooled_output, atol=1e-5, rtol=0)


def test_base_model_keys_convert_from_hf_lxmert_model():
    torch.manual_seed(2)
    hf = transformers.LxmertModel(hf_config(SMALL)).eval()
    ours = LXRTModel(SMALL).eval()
    state = {k[len("bert."):]: v for k, v in from_hf_state_dict(hf.state_dict()).items()}
    load_state(ours, state, strict=True)
    ids, mask, feats, pos, _ = _inputs(SMALL, 2, 6, 4, seed=5)
    with torch.no_grad():
        ref = hf(input_ids=ids, visual_feats=feats, visual_pos=pos, attention_mask=mask)
        out = ours(ids, feats, pos, attention_mask=mask)
    torch.testing.assert_close(out.pooled, ref.pooled_output, atol=1e-5, rtol=0)


def test_full_size_lxmert_base_matches_hf():
    """The released size (BERT-base, 9/5/5, 2048-d features): outputs within 1e-5."""
    config = LXRTConfig()
    hf, ours = _hf_pair(config, seed=5)
    ids, mask, feats, pos, _ = _inputs(config, 2, 20, 36, seed=9)
    with torch.no_grad():
        ref = hf.lxmert(input_ids=ids, visual_feats=feats, visual_pos=pos, attention_mask=mask)
        out = ours.bert(ids, feats, pos, attention_mask=mask)
    torch.testing.assert_close(out.lang, ref.language_output, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.visn, ref.vision_output, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooled, ref.pooled_output, atol=1e-5, rtol=0)


def test_pooled_only_skips_work_but_not_the_result():
    torch.manual_seed(0)
    model = LXRTModel(SMALL).eval()
    ids, mask, feats, pos, vmask = _inputs(SMALL, 3, 12, 8, seed=4, visual_pad=True)
    with torch.no_grad():
        full = model(ids, feats, pos, attention_mask=mask, visual_mask=vmask)
        fast = model(ids, feats, pos, attention_mask=mask, visual_mask=vmask, pooled_only=True)
    assert fast.visn is None and fast.lang.shape[1] == 1
    torch.testing.assert_close(fast.pooled, full.pooled, atol=1e-6, rtol=0)
    torch.testing.assert_close(fast.lang[:, 0], full.lang[:, 0], atol=1e-6, rtol=0)
