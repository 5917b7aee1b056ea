"""Feature store details: resuming a partial store, the metadata written, the reader's checks and views."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from features.store import FeatureStore, StoreError, store_path_for, store_status, tsv_source
from features.store_writer import StoreWriter, _NpyAppender, partial_path

DIM = 6
LABELS = ("objects_id", "objects_conf", "attrs_id", "attrs_conf")


def image(i: int, n: int) -> dict:
    """One image's arguments for ``StoreWriter.add``: ``n`` regions, every detector output, ids with a non-ASCII
    letter (the ids file is UTF-8 whatever the locale)."""
    rng = np.random.default_rng(100 + i)
    h, w = 50 + i, 70 + 2 * i
    x1, y1 = rng.uniform(0, w / 2, n), rng.uniform(0, h / 2, n)
    boxes = np.stack([x1, y1, x1 + w / 3, y1 + h / 3], axis=1)
    return {
        "img_id": f"bild-ä{i}",
        "img_h": h,
        "img_w": w,
        "boxes_px": boxes,
        "features": rng.standard_normal((n, DIM)).astype(np.float32),
        "objects_id": rng.integers(0, 1600, (n, 1)),  # a column: flattened to one value per region
        "objects_conf": rng.random(n),
        "attrs_id": rng.integers(0, 400, n),
        "attrs_conf": rng.random(n),
    }


COUNTS = (3, 5, 2, 4, 3, 4)  # the least and most regions come before the checkpoint: both must survive a resume
SOURCE = {"kind": "test", "path": Path("/nowhere/x.tsv"), "size": 7}  # a Path: the journal stores str()


def all_files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name != "meta.json"}


def meta_of(path: Path) -> dict:
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    meta.pop("created")
    return meta


def write_in_one_go(out: Path) -> Path:
    with StoreWriter(out, DIM, dtype="float32", source=SOURCE) as w:
        for i, n in enumerate(COUNTS):
            w.add(**image(i, n))
    return out


def test_resumed_store_equals_one_written_in_one_go(tmp_path: Path) -> None:
    """A partial store continued after an abort (rows added after the last checkpoint dropped) is published
    byte for byte like a store written in one run: every array, the ids, the metadata (box counts, labels),
    and the caller's ``extra`` state comes back."""
    whole = write_in_one_go(tmp_path / "whole.store")
    out = tmp_path / "x.store"
    w = StoreWriter(out, DIM, dtype="float32", source=SOURCE, resumable=True)
    for i in range(3):
        w.add(**image(i, COUNTS[i]))
    w.extra["next_line"] = 3
    w.checkpoint()
    w.add(**image(3, COUNTS[3]))  # not checkpointed: lost with the abort
    w.abort()
    journal = json.loads((partial_path(out) / "journal.json").read_text())
    assert journal["images"] == 3 and journal["regions"] == sum(COUNTS[:3])
    assert (journal["min_boxes"], journal["max_boxes"]) == (2, 5)
    assert journal["labels"] == list(LABELS)

    w = StoreWriter(out, DIM, dtype="float32", source=SOURCE, resumable=True)
    assert (w.resumed, len(w), w.num_regions, w.extra) == (3, 3, sum(COUNTS[:3]), {"next_line": 3})
    assert "bild-ä2" in w and "bild-ä3" not in w
    for i in range(3, len(COUNTS)):
        w.add(**image(i, COUNTS[i]))
    assert w.close() == out
    assert not partial_path(out).exists()
    assert all_files(out) == all_files(whole)
    assert meta_of(out) == meta_of(whole)
    meta = meta_of(out)
    assert (meta["min_boxes"], meta["max_boxes"], meta["fixed_boxes"]) == (2, 5, None)
    assert meta["labels"] == sorted(LABELS) and meta["source"]["path"] == "/nowhere/x.tsv"
    store = FeatureStore(out)
    got = store.get("bild-ä4")
    assert got.objects_id.dtype == np.int64 and got.objects_id.shape == (COUNTS[4],)
    assert np.array_equal(got.objects_id, image(4, COUNTS[4])["objects_id"].reshape(-1))


