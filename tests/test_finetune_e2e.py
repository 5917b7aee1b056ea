"""Fine-tuning and testing end to end through the real run scripts, on generated data.

Covers: learning above chance (VQA, GQA, NLVR2), the original's output files and formats, test-mode
submission files, loading original-format snapshots, DDP equivalence and exact resume.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lxrt import LXMERTForPretraining, LXRTConfig, read_state_dict, save_state_dict
from tasks.synthetic import SyntheticConfig, generate

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port no process listens on now: runs on parallel test workers never meet on one rendezvous port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
MODEL = LXRTConfig.tiny(hidden_size=64, num_attention_heads=4, intermediate_size=128, visual_feat_dim=64)
NO_DROPOUT = MODEL.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env["PYTHON"] = sys.executable
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_script(root: Path, script: str, *args: str, check: bool = True, env: dict | None = None):
    cmd = ["bash", str(REPO / "run" / script), *args, "--no-progress"]
    proc = subprocess.run(cmd, cwd=root, env=env or _env(), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A working folder with data/ (generated, original layout) and snap/pretrained/model_LXRT.pth."""
    root = tmp_path_factory.mktemp("e2e")
    # GQA: 300 VG images as VQA's 300 COCO ones, and 48 testdev images, so that its margin over the
    # majority answer is not one draw's luck (testdev accuracy moves by 1/144 per question)
    sizes = dict(coco_train_images=300, coco_val_images=80, minival_images=40, vg_images=300, gqa_testdev_images=48,
                 nlvr2_train_sets=60)
    generate(root / "data", SyntheticConfig(seed=1, dominant_fraction=0.9, noise=0.3, sizes=sizes),
             progress=False)
    for name, cfg in (("model.json", MODEL), ("nodrop.json", NO_DROPOUT)):
        (root / name).write_text(json.dumps(cfg.to_dict()))
    all_ans = json.loads((root / "data/lxmert/all_ans.json").read_text())
    torch.manual_seed(0)
    pretrained = LXMERTForPretraining(MODEL.replace(num_qa_labels=len(all_ans)))
    save_state_dict(pretrained.state_dict(), root / "snap/pretrained/model_LXRT.pth")
    return root


def _history(run: Path) -> list[dict]:
    return json.loads((run / "history.json").read_text())


def _majority(path: Path, key: str = "label") -> float:
    recs = json.loads(path.read_text())
    if key == "label" and isinstance(recs[0]["label"], dict):
        counts: dict[str, int] = {}
        for r in recs:
            ans = max(r["label"], key=r["label"].get)
            counts[ans] = counts.get(ans, 0) + 1
        return max(counts.values()) / len(recs)
    ones = sum(r["label"] for r in recs)
    return max(ones, len(recs) - ones) / len(recs)


def _words_only(train: Path, valid: Path) -> float:
    """Accuracy on ``valid`` of the best answer per question text in ``train`` (what a model that
    ignores the image can reach; unseen questions get the overall best answer)."""
    totals: dict[str, dict[str, float]] = {}
    overall: dict[str, float] = {}
    for r in json.loads(train.read_text()):
        for ans, score in r["label"].items():
            per = totals.setdefault(r["sent"], {})
            per[ans] = per.get(ans, 0.0) + score
            overall[ans] = overall.get(ans, 0.0) + score
    fallback = max(overall, key=overall.get)
    recs = json.loads(valid.read_text())
    guess = {s: max(t, key=t.get) for s, t in totals.items()}
    return sum(r["label"].get(guess.get(r["sent"], fallback), 0.0) for r in recs) / len(recs)


def test_vqa_finetune_learns_and_writes_original_files(root: Path):
    run_script(root, "vqa_finetune.bash", "0", "e2e", "--model-config", "model.json", "--batchSize", "16",
               "--epochs", "10", "--lr", "3e-4", "--optim", "adamw")
    run = root / "snap/vqa/e2e"
    for name in ("log.log", "BEST.pth", "LAST.pth", "config.json", "curves.png", "history.json", "run.bash"):
        assert (run / name).is_file(), name
    best = max(r["valid/accuracy"] for r in _history(run))
    words_only = _words_only(root / "data/vqa/train.json", root / "data/vqa/minival.json")
    assert best > words_only + 0.1, (best, words_only)
    log = (run / "log.log").read_text().splitlines()
    assert log[0] == "" and log[1].startswith("Epoch 0: Train ") and log[2].startswith("Epoch 0: Valid ")
    keys = set(read_state_dict(run / "BEST.pth"))
    assert "lxrt_encoder.model.bert.encoder.x_layers.0.visual_attention.att.query.weight" in keys
    assert {"logit_fc.0.weight", "logit_fc.2.weight", "logit_fc.3.weight"} <= keys
    config = json.loads((run / "config.json").read_text())
    assert config["load_lxmert_qa"] == "snap/pretrained/model" and config["train"] == "train,nominival"


