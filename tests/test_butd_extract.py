"""The butd extractor end to end on real photographs (scikit-image's samples) with random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from features.butd.extractor import ButdExtractor
from features.butd.labels import attribute_names, object_names
from features.butd.model import Detector, DetectorConfig
from features.butd.weights import random_state_dict, save_random_weights
from features.extract import extract_folder, main
from features.extractors import create_extractor
from features.store import FeatureStore
from tasks.data_common import ImageFeatures

skdata = pytest.importorskip("skimage.data")

# The architecture at a small width: every code path of the full detector, a fraction of the work.
SMALL = DetectorConfig(width=8, stem_channels=16, blocks=(1, 1, 2, 1), rpn_hidden=32)


def photo(name: str, short: int | None = None) -> Image.Image:
    image = Image.fromarray(getattr(skdata, name)())
    if short is not None:
        scale = short / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    return image


@pytest.fixture(scope="module")
def small_weights() -> dict[str, torch.Tensor]:
    return random_state_dict(7, SMALL)


def small_extractor(weights: dict, preset: str, **kw) -> object:
    kw = {"short_side": 200, "max_side": 320, "rpn_post_nms": 100, **kw}
    return create_extractor("butd", weights=weights, preset=preset, config=SMALL, **kw)


def check_regions(regions, image: Image.Image, dim: int, count: int) -> None:
    regions.check(image.width, image.height, dim)  # boxes inside the image, finite, shapes
    assert len(regions.boxes) == count
    assert np.isfinite(regions.features).all() and np.abs(regions.features).max() < 1e4
    assert (regions.boxes[:, 2] > regions.boxes[:, 0]).all() and (regions.boxes[:, 3] > regions.boxes[:, 1]).all()
    assert regions.objects_id.min() >= 0 and regions.objects_id.max() < 1600
    assert regions.attrs_id.min() >= 0 and regions.attrs_id.max() < 400
    assert ((regions.objects_conf > 0) & (regions.objects_conf <= 1)).all()
    assert ((regions.attrs_conf > 0) & (regions.attrs_conf <= 1)).all()


def check_labels_follow_features(regions, extractor, preset: str) -> None:
    """Each region's object and attribute ids and confidences are those its own feature vector predicts:
    background (the last class) and "no attribute" (the last attribute) excluded, attributes softmaxed over
    all 401 logits (lxmert) or over the 400 attributes (hf-demo)."""
    with torch.inference_mode():
        cls_logits, attr_logits, _ = extractor.model.roi_heads.box_predictor(torch.from_numpy(regions.features))
    probs = torch.softmax(cls_logits, -1)[:, :-1]
    attrs = torch.softmax(attr_logits, -1)[:, :-1] if preset == "lxmert" else torch.softmax(attr_logits[:, :-1], -1)
    np.testing.assert_array_equal(regions.objects_id, probs.argmax(1).numpy())
    np.testing.assert_allclose(regions.objects_conf, probs.max(1).values.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(regions.attrs_id, attrs.argmax(1).numpy())
    np.testing.assert_allclose(regions.attrs_conf, attrs.max(1).values.numpy(), rtol=1e-5)


@pytest.mark.parametrize("preset", ["lxmert", "hf-demo"])
def test_small_detector_on_photos_is_sane_and_deterministic(small_weights: dict, preset: str) -> None:
    """Sane, deterministic, batched like alone, and labelled by the regions' own features. (The regions
    themselves are checked against an independent reference of the original extraction in
    test_butd_reference.py.)"""
    images = [photo("astronaut"), photo("coffee"), photo("astronaut")]
    first = small_extractor(small_weights, preset)
    batched = first.batch(images)  # the two astronauts share a forward pass
    again = small_extractor(small_weights, preset).batch(images)
    for image, regions, repeat in zip(images, batched, again):
        check_regions(regions, image, SMALL.feat_dim, 36)
        check_labels_follow_features(regions, first, preset)
        for name in ("boxes", "features", "objects_id", "objects_conf", "attrs_id", "attrs_conf"):
            np.testing.assert_array_equal(getattr(repeat, name), getattr(regions, name))  # deterministic
    alone = first(images[0])  # one image alone: the same up to float rounding of the batched convolutions
    np.testing.assert_array_equal(alone.objects_id, batched[0].objects_id)
    np.testing.assert_allclose(alone.boxes, batched[0].boxes, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(alone.features, batched[0].features, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(batched[0].features, batched[2].features)
    assert not np.array_equal(batched[0].boxes, batched[1].boxes)


def test_min_max_boxes_and_presets_differ(small_weights: dict) -> None:
    image = photo("rocket")
    some = small_extractor(small_weights, "lxmert", min_boxes=10, max_boxes=100)(image)
    check_regions(some, image, SMALL.feat_dim, len(some.boxes))
    assert 10 <= len(some.boxes) <= 100
    lx = small_extractor(small_weights, "lxmert")(image)
    hf = small_extractor(small_weights, "hf-demo")(image)
    assert not np.allclose(lx.boxes, hf.boxes)
    with pytest.raises(ValueError, match="min_boxes <= max_boxes"):
        small_extractor(small_weights, "lxmert", min_boxes=50, max_boxes=20)
    with pytest.raises(ValueError, match="unknown detector preset 'caffe'"):
        small_extractor(small_weights, "caffe")


def test_label_names_are_shipped() -> None:
    objects, attrs = object_names(), attribute_names()
    assert len(objects) == 1600 and len(attrs) == 400
    assert objects[:3] == ("yolk", "goal", "bathroom") and attrs[0] == "gray"


def test_missing_default_weights_name_the_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"bash run/download_data.bash butd-detector"):
        create_extractor("butd")
    photo("coffee", 64).save(tmp_path / "c.png")
    assert main([str(tmp_path / "c.png"), str(tmp_path / "o.store"), "--extractor", "butd", "--quiet"]) == 2


def test_folder_to_store_and_tsv_read_by_the_tasks(tmp_path: Path, small_weights: dict) -> None:
    for name in ("astronaut", "coffee", "chelsea"):
        photo(name, 120).save(tmp_path / f"{name}.jpg")
    extractor = small_extractor(small_weights, "lxmert")
    out = extract_folder(
        tmp_path, tmp_path / "b.store", extractor, batch=2, workers=2, tsv=tmp_path / "b_obj36.tsv", dtype="float32",
        progress=False,
    )  # fmt: skip
    store = FeatureStore(out)
    assert store.ids == ["astronaut", "chelsea", "coffee"] and store.fixed_boxes == 36
    assert store.labels == ["attrs_conf", "attrs_id", "objects_conf", "objects_id"]
    direct = extractor(Image.open(tmp_path / "coffee.jpg"))
    np.testing.assert_allclose(store.get("coffee").features, direct.features, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(store.get("coffee").attrs_id, direct.attrs_id)

    # The tasks read it like a converted obj36 file: (B, 36, D) features and boxes in [0, 1].
    feats = ImageFeatures.open({out: None})
    f, b, mask = feats.gather(["coffee", "astronaut"])
    assert f.shape == (2, 36, SMALL.feat_dim) and mask is None and b.min() >= 0 and b.max() <= 1
    from lxrt.config import LXRTConfig
    from tasks.models import Classifier

    model = Classifier(LXRTConfig.tiny(visual_feat_dim=SMALL.feat_dim), num_classes=5).eval()
    with torch.no_grad():
        logits = model(torch.tensor([[101, 2054, 102]] * 2), torch.from_numpy(f), torch.from_numpy(b))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()


@pytest.mark.slow
def test_full_size_detector_on_one_small_photo(tmp_path: Path) -> None:
    """The released architecture (2048-d) through the command line, on one photo at short side 160."""
    weights = save_random_weights(tmp_path / "pytorch_model.bin", seed=1)
    (tmp_path / "img").mkdir()
    photo("chelsea", 160).save(tmp_path / "img" / "cat.png")
    args = [str(tmp_path / "img"), str(tmp_path / "c.store"), "--extractor", "butd", "--weights", str(weights)]
    args += ["--option", "short_side=160", "--option", "max_side=240", "--option", "rpn_post_nms=30"]
    args += ["--min-boxes", "10", "--max-boxes", "20"]
    assert main([*args, "--quiet", "--workers", "0"]) == 0
    regions = FeatureStore(tmp_path / "c.store").get("cat")
    assert regions.features.shape[1] == 2048 and 10 <= len(regions.boxes) <= 20
    assert np.isfinite(regions.features).all() and regions.boxes.min() >= 0 and regions.boxes.max() <= 1


def test_bf16_autocast_path_runs(small_weights: dict) -> None:
    """The accelerator setting (bf16 autocast) on the CPU: same contract, close to float32."""
    image = photo("coffee", 120)
    small = {"short_side": 120, "max_side": 200, "rpn_post_nms": 60}
    half = small_extractor(small_weights, "hf-demo", amp="bf16", **small)(image)
    check_regions(half, image, SMALL.feat_dim, 36)
    full = small_extractor(small_weights, "hf-demo", **small)(image)
    top = np.abs(full.features).max()
    assert np.abs(half.features.mean(0) - full.features.mean(0)).max() < 0.1 * top


def test_hf_demo_keeps_the_ports_arithmetic(small_weights: dict) -> None:
    """hf-demo runs conv then BatchNorm on NCHW tensors like the HF port (so near-tied proposals rank
    alike): its res4 map equals an unfolded model's bit for bit. Fast numerics (folded BatchNorm,
    channels-last) change only the rounding."""
    image = photo("chelsea", short=200)
    plain = Detector(SMALL)
    plain.load_state_dict(small_weights)
    plain.eval()
    maps = {}
    for fast in (False, True):
        ext = small_extractor(small_weights, "hf-demo", fast_numerics=fast)
        ext.model.backbone.register_forward_hook(lambda m, args, out, fast=fast: maps.update({fast: (args[0], out)}))
        ext(image)
    x, out = maps[False]
    assert x.is_contiguous()
    with torch.inference_mode():
        assert torch.equal(out, plain.backbone(x))
    x_fast, out_fast = maps[True]
    assert x_fast.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(out_fast, out)
    assert torch.allclose(out_fast, out, rtol=1e-3, atol=1e-3)


# ---- the extractor's own settings ---------------------------------------------------------------------------


def test_weights_from_a_file_and_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A weights file loads strictly (an extra key is refused); a missing file or default names what to do."""
    path = tmp_path / "w.bin"
    torch.save(random_state_dict(7, SMALL), path)
    from_file = ButdExtractor(path, preset="lxmert", config=SMALL)
    from_dict = ButdExtractor(random_state_dict(7, SMALL), preset="lxmert", config=SMALL)
    for (name, a), b in zip(from_file.model.state_dict().items(), from_dict.model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match=r"^/\S+/missing\.bin: no such detector weights file$"):
        ButdExtractor(tmp_path / "missing.bin", config=SMALL)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        ButdExtractor(None, config=SMALL)
    assert str(err.value) == (
        "no detector weights at snap/detector/pytorch_model.bin: download them with "
        "`bash run/download_data.bash butd-detector` or pass --weights PATH (a pytorch_model.bin of "
        "unc-nlp/frcnn-vg-finetuned)"
    )
    extra = {**random_state_dict(7, SMALL), "roi_heads.extra.weight": torch.zeros(1)}
    with pytest.raises(RuntimeError, match="roi_heads.extra.weight"):
        ButdExtractor(extra, config=SMALL)