def test_resumed_store_without_detector_outputs(tmp_path: Path) -> None:
    """A partial store whose images gave no detector outputs resumes without label files, and the next image
    may not bring them."""
    out = tmp_path / "x.store"
    plain = {k: v for k, v in image(0, 3).items() if k not in LABELS}
    w = StoreWriter(out, DIM, resumable=True)
    w.add(**plain)
    w.checkpoint()
    w.abort()
    w = StoreWriter(out, DIM, resumable=True)
    with pytest.raises(ValueError, match=r"gives detector outputs \['attrs_conf'.*earlier images gave \[\]"):
        w.add(**image(1, 2))
    w.add(**{k: v for k, v in image(1, 2).items() if k not in LABELS})
    w.close()
    assert FeatureStore(out).labels == [] and len(FeatureStore(out)) == 2


@pytest.mark.parametrize("change", ["feat_dim", "dtype", "source"])
def test_partial_store_with_other_settings_is_refused_by_name(tmp_path: Path, change: str) -> None:
    """Each recorded setting (feature width, dtype, source) must match to continue; the refusal names the folder
    and the recorded settings, and releases the lock so a writer with the right settings can continue."""
    out = tmp_path / "x.store"
    w = StoreWriter(out, DIM, source=SOURCE, resumable=True)
    w.add(**image(0, 2))
    w.checkpoint()
    w.abort()
    other = {"feat_dim": DIM, "dtype": "float16", "source": SOURCE}
    other[change] = {"feat_dim": DIM + 1, "dtype": "float32", "source": {"kind": "other"}}[change]
    with pytest.raises(
        StoreError,
        match=r"x\.store\.partial holds a partial store made with other settings "
        r"\(\{'feat_dim': 6, 'dtype': 'float16', 'source': \{'kind': 'test'",
    ):
        StoreWriter(out, other["feat_dim"], other["dtype"], other["source"], resumable=True)
    assert StoreWriter(out, DIM, source=SOURCE, resumable=True).resumed == 1


def test_journal_and_ids_that_disagree_are_named(tmp_path: Path) -> None:
    """A journal counting more images than its ids file holds is a broken partial store, named as such."""
    out = tmp_path / "x.store"
    w = StoreWriter(out, DIM, resumable=True)
    w.add(**image(0, 2))
    w.checkpoint()
    w.abort()
    journal_path = partial_path(out) / "journal.json"
    journal = json.loads(journal_path.read_text())
    journal["images"] = 2
    journal_path.write_text(json.dumps(journal))
    with pytest.raises(StoreError, match=r"x\.store\.partial: journal says 2 images, ids\.txt holds 1"):
        StoreWriter(out, DIM, resumable=True)


def test_unreadable_journal_is_named(tmp_path: Path) -> None:
    out = tmp_path / "x.store"
    partial_path(out).mkdir()
    (partial_path(out) / "journal.json").write_text('{"images": ')
    with pytest.raises(StoreError, match=r"journal\.json: unreadable resume journal .*delete .*x\.store\.partial"):
        StoreWriter(out, DIM, resumable=True)


def test_a_second_writer_of_the_same_partial_store_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "x.store"
    first = StoreWriter(out, DIM, resumable=True)
    with pytest.raises(StoreError, match=r"another process is writing .*x\.store\.partial"):
        StoreWriter(out, DIM, resumable=True)
    first.abort()
    StoreWriter(out, DIM, resumable=True).abort()  # the lock went with the first writer


