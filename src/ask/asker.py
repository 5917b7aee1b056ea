"""Ask a trained LXMERT about a picture: load a task snapshot once, then answer question after question.

    asker = Asker.from_checkpoint()                       # the best photo model under snap/ (else the demo's)
    result = asker.ask("photo.jpg", "what is the man holding?")
    result.answers            # [("frisbee", 0.97), ...]: the top 5 of a softmax over the answer table
    result.regions.importance # (N,) attention of the question's [CLS] over the regions
    asker.ask_many("photo.jpg", ["what color is his shirt?", "is it sunny?"])   # the detector runs once

    asker = Asker.from_checkpoint("demo")                 # the easy-VQA demo's model and extractor
    asker = Asker.from_checkpoint("snap/vqa/vqa_lxr955/BEST", extractor="butd", extractor_options={...})
    asker.verify(left, right, "There are two dogs.")     # a model of a task on pairs of images: P(true)
    asker.rank(["a.jpg", "b.jpg"], ["A dog runs."])      # a retrieval model: scores, captions x images
    asker.locate("photo.jpg", "the man on the left")     # a region-selection model: the chosen box

What a snapshot is asked and answers is its task's ``presentation`` (:mod:`tasks.presentation`); the
model is the one the task class builds for a snapshot (``ask_model``), the answers its answer table or
its fixed classes.

An image goes through the same steps as in training: a registered region extractor, the feature
stores' rounding (float16), boxes as fractions of the image, and where the task says so
(``ask_images``: the demo) its own extractor settings and standardization. Region importance is the
attention of the language [CLS] over the regions in the last cross-modality layer, averaged over
heads, read by a forward hook (no change to the model's computation); for region selection, the
softmax of the regions' scores.

The regions of each picture are kept (:class:`ask.cache.RegionCache`, keyed by the image's bytes and
the extractor's settings), so another question about the same picture skips the extractor. A
request given a ``cancel`` event stops at the next module call once the event is set
(:mod:`ask.cancel`).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ask.cache import CachedRegions, RegionCache, image_digest, settings_key
from ask.cancel import Cancelled, cancellable, check
from ask.checkpoints import AskError, CheckpointInfo, does, inspect_checkpoint, tab_of
from ask.inputs import DEFAULT_MAX_PIXELS, build_extractor, check_text, read_image, region_labels
from ask.probe import CrossAttentionProbe
from datatools.hf_import import ANSWERS_FILE
from features.extractors import RegionExtractor, Regions, available_extractors
from features.store import normalize_boxes
from lxrt import CheckpointError, load_state
from lxrt.tokenizer import LXRTTokenizer
from tasks.answers import AnswerTable, DataFormatError

TOP = 5
FEATURE_DTYPE = "float16"  # the feature stores' default: training saw features rounded to it
REPO_DATA = Path(__file__).resolve().parents[2] / "data"


@dataclass(frozen=True)
class ImageRegions:
    """One image as the model saw it: RGB pixels, pixel boxes x1 y1 x2 y2, per-region importance
    (attention of the [CLS], sums to 1; None without cross-modality layers) and detector labels."""

    image: Image.Image
    boxes: np.ndarray
    importance: np.ndarray | None
    labels: list[str] | None = None

    def ranked(self) -> list[int]:
        """Region indices, the most important first (extractor order when there is no importance)."""
        if self.importance is None:
            return list(range(len(self.boxes)))
        return [int(i) for i in np.argsort(-self.importance, kind="stable")]


@dataclass(frozen=True)
class AskResult:
    """Answers to one question: ``answers`` (answer, probability), most probable first."""

    question: str
    answers: list[tuple[str, float]]
    regions: ImageRegions
    task: str
    seconds: float
    truncated: bool = False  # the question was longer than the model's sequence length
    reused: bool = False  # the picture's regions came from the cache (the extractor did not run)
    extract_seconds: float = 0.0  # of ``seconds``, the extractor's

    @property
    def answer(self) -> str:
        return self.answers[0][0]


@dataclass(frozen=True)
class VerifyResult:
    """An NLVR2 judgement: probability that ``statement`` is true of the left and right images."""

    statement: str
    prob_true: float
    left: ImageRegions
    right: ImageRegions
    seconds: float
    reused: bool = False  # both pictures' regions came from the cache

    @property
    def answer(self) -> bool:
        return self.prob_true >= 0.5


@dataclass(frozen=True)
class OneRun:
    """One forward pass on one image and one text: the picture and its regions, whether they came from the
    cache, the extractor's seconds, the model's output, whether the text was cut, the [CLS]'s attention."""

    entry: CachedRegions
    reused: bool
    extract_seconds: float
    output: Tensor
    truncated: bool
    weights: Tensor | None


