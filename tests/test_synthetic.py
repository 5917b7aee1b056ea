"""The synthetic data: each task's files (original formats, the properties tests rely on, a learnable
signal), and the framework (per-task streams, the registry's rules, writer order, command line)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from features.tsv import iter_tsv
from lxrt.tokenizer import LXRTTokenizer
from tasks import synthetic
from tasks.answers import AnswerTable, PretrainAnswerTable, convert_ans
from tasks.gqa_data import GQADataset
from tasks.nlvr2_data import NLVR2Dataset
from tasks.synthetic import (
    COLORS,
    SHAPES,
    Generator,
    SyntheticConfig,
    generate,
    main,
    output_files,
    plan,
    register_synthetic,
    synthetic_tasks,
    write_json,
)
from tasks.vqa_data import VQADataset

REPO = Path(__file__).resolve().parents[1]
SMALL = SyntheticConfig(seed=5, feat_dim=16, num_boxes=10, sizes=dict(
    coco_train_images=6, coco_val_images=5, minival_images=2, coco_test_images=2, vg_images=6, gqa_valid_images=2,
    gqa_submit_images=2, gqa_testdev_images=2, nlvr2_train_sets=2, nlvr2_valid_sets=1, nlvr2_test_sets=1,
    snli_ve_images=8,
))  # fmt: skip
DEFAULTS = synthetic.resolve_sizes(SyntheticConfig())


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    generate(out, progress=False)
    return out


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test are dropped after it."""
    synthetic_tasks()  # every real task registered first
    monkeypatch.setattr(synthetic, "_SYNTHETIC", dict(synthetic._SYNTHETIC))
    monkeypatch.setattr(synthetic, "_OFFERS", dict(synthetic._OFFERS))


def _load(root: Path, rel: str):
    return json.loads((root / rel).read_text())


def _tsv_ids(path: Path) -> list[str]:
    return [r.img_id for r in iter_tsv(path)]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- the tasks' files -----------------------------------------------------------------------------


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    generate(tmp_path / "a", SMALL, progress=False)
    generate(tmp_path / "b", SMALL, progress=False)
    generate(tmp_path / "c", SMALL.replace(seed=6), progress=False)
    a = _files(tmp_path / "a")
    assert sorted(a) == sorted(str(p.relative_to(tmp_path / "a")) for p in output_files(tmp_path / "a"))
    assert a == _files(tmp_path / "b")
    assert (tmp_path / "a/vqa/train.json").read_bytes() != (tmp_path / "c/vqa/train.json").read_bytes()


def test_sizes_and_feature_format(tmp_path: Path) -> None:
    generate(tmp_path, SMALL, progress=False)
    records = list(iter_tsv(tmp_path / "mscoco_imgfeat" / "train2014_obj36.tsv"))
    assert len(records) == SMALL.sizes["coco_train_images"]
    for rec in records:
        assert re.fullmatch(r"COCO_train2014_\d{12}", rec.img_id)
        assert rec.features.shape == (10, 16) and rec.features.dtype == np.float32 and rec.features.min() >= 0
        assert rec.objects_id.dtype == np.int64 and set(rec.objects_id) <= set(range(len(SHAPES)))
        assert set(rec.attrs_id) <= set(range(len(COLORS)))
        x1, y1, x2, y2 = rec.boxes.T
        assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= rec.img_w).all() and (y2 <= rec.img_h).all()
        assert (x2 > x1).all() and (y2 > y1).all()
    assert len(_load(tmp_path, "vqa/train.json")) == SMALL.sizes["coco_train_images"] * SMALL.questions_per_image
    assert len(_load(tmp_path, "snli_ve/train.json")) == SMALL.sizes["snli_ve_images"] * SMALL.questions_per_image


