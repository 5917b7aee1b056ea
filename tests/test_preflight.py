"""What a run refuses before it starts: bad numbers, unknown split names, absent data, --multiGPU on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import cli
from engine.validate import multi_gpu_note
from pretrain.lxmert_pretrain import build_parser as pretrain_parser
from tasks import vqa
from tasks.preflight import preflight

REPO = Path(__file__).resolve().parents[1]

BAD_FLAGS = [
    ("--batchSize", "0"), ("--batchSize", "-8"), ("--lr", "-1e-4"), ("--lr", "nan"),
    ("--epochs", "0"), ("--epochs", "-1"), ("--max-steps", "-5"), ("--save-every", "-1"),
    ("--numWorkers", "-2"), ("--eval-batch-size", "-1"), ("--warmup", "1.5"), ("--weight-decay", "-0.1"),
    ("--clip-norm", "-1"), ("--log-every", "0"), ("--max-seq-length", "1"), ("--seed", "-3"),
    ("--llayers", "0"), ("--dropout", "2"),
]  # fmt: skip


@pytest.mark.parametrize(("flag", "value"), BAD_FLAGS)
def test_numeric_flags_are_checked_at_parse_time(flag: str, value: str, capsys: pytest.CaptureFixture) -> None:
    parser = cli.build_parser("test", "vqa_lxr955")
    with pytest.raises(SystemExit) as err:
        parser.parse_args([f"{flag}={value}"])
    assert err.value.code == 2
    assert flag in capsys.readouterr().err


def test_pretraining_flags_are_checked_too(capsys: pytest.CaptureFixture) -> None:
    for flag, value in (("--wordMaskRate", "1.5"), ("--batchSize", "0"), ("--qaStartEpoch", "-1")):
        with pytest.raises(SystemExit):
            pretrain_parser().parse_args([flag, value])
        assert flag in capsys.readouterr().err
    args = pretrain_parser().parse_args(["--batchSize", "4", "--lr", "1e-4", "--max-steps", "0", "--warmup", "0"])
    assert (args.batchSize, args.lr, args.max_steps, args.warmup) == (4, 1e-4, 0, 0.0)


def test_model_config_file_is_checked_against_the_run(tmp_path: Path) -> None:
    spec = tmp_path / "small.json"
    spec.write_text('{"max_position_embeddings": 16}')
    args = cli.build_parser("test", "vqa_lxr955").parse_args(["--model-config", str(spec)])
    with pytest.raises(SystemExit, match="max_seq_length must be between 3 and the model's 16 positions"):
        cli.config_from_args(args)


def test_unknown_test_split_fails_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match=r"--test 'bogus' is not a VQA test split; accepted: "):
        vqa.main(["--test", "bogus", "--output", str(out), "--data-root", str(tmp_path / "nothing")])
    assert not out.exists()


def test_multi_gpu_without_gpus_says_so(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    assert multi_gpu_note(True, cuda_available=True) is None
    assert multi_gpu_note(False, cuda_available=False) is None
    assert "2 CPU processes" in multi_gpu_note(True, cuda_available=False, world_size=2)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "1")
    cfg = cli.config_from_args(cli.build_parser("t", "vqa_lxr955").parse_args(["--train", "", "--valid", "",
                                                                               "--loadLXMERTQA", ""]))
    preflight("vqa", cfg, multi_gpu=True)
    assert "ONE process on the CPU" in capsys.readouterr().err


def _bash(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.run(["bash", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args", "command", "missing"),
    [
        ("vqa_finetune.bash", ("0", "first"), "bash run/download_data.bash vqa features-coco pretrained-model",
         "data/vqa/train.json"),
        ("lxmert_pretrain.bash", ("0,1,2,3", "--multiGPU"),
         "bash run/download_data.bash pretrain features-coco features-vg-gqa", "data/lxmert/mscoco_train.json"),
    ],
)
def test_first_run_without_data_says_what_to_download(tmp_path: Path, script: str, args: tuple, command: str,
                                                      missing: str) -> None:
    proc = _bash(tmp_path, str(REPO / "run" / script), *args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert command in proc.stderr and missing in proc.stderr and "--data-root" in proc.stderr, proc.stderr


def test_missing_pretrained_weights_name_both_ways_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The VQA recipe without snap/pretrained/model_LXRT.pth: the message names the download command and
    --from-bert, which drops the pretrained weights (and only them: --fromScratch keeps its meaning, and an
    explicit --loadLXMERTQA with --from-bert is refused). Catches a message that leaves BERT-only runs hidden."""
    monkeypatch.chdir(tmp_path)  # no snap/ here
    parser = cli.build_parser("t", "vqa_lxr955")
    cfg = cli.config_from_args(parser.parse_args(["--train", "", "--valid", "", "--fromScratch"]))
    assert cfg.load_lxmert_qa == "snap/pretrained/model" and cfg.from_scratch  # the original's meaning
    with pytest.raises(SystemExit) as err:
        preflight("vqa", cfg)
    message = str(err.value)
    assert "snap/pretrained/model_LXRT.pth" in message
    assert "bash run/download_data.bash pretrained-model" in message and "--from-bert" in message
    for args in (["--from-bert"], ["--from-bert", "--fromScratch"]):
        cfg = cli.config_from_args(parser.parse_args(["--train", "", "--valid", "", *args]))
        assert cfg.load_lxmert == cfg.load_lxmert_qa == "" and cfg.from_scratch == ("--fromScratch" in args)
        preflight("vqa", cfg)  # nothing missing any more
    with pytest.raises(SystemExit, match="--from-bert starts without pretrained LXMERT weights; drop --loadLXMERTQA"):
        cli.config_from_args(parser.parse_args(["--from-bert", "--loadLXMERTQA", "snap/pretrained/model"]))
