"""``ask`` and the page for tasks of every shape, from each snapshot's own facts: visual entailment (labels),
image-text retrieval (a ranking) and referring expressions (a box).

Each snapshot is a small model of the task's own training class with random weights and a facts file; what
``ask`` prints is checked against the same model run directly on the extractor's regions (float16-rounded
features, boxes as fractions of the image), computed here without ``ask``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ask import Asker, AskError
from ask.checkpoints import find_checkpoints
from ask.cli import main as ask_main
from ask.service import Service
from features.extractors import GridObjectExtractor
from features.store import normalize_boxes
from lxrt import LXRTConfig, save_state_dict
from lxrt.snapshot import SnapshotFacts, write_facts
from lxrt.tokenizer import LXRTTokenizer
from tasks.flickr30k import Matcher
from tasks.models import Classifier, RegionScorer
from tasks.snli_ve import LABELS

OPTIONS = {"grid": 2, "patch": 4}  # 76-d features, 5 regions
ARGS = ["--extractor", "grid+object", "--option", "grid=2", "--option", "patch=4"]
FEAT_DIM = GridObjectExtractor(**OPTIONS).feat_dim


def _config() -> LXRTConfig:
    return LXRTConfig(hidden_size=64, num_attention_heads=2, intermediate_size=128, max_position_embeddings=40,
                      llayers=1, xlayers=1, rlayers=1, visual_feat_dim=FEAT_DIM)  # fmt: skip


def _snapshot(model: torch.nn.Module, folder: Path, task: str, outputs: int) -> Path:
    """``model`` with random weights (LayerNorms too) as ``folder/BEST.pth`` with its facts file."""
    torch.manual_seed(len(task))
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    path = save_state_dict(model.state_dict(), folder / "BEST.pth")
    write_facts(path, SnapshotFacts(task=task, model=model.config, num_outputs=outputs))
    return path


def _pictures(folder: Path) -> list[Path]:
    """Three different pictures of different sizes."""
    rng = np.random.default_rng(3)
    paths = []
    for n, (h, w) in enumerate([(90, 120), (80, 60), (100, 100)]):
        pixels = np.full((h, w, 3), 40 + 90 * n, np.uint8)
        pixels[h // 4 : h // 2, w // 3 : w - 5] = rng.integers(0, 255, (h // 2 - h // 4, w - 5 - w // 3, 3))
        paths.append(folder / f"picture{n}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def _direct(model: torch.nn.Module, image: Path, text: str) -> torch.Tensor:
    """The model's output for one (image, text) pair, computed without ``ask``."""
    picture = Image.open(image).convert("RGB")
    regions = GridObjectExtractor(**OPTIONS)(picture)
    feats = torch.from_numpy(regions.features.astype(np.float16).astype(np.float32))[None]
    boxes = torch.from_numpy(normalize_boxes(regions.boxes, picture.height, picture.width, len(regions.boxes), "t"))
    tok = LXRTTokenizer(max_length=20)([text])
    with torch.no_grad():
        return model.eval()(tok.input_ids, feats, boxes[None], tok.attention_mask, tok.token_type_ids)[0]


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    return _pictures(tmp_path_factory.mktemp("pictures"))