def test_one_feature_space_for_every_task(tmp_path: Path) -> None:
    """Bug caught: tasks drawing their own feature prototypes, so that the same colour/shape looks
    different in COCO, Visual Genome and NLVR2 features (a pretrained model would not transfer)."""
    generate(tmp_path, SMALL.replace(dominant_fraction=1.0, noise=0.0), progress=False)
    looks: dict[tuple[int, int], set[bytes]] = {}
    for rel in ("mscoco_imgfeat/train2014_obj36.tsv", "vg_gqa_imgfeat/vg_gqa_obj36.tsv",
                "nlvr2_imgfeat/train_obj36.tsv", "flickr30k_imgfeat/flickr30k_obj36.tsv"):
        for rec in iter_tsv(tmp_path / rel):
            looks.setdefault((int(rec.attrs_id[0]), int(rec.objects_id[0])), set()).add(rec.features[0].tobytes())
    assert len(looks) > 5 and all(len(v) == 1 for v in looks.values())


def test_original_layout_and_records(root: Path) -> None:
    vqa_sizes = DEFAULTS["vqa"]
    val_ids = _tsv_ids(root / "mscoco_imgfeat" / "val2014_obj36.tsv")
    minival_imgs = {r["img_id"] for r in _load(root, "vqa/minival.json")}
    nominival_imgs = {r["img_id"] for r in _load(root, "vqa/nominival.json")}
    cut = vqa_sizes.minival_images
    assert minival_imgs == set(val_ids[:cut]) and nominival_imgs == set(val_ids[cut:])
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


def test_properties_other_tests_rely_on(root: Path) -> None:
    """GQA labels outside its table at a small rate; a VQA answer absent from all_ans.json; a
    pretraining-only answer; NLVR2 sets of 4 pairs x 2 sentences with 50/50 labels."""
    gqa_table = set(_load(root, "gqa/trainval_label2ans.json"))
    gqa = [a for s in ("train", "valid", "testdev") for r in _load(root, f"gqa/{s}.json") for a in r["label"]]
    unknown = sum(a not in gqa_table for a in gqa) / len(gqa)
    assert 0 < unknown < 0.08, unknown
    all_ans = {e["ans"]: e["dsets"] for e in _load(root, "lxmert/all_ans.json")}
    vqa_table = _load(root, "vqa/trainval_label2ans.json")
    assert [a for a in vqa_table if a and a not in all_ans] == ["striped"]
    only_pretraining = [a for a in all_ans if a not in vqa_table and a not in gqa_table]
    assert only_pretraining == ["daytime"] and all_ans["daytime"] == ["visual7w"]
    assert all_ans["yes"] == ["gqa", "vqa"] and all_ans["red"] == ["gqa", "vqa", "visual7w"]
    for split in ("train", "valid", "test"):
        recs = _load(root, f"nlvr2/{split}.json")
        sets = Counter(r["identifier"].rsplit("-", 2)[0] for r in recs)
        assert set(sets.values()) == {8}
        pairs = Counter(r["identifier"].rsplit("-", 1)[0] for r in recs)
        assert set(pairs.values()) == {2} and len({r["sent"] for r in recs[:8]}) == 2
    labels = [r["label"] for r in _load(root, "nlvr2/train.json")]
    assert abs(np.mean(labels) - 0.5) < 0.06


