"""Pretraining data: the (image, sentence) corpus, per-example input corruption, and batching.

Each data/lxmert/<split>.json is a JSON list with one entry per image::

    {"img_id": "COCO_val2014_000000000042", "sentf": {source: [sentence, ...]},
     "labelf": {qa_source: [{answer: score}, ...]}}

Every sentence becomes one pair with uid ``<img_id>_<source>_<idx:03d>``; ``labelf`` (QA sources
only) is aligned by index with ``sentf``. Pairs whose image has no features are dropped (counted).
Pairs are kept in flat arrays rather than one dict each: the full corpus has ~9 M of them.

Examples are built in ``PretrainDataset.__getitem__`` (so in DataLoader workers, never in the
model) from a generator seeded with ``(seed, epoch, index)``: a resumed run, any number of
workers or processes, and a re-run all see the same mismatches, masks and sampled answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from engine.batch import Batch
from engine.report import get_logger
from features import FeatureStore, RegionFeatures, open_store

from .masking import IGNORE, frame_tokens, mask_regions, mask_words, sample_answer

SPLIT_FEATURES: dict[str, str] = {
    "mscoco_train": "mscoco_imgfeat/train2014_obj36.tsv",
    "mscoco_nominival": "mscoco_imgfeat/val2014_obj36.tsv",
    "mscoco_minival": "mscoco_imgfeat/val2014_obj36.tsv",
    "vgnococo": "vg_gqa_imgfeat/vg_gqa_obj36.tsv",
}
"""Feature TSV (relative to the data root) of each pretraining split, as in the original."""


def feature_files(splits: Sequence[str], root: Path, topk: int | None) -> dict[Path, int | None]:
    """TSV path -> lines to load for these pretraining splits (unknown names have none)."""
    return {Path(root) / SPLIT_FEATURES[s]: topk for s in splits if s in SPLIT_FEATURES}

TINY_IMAGES = 500  # --tiny: first lines of each TSV
FAST_IMAGES = 5000  # --fast
VALID_IMAGES = 5000  # validation (mscoco_minival = the first 5000 images of val2014)


class CorpusError(ValueError):
    """A pretraining JSON file that does not have the expected layout."""


def split_names(splits: str) -> list[str]:
    """``"mscoco_train,vgnococo"`` -> known split names; unknown names are an error."""
    names = [s.strip() for s in splits.split(",") if s.strip()]
    unknown = [s for s in names if s not in SPLIT_FEATURES]
    if unknown:
        raise ValueError(f"unknown pretraining split(s) {unknown}; known: {sorted(SPLIT_FEATURES)}")
    return names


def image_limit(train: bool, tiny: bool, fast: bool) -> int | None:
    """How many images of each TSV to load: the original's TINY/FAST counts, 5000 for validation."""
    if tiny:
        return TINY_IMAGES
    if fast:
        return FAST_IMAGES
    return None if train else VALID_IMAGES


@dataclass
class PretrainCorpus:
    """Sentence-image pairs with features; pair ``i`` uses image ``ex_img[i]``."""

    splits: list[str]
    stores: list[FeatureStore]
    img_ids: list[str]
    img_store: np.ndarray  # (images,) index into stores
    sources: list[str]
    ex_img: np.ndarray  # (pairs,) index into img_ids
    ex_source: np.ndarray  # (pairs,) index into sources
    ex_sent: np.ndarray  # (pairs,) index of the sentence within sentf[source]
    sents: list[str]
    labels: dict[int, dict[str, float]]  # pair -> normalized, filtered QA label (QA sources only)
    dropped: int = 0
    _labeled_uids: dict[str, int] | None = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return len(self.sents)

    def uid(self, index: int) -> str:
        img = self.img_ids[self.ex_img[index]]
        return f"{img}_{self.sources[self.ex_source[index]]}_{int(self.ex_sent[index]):03d}"

    def source(self, index: int) -> str:
        return self.sources[self.ex_source[index]]

    def regions(self, img: int) -> RegionFeatures:
        return self.stores[self.img_store[img]].get(self.img_ids[img])

    def labeled_uids(self) -> dict[str, int]:
        """uid -> pair index of every pair from a QA source (label possibly empty after filtering)."""
        if self._labeled_uids is None:
            self._labeled_uids = {self.uid(i): i for i in sorted(self.labels)}
        return self._labeled_uids


