"""What ``ask`` reads from a snapshot (:mod:`ask.checkpoints`), on small hand-made tensor files: model sizes
from the shapes, the task from the facts file, the run's config.json or the head, and the default model.

Each snapshot here holds only the tensors the reader looks at (zeros of the right shapes), written in the
original key layout, so every rule is checked without building a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ask.checkpoints import (
    AskError,
    default_checkpoint,
    describe_snapshot,
    does,
    find_checkpoints,
    find_snapshots,
    find_task,
    fixed_widths,
    guess_task,
    head_kind,
    inspect_checkpoint,
    model_config,
    tab_of,
)
from engine.config import TrainConfig
from lxrt import LXRTConfig, save_state_dict
from lxrt.snapshot import SnapshotFacts, write_facts

E = "lxrt_encoder.model.bert."


def tensors(hidden: int = 128, feat: int = 76, head: tuple[str, int] | None = ("one", 7), layers=(3, 2, 1),
            ffn: int = 256, gap: bool = False) -> dict[str, torch.Tensor]:  # fmt: skip
    """A task snapshot's tensors: ``layers`` language, cross and vision layers (``gap``: the middle language
    layer's keys missing, as a partial listing would), a head on one or two pooled vectors."""
    state = {
        E + "embeddings.word_embeddings.weight": torch.zeros(50, hidden),
        E + "embeddings.position_embeddings.weight": torch.zeros(40, hidden),
        E + "embeddings.token_type_embeddings.weight": torch.zeros(2, hidden),
        E + "encoder.visn_fc.visn_fc.weight": torch.zeros(hidden, feat),
        E + "encoder.visn_fc.box_fc.weight": torch.zeros(hidden, 4),
    }
    for i in range(layers[0]):
        if not (gap and i == 1):
            state[E + f"encoder.layer.{i}.intermediate.dense.weight"] = torch.zeros(ffn, hidden)
    for i in range(layers[1]):
        state[E + f"encoder.x_layers.{i}.lang_inter.dense.weight"] = torch.zeros(ffn, hidden)
    for i in range(layers[2]):
        state[E + f"encoder.r_layers.{i}.intermediate.dense.weight"] = torch.zeros(ffn, hidden)
    if head is not None:
        width = 2 * hidden if head[0] == "pair" else hidden
        state["logit_fc.0.weight"] = torch.zeros(2 * width, width)
        state["logit_fc.3.weight"] = torch.zeros(head[1], 2 * width)
    return state


def save(folder: Path, state: dict, facts: SnapshotFacts | None = None, run: TrainConfig | None = None) -> Path:
    path = save_state_dict(state, folder / "BEST.pth")
    if facts is not None:
        write_facts(path, facts)
    if run is not None:
        (folder / "config.json").write_text(run.to_json(), encoding="utf-8")
    return path


def answers(root: Path, folder: str, count: int) -> None:
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / "trainval_label2ans.json").write_text(json.dumps([f"a{i}" for i in range(count)]))


# ---- sizes from the shapes ----------------------------------------------------------------------------------


def test_model_sizes_come_from_the_shapes() -> None:
    cfg = model_config(tensors(), None, "s.pth")
    assert (cfg.vocab_size, cfg.hidden_size, cfg.max_position_embeddings, cfg.type_vocab_size) == (50, 128, 40, 2)
    assert (cfg.visual_feat_dim, cfg.visual_pos_dim, cfg.intermediate_size) == (76, 4, 256)
    assert (cfg.llayers, cfg.xlayers, cfg.rlayers) == (3, 2, 1)
    assert cfg.num_attention_heads == 2  # BERT's 64-d heads without a saved config
    assert model_config(tensors(hidden=96), None, "s").num_attention_heads == 1  # not a multiple of 64: one head
    assert model_config(tensors(layers=(5, 2, 1), gap=True), None, "s").llayers == 5  # the highest index counts
    assert model_config(tensors(layers=(0, 0, 0)), None, "s").llayers == 0
    assert model_config(tensors(ffn=300), None, "s").intermediate_size == 300


def test_saved_head_count_is_kept_only_for_the_same_width() -> None:
    base = LXRTConfig(hidden_size=128, num_attention_heads=8, intermediate_size=999)
    assert model_config(tensors(), base, "s").num_attention_heads == 8
    assert model_config(tensors(hidden=192), base, "s").num_attention_heads == 3
    no_ffn = {k: v for k, v in tensors().items() if "dense" not in k}
    assert model_config(no_ffn, base, "s").intermediate_size == 999