def test_pretraining_corpus_is_built_on_the_tasks_images_and_questions(root: Path) -> None:
    """Bug caught: a corpus whose images or questions drift from the tasks' files (the original's
    corpus holds the VQA/GQA questions of its images under the task's name, and keeps VQA's minival
    images and GQA's test images out of training)."""
    def ids(rel: str) -> list[str]:
        return [e["img_id"] for e in _load(root, rel)]

    val = _tsv_ids(root / "mscoco_imgfeat/val2014_obj36.tsv")
    minival = [i for i in val if i in {r["img_id"] for r in _load(root, "vqa/minival.json")}]
    assert ids("lxmert/mscoco_minival.json") == minival
    assert ids("lxmert/mscoco_nominival.json") == [i for i in val if i not in minival]
    assert ids("lxmert/mscoco_train.json") == _tsv_ids(root / "mscoco_imgfeat/train2014_obj36.tsv")
    gqa_test = {r["img_id"] for s in ("submit", "testdev") for r in _load(root, f"gqa/{s}.json")}
    vg = [i for i in _tsv_ids(root / "vg_gqa_imgfeat/vg_gqa_obj36.tsv") if i not in gqa_test]
    assert ids("lxmert/vgnococo.json") == vg and len(vg) == DEFAULTS["gqa"].vg_images
    for task, corpus in (("vqa", ("mscoco_train", "mscoco_nominival", "mscoco_minival")), ("gqa", ("vgnococo",))):
        entries = {e["img_id"]: e for split in corpus for e in _load(root, f"lxmert/{split}.json")}
        splits = ("train", "nominival", "minival") if task == "vqa" else ("train", "valid")
        asked: dict[str, list] = {}
        for split in splits:
            for r in _load(root, f"{task}/{split}.json"):
                asked.setdefault(r["img_id"], []).append([r["sent"], r["label"]])
        assert asked and set(asked) <= set(entries)
        for img, qa in asked.items():
            assert [list(p) for p in zip(entries[img]["sentf"][task], entries[img]["labelf"][task])] == qa
    entry = _load(root, "lxmert/mscoco_minival.json")[0]
    assert list(entry["sentf"])[0] == "mscoco" and len(entry["sentf"]["mscoco"]) == 2  # the caption pair first


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


# ---- per-task streams -----------------------------------------------------------------------------


def test_a_registered_task_changes_no_other_files(tmp_path: Path, registry: None) -> None:
    """Each registered task draws from a stream of its own: adding one leaves every other file as it was."""
    generate(tmp_path / "a", SMALL, progress=False)
    before = _files(tmp_path / "a")

    @register_synthetic("aaa_extra", ["aaa_extra/numbers.json"])
    def extra(gen: Generator, out: Path) -> dict[str, int]:
        write_json(out / "aaa_extra/numbers.json", gen.rng.integers(0, 100, 50).tolist())
        return {"aaa_extra/numbers.json": 50}

    generate(tmp_path / "b", SMALL, progress=False)
    after = _files(tmp_path / "b")
    assert after.pop("aaa_extra/numbers.json") and after == before


@pytest.mark.parametrize("removed", ["nlvr2", "snli_ve"])
def test_removing_a_task_changes_no_other_files(tmp_path: Path, removed: str) -> None:
    """Bug caught: one random stream shared by the writers in turn, so that leaving a task out (here
    one whose writer runs before others') changes every later task's files."""
    every = [t.name for t in synthetic_tasks()]
    generate(tmp_path / "all", SMALL, progress=False)
    generate(tmp_path / "some", SMALL, progress=False, tasks=[t for t in every if t != removed])
    full, some = _files(tmp_path / "all"), _files(tmp_path / "some")
    assert not any(rel.startswith(f"{removed}/") for rel in some)
    assert some == {rel: data for rel, data in full.items() if rel in some}
    assert set(full) - set(some) == {f for t in synthetic_tasks() if t.name == removed for f in t.files}


# ---- the registry ---------------------------------------------------------------------------------


