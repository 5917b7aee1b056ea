"""The page's handlers without a browser, and the page itself in headless Chromium (Playwright).

The browser tests need Gradio (requirements-serve.txt), Playwright (pip) and the Debian ``chromium``
package; ``.ci/run`` installs all three, so in CI they run. They skip, saying which is missing,
only where one is absent.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ask import find_checkpoints
from ask.page import build_page, launch_page, own_examples, photo_examples, upload_roots
from ask.service import NO_ANSWER, Service, upload_path
from demo.easy_vqa_data import image_path
from features.extractors import available_extractors
from lxrt import LXRTConfig, save_state_dict
from lxrt.snapshot import SnapshotFacts, write_facts
from tasks.flickr30k import Matcher
from tasks.models import Classifier, NLVR2Model, RegionScorer

CHROMIUM = Path("/usr/bin/chromium")
# The default extractor for a snapshot other than the demo's: butd (a message about its weights once it
# is registered, else a request for an extractor of the snapshot's width).
NO_EXTRACTOR = "extractor 'butd': .*weights" if "butd" in available_extractors() else "76-d region features: pass"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def _demo(demo_run) -> tuple[Path, list[dict], dict]:
    root, _ = demo_run
    records = json.loads((root / "data" / "easy_vqa" / "test.json").read_text())
    preds = {r["question_id"]: r["answer"] for r in json.loads((root / "out" / "test_predict.json").read_text())}
    return root / "out" / "BEST.pth", records, preds


def _known(records: list[dict], preds: dict, skip: int = 0) -> dict:
    """A colour or shape question the demo model answers right (its evaluation says so); different
    ``skip`` give different sentences, so the page's status line changes from one to the next."""
    right, seen = [], set()
    for r in records:
        if r["question_type"] in ("color", "shape") and preds[r["question_id"]] in r["label"] and r["sent"] not in seen:
            seen.add(r["sent"])
            right.append(r)
    return right[skip]


# ---- handlers


def test_answer_handler_gives_sorted_top5_and_the_overlay(demo_run, tmp_path) -> None:
    best, records, preds = _demo(demo_run)
    service = Service(str(best), snap_root=str(tmp_path / "snap"))
    rec = _known(records, preds)
    answers, picture, status = service.answer({"path": str(image_path(rec["img_id"]))}, rec["sent"], str(best))
    probs = list(answers.values())
    assert len(answers) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert next(iter(answers)) == preds[rec["question_id"]] and status.startswith(f"**{next(iter(answers))}**")
    assert isinstance(picture, Image.Image) and picture.size == (384, 384)  # 64x64 scaled for display
    # the strongest region's box is drawn in red somewhere on the picture
    assert (np.asarray(picture) == (224, 49, 49)).all(-1).sum() > 100
    assert service.asker(None) is service.asker(str(best))  # loaded once


def test_bad_requests_give_a_message_and_the_service_keeps_serving(demo_run, tmp_path) -> None:
    best, records, preds = _demo(demo_run)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    good = uploads / "shape.png"
    shutil.copy(image_path(records[0]["img_id"]), good)
    (uploads / "notes.png").write_text("not a picture")
    Image.new("RGB", (3000, 2000)).save(uploads / "huge.png")
    shutil.copy(good, tmp_path / "elsewhere.png")  # a real image, but not among the uploads
    service = Service(str(best), allowed=[uploads], max_pixels=5_000_000)
    cases = [
        (uploads / "notes.png", "what color?", "not a readable image"),
        (uploads / "huge.png", "what color?", "3000x2000 = 6.0 megapixels; the limit is 5"),
        (good, "  ", "empty question"),
        (None, "what color?", "no image: upload one"),
        (tmp_path / "elsewhere.png", "what color?", "not an uploaded file"),
    ]
    for image, question, words in cases:
        answers, picture, status = service.answer(str(image) if image else None, question)
        assert answers == NO_ANSWER and picture is None and status.startswith("⚠️") and words in status, status
        answers, _, status = service.answer(str(good), "what shape is in the image?")  # still serving
        assert len(answers) == 5 and status.startswith("**")
    _, _, status = service.answer(str(good), "what?", str(tmp_path / "other" / "BEST.pth"))
    assert "not one of the models listed" in status
    verdict, left, right, status = service.verify(str(good), str(good), "There is a shape.", None)
    assert verdict == NO_ANSWER and left is None and "no snapshot of nlvr2 under snap/" in status
    _, _, _, status = service.verify(str(good), str(good), "There is a shape.", str(best))
    assert "easy_vqa model: it answers a question about one image" in status