def test_files_that_are_not_task_snapshots_are_named() -> None:
    state = tensors()
    del state[E + "encoder.visn_fc.box_fc.weight"]
    with pytest.raises(AskError, match=r"^x\.pth: not an LXMERT task snapshot \(no '.*box_fc\.weight'\)$"):
        model_config(state, None, "x.pth")
    pretrain = {"bert.embeddings.word_embeddings.weight": torch.zeros(3, 4)}
    with pytest.raises(AskError, match=r"\(no '.*word_embeddings.weight'\): a pretraining snapshot \(bert\.\*\); fine"):
        model_config(pretrain, None, "p.pth")


def test_head_kind() -> None:
    assert head_kind(tensors(head=("one", 7)), 128) == ("one", 7)
    assert head_kind(tensors(head=("pair", 2)), 128) == ("pair", 2)
    assert head_kind(tensors(head=None), 128) is None
    only_first = {k: v for k, v in tensors().items() if k != "logit_fc.3.weight"}
    assert head_kind(only_first, 128) is None


# ---- the task ----------------------------------------------------------------------------------------------


def test_task_of_an_original_snapshot_from_its_head(tmp_path: Path) -> None:
    """A pair head is the pair task's; a one-image head the task whose answer table (or fixed classes) has its
    width; no match or several are errors that list what was found."""
    answers(tmp_path, "vqa", 7)
    answers(tmp_path, "gqa", 9)
    answers(tmp_path, "easy_vqa", 9)
    widths = fixed_widths(tmp_path)
    assert widths == {"vqa": 7, "gqa": 9, "easy_vqa": 9, "snli_ve": 3}
    assert guess_task("pair", 2, tmp_path, Path("p")) == "nlvr2"
    assert guess_task("one", 7, tmp_path, Path("p")) == "vqa"
    assert guess_task("one", 3, tmp_path, Path("p")) == "snli_ve"
    with pytest.raises(AskError, match=r"^p: a one-image head with 9 outputs .* fixed classes: tasks of that width: "
                                       r"(gqa, easy_vqa|easy_vqa, gqa)\); pass --task$"):  # fmt: skip
        guess_task("one", 9, tmp_path, Path("p"))
    with pytest.raises(AskError, match=r"answer tables under .* no task has that width\); pass --task$"):
        guess_task("one", 11, tmp_path, Path("p"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "trainval_label2ans.json").write_text("{not json")
    assert fixed_widths(tmp_path / "broken") == {"snli_ve": 3}


def test_inspect_reads_the_task_from_facts_config_or_head(tmp_path: Path) -> None:
    answers(tmp_path / "data", "vqa", 7)
    plain = save(tmp_path / "plain", tensors())
    info, state = inspect_checkpoint(tmp_path / "plain" / "BEST", data_root=tmp_path / "data")  # no .pth: found
    assert (info.path, info.task, info.num_outputs, info.run, info.facts) == (plain, "vqa", 7, None, None)
    assert info.model.hidden_size == 128 and set(state) == set(tensors())
    assert info.max_seq_length == TrainConfig().max_seq_length and info.folder == plain.parent

    small = LXRTConfig(hidden_size=128, num_attention_heads=4)
    run = TrainConfig(task="gqa", data_root=str(tmp_path / "gqa_data"), max_seq_length=33, model=small)
    save(tmp_path / "run", tensors(), run=run)
    info, _ = inspect_checkpoint(tmp_path / "run" / "BEST.pth")
    assert info.task == "gqa" and info.data_root == tmp_path / "gqa_data" and info.max_seq_length == 33
    assert info.model.num_attention_heads == 4  # the run's own head count, its width being the file's
    assert inspect_checkpoint(tmp_path / "run" / "BEST.pth", task="vqa")[0].task == "vqa"  # --task wins

    facts = SnapshotFacts(task="snli_ve", model=LXRTConfig(hidden_size=128, num_attention_heads=4), num_outputs=3,
                          max_seq_length=44)  # fmt: skip
    save(tmp_path / "facts", tensors(head=("one", 3)), facts=facts, run=run)
    info, _ = inspect_checkpoint(tmp_path / "facts" / "BEST.pth")
    assert (info.task, info.num_outputs, info.max_seq_length, info.model.num_attention_heads) == ("snli_ve", 3, 44, 4)
    assert info.presentation.output == "labels" and info.task_class.name == "snli_ve"


def test_inspect_errors_say_what_does_not_fit(tmp_path: Path) -> None:
    facts = SnapshotFacts(task="snli_ve", model=LXRTConfig(hidden_size=128, num_attention_heads=2), num_outputs=3)
    wrong = save(tmp_path / "wrong", tensors(head=("one", 5)), facts=facts)
    with pytest.raises(AskError, match=rf"^{wrong}: the head has 5 outputs but {wrong.with_suffix('.json')} says 3$"):
        inspect_checkpoint(wrong)
    right = save(tmp_path / "right", tensors(head=("one", 3)), facts=facts)
    with pytest.raises(AskError, match=rf"^{right}: --task vqa, but {right.with_suffix('.json')} says it is a "
                                       r"snapshot of task snli_ve$"):  # fmt: skip
        inspect_checkpoint(right, task="vqa")
    pair = save(tmp_path / "pair", tensors(head=("pair", 2)))
    with pytest.raises(AskError, match=rf"^{pair}: --task vqa, but the file has a head on two images; a vqa model "
                                       r"answers a question about one image \(ask\)$"):  # fmt: skip
        inspect_checkpoint(pair, task="vqa")
    one = save(tmp_path / "one", tensors(head=("one", 2)), run=TrainConfig(task="nlvr2"))
    with pytest.raises(AskError, match=r"--task nlvr2, but the file has a one-image head \(2 outputs\)"):
        inspect_checkpoint(one)
    headless = save(tmp_path / "headless", {**tensors(head=None), "bert.pooler.dense.weight": torch.zeros(2, 2)})
    said = r"no answer head \(logit_fc\.\*\) and no facts file saying its task; top-level keys \['bert', 'lxrt_"
    with pytest.raises(AskError, match=said + r"encoder'\] \(a pretraining snapshot: fine-tune it first\)$"):
        inspect_checkpoint(headless)
    (tmp_path / "badrun").mkdir()
    (tmp_path / "badrun" / "config.json").write_text('{"no_such_field": 1}')
    save(tmp_path / "badrun", tensors())
    with pytest.raises(AskError, match=r"config\.json: not a run configuration of this code \("):
        inspect_checkpoint(tmp_path / "badrun" / "BEST.pth")
    bad_facts = SnapshotFacts(task="lxmert_pretrain", model=LXRTConfig(hidden_size=128, num_attention_heads=2),
                              num_outputs=7)
    odd = save(tmp_path / "odd", tensors(), facts=bad_facts)
    with pytest.raises(AskError, match=rf"^{odd}: {odd.with_suffix('.json')} says task 'lxmert_pretrain': task "
                                       r"'lxmert_pretrain' is not one ask presents"):  # fmt: skip
        inspect_checkpoint(odd)
    with pytest.raises(AskError, match=r"unknown task|no task|not a registered"):
        inspect_checkpoint(right, task="nosuchtask")
    with pytest.raises(AskError):
        inspect_checkpoint(tmp_path / "missing")


def test_demo_and_default_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AskError, match=r"^no model under snap/: get a released model and the detector with `bash "
                                       r"run/download_data.bash butd-detector "):  # fmt: skip
        inspect_checkpoint()
    answers(tmp_path / "data", "easy_vqa", 9)
    save(tmp_path / "snap" / "demo", tensors(head=("one", 9)), run=TrainConfig(task="easy_vqa"))
    assert inspect_checkpoint("demo")[0].path == Path("snap/demo/BEST.pth")
    assert inspect_checkpoint()[0].task == "easy_vqa"


