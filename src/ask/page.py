"""The Gradio page over a :class:`ask.service.Service`: one tab per kind of task.

A question tab (image, question, model picker with a refresh button -> top-5 bars, the image with
its strongest regions, a status line; examples that fit the chosen model), a true-or-false tab (two
images and a statement), a retrieval tab (images and a caption -> the images ranked) and a region
tab (an image and an expression -> the chosen box). Each tab's picker lists the snapshots of its kind
(:data:`ask.checkpoints.TABS`, from each task's ``presentation``). Requests queue, one at a time per
tab; a request whose page asks a newer question or is closed is cancelled, so the next one starts
at once. Gradio is imported only when a page is built (``requirements-serve.txt``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ask.checkpoints import TABS, tab_of
from ask.service import Service
from tasks.registry import tasks_where

log = logging.getLogger("lxmert.serve")
PHOTO_EXAMPLES = (("astronaut", "What is the person wearing?"), ("coffee", "What is in the cup?"),
                  ("chelsea", "What animal is this?"))  # fmt: skip
PAGE_CSS = """
#image img, #regions img, #left img, #right img, #left_regions img, #right_regions img, #box_image img, #box img {
    width: 100%; height: 100%; object-fit: contain; image-rendering: auto;
}
"""


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