def test_vqa_test_mode_writes_the_server_format(root: Path):
    if not (root / "snap/vqa/e2e/BEST.pth").is_file():
        pytest.skip("needs the fine-tuning test's snapshot")
    run_script(root, "vqa_test.bash", "0", "e2e_results", "--model-config", "model.json", "--test", "test",
               "--load", "snap/vqa/e2e/BEST")
    rows = json.loads((root / "snap/vqa/e2e_results/test_predict.json").read_text())
    questions = json.loads((root / "data/vqa/test.json").read_text())
    assert sorted(r["question_id"] for r in rows) == sorted(q["question_id"] for q in questions)
    assert all(set(r) == {"question_id", "answer"} and isinstance(r["question_id"], int) for r in rows)


def test_gqa_finetune_and_submit(root: Path):
    run_script(root, "gqa_finetune.bash", "0", "e2e", "--model-config", "model.json", "--batchSize", "16",
               "--epochs", "10", "--lr", "3e-4", "--optim", "adamw")
    best = max(r["valid/accuracy"] for r in _history(root / "snap/gqa/e2e"))
    assert best > _majority(root / "data/gqa/testdev.json") + 0.15
    run_script(root, "gqa_test.bash", "0", "e2e_results", "--model-config", "model.json", "--test", "submit",
               "--load", "snap/gqa/e2e/BEST")
    rows = json.loads((root / "snap/gqa/e2e_results/submit_predict.json").read_text())
    questions = json.loads((root / "data/gqa/submit.json").read_text())
    assert sorted(r["questionId"] for r in rows) == sorted(q["question_id"] for q in questions)
    assert all(set(r) == {"questionId", "prediction"} and isinstance(r["questionId"], str) for r in rows)


def test_nlvr2_finetune_and_test_csv(root: Path):
    """NLVR2 from the VQA-fine-tuned encoder (``--loadLXMERT`` reads any snapshot layout). Comparing a
    sentence with two images needs far more synthetic data than a CI budget allows to generalize, so
    learning is checked on the training loss; held-out learning is checked on VQA and GQA."""
    if not (root / "snap/vqa/e2e/BEST.pth").is_file():
        pytest.skip("needs the VQA fine-tuning test's snapshot")
    run_script(root, "nlvr2_finetune.bash", "0", "e2e", "--model-config", "model.json", "--batchSize", "16",
               "--epochs", "8", "--lr", "5e-4", "--optim", "adamw", "--loadLXMERT", "snap/vqa/e2e/BEST")
    hist = _history(root / "snap/nlvr2/e2e")
    assert hist[-1]["train/loss"] < hist[0]["train/loss"] - 0.01
    assert {"valid/accuracy", "valid/consistency"} <= set(hist[-1])
    assert (root / "snap/nlvr2/e2e/BEST.pth").is_file()
    run_script(root, "nlvr2_test.bash", "0", "e2e_results", "--model-config", "model.json", "--test", "test",
               "--load", "snap/nlvr2/e2e/BEST")
    lines = (root / "snap/nlvr2/e2e_results/test_predict.csv").read_text().splitlines()
    examples = json.loads((root / "data/nlvr2/test.json").read_text())
    assert sorted(ln.split(",")[0] for ln in lines) == sorted(e["identifier"] for e in examples)
    assert all(ln.split(",")[1] in ("True", "False") for ln in lines)


def _direct_predictions(task: str, root: Path, state: dict, split: str) -> dict:
    """The same weights run through the model directly (no loop, no run script)."""
    sys.path.insert(0, str(REPO / "src"))
    from engine.cli import build_parser, config_from_args
    from tasks import gqa, nlvr2, vqa

    module = {"vqa": vqa, "gqa": gqa, "nlvr2": nlvr2}[task]
    args = build_parser("x", f"{task}_test").parse_args(
        ["--model-config", str(root / "model.json"), "--data-root", str(root / "data"), "--test", split]
    )
    t = module.make_task(config_from_args(args), args)
    model = t.build_model()
    model.load_state_dict({k.replace("module.", ""): v for k, v in state.items()})
    model.eval()
    dataset = t.dataset(split, train=False, full=True)
    collate = t.collator(dataset)
    preds: dict = {}
    with torch.no_grad():
        for i in range(0, len(dataset), 7):
            batch = collate([dataset[j] for j in range(i, min(i + 7, len(dataset)))])
            preds.update(t.predict(t.forward(model, batch), batch))
    return preds