# ---- the model picker and the default model ------------------------------------------------------------------


def facts_of(task: str, outputs: int, feat: int, released: bool = False) -> SnapshotFacts:
    extra = {"source": "unc-nlp/lxmert-vqa-uncased"} if released else {}
    model = LXRTConfig(hidden_size=128, num_attention_heads=2, visual_feat_dim=feat)
    return SnapshotFacts(task=task, model=model, num_outputs=outputs, extra=extra)


def test_snapshot_summaries_and_labels(tmp_path: Path) -> None:
    s = describe_snapshot(save(tmp_path / "f", tensors(feat=2048), facts=facts_of("vqa", 7, 2048)))
    summary = (s.task, s.feat_dim, s.outputs, s.released, s.tab, s.answers, s.photo)
    assert summary == ("vqa", 2048, 7, False, "question", True, True)
    assert s.label == f"{s.path} (vqa)"
    r = describe_snapshot(save(tmp_path / "r", tensors(feat=2048), run=TrainConfig(task="nlvr2")))
    assert (r.task, r.feat_dim, r.tab, r.answers, r.photo) == ("nlvr2", TrainConfig().model.visual_feat_dim, "pair",
                                                               False, False)  # fmt: skip
    h = describe_snapshot(save(tmp_path / "h", tensors(feat=2048, head=("one", 11))))
    assert (h.task, h.feat_dim, h.outputs, h.tab, h.answers, h.photo) == (None, 2048, 11, "question", True, True)
    assert h.label == f"{h.path} (11 outputs)"
    p = describe_snapshot(save(tmp_path / "p", tensors(head=("pair", 2))))
    assert (p.task, p.tab) == ("nlvr2", "pair")
    box = describe_snapshot(save(tmp_path / "b", tensors(feat=2048), facts=facts_of("refcoco", 1, 2048)))
    assert (box.tab, box.answers, box.photo) == ("box", False, False)
    ve = describe_snapshot(save(tmp_path / "v", tensors(feat=2048), facts=facts_of("snli_ve", 3, 2048)))
    assert (ve.tab, ve.answers) == ("question", False)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "BEST.pth").write_bytes(b"<html>not a checkpoint</html>")
    bad = describe_snapshot(tmp_path / "x" / "BEST.pth")
    assert bad.problem and bad.tab is None and bad.presentation is None and not bad.answers
    assert bad.label.startswith(f"{bad.path} (unreadable: ") and len(bad.label) <= len(str(bad.path)) + 75
    listed = find_checkpoints(tmp_path)
    assert [path for _, path in listed] == sorted(str(p) for p in tmp_path.rglob("BEST.pth"))
    assert dict((path, label) for label, path in listed)[str(s.path)] == s.label


