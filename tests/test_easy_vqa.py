"""easy-VQA in the VQA format (on a small subset of the real package data) and the demo plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from demo.easy_vqa_data import (
    SHAPES,
    image_path,
    prepare_easy_vqa,
    question_type,
    read_split,
    split_minival,
)
from demo.plots import RIGHT, WRONG, plot_learning_curves, plot_prediction_grid
from features.extractors import create_extractor
from features.images import load_image
from features.store import FeatureStore

KEYS = {"answer_type", "img_id", "label", "question_id", "question_type", "sent"}
TYPES = {"color", "shape", "yes/no color", "yes/no shape"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    return prepare_easy_vqa(tmp_path_factory.mktemp("easy_vqa"), max_images=40, minival_fraction=0.1, progress=False)


def test_json_files_follow_the_vqa_format(prepared) -> None:
    ans2label = json.loads(prepared.ans2label.read_text())
    label2ans = json.loads(prepared.label2ans.read_text())
    assert len(label2ans) == 13 and all(ans2label[a] == i for i, a in enumerate(label2ans))
    question_ids, images = set(), {}
    for split in ("train", "minival", "test"):
        records = prepared.load(split)
        assert records, split
        for r in records:
            assert set(r) == KEYS and isinstance(r["question_id"], int) and isinstance(r["sent"], str)
            ((answer, score),) = r["label"].items()
            assert answer in ans2label and score == 1.0
            assert r["question_type"] in TYPES
            assert r["answer_type"] == ("yes/no" if answer in ("yes", "no") else "other")
            question_ids.add(r["question_id"])
        images[split] = {r["img_id"] for r in records}
        assert prepared.counts[split]["questions"] == len(records)
    assert len(question_ids) == sum(prepared.counts[s]["questions"] for s in images)  # unique across splits
    assert not images["train"] & images["minival"] and len(images["minival"]) == 4
    assert {i.split("_")[0] for i in images["train"] | images["minival"]} == {"train"}
    assert {i.split("_")[0] for i in images["test"]} == {"test"}


def test_every_question_has_features(prepared) -> None:
    for split in ("train", "minival", "test"):
        store = FeatureStore(prepared.stores[split])
        ids = sorted({r["img_id"] for r in prepared.load(split)})
        feats, boxes, mask = store.gather(ids)
        assert feats.shape == (len(ids), 17, 268) and mask is None
        assert boxes.min() >= 0 and boxes.max() <= 1
    assert prepared.stores["minival"] == prepared.stores["train"]


def test_rerun_reuses_and_new_settings_rebuild(prepared) -> None:
    files = [*prepared.splits.values(), *prepared.stores.values()]
    before = {p: (p / "meta.json" if p.is_dir() else p).stat().st_mtime_ns for p in files}
    again = prepare_easy_vqa(prepared.root, max_images=40, minival_fraction=0.1, progress=False)
    assert again == prepared
    assert before == {p: (p / "meta.json" if p.is_dir() else p).stat().st_mtime_ns for p in files}
    grid = prepare_easy_vqa(prepared.root, "grid", max_images=20, minival_fraction=0.1, progress=False)
    assert FeatureStore(grid.stores["test"]).feat_dim == 198 and len(FeatureStore(grid.stores["test"])) == 20
    assert len({r["img_id"] for r in grid.load("test")}) == 20


def test_question_types_and_minival_split() -> None:
    assert question_type("what color is the shape?", "red") == "color"
    assert question_type("what shape is present?", "circle") == "shape"
    assert question_type("is there a red shape?", "no") == "yes/no color"
    assert question_type("does the image not contain a triangle?", "yes") == "yes/no shape"
    train, minival = split_minival(list(range(100)), 0.1, seed=0)
    assert len(minival) == 10 and not train & minival and train | minival == set(range(100))
    assert split_minival(list(range(100)), 0.1, seed=0) == (train, minival)
    with pytest.raises(ValueError, match="minival_fraction"):
        split_minival([1, 2], 1.0, 0)
    assert image_path("test_7").name == "7.png" and image_path("test_7").is_file()
    with pytest.raises(ValueError, match="not an easy-VQA image id"):
        image_path("val_1")


def object_features(split: str, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object-region features of the first ``count`` images with colour and shape answers, and
    those answers as class indices."""
    questions, images = read_split(split)
    colour, shape = {}, {}
    for _, answer, number in questions:
        if answer in SHAPES:
            shape[number] = SHAPES.index(answer)
        elif answer not in ("yes", "no"):
            colour[number] = answer
    numbers = sorted(set(colour) & set(shape))[:count]
    extractor = create_extractor("grid+object")
    feats = np.stack([extractor(load_image(images[n])).features[-1] for n in numbers])
    colours = sorted(set(colour.values()))
    return feats, np.asarray([colours.index(colour[n]) for n in numbers]), np.asarray([shape[n] for n in numbers])


def logistic_regression(x: np.ndarray, y: np.ndarray, classes: int, steps: int = 300) -> np.ndarray:
    """Softmax regression weights (bias in the last row), full-batch gradient descent."""
    x = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros((x.shape[1], classes))
    onehot = np.eye(classes)[y]
    for _ in range(steps):
        logits = x @ w
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= 0.5 * x.T @ (p - onehot) / len(x)
    return w


def test_linear_probe_reads_colour_and_shape_from_the_object_region() -> None:
    x_train, colour_train, shape_train = object_features("train", 400)
    x_test, colour_test, shape_test = object_features("test", 200)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    bias = np.ones((len(x_test), 1))
    for y_train, y_test, classes in ((colour_train, colour_test, 8), (shape_train, shape_test, 3)):
        w = logistic_regression(x_train, y_train, classes)
        accuracy = (np.hstack([x_test, bias]) @ w).argmax(1).__eq__(y_test).mean()
        assert accuracy > 0.9, (classes, accuracy)  # chance: 1/8 colours, 1/3 shapes


# ---- plots -------------------------------------------------------------------------------------------


def test_learning_curves_png(tmp_path: Path) -> None:
    history = [
        {"epoch": e, "train_loss": 1 / e, "valid_acc": 0.5 + e / 10, "test_acc": 0.4 + e / 10} for e in (1, 2, 3)
    ]
    out = plot_learning_curves(history, tmp_path / "plots" / "curves.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 2 * im.height > 0  # two panels side by side
    with pytest.raises(ValueError, match="loss"):
        plot_learning_curves([{"epoch": 1}], tmp_path / "none.png")


def test_prediction_grid_png(tmp_path: Path) -> None:
    examples = [
        (image_path("test_0"), "what color is the shape?", "red", "red"),
        (image_path("test_1"), "is there a circle in the image?", "yes", {"no": 1.0}),
        (image_path("test_2"), "what shape is present?", "circle", {"circle": 1.0}),
    ]
    out = plot_prediction_grid(examples, tmp_path / "grid.png", cols=2)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.height > im.width  # 2 rows of 2 cells
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
    for colour in (RIGHT, WRONG):  # one right and one wrong prediction are written in these colours
        rgb = np.asarray([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).max(1) <= 8).sum() > 20, colour
    with pytest.raises(ValueError, match="no examples"):
        plot_prediction_grid([], tmp_path / "empty.png")