@pytest.mark.parametrize("task,split,suffix", [("vqa", "minival", "json"), ("gqa", "testdev", "json"),
                                               ("nlvr2", "valid", "csv")])
def test_original_format_snapshot_predicts_like_the_model(root: Path, task: str, split: str, suffix: str,
                                                          monkeypatch: pytest.MonkeyPatch):
    """A BEST.pth in the original layout (here with the DataParallel ``module.`` the original's
    --multiGPU runs wrote) gives, through the test script, the predictions of the same weights."""
    sys.path.insert(0, str(REPO / "src"))
    from tasks.models import Classifier, NLVR2Model

    torch.manual_seed(3)
    n_answers = {"vqa": len(json.loads((root / "data/vqa/trainval_label2ans.json").read_text())),
                 "gqa": len(json.loads((root / "data/gqa/trainval_label2ans.json").read_text()))}
    model = NLVR2Model(MODEL) if task == "nlvr2" else Classifier(MODEL, n_answers[task])
    state = {k.replace("lxrt_encoder.model.", "lxrt_encoder.model.module."): v for k, v in model.state_dict().items()}
    torch.save(state, root / f"orig_{task}.pth")
    run_script(root, f"{task}_test.bash", "0", f"orig_{task}", "--model-config", "model.json", "--test", split,
               "--load", f"orig_{task}")
    out = root / f"snap/{task}/orig_{task}/{split}_predict.{suffix}"
    if task == "nlvr2":
        got = {ln.split(",")[0]: int(ln.split(",")[1] == "True") for ln in out.read_text().splitlines()}
    else:
        key, value = ("question_id", "answer") if task == "vqa" else ("questionId", "prediction")
        got = {r[key]: r[value] for r in json.loads(out.read_text())}
    monkeypatch.chdir(root)
    assert got == _direct_predictions(task, root, state, split)


def _steps(run: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run / "steps.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one_process(root: Path, mode: str):
    """2 gloo processes x batch 8 (DDP, or FSDP2 shards) give the parameters of 1 process x batch 16
    (dropout off). Plain SGD without clipping: an update proportional to the gradient shows a
    gradient summed instead of averaged over the processes (Adam-style updates and clipping hide it)."""
    common = ["--model-config", "nodrop.json", "--batchSize", "16", "--epochs", "1", "--lr", "0.05",
              "--optim", "sgd", "--clip-norm", "0", "--max-steps", "4", "--loadLXMERTQA", "snap/pretrained/model"]
    if not (root / "snap/vqa/single/checkpoint.pt").is_file():
        run_script(root, "vqa_finetune.bash", "0", "single", *common)
    env = _env()
    env.update(NPROC_PER_NODE="2", MASTER_PORT=str(free_port()))
    extra = ["--fsdp"] if mode == "fsdp" else []
    run_script(root, "vqa_finetune.bash", "0", mode, *common, *extra, env=env)
    one = torch.load(root / "snap/vqa/single/checkpoint.pt", weights_only=False)["model"]
    two = torch.load(root / f"snap/vqa/{mode}/checkpoint.pt", weights_only=False)["model"]
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(one[k], two[k], atol=1e-5, rtol=0, msg=k)
    start = torch.load(root / "snap/pretrained/model_LXRT.pth")
    moved = [float((one[k] - start[k.replace("lxrt_encoder.model.", "")]).abs().max()) for k in one
             if k.startswith("lxrt_encoder.model.bert.encoder")]
    assert max(moved) > 1e-3, "the updates are too small for the comparison to see a factor of 2"


def test_killed_run_resumes_with_identical_losses(root: Path):
    common = ["--model-config", "model.json", "--batchSize", "8", "--epochs", "1", "--max-steps", "30",
              "--lr", "1e-3", "--save-every", "5"]
    run_script(root, "vqa_finetune.bash", "0", "straight", *common)
    reference = _steps(root / "snap/vqa/straight")
    run = root / "snap/vqa/killed"
    cmd = ["bash", str(REPO / "run/vqa_finetune.bash"), "0", "killed", *common, "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=root, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        ckpt = run / "checkpoint.pt"
        if ckpt.is_file() and len(_steps(run)) >= 12:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(_steps(run))
    assert 0 < done_before < len(reference), "the run was not killed mid-way"
    run_script(root, "vqa_finetune.bash", "0", "killed", *common, "--resume")
    resumed = _steps(run)
    assert [s["step"] for s in resumed] == [s["step"] for s in reference]
    for a, b in zip(resumed, reference):
        assert a["loss"] == b["loss"], a["step"]  # exactly, as the README says for CPU runs
