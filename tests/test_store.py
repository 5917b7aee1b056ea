"""Feature store: TSV -> store round trips, batching, topk/staleness handling, atomicity, bad input."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from features import convert
from features.opening import open_store
from features.store import FeatureStore, MissingImageError, StoreError, store_path_for
from features.store_writer import StoreWriter
from features.tsv import RegionRecord, TSVFormatError, write_tsv

DIM = 8


def make_record(i: int, n: int = 36, dim: int = DIM, scale: float = 1.0) -> RegionRecord:
    rng = np.random.default_rng(i)
    h, w = 240 + i, 320 + i
    xy = rng.uniform(0, 0.5, (n, 2)) * (w, h)
    wh = rng.uniform(0, 0.5, (n, 2)) * (w, h)
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    boxes[0] = (0, 0, w, h)  # a full-image box must map exactly onto [0, 1]
    return RegionRecord(
        img_id=f"img{i}",
        img_h=h,
        img_w=w,
        objects_id=rng.integers(0, 1600, n),
        objects_conf=rng.random(n, dtype=np.float32),
        attrs_id=rng.integers(0, 400, n),
        attrs_conf=rng.random(n, dtype=np.float32),
        boxes=boxes,
        features=(np.maximum(rng.standard_normal((n, dim)), 0) * scale).astype(np.float32),
    )


def make_tsv(path: Path, count: int = 6, **kwargs) -> list[RegionRecord]:
    records = [make_record(i, **kwargs) for i in range(count)]
    write_tsv(path, records)
    return records


def original_boxes(rec: RegionRecord) -> np.ndarray:
    """The normalization of the original dataset code, written out independently."""
    boxes = rec.boxes.copy()
    boxes[:, (0, 2)] /= rec.img_w
    boxes[:, (1, 3)] /= rec.img_h
    return boxes


@pytest.fixture
def tsv(tmp_path: Path) -> Path:
    return tmp_path / "train2014_obj36.tsv"


def test_store_path_for() -> None:
    assert store_path_for("data/mscoco_imgfeat/train2014_obj36.tsv") == Path(
        "data/mscoco_imgfeat/train2014_obj36.store"
    )
    assert store_path_for("d/val2014_obj36.tsv", topk=512).name == "val2014_obj36.top512.store"
    assert store_path_for("d/val2014_obj36.tsv", topk=-1).name == "val2014_obj36.store"


def test_round_trip_float32_is_exact(tsv: Path, capsys: pytest.CaptureFixture) -> None:
    records = make_tsv(tsv)
    store = open_store(tsv, dtype="float32", progress=False)
    assert "train2014_obj36.store" in capsys.readouterr().err  # says where it is written
    assert store.ids == [r.img_id for r in records]
    assert (len(store), store.feat_dim, store.fixed_boxes, store.max_boxes) == (6, DIM, 36, 36)
    assert store.dtype == np.float32 and "img3" in store and "img9" not in store
    for rec in records:
        got = store.get(rec.img_id)
        assert np.array_equal(got.features, rec.features)
        assert np.array_equal(got.boxes, original_boxes(rec))
        assert (got.img_h, got.img_w) == (rec.img_h, rec.img_w)
        for name in ("objects_id", "objects_conf", "attrs_id", "attrs_conf"):
            assert np.array_equal(getattr(got, name), getattr(rec, name)), name
    assert np.array_equal(store.get("img0").boxes[0], [0, 0, 1, 1])
    assert store.source["size"] == tsv.stat().st_size and store.source["topk"] is None


def test_float16_is_rounded_once(tsv: Path) -> None:
    records = make_tsv(tsv)
    store = open_store(tsv, progress=False)
    assert store.dtype == np.float16
    for rec in records:
        assert np.array_equal(store.get(rec.img_id).features, rec.features.astype(np.float16))
    feats, boxes, mask = store.gather(["img2", "img0"])
    assert feats.dtype == np.float32 and mask is None
    expected = np.stack([records[2].features, records[0].features]).astype(np.float16).astype(np.float32)
    assert np.array_equal(feats, expected)
    assert np.allclose(feats, np.stack([records[2].features, records[0].features]), rtol=1e-3, atol=1e-3)


def test_gather_fixed_fast_path(tsv: Path) -> None:
    records = make_tsv(tsv)
    store = open_store(tsv, dtype="float32", progress=False)
    ids = ["img5", "img1", "img5"]
    feats, boxes, mask = store.gather(ids)
    assert feats.shape == (3, 36, DIM) and boxes.shape == (3, 36, 4) and mask is None
    assert np.array_equal(feats[0], records[5].features)
    assert np.array_equal(boxes[1], original_boxes(records[1]))
    native, _, _ = store.gather(ids, dtype=None)
    assert native.dtype == np.float32 and np.array_equal(native, feats)
    short, short_boxes, mask = store.gather(ids, num_boxes=10)
    assert short.shape == (3, 10, DIM) and mask is None and np.array_equal(short[1], records[1].features[:10])
    assert np.array_equal(short_boxes[2], original_boxes(records[5])[:10])
    padded, _, mask = store.gather(ids, num_boxes=40)
    assert padded.shape == (3, 40, DIM) and mask.tolist() == [[1] * 36 + [0] * 4] * 3
    assert not padded[:, 36:].any()


def test_variable_box_counts_pad_and_mask(tmp_path: Path) -> None:
    counts = [10, 3, 100, 1]
    records = [make_record(i, n=n, dim=5) for i, n in enumerate(counts)]
    with StoreWriter(tmp_path / "var.store", feat_dim=5, dtype="float32") as w:
        for r in records:
            w.add(r.img_id, r.img_h, r.img_w, r.boxes, r.features)
    store = FeatureStore(tmp_path / "var.store")
    assert store.fixed_boxes is None and store.max_boxes == 100 and store.labels == []
    assert store.get("img1").objects_id is None and store.get("img2").num_boxes == 100
    feats, boxes, mask = store.gather(["img1", "img0", "img3"])
    assert feats.shape == (3, 10, 5) and mask.dtype == np.int64
    assert mask.sum(axis=1).tolist() == [3, 10, 1]
    assert np.array_equal(feats[0, :3], records[1].features) and not feats[0, 3:].any()
    assert np.array_equal(boxes[2, :1], original_boxes(records[3])) and not boxes[2, 1:].any()
    feats, _, mask = store.gather(["img2", "img0"], num_boxes=36)
    assert np.array_equal(feats[0], records[2].features[:36]) and mask.sum(axis=1).tolist() == [36, 10]
    _, _, mask = store.gather(["img0", "img0"])
    assert mask is None  # nothing padded
    assert store.subset(2).max_boxes == 10 and store.subset(1).fixed_boxes == 10


def test_box_normalization_checks_and_clips(tmp_path: Path) -> None:
    rec = make_record(0, n=2)
    with StoreWriter(tmp_path / "a.store", feat_dim=DIM, dtype="float32") as w:
        over = rec.boxes.copy()
        over[1] = (0, 0, rec.img_w * (1 + 5e-6), rec.img_h)  # within the original's 1e-5 tolerance
        w.add("ok", rec.img_h, rec.img_w, over, rec.features)
        outside = rec.boxes.copy()
        outside[1, 2] = rec.img_w + 5
        with pytest.raises(ValueError, match=r"image 'bad'.*box 1 = .* lies outside the 320x240 image"):
            w.add("bad", rec.img_h, rec.img_w, outside, rec.features)
        with pytest.raises(ValueError, match=r"image 'nan'.*box 0"):
            w.add("nan", rec.img_h, rec.img_w, np.full((2, 4), np.nan, np.float32), rec.features)
        with pytest.raises(ValueError, match=r"image 'shape'.*boxes of shape \(2, 3\), expected \(2, 4\)"):
            w.add("shape", rec.img_h, rec.img_w, rec.boxes[:, :3], rec.features)
    store = FeatureStore(tmp_path / "a.store")
    assert store.ids == ["ok"] and store.get("ok").boxes[1].tolist() == [0, 0, 1, 1]


def test_writer_rejects_duplicates_bad_shapes_and_fp16_overflow(tmp_path: Path) -> None:
    rec = make_record(0, n=4)
    w = StoreWriter(tmp_path / "a.store", feat_dim=DIM)
    w.add("x", rec.img_h, rec.img_w, rec.boxes, rec.features, rec.objects_id, rec.objects_conf,
          rec.attrs_id, rec.attrs_conf)
    with pytest.raises(ValueError, match=r"image 'x'.*duplicate image id"):
        w.add("x", rec.img_h, rec.img_w, rec.boxes, rec.features)
    with pytest.raises(ValueError, match=r"image 'y'.*features of shape \(4, 3\), expected \(N >= 1, 8\)"):
        w.add("y", rec.img_h, rec.img_w, rec.boxes, rec.features[:, :3])
    with pytest.raises(ValueError, match=r"image 'z'.*beyond float16 range; convert with --dtype float32"):
        w.add("z", rec.img_h, rec.img_w, rec.boxes, rec.features * 1e6 + 1e5, rec.objects_id,
              rec.objects_conf, rec.attrs_id, rec.attrs_conf)
    with pytest.raises(ValueError, match=r"image 'u'.*gives detector outputs \[\]"):
        w.add("u", rec.img_h, rec.img_w, rec.boxes, rec.features)
    with pytest.raises(ValueError, match=r"image 'v'.*objects_id has 3 values, expected one per region"):
        w.add("v", rec.img_h, rec.img_w, rec.boxes, rec.features, rec.objects_id[:3], rec.objects_conf,
              rec.attrs_id, rec.attrs_conf)
    assert w.close() == tmp_path / "a.store"
    assert FeatureStore(tmp_path / "a.store").ids == ["x"]


def test_missing_id_names_store_and_id(tsv: Path) -> None:
    make_tsv(tsv)
    store = open_store(tsv, progress=False)
    with pytest.raises(KeyError) as info:
        store.gather(["img1", "COCO_nope"])
    assert isinstance(info.value, MissingImageError)
    assert str(info.value) == f"image id 'COCO_nope' is not in the feature store {store.path}"
    with pytest.raises(MissingImageError, match=r"'img4' is not in the first 3 of 6 images of"):
        store.subset(3).index("img4")


def test_topk_builds_a_small_store_from_the_first_lines_only(tsv: Path) -> None:
    records = make_tsv(tsv, count=5)
    with open(tsv, "ab") as f:
        f.write(b"truncated\tline\r\n")  # never read with topk=3
    small = open_store(tsv, topk=3, progress=False)
    assert small.path == tsv.with_name("train2014_obj36.top3.store") and small.ids == ["img0", "img1", "img2"]
    assert np.array_equal(small.get("img2").features, records[2].features.astype(np.float16))
    assert open_store(tsv, topk=3, progress=False).path == small.path  # reused, not rebuilt
    assert not store_path_for(tsv).exists()
    with pytest.raises(TSVFormatError, match=r"train2014_obj36\.tsv:6: expected 10 tab-separated fields"):
        open_store(tsv, progress=False)


def test_topk_uses_an_existing_full_store(tsv: Path) -> None:
    make_tsv(tsv)
    full = open_store(tsv, progress=False)
    view = open_store(tsv, topk=2, progress=False)
    assert view.path == full.path and view.ids == ["img0", "img1"] and len(view) == 2
    assert "img3" not in view and not store_path_for(tsv, 2).exists()
    assert len(open_store(tsv, topk=100, progress=False)) == 6


def test_stale_store_is_rebuilt(tsv: Path, capsys: pytest.CaptureFixture) -> None:
    make_tsv(tsv, count=3)
    first = open_store(tsv, progress=False)
    assert first.get("img0").img_h == 240
    records = [make_record(i + 10) for i in range(4)]
    write_tsv(tsv, records)
    st = tsv.stat()
    os.utime(tsv, ns=(st.st_atime_ns, first.source["mtime_ns"] + 1_000_000_000))
    capsys.readouterr()
    second = open_store(tsv, progress=False)
    assert "Rebuilding feature store" in capsys.readouterr().err
    assert second.ids == [r.img_id for r in records]
    os.utime(tsv, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touch only: still rebuilt
    open_store(tsv, progress=False)
    assert "changed since the store was built" in capsys.readouterr().err
    open_store(tsv, progress=False)
    assert capsys.readouterr().err == ""  # up to date now: opened silently


def test_other_dtype_is_rebuilt_or_refused_when_read_only(
    tsv: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tsv(tsv)
    assert open_store(tsv, dtype="float32", progress=False).dtype == np.float32
    capsys.readouterr()
    assert open_store(tsv, dtype="float16", progress=False).dtype == np.float16
    assert "built with dtype float32, float16 requested" in capsys.readouterr().err
    monkeypatch.setattr("features.opening.os.access", lambda path, mode: False)
    with pytest.raises(StoreError, match=r"train2014_obj36\.store is built with dtype float16.*not writable"):
        open_store(tsv, dtype="float32", progress=False)


def test_failed_conversion_keeps_the_old_store(tsv: Path) -> None:
    make_tsv(tsv, count=4)
    old = open_store(tsv, progress=False)
    old_meta = (old.path / "meta.json").read_text()
    records = [make_record(i) for i in range(4)]
    records[2] = make_record(1)  # duplicate id half-way through
    write_tsv(tsv, records)
    with pytest.raises(TSVFormatError, match=r"train2014_obj36\.tsv:3: image 'img1'.*duplicate image id"):
        open_store(tsv, progress=False)
    assert (old.path / "meta.json").read_text() == old_meta
    assert sorted(p.name for p in tsv.parent.iterdir()) == ["train2014_obj36.store", "train2014_obj36.tsv"]
    assert old.get("img3").num_boxes == 36  # the old store still reads


def test_killed_conversion_leaves_only_a_tmp_dir_that_is_cleaned(tsv: Path) -> None:
    make_tsv(tsv, count=3)
    script = textwrap.dedent(
        f"""
        import os, signal
        from features.store_writer import StoreWriter
        from features.tsv import iter_tsv
        w = StoreWriter({str(tsv.with_name("train2014_obj36.store"))!r}, feat_dim={DIM})
        for i, r in enumerate(iter_tsv({str(tsv)!r})):
            w.add(r.img_id, r.img_h, r.img_w, r.boxes, r.features)
            if i == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    leftovers = [p.name for p in tsv.parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == [f"train2014_obj36.store.tmp-{proc.pid}"]
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore(tsv.parent / leftovers[0])
    store = open_store(tsv, progress=False)
    assert len(store) == 3
    assert sorted(p.name for p in tsv.parent.iterdir()) == ["train2014_obj36.store", "train2014_obj36.tsv"]


def test_resumed_writer_drops_the_temp_journal_of_a_killed_checkpoint(tmp_path: Path) -> None:
    """A kill inside a checkpoint's atomic journal write leaves its temporary file in the partial store;
    the resuming writer removes it, so it is never published inside the finished store."""
    out = tmp_path / "x.store"
    records = [make_record(i, n=4) for i in range(3)]
    writer = StoreWriter(out, DIM, resumable=True)
    for r in records[:2]:
        writer.add(r.img_id, r.img_h, r.img_w, r.boxes, r.features)
    writer.checkpoint()
    writer.abort()
    partial = tmp_path / "x.store.partial"
    (partial / ".journal.json.k1ll3d.tmp").write_text('{"images": 9')  # as the killed write left it
    writer = StoreWriter(out, DIM, resumable=True)
    assert writer.resumed == 2
    r = records[2]
    writer.add(r.img_id, r.img_h, r.img_w, r.boxes, r.features)
    writer.close()
    assert sorted(p.name for p in out.iterdir()) == [
        "boxes.npy", "features.npy", "ids.txt", "image_hw.npy", "meta.json", "offsets.npy"]
    assert FeatureStore(out).ids == ["img0", "img1", "img2"]


def test_corrupt_store_files_are_reported(tsv: Path, capsys: pytest.CaptureFixture) -> None:
    make_tsv(tsv)
    path = open_store(tsv, progress=False).path
    meta = json.loads((path / "meta.json").read_text())
    meta["num_regions"] += 1
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=r"features\.npy: shape \(216, 8\) float16, expected \(217, 8\)"):
        FeatureStore(path).get("img0")
    meta["version"] = 99
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="format version 99"):
        FeatureStore(path)
    capsys.readouterr()
    assert len(open_store(tsv, progress=False)) == 6
    assert "Rebuilding feature store" in capsys.readouterr().err  # rebuilt, not used
    assert FeatureStore(path).meta["version"] == 1


