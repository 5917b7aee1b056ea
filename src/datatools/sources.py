"""Manifest of the files the original LXMERT release publishes, and where each one lands locally.

Every entry is fetched from ``<base>/<path>``. The default base is the original UNC server (or the
pinned lil-lab/nlvr commit for the raw NLVR2 annotations); a mirror that keeps the same layout can be
used instead by passing another base URL (http(s)://, s3://bucket/prefix or file:///dir).
Destinations start with ``data/`` or ``snap/`` and are resolved against the chosen roots, so the files
end up where the original scripts expect them (e.g. ``snap/pretrained/model_LXRT.pth``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxrt import bert_hub

MANIFEST_FILE = Path(__file__).with_name("manifest.json")
"""The release's files as data: groups, entries (by kind) and released models (``hf_import``)."""
_MANIFEST: dict[str, Any] = json.loads(MANIFEST_FILE.read_text(encoding="utf-8"))
BASES: dict[str, str] = dict(_MANIFEST["bases"])
UNC_BASE = BASES["unc"]
NLVR_BASE = BASES["nlvr"]  # the lil-lab/nlvr commit the original pins as its data/nlvr2/nlvr submodule
HF_BASE = BASES["hf"]
# BERT-base uncased on the HuggingFace hub: the library's pinned table (revision, sizes, SHA-256).
BERT_REVISION = bert_hub.BERT_REVISION
BERT_BASE = bert_hub.BERT_BASE_URL


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


GROUPS: dict[str, str] = dict(_MANIFEST["groups"])


def _entries(spec: dict[str, Any]) -> list[Source]:
    """The ``Source`` entries one manifest item describes (see ``manifest.json``'s kinds)."""
    kind = spec["kind"]
    opt = {k: spec[k] for k in ("size", "sha256", "approx_size") if k in spec}
    if kind == "file":
        base = BASES[spec.get("base", "unc")]
        return [Source(spec["name"], spec["group"], spec["path"], spec["dest"], base=base, **opt)]
    if kind == "json":
        folder = spec["folder"]
        return [Source(f"{folder}/{stem}", spec["group"], f"lxmert_data/{folder}/{stem}.json",
                       f"data/{folder}/{stem}.json") for stem in spec["stems"]]  # fmt: skip
    if kind == "features":
        folder, stem = spec["folder"], spec["stem"]
        return [Source(f"{folder}/{stem}", spec["group"], f"lxmert_data/{folder}/{stem}.zip",
                       f"data/{folder}/{stem}.zip", outputs=(f"data/{folder}/{stem}.tsv",), **opt)]  # fmt: skip
    if kind == "bert":
        return [Source(f"bert/{bert_hub.BERT_BASE_NAME}/{f.name}", "bert", f.name,
                       f"snap/bert/{bert_hub.BERT_BASE_NAME}/{f.name}", base=BERT_BASE, size=f.size, sha256=f.sha256)
                for f in bert_hub.bert_files(bert_hub.SAFETENSORS)]  # fmt: skip
    if kind == "hf":  # a released HF model's file, kept under snap/hf/<model>/ until it is imported
        model, file = spec["repo"].split("/")[-1], spec["file"]
        return [Source(f"hf/{model}/{file}", spec["group"], f"{spec['repo']}/resolve/{spec['revision']}/{file}",
                       f"snap/hf/{model}/{file}", base=HF_BASE, **opt)]  # fmt: skip
    raise ValueError(f"{MANIFEST_FILE}: unknown entry kind {kind!r}")


SOURCES: tuple[Source, ...] = tuple(e for spec in _MANIFEST["sources"] for e in _entries(spec))
RELEASES: tuple[dict[str, Any], ...] = tuple(_MANIFEST["releases"])
"""Released fine-tuned models: their download group, HF repo, task, answer table and text length."""


def select(selectors: Iterable[str], sources: tuple[Source, ...] = SOURCES) -> list[Source]:
    """Entries named by group, by entry name (``<folder>/<stem>``) or ``all``, in manifest order."""
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
