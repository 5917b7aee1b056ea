"""The synthetic data generator: original formats, determinism, command line, learnable signal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from features.tsv import iter_tsv
from lxrt.tokenizer import LXRTTokenizer
from tasks.answers import AnswerTable, PretrainAnswerTable, convert_ans
from tasks.gqa_data import GQADataset
from tasks.nlvr2_data import NLVR2Dataset
from tasks.synthetic import COLORS, SHAPES, SyntheticConfig, generate, main, output_files
from tasks.vqa_data import VQADataset

SMALL = SyntheticConfig(
    seed=5, feat_dim=16, num_boxes=10, coco_train_images=6, coco_val_images=5, minival_images=2,
    coco_test_images=2, vg_images=6, gqa_valid_images=2, gqa_submit_images=2, gqa_testdev_images=2,
    nlvr2_train_sets=2, nlvr2_valid_sets=1, nlvr2_test_sets=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    generate(out, progress=False)
    return out


def _load(root: Path, rel: str):
    return json.loads((root / rel).read_text())


def _tsv_ids(path: Path) -> list[str]:
    return [r.img_id for r in iter_tsv(path)]


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    generate(tmp_path / "a", SMALL, progress=False)
    generate(tmp_path / "b", SMALL, progress=False)
    generate(tmp_path / "c", SyntheticConfig(**{**SMALL.__dict__, "seed": 6}), progress=False)
    for path in output_files(tmp_path / "a"):
        rel = path.relative_to(tmp_path / "a")
        assert path.read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert (tmp_path / "a/vqa/train.json").read_bytes() != (tmp_path / "c/vqa/train.json").read_bytes()


def test_sizes_and_feature_format(tmp_path: Path) -> None:
    generate(tmp_path, SMALL, progress=False)
    records = list(iter_tsv(tmp_path / "mscoco_imgfeat" / "train2014_obj36.tsv"))
    assert len(records) == SMALL.coco_train_images
    for rec in records:
        assert re.fullmatch(r"COCO_train2014_\d{12}", rec.img_id)
        assert rec.features.shape == (10, 16) and rec.features.dtype == np.float32 and rec.features.min() >= 0
        assert rec.objects_id.dtype == np.int64 and set(rec.objects_id) <= set(range(len(SHAPES)))
        assert set(rec.attrs_id) <= set(range(len(COLORS)))
        x1, y1, x2, y2 = rec.boxes.T
        assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= rec.img_w).all() and (y2 <= rec.img_h).all()
        assert (x2 > x1).all() and (y2 > y1).all()
    assert len(_load(tmp_path, "vqa/train.json")) == SMALL.coco_train_images * SMALL.questions_per_image


def test_original_layout_and_records(root: Path) -> None:
    cfg = SyntheticConfig()
    val_ids = _tsv_ids(root / "mscoco_imgfeat" / "val2014_obj36.tsv")
    minival_imgs = {r["img_id"] for r in _load(root, "vqa/minival.json")}
    nominival_imgs = {r["img_id"] for r in _load(root, "vqa/nominival.json")}
    assert minival_imgs == set(val_ids[: cfg.minival_images]) and nominival_imgs == set(val_ids[cfg.minival_images :])
    vqa_table = AnswerTable.for_task("vqa", root)
    assert vqa_table.answer(0) == ""
    for rec in _load(root, "vqa/train.json"):
        assert set(rec) == {"answer_type", "img_id", "label", "question_id", "question_type", "sent"}
        assert rec["question_id"] // 1000 == int(rec["img_id"][-12:]) and set(rec["label"]) <= set(vqa_table.ans2label)
    assert all(set(r) == {"img_id", "question_id", "sent"} for r in _load(root, "vqa/test.json"))
    assert all(isinstance(r["question_id"], str) and "label" not in r for r in _load(root, "gqa/submit.json"))
    testdev_ids = set(_tsv_ids(root / "vg_gqa_imgfeat" / "gqa_testdev_obj36.tsv"))
    assert {r["img_id"] for r in _load(root, "gqa/testdev.json")} <= testdev_ids
    assert {r["img_id"] for r in _load(root, "gqa/submit.json")} <= set(
        _tsv_ids(root / "vg_gqa_imgfeat/vg_gqa_obj36.tsv")
    )
    for i, rec in enumerate(_load(root, "nlvr2/valid.json")):
        split, _, pair, sentence = rec["identifier"].split("-")
        assert split == "dev" and 0 <= int(pair) <= 3 and sentence in "01" and rec["uid"] == f"nlvr2_valid_{i}"
        assert rec["img0"] == rec["identifier"].rsplit("-", 1)[0] + "-img0" and rec["label"] in (0, 1)
    for entry in _load(root, "lxmert/vgnococo.json") + _load(root, "lxmert/mscoco_train.json"):
        assert set(entry) == {"img_id", "labelf", "sentf"}
        for source, labels in entry["labelf"].items():
            assert len(labels) == len(entry["sentf"][source]) and source in ("vqa", "gqa", "visual7w")
    # the pretraining answers overlap the VQA table in another order; one VQA answer is missing
    pretrain = PretrainAnswerTable(root / "lxmert" / "all_ans.json")
    found = [a for a in vqa_table.label2ans if convert_ans(a) in pretrain]
    assert 0 < len(found) < vqa_table.num_answers
    assert [pretrain.id(a) for a in found] != list(range(len(found)))


def test_every_file_parses_with_the_datasets(root: Path) -> None:
    tok = LXRTTokenizer()
    for ds in (
        VQADataset("train,nominival", root, strict=True),
        VQADataset("minival", root, strict=True),
        VQADataset("test", root, strict=True),
        GQADataset("train,valid", root, strict=True),
        GQADataset("testdev", root, strict=True),
        GQADataset("submit", root, strict=True),
        NLVR2Dataset("train,valid", root, strict=True),
        NLVR2Dataset("test", root, strict=True),
    ):
        assert len(ds) == sum(len(_load(root, f"{ds.task}/{s}.json")) for s in ds.splits)
        batch = ds.collator(tok)([ds[i] for i in range(4)])
        assert batch.feats.shape[1:] == (36, 64)


def _words_and_image(batch, pairs: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Question word counts (B, vocab) and the mean region feature of each image (B, images x D)."""
    n = len(batch.ids)
    ids = batch.input_ids[::2] if pairs else batch.input_ids
    words = torch.zeros(n, 30522).scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float32))
    return words, batch.feats.mean(1).reshape(n, -1)