@dataclass(frozen=True)
class RankResult:
    """Retrieval: ``scores[t, i]`` of text ``t`` with image ``i`` (the higher, the better they match)."""

    texts: list[str]
    images: list[ImageRegions]
    scores: np.ndarray
    seconds: float
    reused: bool = False  # every picture's regions came from the cache

    def ranking(self, text: int) -> list[int]:
        """The images, best match for text ``text`` first."""
        return [int(i) for i in np.argsort(-self.scores[text], kind="stable")]

    def text_ranking(self, image: int) -> list[int]:
        """The texts, best match for image ``image`` first."""
        return [int(t) for t in np.argsort(-self.scores[:, image], kind="stable")]


@dataclass(frozen=True)
class LocateResult:
    """Region selection: the region ``index`` the expression names, its ``box`` ``[x, y, w, h]`` in image
    pixels and its probability (softmax over the regions' scores, kept as ``regions.importance``)."""

    expression: str
    index: int
    box: list[float]
    prob: float
    regions: ImageRegions
    seconds: float
    truncated: bool = False
    reused: bool = False
    extract_seconds: float = 0.0


def answer_table(info: CheckpointInfo) -> list[str]:
    """The answers of a question-answering snapshot, in the order of its head's rows.

    With facts naming the answer table: the table beside the snapshot (``trainval_label2ans.json``) or the
    task's under the data root, whichever is that table. Without: the task's table, of the head's size.
    """
    facts, folder = info.facts, info.task_class.answer_folder() or info.task
    if facts is not None and facts.answers is not None:
        beside, task_table = info.folder / ANSWERS_FILE, info.data_root / folder / "trainval_label2ans.json"
        for path in dict.fromkeys((beside, task_table)):
            try:
                answers = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            plain = isinstance(answers, list) and all(isinstance(a, str) for a in answers)
            if plain and facts.answers.matches(answers):
                return answers
        want = facts.answers
        raise AskError(
            f"{info.path}: its head follows the answer table {want.name} ({want.count} answers, sha256 "
            f"{want.sha256[:12]}...), and neither {beside} nor {task_table} is that table"
        )
    try:
        table = AnswerTable.for_task(folder, info.data_root)
    except (FileNotFoundError, DataFormatError) as err:
        raise AskError(f"answer table of {info.task}: {err}") from None
    if table.num_answers != info.num_outputs:
        raise AskError(
            f"{info.path}: the answer head has {info.num_outputs} answers but the answer table "
            f"{table.source} has {table.num_answers}: a snapshot of another task or answer table"
        )
    return table.label2ans


def output_names(info: CheckpointInfo) -> list[str] | None:
    """Names of the head's outputs: the answer table or the task's classes (None: scores, not classes)."""
    shown, cls = info.presentation, info.task_class
    if shown.output == "true_false" and info.num_outputs != 2:
        raise AskError(f"{info.path}: a true/false head must have 2 outputs, this one has {info.num_outputs}")
    if shown.output not in ("answers", "labels"):
        return None
    if cls.answer_folder() is not None:
        return answer_table(info)
    classes = cls.output_classes()
    if classes is None or len(classes) != info.num_outputs:
        raise AskError(f"{info.path}: a {info.task} head with {info.num_outputs} outputs, but the task's classes are "
                       f"{list(classes or [])}")  # fmt: skip
    return list(classes)