def test_extractor_options_reach_the_run(small_weights: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """amp, box counts, threads, the numerics' memory format and the stage timer are the ones asked for; bad
    values are refused with the accepted ones; the regions' dtypes are the store's."""
    with pytest.raises(ValueError, match=r"^amp must be 'none' or 'bf16', got 'fp16'$"):
        small_extractor(small_weights, "lxmert", amp="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"^device 'cuda' requested but torch sees no CUDA device$"):
            small_extractor(small_weights, "lxmert", device="cuda")
    asked: list[int] = []  # recorded, not set: a larger thread pool in this process hangs later forked children
    monkeypatch.setattr(torch, "set_num_threads", asked.append)
    ext = small_extractor(small_weights, "lxmert", amp="bf16", min_boxes=4, max_boxes=9, threads=3)
    assert asked == [3] and type(asked[0]) is int
    assert ext.amp is True and (ext.preset.min_boxes, ext.preset.max_boxes) == (4, 9)
    assert repr(ext) == "ButdExtractor(preset='lxmert', device='cpu', amp=True)"
    fast = small_extractor(small_weights, "lxmert", fast_numerics=True)
    assert fast.model.backbone.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    image = photo("coffee", 100)
    plain = small_extractor(small_weights, "lxmert", short_side=100, max_side=160, rpn_post_nms=40)
    plain.timer.enabled = True
    regions = plain(image)
    assert set(plain.timer.seconds) == {"backbone", "rpn", "roi_pool", "res5", "predictor", "select"}
    assert regions.boxes.dtype == regions.features.dtype == regions.objects_conf.dtype == np.float32
    assert regions.attrs_conf.dtype == np.float32 and regions.objects_id.dtype == regions.attrs_id.dtype == np.int64
    half = small_extractor(small_weights, "lxmert", short_side=100, max_side=160, rpn_post_nms=40, amp="bf16")(image)
    assert not np.array_equal(half.features, regions.features)  # bf16 autocast did run
