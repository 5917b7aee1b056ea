"""Asking about a picture: the demo's model end to end, original-format task snapshots, the region
importance, the PNG and the command line."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ask import Asker, AskError, ImageRegions
from ask.cli import main as ask_main
from ask.draw import OTHERS, STRONGEST, answer_figure, display_scale, overlay, verify_figure
from ask.inputs import region_labels
from ask.probe import CrossAttentionProbe
from demo.easy_vqa_data import image_path
from features.extractors import GridObjectExtractor, Regions, available_extractors
from features.store import normalize_boxes
from lxrt import LXRTConfig, save_state_dict
from tasks.models import Classifier, NLVR2Model

REPO_DATA = Path(__file__).resolve().parents[1] / "data"
EXTRACTOR_OPTIONS = {"grid": 2, "patch": 4}  # 76-d features, 5 regions
VQA_ANSWERS = 3129
# Asked for the default detector: before it is registered, a request for an extractor of the right width;
# once it is, its own message about the missing weights file.
NO_EXTRACTOR = (
    "extractor 'butd': .*weights" if "butd" in available_extractors() else "76-d region features: pass --extractor"
)


def _demo(demo_run) -> tuple[Path, list[dict], dict]:
    root, _ = demo_run
    records = json.loads((root / "data" / "easy_vqa" / "test.json").read_text())
    preds = {r["question_id"]: r["answer"] for r in json.loads((root / "out" / "test_predict.json").read_text())}
    return root / "out" / "BEST.pth", records, preds


def _one_per_image(records: list[dict], count: int) -> list[dict]:
    seen, out = set(), []
    for rec in records:
        if rec["img_id"] not in seen:
            seen.add(rec["img_id"])
            out.append(rec)
    return out[:count]


# ---- the demo's model


def test_ask_gives_the_answers_of_the_evaluation_loop(demo_run) -> None:
    best, records, preds = _demo(demo_run)
    asker = Asker.from_checkpoint(best)
    assert asker.task == "easy_vqa" and asker.extractor.name == "grid+object"
    for rec in _one_per_image(records, 24):
        result = asker.ask(image_path(rec["img_id"]), rec["sent"])
        # the same image, question and weights through the raw image instead of the feature store
        assert result.answer == preds[rec["question_id"]], rec
        probs = [p for _, p in result.answers]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert len({a for a, _ in result.answers}) == 5
        importance = result.regions.importance
        assert importance.shape == (5,) and abs(importance.sum() - 1) < 1e-5 and (importance >= 0).all()
        assert result.regions.boxes.shape == (5, 4) and result.regions.image.size == (64, 64)


def test_probe_reads_the_attention_the_model_computes(demo_run, monkeypatch) -> None:
    best, records, _ = _demo(demo_run)
    asker = Asker.from_checkpoint(best)
    att = asker.model.lxrt_encoder.bert.encoder.x_layers[-1].visual_attention.att
    seen = []
    original = att.attend

    def recording(q, k, v, mask):  # noqa: ANN001, ANN202
        seen.append((q, k, mask))
        return original(q, k, v, mask)

    monkeypatch.setattr(att, "attend", recording)
    rec = records[0]
    result = asker.ask(image_path(rec["img_id"]), rec["sent"])
    q, k, mask = seen[-1]  # the [CLS]-only last layer: language queries over the regions
    heads, d = att.num_heads, att.head_dim
    qh = q[:, :1].reshape(1, 1, heads, d).transpose(1, 2)
    kh = k.reshape(1, k.shape[1], heads, d).transpose(1, 2)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(d) + (0 if mask is None else mask)
    expected = scores.softmax(-1).mean(1)[0, 0].numpy()
    np.testing.assert_allclose(result.regions.importance, expected, rtol=1e-5, atol=1e-7)

    asker.model.pooled_only = False  # the probe must say so when the layer runs another way
    with pytest.raises(RuntimeError, match="did not run"), CrossAttentionProbe(asker.model.lxrt_encoder.bert):
        asker.model(*_inputs(asker, image_path(rec["img_id"]), rec["sent"]))


def _inputs(asker: Asker, image: Path, text: str) -> tuple:
    feats, boxes, _ = asker.encode_image(Image.open(image).convert("RGB"))
    tok = asker.tokenizer([text])
    return tok.input_ids, feats[None], boxes[None], tok.attention_mask, tok.token_type_ids


def test_cli_prints_top5_and_writes_the_png(demo_run, tmp_path, capsys) -> None:
    best, records, preds = _demo(demo_run)
    rec = records[0]
    out = tmp_path / "answer.png"
    assert ask_main([str(image_path(rec["img_id"])), rec["sent"], "--load", str(best), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"model: {best} (easy_vqa)" and printed[1] == f"Q: {rec['sent']}"
    assert [line.split()[0] for line in printed[2:7]] == ["1.", "2.", "3.", "4.", "5."]
    assert printed[2].split()[1] == preds[rec["question_id"]]
    assert printed[7].startswith("  time: ") and "extracting the regions" in printed[7]
    assert printed[-1] == f"picture: {out}"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (1000, 460)

    # default place: beside the run
    assert ask_main([str(image_path(rec["img_id"])), "What shape is it?", "--load", str(best)]) == 0
    png = Path(capsys.readouterr().out.splitlines()[-1].removeprefix("picture: "))
    assert png.parent == best.parent / "ask" and png.is_file() and "what-shape-is-it" in png.name


def test_several_questions_in_one_call_extract_the_regions_once(demo_run, tmp_path, capsys, monkeypatch) -> None:
    """``ask IMAGE Q1 Q2 Q3``: three answers, three PNGs, one extractor run (the later questions say their
    regions were reused), each answer the one a call of its own gives. Catches a cache keyed on the question
    or one that hands back another image's regions."""
    best, records, preds = _demo(demo_run)
    recs = [r for r in records if r["img_id"] == records[0]["img_id"]][:3]
    assert len(recs) >= 2
    calls = []
    real = GridObjectExtractor.__call__
    monkeypatch.setattr(GridObjectExtractor, "__call__", lambda self, im: calls.append(1) or real(self, im))
    out = tmp_path / "many.png"
    argv = [str(image_path(recs[0]["img_id"])), *[r["sent"] for r in recs], "--load", str(best), "--out", str(out)]
    assert ask_main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(calls) == 1
    answers = [printed[i + 1].split()[1] for i, line in enumerate(printed) if line.startswith("Q: ")]
    assert answers == [preds[r["question_id"]] for r in recs]
    times = [line for line in printed if line.startswith("  time: ")]
    assert "extracting" in times[0] and all("regions reused" in t for t in times[1:])
    pngs = [Path(line.removeprefix("picture: ")) for line in printed if line.startswith("picture: ")]
    assert pngs == [tmp_path / f"many-{i}.png" for i in range(1, len(recs) + 1)] and all(p.is_file() for p in pngs)