def test_model_picker_lists_snapshots_with_their_task(demo_run, tmp_path) -> None:
    best, _, _ = _demo(demo_run)
    snap = tmp_path / "snap"
    shutil.copytree(best.parent, snap / "demo", ignore=shutil.ignore_patterns("*.store", "tb", "ask"))
    config = LXRTConfig(hidden_size=64, num_attention_heads=1, intermediate_size=64, llayers=1, xlayers=1,
                        rlayers=1, visual_feat_dim=76)  # fmt: skip
    save_state_dict(NLVR2Model(config).state_dict(), snap / "nlvr2" / "pair" / "BEST.pth")
    (snap / "broken").mkdir()
    (snap / "broken" / "BEST.pth").write_text("no")
    found = dict((p, label) for label, p in find_checkpoints(snap))
    assert found[str(snap / "demo" / "BEST.pth")].endswith("(easy_vqa)")
    assert found[str(snap / "nlvr2" / "pair" / "BEST.pth")].endswith("(nlvr2)")
    assert "unreadable" in found[str(snap / "broken" / "BEST.pth")]
    service = Service(str(snap / "demo" / "BEST.pth"), snap_root=str(snap))
    assert service.checkpoints()[0][1] == str(snap / "demo" / "BEST.pth")
    assert [p for _, p in service.checkpoints("pair")] == [str(snap / "nlvr2" / "pair" / "BEST.pth")]
    image = str(image_path("test_0"))  # a listed snapshot is loaded (its extractor was not given: a message)
    *_, status = service.verify(image, image, "A shape.", str(snap / "nlvr2" / "pair" / "BEST.pth"))
    assert re.search(NO_EXTRACTOR, status), status
    assert upload_path({"path": "/a/b.png", "url": None}) == "/a/b.png" and upload_path("x.png") == "x.png"


def test_examples_include_easy_vqa_images(tmp_path) -> None:
    """The demo task's own examples reach the page through the registry; photos are written once."""
    examples, photos = own_examples(), photo_examples(tmp_path)
    assert len(examples) >= 4 and all(Path(image).is_file() and question for image, question in examples)
    for path, _ in photos:  # real photos when scikit-image is installed
        with Image.open(path) as im:
            assert im.width >= 300


