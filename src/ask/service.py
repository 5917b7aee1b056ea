"""The page's handlers, plain Python (tested without a browser): :class:`Service`.

One :class:`ask.Asker` per snapshot, loaded on first use and kept, one region cache shared by all of
them, and every failure turned into a message for the page that names what was wrong (uploads by
their file name, never by the server's temporary path). Each tab of the page (:data:`ask.checkpoints.TABS`)
has its handler: ``answer`` (a question about one image), ``verify`` (a statement about two),
``rank`` (images against a caption) and ``locate`` (the region an expression names). A request made
with a page ``session`` is cancelled by a newer request of that session, or by :meth:`Service.abandon`.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image

from ask.asker import Asker
from ask.cache import RegionCache
from ask.cancel import Cancelled
from ask.checkpoints import (
    DEMO_CHECKPOINT,
    NO_MODEL_HINT,
    PHOTO_FEAT_DIM,
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
from lxrt import CheckpointError
from tasks.registry import tasks_where

log = logging.getLogger("lxmert.serve")
NO_ANSWER: dict[str, float] = {}
CANCELLED = "cancelled: a newer request from this page, or the page was closed"
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
        """``message`` without the server's paths: a file under the upload folders by its name, one under the
        working folder relative to it, another one under the temporary folder by its name (in that order: a
        checkout may itself live under the temporary folder)."""
        cwd, temp = Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()

        def shorten(match: re.Match) -> str:
            path = Path(match.group(1))
            try:
                resolved = path.resolve()
            except (OSError, RuntimeError):
                return match.group(1)
            if any(resolved.is_relative_to(root) for root in self.allowed):
                return path.name
            if resolved.is_relative_to(cwd):
                return str(resolved.relative_to(cwd))
            return path.name if resolved.is_relative_to(temp) else match.group(1)

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
