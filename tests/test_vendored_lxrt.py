"""``src/lxrt/`` copied alone into a fork of the original repository runs the fork's own code.

The fork gets our ``lxrt`` folder and nothing else: the test runs an original-style task script
(the original's ``VQAModel`` over ``lxrt.entry.LXRTEncoder``, ``BertTokenizer.from_pretrained``,
``BertAdam``, one training step, loading a ``BEST.pth``) in a fresh interpreter whose path holds
only the fork, with this project's other packages and the optional libraries (``tokenizers``,
``safetensors``, ``transformers``) made impossible to import.

Bugs caught: the library importing any other package of the project; needing a pip package a fork
does not have; a vocabulary looked up outside the package; BERT fetched by code outside the
package, or a slow, project-specific message when it cannot be fetched; a ``BEST.pth`` of this
project that the original's model cannot load, or that predicts differently there.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from lxrt import LXRTConfig, LXRTTokenizer, bert_hub, save_state_dict
from tasks.models import Classifier

SRC = Path(__file__).resolve().parents[1] / "src"
BLOCKED = ("engine", "features", "datatools", "demo", "ask", "bench", "tokenizers", "safetensors", "transformers")
TINY_BERT = {
    "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
    "intermediate_size": 64, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0, "max_position_embeddings": 64, "type_vocab_size": 2,
    "initializer_range": 0.02,
}
LAYERS = {"llayers": 2, "xlayers": 1, "rlayers": 1}
ANSWERS = 7
QUESTIONS = ["What color is the cat?", "how many dogs are there"]

GUARD = """
import importlib.abc, json, os, sys

BLOCKED = set(os.environ["FORK_BLOCKED"].split(","))


class Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not available in this fork)", name=name)
        return None


sys.meta_path.insert(0, Guard())
pins = os.environ.get("FORK_BERT_PINS")
if pins:  # the test's local hub serves small files; the pins are theirs
    import lxrt.bert_hub as hub

    hub.BERT_FILES = tuple(hub.BertFile(**p) for p in json.loads(pins))
"""

VQA_MODEL = '''
import torch.nn as nn

from lxrt.entry import LXRTEncoder
from lxrt.modeling import BertLayerNorm, GeLU


class VQAModel(nn.Module):
    """The original's VQA model, as its src/tasks/vqa_model.py writes it."""

    def __init__(self, args, num_answers, max_seq_length=20):
        super().__init__()
        self.lxrt_encoder = LXRTEncoder(args, max_seq_length=max_seq_length)
        hid_dim = self.lxrt_encoder.dim
        self.logit_fc = nn.Sequential(
            nn.Linear(hid_dim, hid_dim * 2), GeLU(), BertLayerNorm(hid_dim * 2, eps=1e-12),
            nn.Linear(hid_dim * 2, num_answers),
        )
        self.logit_fc.apply(self.lxrt_encoder.model.init_bert_weights)

    def forward(self, feat, pos, sent):
        return self.logit_fc(self.lxrt_encoder(sent, (feat, pos)))
'''

VQA_SCRIPT = '''
import argparse, json, sys, time

import torch

from lxrt.optimization import BertAdam
from lxrt.tokenization import BertTokenizer
from tasks.vqa_model import VQAModel

p = argparse.ArgumentParser()
p.add_argument("--llayers", type=int); p.add_argument("--xlayers", type=int); p.add_argument("--rlayers", type=int)
p.add_argument("--fromScratch", dest="from_scratch", action="store_true")
p.add_argument("--answers", type=int); p.add_argument("--load"); p.add_argument("--inputs")
args = p.parse_args()
t0 = time.time()
tok = BertTokenizer.from_pretrained("bert-base-uncased", do_lower_case=True)
ids = tok.convert_tokens_to_ids(tok.tokenize("What color is the cat?"))
torch.manual_seed(0)
model = VQAModel(args, args.answers)
built = time.time() - t0
inputs = torch.load(args.inputs)
optim = BertAdam(list(model.parameters()), lr=1e-3, warmup=0.1, t_total=10)
model.train()
logits = model(inputs["feats"], inputs["boxes"], inputs["sents"])
loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, inputs["target"]) * logits.shape[1]
loss.backward()
before = [q.detach().clone() for q in model.parameters()]
optim.step(); optim.step()  # the first update has lr 0 (warm-up from step 0), as in the original
moved = sum(int(not torch.equal(a, q.detach())) for a, q in zip(before, model.parameters()))
out = {"ids": ids, "built_s": built, "loss": float(loss.detach()), "params_moved": moved,
       "blocked_absent": [m for m in ("tokenizers", "safetensors", "engine", "features") if m in sys.modules]}
if args.load:
    model.load_state_dict(torch.load(args.load + ".pth"))
    model.eval()
    with torch.no_grad():
        out["loaded_logits"] = model(inputs["feats"], inputs["boxes"], inputs["sents"]).tolist()
    out["word_row0"] = model.lxrt_encoder.model.bert.embeddings.word_embeddings.weight[7, :4].tolist()
else:
    out["word_row0"] = model.lxrt_encoder.model.bert.embeddings.word_embeddings.weight[7, :4].tolist()