def test_a_second_question_about_a_picture_reuses_its_regions(demo_run, tmp_path) -> None:
    """The region cache: the same bytes (another file name, or the picture itself) with the same extractor
    settings reuse the regions; other bytes or other settings extract again; the cache stays bounded."""
    from ask.cache import RegionCache

    best, records, _ = _demo(demo_run)
    first, other = (image_path(r["img_id"]) for r in _one_per_image(records, 2))
    asker = Asker.from_checkpoint(best)
    a = asker.ask(first, "what color is the shape?")
    shutil.copy(first, tmp_path / "copy.png")
    b = asker.ask(tmp_path / "copy.png", "what shape is in the image?")
    c = asker.ask(other, "what color is the shape?")
    assert not a.reused and b.reused and not c.reused and b.extract_seconds == 0.0
    assert np.array_equal(a.regions.boxes, b.regions.boxes)
    again = Asker.from_checkpoint(best, max_pixels=10**7, cache=asker.cache)  # other settings
    assert not again.ask(first, "what color is the shape?").reused and len(asker.cache) == 3
    small = RegionCache(max_entries=2)
    shared = Asker.from_checkpoint(best, cache=small)
    for image in (first, other, tmp_path / "copy.png", other):
        shared.ask(image, "what color is the shape?")
    assert len(small) == 2 and small.hits == 2 and small.misses == 2
    tiny = RegionCache(max_bytes=64 * 64 * 3)  # not even one picture and its features fit
    Asker.from_checkpoint(best, cache=tiny).ask(first, "what?")
    assert len(tiny) == 0


