"""obj36 TSV reader/writer: exact round trips, the original byte format, and errors naming file+line."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from features.tsv import FIELDNAMES, RegionRecord, TSVFormatError, iter_tsv, write_tsv


def make_record(i: int, n: int = 5, dim: int = 6, seed: int = 0) -> RegionRecord:
    rng = np.random.default_rng(seed * 1000 + i)
    h, w = 300 + i, 400 + 2 * i
    xy = rng.uniform(0, 0.5, (n, 2)) * (w, h)
    wh = rng.uniform(0, 0.5, (n, 2)) * (w, h)
    return RegionRecord(
        img_id=f"COCO_val2014_{i:012d}",
        img_h=h,
        img_w=w,
        objects_id=rng.integers(0, 1600, n),
        objects_conf=rng.random(n, dtype=np.float32),
        attrs_id=rng.integers(0, 400, n),
        attrs_conf=rng.random(n, dtype=np.float32),
        boxes=np.concatenate([xy, xy + wh], axis=1).astype(np.float32),
        features=rng.standard_normal((n, dim), dtype=np.float32),
    )


def assert_same(a: RegionRecord, b: RegionRecord) -> None:
    assert (a.img_id, a.img_h, a.img_w, a.num_boxes) == (b.img_id, b.img_h, b.img_w, b.num_boxes)
    for name in ("objects_id", "objects_conf", "attrs_id", "attrs_conf", "boxes", "features"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_round_trip_is_exact(tmp_path: Path) -> None:
    records = [make_record(i, n=3 + i) for i in range(4)]
    path = tmp_path / "x_obj36.tsv"
    assert write_tsv(path, records) == 4
    back = list(iter_tsv(path))
    assert len(back) == 4
    for a, b in zip(records, back):
        assert_same(a, b)
    assert back[1].boxes.shape == (4, 4) and back[1].features.shape == (4, 6)
    assert back[0].objects_id.dtype == np.int64 and back[0].objects_conf.dtype == np.float32


def test_written_bytes_follow_the_original_layout(tmp_path: Path) -> None:
    rec = make_record(7, n=2, dim=3)
    path = tmp_path / "x.tsv"
    write_tsv(path, [rec])
    raw = path.read_bytes()
    assert raw.endswith(b"\r\n") and raw.count(b"\n") == 1  # csv.DictWriter line ending, no header
    fields = dict(zip(FIELDNAMES, raw[:-2].split(b"\t")))
    assert len(fields) == 10 and fields["img_id"] == rec.img_id.encode()
    assert fields["img_h"] == b"307" and fields["img_w"] == b"414" and fields["num_boxes"] == b"2"
    features = np.frombuffer(base64.b64decode(fields["features"]), np.float32)
    assert features.tolist() == rec.features.ravel().tolist()
    assert np.frombuffer(base64.b64decode(fields["objects_id"]), np.int64).tolist() == rec.objects_id.tolist()


def test_lf_endings_and_python3_bytes_repr_are_accepted(tmp_path: Path) -> None:
    rec = make_record(1)
    path = tmp_path / "x.tsv"
    write_tsv(path, [rec])
    parts = path.read_bytes().rstrip(b"\r\n").split(b"\t")
    parts[9] = b"b'" + parts[9] + b"'"
    path.write_bytes(b"\t".join(parts) + b"\n")
    (back,) = iter_tsv(path)
    assert_same(rec, back)


def test_topk_stops_before_later_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    write_tsv(path, [make_record(i) for i in range(3)])
    with open(path, "ab") as f:
        f.write(b"garbage line\r\n")
    assert [r.img_id for r in iter_tsv(path, topk=2)] == [f"COCO_val2014_{i:012d}" for i in range(2)]
    assert len(list(iter_tsv(path, topk=3))) == 3
    with pytest.raises(TSVFormatError, match=r"x\.tsv:4: expected 10 tab-separated fields"):
        list(iter_tsv(path, topk=-1))  # -1 means every line, as in the original pretraining loader
    with pytest.raises(ValueError, match="topk"):
        list(iter_tsv(path, topk=0))


def _corrupt(path: Path, lineno: int, edit) -> None:
    lines = path.read_bytes().split(b"\r\n")
    fields = lines[lineno - 1].split(b"\t")
    lines[lineno - 1] = b"\t".join(edit(fields))
    path.write_bytes(b"\r\n".join(lines))


def _b64(values: np.ndarray) -> bytes:
    return base64.b64encode(values.tobytes())


BAD_LINES = {
    "truncated": (lambda f: f[:7], r"expected 10 tab-separated fields .* got 7 \(truncated"),
    "bad_base64": (
        lambda f: f[:4] + [b"@@not base64@@"] + f[5:],
        r"field 'objects_conf' is not valid base64",
    ),
    "short_array": (
        lambda f: f[:3] + [_b64(np.zeros(4, np.int64))] + f[4:],
        r"field 'objects_id' holds 32 bytes, expected 40 \(5 boxes",
    ),
    "boxes_length": (
        lambda f: f[:8] + [_b64(np.zeros(19, np.float32))] + f[9:],
        r"field 'boxes' holds 76 bytes, expected 80",
    ),
    "features_not_multiple": (
        lambda f: f[:9] + [_b64(np.zeros(31, np.float32))],
        r"field 'features' holds 124 bytes, expected num_boxes=5 rows",
    ),
    "non_int_size": (lambda f: f[:1] + [b"3x0"] + f[2:], r"field 'img_h' must be an integer, got '3x0'"),
    "zero_boxes": (lambda f: f[:7] + [b"0"] + f[8:], r"field 'num_boxes' must be >= 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_lines_name_file_line_and_image(tmp_path: Path, case: str) -> None:
    path = tmp_path / "bad_obj36.tsv"
    write_tsv(path, [make_record(i) for i in range(3)])
    edit, message = BAD_LINES[case]
    _corrupt(path, 2, edit)
    records = iter_tsv(path)
    assert next(records).img_id == "COCO_val2014_000000000000"  # streaming: line 1 is fine
    with pytest.raises(TSVFormatError, match=message) as info:
        next(records)
    assert f"{path}:2" in str(info.value)
    if case != "truncated":
        assert "COCO_val2014_000000000001" in str(info.value)


def test_empty_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    write_tsv(path, [make_record(0)])
    with open(path, "ab") as f:
        f.write(b"\r\n")
    with pytest.raises(TSVFormatError, match=r"x\.tsv:2: empty line"):
        list(iter_tsv(path))


def test_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    write_tsv(path, [make_record(0)])
    before = path.read_bytes()

    def failing():
        yield make_record(1)
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError, match="source died"):
        write_tsv(path, failing())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tsv"]


def test_write_rejects_inconsistent_records(tmp_path: Path) -> None:
    rec = make_record(0, n=4)
    rec.attrs_conf = rec.attrs_conf[:3]
    with pytest.raises(ValueError, match=r"attrs_conf has shape \(3,\), expected 4"):
        write_tsv(tmp_path / "x.tsv", [rec])
    assert not list(tmp_path.iterdir())
