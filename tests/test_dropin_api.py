"""The original code's ``lxrt`` API (entry, modeling, tokenization, optimization, qa_answer_table,
utils.load_obj_tsv) and the store-backed ``load_obj_tsv`` against this package's native model, tokenizer,
optimizer and feature store.

The downstream module below is written the way the original's ``src/tasks/vqa_model.py`` and
``vqa.py`` are: only the imports name this package.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from engine.optim import BertAdam as EngineBertAdam
from features import open_store, store_path_for
from features.obj_tsv import load_obj_tsv, pixel_boxes
from features.tsv import RegionRecord, iter_tsv, write_tsv
from lxrt import LXMERTForPretraining, LXRTConfig, load_state, read_state_dict, save_state_dict
from lxrt import TaskEncoder as NativeEncoder
from lxrt.entry import LXRTEncoder, convert_sents_to_features, set_visual_config
from lxrt.modeling import VISUAL_CONFIG, BertConfig, BertLayerNorm, GeLU, LXRTPretraining
from lxrt.optimization import BertAdam
from lxrt.qa_answer_table import AnswerTable, load_lxmert_qa
from lxrt.tokenization import BertTokenizer
from lxrt.tokenizer import LXRTTokenizer
from lxrt.utils import FIELDNAMES
from lxrt.utils import load_obj_tsv as load_obj_tsv_in_ram
from pretrain import losses as native_losses
from tasks.models import Classifier

TINY_BERT = dict(
    vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
    hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=64,
    type_vocab_size=2, initializer_range=0.05,
)
ARGS = argparse.Namespace(llayers=2, xlayers=1, rlayers=1, from_scratch=True)
SENTS = ["What color is the cat?", "How many dogs are there", "Is the man's shirt blue?", "what is it"]
MAX_LEN = 20


def native_config(num_answers: int = 9500) -> LXRTConfig:
    t = TINY_BERT
    return LXRTConfig(
        vocab_size=t["vocab_size"], hidden_size=t["hidden_size"], num_attention_heads=t["num_attention_heads"],
        intermediate_size=t["intermediate_size"], max_position_embeddings=t["max_position_embeddings"],
        llayers=ARGS.llayers, xlayers=ARGS.xlayers, rlayers=ARGS.rlayers, num_qa_labels=num_answers,
    )


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory as the original's commands expect: a (tiny) BERT config under snap/bert/."""
    bert = tmp_path / "snap" / "bert" / "bert-base-uncased"
    bert.mkdir(parents=True)
    (bert / "config.json").write_text(json.dumps(TINY_BERT))
    monkeypatch.chdir(tmp_path)
    saved = dict(VISUAL_CONFIG.__dict__)
    yield tmp_path
    VISUAL_CONFIG.__dict__.update(saved)


def write_obj36(path: Path, n_images: int, seed: int = 0, feat_dim: int = 2048) -> list[RegionRecord]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n_images):
        h, w = int(rng.integers(200, 640)), int(rng.integers(200, 640))
        x1, y1 = rng.uniform(0, w - 20, 36), rng.uniform(0, h - 20, 36)
        boxes = np.stack([x1, y1, rng.uniform(x1 + 1, w), rng.uniform(y1 + 1, h)], 1).astype(np.float32)
        records.append(RegionRecord(
            img_id=f"COCO_val2014_{i:012d}", img_h=h, img_w=w,
            objects_id=rng.integers(0, 1600, 36), objects_conf=rng.random(36, dtype=np.float32),
            attrs_id=rng.integers(0, 400, 36), attrs_conf=rng.random(36, dtype=np.float32),
            boxes=boxes, features=(rng.random((36, feat_dim), dtype=np.float32) * 3),
        ))
    write_tsv(path, records)
    return records


# ---- the original's task model, dataset and training step ----------------------------------------


class VQAModel(nn.Module):
    def __init__(self, num_answers):
        super().__init__()
        self.lxrt_encoder = LXRTEncoder(ARGS, max_seq_length=MAX_LEN)
        hid_dim = self.lxrt_encoder.dim
        self.logit_fc = nn.Sequential(
            nn.Linear(hid_dim, hid_dim * 2),
            GeLU(),
            BertLayerNorm(hid_dim * 2, eps=1e-12),
            nn.Linear(hid_dim * 2, num_answers),
        )
        self.logit_fc.apply(self.lxrt_encoder.model.init_bert_weights)

    def forward(self, feat, pos, sent):
        x = self.lxrt_encoder(sent, (feat, pos))
        return self.logit_fc(x)


