"""``python -m ask IMAGE "QUESTION" ["QUESTION" ...]`` (NLVR2: ``LEFT RIGHT "STATEMENT"``): answers and PNGs.

Prints the top answers of each question with their probabilities and the time it took, and writes
a PNG per question of the image with the regions that matter most, the question and the answers,
by default into ``<run folder>/ask/``. The image's regions are extracted once for all questions.
Without ``--load``: the best photo model under ``snap/`` (the released VQA model once downloaded),
else the demo's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ask.asker import TOP, Asker
from ask.checkpoints import AskError
from ask.inputs import DEFAULT_MAX_PIXELS, clean_text
from features.extract import parse_option
from lxrt import CheckpointError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A bad command line: one line, then exit status 2."""
        self.exit(2, f"ask: error: {clean_text(message, visible=True)} (python -m ask --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m ask",
        description="Ask a trained LXMERT about a picture: prints the top answers with probabilities and writes "
        "a PNG (the image with the regions the question attends to most, the question, the answers). "
        "NLVR2 models take two images and a statement and say true or false.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE... TEXT",
                   help="IMAGE \"QUESTION\" [\"QUESTION\" ...] (VQA, GQA, demo) or LEFT RIGHT \"STATEMENT\" [...] "
                   "(NLVR2)")  # fmt: skip
    p.add_argument("--load", help="task snapshot, e.g. snap/vqa/NAME/BEST, or 'demo' (default: the best photo model "
                   "under snap/, the released VQA model first; else the demo's snap/demo/BEST.pth)")  # fmt: skip
    p.add_argument("--task", help="vqa, gqa, nlvr2 or demo (default: from the run's config.json or the head)")
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load, answer, draw; returns what was printed as a dict (answers of each question, png paths)."""
    from ask.draw import answer_figure, verify_figure

    options = dict(args.option)
    if args.weights:
        options["weights"] = args.weights
    if args.top < 1:
        raise AskError(f"--top must be >= 1, got {args.top}")
    asker = Asker.from_checkpoint(args.load, args.task, args.extractor, options, args.data_root, args.plugin,
                                  args.max_pixels)  # fmt: skip
    print(f"model: {asker.info.path} ({asker.task})")
    wanted = 2 if asker.task == "nlvr2" else 1
    images, texts = args.inputs[:wanted], args.inputs[wanted:]
    if len(args.inputs) <= wanted or any(Path(t).is_file() for t in texts):
        usage = 'LEFT RIGHT "STATEMENT"' if wanted == 2 else 'IMAGE "QUESTION"'
        given = sum(Path(a).is_file() for a in args.inputs) or len(images)
        raise AskError(f"a {asker.task} model takes {usage} (more texts may follow); got {given} image(s) and "
                       f"{len(args.inputs) - given} text(s)")  # fmt: skip
    summaries: list[dict[str, Any]] = []
    for index, text in enumerate(texts, 1):
        out = numbered(Path(args.out), index, len(texts)) if args.out else default_png(asker, images, text)
        if asker.task == "nlvr2":
            result = asker.verify(images[0], images[1], text)
            print(f"statement: {result.statement}")
            print(f"  {str(result.answer).lower()}  (P(true) = {result.prob_true:.3f})")
            png = verify_figure(result, out)
            summary: dict[str, Any] = {"prob_true": result.prob_true}
        else:
            result = asker.ask(images[0], text, top=args.top)
            print(f"Q: {result.question}" + ("  (cut to the model's length)" if result.truncated else ""))
            answers = [(clean_text(a), p) for a, p in result.answers]
            width = max(len(a) for a, _ in answers)
            for rank, (answer, prob) in enumerate(answers, 1):
                print(f"  {rank}. {answer:<{width}}  {prob:.3f}")
            png = answer_figure(result, out)
            summary = {"answers": result.answers, "seconds": result.seconds, "reused": result.reused}
        print(f"  {timing(result.seconds, result.reused, getattr(result, 'extract_seconds', 0.0))}")
        print(f"picture: {clean_text(str(png), visible=True)}")
        summaries.append({**summary, "png": str(png)})
    return {**summaries[0], "results": summaries, "task": asker.task, "model": str(asker.info.path)}


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