def test_cli_bad_input_is_a_clear_error(demo_run, tmp_path, capsys) -> None:
    best, records, _ = _demo(demo_run)
    img = str(image_path(records[0]["img_id"]))
    text_file = tmp_path / "notes.png"
    text_file.write_text("not a picture")
    cases = [
        ([str(text_file), "what color?"], ["notes.png", "not a readable image"]),
        ([str(tmp_path / "missing.jpg"), "what color?"], ["missing.jpg", "cannot read the file"]),
        ([img, "   "], ["empty question"]),
        ([img, img, "two images?"], ['takes IMAGE "QUESTION"', "2 image(s)"]),
        ([img, "what?", "--load", str(tmp_path / "nothing")], ["checkpoint not found"]),
        ([img, "what?", "--task", "nlvr2"], ["--task nlvr2", "says it is a snapshot of task easy_vqa"]),
        ([img, "what?", "--extractor", "grid"], ["198-d features", "trained on 268-d"]),
        ([img, "what?", "--extractor", "nope"], ["unknown extractor 'nope'"]),
    ]
    for argv, words in cases:
        load = [] if "--load" in argv else ["--load", str(best)]
        assert ask_main([*argv, *load]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("ask: error:") and "Traceback" not in err, err
        for word in words:
            assert word in err, (argv, err)
    with pytest.raises(SystemExit) as exit_:
        ask_main(["--help"])
    assert exit_.value.code == 0 and "--extractor" in capsys.readouterr().out


# ---- original-format snapshots (tensors only, no config.json)


def _tiny(feat_dim: int) -> LXRTConfig:
    return LXRTConfig(
        hidden_size=64, num_attention_heads=1, intermediate_size=128, max_position_embeddings=40,
        llayers=1, xlayers=2, rlayers=1, visual_feat_dim=feat_dim,
    )  # fmt: skip


def _save(model: torch.nn.Module, folder: Path) -> Path:
    torch.manual_seed(0)
    for p in model.parameters():  # non-trivial weights everywhere, LayerNorms included
        p.data.normal_(0, 0.3)
    return save_state_dict(model.state_dict(), folder / "BEST.pth")


@pytest.fixture(scope="module")
def vqa_snapshot(tmp_path_factory) -> tuple[Path, Classifier]:
    feat_dim = GridObjectExtractor(**EXTRACTOR_OPTIONS).feat_dim
    model = Classifier(_tiny(feat_dim), VQA_ANSWERS).eval()
    return _save(model, tmp_path_factory.mktemp("vqa_run")), model


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = np.full((90, 120, 3), 230, np.uint8)
    pixels[20:60, 30:80] = rng.integers(0, 255, (40, 50, 3))
    return Image.fromarray(pixels)


def test_original_vqa_snapshot_gives_the_models_probabilities(vqa_snapshot, photo) -> None:
    path, reference = vqa_snapshot
    asker = Asker.from_checkpoint(path.with_suffix(""), extractor="grid+object",
                                  extractor_options=EXTRACTOR_OPTIONS, data_root=REPO_DATA)  # fmt: skip
    assert asker.task == "vqa" and asker.info.model.num_attention_heads == 1 and asker.info.model.xlayers == 2
    result = asker.ask(photo, "What is in the middle of the picture?")

    regions = GridObjectExtractor(**EXTRACTOR_OPTIONS)(photo)
    feats = torch.from_numpy(regions.features.astype(np.float16).astype(np.float32))[None]
    boxes = torch.from_numpy(normalize_boxes(regions.boxes, 90, 120, len(regions.boxes), "test"))[None]
    tok = asker.tokenizer(["What is in the middle of the picture?"])
    with torch.no_grad():
        probs = reference(tok.input_ids, feats, boxes, tok.attention_mask, tok.token_type_ids).softmax(-1)[0]
    top = probs.topk(5)
    labels = json.loads((REPO_DATA / "vqa" / "trainval_label2ans.json").read_text())
    assert [a for a, _ in result.answers] == [labels[i] for i in top.indices.tolist()]
    np.testing.assert_allclose([p for _, p in result.answers], top.values.numpy(), rtol=1e-4)


def test_snapshots_that_do_not_fit_are_clear_errors(vqa_snapshot, photo, tmp_path) -> None:
    path, _ = vqa_snapshot
    opts = dict(extractor="grid+object", extractor_options=EXTRACTOR_OPTIONS, data_root=REPO_DATA)
    with pytest.raises(AskError, match=r"gives 268-d features but .* trained on 76-d"):
        Asker.from_checkpoint(path, extractor="grid+object", data_root=REPO_DATA)
    with pytest.raises(AskError, match=r"has 3129 answers but the answer table .*gqa.* has 1842"):
        Asker.from_checkpoint(path, task="gqa", **opts)
    with pytest.raises(AskError, match=r"--task nlvr2, but the file has a one-image head \(3129 outputs\)"):
        Asker.from_checkpoint(path, task="nlvr2", **opts)
    with pytest.raises(AskError, match=NO_EXTRACTOR):  # no extractor given: butd, without its weights here
        Asker.from_checkpoint(path, data_root=REPO_DATA)

    short = tmp_path / "data"  # an answer table that is not the checkpoint's
    shutil.copytree(REPO_DATA / "vqa", short / "vqa")
    labels = json.loads((short / "vqa" / "trainval_label2ans.json").read_text())[:-1]
    (short / "vqa" / "trainval_label2ans.json").write_text(json.dumps(labels))
    (short / "vqa" / "trainval_ans2label.json").write_text(json.dumps({a: i for i, a in enumerate(labels)}))
    with pytest.raises(AskError, match="has 3129 answers but the answer table .* has 3128"):
        Asker.from_checkpoint(path, task="vqa", **{**opts, "data_root": short})
    with pytest.raises(AskError, match="one-image head with 3129 outputs and no facts file or config.json saying"):
        Asker.from_checkpoint(path, **{**opts, "data_root": short})

    state = torch.load(path, weights_only=True)
    state["lxrt_encoder.model.bert.encoder.x_layers.0.lang_output.LayerNorm.weight"] = torch.ones(3)
    save_state_dict(state, tmp_path / "reshaped" / "BEST.pth")
    with pytest.raises(AskError, match=r"x_layers\.0\.lang_output\.LayerNorm\.weight.*\(3,\)"):
        Asker.from_checkpoint(tmp_path / "reshaped" / "BEST.pth", **opts)

    save_state_dict({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 64)}, tmp_path / "pre" / "x.pth")
    with pytest.raises(AskError, match="not an LXMERT task snapshot .*: a pretraining snapshot"):
        Asker.from_checkpoint(tmp_path / "pre" / "x.pth", **opts)
    state = torch.load(path, weights_only=True)
    save_state_dict({k: v for k, v in state.items() if not k.startswith("logit_fc")}, tmp_path / "nohead.pth")
    with pytest.raises(AskError, match="no answer head"):
        Asker.from_checkpoint(tmp_path / "nohead.pth", **opts)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(AskError, match="truncated zip archive .*not a PyTorch checkpoint"):
        Asker.from_checkpoint(broken, **opts)

    asker = Asker.from_checkpoint(path, **opts)
    asker.extractor = type(
        "Empty",
        (),
        {"name": "empty", "feat_dim": 76, "__call__": lambda self, im: Regions(np.zeros((0, 4)), np.zeros((0, 76)))},
    )()
    with pytest.raises(AskError, match="'empty' found no regions in the 120x90 image"):
        asker.ask(photo, "what?")
    asker = Asker.from_checkpoint(path, max_pixels=5000, **opts)
    with pytest.raises(AskError, match="120x90 = 0.0 megapixels; the limit"):
        asker.ask(photo, "what?")
    with pytest.raises(AskError, match="vqa model: it answers a question about one image"):
        Asker.from_checkpoint(path, **opts).verify(photo, photo, "A statement.")