def original_batch(img_data, indices):
    """``VQATorchDataset.__getitem__`` + default collate: copies, boxes normalized by the image size."""
    feats, boxes = [], []
    for i in indices:
        info = img_data[i]
        f, b = info["features"].copy(), info["boxes"].copy()
        assert info["num_boxes"] == len(b) == len(f)
        b[:, (0, 2)] /= info["img_w"]
        b[:, (1, 3)] /= info["img_h"]
        feats.append(torch.from_numpy(f))
        boxes.append(torch.from_numpy(b))
    return torch.stack(feats), torch.stack(boxes)


NUM_ANSWERS = 7
IMAGES = 4


def targets(step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    return (torch.rand(IMAGES, NUM_ANSWERS, generator=g) > 0.7).float() * 0.9


def test_original_style_vqa_model_trains_and_predicts_like_the_native_api(workdir: Path):
    tsv = workdir / "data" / "mscoco_imgfeat" / "val2014_obj36.tsv"
    tsv.parent.mkdir(parents=True)
    write_obj36(tsv, IMAGES)
    img_data = load_obj_tsv(tsv)
    torch.manual_seed(9595)
    model = VQAModel(NUM_ANSWERS)
    # The head and the (from-scratch) encoder take the config's initializer_range.
    for weight in (model.logit_fc[0].weight, model.lxrt_encoder.model.bert.encoder.layer[0].output.dense.weight):
        assert abs(weight.std().item() - TINY_BERT["initializer_range"]) < 0.005
    assert torch.equal(model.logit_fc[2].weight, torch.ones(2 * TINY_BERT["hidden_size"]))

    native = Classifier(native_config(), NUM_ANSWERS)
    load_state(native, model.state_dict(), strict=True)  # the original's key layout, key for key
    store = open_store(tsv)
    native_feats, native_boxes, vmask = store.gather([d["img_id"] for d in img_data])
    native_feats, native_boxes = torch.from_numpy(native_feats), torch.from_numpy(native_boxes)
    assert vmask is None
    text = LXRTTokenizer()(SENTS, max_length=MAX_LEN)

    steps = 3
    optim = BertAdam(list(model.parameters()), lr=1e-3, warmup=0.1, t_total=steps)
    native_optim = EngineBertAdam(list(native.parameters()), lr=1e-3, warmup=0.1, t_total=steps)
    bce = nn.BCEWithLogitsLoss()
    for step in range(steps):
        model.train()
        native.train()
        optim.zero_grad()
        feats, boxes = original_batch(img_data, range(IMAGES))
        torch.manual_seed(step)  # the same dropout masks on both sides
        logit = model(feats, boxes, SENTS)
        loss = bce(logit, targets(step)) * logit.size(1)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optim.step()

        native_optim.zero_grad()
        torch.manual_seed(step)
        native_logit = native(text.input_ids, native_feats, native_boxes, text.attention_mask, text.token_type_ids)
        native_loss = bce(native_logit, targets(step)) * native_logit.size(1)
        native_loss.backward()
        nn.utils.clip_grad_norm_(native.parameters(), 5.0)
        native_optim.step()
        torch.testing.assert_close(loss, native_loss, rtol=0, atol=1e-6)

    model.eval()
    native.eval()
    with torch.no_grad():
        feats, boxes = original_batch(img_data, range(IMAGES))
        logit = model(feats, boxes, SENTS)
        native_logit = native(text.input_ids, native_feats, native_boxes, text.attention_mask, text.token_type_ids)
    torch.testing.assert_close(logit, native_logit, rtol=0, atol=1e-5)
    assert logit.argmax(1).tolist() == native_logit.argmax(1).tolist()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, native.state_dict()[name], rtol=0, atol=1e-6, msg=name)

    # A fine-tuned BEST.pth, both ways: the native save read by the original's load code path
    # (torch.load + strict load_state_dict), and the original's torch.save read natively.
    save_state_dict(native.state_dict(), workdir / "BEST.pth")
    fresh = VQAModel(NUM_ANSWERS)
    fresh.load_state_dict(torch.load("%s.pth" % (workdir / "BEST")))
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(feats, boxes, SENTS), logit, rtol=0, atol=1e-6)
    torch.save(model.state_dict(), workdir / "LAST.pth")
    other = Classifier(native_config(), NUM_ANSWERS).eval()
    load_state(other, read_state_dict(workdir / "LAST.pth"), strict=True)
    with torch.no_grad():
        again = other(text.input_ids, native_feats, native_boxes, text.attention_mask, text.token_type_ids)
    torch.testing.assert_close(again, logit, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["x", "l", "r", "lxr"])