def test_open_store_dir_directly_and_after_the_tsv_is_gone(tsv: Path, capsys: pytest.CaptureFixture) -> None:
    make_tsv(tsv)
    built = open_store(tsv, progress=False)
    assert open_store(built.path, topk=2).ids == ["img0", "img1"]
    tsv.unlink()
    capsys.readouterr()
    assert len(open_store(tsv, progress=False)) == 6
    assert "not found; using the store built from it" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no feature TSV at"):
        open_store(tsv.with_name("other_obj36.tsv"))


def test_empty_tsv_is_an_error(tsv: Path) -> None:
    tsv.write_bytes(b"")
    with pytest.raises(TSVFormatError, match="holds no lines"):
        open_store(tsv, progress=False)
    assert [p.name for p in tsv.parent.iterdir()] == ["train2014_obj36.tsv"]


def test_pickled_store_carries_no_data(tsv: Path) -> None:
    make_tsv(tsv, count=4, dim=512)
    store = open_store(tsv, progress=False)
    feats, _, _ = store.gather(store.ids)
    blob = pickle.dumps(store)
    assert len(blob) < 4096 < feats.nbytes
    again = pickle.loads(blob)
    assert np.array_equal(again.gather(store.ids)[0], feats)
    assert len(pickle.loads(pickle.dumps(store.subset(2)))) == 2