def test_default_model_prefers_released_photo_models_then_priority_then_newest(tmp_path: Path) -> None:
    def snap(name: str, facts: SnapshotFacts, age: int) -> Path:
        path = save(tmp_path / name, tensors(feat=facts.model.visual_feat_dim), facts=facts)
        os.utime(path, (1_000_000 - age, 1_000_000 - age))
        return path

    assert default_checkpoint(tmp_path) is None
    other = snap("other", facts_of("vqa", 7, 76), 0)  # answers, but not from photo features
    assert default_checkpoint(tmp_path) == other
    demo = snap("demo", facts_of("easy_vqa", 9, 76), 5)  # a task that is not about photos: before "other"
    assert default_checkpoint(tmp_path) == demo
    gqa = snap("gqa", facts_of("gqa", 9, 2048), 10)
    assert default_checkpoint(tmp_path) == gqa
    vqa_old = snap("vqa_old", facts_of("vqa", 7, 2048), 30)  # vqa's priority is above gqa's
    assert default_checkpoint(tmp_path) == vqa_old
    vqa_new = snap("vqa_new", facts_of("vqa", 7, 2048), 20)  # the newer of two
    assert default_checkpoint(tmp_path) == vqa_new
    released = snap("released", facts_of("gqa", 9, 2048, released=True), 40)  # an imported release first
    assert default_checkpoint(tmp_path) == released
    snap("pair", facts_of("nlvr2", 2, 2048, released=True), 0)  # never: it does not answer questions
    snap("region", facts_of("refcoco", 1, 2048, released=True), 0)
    assert default_checkpoint(tmp_path) == released


# ---- edges found by mutation testing ---------------------------------------------------------------------------


def test_sizes_at_their_edges() -> None:
    """Head count for a width that is not a multiple of 64 (one head, not width // 64), an int; the feed-forward
    width from the cross layers' ``inter`` keys alone or the other layers' ``intermediate`` alone; type and box
    widths other than the defaults."""
    odd = model_config(tensors(hidden=130), None, "s")
    assert odd.num_attention_heads == 1
    even = model_config(tensors(hidden=192), None, "s").num_attention_heads
    assert even == 3 and type(even) is int
    assert model_config(tensors(layers=(0, 2, 0), ffn=320), None, "s").intermediate_size == 320
    assert model_config(tensors(layers=(2, 0, 1), ffn=310), None, "s").intermediate_size == 310
    state = tensors()
    state[E + "embeddings.token_type_embeddings.weight"] = torch.zeros(3, 128)
    state[E + "encoder.visn_fc.box_fc.weight"] = torch.zeros(128, 6)
    cfg = model_config(state, None, "s")
    assert (cfg.type_vocab_size, cfg.visual_pos_dim) == (3, 6)