def test_encoder_modes_equal_the_native_encoder(workdir: Path, mode: str):
    encoder = LXRTEncoder(ARGS, max_seq_length=MAX_LEN, mode=mode).eval()
    assert encoder.dim == TINY_BERT["hidden_size"]
    native = NativeEncoder(native_config()).eval()
    load_state(native.model, encoder.model.state_dict(), strict=True)
    g = torch.Generator().manual_seed(1)
    feats, boxes = torch.rand(4, 36, 2048, generator=g), torch.rand(4, 36, 4, generator=g)
    vmask = torch.ones(4, 36, dtype=torch.long)
    vmask[1, 30:] = 0
    text = LXRTTokenizer()(SENTS, max_length=MAX_LEN)
    with torch.no_grad():
        out = encoder(SENTS, (feats, boxes), visual_attention_mask=vmask)
        ref = native(text.input_ids, feats, boxes, text.attention_mask, text.token_type_ids, vmask)
    if mode == "x":
        torch.testing.assert_close(out, ref.pooled, rtol=0, atol=1e-6)
    elif mode == "lxr":
        (lang, visn), pooled = out
        torch.testing.assert_close(pooled, ref.pooled, rtol=0, atol=1e-6)
        torch.testing.assert_close(lang, ref.lang, rtol=0, atol=1e-6)
        torch.testing.assert_close(visn, ref.visn, rtol=0, atol=1e-6)
    else:
        lang, visn = out
        torch.testing.assert_close(lang, ref.lang, rtol=0, atol=1e-6)
        torch.testing.assert_close(visn, ref.visn, rtol=0, atol=1e-6)


def test_encoder_save_load_and_multi_gpu_keys(workdir: Path, capsys: pytest.CaptureFixture):
    encoder = LXRTEncoder(ARGS, max_seq_length=MAX_LEN)
    encoder.save(str(workdir / "enc"))
    saved = torch.load(workdir / "enc_LXRT.pth")
    assert set(saved) == set(encoder.model.state_dict()) and all(k.startswith("bert.") for k in saved)
    # A pretraining snapshot saved from DataParallel: ``module.`` prefixes, heads listed and skipped.
    pre = LXMERTForPretraining(native_config())
    torch.save({"module." + k: v for k, v in pre.state_dict().items()}, workdir / "pre_LXRT.pth")
    other = LXRTEncoder(ARGS, max_seq_length=MAX_LEN)
    other.load(str(workdir / "pre"))
    printed = capsys.readouterr().out
    assert "answer_head.logit_fc.0.weight" in printed and "Weights in loaded but not in model:" in printed
    for k, v in other.model.state_dict().items():
        torch.testing.assert_close(v, pre.state_dict()[k], rtol=0, atol=0)
    other.eval()
    feats, boxes = torch.rand(2, 36, 2048), torch.rand(2, 36, 4)
    with torch.no_grad():
        single = other(SENTS[:2], (feats, boxes))
        other.multi_gpu()
        assert isinstance(other.model, nn.DataParallel) and other.dim == TINY_BERT["hidden_size"]
        torch.testing.assert_close(other(SENTS[:2], (feats, boxes)), single, rtol=0, atol=1e-6)
    torch.save({"cls.x": torch.zeros(1)}, workdir / "bad_LXRT.pth")
    with pytest.raises(Exception, match="none of the encoder's weights"):
        other.load(str(workdir / "bad"))