class _Pairs(Dataset):
    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> tuple[int, int]:
        return i, os.getpid()


def test_store_works_in_forked_dataloader_workers(tsv: Path) -> None:
    make_tsv(tsv, count=8)
    store = open_store(tsv, dtype="float32", progress=False)
    expected, _, _ = store.gather(store.ids)  # maps the files in the parent first

    def collate(items: list[tuple[int, int]]) -> tuple[torch.Tensor, list[int]]:
        feats, boxes, mask = store.gather([store.ids[i] for i, _ in items])
        assert mask is None and boxes.shape[1:] == (36, 4)
        return torch.from_numpy(feats), [pid for _, pid in items]

    loader = DataLoader(_Pairs(store), batch_size=3, num_workers=2, collate_fn=collate,
                        multiprocessing_context="fork")
    got, pids = zip(*loader)
    assert np.array_equal(torch.cat(got).numpy(), expected)
    assert os.getpid() not in {p for batch in pids for p in batch}


def _open_and_report(tsv: str) -> tuple[int, int]:
    store = open_store(tsv, progress=False)
    return len(store), (store.path / "meta.json").stat().st_ino


def test_concurrent_openers_build_once(tsv: Path) -> None:
    make_tsv(tsv, count=40)
    with multiprocessing.get_context("fork").Pool(3) as pool:
        results = pool.map(_open_and_report, [str(tsv)] * 3)
    assert [n for n, _ in results] == [40, 40, 40]
    assert len({inode for _, inode in results}) == 1  # one build, the others waited and reused it
    assert sorted(p.name for p in tsv.parent.iterdir()) == ["train2014_obj36.store", "train2014_obj36.tsv"]