def _read_json(path: Path) -> list[Any]:
    if not path.is_file():
        raise FileNotFoundError(f"pretraining data not found: {path} (see data/README.md to download it)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        raise CorpusError(f"{path}: malformed JSON at {where}: {err.msg}") from None
    if not isinstance(data, list):
        raise CorpusError(f"{path}: expected a JSON list of image entries, got {type(data).__name__}")
    return data


def _check_entry(path: Path, index: int, entry: Any) -> tuple[str, dict[str, list], dict[str, list]]:
    where = f"{path}: entry {index}"
    if not isinstance(entry, dict) or not isinstance(entry.get("img_id"), str):
        raise CorpusError(f"{where}: expected an object with a string 'img_id', 'sentf' and 'labelf'")
    where += f" (img_id {entry['img_id']!r})"
    sentf, labelf = entry.get("sentf"), entry.get("labelf", {})
    if not isinstance(sentf, dict) or not isinstance(labelf, dict):
        raise CorpusError(f"{where}: 'sentf' and 'labelf' must map a source name to a list")
    for source, sents in sentf.items():
        if not isinstance(sents, list) or not all(isinstance(s, str) for s in sents):
            raise CorpusError(f"{where}: sentf[{source!r}] must be a list of sentences")
        labels = labelf.get(source)
        if labels is not None and (not isinstance(labels, list) or len(labels) != len(sents)):
            count = len(labels) if isinstance(labels, list) else type(labels).__name__
            raise CorpusError(
                f"{where}: labelf[{source!r}] must be a list of {len(sents)} label dicts, got {count}"
            )
        if labels is not None and not all(isinstance(lab, dict) for lab in labels):
            raise CorpusError(f"{where}: labelf[{source!r}] must hold answer -> score dicts")
    return entry["img_id"], sentf, labelf


def filter_label(
    label: Mapping[str, Any], normalize: Callable[[str], str], answers: Mapping[str, int]
) -> dict[str, float]:
    """Answers normalized with ``convert_ans`` and kept only if in the answer table (original order)."""
    out: dict[str, float] = {}
    for ans, score in label.items():
        new = normalize(ans)
        if new in answers:
            out[new] = float(score)
    return out


def load_corpus(
    data_root: str | Path,
    splits: str,
    answers: Mapping[str, int],
    normalize: Callable[[str], str],
    topk: int | None = None,
    progress: bool = True,
) -> PretrainCorpus:
    """Read the JSON of every split and open (building if needed) the feature store of its TSV.

    ``answers`` maps an answer to its QA label id (the pretraining answer table), ``normalize`` is
    ``convert_ans``; ``topk`` limits each TSV to its first images (--tiny / --fast / validation).
    """
    data_root = Path(data_root)
    names = split_names(splits)
    if not names:
        raise ValueError("no pretraining split given")
    stores: list[FeatureStore] = []
    store_of_tsv: dict[Path, int] = {}
    img_index: dict[str, int] = {}
    img_ids: list[str] = []
    img_store: list[int] = []
    sources: list[str] = []
    source_index: dict[str, int] = {}
    ex_img: list[int] = []
    ex_source: list[int] = []
    ex_sent: list[int] = []
    sents: list[str] = []
    labels: dict[int, dict[str, float]] = {}
    dropped = 0
    log = get_logger()
    for name in names:
        tsv = data_root / SPLIT_FEATURES[name]
        if tsv not in store_of_tsv:
            store_of_tsv[tsv] = len(stores)
            stores.append(open_store(tsv, topk=topk, progress=progress))
        store_id = store_of_tsv[tsv]
        store = stores[store_id]
        path = data_root / "lxmert" / f"{name}.json"
        entries = _read_json(path)
        before, dropped_before = len(sents), dropped
        for i, entry in enumerate(tqdm(entries, desc=f"Read {name}", disable=not progress, mininterval=2)):
            img_id, sentf, labelf = _check_entry(path, i, entry)
            if img_id not in store:
                dropped += sum(len(s) for s in sentf.values())
                continue
            img = img_index.get(img_id)
            if img is None:
                img = img_index[img_id] = len(img_ids)
                img_ids.append(img_id)
                img_store.append(store_id)
            for source, source_sents in sentf.items():
                src = source_index.setdefault(source, len(source_index))
                if src == len(sources):
                    sources.append(source)
                source_labels = labelf.get(source)
                for j, sent in enumerate(source_sents):
                    if source_labels is not None:
                        labels[len(sents)] = filter_label(source_labels[j], normalize, answers)
                    ex_img.append(img)
                    ex_source.append(src)
                    ex_sent.append(j)
                    sents.append(sent)
        log.info(
            "Pretraining split %s: %d sentence-image pairs; %d dropped (image not among the %d images of %s)",
            name, len(sents) - before, dropped - dropped_before, len(store), tsv,
        )
    if not sents:
        raise ValueError(f"no sentence-image pair of {splits!r} has features (checked {list(store_of_tsv)})")
    return PretrainCorpus(
        splits=names,
        stores=stores,
        img_ids=img_ids,
        img_store=np.asarray(img_store, dtype=np.int16),
        sources=sources,
        ex_img=np.asarray(ex_img, dtype=np.int32),
        ex_source=np.asarray(ex_source, dtype=np.int16),
        ex_sent=np.asarray(ex_sent, dtype=np.int32),
        sents=sents,
        labels=labels,
        dropped=dropped,
    )


# --------------------------------------------------------------------------------------------------
# Building examples


@dataclass(frozen=True)
class ExampleOptions:
    """How examples are corrupted (``--wordMaskRate``, ``--objMaskRate``, ``--taskMatched``).

    ``drop_mismatched_lm`` removes the masked-LM targets of mismatched pairs (``--lossCompat
    corrected``); the inputs are corrupted the same way in both modes. As in the original, words
    and regions are corrupted even when the masked-LM / masked-object tasks are off (set the rates
    to 0 to avoid it).
    """

    max_seq_length: int = 20
    word_mask_rate: float = 0.15
    obj_mask_rate: float = 0.15
    task_matched: bool = True
    mismatch_prob: float = 0.5
    drop_mismatched_lm: bool = False

    def __post_init__(self) -> None:
        if self.max_seq_length < 3:
            raise ValueError(f"max_seq_length must hold [CLS], [SEP] and a word, got {self.max_seq_length}")
        for name in ("word_mask_rate", "obj_mask_rate", "mismatch_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass
class PretrainExample:
    """One corrupted pair with its targets (numpy arrays; N regions, D feature dims, L tokens)."""

    uid: str
    input_ids: np.ndarray  # (L,) int64, [CLS] ... [SEP] [PAD]...
    input_mask: np.ndarray  # (L,) int64
    lm_labels: np.ndarray  # (L,) int64, original id of masked-LM targets, -1 elsewhere
    is_matched: int  # 1 = the pair's own sentence, 0 = a sentence of another image
    qa_label: int  # answer id, -1 for no QA target
    qa_scored: bool  # the pair comes from a QA source: its prediction counts for QA accuracy
    feats: np.ndarray  # (N, D) float32, corrupted
    boxes: np.ndarray  # (N, 4) float32
    feat_target: np.ndarray  # (N, D) original features, in the store's dtype (float16 by default)
    feat_mask: np.ndarray  # (N,) float32, 1 = selected for masked-region prediction
    obj_labels: np.ndarray  # (N,) int64 detector class (-1 when the store has none)
    obj_conf: np.ndarray  # (N,) float32
    attr_labels: np.ndarray  # (N,) int64
    attr_conf: np.ndarray  # (N,) float32


class RegionPool:
    """Regions of the training images, for the 10 % of masked regions replaced by a random one.

    Drawn as the original does: a uniformly random training pair, then one of its image's regions
    (the training set's, also when corrupting validation examples).
    """

    def __init__(self, corpus: PretrainCorpus) -> None:
        self.corpus = corpus
        self.feat_dim = corpus.stores[0].feat_dim

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        pair = int(rng.integers(len(self.corpus)))
        regions = self.corpus.regions(int(self.corpus.ex_img[pair]))
        return regions.features[int(rng.integers(regions.num_boxes))]


def _labels_or_ignore(regions: RegionFeatures, name: str, n: int, dtype: type) -> np.ndarray:
    value = getattr(regions, name)
    if value is None:  # store without detector outputs: no targets (ids -1, confidence 0)
        return np.full(n, IGNORE if dtype is np.int64 else 0.0, dtype=dtype)
    return np.asarray(value, dtype=dtype)


class PretrainDataset(Dataset):
    """Corrupted pretraining examples; ``set_epoch`` changes every example's random draws."""

    def __init__(
        self,
        corpus: PretrainCorpus,
        tokenizer: Any,
        answer_ids: Mapping[str, int],
        options: ExampleOptions,
        seed: int,
        region_pool: RegionPool | None = None,
    ) -> None:
        dims = {s.feat_dim for s in corpus.stores}
        pool = region_pool if region_pool is not None else RegionPool(corpus)
        if len(dims) != 1 or pool.feat_dim not in dims:
            raise ValueError(f"feature stores of different widths: {sorted(dims | {pool.feat_dim})}")
        one_image = not (corpus.ex_img != corpus.ex_img[0]).any()
        if options.task_matched and options.mismatch_prob > 0 and one_image:
            raise ValueError(f"the matching task needs pairs of at least 2 images; {corpus.splits} has 1")
        self.corpus = corpus
        self.tokenizer = tokenizer
        self.answer_ids = answer_ids
        self.options = options
        self.seed = int(seed)
        self.region_pool = pool
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of ``epoch`` (the loop calls this before each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.corpus)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def __getitem__(self, index: int) -> PretrainExample:
        opts, corpus, tok = self.options, self.corpus, self.tokenizer
        rng = self.rng(index)
        img = int(corpus.ex_img[index])

        # 1. Matching: a sentence of a random pair of another image, redrawn until the image differs.
        sent_index, is_matched = index, 1
        if opts.task_matched and rng.random() < opts.mismatch_prob:
            is_matched = 0
            while int(corpus.ex_img[sent_index]) == img:
                sent_index = int(rng.integers(len(corpus)))

        # 2-3. Tokenize after the swap, truncate, mask words ([CLS]/[SEP] are added afterwards).
        pieces = tok.encode_wordpieces([corpus.sents[sent_index]])[0][: opts.max_seq_length - 2]
        tokens, labels = mask_words(pieces, rng, opts.word_mask_rate, tok.vocab_size, tok.mask_id)
        if not is_matched and opts.drop_mismatched_lm:
            labels[:] = IGNORE
        input_ids, input_mask, lm_labels = frame_tokens(
            tokens, labels, opts.max_seq_length, tok.cls_id, tok.sep_id, tok.pad_id
        )

        # 4-5. Mask regions; the targets are the detector's outputs and the original features.
        regions = corpus.regions(img)
        n = regions.num_boxes
        feats, feat_mask = mask_regions(regions.features, rng, opts.obj_mask_rate, self.region_pool)

        # 6. QA: only for matched pairs of QA sources with an answer in the table.
        label = corpus.labels.get(index) if is_matched else None
        qa_label = sample_answer(label, self.answer_ids, rng) if label else IGNORE

        return PretrainExample(
            uid=corpus.uid(index),
            input_ids=input_ids,
            input_mask=input_mask,
            lm_labels=lm_labels,
            is_matched=is_matched,
            qa_label=qa_label,
            qa_scored=index in corpus.labels,
            feats=feats,
            boxes=np.asarray(regions.boxes, dtype=np.float32),
            feat_target=regions.features,
            feat_mask=feat_mask,
            obj_labels=_labels_or_ignore(regions, "objects_id", n, np.int64),
            obj_conf=_labels_or_ignore(regions, "objects_conf", n, np.float32),
            attr_labels=_labels_or_ignore(regions, "attrs_id", n, np.int64),
            attr_conf=_labels_or_ignore(regions, "attrs_conf", n, np.float32),
        )


# --------------------------------------------------------------------------------------------------
# Batching

TARGET_KEYS = (
    "lm_labels", "is_matched", "qa_labels", "qa_scored", "obj_labels", "obj_conf", "attr_labels", "attr_conf",
    "feat_targets", "feat_mask",
)
"""``Batch.targets`` of a pretraining batch."""


def _check_range(values: np.ndarray, limit: int | None, what: str, uids: list[str]) -> None:
    if limit is None:
        return
    bad = values >= limit
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise ValueError(
            f"example {uids[row]}: {what} {int(values[row].max())} >= the model's {limit} classes "
            "(features from another detector, or a model config with fewer labels?)"
        )


def collate(
    examples: list[PretrainExample], num_object_labels: int | None = None, num_attr_labels: int | None = None
) -> Batch:
    """Stack examples into a ``Batch``; images with fewer regions are zero-padded (visual_mask)."""
    if not examples:
        raise ValueError("cannot collate an empty list of examples")
    b = len(examples)
    n = max(e.feats.shape[0] for e in examples)
    d = examples[0].feats.shape[1]
    feats = np.zeros((b, n, d), np.float32)
    # targets stay in the store's dtype (half the copy and transfer for float16 stores)
    feat_targets = np.zeros((b, n, d), np.result_type(*(e.feat_target.dtype for e in examples)))
    boxes = np.zeros((b, n, 4), np.float32)
    box_mask = np.zeros((b, n), np.int64)
    feat_mask = np.zeros((b, n), np.float32)
    obj_labels = np.full((b, n), IGNORE, np.int64)
    attr_labels = np.full((b, n), IGNORE, np.int64)
    obj_conf = np.zeros((b, n), np.float32)
    attr_conf = np.zeros((b, n), np.float32)
    for i, e in enumerate(examples):
        k = e.feats.shape[0]
        feats[i, :k] = e.feats
        feat_targets[i, :k] = e.feat_target
        boxes[i, :k] = e.boxes
        box_mask[i, :k] = 1
        feat_mask[i, :k] = e.feat_mask
        obj_labels[i, :k] = e.obj_labels
        attr_labels[i, :k] = e.attr_labels
        obj_conf[i, :k] = e.obj_conf
        attr_conf[i, :k] = e.attr_conf
    uids = [e.uid for e in examples]
    _check_range(obj_labels, num_object_labels, "object class", uids)
    _check_range(attr_labels, num_attr_labels, "attribute class", uids)
    input_ids = torch.from_numpy(np.stack([e.input_ids for e in examples]))
    targets = {
        "lm_labels": torch.from_numpy(np.stack([e.lm_labels for e in examples])),
        "is_matched": torch.tensor([e.is_matched for e in examples], dtype=torch.long),
        "qa_labels": torch.tensor([e.qa_label for e in examples], dtype=torch.long),
        "qa_scored": torch.tensor([e.qa_scored for e in examples], dtype=torch.bool),
        "obj_labels": torch.from_numpy(obj_labels),
        "obj_conf": torch.from_numpy(obj_conf),
        "attr_labels": torch.from_numpy(attr_labels),
        "attr_conf": torch.from_numpy(attr_conf),
        "feat_targets": torch.from_numpy(feat_targets),
        "feat_mask": torch.from_numpy(feat_mask),
    }
    return Batch(
        input_ids=input_ids,
        attention_mask=torch.from_numpy(np.stack([e.input_mask for e in examples])),
        token_type_ids=torch.zeros_like(input_ids),
        feats=torch.from_numpy(feats),
        boxes=torch.from_numpy(boxes),
        visual_mask=None if box_mask.all() else torch.from_numpy(box_mask),
        targets=targets,
        ids=uids,
    )
