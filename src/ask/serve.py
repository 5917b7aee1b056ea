"""A local page to ask LXMERT about pictures: ``python -m ask.serve [--load ...] [--port 7860]``.

:class:`Service` holds the handlers (plain Python, tested without a browser): one
:class:`ask.Asker` per snapshot, loaded on first use and kept, and every failure turned into a
message for the page. :func:`build_page` lays them out with Gradio (installed on first use by
``run/serve.bash`` from ``requirements-serve.txt``): a question tab (image, question, model picker
-> top-5 bars, the image with its strongest regions, a status line) and an NLVR2 tab (two images
and a statement -> true/false). Requests queue, one at a time per tab.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ask.asker import Asker
from ask.checkpoints import DEMO_CHECKPOINT, AskError, find_checkpoints, read_run_config
from ask.draw import overlay
from ask.inputs import DEFAULT_MAX_PIXELS, clean_text
from features.extract import parse_option
from lxrt import CheckpointError

log = logging.getLogger("lxmert.serve")
EASY_VQA_EXAMPLES = (
    ("test", 0, "What color is the shape?"),
    ("test", 1, "What shape is in the image?"),
    ("test", 2, "Is there a blue shape in the image?"),
    ("test", 3, "Does the image not contain a circle?"),
)
PHOTO_EXAMPLES = (("astronaut", "What is the person wearing?"), ("coffee", "What is in the cup?"),
                  ("chelsea", "What animal is this?"))  # fmt: skip
NO_ANSWER: dict[str, float] = {}


def upload_path(value: Any) -> Any:
    """The file path inside a Gradio file payload (dict or object with ``path``), else ``value``."""
    if isinstance(value, Mapping):
        return value.get("path")
    path = getattr(value, "path", None)
    return path if isinstance(path, str) else value


class Service:
    """The page's handlers: snapshots loaded once and cached, errors returned as messages.

    ``allowed`` lists the folders that uploaded or example files may come from (a client names the
    file it sent by path; anything else is refused).
    """

    def __init__(
        self,
        load: str | None = None,
        extractor: str | None = None,
        extractor_options: Mapping[str, Any] | None = None,
        plugins: Sequence[str] = (),
        data_root: str | None = None,
        snap_root: str = "snap",
        allowed: Sequence[str | Path] = (),
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.default = str(load) if load else str(DEMO_CHECKPOINT)
        self.extractor = extractor
        self.extractor_options = dict(extractor_options or {})
        self.plugins = list(plugins)
        self.data_root = data_root
        self.snap_root = snap_root
        self.allowed = [Path(p).resolve() for p in allowed]
        self.max_pixels = max_pixels
        self._askers: dict[str, Asker] = {}
        self._known = {self.default}  # the snapshots a request may name: the served one and the picker's
        self._lock = threading.Lock()

    # -- models
    def checkpoints(self, nlvr2: bool = False) -> list[tuple[str, str]]:
        """``(label, path)`` of the snapshots under the snap folder for one tab; the default first."""
        found = [c for c in find_checkpoints(self.snap_root) if ("(nlvr2)" in c[0]) == nlvr2]
        if not nlvr2 and not any(Path(p) == Path(self.default) for _, p in found):
            found.insert(0, (self.default, self.default))
        found.sort(key=lambda c: Path(c[1]) != Path(self.default))
        self._known.update(p for _, p in found)
        return found

    def asker(self, load: str | None) -> Asker:
        """The snapshot ``load`` (default: the served one), loaded on first use."""
        key = str(load or self.default)
        if key not in self._known:
            raise AskError(f"{key}: not one of the models listed on the page")
        with self._lock:
            if key not in self._askers:
                run = read_run_config(Path(key).parent) if Path(key).parent.is_dir() else None
                demo = run is not None and run.task == "easy_vqa"
                self._askers[key] = Asker.from_checkpoint(
                    key,
                    None,
                    None if demo else self.extractor,
                    None if demo else self.extractor_options,
                    self.data_root,
                    self.plugins,
                    self.max_pixels,
                )
                log.info(f"loaded {key} ({self._askers[key].task})")
            return self._askers[key]

    def _image(self, value: Any, what: str) -> Any:
        value = upload_path(value)
        if value is None:
            raise AskError(f"no {what}: upload one or click an example")
        if isinstance(value, str) and self.allowed:
            path = Path(value).resolve()
            if not any(path.is_relative_to(root) for root in self.allowed):
                raise AskError(f"{what}: not an uploaded file")
        return value

    # -- handlers
    def answer(
        self, image: Any, question: str, load: str | None = None
    ) -> tuple[dict[str, float], Image.Image | None, str]:
        """(answer -> probability for the top 5, the image with its regions, a status line)."""
        try:
            picture = self._image(image, "image")
            asker = self.asker(load)
            with self._lock:
                result = asker.ask(picture, question)
        except (AskError, CheckpointError, OSError) as err:
            return NO_ANSWER, None, f"⚠️ {clean_text(str(err), visible=True)}"
        except Exception as err:  # the page keeps serving; the log has the traceback
            log.exception("answering failed")
            return NO_ANSWER, None, f"⚠️ internal error: {type(err).__name__}: {err}"
        first, prob = result.answers[0]
        status = f"**{first}** ({prob:.1%}) for “{result.question}” · {result.seconds * 1000:.0f} ms"
        if result.truncated:
            status += " · the question was cut to the model's length"
        return dict(result.answers), overlay(result.regions), status

    def verify(
        self, left: Any, right: Any, statement: str, load: str | None = None
    ) -> tuple[dict[str, float], Image.Image | None, Image.Image | None, str]:
        """({"true": p, "false": 1 - p}, both images with their regions, a status line)."""
        try:
            if not load:
                raise AskError("no NLVR2 snapshot under snap/: fine-tune one with bash run/nlvr2_finetune.bash")
            a, b = self._image(left, "left image"), self._image(right, "right image")
            asker = self.asker(load)
            with self._lock:
                result = asker.verify(a, b, statement)
        except (AskError, CheckpointError, OSError) as err:
            return NO_ANSWER, None, None, f"⚠️ {clean_text(str(err), visible=True)}"
        except Exception as err:
            log.exception("judging failed")
            return NO_ANSWER, None, None, f"⚠️ internal error: {type(err).__name__}: {err}"
        verdict = {"true": result.prob_true, "false": 1.0 - result.prob_true}
        status = f"**{str(result.answer).lower()}** (P(true) {result.prob_true:.1%}) · {result.seconds * 1000:.0f} ms"
        return verdict, overlay(result.left), overlay(result.right), status


def example_images(folder: Path) -> tuple[list[list[str]], list[str]]:
    """``([[image, question], ...], [photo, ...])``: easy-VQA test images (when the package is
    installed) and real photos of ``skimage.data`` (when scikit-image is), written under ``folder``."""
    examples: list[list[str]] = []
    try:
        from demo.easy_vqa_data import image_path

        examples += [[str(image_path(f"{split}_{n}")), q] for split, n, q in EASY_VQA_EXAMPLES]
    except (ImportError, ValueError):
        pass
    photos: list[str] = []
    try:
        import skimage.data as photos_module
    except ImportError:
        photos_module = None
    if photos_module is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, question in PHOTO_EXAMPLES:
            path = folder / f"{name}.png"
            try:
                if not path.is_file():
                    Image.fromarray(np.asarray(getattr(photos_module, name)())).save(path)
            except Exception as err:  # a photo that cannot be made is left out
                log.warning(f"example photo {name}: {err}")
                continue
            examples.append([str(path), question])
            photos.append(str(path))
    return examples, photos


def upload_roots() -> list[str]:
    """The folder Gradio keeps uploads and copies of the examples in (its ``get_upload_folder``)."""
    return [os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")]


def build_page(service: Service, examples_dir: Path | None = None) -> Any:
    """The Gradio page over ``service``'s handlers."""
    import gradio as gr

    folder = examples_dir or Path(tempfile.gettempdir()) / "lxmert-serve-examples"
    examples, photos = example_images(folder)
    qa_models, nlvr2_models = service.checkpoints(), service.checkpoints(nlvr2=True)
    with gr.Blocks(title="Ask LXMERT") as page:
        gr.Markdown("## Ask LXMERT about a picture\nUpload an image (or click an example), type a question, "
                    "press **Ask**. Boxes: the regions the question's [CLS] attends to most in the last "
                    "cross-modality layer (red: the strongest).")  # fmt: skip
        with gr.Tab("Question"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(label="image", type="filepath", sources=["upload", "clipboard"], elem_id="image")
                    question = gr.Textbox(label="question", placeholder="What color is the shape?", elem_id="question")
                    model = gr.Dropdown(qa_models, value=qa_models[0][1] if qa_models else None, label="model",
                                        elem_id="model")  # fmt: skip
                    ask = gr.Button("Ask", variant="primary", elem_id="ask")
                with gr.Column():
                    status = gr.Markdown(elem_id="status")
                    answers = gr.Label(num_top_classes=5, label="top-5 answers", elem_id="answers")
                    regions = gr.Image(label="regions", type="pil", interactive=False, elem_id="regions")
            if examples:
                gr.Examples(examples, inputs=[image, question], label="examples")
            inputs = [image, question, model]
            outputs = [answers, regions, status]
            ask.click(service.answer, inputs, outputs, preprocess=False, concurrency_id="ask")
            question.submit(service.answer, inputs, outputs, preprocess=False, concurrency_id="ask")
        with gr.Tab("NLVR2: true or false?"):
            with gr.Row():
                left = gr.Image(label="left image", type="filepath", sources=["upload"], elem_id="left")
                right = gr.Image(label="right image", type="filepath", sources=["upload"], elem_id="right")
            statement = gr.Textbox(label="statement", placeholder="There are two dogs in total.", elem_id="statement")
            pair_model = gr.Dropdown(nlvr2_models, value=nlvr2_models[0][1] if nlvr2_models else None,
                                     label="model (NLVR2 snapshots under snap/)", elem_id="pair_model")  # fmt: skip
            judge = gr.Button("Judge", variant="primary", elem_id="judge")
            pair_status = gr.Markdown(elem_id="pair_status")
            verdict = gr.Label(num_top_classes=2, label="judgement", elem_id="verdict")
            with gr.Row():
                left_regions = gr.Image(label="left: regions", type="pil", interactive=False)
                right_regions = gr.Image(label="right: regions", type="pil", interactive=False)
            if len(photos) >= 2:
                gr.Examples([[photos[0], photos[1], "There is a person in the left image."]],
                            inputs=[left, right, statement], label="examples")  # fmt: skip
            judge.click(service.verify, [left, right, statement, pair_model],
                        [verdict, left_regions, right_regions, pair_status], preprocess=False,
                        concurrency_id="judge")  # fmt: skip
    page.queue(default_concurrency_limit=1)
    return page


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ask.serve",
        description="Serve a local web page that asks LXMERT about pictures (Gradio). Bound to 127.0.0.1 "
        "unless --host is given.",
    )
    p.add_argument("--load", help="snapshot selected first (default: the demo's snap/demo/BEST.pth)")
    p.add_argument("--extractor", help="region extractor for snapshots other than the demo's (default butd)")
    p.add_argument("--weights", help="extractor weights file (passed as weights=PATH)")
    p.add_argument("--option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="extractor option; repeatable")  # fmt: skip
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE first; repeatable")
    p.add_argument("--data-root", dest="data_root", help="answer tables and the demo's data (default: the run's)")
    p.add_argument("--snap", default="snap", help="folder searched for BEST.pth files for the model picker")
    p.add_argument("--port", type=int, default=7860, help="port (default %(default)s)")
    p.add_argument("--host", nargs="?", const="0.0.0.0", default="127.0.0.1",
                   help="listen on this address (bare --host: every interface; default 127.0.0.1)")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    options = dict(args.option)
    if args.weights:
        options["weights"] = args.weights
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("ask.serve: error: Gradio is not installed: bash run/serve.bash installs it (requirements-serve.txt)",
              file=sys.stderr)  # fmt: skip
        return 2
    service = Service(args.load, args.extractor, options, args.plugin, args.data_root, args.snap,
                      allowed=upload_roots())  # fmt: skip
    try:
        start = time.perf_counter()
        service.asker(None)  # load the selected model now: a bad one is reported before serving
        log.info(f"model ready in {time.perf_counter() - start:.1f} s")
    except (AskError, CheckpointError, OSError) as err:
        print(f"ask.serve: error: {err}", file=sys.stderr)
        return 2
    page = build_page(service)
    host = "127.0.0.1" if args.host in ("127.0.0.1", "localhost") else args.host
    print(f"serving on http://{host if host != '0.0.0.0' else '127.0.0.1'}:{args.port}  (Ctrl-C stops)", flush=True)
    page.launch(server_name=host, server_port=args.port, ssr_mode=False, quiet=True, max_file_size="50mb",
                allowed_paths=[str(p) for p in service.allowed])  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