def test_nlvr2_snapshot_judges_a_pair(photo, tmp_path, capsys) -> None:
    """NLVR2's class 1 is "true" (the original's labels): a head biased to class 1 judges the pair true, and
    the same head biased to class 0 false, through ``verify`` and the command line."""
    feat_dim = GridObjectExtractor(**EXTRACTOR_OPTIONS).feat_dim
    model = NLVR2Model(_tiny(feat_dim))
    path = _save(model, tmp_path / "nlvr2_run")
    with torch.no_grad():
        model.logit_fc[3].weight.mul_(0.2)  # the inputs still matter, a little
        model.logit_fc[3].bias.copy_(torch.tensor([-1.5, 1.5]))
    save_state_dict(model.state_dict(), path)
    opts = dict(extractor="grid+object", extractor_options=EXTRACTOR_OPTIONS, data_root=REPO_DATA)
    asker = Asker.from_checkpoint(path, **opts)
    assert asker.task == "nlvr2"
    other = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((60, 80))
    result = asker.verify(photo, other, "The left image has more colours.")
    again = asker.verify(photo, other, "The left image has more colours.")
    swapped = asker.verify(other, photo, "The left image has more colours.")
    assert 0.8 < result.prob_true < 1 and result.prob_true == again.prob_true
    assert result.prob_true != swapped.prob_true  # the order of the pair matters
    for side in (result.left, result.right):
        assert abs(side.importance.sum() - 1) < 1e-5
    verify_figure(result, tmp_path / "pair.png")
    assert Image.open(tmp_path / "pair.png").format == "PNG"
    with pytest.raises(AskError, match="two images"):
        asker.ask(photo, "what?")
    with pytest.raises(AskError, match="--task vqa, but the file has a head on two images"):
        Asker.from_checkpoint(path, task="vqa", **opts)

    photo.save(tmp_path / "left.png")
    other.save(tmp_path / "right.png")
    argv = [str(tmp_path / "left.png"), str(tmp_path / "right.png"), "The left image has more colours.",
            "--load", str(path), "--extractor", "grid+object", "--option", "grid=2", "--option", "patch=4",
            "--data-root", str(REPO_DATA)]  # fmt: skip
    assert ask_main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"model: {path} (nlvr2)" and printed[2] == f"  true  (P(true) = {result.prob_true:.3f})"
    assert (
        printed[-1] == f"picture: {tmp_path / 'nlvr2_run' / 'ask' / 'left-right-the-left-image-has-more-colours.png'}"
    )
    assert ask_main(argv[1:]) == 2 and "takes LEFT RIGHT" in capsys.readouterr().err

    with torch.no_grad():
        model.logit_fc[3].bias.copy_(torch.tensor([1.5, -1.5]))
    false_path = save_state_dict(model.state_dict(), tmp_path / "nlvr2_false" / "BEST.pth")
    judged = Asker.from_checkpoint(false_path, **opts).verify(photo, other, "The left image has more colours.")
    assert 0 < judged.prob_true < 0.2
    assert ask_main([*argv[:4], str(false_path), *argv[5:]]) == 0
    assert capsys.readouterr().out.splitlines()[2] == f"  false  (P(true) = {judged.prob_true:.3f})"