def test_store_status_names_each_reason(tmp_path: Path) -> None:
    """A store is current only for the same TSV size and modification time, topk and dtype; each mismatch is
    named, a store that cannot be read is 'unusable'."""
    tsv = tmp_path / "a.tsv"
    tsv.write_text("x\n")
    out = tmp_path / "a.store"
    assert store_status(out, tsv) == "missing"
    with StoreWriter(out, DIM, source=tsv_source(tsv, 3)) as w:
        w.add(**image(0, 2))
    assert store_status(out, tsv, topk=3) is None  # float16 by default
    assert store_status(out, tsv, "float16", None) == "built from the first 3 lines, None wanted"
    assert store_status(out, tsv, "float32", 3) == "built with dtype float16, float32 requested"
    st = tsv.stat()
    tsv.write_text("y\n")  # same size, other modification time
    stale = f"stale: {tsv} changed since the store was built (size or modification time differ)"
    if tsv.stat().st_mtime_ns != st.st_mtime_ns:
        assert store_status(out, tsv, "float16", 3) == stale
    tsv.write_text("longer\n")
    assert store_status(out, tsv, "float16", 3) == stale
    (out / "meta.json").write_text("[]")
    assert store_status(out, tsv).startswith(f"unusable ({out / 'meta.json'}: not a lxmert-feature-store")
    source = tsv_source(tsv, -1)
    assert source == {"kind": "obj36-tsv", "path": str(tsv.resolve()), "size": 7,
                      "mtime_ns": tsv.stat().st_mtime_ns, "topk": None}  # fmt: skip


def variable_store(tmp_path: Path, counts: tuple[int, ...] = (4, 4, 2, 5)) -> Path:
    out = tmp_path / "var.store"
    with StoreWriter(out, DIM, dtype="float32") as w:
        for i, n in enumerate(counts):
            w.add(**{k: v for k, v in image(i, n).items() if k not in LABELS})
    return out