def test_cli_converts_skips_and_forces(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    (data / "mscoco_imgfeat").mkdir(parents=True)
    (data / "nlvr2_imgfeat").mkdir()
    make_tsv(data / "mscoco_imgfeat" / "val2014_obj36.tsv", count=3)
    make_tsv(data / "nlvr2_imgfeat" / "valid_obj36.tsv", count=2, n=10)
    assert convert.main(["--all", "--data-dir", str(data), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "val2014_obj36.store" in out and "valid_obj36.store" in out and "total" in out
    assert FeatureStore(data / "nlvr2_imgfeat" / "valid_obj36.store").fixed_boxes == 10
    assert convert.main(["--all", "--data-dir", str(data), "--quiet"]) == 0
    assert capsys.readouterr().out.count("up to date, skipped") == 2
    tsv = data / "mscoco_imgfeat" / "val2014_obj36.tsv"
    assert convert.main([str(tsv), "--force", "--quiet", "--dtype", "float32", "--topk", "2"]) == 0
    assert FeatureStore(store_path_for(tsv, 2)).dtype == np.float32
    assert convert.main([str(tsv), "--quiet", "--out", str(tmp_path / "elsewhere.store")]) == 0
    assert len(FeatureStore(tmp_path / "elsewhere.store")) == 3
    with pytest.raises(SystemExit):
        convert.main([str(tsv), str(tsv), "--out", str(tmp_path / "x.store")])
    with pytest.raises(SystemExit):
        convert.main([str(tmp_path / "missing.tsv")])
    capsys.readouterr()
    with open(tsv, "ab") as f:
        f.write(b"x\t1\r\n")
    assert convert.main([str(tsv), "--quiet"]) == 1
    assert "val2014_obj36.tsv:4: expected 10 tab-separated fields" in capsys.readouterr().err