# ---- drawing


def test_overlay_boxes_the_strongest_region_in_red(tmp_path) -> None:
    image = Image.new("RGB", (100, 80), (255, 255, 255))
    boxes = np.asarray([[10, 10, 50, 40], [60, 20, 90, 70], [0, 0, 5, 5]], np.float32)
    regions = ImageRegions(image, boxes, np.asarray([0.3, 0.6, 0.1]), ["red shirt", "dog", "sky"])
    drawn = np.asarray(overlay(regions, top=2))
    s = display_scale(100, 80)
    assert drawn.shape == (round(80 * s), round(100 * s), 3)
    assert tuple(drawn[round(45 * s), round(60 * s)]) == STRONGEST  # left edge of box 1 (the strongest)
    assert tuple(drawn[round(70 * s) - 2, round(75 * s)]) == STRONGEST  # its bottom edge
    near = drawn[round(30 * s), round(10 * s) - 1 : round(10 * s) + 2]  # left edge of box 0: a thin line
    assert any(tuple(p) == OTHERS for p in near) and (drawn[round(30 * s), round(10 * s) + 3] == 255).all()
    assert tuple(drawn[round(45 * s), round(75 * s)]) == (255, 255, 255)  # inside: untouched
    assert (drawn[: round(5 * s) - 1, : round(5 * s) - 1] == 255).all()  # box 2 is not among the top 2

    from ask.asker import AskResult

    result = AskResult("what is it?", [("dog", 0.7), ("cat", 0.2)], regions, "vqa", 0.01)
    answer_figure(result, tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as im:
        assert im.format == "PNG"


def test_detector_labels_name_the_regions(tmp_path) -> None:
    (tmp_path / "objects_vocab.txt").write_text("yolk\ngoal,goals\nshirt\n")
    (tmp_path / "attributes_vocab.txt").write_text("gray,grey\nred\n")
    boxes, feats = np.zeros((3, 4), np.float32), np.zeros((3, 2), np.float32)
    plain = Regions(boxes, feats, objects_id=np.asarray([2, 1, 7]), objects_conf=np.ones(3, np.float32))
    assert region_labels(plain, [tmp_path / "missing", tmp_path]) == ["shirt", "goal", "class 7"]
    with_attrs = SimpleNamespace(objects_id=np.asarray([2, 0]), attrs_id=np.asarray([1, 0]))
    assert region_labels(with_attrs, [tmp_path]) == ["red shirt", "gray yolk"]
    assert region_labels(Regions(boxes, feats), [tmp_path]) is None  # no detector ids
    assert region_labels(plain, [tmp_path / "missing"]) is None  # no label files


@pytest.mark.slow
def test_ask_script_runs_from_bash(demo_run, tmp_path) -> None:
    best, records, preds = _demo(demo_run)
    rec = records[0]
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "x.png"
    done = subprocess.run(
        ["bash", str(repo / "run" / "ask.bash"), str(image_path(rec["img_id"])), rec["sent"], "--load", str(best),
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2].split()[1] == preds[rec["question_id"]] and out.is_file()


def test_vqa_snapshot_answers_through_the_detector_with_vg_labels(tmp_path) -> None:
    """A VQA snapshot asked about a real photograph through ``--extractor butd`` (the detector's small
    test variant, random weights): the detector's boxes and Visual Genome labels reach the answer and
    the PNG. Catches a detector path that drops the regions' labels or mis-sizes the features."""
    skdata = pytest.importorskip("skimage.data")
    from features.butd.model import DetectorConfig
    from features.butd.weights import random_state_dict

    small = DetectorConfig(width=8, stem_channels=16, blocks=(1, 1, 2, 1), rpn_hidden=32)
    best = _save(Classifier(_tiny(small.feat_dim), VQA_ANSWERS).eval(), tmp_path / "vqa_run")
    options = {"weights": random_state_dict(7, small), "config": small, "short_side": 160, "rpn_post_nms": 30}
    asker = Asker.from_checkpoint(best, task="vqa", extractor="butd", extractor_options=options,
                                  data_root=REPO_DATA)
    photo = Image.fromarray(skdata.astronaut())
    result = asker.ask(photo, "What is the person wearing?")
    probs = [p for _, p in result.answers]
    assert len(result.answers) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    regions = result.regions  # 30 proposals, fewer than 36: every one is a region
    assert len(regions.boxes) == 30 and regions.labels is not None and len(regions.labels) == 30
    vocab = (REPO_DATA / "vg" / "objects_vocab.txt").read_text().splitlines()
    names = {n for line in vocab for n in line.split(",")}
    assert all(label.split()[-1] in names for label in regions.labels)
    w, h = photo.size
    assert (regions.boxes[:, [0, 2]] <= w + 1e-3).all() and (regions.boxes[:, [1, 3]] <= h + 1e-3).all()


def test_region_labels_stay_inside_the_picture_and_apart() -> None:
    """Three regions on the same spot at the picture's top-left corner, and a picture smaller than a label:
    every label is inside the canvas and none covers another. Catches labels drawn at the box corner
    (overlapping, or off the image above a box at the top)."""
    from ask.draw import _overlaps, place_labels

    boxes = [(0.0, 0.0, 60.0, 40.0), (2.0, 1.0, 58.0, 42.0), (0.0, 0.0, 50.0, 30.0), (300.0, 350.0, 384.0, 384.0)]
    sizes = [(120.0, 20.0), (150.0, 20.0), (90.0, 20.0), (200.0, 20.0)]
    spots = place_labels(boxes, sizes, (384, 384))
    for i, (x1, y1, x2, y2) in enumerate(spots):
        assert min(x1, y1) >= 0 and max(x2, y2) <= 384, spots[i]
        assert (x2 - x1, y2 - y1) == sizes[i]
        assert not any(_overlaps(spots[i], spots[j]) for j in range(i)), spots
    assert spots[0][1] >= 0 and spots[3][1] < 350  # no room above box 0: inside; box 3 at the bottom: above it

    image = Image.new("RGB", (40, 30), (255, 255, 255))  # a small upload: drawn at a readable size
    regions = ImageRegions(image, np.asarray([[0, 0, 40, 30], [1, 1, 39, 29], [0, 0, 20, 15]], np.float32),
                           np.asarray([0.5, 0.3, 0.2]), ["big sky", "white wall", "corner"])  # fmt: skip
    drawn = overlay(regions)
    assert drawn.size == (384, 288)
    pixels = np.asarray(drawn)
    assert (pixels == STRONGEST).all(-1).sum() > 200 and (pixels == OTHERS).all(-1).sum() > 200


def test_the_default_model_is_the_best_photo_model_found(tmp_path) -> None:
    """Without --load: a photo model (the detector's 2048-d features) over the demo's shapes model, a released
    import over one's own run, VQA over GQA; then the demo's; then any other question-answering model; never
    an NLVR2 model. Catches the demo's model answering questions about photos while a photo model is there."""
    import os

    from ask.checkpoints import default_checkpoint
    from lxrt.snapshot import SnapshotFacts, write_facts

    def snapshot(task: str, name: str, feat_dim: int, released: bool = False, age: int = 0) -> Path:
        path = save_state_dict({"x": torch.zeros(1)}, tmp_path / task / name / "BEST.pth")
        extra = {"source": f"unc-nlp/{name}@main"} if released else {}
        write_facts(path, SnapshotFacts(task=task, model=LXRTConfig(visual_feat_dim=feat_dim), num_outputs=2 if
                                        task == "nlvr2" else 10, extra=extra))  # fmt: skip
        os.utime(path, (1e9 - age, 1e9 - age))
        return path

    assert default_checkpoint(tmp_path) is None
    other = snapshot("vqa", "grid_run", 54)
    assert default_checkpoint(tmp_path) == other
    snapshot("nlvr2", "pairs", 2048)
    demo = snapshot("easy_vqa", "demo_run", 268)
    assert default_checkpoint(tmp_path) == demo
    older = snapshot("vqa", "my_run_old", 2048, age=100)
    newer = snapshot("vqa", "my_run_new", 2048, age=10)
    assert default_checkpoint(tmp_path) == newer and older != newer
    gqa = snapshot("gqa", "lxmert-gqa-uncased", 2048, released=True)
    assert default_checkpoint(tmp_path) == gqa
    vqa = snapshot("vqa", "lxmert-vqa-uncased", 2048, released=True, age=1000)
    assert default_checkpoint(tmp_path) == vqa
