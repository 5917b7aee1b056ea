"""BERT as the original uses it: fetched on first use into snap/bert/, and pretraining's starting point
(BERT's language layers and MLM/matching heads, or with --fromScratch only the MLM output bias)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import transformers

from datatools import sources
from engine.config import TrainConfig
from lxrt import CheckpointError, LXMERTForPretraining, LXRTConfig, bert_hub, read_state_dict
from lxrt.bert_init import resolve_bert
from pretrain.task import PretrainTask
from tasks.bert import find_bert
from tasks.models import Classifier
from tasks.weights import init_language_from_bert

CONFIG = LXRTConfig.tiny(llayers=2, num_qa_labels=5, vocab_size=120)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    """A small BertForPreTraining (real HF classes, LXRTConfig.tiny sizes) saved as a hub folder."""
    path = tmp_path_factory.mktemp("bert")
    config = transformers.BertConfig(
        vocab_size=CONFIG.vocab_size, hidden_size=CONFIG.hidden_size, num_hidden_layers=3,
        num_attention_heads=CONFIG.num_attention_heads, intermediate_size=CONFIG.intermediate_size,
        max_position_embeddings=CONFIG.max_position_embeddings,
    )
    torch.manual_seed(1)
    model = transformers.BertForPreTraining(config)
    with torch.no_grad():
        model.cls.predictions.bias.normal_()  # zero at init: make it recognizable
    model.save_pretrained(path)
    (path / "vocab.txt").write_text("[PAD]\n")
    return path


def _start(tmp_path: Path, bert: Path | str, from_scratch: bool) -> tuple[LXMERTForPretraining, dict]:
    """What PretrainTask.load_pretrained makes of a fresh model."""
    cfg = TrainConfig(task="lxmert_pretrain", output=str(tmp_path), model=CONFIG, bert=str(bert),
                      from_scratch=from_scratch)
    task = PretrainTask.__new__(PretrainTask)  # the loading step alone: no corpus needed
    task.cfg = cfg
    torch.manual_seed(0)
    model = LXMERTForPretraining(CONFIG)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    task.load_pretrained(model)
    return model, fresh


def test_pretraining_starts_from_bert_and_its_heads(bert_dir: Path, tmp_path: Path):
    bert = read_state_dict(bert_dir / "model.safetensors")
    model, fresh = _start(tmp_path, bert_dir, from_scratch=False)
    got = model.state_dict()
    for key in ("bert.embeddings.word_embeddings.weight", "bert.encoder.layer.1.output.dense.weight",
                "bert.pooler.dense.weight", "cls.predictions.transform.dense.weight",
                "cls.predictions.transform.LayerNorm.weight", "cls.predictions.bias", "cls.seq_relationship.weight",
                "cls.seq_relationship.bias"):
        assert torch.equal(got[key], bert[key]), key
    assert torch.equal(got["cls.predictions.decoder.weight"], bert["bert.embeddings.word_embeddings.weight"])
    for key in ("bert.encoder.x_layers.0.visual_attention.att.query.weight", "answer_head.logit_fc.0.weight",
                "obj_predict_head.transform.dense.weight"):
        assert torch.equal(got[key], fresh[key]), key


def test_from_scratch_still_takes_the_mlm_bias(bert_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level("INFO")
    bert = read_state_dict(bert_dir / "model.safetensors")
    model, fresh = _start(tmp_path, bert_dir, from_scratch=True)
    got = model.state_dict()
    assert torch.equal(got["cls.predictions.bias"], bert["cls.predictions.bias"])
    assert not torch.equal(fresh["cls.predictions.bias"], bert["cls.predictions.bias"])
    assert all(torch.equal(got[k], fresh[k]) for k in got if k != "cls.predictions.bias")
    assert any("cls.predictions.bias" in r.getMessage() and "--fromScratch" in r.getMessage() for r in caplog.records)


def test_from_scratch_without_bert_warns_and_downloads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LXMERT_BERT_URL", "http://127.0.0.1:9/never")
    model, fresh = _start(tmp_path, "", from_scratch=True)
    assert all(torch.equal(v, fresh[k]) for k, v in model.state_dict().items())
    assert any("cls.predictions.bias starts at zero" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "snap").exists()


# ---- first use -------------------------------------------------------------------------------------------


@pytest.fixture()
def hub(tmp_path: Path, bert_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """A local server holding the hub folder; the pinned sizes/digests are those of its files."""
    served = tmp_path / "hub"
    served.mkdir()
    requests: list[str] = []
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        (served / name).write_bytes((bert_dir / name).read_bytes())
    torch.save(read_state_dict(bert_dir / "model.safetensors"), served / "pytorch_model.bin")

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            requests.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    patched = []
    for f in bert_hub.BERT_FILES:
        if (served / f.name).is_file():
            data = (served / f.name).read_bytes()
            f = dataclasses.replace(f, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        patched.append(f)
    monkeypatch.setattr(bert_hub, "BERT_FILES", tuple(patched))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("LXMERT_BERT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    yield requests
    server.shutdown()
    server.server_close()
    thread.join()


def test_manifest_has_bert_base_from_the_hub():
    entries = sources.select(["bert"])
    assert [e.dest for e in entries] == [f"snap/bert/bert-base-uncased/{n}"
                                         for n in ("config.json", "model.safetensors", "vocab.txt")]
    assert all(e.url.startswith("https://huggingface.co/google-bert/bert-base-uncased/resolve/") for e in entries)
    assert entries[1].size == 440449768 and len(entries[1].sha256) == 64


def test_fine_tuning_from_bert_fetches_it_on_first_use(hub: list[str], tmp_path: Path, bert_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(task="vqa", output=str(tmp_path / "run"), model=CONFIG, progress=False)
    model = Classifier(CONFIG, 3)
    init_language_from_bert(model, cfg)
    folder = tmp_path / "snap/bert/bert-base-uncased"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    bert = read_state_dict(bert_dir / "model.safetensors")
    assert torch.equal(model.lxrt_encoder.bert.encoder.layer[0].output.dense.weight,
                       bert["bert.encoder.layer.0.output.dense.weight"])
    asked = len(hub)
    assert resolve_bert(progress=False) == Path("snap/bert/bert-base-uncased")  # there now: no request
    assert len(hub) == asked == 3


def test_offline_first_use_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CheckpointError, match=r"could not be downloaded.*network access.*--bert PATH") as err:
        find_bert(base_url=f"http://127.0.0.1:{port}", retries=0, progress=False)
    assert "snap/bert/bert-base-uncased" in str(err.value)
    with pytest.raises(CheckpointError, match="no BERT weights there"):
        resolve_bert(tmp_path / "nowhere")


def test_offline_message_is_one_line_valid_in_a_fork_and_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Bug: offline, finding BERT retried for seconds (7 s here, ~20 s with a slow resolver) and
    advised commands of this project (``download_data.bash``, ``--bert``) that a fork copying
    ``lxrt`` alone does not have."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        mirror = f"http://127.0.0.1:{s.getsockname()[1]}/bert"
    monkeypatch.setenv("LXMERT_BERT_URL", mirror)
    started = time.monotonic()
    with pytest.raises(CheckpointError) as err:
        resolve_bert(progress=False)  # default retries
    assert time.monotonic() - started < 1.5
    msg = str(err.value)
    assert "\n" not in msg and "(connection refused)" in msg
    for part in ("snap/bert/bert-base-uncased or data/bert", "config.json, model.safetensors and vocab.txt",
                 f"from {mirror}/ into snap/bert/bert-base-uncased/", "$LXMERT_BERT_URL", "--fromScratch"):
        assert part in msg, part
    assert "download_data" not in msg and "--bert" not in msg
    assert err.value.urls == tuple(f"{mirror}/{n}" for n in ("config.json", "model.safetensors", "vocab.txt"))
    assert not (tmp_path / "snap").exists()  # nothing left behind: no empty .part, no empty folders


_WITHOUT_SAFETENSORS = """
import dataclasses, json, shutil, sys
sys.modules["safetensors"] = None  # as where the package is not installed: importing it fails
from lxrt import LXRTConfig, LXRTModel, bert_hub, load_bert_weights
from lxrt.bert_init import resolve_bert
pins = json.loads(sys.argv[1])
bert_hub.BERT_FILES = tuple(dataclasses.replace(f, **pins[f.name]) if f.name in pins else f
                            for f in bert_hub.BERT_FILES)