@pytest.mark.slow
def test_serve_script_help() -> None:
    if importlib.util.find_spec("gradio") is None:
        pytest.skip("gradio is not installed (pip install -r requirements-serve.txt)")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(["bash", str(repo / "run" / "serve.bash"), "--help"], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--host" in done.stdout and "127.0.0.1" in done.stdout and "installing" not in done.stdout


# ---- the page in a real browser


def _browser_missing() -> str | None:
    for module, how in (("gradio", "pip install -r requirements-serve.txt"), ("playwright", "pip install playwright")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({how}; .ci/run installs it)"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} not found (apt-get install chromium; .ci/run installs it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(demo_run, tmp_path_factory):
    """(url, service) of the page over the small demo model, served in this process."""
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    best, _, _ = _demo(demo_run)
    snap = tmp_path_factory.mktemp("snap")
    service = Service(str(best), snap_root=str(snap), allowed=upload_roots())
    service.asker(None)
    page = build_page(service, tmp_path_factory.mktemp("examples"))
    port = _free_port()
    launch_page(page, service, port=port, prevent_thread_lock=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield f"http://127.0.0.1:{port}/", browser, service, snap
        finally:
            browser.close()
            page.close()


def _ask(page, image: Path, question: str, timeout_ms: int = 30_000) -> float:  # noqa: ANN001
    """Upload ``image``, ask ``question``; seconds from the click until the status names the question."""
    clear = page.locator("#image button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    page.locator("#image input[type=file]").set_input_files(str(image))
    page.locator("#question textarea").fill(question)
    start = time.perf_counter()
    page.locator("#ask").click()
    page.wait_for_function(
        "q => { const s = document.querySelector('#status'); return s && (s.innerText.includes(q) || "
        "s.innerText.includes('⚠️')); }",
        arg=question, timeout=timeout_ms,
    )  # fmt: skip
    return time.perf_counter() - start


@pytest.mark.slow
def test_page_answers_a_question_in_the_browser(served, demo_run, tmp_path) -> None:
    url, browser, *_ = served
    _, records, preds = _demo(demo_run)
    first, second = _known(records, preds, 0), _known(records, preds, 1)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    page.wait_for_selector("#ask")
    _ask(page, image_path(first["img_id"]), first["sent"])  # warm-up
    expected = preds[first["question_id"]]
    assert page.locator("#status strong").inner_text() == expected
    assert expected in page.locator("#answers").inner_text()
    assert page.locator("#regions img").count() == 1
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000

    seconds = _ask(page, image_path(second["img_id"]), second["sent"])
    assert page.locator("#status strong").inner_text() == preds[second["question_id"]]
    print(f"\nlatency of one answer in the browser after warm-up: {seconds * 1000:.0f} ms "
          f"(click to answer on the page); screenshot {tmp_path / 'page.png'}")  # fmt: skip


@pytest.mark.slow
def test_page_reports_a_non_image_then_answers(served, demo_run, tmp_path) -> None:
    url, browser, *_ = served
    _, records, preds = _demo(demo_run)
    rec = _known(records, preds, 2)
    notes = tmp_path / "notes.png"
    notes.write_text("this is text, not a picture")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    page.wait_for_selector("#ask")
    _ask(page, notes, "What color is the shape?")
    status = page.locator("#status").inner_text()
    assert "⚠️" in status and "notes.png: not a readable image" in status, status
    assert "/" not in status.split("notes.png")[0], status  # the file by its name, not the server's temp path
    _ask(page, image_path(rec["img_id"]), rec["sent"])
    assert page.locator("#status strong").inner_text() == preds[rec["question_id"]]

    question = own_examples()[0][1]  # an example: image and question in one click
    page.get_by_text(question, exact=True).first.click()
    page.locator("#ask").click()
    page.wait_for_function(
        "q => { const s = document.querySelector('#status').innerText; return s.includes(q) || s.includes('⚠️'); }",
        arg=question, timeout=30_000,
    )  # fmt: skip
    status = page.locator("#status").inner_text()
    assert "⚠️" not in status and question in status, status


# ---- the page's items: examples for the model, model list refresh, readable images, cancelled requests


def _snapshot(snap: Path, name: str, feat_dim: int, task: str = "vqa") -> Path:
    """A small task snapshot with its facts file (never asked: only listed and described)."""
    config = LXRTConfig(hidden_size=32, num_attention_heads=1, intermediate_size=32, llayers=1, xlayers=1,
                        rlayers=1, visual_feat_dim=feat_dim)  # fmt: skip
    path = save_state_dict(Classifier(config, 3129).state_dict(), snap / task / name / "BEST.pth")
    write_facts(path, SnapshotFacts(task=task, model=config, num_outputs=3129))
    return path


def _choose_model(page, label_part: str) -> None:  # noqa: ANN001
    page.locator("#model input").click()
    page.get_by_role("option").filter(has_text=label_part).first.click()


def _shown(page, selector: str) -> bool:  # noqa: ANN001
    return page.locator(selector).count() > 0 and page.locator(selector).first.is_visible()


@pytest.mark.slow
def test_page_examples_match_the_chosen_model_and_the_list_refreshes(served) -> None:
    """Shapes for the demo model, photos for a detector model, a plain warning for a model of another
    extractor; a snapshot written while the page runs appears after the refresh button (no restart).
    Catches photo examples offered to the shape model (it answers 'rectangle' about an astronaut)."""
    url, browser, service, snap = served
    photo = _snapshot(snap, "photo_model", 2048)
    other = _snapshot(snap, "grid_model", 54)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    page.wait_for_selector("#ask")
    page.wait_for_function("() => document.querySelector('#model input').value.includes('BEST.pth')")
    assert _shown(page, "#own_examples") and not _shown(page, "#photo_examples")
    assert not _shown(page, "#examples_note")

    _choose_model(page, "photo_model")
    page.wait_for_selector("#photo_examples", state="visible")
    assert not _shown(page, "#own_examples") and not _shown(page, "#examples_note")
    assert "astronaut" in page.locator("#photo_examples").inner_html()
    _choose_model(page, "grid_model")
    page.wait_for_selector("#examples_note", state="visible")
    assert "another extractor" in page.locator("#examples_note").inner_text()
    assert not _shown(page, "#photo_examples") and not _shown(page, "#own_examples")
    assert service.kind(str(photo)) == "photos" and service.kind(str(other)) == "other"

    late = _snapshot(snap, "trained_later", 2048, task="gqa")  # a run that finished while the page was open
    page.locator("#model input").click()
    assert page.get_by_role("option").filter(has_text="trained_later").count() == 0
    page.keyboard.press("Escape")
    page.locator("#refresh").click()
    page.wait_for_timeout(500)
    page.locator("#model input").click()
    page.get_by_role("option").filter(has_text="trained_later").first.wait_for()
    assert str(late) in page.get_by_role("option").filter(has_text="trained_later").first.inner_text()


@pytest.mark.slow
def test_page_shows_small_images_at_a_readable_size(served, demo_run) -> None:
    """A 64x64 upload and its regions fill their boxes on the page (at least 300 px wide), not 64 px."""
    url, browser, *_ = served
    _, records, preds = _demo(demo_run)
    rec = _known(records, preds, 3)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    page.wait_for_selector("#ask")
    _ask(page, image_path(rec["img_id"]), rec["sent"])
    assert page.locator("#status strong").inner_text() == preds[rec["question_id"]]
    for selector in ("#image img", "#regions img"):
        box = page.locator(selector).first.bounding_box()
        assert box is not None and box["width"] >= 300 and box["height"] >= 300, (selector, box)


class _Sleep(torch.nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


class _SlowExtractor:
    """The demo's extractor, slowed to ``seconds`` (in module calls of 50 ms) for pictures 97 px wide."""

    def __init__(self, inner, seconds: float) -> None:  # noqa: ANN001
        self.inner, self.name, self.feat_dim = inner, inner.name, inner.feat_dim
        self.model = torch.nn.Sequential(*[_Sleep(0.05) for _ in range(int(seconds / 0.05))])
        self.started = threading.Event()
        self.finished = threading.Event()

    def __call__(self, image: Image.Image):  # noqa: ANN204
        if image.width == 97:
            self.started.set()
            self.model(torch.zeros(1))
            self.finished.set()
        return self.inner(image)


@pytest.mark.slow
def test_an_abandoned_request_is_cancelled_and_the_next_starts_at_once(served, demo_run, tmp_path) -> None:
    """A request that takes 12 s: its page asks a newer question, or is closed; the request stops (its
    extractor never finishes) and the next question is answered within seconds, where without
    cancelling it would wait for the 12 s in the one-at-a-time queue."""
    url, browser, service, _ = served
    _, records, preds = _demo(demo_run)
    asker = service.asker(None)
    real = asker.extractor
    slow_images = []
    for n in range(2):  # pictures nobody asked about yet (their regions are not cached)
        path = tmp_path / f"slow{n}.png"
        Image.open(image_path(records[n]["img_id"])).resize((97, 97)).rotate(90 * n).save(path)
        slow_images.append(path)
    try:
        for n, close_page in enumerate((False, True)):
            asker.extractor = slow = _SlowExtractor(real, 12.0)
            rec = _known(records, preds, 4 + n)
            first = browser.new_page(viewport={"width": 1280, "height": 900})
            first.goto(url)
            first.wait_for_selector("#ask")
            first.locator("#image input[type=file]").set_input_files(str(slow_images[n]))
            first.locator("#question textarea").fill("What color is the shape?")
            first.locator("#ask").click()
            assert slow.started.wait(30), "the slow request did not start"
            if close_page:
                first.close()  # a closed tab
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url)
                page.wait_for_selector("#ask")
            else:
                page = first  # a new question on the same page
            seconds = _ask(page, image_path(rec["img_id"]), rec["sent"])
            assert page.locator("#status strong").inner_text() == preds[rec["question_id"]]
            assert seconds < 6, f"the next question waited {seconds:.1f} s"
            assert not slow.finished.is_set()  # the abandoned extraction stopped
            page.close()
    finally:
        asker.extractor = real


@pytest.mark.slow
def test_a_file_the_page_refuses_is_a_message_not_an_empty_error(served) -> None:
    """The page's API asked about a server file that was not uploaded: the answer names the refusal
    instead of {"error": null}."""
    import requests

    url, *_ = served
    payload = {"path": "/etc/hostname", "meta": {"_type": "gradio.FileData"}}
    call = requests.post(url + "gradio_api/call/answer", json={"data": [payload, "what?", None]}, timeout=30)
    assert call.ok, call.text
    events = requests.get(url + f"gradio_api/call/answer/{call.json()['event_id']}", timeout=60).text
    assert "event: error" in events and '"error": null' not in events, events
    assert "not uploaded" in events, events


def test_handlers_cancel_a_sessions_request_and_hide_server_paths(demo_run, tmp_path) -> None:
    """Without a browser: ``abandon(session)`` stops that session's request within a module call (others
    are untouched), a newer request of the same session stops the older one, and error messages name
    uploads by their file name, never by the server's folders."""
    best, records, preds = _demo(demo_run)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    service = Service(str(best), snap_root=str(tmp_path / "snap"), allowed=[uploads])
    asker = service.asker(None)
    asker.extractor = slow = _SlowExtractor(asker.extractor, 20.0)
    picture = uploads / "slow.png"
    Image.open(image_path(records[0]["img_id"])).resize((97, 97)).save(picture)
    done: list = []
    worker = threading.Thread(target=lambda: done.append(service.answer(str(picture), "what color?", None, "tab-1")))
    worker.start()
    assert slow.started.wait(30)
    service.abandon("tab-2")  # another page: no effect
    time.sleep(0.3)
    assert worker.is_alive()
    start = time.perf_counter()
    service.abandon("tab-1")
    worker.join(10)
    assert not worker.is_alive() and time.perf_counter() - start < 2 and not slow.finished.is_set()
    assert done[0][0] == NO_ANSWER and done[0][2].startswith("cancelled")

    (uploads / "notes.png").write_text("not a picture")
    _, _, status = service.answer(str(uploads / "notes.png"), "what color?", None, "tab-1")
    assert "notes.png: not a readable image" in status and str(uploads) not in status, status
    assert service.public(f"{uploads}/a/b.png is bad; {Path.cwd()}/snap/x/BEST.pth too") == \
        "b.png is bad; snap/x/BEST.pth too"  # fmt: skip


def test_upload_check_follows_dot_dot_and_symlinks_out_of_the_uploads(tmp_path) -> None:
    """A client names the file it sent by path: ``uploads/../x`` and a symlink inside the uploads folder that
    points elsewhere are outside it once resolved, and are refused before any model is loaded."""
    uploads = tmp_path / "uploads"
    (uploads / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 200, 30)).save(tmp_path / "elsewhere.png")
    Image.new("RGB", (8, 8), (10, 200, 30)).save(uploads / "shape.png")
    (uploads / "link.png").symlink_to(tmp_path / "elsewhere.png")
    service = Service(str(tmp_path / "snap" / "BEST.pth"), allowed=[uploads])
    refused = [uploads / ".." / "elsewhere.png", uploads / "link.png", uploads / "sub" / ".." / ".." / "elsewhere.png"]
    for path in refused:
        for value in (str(path), {"path": str(path)}):
            answers, picture, status = service.answer(value, "what color?")
            assert answers == NO_ANSWER and picture is None and "image: not an uploaded file" in status, (path, status)
        *_, status = service.verify(str(uploads / "shape.png"), str(path), "Both are green.", service.default)
        assert "right image: not an uploaded file" in status, (path, status)
    # inside the uploads once resolved: the check lets it through (and the missing model is what is reported)
    for path in (uploads / "shape.png", uploads / "sub" / ".." / "shape.png"):
        *_, status = service.answer(str(path), "what color?")
        assert status.startswith("⚠️") and "not an uploaded file" not in status and "BEST.pth" in status, status


@pytest.mark.slow
def test_page_tabs_rank_a_gallery_and_find_a_region(served, tmp_path) -> None:
    """The retrieval and region tabs in the browser: each lists the snapshots of its kind (read when the page
    loads), ranks the uploaded images against a caption, and draws the region an expression names. Catches a
    tab wired to another handler or picker, and uploads of several files that never reach the model."""
    url, browser, service, snap = served
    config = LXRTConfig(hidden_size=32, num_attention_heads=1, intermediate_size=32, llayers=1, xlayers=1,
                        rlayers=1, visual_feat_dim=76)  # fmt: skip
    for task, model, outputs in (("flickr30k", Matcher(config), 2), ("refcoco", RegionScorer(config), 1)):
        path = save_state_dict(model.state_dict(), snap / task / "tiny" / "BEST.pth")
        write_facts(path, SnapshotFacts(task=task, model=config, num_outputs=outputs))
    pictures = []
    for n, colour in enumerate(((200, 30, 30), (30, 200, 30), (30, 30, 200))):
        pictures.append(tmp_path / f"p{n}.png")
        Image.new("RGB", (80 + 10 * n, 60), colour).save(pictures[-1])
    saved = service.extractor, service.extractor_options
    service.extractor, service.extractor_options = "grid+object", {"grid": 2, "patch": 4}
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.wait_for_selector("#ask")
        page.get_by_role("tab", name="Retrieval (images and a caption)").click()
        page.wait_for_function("() => document.querySelector('#gallery_model input').value.includes('flickr30k')")
        page.locator("#gallery_files input[type=file]").set_input_files([str(p) for p in pictures])
        page.locator("#caption textarea").fill("A green picture.")
        page.wait_for_timeout(500)
        page.locator("#rank").click()
        page.wait_for_function("() => /matches best|⚠️/.test(document.querySelector('#gallery_status').innerText)",
                               timeout=30_000)  # fmt: skip
        status = page.locator("#gallery_status").inner_text()
        assert "⚠️" not in status and "3 images" in status, status
        assert page.locator("#ranked img").count() >= 3

        page.get_by_role("tab", name="Find the region").click()
        page.wait_for_function("() => document.querySelector('#box_model input').value.includes('refcoco')")
        page.locator("#box_image input[type=file]").set_input_files(str(pictures[0]))
        page.locator("#expression textarea").fill("the red part")
        page.locator("#find").click()
        page.wait_for_function("() => /region|⚠️/.test(document.querySelector('#box_status').innerText)",
                               timeout=30_000)  # fmt: skip
        status = page.locator("#box_status").inner_text()
        assert "⚠️" not in status, status
        assert re.search(r"region \d+ \(\d+\.\d%\): x \d+, y \d+, w \d+, h \d+ px", status), status
        page.wait_for_selector("#box img", state="visible")
    finally:
        service.extractor, service.extractor_options = saved


def test_messages_keep_paths_of_a_checkout_under_the_temporary_folder(tmp_path, monkeypatch) -> None:
    """A checkout cloned under /tmp: its files are still named relative to the working folder (not cut to a
    bare name as a temporary file is), uploads by their name, and paths elsewhere stay as they are."""
    checkout, uploads = tmp_path / "checkout", tmp_path / "uploads"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    service = Service("x", allowed=[uploads])
    message = f"{uploads}/a/b.png is bad; {checkout}/snap/x/BEST.pth too; {tmp_path}/other/y.png; /etc/hosts"
    assert service.public(message) == "b.png is bad; snap/x/BEST.pth too; y.png; /etc/hosts"