def test_entailment_snapshot_gives_its_three_labels(pictures, tmp_path, capsys) -> None:
    """Catches labels printed in another order than the head's rows (a wrong class name for every answer)
    and a model built for another task (a key mismatch or a wrong head)."""
    model = Classifier(_config(), len(LABELS))
    path = _snapshot(model, tmp_path / "snli_ve" / "run", "snli_ve", len(LABELS))
    assert ask_main([str(pictures[0]), "A man is sleeping.", "--load", str(path), *ARGS]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"model: {path} (snli_ve)" and printed[1] == "hypothesis: A man is sleeping."
    probs = _direct(model, pictures[0], "A man is sleeping.").softmax(-1)
    expected = sorted(zip(LABELS, probs.tolist()), key=lambda x: -x[1])
    shown = [line.split() for line in printed[2:5]]
    assert [(s[1], float(s[2])) for s in shown] == [(name, pytest.approx(p, abs=1e-3)) for name, p in expected]
    assert printed[-1].startswith("picture: ") and Path(printed[-1][9:]).is_file()


def test_retrieval_snapshot_ranks_images_and_captions(pictures, tmp_path, capsys) -> None:
    """Catches scores given to the wrong (caption, image) pair when pairs are batched, and a ranking in the
    wrong direction: every printed score and order is the matching head's on that very pair."""
    model = Matcher(_config())
    path = _snapshot(model, tmp_path / "flickr30k" / "run", "flickr30k", 2)
    captions = ["A grey square.", "Colourful noise in a box.", "Two dogs play in the snow."]
    truth = np.array([[float(_direct(model, p, c)) for p in pictures] for c in captions])
    assert np.ptp(truth, axis=1).min() > 1e-3  # the pairs differ: a ranking means something

    asker = Asker.from_checkpoint(path, extractor="grid+object", extractor_options=OPTIONS)
    result = asker.rank(pictures, captions, batch=4)  # 9 pairs over 3 batches, the last one short
    np.testing.assert_allclose(result.scores, truth, rtol=1e-4, atol=1e-5)

    assert ask_main([*map(str, pictures), captions[2], "--load", str(path), *ARGS]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1] == f"caption: {captions[2]}"
    assert [line.split()[1] for line in printed[2:5]] == [str(pictures[i]) for i in np.argsort(-truth[2])]
    assert ask_main([str(pictures[1]), *captions, "--load", str(path), *ARGS]) == 0
    printed = capsys.readouterr().out.splitlines()
    order = [captions[t] for t in np.argsort(-truth[:, 1])]
    assert printed[1] == f"image: {pictures[1]}"
    assert [line[5:].rsplit("  score", 1)[0] for line in printed[2:5]] == order
    with pytest.raises(AskError, match="ranks images against a caption"):
        asker.ask(pictures[0], "what?")


def test_referring_snapshot_draws_the_chosen_box(pictures, tmp_path, capsys) -> None:
    """Catches a box reported in the wrong format (corners instead of x, y, width, height, or fractions
    instead of pixels) and a region other than the highest-scoring one."""
    model = RegionScorer(_config())
    path = _snapshot(model, tmp_path / "refcoco" / "run", "refcoco", 1)
    inside = 0  # answers whose box does not start at the image's corner (there, corners and x, y, w, h differ)
    for picture in pictures:
        for expression in ("the noisy part", "the grey background on the left", "a dog"):
            scores = _direct(model, picture, expression)
            regions = GridObjectExtractor(**OPTIONS)(Image.open(picture).convert("RGB"))
            index = int(scores.argmax())
            x1, y1, x2, y2 = regions.boxes[index]
            inside += bool(x1 > 0 and y1 > 0)
            assert ask_main([str(picture), expression, "--load", str(path), *ARGS]) == 0
            printed = capsys.readouterr().out.splitlines()
            assert printed[1] == f"expression: {expression}"
            box = f"box x={x1:g} y={y1:g} w={x2 - x1:g} h={y2 - y1:g} (pixels)"
            assert printed[2].startswith(f"  region {index}: {box}"), (printed[2], box)
            assert printed[2].endswith(f"P = {float(scores.softmax(-1)[index]):.3f}")
            with Image.open(printed[-1][len("picture: ") :]) as im:
                assert im.format == "PNG"
    assert inside > 0


def test_the_page_serves_every_kind_of_task(pictures, tmp_path) -> None:
    """Each tab lists the snapshots of its kind and answers with them; a handler given a model of another
    kind says what that model does. Catches a retrieval or region model offered in the question tab."""
    snap = tmp_path / "snap"
    ranker = _snapshot(Matcher(_config()), snap / "flickr30k" / "r", "flickr30k", 2)
    finder = _snapshot(RegionScorer(_config()), snap / "refcoco" / "f", "refcoco", 1)
    judge = _snapshot(Classifier(_config(), 3), snap / "snli_ve" / "e", "snli_ve", 3)
    labels = dict((p, label) for label, p in find_checkpoints(snap))
    assert labels[str(ranker)].endswith("(flickr30k)") and labels[str(finder)].endswith("(refcoco)")
    service = Service(str(judge), "grid+object", OPTIONS, snap_root=str(snap))
    assert [p for _, p in service.checkpoints("gallery")] == [str(ranker)]
    assert [p for _, p in service.checkpoints("box")] == [str(finder)]
    assert [p for _, p in service.checkpoints("question")] == [str(judge)]
    assert service.checkpoints("pair") == []

    shown, status = service.rank([str(p) for p in pictures], "A grey square.", str(ranker))
    assert len(shown) == 3 and status.startswith("**image "), status
    assert [caption.split(" · ")[0] for _, caption in shown] == ["#1", "#2", "#3"]
    drawn, status = service.locate(str(pictures[0]), "the noisy part", str(finder))
    assert drawn is not None and status.startswith("**region "), status
    answers, _, status = service.answer(str(pictures[0]), "A man is sleeping.", str(judge))
    assert set(answers) == set(LABELS), status
    _, status = service.rank([str(pictures[0])], "A grey square.", str(finder))
    assert "refcoco model: it finds the region an expression names" in status
    _, status = service.locate(str(pictures[0]), "the dog", None)
    assert "no snapshot of refcoco under snap/" in status