def test_registering_the_same_definition_twice_is_idempotent(tmp_path: Path) -> None:
    """``python -m tasks.X`` runs a module as ``__main__`` and the registry imports it again by name:
    every module that registers synthetic data or offers questions, run both ways in one process,
    keeps one (importable) registration and still generates. Bug caught: "synthetic data for 'X' is
    already registered" when the module is run with ``python -m``."""
    script = f"""
import runpy, sys
from pathlib import Path
from tasks import synthetic
modules = sorted({{t.write.__module__ for t in synthetic.synthetic_tasks()}}
                 | {{o.read.__module__ for o in synthetic.question_offers()}})
for name in modules:
    sys.argv = [name, "--help"]
    try:
        runpy.run_module(name, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        assert done.code in (0, None), (name, done.code)
assert all(t.write.__module__ != "__main__" for t in synthetic.synthetic_tasks())
assert all(o.read.__module__ != "__main__" for o in synthetic.question_offers())
sizes = dict(coco_train_images=2, coco_val_images=2, minival_images=1, coco_test_images=1, vg_images=2,
             gqa_valid_images=1, gqa_submit_images=1, gqa_testdev_images=1, nlvr2_train_sets=1,
             nlvr2_valid_sets=1, nlvr2_test_sets=1, snli_ve_images=1)
counts = synthetic.generate({str(tmp_path)!r}, synthetic.SyntheticConfig(feat_dim=4, num_boxes=2, sizes=sizes),
                            progress=False)
print(len(modules), len(counts))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules, files = (int(x) for x in proc.stdout.split()[-2:])
    assert modules >= 5 and files == len(output_files(tmp_path))


def test_a_second_writer_for_a_task_is_refused(registry: None) -> None:
    def other(gen: Generator, out: Path) -> dict[str, int]:
        return {}

    with pytest.raises(ValueError, match=r"'nlvr2' is registered twice: by synthetic_nlvr2 \(.*nlvr2_synthetic.py\)"
                                         r" and .*other \(.*test_synthetic.py\)"):
        register_synthetic("nlvr2", ["nlvr2/train.json"])(other)


def test_two_tasks_writing_one_file_is_an_error_naming_both(registry: None) -> None:
    """Bug caught: two tasks' writers silently sharing a file (the second overwrites the first)."""
    def writer(gen: Generator, out: Path) -> dict[str, int]:
        return {}

    with pytest.raises(ValueError, match=r"tasks 'vqa' and 'aaa_coco' both write the synthetic file "
                                         r"mscoco_imgfeat/val2014_obj36.tsv"):
        register_synthetic("aaa_coco", ["aaa_coco/x.json", "mscoco_imgfeat/val2014_obj36.tsv"])(writer)
    register_synthetic("aaa_one", ["shared/x.json"])(writer)
    with pytest.raises(ValueError, match="tasks 'aaa_one' and 'aaa_two' both write the synthetic file shared/x.json"):
        register_synthetic("aaa_two", ["./shared/x.json"])(writer)
    with pytest.raises(ValueError, match="not a path inside the data root"):
        register_synthetic("aaa_three", ["../x.json"])


def test_two_tasks_declaring_one_size_is_an_error_naming_both(registry: None) -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Sizes:
        vg_images: int = 3

    with pytest.raises(ValueError, match="tasks 'gqa' and 'aaa_vg' both declare the synthetic size 'vg_images'"):
        register_synthetic("aaa_vg", ["aaa_vg/x.json"], sizes=Sizes)(lambda gen, out: {})


def test_a_writer_runs_after_the_writers_of_the_files_it_reads(tmp_path: Path, registry: None) -> None:
    """Bug caught: writers run in name order, so that a writer reading another task's file (here
    ``aaa_reader``, first by name) finds it missing or stale."""

    @register_synthetic("aaa_reader", ["aaa_reader/count.json"], reads=["nlvr2/train.json"])
    def reader(gen: Generator, out: Path) -> dict[str, int]:
        write_json(out / "aaa_reader/count.json", len(json.loads((out / "nlvr2/train.json").read_text())))
        return {"aaa_reader/count.json": 1}

    names = [t.name for t in plan()]
    assert names.index("nlvr2") < names.index("aaa_reader") and names[-1] == "lxmert_pretrain"
    assert plan(["vqa"])[0].name == "vqa" and len(plan(["vqa"])) == 1
    assert [t.name for t in plan(["aaa_reader"])] == ["nlvr2", "aaa_reader"]  # what it reads comes along
    generate(tmp_path, SMALL, progress=False, tasks=["aaa_reader"])
    assert _load(tmp_path, "aaa_reader/count.json") == len(_load(tmp_path, "nlvr2/train.json")) == 16
    assert not (tmp_path / "vqa").exists()

    register_synthetic("aaa_lost", ["aaa_lost/x.json"], reads=["nowhere/x.json"])(reader)
    with pytest.raises(ValueError, match="task 'aaa_lost' reads nowhere/x.json, which no registered task writes"):
        plan()