def _fit_and_score(train: tuple, valid: tuple, soft: bool, steps: int = 150) -> float:
    """Logistic regression (sigmoid per answer for VQA/GQA, softmax over 2 for NLVR2)."""
    (xtr, ytr), (xva, yva) = train, valid
    mean, std = xtr.mean(0), xtr.std(0) + 1e-3
    xtr, xva = (xtr - mean) / std, (xva - mean) / std
    torch.manual_seed(0)
    model = torch.nn.Linear(xtr.shape[1], ytr.shape[1] if soft else 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-2)
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits if soft else torch.nn.functional.cross_entropy
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only add contention on a busy machine
    try:
        for _ in range(steps):
            opt.zero_grad()
            loss_fn(model(xtr), ytr).backward()
            opt.step()
        with torch.no_grad():
            pred = model(xva).argmax(1)
    finally:
        torch.set_num_threads(threads)
    return float(yva.gather(1, pred[:, None]).mean() if soft else (pred == yva).float().mean())


@pytest.mark.parametrize(
    ("task", "train_splits", "valid_splits", "margin"),
    [
        ("vqa", "train", "nominival,minival", 0.2),
        ("gqa", "train", "valid,testdev", 0.2),
        ("nlvr2", "train", "valid", 0.2),
    ],
)
def test_signal_is_learnable(root: Path, task: str, train_splits: str, valid_splits: str, margin: float) -> None:
    """A trivial model on words x mean region features beats the same model on the words alone."""
    tok = LXRTTokenizer()
    cls = {"vqa": VQADataset, "gqa": GQADataset, "nlvr2": NLVR2Dataset}[task]
    key = "label" if task == "nlvr2" else "target"
    data = {}
    for name, splits in (("train", train_splits), ("valid", valid_splits)):
        ds = cls(splits, root)
        batch = ds.collator(tok)([ds[i] for i in range(len(ds))])
        data[name] = (*_words_and_image(batch, pairs=task == "nlvr2"), batch.targets[key])
    used = data["train"][0].sum(0) > 0
    soft = key == "target"
    words = {name: d[0][:, used] for name, d in data.items()}
    # products of each question word with each image feature: a linear model can then match them
    products = {name: (words[name][:, :, None] * d[1][:, None, :]).flatten(1) for name, d in data.items()}
    words_only = _fit_and_score((words["train"], data["train"][2]), (words["valid"], data["valid"][2]), soft)
    with_image = _fit_and_score((products["train"], data["train"][2]), (products["valid"], data["valid"][2]), soft)
    assert with_image > words_only + margin, (task, with_image, words_only)
    assert with_image > 0.7, (task, with_image)


def test_command_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--nlvr2-train-sets" in capsys.readouterr().out
    small = [
        "--quiet",
        "--coco-train-images",
        "4",
        "--coco-val-images",
        "3",
        "--minival-images",
        "1",
        "--vg-images",
        "4",
    ]
    small += ["--gqa-valid-images", "1", "--nlvr2-train-sets", "1", "--nlvr2-valid-sets", "1"]
    assert main(["--out", str(tmp_path), *small]) == 0
    assert all(p.exists() for p in output_files(tmp_path))
    assert main(["--out", str(tmp_path), *small]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--force", *small]) == 0
    assert main(["--out", str(tmp_path / "x"), "--minival-images", "999"]) == 2


def test_a_registered_task_changes_no_other_files(tmp_path: Path) -> None:
    """Each registered task draws from a stream of its own: adding one leaves every other file as it was."""
    from tasks import synthetic

    small = SyntheticConfig(**{**SMALL.__dict__, "task_images": 8})
    generate(tmp_path / "a", small, progress=False)
    before = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in output_files(tmp_path / "a")}
    assert any(str(rel).startswith("snli_ve/") for rel in before)

    @synthetic.register_synthetic("aaa_extra", ["aaa_extra/numbers.json"])
    def extra(gen: synthetic.Generator, out: Path) -> dict[str, int]:
        synthetic.write_json(out / "aaa_extra/numbers.json", gen.rng.integers(0, 100, 50).tolist())
        return {"aaa_extra/numbers.json": 50}

    try:
        generate(tmp_path / "b", small, progress=False)
    finally:
        synthetic._SYNTHETIC.pop("aaa_extra")
    assert (tmp_path / "b/aaa_extra/numbers.json").is_file()
    for rel, data in before.items():
        assert (tmp_path / "b" / rel).read_bytes() == data, rel
