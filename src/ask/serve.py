"""A local page to ask LXMERT about pictures: ``python -m ask.serve [--load ...] [--port 7860]``.

:class:`Service` holds the handlers (plain Python, tested without a browser): one
:class:`ask.Asker` per snapshot, loaded on first use and kept, one region cache shared by all of
them, and every failure turned into a message for the page that names what was wrong (uploads by
their file name, never by the server's temporary path). :func:`build_page` lays them out with
Gradio (installed on first use by ``run/serve.bash`` from ``requirements-serve.txt``), one tab per
kind of task (:data:`ask.checkpoints.TABS`, from each task's ``presentation``): a question tab (image,
question, model picker with a refresh button -> top-5 bars, the image with its strongest regions, a
status line; examples that fit the chosen model), a true-or-false tab (two images and a statement),
a retrieval tab (images and a caption -> the images ranked) and a region tab (an image and an
expression -> the chosen box). Each tab's picker lists the snapshots of its kind. Requests queue, one
at a time per tab; a request whose page asks a newer question or is closed is cancelled, so the next
one starts at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ask.asker import Asker
from ask.cache import RegionCache
from ask.cancel import Cancelled
from ask.checkpoints import (
    DEMO_CHECKPOINT,
    NO_MODEL_HINT,
    PHOTO_FEAT_DIM,
    TABS,
    AskError,
    default_checkpoint,
    describe_snapshot,
    find_snapshots,
    find_task,
    read_run_config,
    run_task,
    tab_of,
)
from ask.draw import overlay
from ask.inputs import DEFAULT_MAX_PIXELS, clean_text
from features.extract import parse_option
from lxrt import CheckpointError
from tasks.registry import tasks_where

log = logging.getLogger("lxmert.serve")
PHOTO_EXAMPLES = (("astronaut", "What is the person wearing?"), ("coffee", "What is in the cup?"),
                  ("chelsea", "What animal is this?"))  # fmt: skip
NO_ANSWER: dict[str, float] = {}
CANCELLED = "cancelled: a newer request from this page, or the page was closed"
PAGE_CSS = """
#image img, #regions img, #left img, #right img, #left_regions img, #right_regions img, #box_image img, #box img {
    width: 100%; height: 100%; object-fit: contain; image-rendering: auto;
}
"""
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(/[^\s:'\"`,;()]+)")


def upload_path(value: Any) -> Any:
    """The file path inside a Gradio file payload (dict or object with ``path``), else ``value``."""
    if isinstance(value, Mapping):
        return value.get("path")
    path = getattr(value, "path", None)
    return path if isinstance(path, str) else value


class Service:
    """The page's handlers: snapshots loaded once and cached, errors returned as messages.

    ``allowed`` lists the folders that uploaded or example files may come from (a client names the
    file it sent by path; anything else is refused). ``load`` None: the best photo model under
    ``snap_root`` (else the demo's). A request made with a ``session`` (the page's) is cancelled by
    :meth:`abandon` of that session, or by the next request of the same session.
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
        found = default_checkpoint(snap_root) if not load else None
        self.default = str(load) if load else str(found or Path(snap_root) / DEMO_CHECKPOINT.relative_to("snap"))
        self.extractor = extractor
        self.extractor_options = dict(extractor_options or {})
        self.plugins = list(plugins)
        self.data_root = data_root
        self.snap_root = snap_root
        self.allowed = [Path(p).resolve() for p in allowed]
        self.max_pixels = max_pixels
        self.cache = RegionCache()
        self._askers: dict[str, Asker] = {}
        self._known = {self.default}  # the snapshots a request may name: the served one and the picker's
        self._lock = threading.Lock()
        self._sessions: dict[str, threading.Event] = {}  # page session -> cancel flag of its request in progress
        self._sessions_lock = threading.Lock()

    # -- models
    def checkpoints(self, tab: str = "question") -> list[tuple[str, str]]:
        """``(label, path)`` of the snapshots under the snap folder for one tab (:data:`ask.checkpoints.TABS`),
        read afresh (a model trained while the page runs appears); the default first."""
        found = [(s.label, str(s.path)) for s in find_snapshots(self.snap_root) if s.tab == tab]
        if tab == "question" and not any(Path(p) == Path(self.default) for _, p in found):
            found.insert(0, (self.default, self.default))
        found.sort(key=lambda c: Path(c[1]) != Path(self.default))
        self._known.update(p for _, p in found)
        return found

    def kind(self, load: str | None) -> str:
        """What pictures the model ``load`` reads: ``own`` (its task's own, e.g. the demo's shapes), ``photos``
        (the detector's features) or ``other`` (another extractor's, or unknown)."""
        summary = describe_snapshot(Path(load or self.default))
        if summary.presentation is not None and not summary.presentation.photos:
            return "own"
        return "photos" if summary.feat_dim == PHOTO_FEAT_DIM and summary.problem is None else "other"

    def own_examples(self, load: str | None) -> list[list[str]]:
        """``[[image, text], ...]``: the examples the task of ``load`` offers (none for most tasks)."""
        summary = describe_snapshot(Path(load or self.default))
        return [] if summary.task is None else [list(e) for e in find_task(summary.task).ask_examples()]

    def asker(self, load: str | None) -> Asker:
        """The snapshot ``load`` (default: the served one), loaded on first use."""
        key = str(load or self.default)
        if key not in self._known:
            raise AskError(f"{key}: not one of the models listed on the page")
        with self._lock:
            if key not in self._askers:
                run = read_run_config(Path(key).parent) if Path(key).parent.is_dir() else None
                task = run_task(run) or describe_snapshot(Path(key)).task
                own = task is not None and not find_task(task).presentation.photos  # type: ignore[union-attr]
                if not Path(key).is_file() and Path(key) == Path(self.default) and run is None:
                    raise AskError(f"no model at {key}: {NO_MODEL_HINT}")
                self._askers[key] = Asker.from_checkpoint(
                    key,
                    None,
                    None if own else self.extractor,
                    None if own else self.extractor_options,
                    self.data_root,
                    self.plugins,
                    self.max_pixels,
                    self.cache,
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

    def public(self, message: str) -> str:
        """``message`` without the server's paths: a file under the upload or temporary folders by its name,
        one under the working folder relative to it."""
        roots = [*self.allowed, Path(tempfile.gettempdir()).resolve()]
        cwd = Path.cwd().resolve()

        def shorten(match: re.Match) -> str:
            path = Path(match.group(1))
            try:
                resolved = path.resolve()
            except (OSError, RuntimeError):
                return match.group(1)
            if any(resolved.is_relative_to(root) for root in roots):
                return path.name
            if resolved.is_relative_to(cwd):
                return str(resolved.relative_to(cwd))
            return match.group(1)

        return _ABSOLUTE_PATH.sub(shorten, message)

    # -- requests of a page session
    def abandon(self, session: str | None) -> None:
        """Cancel the request in progress of page ``session`` (it asked a newer question, or was closed)."""
        if session is None:
            return
        with self._sessions_lock:
            event = self._sessions.get(session)
        if event is not None:
            event.set()
            log.info(f"cancelling the request of page session {session[:8]}")

    @contextmanager
    def _request(self, session: str | None) -> Iterator[threading.Event | None]:
        if session is None:
            yield None
            return
        event = threading.Event()
        with self._sessions_lock:
            previous = self._sessions.get(session)
            if previous is not None:
                previous.set()
            self._sessions[session] = event
        try:
            yield event
        finally:
            with self._sessions_lock:
                if self._sessions.get(session) is event:
                    del self._sessions[session]

    # -- handlers
    def _run(self, session: str | None, what: str, empty: tuple, work: Callable[[Any], tuple]) -> tuple:
        """``work(cancel)`` for page ``session`` (a newer request of the session cancels it); a failure is
        ``empty`` plus a status line that names what was wrong (never a server path)."""
        try:
            with self._request(session) as cancel:
                return work(cancel)
        except Cancelled:
            return (*empty, CANCELLED)
        except (AskError, CheckpointError, OSError) as err:
            return (*empty, f"⚠️ {self.public(clean_text(str(err), visible=True))}")
        except Exception as err:  # the page keeps serving; the log has the traceback
            log.exception(f"{what} failed")
            return (*empty, f"⚠️ internal error: {type(err).__name__}: {self.public(str(err))}")

    def _asker_for(self, load: str | None, tab: str) -> Asker:
        if not load and tab != "question":
            raise AskError(no_model(tab))
        return self.asker(load)

    def answer(
        self, image: Any, question: str, load: str | None = None, session: str | None = None
    ) -> tuple[dict[str, float], Image.Image | None, str]:
        """(answer -> probability for the top 5, the image with its regions, a status line)."""

        def work(cancel: Any) -> tuple:
            picture, asker = self._image(image, "image"), self._asker_for(load, "question")
            with self._lock:
                result = asker.ask(picture, question, cancel=cancel)
            first, prob = result.answers[0]
            status = f"**{first}** ({prob:.1%}) for “{result.question}” · {result.seconds * 1000:.0f} ms"
            if result.reused:
                status += " (regions reused)"
            if result.truncated:
                status += " · the question was cut to the model's length"
            return dict(result.answers), overlay(result.regions), status

        return self._run(session, "answering", (NO_ANSWER, None), work)

    def verify(
        self, left: Any, right: Any, statement: str, load: str | None = None, session: str | None = None
    ) -> tuple[dict[str, float], Image.Image | None, Image.Image | None, str]:
        """({"true": p, "false": 1 - p}, both images with their regions, a status line)."""

        def work(cancel: Any) -> tuple:
            a, b = self._image(left, "left image"), self._image(right, "right image")
            asker = self._asker_for(load, "pair")
            with self._lock:
                result = asker.verify(a, b, statement, cancel=cancel)
            verdict = {"true": result.prob_true, "false": 1.0 - result.prob_true}
            status = f"**{str(result.answer).lower()}** (P(true) {result.prob_true:.1%})"
            return verdict, overlay(result.left), overlay(result.right), f"{status} · {result.seconds * 1000:.0f} ms"

        return self._run(session, "judging", (NO_ANSWER, None, None), work)

    def rank(
        self, images: Any, caption: str, load: str | None = None, session: str | None = None
    ) -> tuple[list[tuple[Image.Image, str]], str]:
        """(the images, best match first, each captioned with its rank and score; a status line)."""

        def work(cancel: Any) -> tuple:
            files = [self._image(f, "image") for f in (images or [])]
            if not files:
                raise AskError("no images: upload two or more")
            asker = self._asker_for(load, "gallery")
            with self._lock:
                result = asker.rank(files, [caption], cancel=cancel)
            order = result.ranking(0)
            shown = [(result.images[i].image, f"#{r} · image {i + 1} · score {result.scores[0, i]:.3f}")
                     for r, i in enumerate(order, 1)]  # fmt: skip
            status = f"**image {order[0] + 1}** matches best · {len(order)} images"
            return shown, f"{status} · {result.seconds * 1000:.0f} ms"

        return self._run(session, "ranking", ([],), work)

    def locate(
        self, image: Any, expression: str, load: str | None = None, session: str | None = None
    ) -> tuple[Image.Image | None, str]:
        """(the image with the chosen region in red and the runners-up, a status line with its box)."""

        def work(cancel: Any) -> tuple:
            picture, asker = self._image(image, "image"), self._asker_for(load, "box")
            with self._lock:
                result = asker.locate(picture, expression, cancel=cancel)
            x, y, w, h = result.box
            status = (f"**region {result.index}** ({result.prob:.1%}): x {x:.0f}, y {y:.0f}, w {w:.0f}, h {h:.0f} px · "
                      f"{result.seconds * 1000:.0f} ms")  # fmt: skip
            return overlay(result.regions), status

        return self._run(session, "locating", (None,), work)


def no_model(tab: str) -> str:
    """The message of a tab without any snapshot: which tasks would serve it and how to train one."""
    tasks = [c.name for c in tasks_where(lambda c: getattr(c, "presentation", None) is not None
                                         and tab_of(c.presentation) == tab)]  # fmt: skip
    runs = " or ".join(f"bash run/{t}_finetune.bash" for t in tasks) or "a task of this kind"
    return f"no snapshot of {', '.join(tasks) or 'such a task'} under snap/: fine-tune one ({runs})"


def photo_examples(folder: Path) -> list[list[str]]:
    """``[[photo, question], ...]`` of ``skimage.data`` photos written under ``folder`` (empty without
    scikit-image)."""
    try:
        import skimage.data as photos_module
    except ImportError:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    found = []
    for name, question in PHOTO_EXAMPLES:
        path = folder / f"{name}.png"
        try:
            if not path.is_file():
                Image.fromarray(np.asarray(getattr(photos_module, name)())).save(path)
        except Exception as err:  # a photo that cannot be made is left out
            log.warning(f"example photo {name}: {err}")
            continue
        found.append([str(path), question])
    return found


def examples_note(kind: str, have: Mapping[str, bool]) -> str:
    """The line above the examples: empty when they fit the model, else a plain warning."""
    if kind == "other":
        return ("⚠️ This model reads region features of another extractor than the examples' (photos for the "
                "detector, the task's own pictures for the demo): upload pictures of the kind it was trained on.")
    if not have.get(kind):
        what = "photos (scikit-image is not installed)" if kind == "photos" else "its task (its package is missing)"
        return f"⚠️ No examples of {what}: upload a picture."
    return ""


def upload_roots() -> list[str]:
    """The folder Gradio keeps uploads and copies of the examples in (its ``get_upload_folder``)."""
    return [os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")]


def own_examples() -> list[list[str]]:
    """``[[image, text], ...]`` the question tab offers for models that read their task's own pictures."""
    tasks = tasks_where(lambda c: getattr(c, "presentation", None) is not None and not c.presentation.photos
                        and tab_of(c.presentation) == "question")  # fmt: skip
    return [list(example) for cls in tasks for example in cls.ask_examples()]


def build_page(service: Service, examples_dir: Path | None = None) -> Any:
    """The Gradio page over ``service``'s handlers: a tab per kind of task."""
    import gradio as gr

    folder = examples_dir or Path(tempfile.gettempdir()) / "lxmert-serve-examples"
    own, photos = own_examples(), photo_examples(folder)
    have = {"own": bool(own), "photos": bool(photos)}
    models = {tab: service.checkpoints(tab) for tab in TABS}
    first_kind = service.kind(models["question"][0][1] if models["question"] else None)

    def session_of(request: Any) -> str | None:
        return getattr(request, "session_hash", None)

    def answer(image: Any, question: str, load: str | None, request: gr.Request):  # noqa: ANN202
        return service.answer(image, question, load, session_of(request))

    def verify(left: Any, right: Any, statement: str, load: str | None, request: gr.Request):  # noqa: ANN202
        return service.verify(left, right, statement, load, session_of(request))

    def rank(images: Any, caption: str, load: str | None, request: gr.Request):  # noqa: ANN202
        return service.rank(images, caption, load, session_of(request))

    def locate(image: Any, expression: str, load: str | None, request: gr.Request):  # noqa: ANN202
        return service.locate(image, expression, load, session_of(request))

    def abandon(request: gr.Request) -> None:
        service.abandon(session_of(request))

    for handler in (answer, verify, rank, locate, abandon):  # Gradio passes the request to a parameter typed gr.Request
        handler.__annotations__ = {"request": gr.Request}

    def examples_for(load: str | None) -> tuple[Any, Any, Any]:
        kind = service.kind(load)
        note = examples_note(kind, have)
        return (gr.update(visible=kind == "own" and have["own"]),
                gr.update(visible=kind == "photos" and have["photos"]),
                gr.update(value=note, visible=bool(note)))  # fmt: skip

    pickers: dict[str, Any] = {}

    def refresh(*current: str | None) -> tuple[Any, ...]:
        updates = []
        for tab, chosen in zip(TABS, current):
            found = service.checkpoints(tab)
            keep = chosen if any(p == chosen for _, p in found) else (found[0][1] if found else None)
            updates.append(gr.update(choices=found, value=keep))
        return tuple(updates)

    def picker(tab: str, label: str, elem_id: str, **options: Any) -> Any:
        found = models[tab]
        pickers[tab] = gr.Dropdown(found, value=found[0][1] if found else None, label=label, elem_id=elem_id,
                                   **options)  # fmt: skip
        return pickers[tab]

    def queued(button: Any, handler: Any, inputs: list, outputs: list, name: str, *more: Any) -> None:
        """First, outside the queue: stop this page's request in progress; then queue the new one."""
        for trigger in (button.click, *more):
            trigger(abandon, None, None, queue=False, show_progress="hidden", trigger_mode="multiple").then(
                handler, inputs, outputs, preprocess=False, concurrency_id=name, trigger_mode="always_last"
            )  # fmt: skip

    with gr.Blocks(title="Ask LXMERT") as page:
        gr.Markdown("## Ask LXMERT about a picture\nUpload an image (or click an example), type a question, "
                    "press **Ask**. Boxes: the regions the question's [CLS] attends to most in the last "
                    "cross-modality layer (red: the strongest). Each tab serves the models of one kind of "
                    "task.")  # fmt: skip
        with gr.Tab("Question"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(label="image", type="filepath", sources=["upload", "clipboard"], elem_id="image",
                                     height=400)  # fmt: skip
                    question = gr.Textbox(label="question (or hypothesis)", placeholder="What is the man holding?",
                                          elem_id="question")  # fmt: skip
                    with gr.Row():
                        model = picker("question", "model", "model", scale=5)
                        refresh_button = gr.Button("↻ models", elem_id="refresh", scale=1, min_width=60)
                    ask = gr.Button("Ask", variant="primary", elem_id="ask")
                with gr.Column():
                    status = gr.Markdown(elem_id="status")
                    answers = gr.Label(num_top_classes=5, label="top-5 answers", elem_id="answers")
                    regions = gr.Image(label="regions", type="pil", interactive=False, elem_id="regions", height=400)
            note = examples_note(first_kind, have)
            examples_warning = gr.Markdown(note, visible=bool(note), elem_id="examples_note")
            with gr.Column(visible=first_kind == "own" and have["own"], elem_id="own_examples") as own_box:
                if own:
                    gr.Examples(own, inputs=[image, question], label="examples: the task's own pictures")
            with gr.Column(visible=first_kind == "photos" and have["photos"], elem_id="photo_examples") as photo_box:
                if photos:
                    gr.Examples(photos, inputs=[image, question], label="examples: photos")
            queued(ask, answer, [image, question, model], [answers, regions, status], "ask", question.submit)
            model.change(examples_for, [model], [own_box, photo_box, examples_warning], queue=False)
        with gr.Tab("True or false? (two images)"):
            with gr.Row():
                left = gr.Image(label="left image", type="filepath", sources=["upload"], elem_id="left", height=300)
                right = gr.Image(label="right image", type="filepath", sources=["upload"], elem_id="right", height=300)
            statement = gr.Textbox(label="statement", placeholder="There are two dogs in total.", elem_id="statement")
            pair_model = picker("pair", "model (snapshots of pair tasks under snap/)", "pair_model")
            judge = gr.Button("Judge", variant="primary", elem_id="judge")
            pair_status = gr.Markdown(elem_id="pair_status")
            verdict = gr.Label(num_top_classes=2, label="judgement", elem_id="verdict")
            with gr.Row():
                left_regions = gr.Image(label="left: regions", type="pil", interactive=False, elem_id="left_regions",
                                        height=300)  # fmt: skip
                right_regions = gr.Image(label="right: regions", type="pil", interactive=False,
                                         elem_id="right_regions", height=300)  # fmt: skip
            if len(photos) >= 2:
                gr.Examples([[photos[0][0], photos[1][0], "There is a person in the left image."]],
                            inputs=[left, right, statement], label="examples")  # fmt: skip
            queued(judge, verify, [left, right, statement, pair_model],
                   [verdict, left_regions, right_regions, pair_status], "judge")  # fmt: skip
        with gr.Tab("Retrieval (images and a caption)"):
            gallery_files = gr.File(label="images", file_count="multiple", file_types=["image"], type="filepath",
                                    elem_id="gallery_files")  # fmt: skip
            caption = gr.Textbox(label="caption", placeholder="A man rides a horse.", elem_id="caption")
            gallery_model = picker("gallery", "model (retrieval snapshots under snap/)", "gallery_model")
            find = gr.Button("Rank", variant="primary", elem_id="rank")
            gallery_status = gr.Markdown(elem_id="gallery_status")
            ranked = gr.Gallery(label="best match first", elem_id="ranked", columns=4, height=320)
            if len(photos) >= 2:
                gr.Examples([[[p for p, _ in photos], "A cat looks at the camera."]], inputs=[gallery_files, caption],
                            label="examples")  # fmt: skip
            queued(find, rank, [gallery_files, caption, gallery_model], [ranked, gallery_status], "rank",
                   caption.submit)  # fmt: skip
        with gr.Tab("Find the region"):
            with gr.Row():
                with gr.Column():
                    box_image = gr.Image(label="image", type="filepath", sources=["upload", "clipboard"],
                                         elem_id="box_image", height=400)  # fmt: skip
                    expression = gr.Textbox(label="expression", placeholder="the man on the left", elem_id="expression")
                    box_model = picker("box", "model (region-selection snapshots under snap/)", "box_model")
                    point = gr.Button("Find", variant="primary", elem_id="find")
                with gr.Column():
                    box_status = gr.Markdown(elem_id="box_status")
                    box = gr.Image(label="the region (red) and the runners-up", type="pil", interactive=False,
                                   elem_id="box", height=400)  # fmt: skip
            if photos:
                gr.Examples([[photos[0][0], "the person"]], inputs=[box_image, expression], label="examples")
            queued(point, locate, [box_image, expression, box_model], [box, box_status], "locate", expression.submit)
        chosen = [pickers[tab] for tab in TABS]
        refresh_button.click(refresh, chosen, chosen, queue=False)
        page.load(refresh, chosen, chosen, queue=False)
        page.unload(abandon)
    page.queue(default_concurrency_limit=1)
    return page


def launch_page(page: Any, service: Service, host: str = "127.0.0.1", port: int = 7860, **options: Any) -> Any:
    """Serve ``page``: its style sheet, error messages shown (a file the server refuses to read says so
    instead of an empty error), uploads up to 50 MB, files served only from the upload folders."""
    settings = dict(server_name=host, server_port=port, ssr_mode=False, quiet=True, max_file_size="50mb",
                    allowed_paths=[str(p) for p in service.allowed], css=PAGE_CSS, show_error=True)  # fmt: skip
    return page.launch(**{**settings, **options})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ask.serve",
        description="Serve a local web page that asks LXMERT about pictures (Gradio). Bound to 127.0.0.1 "
        "unless --host is given.",
    )
    p.add_argument("--load", help="snapshot selected first (default: the best photo model under --snap, released "
                   "models first; else the demo's snap/demo/BEST.pth)")  # fmt: skip
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
    launch_page(page, service, host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