def test_read_cycles_and_undeclared_files_are_errors(tmp_path: Path, registry: None) -> None:
    def writes_nothing(gen: Generator, out: Path) -> dict[str, int]:
        return {}

    register_synthetic("aaa_quiet", ["aaa_quiet/x.json"])(writes_nothing)
    with pytest.raises(RuntimeError, match=r"writer of task 'aaa_quiet' \(.*writes_nothing .*\) did not write "
                                           r"aaa_quiet/x.json"):
        generate(tmp_path, SMALL, progress=False, tasks=["aaa_quiet"])
    register_synthetic("aaa_a", ["a.json"], reads=["b.json"])(writes_nothing)
    register_synthetic("aaa_b", ["b.json"], reads=["a.json"])(writes_nothing)
    with pytest.raises(ValueError, match="tasks aaa_a, aaa_b read each other's files"):
        plan(["aaa_a"])


def test_size_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown synthetic size.*coco_images; known: .*coco_train_images"):
        synthetic.resolve_sizes(SyntheticConfig(sizes={"coco_images": 3}))
    with pytest.raises(ValueError, match="vg_images must be >= 0"):
        synthetic.resolve_sizes(SyntheticConfig(sizes={"vg_images": -1}))
    with pytest.raises(ValueError, match="nlvr2_test_sets must be int"):
        synthetic.resolve_sizes(SyntheticConfig(sizes={"nlvr2_test_sets": 1.5}))
    with pytest.raises(ValueError, match="task 'vqa': minival_images must be between 1 and coco_val_images"):
        synthetic.resolve_sizes(SyntheticConfig(sizes={"minival_images": 41}))
    assert SMALL.replace(seed=9, vg_images=7).sizes["vg_images"] == 7 and SMALL.replace(seed=9).seed == 9


# ---- command line ---------------------------------------------------------------------------------


def test_command_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0
    flags = [f"--{f.name.replace('_', '-')}" for t in synthetic_tasks() for f in t.options()]
    assert len(flags) >= 14 and all(flag in text for flag in flags), [f for f in flags if f not in text]
    assert "--nlvr2-train-sets" in flags and "--captions-per-image" in flags and "--snli-ve-images" in flags
    small = ["--quiet", "--coco-train-images", "4", "--coco-val-images", "3", "--minival-images", "1",
             "--vg-images", "4", "--gqa-valid-images", "1", "--nlvr2-train-sets", "1", "--nlvr2-valid-sets", "1",
             "--snli-ve-images", "4"]  # fmt: skip
    assert main(["--out", str(tmp_path), *small]) == 0
    assert all(p.exists() for p in output_files(tmp_path))
    assert len(_load(tmp_path, "snli_ve/train.json")) == 12
    assert main(["--out", str(tmp_path), *small]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--force", *small]) == 0
    assert main(["--out", str(tmp_path / "x"), "--minival-images", "999"]) == 2
    assert "minival_images must be between" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "y"), "--tasks", "vqa,nope"]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_python_dash_m(tmp_path: Path) -> None:
    """``python -m tasks.synthetic`` imports the framework twice (as ``__main__`` and by name); the
    tasks register into the importable copy, so ``--tasks`` finds them."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tasks.synthetic", "--out", str(tmp_path), "--tasks", "nlvr2", "--quiet",
           "--nlvr2-train-sets", "1", "--nlvr2-valid-sets", "1", "--nlvr2-test-sets", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.*")) == sorted(
        ["nlvr2/train.json", "nlvr2/valid.json", "nlvr2/test.json", "nlvr2_imgfeat/train_obj36.tsv",
         "nlvr2_imgfeat/valid_obj36.tsv", "nlvr2_imgfeat/test_obj36.tsv"]
    )
    assert f"{tmp_path}/nlvr2/train.json: 8" in proc.stdout