def test_what_each_presentation_does_and_its_tab(tmp_path: Path) -> None:
    said = {name: does(find_task(name).presentation) for name in ("vqa", "nlvr2", "flickr30k", "refcoco")}
    assert said == {"vqa": "answers a question about one image (ask)",
                    "nlvr2": "judges a statement about two images (verify)",
                    "flickr30k": "ranks images against a caption, or captions against an image (rank)",
                    "refcoco": "finds the region an expression names (locate)"}  # fmt: skip
    assert [tab_of(find_task(n).presentation) for n in ("gqa", "nlvr2", "flickr30k", "refcoco", "snli_ve")] == [
        "question", "pair", "gallery", "box", "question"]  # fmt: skip
    g = describe_snapshot(save(tmp_path / "g", tensors(feat=2048), facts=facts_of("flickr30k", 2, 2048)))
    assert (g.task, g.tab, g.answers) == ("flickr30k", "gallery", False)


def test_messages_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reader error starts with the file it is about; the pretraining hint only for pretraining files;
    a summary keeps the reason; without --data-root or a run the answer tables come from ./data."""
    bare = save(tmp_path / "bare", tensors(head=None))
    with pytest.raises(AskError) as err:
        inspect_checkpoint(bare)
    assert str(err.value) == f"{bare}: no answer head (logit_fc.*) and no facts file saying its task; top-level keys " \
                             "['lxrt_encoder']"  # fmt: skip
    summary = describe_snapshot(bare)
    assert summary.problem == str(err.value)
    broken = {k: v for k, v in tensors().items() if "box_fc" not in k}
    cut = save(tmp_path / "cut", broken)
    with pytest.raises(AskError, match=rf"^{cut}: not an LXMERT task snapshot"):
        inspect_checkpoint(cut)
    facts = save(tmp_path / "facts", tensors())
    facts.with_suffix(".json").write_text("{broken")
    with pytest.raises(AskError, match=rf"^{facts.with_suffix('.json')}"):
        inspect_checkpoint(facts)
    assert describe_snapshot(facts).problem.startswith(str(facts.with_suffix(".json")))
    with pytest.raises(AskError, match=rf"{tmp_path / 'missing'}"):
        inspect_checkpoint(tmp_path / "missing")
    odd = describe_snapshot(save(tmp_path / "odd", tensors(), facts=SnapshotFacts(
        task="lxmert_pretrain", model=LXRTConfig(hidden_size=128, num_attention_heads=2), num_outputs=7)))
    assert odd.problem.startswith(f"{odd.path}: ")
    monkeypatch.chdir(tmp_path)
    answers(tmp_path / "data", "vqa", 7)
    assert inspect_checkpoint(save(tmp_path / "plain", tensors()))[0].task == "vqa"
    nine = save(tmp_path / "nine", tensors(head=("one", 9)))
    with pytest.raises(AskError, match=rf"^{nine}: a one-image head with 9 outputs .*\(answer tables under data and "):
        inspect_checkpoint(nine)


def test_saved_facts_decide_the_sizes_over_the_run(tmp_path: Path) -> None:
    facts = SnapshotFacts(task="vqa", model=LXRTConfig(hidden_size=128, num_attention_heads=4), num_outputs=7)
    run = TrainConfig(task="vqa", model=LXRTConfig(hidden_size=128, num_attention_heads=8))
    path = save(tmp_path / "both", tensors(), facts=facts, run=run)
    assert inspect_checkpoint(path)[0].model.num_attention_heads == 4


def test_listing_defaults_and_other_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    save(tmp_path / "snap" / "a", tensors(feat=2048), facts=facts_of("vqa", 7, 2048))
    last = save_state_dict(tensors(), tmp_path / "snap" / "a" / "LAST.pth")
    assert [path for _, path in find_checkpoints()] == ["snap/a/BEST.pth"]
    assert [s.path for s in find_snapshots()] == [Path("snap/a/BEST.pth")]
    assert [path for _, path in find_checkpoints(tmp_path / "snap", "LAST.pth")] == [str(last)]
    assert [s.path for s in find_snapshots(tmp_path / "snap", "LAST.pth")] == [last]


def test_unknown_head_photo_model_comes_after_known_tasks_but_before_the_demo(tmp_path: Path) -> None:
    """A photo model whose task is unknown (only its head) ranks below known photo tasks by priority, not by
    age; it still comes before the demo (a model not about photos)."""
    demo = save(tmp_path / "demo", tensors(), facts=facts_of("easy_vqa", 9, 76))
    os.utime(demo, (1_000_000, 1_000_000))
    unknown = save(tmp_path / "unknown", tensors(feat=2048, head=("one", 11)))
    os.utime(unknown, (900_000, 900_000))
    assert default_checkpoint(tmp_path) == unknown
    gqa = save(tmp_path / "gqa", tensors(feat=2048), facts=facts_of("gqa", 9, 2048))
    os.utime(gqa, (800_000, 800_000))
    assert default_checkpoint(tmp_path) == gqa
