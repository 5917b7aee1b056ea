"""Region extractors and image -> feature store extraction, on generated images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from features.extract import extract_folder, main, skipped_report_path
from features.extractors import (
    RegionExtractor,
    Regions,
    available_extractors,
    box_sums,
    component_boxes,
    create_extractor,
    grid_boxes,
    grid_patches,
    pixel_spans,
    register_extractor,
    resample,
    to_rgb,
)
from features.images import BadImageError, find_images, load_image
from features.store import FeatureStore

BG, RED = (240, 236, 250), (255, 0, 0)


def scene(size=(64, 48), box=(20, 10, 41, 30), colour=RED, shape="rectangle", bg=BG) -> Image.Image:
    """A plain background with one filled shape; ``box`` is x1, y1, x2, y2 with x2/y2 exclusive."""
    image = Image.new("RGB", size, bg)
    draw = ImageDraw.Draw(image)
    x1, y1, x2, y2 = box
    if shape == "rectangle":
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=colour)
    else:
        draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=colour)
    return image


def noise(size=(40, 30), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


# ---- extractors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in available_extractors() if n != "butd"])  # butd: test_butd_extract.py
@pytest.mark.parametrize("size", [(64, 64), (37, 23), (3, 2)])
def test_every_extractor_keeps_its_contract(name: str, size: tuple[int, int]) -> None:
    extractor = create_extractor(name)
    assert isinstance(extractor, RegionExtractor)
    image = noise(size)
    first, second = extractor(image), extractor(image.copy())
    first.check(size[0], size[1], extractor.feat_dim)
    assert first.features.dtype == np.float32 and first.boxes.dtype == np.float32
    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(first.boxes, second.boxes)
    assert len(first.boxes) == len(extractor(scene()).boxes)  # region count does not depend on content


def test_feature_widths_follow_the_options() -> None:
    assert create_extractor("grid").feat_dim == 198
    assert create_extractor("grid+object").feat_dim == 268
    regions = create_extractor("grid+object", grid=3, patch=4, objects=2)(scene())
    assert regions.features.shape == (9 + 2, 4 * 16 + 12)
    with pytest.raises(ValueError, match="unknown extractor 'nope'"):
        create_extractor("nope")
    with pytest.raises(TypeError, match="bad options"):
        create_extractor("grid", colour=True)


def test_grid_tiles_the_image_and_matches_per_cell_resampling() -> None:
    values = np.random.default_rng(3).random((23, 37, 3))
    boxes = grid_boxes(37, 23, 4)
    assert boxes[0].tolist() == [0, 0, 37 / 4, 23 / 4] and boxes[-1].tolist() == [37 * 3 / 4, 23 * 3 / 4, 37, 23]
    one_call = grid_patches(values, 4, 5)
    per_cell = np.stack([resample(values, box, 5).ravel() for box in boxes])
    np.testing.assert_allclose(one_call, per_cell, atol=1e-6)  # boxes are float32, the split is exact


def test_resample_is_an_exact_area_average() -> None:
    values = np.random.default_rng(4).random((8, 12, 2))
    # A part [1.5, 4.5) of a row takes half of pixel 1, pixels 2-3 and half of pixel 4.
    got = resample(values, np.asarray([1.5, 0, 4.5, 8]), 1)
    row_weights = np.asarray([0, 0.5, 1, 1, 0.5] + [0] * 7) / 3
    np.testing.assert_allclose(got[0, 0], np.einsum("hwc,w->c", values, row_weights) / 8)
    whole_pixels = resample(values, np.asarray([2, 0, 10, 8]), 4)  # block-mean path
    np.testing.assert_allclose(whole_pixels[1, 2], values[2:4, 6:8].mean((0, 1)))
    np.testing.assert_allclose(whole_pixels, resample(values, np.asarray([2, 0, 10, 8.000001]), 4), atol=1e-5)


def test_box_sums_match_direct_sums() -> None:
    values = np.random.default_rng(1).random((23, 37, 3))
    spans = pixel_spans(np.asarray([[0, 0, 37, 23], [3.2, 4.7, 10.1, 11.0], [36.6, 22.6, 37, 23]]), 37, 23)
    assert spans[2].tolist() == [36, 22, 37, 23]  # sub-pixel boxes still cover one pixel
    sums = box_sums(values, spans)
    for (x1, y1, x2, y2), got in zip(spans, sums):
        np.testing.assert_allclose(got, values[y1:y2, x1:x2].sum((0, 1)))


def test_object_region_finds_the_drawn_shape() -> None:
    extractor = create_extractor("grid+object")
    for shape in ("rectangle", "circle"):
        regions = extractor(scene(box=(20, 10, 41, 30), shape=shape))
        assert regions.boxes[-1].tolist() == [20, 10, 41, 30]
    parts = {name: regions.features[-1][where] for name, where in extractor.layout.items()}
    np.testing.assert_allclose(parts["core_rgb"], np.asarray(RED) / 255)
    assert parts["kind"].tolist() == [0.0, 1.0]  # an object region, not a grid cell
    rect = extractor(scene()).features[-1]
    circle_fill, rect_fill = parts["fg_fraction"][0], rect[extractor.layout["fg_fraction"]][0]
    assert 0.7 < circle_fill < 0.85 and rect_fill == 1.0  # the foreground fraction tells shapes apart
    mask = parts["mask_patch"].reshape(8, 8)
    assert mask[0, 0] < 0.5 < mask[3, 3] and rect[extractor.layout["mask_patch"]].min() == 1.0


def test_core_colour_ignores_anti_aliased_edges() -> None:
    image = scene(colour=(128, 128, 128))
    rgb = np.asarray(image).copy()
    rgb[9, 19:42] = (np.asarray(BG) + np.asarray((128, 128, 128))) // 2  # a blended edge row
    extractor = create_extractor("grid+object")
    regions = extractor(Image.fromarray(rgb))
    core = regions.features[-1][extractor.layout["core_rgb"]]
    assert regions.boxes[-1].tolist() == [19, 9, 42, 30]
    np.testing.assert_allclose(core, 128 / 255, atol=1e-6)


def test_largest_blobs_become_extra_object_regions() -> None:
    image = scene(size=(64, 64), box=(2, 2, 12, 10))
    ImageDraw.Draw(image).rectangle((30, 30, 59, 49), fill=(0, 0, 255))
    regions = create_extractor("grid+object", grid=2, objects=4)(image)
    assert regions.boxes[4:].tolist() == [[2, 2, 60, 50], [30, 30, 60, 50], [2, 2, 12, 10], [2, 2, 60, 50]]
    mask = np.zeros((300, 400), bool)
    mask[10:20, 5:395] = True  # labelled at reduced resolution: boxes accurate to one block
    (box,) = component_boxes(mask, 1)
    assert np.abs(box - [5, 10, 395, 20]).max() <= 4


def test_empty_image_uses_the_whole_image_as_object() -> None:
    regions = create_extractor("grid+object")(Image.new("RGB", (30, 20), BG))
    assert regions.boxes[-1].tolist() == [0, 0, 30, 20]
    assert np.isfinite(regions.features).all()


def test_to_rgb_converts_modes_safely() -> None:
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, not the hidden colour
    assert to_rgb(Image.new("L", (4, 4), 77)).getpixel((0, 0)) == (77, 77, 77)
    assert to_rgb(Image.new("P", (4, 4), 0)).mode == "RGB"
    assert to_rgb(Image.new("CMYK", (4, 4), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    sixteen = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16))
    assert to_rgb(sixteen).getpixel((0, 0)) == (128, 128, 128)  # scaled, not clipped to white
    with pytest.raises(ValueError, match="unsupported image mode 'F'"):
        to_rgb(Image.new("F", (4, 4), 0.5))


# ---- extraction into a store -------------------------------------------------------------------------


def image_folder(root: Path) -> dict[str, Image.Image]:
    images = {
        "a": scene(),
        "b": scene(size=(50, 70), box=(5, 30, 25, 60), colour=(0, 128, 128), shape="circle"),
        "c": noise((33, 21)),
    }
    (root / "sub").mkdir(parents=True)
    images["a"].save(root / "a.png")
    images["b"].save(root / "sub" / "b.PNG")
    images["c"].save(root / "sub" / "c.bmp")
    (root / "notes.txt").write_text("not an image")
    return images


def test_folder_to_store_round_trip(tmp_path: Path) -> None:
    images = image_folder(tmp_path / "img")
    out = extract_folder(tmp_path / "img", tmp_path / "f.store", "grid+object", dtype="float32", progress=False)
    store = FeatureStore(out)
    assert sorted(store.ids) == ["a", "b", "c"] and store.fixed_boxes == 17 and store.feat_dim == 268
    extractor = create_extractor("grid+object")
    for img_id, image in images.items():
        got, want = store.get(img_id), extractor(image)
        assert (got.img_w, got.img_h) == image.size
        np.testing.assert_array_equal(np.asarray(got.features), want.features)
        assert got.boxes.min() >= 0 and got.boxes.max() <= 1
        np.testing.assert_allclose(got.boxes * ([image.width, image.height] * 2), want.boxes, rtol=1e-6)
    assert store.source["extractor"] == "grid+object"


def test_worker_pool_gives_the_same_store(tmp_path: Path) -> None:
    image_folder(tmp_path / "img")
    one = FeatureStore(extract_folder(tmp_path / "img", tmp_path / "one.store", "grid", progress=False))
    two = FeatureStore(extract_folder(tmp_path / "img", tmp_path / "two.store", "grid", workers=2, progress=False))
    assert one.ids == two.ids
    np.testing.assert_array_equal(one.gather(one.ids)[0], two.gather(two.ids)[0])


def test_list_file_and_explicit_ids(tmp_path: Path) -> None:
    image_folder(tmp_path / "img")
    listing = tmp_path / "img" / "list.txt"
    listing.write_text("# images to use\nsub/c.bmp\n\na.png\n")
    assert find_images(listing) == [tmp_path / "img" / "sub" / "c.bmp", tmp_path / "img" / "a.png"]
    out = extract_folder(listing, tmp_path / "l.store", "grid", ids=["x_c", "x_a"], progress=False)
    assert FeatureStore(out).ids == ["x_c", "x_a"]


def test_duplicate_stems_are_refused(tmp_path: Path) -> None:
    image_folder(tmp_path / "img")
    scene().save(tmp_path / "img" / "sub" / "a.jpg")
    with pytest.raises(ValueError, match="image id 'a' would be used twice"):
        extract_folder(tmp_path / "img", tmp_path / "d.store", progress=False)


def bad_images(root: Path) -> dict[str, str]:
    """Bad files and the words their error must contain."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("this is not a PNG")
    noise((120, 90)).save(root / "whole.png")
    data = (root / "whole.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "whole.png").unlink()
    Image.new("F", (8, 8), 0.25).save(root / "float.tif")
    return {"empty.png": "empty file", "text.png": "not a readable image", "truncated.png": "not a readable image",
            "float.tif": "unsupported image mode 'F'"}  # fmt: skip


def test_each_bad_image_gives_an_error_naming_the_file(tmp_path: Path) -> None:
    for name, words in bad_images(tmp_path / "bad").items():
        path = tmp_path / "bad" / name
        with pytest.raises(BadImageError, match=words) as err:
            load_image(path)
        assert str(path) in str(err.value)
        with pytest.raises(BadImageError, match="skip-bad"):
            extract_folder([path], tmp_path / "x.store", progress=False)
        assert not (tmp_path / "x.store").exists()  # nothing published
    with pytest.raises(BadImageError, match="cannot read the file"):
        load_image(tmp_path / "missing.png")


def test_good_odd_modes_load(tmp_path: Path) -> None:
    Image.new("P", (5, 5), 3).save(tmp_path / "p.png")
    Image.new("LA", (5, 5), (0, 0)).save(tmp_path / "la.png")
    Image.new("CMYK", (5, 5), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.full((5, 5), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert load_image(tmp_path / "la.png").getpixel((0, 0)) == (255, 255, 255)
    assert load_image(tmp_path / "deep.png").getpixel((0, 0)) == (255, 255, 255)
    for name in ("p.png", "cmyk.jpg"):
        assert load_image(tmp_path / name).mode == "RGB"


def test_cli_skip_bad_writes_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image_folder(tmp_path / "img")
    bad = bad_images(tmp_path / "img" / "bad")
    out = tmp_path / "s.store"
    assert main([str(tmp_path / "img"), str(out), "--extractor", "grid", "--workers", "1", "--quiet"]) == 2
    assert "empty.png: empty file" in capsys.readouterr().err and not out.exists()

    assert main([str(tmp_path / "img"), str(out), "--grid", "2", "--skip-bad", "--workers", "2", "--quiet"]) == 0
    store = FeatureStore(out)
    assert sorted(store.ids) == ["a", "b", "c"] and store.fixed_boxes == 4 + 1
    lines = skipped_report_path(out).read_text().splitlines()
    assert lines[0] == "path\treason" and len(lines) == 1 + len(bad)
    for name, words in bad.items():
        assert any(line.startswith(str(tmp_path / "img" / "bad" / name) + "\t") and words in line for line in lines)
    assert store.source["skipped"] == len(bad)


def test_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "features.extract", "--help"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
        check=True,
    )
    assert "--skip-bad" in result.stdout and "--extractor" in result.stdout


def test_butd_registers_itself_where_it_is_offered() -> None:
    """The registry knows nothing of the detector (no import circle between them); the commands that offer
    ``--extractor butd`` (features.extract, ask) import ``features.butd``, which registers it without
    loading the detector's modules until one is built."""
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    script = (
        "import sys\n"
        "from features.extractors import available_extractors\n"
        "print('butd' in available_extractors(), 'features.butd' in sys.modules)\n"
        "import {entry}\n"
        "print('butd' in available_extractors(), 'features.butd.extractor' in sys.modules)\n"
    )
    for entry in ("features.extract", "ask.cli"):
        result = subprocess.run([sys.executable, "-c", script.format(entry=entry)], capture_output=True, text=True,
                                env=env, check=True, timeout=300)
        assert result.stdout.split() == ["False", "False", "True", "False"], (entry, result.stdout)


# ---- plugging in another extractor ---------------------------------------------------------------------


@register_extractor("test-corners")
class CornerDetector:
    """Stands in for a detector: two fixed boxes with class ids and confidences."""

    name = "test-corners"
    feat_dim = 5

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken

    def __call__(self, image: Image.Image) -> Regions:
        w, h = image.size
        boxes = np.asarray([[0, 0, w / 2, h / 2], [w / 2, h / 2, w + (5 if self.broken else 0), h]], np.float32)
        feats = np.arange(10, dtype=np.float32).reshape(2, 5)
        return Regions(boxes, feats, objects_id=np.asarray([3, 7]), objects_conf=np.asarray([0.9, 0.4], np.float32))


def test_registered_detector_outputs_reach_the_store(tmp_path: Path) -> None:
    image_folder(tmp_path / "img")
    store = FeatureStore(extract_folder(tmp_path / "img", tmp_path / "p.store", "test-corners", progress=False))
    regions = store.get("a")
    assert regions.objects_id.tolist() == [3, 7] and regions.objects_conf.tolist() == pytest.approx([0.9, 0.4])
    assert regions.boxes[1].tolist() == [0.5, 0.5, 1.0, 1.0]
    with pytest.raises(RuntimeError, match=r"a\.png: extractor 'test-corners' failed: .*not inside"):
        extract_folder(
            tmp_path / "img", tmp_path / "q.store", "test-corners", extractor_options={"broken": True}, progress=False
        )
