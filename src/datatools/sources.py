"""Manifest of the files the original LXMERT release publishes, and where each one lands locally.

Every entry is fetched from ``<base>/<path>``. The default base is the original UNC server (or the
pinned lil-lab/nlvr commit for the raw NLVR2 annotations); a mirror that keeps the same layout can be
used instead by passing another base URL (http(s)://, s3://bucket/prefix or file:///dir).
Destinations start with ``data/`` or ``snap/`` and are resolved against the chosen roots, so the files
end up where the original scripts expect them (e.g. ``snap/pretrained/model_LXRT.pth``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lxrt import bert_hub

UNC_BASE = "https://nlp.cs.unc.edu/data"
# BERT-base uncased on the HuggingFace hub: the library's pinned table (revision, sizes, SHA-256).
BERT_REVISION = bert_hub.BERT_REVISION
BERT_BASE = bert_hub.BERT_BASE_URL
# The lil-lab/nlvr commit that the original repository pins as its data/nlvr2/nlvr submodule.
NLVR_COMMIT = "3afe9e57355ab49fb92a0dc231436e583d67d125"
NLVR_BASE = f"https://raw.githubusercontent.com/lil-lab/nlvr/{NLVR_COMMIT}"
# The PyTorch port of the bottom-up-attention detector's weights (used by the butd extractor).
HF_BASE = "https://huggingface.co"
# The released fine-tuned models in HF transformers' LxmertForQuestionAnswering layout, imported into task
# snapshots after the download (``python -m datatools.hf_import``). VQA is pinned to the commit that last
# changed its weights. For GQA only the short id of its last commit (4055268) is known here, not the full
# one the hub's file URLs need: its files are read from ``main`` and its weights pinned by their SHA-256.
VQA_MODEL_REVISION = "945e6172c6c93befbe8d64683f22d34cb567e8ab"
GQA_MODEL_REVISION = "main"


@dataclass(frozen=True)
class Source:
    """One published file.

    ``path`` is its location below the base URL (also its location on a mirror); ``dest`` is where it
    is stored, starting with ``data/`` or ``snap/``. Archives list the files they unpack to in
    ``outputs``; the archive is unpacked next to them and then deleted unless asked to keep it.
    ``size``/``sha256`` are verified when known; ``approx_size`` is the size the original README states.
    """

    name: str
    group: str
    path: str
    dest: str
    base: str = UNC_BASE
    outputs: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None
    approx_size: str = ""

    @property
    def archive(self) -> bool:
        return bool(self.outputs)

    @property
    def url(self) -> str:
        return self.url_from(None)

    def url_from(self, base_url: str | None) -> str:
        """The URL of this file on ``base_url`` (a mirror), or on its original server when None."""
        return f"{(base_url or self.base).rstrip('/')}/{self.path}"


GROUPS: dict[str, str] = {
    "pretrained-model": "released LXMERT weights (snap/pretrained/model_LXRT.pth)",
    "pretrained-epoch20": "weights from the repository's own 20-epoch pretraining run",
    "vqa": "VQA 2.0 question JSON files (train, nominival, minival, test)",
    "gqa": "GQA balanced question JSON files (train, valid, testdev, submit)",
    "nlvr2": "raw NLVR2 annotations from lil-lab/nlvr (converted to data/nlvr2/*.json separately)",
    "pretrain": "aggregated pretraining JSON files (data/lxmert, ~700 MB together)",
    "features-coco": "Faster R-CNN obj36 features for MS COCO train2014, val2014, test2015",
    "features-vg-gqa": "obj36 features for Visual Genome + GQA test images, and GQA testdev (30 GB together)",
    "features-nlvr2": "obj36 features for NLVR2 train, valid, test",
    "bert": "BERT-base uncased from the HuggingFace hub (snap/bert/bert-base-uncased; fetched on first use)",
    "butd-detector": "bottom-up-attention Faster R-CNN weights for --extractor butd (snap/detector, 262 MB)",
    "vqa-model": "the released fine-tuned VQA model (HF unc-nlp/lxmert-vqa-uncased), imported as "
    "snap/vqa/lxmert-vqa-uncased/BEST.pth (856 MB)",
    "gqa-model": "the released fine-tuned GQA model (HF unc-nlp/lxmert-gqa-uncased), imported as "
    "snap/gqa/lxmert-gqa-uncased/BEST.pth (848 MB)",
}


def _json(group: str, folder: str, stem: str) -> Source:
    return Source(
        name=f"{folder}/{stem}",
        group=group,
        path=f"lxmert_data/{folder}/{stem}.json",
        dest=f"data/{folder}/{stem}.json",
    )


def _features(group: str, folder: str, stem: str, approx: str) -> Source:
    return Source(
        name=f"{folder}/{stem}",
        group=group,
        path=f"lxmert_data/{folder}/{stem}.zip",
        dest=f"data/{folder}/{stem}.zip",
        outputs=(f"data/{folder}/{stem}.tsv",),
        approx_size=approx,
    )


def _bert(file: bert_hub.BertFile) -> Source:
    return Source(
        name=f"bert/{bert_hub.BERT_BASE_NAME}/{file.name}",
        group="bert",
        path=file.name,
        dest=f"snap/bert/{bert_hub.BERT_BASE_NAME}/{file.name}",
        base=BERT_BASE,
        size=file.size,
        sha256=file.sha256,
    )


def _hf_model(group: str, repo: str, revision: str, file: str, size: int | None = None,
              sha256: str | None = None, approx: str = "") -> Source:
    """A file of a released HF model, stored under ``snap/hf/<model>/`` until it is imported."""
    model = repo.split("/")[-1]
    return Source(
        name=f"hf/{model}/{file}",
        group=group,
        path=f"{repo}/resolve/{revision}/{file}",
        dest=f"snap/hf/{model}/{file}",
        base=HF_BASE,
        size=size,
        sha256=sha256,
        approx_size=approx,
    )


def _nlvr_raw(stem: str, size: int | None = None, sha256: str | None = None) -> Source:
    return Source(
        name=f"nlvr2/raw/{stem}",
        group="nlvr2",
        path=f"nlvr2/data/{stem}.json",
        dest=f"data/nlvr2/nlvr/nlvr2/data/{stem}.json",
        base=NLVR_BASE,
        size=size,
        sha256=sha256,
    )


SOURCES: tuple[Source, ...] = (
    Source(
        name="pretrained/model_LXRT",
        group="pretrained-model",
        path="model_LXRT.pth",
        dest="snap/pretrained/model_LXRT.pth",
        approx_size="870 MB",
    ),
    Source(
        name="pretrained/Epoch20_LXRT",
        group="pretrained-epoch20",
        path="github_pretrain/lxmert20/Epoch20_LXRT.pth",
        dest="snap/pretrained/Epoch20_LXRT.pth",
        approx_size="870 MB",
    ),
    *(_json("vqa", "vqa", s) for s in ("train", "nominival", "minival", "test")),
    *(_json("gqa", "gqa", s) for s in ("train", "valid", "testdev", "submit")),
    _nlvr_raw("train"),
    _nlvr_raw("dev", 3762423, "7c44bc7831c0e060ae7d31807c91cc0c9791322363d8d86828fb44a77f09ae88"),
    _nlvr_raw("test1", 3780579, "f49a6c512d6868f8faf3b3bbe1a816bf5e8643f13c1bf26e527a21b84e27e2ec"),
    *(_json("pretrain", "lxmert", s) for s in ("mscoco_train", "mscoco_nominival", "mscoco_minival", "vgnococo")),
    _features("features-coco", "mscoco_imgfeat", "train2014_obj36", "17 GB"),
    _features("features-coco", "mscoco_imgfeat", "val2014_obj36", "8 GB"),
    _features("features-coco", "mscoco_imgfeat", "test2015_obj36", "16 GB"),
    _features("features-vg-gqa", "vg_gqa_imgfeat", "vg_gqa_obj36", ""),
    _features("features-vg-gqa", "vg_gqa_imgfeat", "gqa_testdev_obj36", ""),
    _features("features-nlvr2", "nlvr2_imgfeat", "train_obj36", "21 GB"),
    _features("features-nlvr2", "nlvr2_imgfeat", "valid_obj36", "1.6 GB"),
    _features("features-nlvr2", "nlvr2_imgfeat", "test_obj36", "1.6 GB"),
    *(_bert(f) for f in bert_hub.bert_files(bert_hub.SAFETENSORS)),
    Source(
        name="detector/frcnn-vg-finetuned",
        group="butd-detector",
        path="unc-nlp/frcnn-vg-finetuned/resolve/main/pytorch_model.bin",
        dest="snap/detector/pytorch_model.bin",
        base=HF_BASE,
        approx_size="262 MB",
    ),
    _hf_model("vqa-model", "unc-nlp/lxmert-vqa-uncased", VQA_MODEL_REVISION, "config.json", 880),
    # size and SHA-256 of the weights from a Git LFS pointer of this file (855915865 bytes: the 856 MB the
    # model page lists)
    _hf_model("vqa-model", "unc-nlp/lxmert-vqa-uncased", VQA_MODEL_REVISION, "pytorch_model.bin", 855915865,
              "22a5f430729071f0ac40255db9f90e65a9741006df456bcb20d7a52d143afabe", "856 MB"),
    _hf_model("gqa-model", "unc-nlp/lxmert-gqa-uncased", GQA_MODEL_REVISION, "config.json", 880),
    # SHA-256 from the model page's Git LFS details (848 MB; the page does not give the exact byte count)
    _hf_model("gqa-model", "unc-nlp/lxmert-gqa-uncased", GQA_MODEL_REVISION, "pytorch_model.bin", None,
              "17865ec9f41f90894fc637e77dbff135b55038efd384a617a020a7dc4026a966", "848 MB"),
)


def select(selectors: Iterable[str], sources: tuple[Source, ...] = SOURCES) -> list[Source]:
    """Entries named by group (``vqa``), by entry name (``vqa/train``) or ``all``, in manifest order."""
    wanted: set[str] = set()
    for sel in selectors:
        if sel == "all":
            wanted.update(s.name for s in sources)
            continue
        hits = [s.name for s in sources if sel in (s.group, s.name)]
        if not hits:
            raise ValueError(
                f"unknown group or file {sel!r}; groups are: all, {', '.join(GROUPS)} "
                "(use --list to see every file name)"
            )
        wanted.update(hits)
    return [s for s in sources if s.name in wanted]


def resolve(dest: str, data_root: Path, snap_root: Path) -> Path:
    """Map a manifest destination (``data/...`` or ``snap/...``) onto the chosen local roots."""
    top, _, rest = dest.partition("/")
    roots = {"data": data_root, "snap": snap_root}
    if top not in roots or not rest:
        raise ValueError(f"manifest destination {dest!r} must start with data/ or snap/")
    return Path(roots[top]) / rest