def test_tokenization_ids_equal_the_native_tokenizer():
    tok = BertTokenizer.from_pretrained("bert-base-uncased", do_lower_case=True)
    sents = [*SENTS, "  Café DÉJÀ-vu [MASK] naïve  ", "", "word " * 40, "什么 is 東京?"]
    feats = convert_sents_to_features(sents, MAX_LEN, tok)
    native = LXRTTokenizer()(sents, max_length=MAX_LEN)
    assert [f.input_ids for f in feats] == native.input_ids.tolist()
    assert [f.input_mask for f in feats] == native.attention_mask.tolist()
    assert [f.segment_ids for f in feats] == native.token_type_ids.tolist()
    assert tok.convert_tokens_to_ids(["[CLS]", "[MASK]", "the"]) == [101, 103, 1996]
    assert tok.vocab["[SEP]"] == 102 and tok.ids_to_tokens[1996] == "the"
    assert pickle.loads(pickle.dumps(tok)).tokenize("naïve") == tok.tokenize("naïve")
    with pytest.raises(ValueError, match="uncased"):
        BertTokenizer.from_pretrained("bert-base-uncased", do_lower_case=False)


def original_rule(params, grads, lr, warmup, t_total, schedule, wd=0.01, b1=0.9, b2=0.999, e=1e-6):
    """The original's per-parameter update in float64, with its three schedules."""
    sched = {
        "warmup_linear": lambda x: x / warmup if x < warmup else max((x - 1.0) / (warmup - 1.0), 0),
        "warmup_constant": lambda x: x / warmup if x < warmup else 1.0,
        "warmup_cosine": lambda x: x / warmup if x < warmup else 0.5 * (1.0 + math.cos(math.pi * x)),
    }[schedule]
    ps = [p.detach().double().clone() for p in params]
    ms, vs = [torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps]
    for step, gs in enumerate(grads):
        lr_t = lr if t_total == -1 else lr * sched(step / t_total)
        for p, g, m, v in zip(ps, gs, ms, vs):
            m.mul_(b1).add_((1 - b1) * g.double())
            v.mul_(b2).add_((1 - b2) * g.double() ** 2)
            p.sub_(lr_t * (m / (v.sqrt() + e) + wd * p))
    return ps


@pytest.mark.parametrize(
    "warmup,t_total,schedule",
    [(0.1, 10, "warmup_linear"), (-1, 10, "warmup_linear"), (0.3, 10, "warmup_constant"),
     (0.2, 10, "warmup_cosine"), (0.1, -1, "warmup_linear")],
)
def test_bert_adam_original_arguments(warmup: float, t_total: int, schedule: str):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3))
    start = [p.detach().clone() for p in model.parameters()]
    grads = [[torch.randn_like(p) for p in model.parameters()] for _ in range(10)]
    opt = BertAdam(list(model.parameters()), lr=1e-2, warmup=warmup, t_total=t_total, schedule=schedule)
    assert opt.get_lr() == [0]
    for gs in grads:
        for p, g in zip(model.parameters(), gs):
            p.grad = g.clone()
        opt.step()
    ref = original_rule(start, grads, 1e-2, warmup, t_total, schedule)
    for p, r in zip(model.parameters(), ref):
        torch.testing.assert_close(p.detach().double(), r, rtol=0, atol=1e-6)
    if schedule == "warmup_linear" and warmup >= 0:  # the engine's optimizer, step for step
        twin = [s.clone().requires_grad_() for s in start]
        engine = EngineBertAdam(twin, lr=1e-2, warmup=warmup, t_total=t_total)
        for gs in grads:
            for p, g in zip(twin, gs):
                p.grad = g.clone()
            engine.step()
        for p, q in zip(model.parameters(), twin):
            assert torch.equal(p.detach(), q.detach())


def test_bert_adam_without_steps_for_evaluation_only_runs():
    p = nn.Parameter(torch.ones(2))
    opt = BertAdam([p], lr=1e-4, warmup=0.1, t_total=0)  # an empty training loader, as with --test
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="t_total=0"):
        opt.step()
    with pytest.raises(ValueError, match="schedule"):
        BertAdam([p], lr=1e-4, schedule="warmup_cubic")