folder = resolve_bert(progress=False)
files = sorted(p.name for p in folder.iterdir())
shutil.copy(sys.argv[2], folder / "model.safetensors")  # both formats there: the readable one is taken
model = LXRTModel(LXRTConfig.tiny(llayers=2, num_qa_labels=5, vocab_size=120))
report = load_bert_weights(model, folder)
print(json.dumps({"files": files, "source": report.source,
                  "w": model.encoder.layer[1].output.dense.weight.sum().item()}))
"""


def test_without_safetensors_bert_comes_as_pytorch_model_bin(hub: list[str], tmp_path: Path, bert_dir: Path):
    """A fork without the safetensors package fetches and loads ``pytorch_model.bin`` instead (bug: the
    download fetched model.safetensors, which it then could not read)."""
    pins = {f.name: {"size": f.size, "sha256": f.sha256} for f in bert_hub.BERT_FILES}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", _WITHOUT_SAFETENSORS, json.dumps(pins), str(bert_dir / "model.safetensors")]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["files"] == ["config.json", "pytorch_model.bin", "vocab.txt"]
    assert got["source"].endswith("pytorch_model.bin") and hub == ["/config.json", "/pytorch_model.bin", "/vocab.txt"]
    bert = read_state_dict(bert_dir / "model.safetensors")
    assert got["w"] == pytest.approx(bert["bert.encoder.layer.1.output.dense.weight"].sum().item(), abs=1e-6)
