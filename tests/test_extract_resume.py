"""Extraction runs that stop and continue, obj36 TSV output, odd files and plugins in worker processes."""

from __future__ import annotations

import base64
import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from features.extract import BadImageError, extract_folder, find_images, load_image_bounded, skipped_report_path
from features.extractors import Regions, register_extractor
from features.store import FeatureStore
from features.store_writer import partial_path
from features.tsv import FIELDNAMES, iter_tsv

ROOT = Path(__file__).resolve().parents[1]


def photos(root: Path, n: int = 6) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def original_load_obj_tsv(fname: Path) -> list[dict]:
    """What the original code's loader does with a TSV: csv.DictReader + base64 + np.frombuffer."""
    csv.field_size_limit(sys.maxsize)
    data = []
    with open(fname) as f:
        reader = csv.DictReader(f, FIELDNAMES, delimiter="\t")
        for item in reader:
            for key in ["img_h", "img_w", "num_boxes"]:
                item[key] = int(item[key])
            boxes = item["num_boxes"]
            decode_config = [
                ("objects_id", (boxes,), np.int64),
                ("objects_conf", (boxes,), np.float32),
                ("attrs_id", (boxes,), np.int64),
                ("attrs_conf", (boxes,), np.float32),
                ("boxes", (boxes, 4), np.float32),
                ("features", (boxes, -1), np.float32),
            ]
            for key, shape, dtype in decode_config:
                item[key] = np.frombuffer(base64.b64decode(item[key]), dtype=dtype).reshape(shape)
            data.append(item)
    return data


class Failing(Exception):
    pass


@register_extractor("test-labelled")
class Labelled:
    """Two boxes with object and attribute labels. Records the heights it saw in ``calls`` and fails on
    heights in ``fail`` (class attributes, so they are not part of the extraction settings)."""

    name = "test-labelled"
    feat_dim = 3
    calls: list[int] = []
    fail: set[int] = set()

    def __call__(self, image: Image.Image) -> Regions:
        w, h = image.size
        Labelled.calls.append(h)
        if h in Labelled.fail:
            raise Failing(f"stop at height {h}")
        boxes = np.asarray([[0, 0, w, h], [1, 1, w / 2, h / 2]], np.float32)
        feats = np.asarray(image, np.float32).reshape(-1, 3)[:2] + h
        return Regions(
            boxes,
            feats,
            objects_id=np.asarray([h, 1]),
            objects_conf=np.asarray([0.5, 0.25], np.float32),
            attrs_id=np.asarray([2, w]),
            attrs_conf=np.asarray([0.125, 1.0], np.float32),
        )


def test_failed_run_continues_where_it_stopped(tmp_path: Path) -> None:
    photos(tmp_path / "img")
    out = tmp_path / "r.store"
    Labelled.calls, Labelled.fail = [], {23}
    with pytest.raises(RuntimeError, match="img3.png: extractor 'test-labelled' failed"):
        extract_folder(tmp_path / "img", out, "test-labelled", progress=False)
    assert Labelled.calls == [20, 21, 22, 23]
    assert not out.exists() and partial_path(out).is_dir()
    Labelled.calls = []
    with pytest.raises(RuntimeError, match="img3.png"):
        extract_folder(tmp_path / "img", out, "test-labelled", progress=False)
    assert Labelled.calls == [23]  # img0-2 were kept, not extracted again
    Labelled.calls, Labelled.fail = [], set()
    resumed = FeatureStore(extract_folder(tmp_path / "img", out, "test-labelled", dtype="float16", progress=False))
    assert Labelled.calls == [23, 24, 25] and not partial_path(out).exists()
    once = FeatureStore(extract_folder(tmp_path / "img", tmp_path / "once.store", "test-labelled", progress=False))
    assert resumed.ids == once.ids == [f"img{i}" for i in range(6)]
    for name in ("objects_id", "attrs_conf"):
        np.testing.assert_array_equal(
            np.concatenate([getattr(resumed.get(i), name) for i in resumed.ids]),
            np.concatenate([getattr(once.get(i), name) for i in once.ids]),
        )
    np.testing.assert_array_equal(resumed.gather(resumed.ids)[0], once.gather(once.ids)[0])
    # Other settings: the partial store of an earlier run is not mixed in.
    Labelled.fail = {22}
    with pytest.raises(RuntimeError):
        extract_folder(tmp_path / "img", tmp_path / "m.store", "test-labelled", progress=False)
    Labelled.calls, Labelled.fail = [], set()
    extract_folder(tmp_path / "img", tmp_path / "m.store", "test-labelled", dtype="float32", progress=False)
    assert Labelled.calls == [20, 21, 22, 23, 24, 25]


def _labelled_plugin(tmp_path: Path) -> Path:
    module = tmp_path / "plug" / "slow_plugin.py"
    module.parent.mkdir()
    module.write_text(
        textwrap.dedent(
            """
            import os, time
            import numpy as np
            import features.extraction
            from features.extractors import Regions, register_extractor

            features.extraction.CHECKPOINT_SECONDS = 0.0  # checkpoint after every image

            @register_extractor("test-slow")
            class Slow:
                name = "test-slow"
                feat_dim = 2

                def __init__(self, log=None, delay=0.0):
                    self.log, self.delay = log, delay

                def __call__(self, image):
                    time.sleep(self.delay)
                    if self.log:
                        with open(self.log, "a") as f:
                            f.write(f"{image.size[1]}\\n")
                    w, h = image.size
                    feats = np.asarray([[h, os.getpid()], [w, os.getpid()]], np.float32)
                    return Regions(np.asarray([[0, 0, w, h], [0, 0, 1, 1]], np.float32), feats)
            """
        )
    )
    return module.parent


