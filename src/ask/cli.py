"""``python -m ask IMAGE "QUESTION" ["QUESTION" ...]``: answers and PNGs, for a snapshot of any task.

What the command takes and prints follows the snapshot's task (its ``presentation``):

- one image and a question (or hypothesis): the top answers (or classes) with their probabilities;
- two images and a statement (``LEFT RIGHT "STATEMENT"``): true or false with P(true);
- retrieval (``IMAGE... "CAPTION"...``): each caption's images ranked, or, given one image, the captions;
- region selection (``IMAGE "EXPRESSION"``): the region the expression names and its box in pixels.

Each answer also goes into a PNG (the image with the regions that matter most, the text and the
answers), by default into ``<run folder>/ask/``. An image's regions are extracted once for all texts.
Without ``--load``: the best photo model under ``snap/`` (a released model once downloaded), else the
demo's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ask.asker import TOP, Asker
from ask.checkpoints import AskError
from ask.inputs import DEFAULT_MAX_PIXELS, clean_text
from features.extract import parse_option
from lxrt import CheckpointError
from tasks.registry import tasks_where


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A bad command line: one line, then exit status 2."""
        self.exit(2, f"ask: error: {clean_text(message, visible=True)} (python -m ask --help)\n")


def presented_tasks() -> list[str]:
    """The registered tasks ``ask`` presents."""
    return [c.name for c in tasks_where(lambda c: getattr(c, "presentation", None) is not None)]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m ask",
        description="Ask a trained LXMERT about pictures, as its task does: answers with probabilities (one image and "
        "a question), true or false (two images and a statement), a ranking (images and captions) or a box (an "
        "image and an expression); writes a PNG of each answer.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE... TEXT",
                   help="IMAGE \"QUESTION\" [...]; LEFT RIGHT \"STATEMENT\" [...]; IMAGE [IMAGE ...] \"CAPTION\" "
                   "[...] (retrieval); IMAGE \"EXPRESSION\" [...] (region selection)")  # fmt: skip
    p.add_argument("--load", help="task snapshot, e.g. snap/<task>/NAME/BEST, or 'demo' (default: the best photo "
                   "model under snap/, released models first; else the demo's snap/demo/BEST.pth)")  # fmt: skip
    p.add_argument("--task", help=f"a registered task ({', '.join(presented_tasks())}; default: from the snapshot's "
                   "facts file, the run's config.json or the head)")  # fmt: skip
    p.add_argument(
        "--extractor", help="registered region extractor (default: the demo's for the demo model, else butd)"
    )
    p.add_argument("--weights", help="extractor weights file (passed to the extractor as weights=PATH)")
    p.add_argument("--option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="extractor option (value parsed as JSON when it can be); repeatable")  # fmt: skip
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (it registers an extractor); repeatable")  # fmt: skip
    p.add_argument(
        "--data-root", dest="data_root", help="answer tables and the demo's data (default: the run's, or data)"
    )
    p.add_argument("--out", help="PNG to write (default: <run folder>/ask/<image>-<question>.png); with several "
                   "questions OUT-1.png, OUT-2.png, ...")  # fmt: skip
    p.add_argument("--top", type=int, default=TOP, help="answers to print (default %(default)s)")
    p.add_argument("--max-pixels", dest="max_pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse larger images (default %(default)s)")  # fmt: skip
    return p


def default_png(asker: Asker, images: Sequence[str], text: str) -> Path:
    from ask.draw import slug

    stems = "+".join(Path(i).stem for i in images)
    return asker.info.folder / "ask" / f"{slug(stems, 30)}-{slug(text)}.png"


def numbered(out: Path, index: int, count: int) -> Path:
    """``out`` for one of ``count`` answers: itself when alone, else ``OUT-<index>.png``."""
    return out if count == 1 else out.with_name(f"{out.stem}-{index}{out.suffix or '.png'}")


def timing(seconds: float, reused: bool, extract_seconds: float) -> str:
    if reused:
        return f"time: {seconds:.2f} s (regions reused: the extractor did not run)"
    return f"time: {seconds:.2f} s ({extract_seconds:.2f} s of it extracting the regions)"


def split_inputs(asker: Asker, inputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """(images, texts) of the command line, as the model's task takes them; else an :class:`AskError`."""
    shown = asker.info.presentation
    if asker.tab == "gallery":
        count = next((n for n, a in enumerate(inputs) if not Path(a).is_file()), len(inputs))
    else:
        count = 2 if asker.tab == "pair" else 1
    images, texts = list(inputs[:count]), list(inputs[count:])
    if not texts or not images or any(Path(t).is_file() for t in texts):
        word = shown.text.upper()
        usage = {"pair": f'LEFT RIGHT "{word}"', "gallery": f'IMAGE [IMAGE ...] "{word}"'}.get(asker.tab,
                                                                                            f'IMAGE "{word}"')
        given = sum(Path(a).is_file() for a in inputs) or len(images)
        raise AskError(f"a {asker.task} model takes {usage} (more {shown.text}s may follow); "
                       f"got {given} image(s) and {len(inputs) - given} text(s)")  # fmt: skip
    return images, texts


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load, answer, draw; returns what was printed as a dict (answers of each text, png paths)."""
    options = dict(args.option)
    if args.weights:
        options["weights"] = args.weights
    if args.top < 1:
        raise AskError(f"--top must be >= 1, got {args.top}")
    asker = Asker.from_checkpoint(args.load, args.task, args.extractor, options, args.data_root, args.plugin,
                                  args.max_pixels)  # fmt: skip
    print(f"model: {asker.info.path} ({asker.task})")
    images, texts = split_inputs(asker, args.inputs)
    if asker.tab == "gallery" and len(images) == 1 and len(texts) > 1:  # captions ranked against one image
        out = Path(args.out) if args.out else default_png(asker, images, texts[0])
        summaries = [rank_texts(asker, images[0], texts, out, args.top)]
    else:
        summaries = []
        for index, text in enumerate(texts, 1):
            out = numbered(Path(args.out), index, len(texts)) if args.out else default_png(asker, images, text)
            summaries.append(ANSWER[asker.tab](asker, images, text, out, args.top))
    return {**summaries[0], "results": summaries, "task": asker.task, "model": str(asker.info.path)}


def _done(seconds: float, reused: bool, extract_seconds: float, png: Path) -> None:
    print(f"  {timing(seconds, reused, extract_seconds)}")
    print(f"picture: {clean_text(str(png), visible=True)}")


def answer_question(asker: Asker, images: list[str], text: str, out: Path, top: int) -> dict[str, Any]:
    from ask.draw import answer_figure

    result = asker.ask(images[0], text, top=top)
    name = asker.info.presentation.text
    print(f"{'Q' if name == 'question' else name}: {result.question}" +
          ("  (cut to the model's length)" if result.truncated else ""))  # fmt: skip
    answers = [(clean_text(a), p) for a, p in result.answers]
    width = max(len(a) for a, _ in answers)
    for rank, (answer, prob) in enumerate(answers, 1):
        print(f"  {rank}. {answer:<{width}}  {prob:.3f}")
    png = answer_figure(result, out)
    _done(result.seconds, result.reused, result.extract_seconds, png)
    return {"answers": result.answers, "seconds": result.seconds, "reused": result.reused, "png": str(png)}


def judge_pair(asker: Asker, images: list[str], text: str, out: Path, top: int) -> dict[str, Any]:
    from ask.draw import verify_figure

    result = asker.verify(images[0], images[1], text)
    print(f"{asker.info.presentation.text}: {result.statement}")
    print(f"  {str(result.answer).lower()}  (P(true) = {result.prob_true:.3f})")
    png = verify_figure(result, out)
    _done(result.seconds, result.reused, 0.0, png)
    return {"prob_true": result.prob_true, "png": str(png)}


def _ranking(names: list[str], scores: Any, top: int) -> list[int]:
    """Print ``names`` best score first (the ``top`` of them); returns the full order."""
    order = [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")]
    for rank, i in enumerate(order[:top], 1):
        print(f"  {rank}. {names[i]}  score {scores[i]:.4f}")
    return order


def rank_images(asker: Asker, images: list[str], text: str, out: Path, top: int) -> dict[str, Any]:
    from ask.draw import rank_figure

    result = asker.rank(images, [text])
    print(f"{asker.info.presentation.text}: {result.texts[0]}")
    order = _ranking([clean_text(i, visible=True) for i in images], result.scores[0], top)
    png = rank_figure(result, out, 0, top)
    _done(result.seconds, result.reused, 0.0, png)
    return {"ranking": [images[i] for i in order], "scores": result.scores[0].tolist(), "png": str(png)}


def rank_texts(asker: Asker, image: str, texts: list[str], out: Path, top: int) -> dict[str, Any]:
    from ask.draw import text_rank_figure

    result = asker.rank([image], texts)
    print(f"image: {clean_text(image, visible=True)}")
    order = _ranking(result.texts, result.scores[:, 0], top)
    png = text_rank_figure(result, out, 0, top)
    _done(result.seconds, result.reused, 0.0, png)
    return {"ranking": [result.texts[t] for t in order], "scores": result.scores[:, 0].tolist(), "png": str(png)}


def locate_region(asker: Asker, images: list[str], text: str, out: Path, top: int) -> dict[str, Any]:
    from ask.draw import locate_figure

    result = asker.locate(images[0], text)
    print(f"{asker.info.presentation.text}: {result.expression}" +
          ("  (cut to the model's length)" if result.truncated else ""))  # fmt: skip
    x, y, w, h = result.box
    print(f"  region {result.index}: box x={x:g} y={y:g} w={w:g} h={h:g} (pixels)  P = {result.prob:.3f}")
    png = locate_figure(result, out)
    _done(result.seconds, result.reused, result.extract_seconds, png)
    return {"index": result.index, "box": result.box, "prob": result.prob, "png": str(png)}


ANSWER = {"question": answer_question, "pair": judge_pair, "gallery": rank_images, "box": locate_region}
"""How the command answers one text, by the model's tab (:data:`ask.checkpoints.TABS`)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0; 2 for bad input (one line saying what), 1 for anything else (one line too)."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (AskError, CheckpointError, OSError) as err:
        return _fail(2, str(err))
    except KeyboardInterrupt:
        return _fail(130, "interrupted")
    except Exception as err:  # a bug or a library's surprise: still one line, with what it was
        return _fail(1, f"unexpected {type(err).__name__}: {str(err).strip() or 'no message'}")
    return 0


def _fail(status: int, message: str) -> int:
    """Print ``message`` as one clean line on stderr; return ``status``."""
    print(f"ask: error: {clean_text(message.strip(), visible=True)}", file=sys.stderr)
    return status
