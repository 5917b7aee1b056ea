"""Plumbing shared by the task datasets: splits, debug subsets, record checks, image features, collate."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.batch import Batch
from features import FeatureStore, open_store
from tasks.answers import AnswerTable, DataFormatError, load_json

if TYPE_CHECKING:
    from lxrt.tokenizer import LXRTTokenizer

log = logging.getLogger(__name__)

TINY_IMG_NUM = 512  # --tiny: 512 images (the first 512 lines of each feature TSV, or see TaskDataset.subset_by)
FAST_IMG_NUM = 5000  # --fast: 5000 images
MINIVAL_IMG_NUM = 5000  # minival = the first 5000 images of val2014


def subset_topk(tiny: bool = False, fast: bool = False) -> int | None:
    """Subset size of ``--tiny`` / ``--fast`` (None: all); tiny wins, as in the original."""
    if tiny:
        return TINY_IMG_NUM
    if fast:
        return FAST_IMG_NUM
    return None


def parse_splits(splits: str | Sequence[str]) -> list[str]:
    """``"train,nominival"`` -> ``["train", "nominival"]``; an empty name is an error."""
    names = splits.split(",") if isinstance(splits, str) else list(splits)
    names = [n.strip() for n in names]
    if not names or any(not n for n in names):
        raise ValueError(f"bad split list {splits!r}: expected comma-separated names like 'train,nominival'")
    return names


def merge_topk(a: int | None, b: int | None) -> int | None:
    """Two loads of one TSV cover the longer prefix (None = the whole file)."""
    if a is None or b is None:
        return None
    return max(a, b)


def records_on_first_images(
    records: list[dict[str, Any]], sources: list[Path], image_keys: Sequence[str], n: int
) -> tuple[list[dict[str, Any]], list[Path]]:
    """The records (and their sources) whose images are all among the images of the first ``n`` records."""
    images = {rec[k] for rec in records[:n] for k in image_keys}
    keep = [i for i, rec in enumerate(records) if all(rec[k] in images for k in image_keys)]
    return [records[i] for i in keep], [sources[i] for i in keep]


def load_records(path: Path, what: str) -> list[dict[str, Any]]:
    """A JSON file holding a list of objects (one per question / image)."""
    data = load_json(path)
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of {what} records, got {type(data).__name__}")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise DataFormatError(f"{path}: record {i} is {type(rec).__name__}, expected an object")
    return data


def require(rec: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path, index: int) -> Any:
    """``rec[key]``, checked to be of ``kind``; errors name the file, the record and the field."""
    if key not in rec:
        raise DataFormatError(f"{path}: record {index} has no {key!r} field")
    value = rec[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int subclass, but true/false is never a valid id or label here
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise DataFormatError(
            f"{path}: record {index} field {key!r} is {type(value).__name__} {value!r:.60}, expected {names}"
        )
    return value


def check_label(label: Any, path: Path, index: int, qid: Any) -> dict[str, float]:
    """A ``{answer: score}`` label dict with numeric scores."""
    if not isinstance(label, dict) or not all(
        isinstance(a, str) and isinstance(s, (int, float)) and not isinstance(s, bool) for a, s in label.items()
    ):
        raise DataFormatError(
            f"{path}: record {index} (question {qid!r}) has label {label!r:.80}, expected {{answer: score}}"
        )
    return label


class MissingFeaturesError(LookupError):
    """A record whose image is not in the loaded features (raised in strict mode)."""


class ImageFeatures:
    """Region features of images spread over one or more stores, addressed by image id.

    An id present in several stores is read from the first one listed.
    """

    def __init__(self, stores: Mapping[str, FeatureStore]) -> None:
        if not stores:
            raise ValueError("ImageFeatures needs at least one feature store")
        self.stores = dict(stores)
        dims = {name: s.feat_dim for name, s in self.stores.items()}
        if len(set(dims.values())) > 1:
            raise ValueError(f"feature stores have different feature widths: {dims}")
        self.feat_dim = next(iter(dims.values()))

    @classmethod
    def open(cls, files: Mapping[Path, int | None], dtype: str = "float16") -> ImageFeatures:
        """Open (converting once if needed) the store of each TSV, restricted to its first topk lines."""
        return cls({str(path): open_store(path, topk=topk, dtype=dtype) for path, topk in files.items()})

    def __contains__(self, img_id: object) -> bool:
        return any(img_id in s for s in self.stores.values())

    def __len__(self) -> int:
        return sum(len(s) for s in self.stores.values())

    def _store_index(self, img_id: str) -> int:
        for i, store in enumerate(self.stores.values()):
            if img_id in store:
                return i
        names = ", ".join(self.stores)
        raise MissingFeaturesError(f"image id {img_id!r} is in none of the loaded feature stores ({names})")

    def gather(
        self, img_ids: Sequence[str], num_boxes: int | None = None, dtype: Any = np.float32
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Features (B, N, D), normalized boxes (B, N, 4) and mask (B, N) or None, in ``img_ids`` order."""
        stores = list(self.stores.values())
        if len(stores) == 1:
            return stores[0].gather(img_ids, num_boxes=num_boxes, dtype=dtype)
        which = np.array([self._store_index(i) for i in img_ids], dtype=np.int64)
        parts = []
        for s in np.unique(which):
            rows = np.flatnonzero(which == s)
            parts.append((rows, *stores[s].gather([img_ids[r] for r in rows], num_boxes=num_boxes, dtype=dtype)))
        n = max(p[1].shape[1] for p in parts)
        feats = np.zeros((len(img_ids), n, self.feat_dim), dtype=parts[0][1].dtype)
        boxes = np.zeros((len(img_ids), n, 4), dtype=np.float32)
        mask = np.zeros((len(img_ids), n), dtype=np.int64)
        for rows, f, b, m in parts:
            k = f.shape[1]
            feats[rows, :k] = f
            boxes[rows, :k] = b
            mask[rows, :k] = 1 if m is None else m
        return feats, boxes, (None if mask.all() else mask)