class Asker:
    """A task snapshot ready to answer: model (eval mode), tokenizer, answer table, extractor.

    ``extractor_settings`` identifies the extractor's settings in the region cache (default: its name and
    identity); ``cache`` may be shared between askers (the page shares one).
    """

    def __init__(
        self,
        info: CheckpointInfo,
        model: nn.Module,
        extractor: RegionExtractor,
        answers: list[str] | None,
        max_length: int,
        standardize: tuple[np.ndarray, np.ndarray] | None = None,
        feature_dtype: str = FEATURE_DTYPE,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        extractor_settings: str | None = None,
        cache: RegionCache | None = None,
    ) -> None:
        self.info = info
        self.model = model.eval()
        if hasattr(self.model, "pooled_only"):
            self.model.pooled_only = True  # the probe reads the [CLS]-only last cross layer
        self.extractor = extractor
        self.answers = answers
        self.tokenizer = LXRTTokenizer(max_length=max_length)
        self.max_length = max_length
        self.standardize = standardize
        self.feature_dtype = np.dtype(feature_dtype)
        self.max_pixels = max_pixels
        self.vocab_dirs = [info.data_root / "vg", REPO_DATA / "vg"]
        self.extractor_settings = extractor_settings or settings_key(getattr(extractor, "name", "?"), {}, id(extractor))
        self.cache = cache if cache is not None else RegionCache()

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def tab(self) -> str:
        """What the model is asked: ``question``, ``pair``, ``gallery`` or ``box`` (:data:`ask.checkpoints.TABS`)."""
        return tab_of(self.info.presentation)

    def _expect(self, tab: str) -> None:
        if self.tab != tab:
            raise AskError(f"this is a {self.task} model: it {does(self.info.presentation)}")

    @classmethod
    def from_checkpoint(
        cls,
        load: str | Path | None = None,
        task: str | None = None,
        extractor: str | None = None,
        extractor_options: Mapping[str, Any] | None = None,
        data_root: str | Path | None = None,
        plugins: Sequence[str] = (),
        max_pixels: int = DEFAULT_MAX_PIXELS,
        cache: RegionCache | None = None,
    ) -> Asker:
        """Load ``load`` (None: the best photo model under ``snap/``, else the demo's; ``"demo"``: the demo's)
        for ``task`` (None: from the facts file, the run's config.json or the head) with ``extractor``
        (None: the demo's for the demo model, else ``butd``). Anything that does not fit is an
        :class:`AskError` saying what."""
        try:
            info, state = inspect_checkpoint(load, task, data_root)
        except CheckpointError as err:
            raise AskError(str(err)) from None
        task_cls = info.task_class
        answers = output_names(info)
        standardize, dtype, options = None, FEATURE_DTYPE, dict(extractor_options or {})
        try:
            own = task_cls.ask_images(info.run, info.data_root)
        except (DataFormatError, OSError) as err:
            raise AskError(str(err)) from None
        if own is not None:
            dtype, standardize = own.dtype, own.standardize
            if extractor is None:
                extractor, options = own.extractor, {**own.options, **options}
        default = extractor is None
        extractor = extractor or "butd"
        try:
            ext = build_extractor(extractor, options, plugins)
        except AskError as err:
            if default and "unknown extractor" in str(err):
                raise AskError(
                    f"{info.path} reads {info.model.visual_feat_dim}-d region features: pass --extractor NAME (and "
                    f"its options, e.g. --weights) of that width; registered: {', '.join(available_extractors())}"
                ) from None
            raise
        if ext.feat_dim != info.model.visual_feat_dim:
            raise AskError(
                f"extractor {extractor!r} {options or ''} gives {ext.feat_dim}-d features but {info.path} was "
                f"trained on {info.model.visual_feat_dim}-d ones: use the extractor the model was trained with"
            )
        model = task_cls.ask_model(info.model, info.num_outputs)
        try:
            load_state(model, state, strict=True, source=str(info.path))
        except CheckpointError as err:
            raise AskError(str(err)) from None
        settings = settings_key(extractor, options, dtype, max_pixels)
        return cls(info, model, ext, answers, info.max_seq_length, standardize, dtype, max_pixels, settings, cache)

    # -- image -> model inputs
    def extract(self, image: Image.Image) -> Regions:
        """The extractor's regions of one RGB image, checked."""
        w, h = image.size
        try:
            regions = self.extractor(image)
            regions.check(w, h, self.extractor.feat_dim)
        except Cancelled:
            raise
        except ValueError as err:
            raise AskError(f"extractor {self.extractor.name!r} on a {w}x{h} image: {err}") from None
        return regions

    def regions_of(self, image: Any, cancel: threading.Event | None = None) -> tuple[CachedRegions, bool, float]:
        """(picture and regions, whether they came from the cache, seconds the extractor took) of an image
        given as a path, a picture or an array."""
        digest = image_digest(image)
        key = (digest, self.extractor_settings) if digest is not None else None
        cached = self.cache.get(key) if key is not None else None
        if cached is not None:
            return cached, True, 0.0
        picture = read_image(image, self.max_pixels)
        start = time.perf_counter()
        with cancellable([self.extractor, getattr(self.extractor, "model", None)], cancel):
            entry = CachedRegions(picture, self.extract(picture))
        if key is not None:
            self.cache.put(key, entry)
        return entry, False, time.perf_counter() - start

    def encode_image(self, image: Image.Image) -> tuple[Tensor, Tensor, Regions]:
        """Features (N, D) and normalized boxes (N, 4) of one RGB image, as training saw them."""
        regions = self.extract(image)
        feats, boxes = self.model_inputs(regions, *image.size)
        return feats, boxes, regions

    def model_inputs(self, regions: Regions, w: int, h: int) -> tuple[Tensor, Tensor]:
        """Features (N, D) and normalized boxes (N, 4) of an image's regions, as training saw them."""
        feats = np.asarray(regions.features, dtype=np.float32)
        if len(feats) == 0:
            raise AskError(f"extractor {self.extractor.name!r} found no regions in the {w}x{h} image")
        if feats.shape[1] != self.info.model.visual_feat_dim:
            raise AskError(
                f"the extractor gave {feats.shape[1]}-d features; the model reads {self.info.model.visual_feat_dim}-d"
            )
        feats = feats.astype(self.feature_dtype).astype(np.float32)
        boxes = normalize_boxes(regions.boxes, h, w, len(feats), "the image's regions")
        if self.standardize is not None:
            mean, std = self.standardize
            feats = (feats - mean) / std
        return torch.from_numpy(feats), torch.from_numpy(boxes)

    def _image_regions(self, image: Image.Image, regions: Regions, weights: Tensor | None) -> ImageRegions:
        importance = None if weights is None else weights[: len(regions.boxes)].numpy().astype(np.float64)
        return ImageRegions(image, np.asarray(regions.boxes, dtype=np.float32), importance,
                            region_labels(regions, self.vocab_dirs))  # fmt: skip

    def _tokens(self, text: str, rows: int) -> tuple[Any, bool]:
        tokens = self.tokenizer([text] * rows)
        truncated = len(self.tokenizer.tokenize(text)) > self.max_length - 2
        return tokens, truncated

    def _one(self, image: Any, text: str, cancel: threading.Event | None, probe: bool) -> OneRun:
        """The model on one image and one text (batch of one); with ``probe``, the [CLS]'s attention too."""
        entry, reused, extract_s = self.regions_of(image, cancel)
        feats, boxes = self.model_inputs(entry.regions, *entry.picture.size)
        tokens, truncated = self._tokens(text, 1)
        watch = CrossAttentionProbe(self.model.lxrt_encoder.bert) if probe else contextlib.nullcontext()
        with cancellable([self.model], cancel), watch as seen:
            out = self.model(tokens.input_ids, feats[None], boxes[None], tokens.attention_mask, tokens.token_type_ids)
        weights = None if seen is None or seen.weights is None else seen.weights[0]
        return OneRun(entry, reused, extract_s, out, truncated, weights)

    # -- questions
    @torch.inference_mode()
    def ask(self, image: Any, question: str, top: int = TOP, cancel: threading.Event | None = None) -> AskResult:
        """The ``top`` most probable answers (softmax over the answer table or classes) and region importance."""
        self._expect("question")
        question = check_text(question, self.info.presentation.text)
        start = time.perf_counter()
        run = self._one(image, question, cancel, probe=True)
        logits, picture, regions = run.output, run.entry.picture, run.entry.regions
        probs = logits.float().softmax(-1)[0]
        values, index = probs.topk(min(top, probs.numel()))
        answers = [(self.answers[i], float(v)) for v, i in zip(values.tolist(), index.tolist())]
        return AskResult(question, answers, self._image_regions(picture, regions, run.weights), self.task,
                         time.perf_counter() - start, run.truncated, run.reused, run.extract_seconds)  # fmt: skip

    def ask_many(
        self, image: Any, questions: Sequence[str], top: int = TOP, cancel: threading.Event | None = None
    ) -> list[AskResult]:
        """:meth:`ask` each question about one image; the extractor runs once (at most)."""
        if not questions:
            raise AskError("no question: give at least one")
        return [self.ask(image, q, top, cancel) for q in questions]

    @torch.inference_mode()
    def verify(self, left: Any, right: Any, statement: str, cancel: threading.Event | None = None) -> VerifyResult:
        """A pair task: the probability that ``statement`` is true of the pair (left, right)."""
        self._expect("pair")
        statement = check_text(statement, self.info.presentation.text)
        start = time.perf_counter()
        sides = [self.regions_of(side, cancel) for side in (left, right)]
        feats, boxes, mask = self._padded([self.model_inputs(e.regions, *e.picture.size) for e, _, _ in sides])
        text, _ = self._tokens(statement, 2)
        with cancellable([self.model], cancel), CrossAttentionProbe(self.model.lxrt_encoder.bert) as probe:
            logits = self.model(text.input_ids, feats, boxes, text.attention_mask, text.token_type_ids,
                                None if bool(mask.all()) else mask)  # fmt: skip
        check(cancel)
        prob_true = float(logits.float().softmax(-1)[0, 1])
        weights = [None, None] if probe.weights is None else list(probe.weights)
        drawn = [self._image_regions(e.picture, e.regions, w) for (e, _, _), w in zip(sides, weights)]
        return VerifyResult(statement, prob_true, drawn[0], drawn[1], time.perf_counter() - start,
                            all(reused for _, reused, _ in sides))  # fmt: skip

    @staticmethod
    def _padded(encoded: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
        """Features, boxes and region mask of several images, padded to the most regions."""
        n = max(len(f) for f, _ in encoded)
        feats = torch.zeros(len(encoded), n, encoded[0][0].shape[1])
        boxes = torch.zeros(len(encoded), n, 4)
        mask = torch.zeros(len(encoded), n, dtype=torch.long)
        for row, (f, b) in enumerate(encoded):
            feats[row, : len(f)], boxes[row, : len(b)], mask[row, : len(f)] = f, b, 1
        return feats, boxes, mask

    @torch.inference_mode()
    def rank(
        self, images: Sequence[Any], texts: Sequence[str], cancel: threading.Event | None = None, batch: int = 16
    ) -> RankResult:
        """A retrieval task: the score of every (text, image) pair, ``batch`` pairs per forward pass."""
        self._expect("gallery")
        if not images or not texts:
            raise AskError(f"retrieval needs at least one image and one {self.info.presentation.text}")
        texts = [check_text(t, self.info.presentation.text) for t in texts]
        start = time.perf_counter()
        entries = [self.regions_of(image, cancel) for image in images]
        encoded = [self.model_inputs(e.regions, *e.picture.size) for e, _, _ in entries]
        pairs = [(t, i) for t in range(len(texts)) for i in range(len(images))]
        scores = np.zeros((len(texts), len(images)), dtype=np.float32)
        for at in range(0, len(pairs), batch):
            chunk = pairs[at : at + batch]
            feats, boxes, mask = self._padded([encoded[i] for _, i in chunk])
            tokens = self.tokenizer([texts[t] for t, _ in chunk])
            with cancellable([self.model], cancel):
                out = self.model(tokens.input_ids, feats, boxes, tokens.attention_mask, tokens.token_type_ids,
                                 None if bool(mask.all()) else mask).float()  # fmt: skip
            for (t, i), value in zip(chunk, out.tolist()):
                scores[t, i] = value
        check(cancel)
        drawn = [self._image_regions(e.picture, e.regions, None) for e, _, _ in entries]
        return RankResult(texts, drawn, scores, time.perf_counter() - start, all(r for _, r, _ in entries))

    @torch.inference_mode()
    def locate(self, image: Any, expression: str, cancel: threading.Event | None = None) -> LocateResult:
        """A region-selection task: the region ``expression`` names (the highest-scoring one) and its box."""
        self._expect("box")
        expression = check_text(expression, self.info.presentation.text)
        start = time.perf_counter()
        run = self._one(image, expression, cancel, probe=False)
        scores, picture, regions = run.output, run.entry.picture, run.entry.regions
        probs = scores.float()[0].softmax(-1)
        index = int(probs.argmax())
        x1, y1, x2, y2 = (float(v) for v in np.asarray(regions.boxes, dtype=np.float64)[index])
        box = [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)]
        drawn = self._image_regions(picture, regions, probs)
        return LocateResult(expression, index, box, float(probs[index]), drawn, time.perf_counter() - start,
                            run.truncated, run.reused, run.extract_seconds)  # fmt: skip
