"""Pretraining end to end: the run script on synthetic data, snapshots, initialization options, metrics,
and fine-tuning VQA from the snapshot."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import recipes
from engine.config import TrainConfig
from engine.state import seed_everything
from lxrt import CheckpointError, LXRTConfig, load_state, read_state_dict
from pretrain.lxmert_pretrain import build_parser, options_from_args
from pretrain.task import PretrainOptions, PretrainTask
from tasks.answers import convert_ans
from tasks.synthetic import SyntheticConfig, generate

REPO = Path(__file__).resolve().parents[1]
LOSSES = ["Mask_LM", "Matched", "Obj", "Attr", "Feat", "QA"]


def run_script(script: str, args: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    # One intra-op thread: the tiny model is faster that way, and the test machine is shared.
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    command = ["bash", str(REPO / "run" / script), *args]
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, SyntheticConfig(seed=3), progress=False)
    return root


@pytest.fixture(scope="module")
def pretrained(data_root, tmp_path_factory) -> Path:
    """A tiny pretraining run through run/lxmert_pretrain.bash: 3 epochs x 75 steps."""
    work = tmp_path_factory.mktemp("work")
    run_script(
        "lxmert_pretrain.bash",
        [
            "0", "--data-root", str(data_root), "--tiny", "--model-config", "tiny",
            "--train", "mscoco_train,mscoco_nominival", "--valid", "mscoco_minival",
            "--batchSize", "8", "--epochs", "3", "--lr", "2e-3", "--seed", "5", "--no-progress",
        ],
        cwd=work,
        timeout=300,
    )
    return work / "snap" / "pretrain" / "lxmert"


def task_of_run(out: Path) -> PretrainTask:
    cfg = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    options = json.loads((out / "pretrain_options.json").read_text())["pretrain"]
    options["visual_losses"] = tuple(options["visual_losses"])
    return PretrainTask(cfg, PretrainOptions(**options))


@torch.no_grad()
def valid_losses(task: PretrainTask, model: torch.nn.Module, dataset) -> dict[str, float]:
    model.eval()
    collate = task.collator(dataset)
    sums = dict.fromkeys(LOSSES, 0.0)
    batches = 0
    for start in range(0, len(dataset), 16):
        batch = collate([dataset[i] for i in range(start, min(start + 16, len(dataset)))])
        _, parts = task.loss(task.forward(model, batch), batch)
        for k in LOSSES:
            sums[k] += float(parts[k])
        batches += 1
    return {k: v / batches for k, v in sums.items()}


@pytest.mark.slow
def test_tiny_run_writes_original_snapshots_and_lowers_losses(pretrained):
    out = pretrained
    for name in ("Epoch01_LXRT.pth", "Epoch02_LXRT.pth", "Epoch03_LXRT.pth", "BEST_EVAL_LOSS_LXRT.pth"):
        assert (out / name).is_file(), name
    assert (out / "run.bash").is_file() and (out / "src" / "pretrain" / "task.py").is_file()  # backup
    state = torch.load(out / "Epoch01_LXRT.pth", map_location="cpu", weights_only=True)
    assert {k.split(".")[0] for k in state} == {"bert", "cls", "obj_predict_head", "answer_head"}
    for key in (
        "bert.embeddings.word_embeddings.weight", "bert.encoder.x_layers.0.visual_attention.att.query.weight",
        "cls.predictions.bias", "cls.predictions.decoder.weight", "cls.seq_relationship.weight",
        "obj_predict_head.decoder_dict.obj.weight", "obj_predict_head.decoder_dict.attr.weight",
        "obj_predict_head.decoder_dict.feat.weight", "answer_head.logit_fc.3.weight",
    ):
        assert key in state, key
    assert state["answer_head.logit_fc.3.weight"].shape[0] == 14  # the synthetic all_ans.json
    words = state["bert.embeddings.word_embeddings.weight"]
    assert torch.equal(state["cls.predictions.decoder.weight"], words)  # tied, as the original

    task = task_of_run(out)
    assert task.cfg.from_scratch and task.cfg.lr == 2e-3 and task.options.loss_compat == "original"
    seed_everything(task.cfg.seed)
    initial = task.build_model()  # the loop's initialization: same seed, same construction order
    trained = task.build_model()
    load_state(trained, read_state_dict(out / "Epoch03_LXRT.pth"), strict=True)
    valid = task.dataset(task.cfg.valid, train=False)
    before, after = valid_losses(task, initial, valid), valid_losses(task, trained, valid)
    for name in LOSSES:
        if name == "Matched":
            # Matching is not learnt by a tiny model in a CPU-sized run: it must stay calibrated
            # (at chance, ln 2) rather than drift above it.
            assert after[name] < math.log(2) + 0.01, f"{name}: {before[name]:.4f} -> {after[name]:.4f}"
            continue
        assert after[name] < before[name], f"{name}: {before[name]:.4f} -> {after[name]:.4f}"
    for name in ("Mask_LM", "Obj", "Attr"):  # the quickly learnt ones, by a clear margin
        assert after[name] < 0.8 * before[name], f"{name}: {before[name]:.4f} -> {after[name]:.4f}"

    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2]
    # The original's epoch report, in log.log too; per-task losses per step in steps.jsonl.
    num, acc = r"\d+\.\d{4}", r"\d\.\d{4}"
    losses = "The losses are " + "".join(f"{name}: {num} " for name in LOSSES)
    accuracy = f"Overall Accu {acc}, vqa Accu {acc}, "
    report = [f"The training loss for Epoch EPOCH is {num}", losses, accuracy, f"The valid loss is {num}", losses,
              accuracy]
    lines = (out / "log.log").read_text().splitlines()
    assert len(lines) == 3 * len(report)
    for i, line in enumerate(lines):
        assert re.fullmatch(report[i % len(report)].replace("EPOCH", str(i // len(report))), line), line
    assert f"{history[0]['train/loss']:0.4f}" in lines[0] and f"{history[0]['valid/loss']:0.4f}" in lines[3]
    step = json.loads((out / "steps.jsonl").read_text().splitlines()[0])
    assert sum(step[name] for name in LOSSES) == pytest.approx(step["loss"], rel=1e-5)
    assert all(f"valid/loss/{name}" in history[-1] for name in LOSSES)
    assert history[-1]["valid/loss"] < history[0]["valid/loss"]


@pytest.mark.slow
def test_snapshot_fine_tunes_vqa(pretrained, data_root, tmp_path):
    """The VQA model starts from the snapshot: encoder weights and, for every VQA answer found in the
    pretraining table, its QA-head row (``--lr 0`` keeps the loaded weights through the epoch)."""
    snapshot = pretrained / "Epoch03"  # the original's convention: PATH -> PATH_LXRT.pth
    run_script(
        "vqa_finetune.bash",
        [
            "0", "from_pretrain", "--tiny", "--loadLXMERTQA", str(snapshot), "--model-config", "tiny",
            "--data-root", str(data_root), "--epochs", "1", "--batchSize", "16", "--lr", "0", "--no-progress",
        ],
        cwd=tmp_path,
        timeout=300,
    )
    out = tmp_path / "snap" / "vqa" / "from_pretrain"
    tuned = read_state_dict(out / "LAST.pth")
    source = read_state_dict(pretrained / "Epoch03_LXRT.pth")
    encoder = [k for k in source if k.startswith("bert.")]
    assert encoder and all(torch.equal(tuned["lxrt_encoder.model." + k], source[k]) for k in encoder)
    for i in (0, 2):  # the answer MLP's first layers
        assert torch.equal(tuned[f"logit_fc.{i}.weight"], source[f"answer_head.logit_fc.{i}.weight"])
    pre = [convert_ans(a["ans"]) for a in json.loads((data_root / "lxmert" / "all_ans.json").read_text())]
    labels = json.loads((data_root / "vqa" / "trainval_label2ans.json").read_text())
    found = 0
    for i, answer in enumerate(labels):
        row = tuned["logit_fc.3.weight"][i]
        if answer in pre:
            found += 1
            assert torch.equal(row, source["answer_head.logit_fc.3.weight"][pre.index(answer)]), answer
        else:
            assert not row.any(), answer
    assert found >= len(labels) // 2, (found, len(labels))


def tiny_cfg(data_root: Path, **changes) -> TrainConfig:
    fields = dict(task="lxmert_pretrain", data_root=str(data_root), tiny=True, progress=False)
    fields["from_scratch"] = True
    return TrainConfig(**{**fields, **changes}, model=LXRTConfig.tiny())


def test_load_lxmert_accepts_prefixed_snapshots_and_keeps_answer_head(data_root, tmp_path):
    source = PretrainTask(tiny_cfg(data_root)).build_model()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}  # a --multiGPU snapshot
    torch.save(state, tmp_path / "multi_LXRT.pth")
    task = PretrainTask(tiny_cfg(data_root, from_scratch=False, load_lxmert=str(tmp_path / "multi")))
    model = task.build_model()
    fresh_answer = model.answer_head.logit_fc[3].weight.clone()
    task.load_pretrained(model)
    words = model.bert.embeddings.word_embeddings.weight
    assert torch.equal(words, source.bert.embeddings.word_embeddings.weight)
    obj = model.obj_predict_head.decoder_dict["obj"].weight
    assert torch.equal(obj, source.obj_predict_head.decoder_dict["obj"].weight)
    assert torch.equal(model.answer_head.logit_fc[3].weight, fresh_answer)  # answer head is not taken

    encoder_less = {k: v for k, v in source.state_dict().items() if not k.startswith("bert.encoder.x_layers")}
    torch.save(encoder_less, tmp_path / "partial_LXRT.pth")
    task = PretrainTask(tiny_cfg(data_root, load_lxmert=str(tmp_path / "partial")))
    with pytest.raises(CheckpointError, match="encoder weights missing"):
        task.load_pretrained(task.build_model())


def test_load_is_strict(data_root, tmp_path):
    source = PretrainTask(tiny_cfg(data_root)).build_model()
    torch.save(source.state_dict(), tmp_path / "Epoch07_LXRT.pth")
    task = PretrainTask(tiny_cfg(data_root, load=str(tmp_path / "Epoch07")))
    model = task.build_model()
    task.load_pretrained(model)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))
    no_qa = PretrainTask(tiny_cfg(data_root, load=str(tmp_path / "Epoch07")), PretrainOptions(task_qa=False))
    with pytest.raises(CheckpointError, match="answer_head"):
        no_qa.load_pretrained(no_qa.build_model())
    with pytest.raises(ValueError, match="--loadLXMERTQA"):
        PretrainTask(tiny_cfg(data_root, load_lxmert_qa="x")).load_pretrained(source)


def test_qa_accuracy_and_prediction_files(data_root, tmp_path):
    task = PretrainTask(tiny_cfg(data_root))
    data = task.dataset("mscoco_minival", train=False)
    corpus = data.corpus
    labeled = sorted(corpus.labels)
    first, second = labeled[0], labeled[1]
    best = max(corpus.labels[first], key=corpus.labels[first].get)
    predictions = {corpus.uid(first): best, corpus.uid(second): "daytime", corpus.uid(0): "yes"}
    metrics = task.score(predictions, data)
    want = corpus.labels[first][best] / 2  # the caption pair (uid 0) has no label and is not counted
    assert metrics["accuracy"] == pytest.approx(want)
    assert metrics["accuracy_vqa"] == pytest.approx(want)
    assert task.score({}, data) == {}
    files = task.write_predictions(predictions, data, tmp_path, "mscoco_minival")
    assert json.loads(files[0].read_text()) == predictions
    assert json.loads(files[1].read_text())["accuracy"] == pytest.approx(want)

    batch = task.collator(data)([data[i] for i in range(4)])
    model = task.build_model()
    predicted = task.predict(task.forward(model, batch), batch)
    scored = [uid for uid, s in zip(batch.ids, batch.targets["qa_scored"].tolist()) if s]
    assert sorted(predicted) == sorted(scored) and all(a in task.answers.ans2id for a in predicted.values())


def test_loss_compat_reaches_examples_and_losses(data_root):
    for compat, drop in (("original", False), ("corrected", True)):
        task = PretrainTask(tiny_cfg(data_root), PretrainOptions(loss_compat=compat))
        assert task.example_options.drop_mismatched_lm is drop and task.loss_options.compat == compat
    assert PretrainOptions().loss_compat == "original"  # the released checkpoints' losses by default


def test_paper_schedule_turns_qa_on_after_start_epoch(data_root):
    options = PretrainOptions(schedule="paper", qa_start_epoch=2)
    assert [options.qa_active(e) for e in range(4)] == [False, False, True, True]
    task = PretrainTask(tiny_cfg(data_root, epochs=4), options)
    train = task.dataset("mscoco_train", train=True)
    batch = task.collator(train)([train[i] for i in range(8)])
    output = task.forward(task.build_model(), batch)
    assert "QA" not in task.loss(output, batch)[1]
    train.set_epoch(2)  # what the loop does before the third epoch
    assert "QA" in task.loss(output, batch)[1]


def test_validation_batch_as_the_original(data_root):
    task = PretrainTask(tiny_cfg(data_root))
    assert task.default_eval_batch(1) == 512  # one GPU
    assert task.default_eval_batch(4) == 2048  # --multiGPU: 2048 over the GPUs
    assert task.default_eval_batch(3) % 3 == 0 and task.default_eval_batch(3) >= 2048
    assert task.initial_best() == 9595.0


def test_command_line_and_recipe(tmp_path):
    parser = build_parser()
    all_on = options_from_args(parser.parse_args([]))
    assert all_on.task_mask_lm and all_on.task_obj_predict and all_on.task_matched and all_on.task_qa
    some = options_from_args(parser.parse_args(["--taskMaskLM", "--taskQA", "--qaSets", "vqa,gqa"]))
    chosen = (some.task_mask_lm, some.task_obj_predict, some.task_matched, some.task_qa)
    assert chosen == (True, False, False, True)
    assert some.qa_sets == ("vqa", "gqa")
    with pytest.raises(ValueError, match="unknown"):
        options_from_args(parser.parse_args(["--visualLosses", "obj,depth"]))
    cfg = recipes.get("lxmert_pretrain")
    assert (cfg.train, cfg.valid) == ("mscoco_train,mscoco_nominival,vgnococo", "mscoco_minival")
    assert (cfg.batch_size, cfg.lr, cfg.epochs, cfg.optim) == (256, 1e-4, 20, "bert")
    assert (cfg.warmup, cfg.clip_norm) == (0.05, 1.0)
    assert cfg.from_scratch and (cfg.model.llayers, cfg.model.xlayers, cfg.model.rlayers) == (9, 5, 5)
    assert not recipes.get("lxmert_pretrain_bert").from_scratch
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run(
        [sys.executable, "-m", "pretrain.lxmert_pretrain", "--help"], capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=60,
    )
    assert proc.returncode == 0 and "--lossCompat" in proc.stdout and "--taskObjPredict" in proc.stdout