def drop_missing(
    records: list[dict[str, Any]],
    sources: list[Path],
    image_keys: Sequence[str],
    features: ImageFeatures,
    what: str,
    strict: bool,
    id_key: str,
    subset: bool = False,
) -> list[dict[str, Any]]:
    """Keep the records whose images are all loaded; log the number dropped (``strict``: raise).

    Drops are expected with ``subset`` (tiny/fast feature prefixes) and logged at INFO, otherwise
    they point at incomplete feature files and are logged as a warning.
    """
    kept = []
    first_missing: tuple[str, dict[str, Any], Path] | None = None
    for rec, src in zip(records, sources):
        missing = next((rec[k] for k in image_keys if rec[k] not in features), None)
        if missing is None:
            kept.append(rec)
        elif first_missing is None:
            first_missing = (missing, rec, src)
    dropped = len(records) - len(kept)
    if first_missing is not None:
        img_id, rec, src = first_missing
        if strict:
            raise MissingFeaturesError(
                f"{src}: {id_key} {rec[id_key]!r} needs image {img_id!r}, which is not in the loaded "
                f"features ({', '.join(features.stores)}); {dropped} of {len(records)} records lack images"
            )
        log.log(
            logging.INFO if subset else logging.WARNING,
            "%s: dropped %d of %d records whose images are not in the loaded features (first: image %r)",
            what, dropped, len(records), img_id,
        )  # fmt: skip
    log.info("%s: using %d records", what, len(kept))
    return kept