def write_meta(path: Path, **changes) -> None:
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    meta.update(changes)
    for key in [k for k, v in changes.items() if v is ...]:
        del meta[key]
    (path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def test_bad_metadata_is_named_with_the_file(tmp_path: Path) -> None:
    """Unreadable, foreign, incomplete metadata and an unknown dtype each give a message naming meta.json."""
    path = variable_store(tmp_path)
    meta = path / "meta.json"
    write_meta(path, dtype="int8")
    with pytest.raises(StoreError, match=r"meta\.json: incomplete metadata \(missing \[\], dtype 'int8'\)"):
        FeatureStore(path)
    write_meta(path, dtype="float32", num_images=...)
    with pytest.raises(StoreError, match=r"incomplete metadata \(missing \['num_images'\], dtype 'float32'"):
        FeatureStore(path)
    write_meta(path, format="other-store")
    with pytest.raises(StoreError, match=r"meta\.json: not a lxmert-feature-store metadata file"):
        FeatureStore(path)
    meta.write_text("<html>", encoding="utf-8")
    with pytest.raises(StoreError, match=r"meta\.json: unreadable store metadata \(.*; it is .*\)"):
        FeatureStore(path)


def test_arrays_are_mapped_read_only_once_per_process(tmp_path: Path) -> None:
    """Arrays are read-only memory maps, mapped once: two reads of an image share memory, not copies."""
    store = FeatureStore(variable_store(tmp_path))
    a, b = store.get("bild-ä1"), store.get("bild-ä1")
    assert not a.features.flags.writeable and not a.boxes.flags.writeable
    assert np.shares_memory(a.features, b.features)


def test_a_missing_or_corrupt_array_file_is_named(tmp_path: Path) -> None:
    """A missing array file is named without guessing what it is; a wrong shape says the store is corrupt."""
    path = variable_store(tmp_path)
    (path / "boxes.npy").rename(path / "boxes.bak")
    missing = r"boxes\.npy: cannot map store array \(\[Errno 2\] No such file or directory: '[^']*'\); rebuild"
    with pytest.raises(StoreError, match=missing):
        FeatureStore(path).get("bild-ä0")
    (path / "boxes.bak").rename(path / "boxes.npy")
    np.save(path / "image_hw.npy", np.zeros((4, 3), np.int64))
    with pytest.raises(
        StoreError,
        match=r"image_hw\.npy: shape \(4, 3\) int64, expected \(4, 2\) int64; the store "
        r"is corrupt, rebuild it \(python -m features\.convert --force\)",
    ):
        FeatureStore(path).get("bild-ä0")


def test_metadata_without_a_label_list_reads_no_labels(tmp_path: Path) -> None:
    path = variable_store(tmp_path)
    write_meta(path, labels=...)
    store = FeatureStore(path)
    assert store.labels == [] and store.get("bild-ä0").objects_id is None


def test_padded_gather_types_and_limits(tmp_path: Path) -> None:
    """Padded batches are float32 features and boxes by default, the store dtype with ``dtype=None``; one region
    is a valid width, zero is refused by name; an empty batch is empty."""
    store = FeatureStore(variable_store(tmp_path, (4, 4, 2, 5)))
    feats, boxes, mask = store.gather(["bild-ä2", "bild-ä3"])
    assert feats.dtype == np.float32 and boxes.dtype == np.float32 and mask.tolist() == [[1, 1, 0, 0, 0], [1] * 5]
    assert store.gather(["bild-ä2"], dtype="float16")[0].dtype == np.float16
    one, one_boxes, mask = store.gather(["bild-ä2", "bild-ä3"], num_boxes=1)
    assert one.shape == (2, 1, DIM) and one_boxes.shape == (2, 1, 4) and mask is None
    with pytest.raises(ValueError, match="num_boxes must be >= 1, got 0"):
        store.gather(["bild-ä2"], num_boxes=0)
    empty, empty_boxes, _ = store.gather([])
    assert empty.shape == (0, 0, DIM) and empty_boxes.shape == (0, 0, 4)


def test_subset_with_equal_counts_of_a_varying_store_gathers(tmp_path: Path) -> None:
    """The first images of a store with varying counts may all have N regions: the subset is fixed at N without
    a (num_images, N, D) view of the whole store, and batches are read row by row."""
    path = variable_store(tmp_path, (4, 4, 2, 5))
    sub = FeatureStore(path).subset(2)
    assert sub.fixed_boxes == 4 and sub.max_boxes == 4
    feats, _, mask = sub.gather(["bild-ä1", "bild-ä0"])
    assert feats.shape == (2, 4, DIM) and mask is None
    assert np.array_equal(feats[0], image(1, 4)["features"])


def test_limits_views_and_repr(tmp_path: Path) -> None:
    """A limit of 0 is an empty store (no regions), a subset as large as the store is the store itself,
    iteration gives the ids, and the repr shows the limit and the box counts."""
    path = variable_store(tmp_path, (4, 4, 2, 5))
    store = FeatureStore(path)
    empty = FeatureStore(path, limit=0)
    assert len(empty) == 0 and list(empty) == [] and empty.max_boxes == 0 and empty.fixed_boxes is None
    assert store.subset(4) is store and store.subset(9) is store and len(store.subset(3)) == 3
    assert list(store) == [f"bild-ä{i}" for i in range(4)]
    assert repr(store) == f"FeatureStore({str(path)!r}, images=4, feat_dim={DIM}, dtype=float32, boxes=<= 5)"
    shown = f"FeatureStore({str(path)!r}, images=2 of 4, feat_dim={DIM}, dtype=float32, boxes=4)"
    assert repr(store.subset(2)) == shown
    shown = f"RegionFeatures(num_boxes=4, feat_dim={DIM}, dtype=float32, img_h=50, img_w=70)"
    assert repr(store.get("bild-ä0")) == shown


def test_pickled_store_leaves_its_ids_behind(tmp_path: Path) -> None:
    """A pickled store carries neither the id list nor the id index it has built, however many ids it holds."""
    out = tmp_path / "many.store"
    with StoreWriter(out, 1) as w:
        for i in range(3000):
            w.add(f"image-number-{i}", 10, 10, np.array([[0, 0, 5, 5]]), np.ones((1, 1)))
    store = FeatureStore(out)
    assert "image-number-2999" in store and store.index("image-number-5") == 5
    assert len(pickle.dumps(store)) < 4096


def test_store_path_of_a_file_without_the_tsv_suffix_keeps_its_name() -> None:
    assert store_path_for("x/feats.bin") == Path("x/feats.bin.store")
    assert store_path_for("x/feats.bin", 5) == Path("x/feats.bin.top5.store")


# ---- the writer's files, checks and publishing ----------------------------------------------------------------


def test_published_files_are_what_numpy_writes_and_meta_is_complete(tmp_path: Path) -> None:
    """Every array file is byte for byte what ``np.save`` writes (128-byte header, the store's dtypes, even for
    float64 features and int32 labels given), and meta.json holds every field, indented, with the time made."""
    out = tmp_path / "new" / "sub" / "x.store"  # parents are made
    counts = (2, 5, 3)
    with StoreWriter(out, DIM, source=SOURCE) as w:
        assert (w.resumed, w.extra) == (0, {})
        for i, n in enumerate(counts):
            args = image(i, n)
            args["features"] = args["features"].astype(np.float64)
            args["attrs_id"] = args["attrs_id"].astype(np.int32)
            w.add(**args)
    for file in sorted(out.glob("*.npy")):
        buf = io.BytesIO()
        np.save(buf, np.load(file))
        assert file.read_bytes() == buf.getvalue(), file.name
    assert np.load(out / "features.npy").dtype == np.float16 and np.load(out / "attrs_id.npy").dtype == np.int64
    assert np.load(out / "offsets.npy").tolist() == [0, 2, 7, 10]
    assert np.load(out / "image_hw.npy").tolist() == [[50, 70], [51, 72], [52, 74]]
    text = (out / "meta.json").read_text(encoding="utf-8")
    assert text.startswith('{\n "format": "lxmert-feature-store",\n "version": 1,') and text.endswith("}\n")
    meta = json.loads(text)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", meta.pop("created"))
    assert meta == {
        "format": "lxmert-feature-store", "version": 1, "num_images": 3, "num_regions": 10, "feat_dim": DIM,
        "dtype": "float16", "min_boxes": 2, "max_boxes": 5, "fixed_boxes": None, "labels": sorted(LABELS),
        "boxes": "x1 y1 x2 y2 divided by img_w / img_h, within [0, 1]",
        "source": {"kind": "test", "path": "/nowhere/x.tsv", "size": 7},
    }  # fmt: skip
    with StoreWriter(tmp_path / "fixed.store", DIM) as w:
        w.add(**image(0, 3))
        w.add(**image(1, 3))
    assert json.loads((tmp_path / "fixed.store" / "meta.json").read_text())["fixed_boxes"] == 3


def test_npy_header_fits_exactly_or_is_refused(tmp_path: Path) -> None:
    """The reserved header holds a text of up to 117 characters plus its newline; one more is refused by name."""

    def appender(rows: int, dims: int) -> _NpyAppender:
        a = _NpyAppender(tmp_path / "a.npy", np.float32, (1,) * dims)
        a.rows = rows
        return a

    def text_len(rows: int, dims: int) -> int:
        shape = (rows, *(1,) * dims)
        return len(f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}")

    for target, ok in ((117, True), (118, False)):
        rows, dims = next((r, d) for d in range(1, 40) for r in (10**k for k in range(12)) if text_len(r, d) == target)
        a = appender(rows, dims)
        if ok:
            header = a._header()
            assert len(header) == 128 and header.endswith(b"\n")
        else:
            with pytest.raises(ValueError, match=r"a\.npy: shape .* does not fit the reserved npy header"):
                a._header()
        a.discard()
    a = _NpyAppender(tmp_path / "b.npy", np.float32, (4,))
    with pytest.raises(ValueError, match=r"b\.npy: rows of shape \(3,\), expected \(4,\)"):
        a.append(np.zeros((2, 3)))
    a.discard()


def test_writer_arguments_are_checked_by_name(tmp_path: Path) -> None:
    """Dtype, width, ids, image sizes, region counts and non-finite values: each refused with a message naming
    the image; one region, a one-pixel image and a one-wide feature are valid."""
    with pytest.raises(ValueError, match=r"store dtype must be one of \('float16', 'float32'\), got 'int8'"):
        StoreWriter(tmp_path / "a.store", DIM, dtype="int8")
    with pytest.raises(ValueError, match="feat_dim must be >= 1, got 0"):
        StoreWriter(tmp_path / "a.store", 0)
    with StoreWriter(tmp_path / "one.store", 1) as w:
        w.add("px", 1, 1, np.array([[0, 0, 1, 1]]), np.ones((1, 1)))
    w = StoreWriter(tmp_path / "a.store", DIM)
    ok = {k: v for k, v in image(0, 2).items() if k not in LABELS}
    for bad in ("", "a\tb", "a\nb", "a\rb", 7):
        with pytest.raises(ValueError, match="image ids must be non-empty strings without tabs or line breaks"):
            w.add(**{**ok, "img_id": bad})
    for h, w_ in ((0, 70), (50, 0)):
        with pytest.raises(ValueError, match=rf"image size must be positive, got img_h={h} img_w={w_}"):
            w.add(**{**ok, "img_h": h, "img_w": w_})
    with pytest.raises(ValueError, match=r"features of shape \(0, 6\), expected \(N >= 1, 6\)"):
        w.add(**{**ok, "boxes_px": np.zeros((0, 4)), "features": np.zeros((0, DIM))})
    nan = ok["features"].copy()
    nan[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"features contain NaN or infinite values, max \|x\| = "):
        w.add(**{**ok, "features": nan})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overflow is reported once, by the error below, not by numpy
        with pytest.raises(ValueError, match=r"values \(beyond float16 range; convert with --dtype float32\)"):
            w.add(**{**ok, "features": ok["features"] * 1e6})
    w.add(**{**ok, "img_id": "COCO_X1"})  # any other character is allowed
    w.add(**{**ok, "img_id": "second"})
    with pytest.raises(ValueError, match=r"duplicate image id \(already added as image #1\)"):
        w.add(**{**ok, "img_id": "second"})
    w.close()
    with pytest.raises(StoreError, match=r"writer for .*a\.store is already closed"):
        w.close()
    with pytest.raises(StoreError, match="already closed"):
        w.add(**{**ok, "img_id": "third"})
    empty = StoreWriter(tmp_path / "empty.store", DIM)
    with pytest.raises(StoreError, match=r"no images were added; nothing to publish at .*empty\.store"):
        empty.close()
    aborted = StoreWriter(tmp_path / "b.store", DIM)
    aborted.abort()
    with pytest.raises(StoreError, match="already closed"):
        aborted.add(**ok)


def test_leftovers_of_dead_writers_go_and_live_ones_stay(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Temp and old folders of dead writers (also of a store whose name has a hyphen) are removed with a note on
    stderr; those of a live process, of this process, and names without a pid are left alone; a stray folder of
    this process's own pid is replaced, not merged into the new store."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        out = tmp_path / "a-b.store"
        gone = [tmp_path / f"a-b.store.tmp-{dead}", tmp_path / f"a-b.store.old-{dead}"]
        kept = [tmp_path / f"a-b.store.tmp-{live.pid}", tmp_path / "a-b.store.tmp-abc"]
        own = tmp_path / f"a-b.store.tmp-{os.getpid()}"
        for folder in (*gone, *kept, own):
            folder.mkdir()
            (folder / "junk.bin").write_bytes(b"x")
        capsys.readouterr()
        with StoreWriter(out, DIM) as w:
            w.add(**image(0, 2))
        err = capsys.readouterr().err
        assert all(f"Removing leftover of an interrupted conversion: {p}" in err for p in gone)
        assert not any(p.exists() for p in gone) and all(p.exists() for p in kept)
        with pytest.raises(subprocess.TimeoutExpired):  # the live writer was only asked whether it exists
            live.wait(timeout=1)
        assert "junk.bin" not in {p.name for p in out.iterdir()}
    finally:
        live.kill()
        live.wait()


def test_partial_folder_without_a_journal_starts_empty(tmp_path: Path) -> None:
    """Files in a partial folder that no checkpoint recorded are removed, never published with the store."""
    out = tmp_path / "x.store"
    partial_path(out).mkdir()
    (partial_path(out) / "junk.bin").write_bytes(b"x")
    with StoreWriter(out, DIM, resumable=True) as w:
        assert w.resumed == 0
        w.add(**image(0, 2))
    assert "junk.bin" not in {p.name for p in out.iterdir()}


def test_replacing_a_store_leaves_no_old_folder(tmp_path: Path) -> None:
    """Publishing over a store replaces it whole (also when a stray old folder of this pid is in the way) and
    removes the old copy."""
    out = tmp_path / "x.store"
    write_in_one_go(out)
    stray = tmp_path / f"x.store.old-{os.getpid()}"
    stray.mkdir()
    (stray / "junk.bin").write_bytes(b"x")
    with StoreWriter(out, DIM) as w:
        w.add(**image(7, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.store"]
    assert FeatureStore(out).ids == ["bild-ä7"]


def test_a_store_published_in_between_is_replaced_then_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When another writer publishes between moving the old store aside and moving ours in, ours is retried and
    wins, leaving no old folder; a store that keeps reappearing is given up on by name, dropping our data."""
    import features.store_writer as sw

    real_replace = os.replace
    out = tmp_path / "x.store"
    races = {"left": 1}

    def racing_replace(src, dst) -> None:
        if Path(dst) == out and Path(src).suffix != ".store" and races["left"]:
            races["left"] -= 1
            out.mkdir()
            (out / "theirs.bin").write_bytes(b"x")
            raise OSError(39, "Directory not empty")
        real_replace(src, dst)

    monkeypatch.setattr(sw.os, "replace", racing_replace)
    with StoreWriter(out, DIM) as w:
        w.add(**image(0, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.store"] and FeatureStore(out).ids == ["bild-ä0"]
    races["left"] = 99
    w = StoreWriter(out, DIM, resumable=True)
    w.add(**image(1, 2))
    with pytest.raises(StoreError, match=r"could not publish .*x\.store: other processes keep replacing it"):
        w.close()
    assert not partial_path(out).exists()  # a failed close drops even a resumable writer's partial store
    assert not any(".tmp-" in p.name or ".old-" in p.name for p in tmp_path.iterdir())


def test_boxes_at_the_tolerance_are_kept_and_clipped_and_bad_ones_named(tmp_path: Path) -> None:
    """Boxes exactly 1e-5 outside the image are accepted and clipped into [0, 1]; a NaN or negative box is named by
    its own index and counted alone; integer pixel boxes are divided in float32."""
    tol = float(np.float32(1e-5))
    with StoreWriter(tmp_path / "a.store", 1, dtype="float32") as w:
        w.add("edge", 1, 1, np.array([[-tol, -tol, 1 + tol, 1 + tol]]), np.ones((1, 1)))
        w.add("ints", 3, 3, np.array([[0, 0, 1, 2]]), np.ones((1, 1)))
        good = np.array([[0, 0, 1, 1]] * 3, np.float32)
        for bad in (np.nan, -0.5):
            boxes = good.copy()
            boxes[1, 0] = bad
            with pytest.raises(ValueError, match=r"box 1 = .* lies outside the 1x1 image \(1 bad boxes;"):
                w.add("bad", 1, 1, boxes, np.ones((3, 1)))
    store = FeatureStore(tmp_path / "a.store")
    assert store.get("edge").boxes.tolist() == [[0, 0, 1, 1]]
    assert store.get("ints").boxes.tolist() == [[0, 0, np.float32(1) / np.float32(3), np.float32(2) / np.float32(3)]]


def test_a_checkpoint_before_the_first_image_resumes(tmp_path: Path) -> None:
    """A checkpoint taken before any image records no detector outputs yet; the resumed writer lets the first image
    decide them, as a new writer does. The partial folder's parents are made."""
    out = tmp_path / "new" / "sub" / "x.store"  # parents are made
    w = StoreWriter(out, DIM, resumable=True)
    w.checkpoint()
    w.abort()
    assert json.loads((partial_path(out) / "journal.json").read_text())["labels"] is None
    with StoreWriter(out, DIM, resumable=True) as w:
        assert w.resumed == 0
        w.add(**image(0, 2))
    assert FeatureStore(out).labels == sorted(LABELS)
