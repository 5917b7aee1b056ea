"""Raw NLVR2 lines -> the task's JSON records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.answers import DataFormatError
from tasks.nlvr2_prepare import prepare


def test_raw_lines_become_task_records(tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = [{"identifier": "dev-850-0-0", "sentence": "Two dogs.", "label": "True", "directory": 1},
             {"identifier": "dev-850-0-1", "sentence": "One cat.", "label": "False"}]
    (raw / "dev.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert prepare(raw, tmp_path / "out") == {"valid": 2}
    recs = json.loads((tmp_path / "out/valid.json").read_text())
    assert recs[0] == {"identifier": "dev-850-0-0", "img0": "dev-850-0-img0", "img1": "dev-850-0-img1",
                       "label": 1, "sent": "Two dogs.", "uid": "nlvr2_valid_0"}
    assert recs[1]["label"] == 0 and recs[1]["uid"] == "nlvr2_valid_1"


def test_bad_lines_name_file_and_line(tmp_path: Path):
    (tmp_path / "train.json").write_text('{"identifier": "train-1-0-0", "sentence": "x", "label": "True"}\n{oops\n')
    with pytest.raises(DataFormatError, match=r"train.json: line 2"):
        prepare(tmp_path, tmp_path / "out")
    (tmp_path / "train.json").write_text('{"identifier": "train-1-0-0", "sentence": "x", "label": "maybe"}\n')
    with pytest.raises(DataFormatError, match="label 'maybe'"):
        prepare(tmp_path, tmp_path / "out")