class TaskDataset(Dataset):
    """Records of comma-separated splits (``<root>/<task>/<split>.json``) whose images are loaded.

    Subclasses name the task folder, the id field, the image fields, which feature TSV each split
    reads (``feature_files``) and, if the default is not enough, how a record is checked
    (``check_record``). ``__getitem__`` returns the record itself (a small dict); the collator
    (``collator``) tokenizes and gathers features.

    ``topk`` (``--tiny``/``--fast``) is a subset size; ``subset_by`` says how it is taken:
    ``"feature_lines"`` loads the first ``topk`` lines of each feature file (the original's rule, for
    one feature file per split), ``"records"`` keeps the records on the images of the first ``topk``
    records and loads the feature files whole (for one feature file shared by several splits).
    """

    task: str = ""
    id_key: str = "question_id"
    image_keys: tuple[str, ...] = ("img_id",)
    label_classes: tuple[str, ...] | None = None
    """String class names of ``label`` (None: labels are checked by ``check_record`` of the task)."""
    label_key: str = "label"
    """The field holding a record's gold answer (absent in unlabelled test splits)."""
    subset_by: str = "feature_lines"

    def __init__(
        self,
        splits: str | Sequence[str],
        root: str | Path = "data",
        topk: int | None = None,
        strict: bool = False,
        features: ImageFeatures | None = None,
        feature_dtype: str = "float16",
    ) -> None:
        self.splits = parse_splits(splits)
        self.name = ",".join(self.splits)
        self.root = Path(root)
        self.topk = topk
        records: list[dict[str, Any]] = []
        sources: list[Path] = []
        seen: dict[Any, Path] = {}
        for split in self.splits:
            path = self.root / self.task / f"{split}.json"
            for index, rec in enumerate(load_records(path, self.task)):
                self.check_record(rec, path, index)
                key = rec[self.id_key]
                if key in seen:
                    raise DataFormatError(f"{path}: record {index}: {self.id_key} {key!r} also appears in {seen[key]}")
                seen[key] = path
                records.append(rec)
                sources.append(path)
        self.id2datum: dict[Any, dict[str, Any]] = {rec[self.id_key]: rec for rec in records}
        if self.subset_by not in ("feature_lines", "records"):
            raise ValueError(f"{type(self).__name__}.subset_by must be 'feature_lines' or 'records'")
        by_lines = self.subset_by == "feature_lines"
        if topk is not None and not by_lines:
            records, sources = records_on_first_images(records, sources, self.image_keys, topk)
        if features is None:
            lines = topk if by_lines else None
            features = ImageFeatures.open(self.feature_files(self.splits, self.root, lines), dtype=feature_dtype)
        self.features = features
        what = f"{self.task} {self.name}"
        subset = topk is not None and by_lines
        self.data = drop_missing(records, sources, self.image_keys, features, what, strict, self.id_key, subset)
        kept = {id(rec) for rec in self.data}
        self.dropped: list[dict[str, Any]] = [rec for rec in records if id(rec) not in kept]
        """Records dropped because an image is not in the loaded features (see ``tasks.completeness``)."""
        self.split_of: dict[Any, str] = {key: path.stem for key, path in seen.items()}

    @classmethod
    def feature_files(cls, splits: Sequence[str], root: Path, topk: int | None) -> dict[Path, int | None]:
        """TSV path -> number of leading lines to load (None: all) for these splits."""
        raise NotImplementedError

    def check_record(self, rec: dict[str, Any], path: Path, index: int) -> None:
        """Raise ``DataFormatError`` naming file and record if ``rec`` lacks a field the task needs.

        The default checks ``id_key`` (str or int), the image fields and ``sent`` (str) and, when
        ``label_classes`` is set, that a ``label`` is one of them.
        """
        ident = require(rec, self.id_key, (str, int), path, index)
        for key in (*self.image_keys, "sent"):
            require(rec, key, str, path, index)
        if self.label_classes is not None and "label" in rec and rec["label"] not in self.label_classes:
            raise DataFormatError(
                f"{path}: record {index} ({self.id_key} {ident!r}) has label {rec['label']!r:.60}, "
                f"expected one of {list(self.label_classes)}"
            )

    def collator(
        self,
        tokenizer: LXRTTokenizer,
        max_length: int = 20,
        num_boxes: int | None = None,
        feat_dtype: Any = np.float32,
    ) -> TextImageCollator:
        """The collate function of this dataset's examples (features in ``feat_dtype``; None: the store's)."""
        return TextImageCollator(
            tokenizer, self.features, max_length, num_boxes, feat_dtype,
            id_key=self.id_key, image_keys=self.image_keys, classes=self.label_classes,
        )

    @property
    def has_labels(self) -> bool:
        return bool(self.data) and all(self.label_key in rec for rec in self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.data[index]


class TextImageCollator:
    """Batch of B examples, each a sentence with ``len(image_keys)`` images: tokenized sentences,
    region features and integer class targets.

    With one image key (``img_id``) row i is example i; with k keys (NLVR2's ``img0, img1``) the
    batch holds kB (sentence, image) pairs, rows ki .. ki+k-1 being example i's sentence with each of
    its images. Targets are ``{"label": (B,) int64}`` when every example has a label (an int, or one
    of ``classes`` when given), ``{}`` when none has (test splits); ``ids`` are the ``id_key`` values.
    """

    def __init__(
        self,
        tokenizer: LXRTTokenizer,
        features: ImageFeatures,
        max_length: int = 20,
        num_boxes: int | None = None,
        feat_dtype: Any = np.float32,
        *,
        id_key: str = "question_id",
        image_keys: Sequence[str] = ("img_id",),
        classes: Sequence[str] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.features = features
        self.max_length = max_length
        self.num_boxes = num_boxes
        self.feat_dtype = feat_dtype
        self.id_key = id_key
        self.image_keys = tuple(image_keys)
        self.class_index = None if classes is None else {c: i for i, c in enumerate(classes)}

    def label_targets(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Targets of a batch whose examples all have a ``label``."""
        if self.class_index is None:
            return {"label": torch.tensor([e["label"] for e in examples], dtype=torch.int64)}
        rows = []
        for e in examples:
            if e["label"] not in self.class_index:
                raise ValueError(f"{self.id_key} {e[self.id_key]!r}: label {e['label']!r} is not one of "
                                 f"{list(self.class_index)}")
            rows.append(self.class_index[e["label"]])
        return {"label": torch.tensor(rows, dtype=torch.int64)}

    def targets(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        labelled = sum("label" in e for e in examples)
        if labelled == 0:
            return {}
        if labelled != len(examples):
            raise ValueError("a batch mixes examples with and without labels (labelled and test splits?)")
        return self.label_targets(examples)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> Batch:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        k = len(self.image_keys)
        sents = [e["sent"] for e in examples for _ in range(k)]
        images = [e[key] for e in examples for key in self.image_keys]
        return text_image_batch(
            self.tokenizer(sents, max_length=self.max_length),
            self.features.gather(images, num_boxes=self.num_boxes, dtype=self.feat_dtype),
            targets=self.targets(examples),
            ids=[e[self.id_key] for e in examples],
        )


class QACollator(TextImageCollator):
    """Batch of VQA/GQA questions: targets ``{"target": (B, num_answers) float32}`` of soft answer
    scores. Answers outside the table raise, or are skipped when ``skip_unknown`` (GQA)."""

    def __init__(
        self,
        tokenizer: LXRTTokenizer,
        features: ImageFeatures,
        answers: AnswerTable,
        max_length: int = 20,
        num_boxes: int | None = None,
        feat_dtype: Any = np.float32,
        skip_unknown: bool = False,
    ) -> None:
        super().__init__(tokenizer, features, max_length, num_boxes, feat_dtype, id_key="question_id")
        self.answers = answers
        self.skip_unknown = skip_unknown

    def label_targets(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [
            self.answers.target(e["label"], self.skip_unknown, where=f"question {e['question_id']!r}") for e in examples
        ]
        return {"target": torch.from_numpy(np.stack(rows))}


def text_image_batch(
    text: Any,
    regions: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    targets: dict[str, torch.Tensor],
    ids: list[Any],
) -> Batch:
    """A ``Batch`` from a tokenized batch and the (feats, boxes, mask) of ``ImageFeatures.gather``."""
    feats, boxes, mask = regions
    return Batch(
        input_ids=text.input_ids,
        attention_mask=text.attention_mask,
        token_type_ids=text.token_type_ids,
        feats=torch.as_tensor(feats),  # numpy from a store, or tensors already on the device
        boxes=torch.as_tensor(boxes),
        visual_mask=None if mask is None else torch.as_tensor(mask),
        targets=targets,
        ids=ids,
    )


class QADataset(TaskDataset):
    """VQA / GQA questions with an answer table; ``skip_unknown_answers`` is GQA's leniency."""

    skip_unknown_answers: bool = False

    def __init__(
        self,
        splits: str | Sequence[str],
        root: str | Path = "data",
        topk: int | None = None,
        strict: bool = False,
        answers: AnswerTable | None = None,
        features: ImageFeatures | None = None,
        feature_dtype: str = "float16",
    ) -> None:
        self.answers = answers if answers is not None else AnswerTable.for_task(self.task, root)
        super().__init__(splits, root, topk, strict, features, feature_dtype)

    @property
    def num_answers(self) -> int:
        return self.answers.num_answers

    def collator(
        self,
        tokenizer: LXRTTokenizer,
        max_length: int = 20,
        num_boxes: int | None = None,
        feat_dtype: Any = np.float32,
    ) -> QACollator:
        return QACollator(
            tokenizer, self.features, self.answers, max_length, num_boxes, feat_dtype,
            skip_unknown=self.skip_unknown_answers,
        )
