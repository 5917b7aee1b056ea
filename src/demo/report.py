"""The demo's result files: metrics.json, curves.png and predictions.png in the run folder.

Everything is recomputed from files on disk (``test_predict.json``, the split's question JSON and
the loop's ``history.json``), so the report says exactly what the written predictions score.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from demo.easy_vqa_data import image_path
from demo.plots import plot_learning_curves, plot_prediction_grid
from demo.task import accuracy_by_type, type_key
from lxrt.fileio import atomic_write_text
from tasks.answers import DataFormatError

GRID_SIZE = 16
MAX_WRONG_SHOWN = 4


def read_predictions(path: str | os.PathLike) -> dict[int, str]:
    """``[{"question_id": int, "answer": str}, ...]`` (the VQA result format) -> {question_id: answer}."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(rows, list):
        raise DataFormatError(f"{path}: expected a JSON list of {{question_id, answer}} objects")
    out: dict[int, str] = {}
    for i, row in enumerate(rows):
        ok = (
            isinstance(row, dict)
            and isinstance(row.get("question_id"), int)
            and isinstance(row.get("answer"), str)
        )
        if not ok:
            raise DataFormatError(
                f"{path}: entry {i} is {row!r:.80}, expected {{'question_id': int, 'answer': str}}"
            )
        out[row["question_id"]] = row["answer"]
    return out


def score_predictions(predictions: Mapping[int, str], records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Overall and per-question-type accuracy with question counts; every record must be predicted."""
    missing = [r["question_id"] for r in records if r["question_id"] not in predictions]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(records)} questions have no prediction (first: {missing[0]})"
        )
    acc = accuracy_by_type(predictions, records)
    counts = Counter(r["question_type"] for r in records)
    per_type = {
        qtype: {"accuracy": acc[f"accuracy/{type_key(qtype)}"], "questions": n}
        for qtype, n in sorted(counts.items())
    }
    return {"accuracy": acc["accuracy"], "questions": len(records), "per_question_type": per_type}


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def curve_rows(history: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """The loop's ``history.json`` records as rows for :func:`plot_learning_curves` (epochs from 1).

    Keys become readable legend labels: ``valid/accuracy/color`` -> ``valid acc (color)``.
    """
    rows = []
    for i, rec in enumerate(history):
        row: dict[str, float] = {"epoch": float(rec.get("epoch", i)) + 1}
        for key, value in rec.items():
            if not isinstance(value, (int, float)) or key == "epoch":
                continue
            parts = key.split("/")
            if parts[0] not in ("train", "valid") or parts[1] not in ("loss", "accuracy") or len(parts) > 3:
                continue
            if parts[0] == "train" and len(parts) == 3:
                continue  # per-type training accuracy would crowd the plot
            label = f"{parts[0]} {'acc' if parts[1] == 'accuracy' else 'loss'}"
            row[label if len(parts) == 2 else f"{label} ({parts[2]})"] = float(value)
        rows.append(row)
    return rows


def pick_examples(
    predictions: Mapping[int, str],
    records: Sequence[Mapping[str, Any]],
    count: int = GRID_SIZE,
    seed: int = 0,
) -> list[Mapping[str, Any]]:
    """``count`` test questions on distinct images, spread evenly over the question types.

    Up to :data:`MAX_WRONG_SHOWN` of them are mistakes when there are any, so the grid also shows
    what the model gets wrong. Seeded, so reruns show the same questions.
    """
    rng = random.Random(seed)
    wrong = [
        r for r in records if float(r.get("label", {}).get(predictions.get(r["question_id"], ""), 0)) <= 0
    ]
    chosen = rng.sample(wrong, min(MAX_WRONG_SHOWN, len(wrong), count))
    images = {r["img_id"] for r in chosen}
    by_type: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        by_type[r["question_type"]].append(r)
    pools = [rng.sample(rs, len(rs)) for _, rs in sorted(by_type.items())]
    while len(chosen) < count and any(pools):
        for pool in pools:
            while pool and pool[-1]["img_id"] in images:
                pool.pop()
            if pool and len(chosen) < count:
                rec = pool.pop()
                chosen.append(rec)
                images.add(rec["img_id"])
    return sorted(chosen, key=lambda r: (r["question_type"], r["question_id"]))


def write_report(
    output_dir: str | os.PathLike,
    records: Sequence[Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
    split: str = "test",
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``metrics.json``, ``curves.png`` (when ``history.json`` exists) and ``predictions.png``.

    ``records`` are the split's questions; ``extra`` (timings, settings) is stored in metrics.json
    beside the scores. Returns the metrics.
    """
    out = Path(output_dir)
    predictions = read_predictions(out / f"{split}_predict.json")
    metrics = {"split": split, **score_predictions(predictions, records), **dict(extra or {})}
    history_file = out / "history.json"
    if history_file.is_file():
        history = json.loads(history_file.read_text(encoding="utf-8"))
        rows = curve_rows(history)
        if rows:
            plot_learning_curves(rows, out / "curves.png")
        valid = [r["valid/accuracy"] for r in history if "valid/accuracy" in r]
        speeds = [r["train/examples_per_s"] for r in history if "train/examples_per_s" in r]
        metrics["epochs_trained"] = len(history)
        if valid:
            metrics["best_minival_accuracy"] = max(valid)
        if speeds:
            metrics["train_examples_per_s"] = sum(speeds) / len(speeds)
    shown = pick_examples(predictions, records, seed=seed)
    plot_prediction_grid(
        [(image_path(r["img_id"]), r["sent"], predictions[r["question_id"]], r["label"]) for r in shown],
        out / "predictions.png",
    )
    write_json(out / "metrics.json", metrics)
    return metrics