def _cli(args: list[str], plugin_dir: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{plugin_dir}", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "features.extract", *args], env=env, stderr=subprocess.PIPE, text=True, **kw
    )


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_store(tmp_path: Path) -> None:
    photos(tmp_path / "img", 8)
    plugin_dir = _labelled_plugin(tmp_path)
    log = tmp_path / "calls.txt"
    base = [str(tmp_path / "img"), "--plugin", "slow_plugin", "--extractor", "test-slow", "--workers", "1", "--quiet"]
    proc = _cli([*base, str(tmp_path / "k.store"), "--option", f"log={log}", "--option", "delay=0.3"], plugin_dir)
    journal = partial_path(tmp_path / "k.store") / "journal.json"
    deadline = time.monotonic() + 60
    while not (journal.exists() and log.exists() and len(log.read_text().split()) >= 3):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = log.read_text().split()
    assert not (tmp_path / "k.store").exists()

    proc = _cli([*base, str(tmp_path / "k.store"), "--option", f"log={log}", "--option", "delay=0.3"], plugin_dir)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Resuming" in err
    calls = log.read_text().split()
    assert len(calls) - len(first) < 8  # only the rest was extracted again (at most one image twice)
    assert sorted(set(calls), key=int) == [str(20 + i) for i in range(8)]

    proc = _cli([*base, str(tmp_path / "once.store"), "--option", f"log={tmp_path / 'x.txt'}"], plugin_dir)
    assert proc.wait(timeout=60) == 0
    resumed, once = FeatureStore(tmp_path / "k.store"), FeatureStore(tmp_path / "once.store")
    assert resumed.ids == once.ids == [f"img{i}" for i in range(8)]
    np.testing.assert_array_equal(resumed.gather(resumed.ids)[0][..., 0], once.gather(once.ids)[0][..., 0])
    assert not partial_path(tmp_path / "k.store").exists()


@pytest.mark.slow
def test_plugin_is_imported_in_spawned_workers(tmp_path: Path) -> None:
    photos(tmp_path / "img", 4)
    plugin_dir = _labelled_plugin(tmp_path)
    sys.path.insert(0, str(plugin_dir))
    try:
        out = extract_folder(
            tmp_path / "img", tmp_path / "p.store", "test-slow", plugins=["slow_plugin"], workers=2,
            start_method="spawn", progress=False,
        )  # fmt: skip
    finally:
        sys.path.remove(str(plugin_dir))
    store = FeatureStore(out)
    pids = {int(store.get(i).features[0, 1]) for i in store.ids}
    assert os.getpid() not in pids and len(pids) >= 1  # the regions came from the worker processes


def test_tsv_output_reads_with_the_original_loader(tmp_path: Path) -> None:
    photos(tmp_path / "img", 3)
    tsv = tmp_path / "out_obj36.tsv"
    store = FeatureStore(
        extract_folder(
            tmp_path / "img", tmp_path / "t.store", "test-labelled", tsv=tsv, dtype="float32", progress=False
        )
    )
    rows = original_load_obj_tsv(tsv)
    assert [r["img_id"] for r in rows] == store.ids
    for row, record in zip(rows, iter_tsv(tsv)):
        regions = store.get(row["img_id"])
        assert (row["img_h"], row["img_w"], row["num_boxes"]) == (regions.img_h, regions.img_w, 2)
        np.testing.assert_array_equal(row["features"], regions.features)
        np.testing.assert_array_equal(row["objects_id"], [row["img_h"], 1])
        np.testing.assert_array_equal(row["attrs_id"], [2, row["img_w"]])
        np.testing.assert_array_equal(row["attrs_conf"], regions.attrs_conf)
        np.testing.assert_array_equal(row["boxes"][0], [0, 0, row["img_w"], row["img_h"]])
        np.testing.assert_array_equal(record.features, row["features"])
    assert not tsv.with_name(tsv.name + ".partial").exists()


def test_broken_symlink_is_named_not_skipped(tmp_path: Path) -> None:
    photos(tmp_path / "img", 2)
    link = tmp_path / "img" / "gone.jpg"
    link.symlink_to(tmp_path / "nowhere.jpg")
    assert link in find_images(tmp_path / "img")
    with pytest.raises(BadImageError, match=r"gone\.jpg: broken symbolic link \(it points to .*nowhere\.jpg"):
        extract_folder(tmp_path / "img", tmp_path / "s.store", "grid", progress=False)
    out = extract_folder(tmp_path / "img", tmp_path / "s.store", "grid", skip_bad=True, progress=False)
    assert FeatureStore(out).ids == ["img0", "img1"]
    assert "gone.jpg\tbroken symbolic link" in skipped_report_path(out).read_text()


def test_huge_images_are_downscaled_and_boxes_stay_in_original_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (300, 1000, 3), dtype=np.uint8)).save(tmp_path / "wide.jpg", quality=90)
    image, original = load_image_bounded(tmp_path / "wide.jpg", 250)
    assert original == (1000, 300) and max(image.size) <= 250 and image.size[0] >= 200
    out = extract_folder([tmp_path / "wide.jpg"], tmp_path / "h.store", "test-labelled", max_side=250, progress=False)
    regions = FeatureStore(out).get("wide")
    assert (regions.img_w, regions.img_h) == (1000, 300)
    np.testing.assert_allclose(regions.boxes[0], [0, 0, 1, 1])  # the whole (downscaled) image = the whole original
