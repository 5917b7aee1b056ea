"""Any text given to ``ask``: bytes that are not UTF-8, control characters, terminal escape sequences
and "$" signs never crash it, never reach the terminal or the figure; every error is one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ask.asker import AskResult, ImageRegions
from ask.cli import main as ask_main
from ask.draw import answer_figure
from ask.inputs import check_text
from features.extractors import GridObjectExtractor
from lxrt import LXRTConfig, save_state_dict
from tasks.models import Classifier

REPO = Path(__file__).resolve().parents[1]
OPTIONS = ["--extractor", "grid+object", "--option", "grid=2", "--option", "patch=4", "--data-root",
           str(REPO / "data")]  # fmt: skip
CONTROL = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a VQA snapshot of a tiny model, a photo)."""
    root = tmp_path_factory.mktemp("ask_text")
    cfg = LXRTConfig(hidden_size=64, num_attention_heads=1, intermediate_size=128, max_position_embeddings=40,
                     llayers=1, xlayers=2, rlayers=1, visual_feat_dim=GridObjectExtractor(grid=2, patch=4).feat_dim)
    model = Classifier(cfg, 3129)
    torch.manual_seed(0)
    for p in model.parameters():
        p.data.normal_(0, 0.3)
    best = save_state_dict(model.state_dict(), root / "run" / "BEST.pth")
    pixels = np.full((90, 120, 3), 230, np.uint8)
    pixels[20:60, 30:80] = np.random.default_rng(0).integers(0, 255, (40, 50, 3))
    Image.fromarray(pixels).save(root / "photo.png")
    return best, root / "photo.png"


def _ask(*argv: bytes | str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ask", *argv], capture_output=True, env=env, cwd=cwd, timeout=300)


def _no_controls(data: bytes) -> bool:
    text = data.decode("utf-8")  # the output itself is valid UTF-8
    return not any(ch in text for ch in CONTROL if ch != "\n")


@pytest.mark.parametrize("question", [
    b"what \xff\xfe colour is \xc3 it?",  # bytes that are not UTF-8
    b"what \x1b[2J\x1b[31mcolour\x1b[0m\x07 is \x1b]0;owned\x07it?\r\x7f",  # escapes, BEL, CR, DEL
    b"is it $\\frac{x$ or $y$?",  # matplotlib's math syntax, unbalanced
    "rtl \u202eevil\u202c and \u200b\x9b2J c1 controls?".encode(),
], ids=["invalid-utf8", "escapes", "mathtext", "bidi-c1"])  # fmt: skip
def test_odd_question_bytes_are_answered_and_drawn(snapshot, tmp_path: Path, question: bytes) -> None:
    """The question arrives as raw bytes on the command line: answers and a PNG, exit status 0,
    nothing on stderr, no control character on the terminal. Invalid UTF-8 used to crash matplotlib
    after the answers were printed (exit 1, no PNG); escapes were printed as they are."""
    best, photo = snapshot
    png = tmp_path / "answer.png"
    done = _ask(str(photo), question, "--load", str(best), *OPTIONS, "--out", str(png), cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode(errors="replace")[-2000:]
    assert _no_controls(done.stdout), done.stdout
    first = done.stdout.decode().splitlines()[1]  # after the model line
    assert first.startswith("Q: ") and "\udcff" not in first
    if b"\xff" in question:
        assert first == "Q: what \ufffd\ufffd colour is \ufffd it?"
    with Image.open(png) as im:
        assert im.format == "PNG"


def test_clean_text_keeps_text_and_removes_what_a_terminal_acts_on() -> None:
    from ask.inputs import clean_text

    assert clean_text("Was ist das? 这是什么 🐱 café") == "Was ist das? 这是什么 🐱 café"
    assert clean_text("a\x1b[31mred\x1b[0m\tb\x07\x00c\u202e") == "ared bc"
    assert clean_text(os.fsdecode(b"bad \xff")) == "bad \ufffd"
    assert clean_text("\ud800 lone") == "\ufffd lone"
    assert clean_text("x\x1b[2Jy.png", visible=True) == "x\\x1b[2Jy.png"
    assert check_text("  what\n\x1b[1mis\x1b[0m  it? ") == "what is it?"
    with pytest.raises(Exception, match="empty question"):
        check_text("\x1b[2J\x07 \x00")


def test_figure_of_any_text(tmp_path: Path) -> None:
    """The PNG draws any question and answer: invalid bytes, controls and "$" (a ValueError or
    TypeError from matplotlib before)."""
    regions = ImageRegions(Image.new("RGB", (40, 30)), np.asarray([[0, 0, 10, 10]], np.float32), None, None)
    result = AskResult(os.fsdecode(b"why \xff $\\frac{ \x1b[31m?"), [("$\\frac{", 0.6), ("a\x07b", 0.4)], regions,
                       "vqa", 0.01)  # fmt: skip
    with Image.open(answer_figure(result, tmp_path / "odd.png")) as im:
        assert im.format == "PNG"


def test_every_error_is_one_line(snapshot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Bad flags, a file name with escape sequences, an unwritable --out and an unexpected error
    inside: one line on stderr each (shown with visible escapes), no traceback."""
    best, photo = snapshot
    with pytest.raises(SystemExit) as exit_:
        ask_main([str(photo), "what?", "--top", "many"])
    assert exit_.value.code == 2
    escaped = tmp_path / "x\x1b[2Jy.png"
    cases = [
        ([str(escaped), "what?", "--load", str(best), *OPTIONS], "x\\x1b[2Jy.png: cannot read the file"),
        ([str(photo), "what?", "--load", str(best), *OPTIONS, "--out", "/proc/none/a.png"], "/proc/none"),
    ]
    for argv, _ in cases:
        assert ask_main(argv) == 2
    for (_, words), err in zip([(None, "argument --top: invalid int value: 'many'"), *cases],
                               capsys.readouterr().err.splitlines(keepends=True), strict=True):  # fmt: skip
        assert err.startswith("ask: error: ") and words in err and "\x1b" not in err, err

    import ask.draw

    def broken(*args, **kwargs):
        raise TypeError("set_text() argument 1 must be str\nsecond line")

    monkeypatch.setattr(ask.draw, "answer_figure", broken)
    assert ask_main([str(photo), "what?", "--load", str(best), *OPTIONS]) == 1
    err = capsys.readouterr().err
    assert err == "ask: error: unexpected TypeError: set_text() argument 1 must be str\\nsecond line\n", err