def test_load_obj_tsv_returns_the_original_dicts_from_the_store(workdir: Path):
    tsv = workdir / "feat_obj36.tsv"
    records = write_obj36(tsv, 5, seed=3, feat_dim=24)
    exact = load_obj_tsv(tsv, dtype="float32")
    assert len(exact) == 5 and len(load_obj_tsv(tsv, topk=2)) == 2 and len(load_obj_tsv(tsv, topk=-1)) == 5
    for item, rec in zip(exact, iter_tsv(tsv)):
        assert list(item) == ["img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf",
                              "num_boxes", "boxes", "features"]
        assert (item["img_id"], item["img_h"], item["img_w"], item["num_boxes"]) == (
            rec.img_id, rec.img_h, rec.img_w, 36)
        for key in ("objects_id", "objects_conf", "attrs_id", "attrs_conf", "features"):
            assert item[key].dtype == getattr(rec, key).dtype and not item[key].flags.writeable
            np.testing.assert_array_equal(item[key], getattr(rec, key))
        assert item["boxes"].dtype == np.float32 and item["boxes"].shape == (36, 4)
        np.testing.assert_allclose(item["boxes"], rec.boxes, rtol=1e-6)
        # The original's normalization of these boxes gives exactly what it gives on the TSV's.
        ours, theirs = item["boxes"].copy(), rec.boxes.copy()
        for b, r in ((ours, item), (theirs, item)):
            b[:, (0, 2)] /= r["img_w"]
            b[:, (1, 3)] /= r["img_h"]
        np.testing.assert_array_equal(ours, theirs)
        assert not dict.__contains__(item, "features")  # rows stay in the store
    # The store is shared with the tasks: a float32 store is reused, not rebuilt as float16.
    meta = store_path_for(tsv) / "meta.json"
    mtime = meta.stat().st_mtime_ns
    again = load_obj_tsv(tsv)
    assert meta.stat().st_mtime_ns == mtime and again[0]["features"].dtype == np.float32
    clone = pickle.loads(pickle.dumps(again[1]))
    np.testing.assert_array_equal(clone["features"], records[1].features)
    assert clone.get("missing") is None and "boxes" in clone


def test_lxrt_utils_load_obj_tsv_decodes_into_ram_like_the_original(workdir: Path):
    """``lxrt.utils.load_obj_tsv`` is the original's loader: plain dicts holding every array, bit-exact
    with the TSV, no store built; it equals the store-backed loader's records key for key."""
    tsv = workdir / "ram_obj36.tsv"
    write_obj36(tsv, 5, seed=6, feat_dim=24)
    data = load_obj_tsv_in_ram(tsv)
    assert not store_path_for(tsv).exists()  # decoded into RAM, not through a store
    assert len(data) == 5 and len(load_obj_tsv_in_ram(tsv, topk=2)) == 2 and len(load_obj_tsv_in_ram(tsv, -1)) == 5
    stored = load_obj_tsv(tsv, dtype="float32")
    for item, rec, lazy in zip(data, iter_tsv(tsv), stored):
        assert type(item) is dict and list(item) == FIELDNAMES == list(lazy)
        assert (item["img_id"], item["img_h"], item["img_w"], item["num_boxes"]) == (
            rec.img_id, rec.img_h, rec.img_w, 36)
        assert dict.__contains__(item, "features") and item["features"].shape == (36, 24)
        for key in ("objects_id", "objects_conf", "attrs_id", "attrs_conf", "boxes", "features"):
            assert item[key].dtype == getattr(rec, key).dtype and not item[key].flags.writeable
            np.testing.assert_array_equal(item[key], getattr(rec, key))  # boxes too: the TSV's pixels, exactly
            if key != "boxes":
                np.testing.assert_array_equal(lazy[key], item[key])
        np.testing.assert_allclose(lazy["boxes"], item["boxes"], rtol=1e-6)
    tsv.write_bytes(tsv.read_bytes() + b"\r\n")  # a trailing blank line, which the original's csv reader skips
    assert [d["img_id"] for d in load_obj_tsv_in_ram(tsv)] == [d["img_id"] for d in data]


def test_lxrt_utils_load_obj_tsv_names_a_bad_line(workdir: Path):
    """A truncated field is one error naming the file, the line, the image and the field."""
    tsv = workdir / "bad_obj36.tsv"
    write_obj36(tsv, 3, seed=7, feat_dim=8)
    lines = tsv.read_bytes().split(b"\r\n")
    lines[1] = lines[1][:-12]  # the features field of line 2 loses its last bytes
    tsv.write_bytes(b"\r\n".join(lines))
    with pytest.raises(ValueError, match=r"bad_obj36\.tsv:2 \(img_id 'COCO_val2014_000000000001'\): field "
                       r"'features' is not base64 of 36 x D float32"):
        load_obj_tsv_in_ram(tsv)
    lines[1] = b"\t".join(lines[1].split(b"\t")[:9])
    tsv.write_bytes(b"\r\n".join(lines))
    with pytest.raises(ValueError, match=r"bad_obj36\.tsv:2: 9 tab-separated fields, expected 10"):
        load_obj_tsv_in_ram(tsv)