print(json.dumps(out))
'''


@pytest.fixture
def fork(tmp_path: Path) -> Path:
    """An original-style checkout: its own tasks/, our lxrt/ in place of its own, nothing else of ours."""
    root = tmp_path / "fork"
    shutil.copytree(SRC / "lxrt", root / "src" / "lxrt", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "src" / "tasks").mkdir(parents=True)  # a namespace folder, as in the original
    (root / "src" / "tasks" / "vqa_model.py").write_text(VQA_MODEL)
    (root / "src" / "tasks" / "vqa.py").write_text(VQA_SCRIPT)
    (tmp_path / "guard").mkdir()
    (tmp_path / "guard" / "sitecustomize.py").write_text(GUARD)
    torch.manual_seed(3)
    torch.save({
        "feats": torch.rand(2, 36, 2048), "boxes": torch.rand(2, 36, 4).sort(-1).values, "sents": QUESTIONS,
        "target": (torch.rand(2, ANSWERS) > 0.5).float(),
    }, root / "inputs.pt")
    return root


def run_fork(root: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[dict, str, float]:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ.update(
        PYTHONPATH=f"{root.parent / 'guard'}{os.pathsep}{root / 'src'}", FORK_BLOCKED=",".join(BLOCKED),
        LXMERT_BERT_URL="http://127.0.0.1:9", NO_PROXY="127.0.0.1", OMP_NUM_THREADS="1",
    )
    environ.update(env or {})
    layers = [f"--{k}={v}" for k, v in LAYERS.items()]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "src/tasks/vqa.py", *layers, f"--answers={ANSWERS}", "--inputs=inputs.pt", *extra],
        cwd=root, env=environ, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr, time.perf_counter() - t0


def native_config() -> LXRTConfig:
    t = TINY_BERT
    return LXRTConfig(
        vocab_size=t["vocab_size"], hidden_size=t["hidden_size"], num_attention_heads=t["num_attention_heads"],
        intermediate_size=t["intermediate_size"], max_position_embeddings=t["max_position_embeddings"],
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **LAYERS,
    )


def test_offline_fork_runs_with_our_lxrt_alone_and_loads_our_snapshot(fork: Path) -> None:
    (fork / "snap" / "bert" / "bert-base-uncased").mkdir(parents=True)
    (fork / "snap" / "bert" / "bert-base-uncased" / "config.json").write_text(json.dumps(TINY_BERT))
    torch.manual_seed(5)
    native = Classifier(native_config(), ANSWERS, pooled_only=False).eval()
    save_state_dict(native.state_dict(), fork / "BEST.pth")
    out, err, _ = run_fork(fork, "--load=BEST")
    assert out["blocked_absent"] == []
    assert out["ids"] == LXRTTokenizer().convert_tokens_to_ids(["what", "color", "is", "the", "cat", "?"])
    assert out["params_moved"] > 0 and out["loss"] > 0
    # BERT could not be fetched: one warning a fork can act on, quickly, and the model keeps its init.
    assert "Warning:" in err and "download_data.bash" not in err and "127.0.0.1:9" in err
    assert out["built_s"] < 20
    inputs = torch.load(fork / "inputs.pt")
    batch = LXRTTokenizer()(inputs["sents"], max_length=20)
    with torch.no_grad():
        expected = native(batch.input_ids, inputs["feats"], inputs["boxes"], batch.attention_mask)
    torch.testing.assert_close(torch.tensor(out["loaded_logits"]), expected, rtol=0, atol=1e-5)


@pytest.fixture
def hub(tmp_path: Path):
    """A local server holding a small BERT in the hub's layout, and the pins of its files."""
    transformers = pytest.importorskip("transformers")
    served = tmp_path / "hub"
    config = transformers.BertConfig(**{k: v for k, v in TINY_BERT.items() if k != "hidden_act"})
    torch.manual_seed(1)
    transformers.BertForPreTraining(config).save_pretrained(served)
    from lxrt import read_state_dict  # the served pytorch_model.bin holds the same tensors

    torch.save(read_state_dict(served / "model.safetensors"), served / "pytorch_model.bin")
    shutil.copy(SRC / "lxrt" / "vocab" / "bert-base-uncased-vocab.txt", served / "vocab.txt")
    pins = []
    for f in bert_hub.BERT_FILES:
        data = (served / f.name).read_bytes()
        pins.append(dataclasses.asdict(dataclasses.replace(f, size=len(data), sha256=hashlib.sha256(data).hexdigest())))
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", json.dumps(pins), served
    server.shutdown()


def test_online_fork_fetches_bert_with_code_inside_the_package(fork: Path, hub) -> None:
    url, pins, served = hub
    out, err, _ = run_fork(fork, env={"LXMERT_BERT_URL": url, "FORK_BERT_PINS": pins})
    folder = fork / "snap" / "bert" / "bert-base-uncased"
    # safetensors is not importable in the fork: the PyTorch weights file is fetched and read.
    assert (folder / "pytorch_model.bin").is_file() and not (folder / "model.safetensors").exists()
    bert = torch.load(served / "pytorch_model.bin", weights_only=True)
    word = bert["bert.embeddings.word_embeddings.weight"][7, :4]
    torch.testing.assert_close(torch.tensor(out["word_row0"]), word, rtol=0, atol=1e-6)
    assert "Warning:" not in err  # BERT was found: no fallback to random weights