def test_lxrt_utils_needs_only_numpy(workdir: Path):
    """``lxrt/utils.py`` copied alone (as a fork's ``src/utils.py``) loads a TSV with numpy only: no torch,
    no feature store, no other module of this project."""
    tsv = workdir / "solo_obj36.tsv"
    write_obj36(tsv, 2, seed=8, feat_dim=8)
    (workdir / "fork").mkdir()
    (workdir / "fork" / "utils.py").write_bytes((Path(__file__).parents[1] / "src" / "lxrt" / "utils.py").read_bytes())
    script = (
        "import sys\n"
        "for name in ('torch', 'features', 'lxrt', 'tasks', 'engine', 'datatools'):\n"
        "    sys.modules[name] = None  # importing any of them fails\n"
        "from utils import load_obj_tsv\n"
        f"data = load_obj_tsv({str(tsv)!r})\n"
        "print(len(data), data[1]['features'].shape)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script], cwd=workdir / "fork", env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "2 (36, 8)"


def test_pixel_boxes_normalize_back_exactly():
    rng = np.random.default_rng(0)
    n = 200_000
    h, w = rng.integers(1, 5000, n), rng.integers(1, 5000, n)
    scale = np.stack([w, h, w, h], 1).astype(np.float32)
    norm = (rng.random((n, 4)) * scale).astype(np.float32) / scale  # what a store holds
    back = np.concatenate([pixel_boxes(norm[i : i + 1], h[i], w[i]) for i in range(0, 2000)])
    np.testing.assert_array_equal(back / scale[:2000], norm[:2000])
    px = norm * scale  # the same product, vectorized over all rows
    np.testing.assert_array_equal(px / scale, norm)


def test_load_obj_tsv_float16_store_gives_float32(workdir: Path):
    tsv = workdir / "f16_obj36.tsv"
    records = write_obj36(tsv, 2, seed=4, feat_dim=16)
    item = load_obj_tsv(tsv)[0]
    assert item["features"].dtype == np.float32
    np.testing.assert_array_equal(item["features"], records[0].features.astype(np.float16).astype(np.float32))


def test_pretraining_model_losses_equal_the_native_losses(workdir: Path):
    set_visual_config(ARGS)
    VISUAL_CONFIG.set_visual_dims(24, 4)
    config = BertConfig.from_json_file("snap/bert/bert-base-uncased/config.json")
    model = LXRTPretraining(config, task_mask_lm=True, task_obj_predict=True, task_matched=True, task_qa=True,
                            visual_losses="obj,attr,feat", num_answers=11).eval()
    native = LXMERTForPretraining(native_config(11).replace(visual_feat_dim=24)).eval()
    assert list(model.state_dict()) == list(native.state_dict())
    load_state(native, model.state_dict(), strict=True)

    g = torch.Generator().manual_seed(5)
    b, n = 3, 36
    text = LXRTTokenizer()(SENTS[:b], max_length=MAX_LEN)
    lm = torch.full((b, MAX_LEN), -1)
    lm[:, 2] = torch.randint(0, 30522, (b,), generator=g)
    lm[0, 4] = 7
    feats, pos = torch.rand(b, n, 24, generator=g), torch.rand(b, n, 4, generator=g)
    obj = {
        "obj": (torch.randint(0, 1600, (b, n), generator=g), torch.rand(b, n, generator=g)),
        "attr": (torch.randint(0, 400, (b, n), generator=g), torch.rand(b, n, generator=g)),
        "feat": (torch.rand(b, n, 24, generator=g), (torch.rand(b, n, generator=g) < 0.15).float()),
    }
    matched = torch.tensor([1, 0, 1])
    ans = torch.tensor([3, -1, 10])
    with torch.no_grad():
        total, losses, answer = model(text.input_ids, text.token_type_ids, text.attention_mask, lm, feats, pos, obj,
                                      matched, ans)
        out = native(text.input_ids, feats, pos, text.attention_mask, text.token_type_ids)
    targets = {
        "is_matched": matched, "lm_labels": lm, "feat_mask": obj["feat"][1], "feat_targets": obj["feat"][0],
        "obj_labels": obj["obj"][0], "obj_conf": obj["obj"][1], "attr_labels": obj["attr"][0],
        "attr_conf": obj["attr"][1], "qa_labels": ans,
    }
    ref_total, parts = native_losses.pretraining_loss(out, targets, native_losses.LossOptions(compat="original"))
    assert losses.shape == (1, 6)
    expected = torch.stack([parts[k] for k in ("Mask_LM", "Matched", "Obj", "Attr", "Feat", "QA")])
    torch.testing.assert_close(losses[0], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total, ref_total, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(answer, out.answer_logits, rtol=0, atol=1e-6)
    # A batch without any QA target: that loss is 0 (the native losses' rule), not NaN.
    total, losses, _ = model(text.input_ids, text.token_type_ids, text.attention_mask, lm, feats, pos, obj, matched,
                             torch.full((b,), -1))
    assert losses[0, -1] == 0 and torch.isfinite(total)


def test_from_pretrained_loads_bert_weights(workdir: Path):
    transformers = pytest.importorskip("transformers")
    folder = workdir / "snap" / "bert" / "bert-base-uncased"
    torch.manual_seed(0)
    bert = transformers.BertForPreTraining(transformers.BertConfig(**TINY_BERT))
    torch.save(bert.state_dict(), folder / "pytorch_model.bin")
    set_visual_config(ARGS)
    model = LXRTPretraining.from_pretrained("bert-base-uncased", task_mask_lm=True, task_obj_predict=True,
                                            task_matched=True, task_qa=True, visual_losses="obj,attr,feat",
                                            num_answers=5)
    ours, theirs = model.state_dict(), bert.state_dict()
    for key in ("bert.embeddings.word_embeddings.weight", "bert.encoder.layer.1.output.dense.weight",
                "bert.pooler.dense.bias", "cls.predictions.bias", "cls.predictions.transform.dense.weight",
                "cls.seq_relationship.weight"):
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)
    assert "bert.encoder.layer.2.output.dense.weight" not in ours  # llayers=2 of BERT's 3
    assert not torch.equal(ours["answer_head.logit_fc.0.weight"][:5, :5], torch.zeros(5, 5))
    encoder = LXRTEncoder(argparse.Namespace(**{**vars(ARGS), "from_scratch": False}), MAX_LEN)
    word = "bert.embeddings.word_embeddings.weight"
    torch.testing.assert_close(encoder.model.state_dict()[word], theirs[word], rtol=0, atol=0)
    scratch = LXRTEncoder(ARGS, MAX_LEN)  # --fromScratch re-initializes what BERT gave
    assert not torch.equal(scratch.model.state_dict()[word], theirs[word])


def test_load_lxmert_qa_matches_the_native_loader(workdir: Path):
    from tasks.weights import load_lxmert_qa as native_load_qa

    repo_data = Path(__file__).resolve().parents[1] / "data"
    label2ans = json.loads((repo_data / "vqa" / "trainval_label2ans.json").read_text())[:30]
    label2ans += ["Two", "grey", "the man", "A dog.", "not an answer of the table"]  # normalized, or absent
    table = AnswerTable()
    assert table.num_answers == 9500 and table.used(table.convert_ans("Two"))
    pre = LXMERTForPretraining(native_config(table.num_answers))
    save_state_dict(pre.state_dict(), workdir / "model_LXRT.pth")

    model = VQAModel(len(label2ans))
    load_lxmert_qa(str(workdir / "model"), model, label2ans=label2ans)
    native = Classifier(native_config(), len(label2ans))
    native_load_qa(native, str(workdir / "model"), label2ans, table.all_answers(), table.convert_ans)
    for key, value in native.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    for label in (1, 30, 31, 32, 33):
        row = table.ans2id(table.convert_ans(label2ans[label]))
        torch.testing.assert_close(model.logit_fc[3].weight[label], pre.answer_head.logit_fc[3].weight[row])
    assert not model.logit_fc[3].weight[34].any() and model.logit_fc[3].bias[34] == 0
