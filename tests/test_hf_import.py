"""The released fine-tuned models: HF ``LxmertForQuestionAnswering`` -> our task snapshot, checked
against transformers itself; the import step, its facts file and answer table; the download groups
against a local mirror."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datatools import hf_import
from datatools import sources as manifest
from lxrt import LXRTConfig, config_from_hf, from_hf_state_dict, hf_config, load_state, read_state_dict
from lxrt.hf import hf_answer_labels, to_hf_state_dict
from lxrt.snapshot import read_facts
from tasks.models import Classifier

transformers = pytest.importorskip("transformers")

REPO_DATA = Path(__file__).resolve().parents[1] / "data"
SMALL = LXRTConfig(
    vocab_size=30522, hidden_size=64, num_attention_heads=4, intermediate_size=96, max_position_embeddings=40,
    llayers=2, xlayers=2, rlayers=1, visual_feat_dim=76, num_object_labels=11, num_attr_labels=7,
    num_qa_labels=3129,
)  # fmt: skip
GRID = {"grid": 2, "patch": 4}  # the grid+object extractor's 76-d features


def _hf_qa(config: LXRTConfig, seed: int = 0, **hf_fields):
    """A random ``LxmertForQuestionAnswering`` with every weight perturbed (LayerNorms included)."""
    torch.manual_seed(seed)
    cfg = hf_config(config)
    for name, value in hf_fields.items():
        setattr(cfg, name, value)
    hf = transformers.LxmertForQuestionAnswering(cfg)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return hf.eval()


def _inputs(config: LXRTConfig, batch: int = 3, seq: int = 12, boxes: int = 7, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 2000, (batch, seq), generator=g)
    lengths = torch.randint(3, seq + 1, (batch,), generator=g)
    mask = (torch.arange(seq)[None] < lengths[:, None]).long()
    feats = torch.randn(batch, boxes, config.visual_feat_dim, generator=g).relu()
    xy = torch.rand(batch, boxes, 2, generator=g) * 0.5
    pos = torch.cat([xy, xy + torch.rand(batch, boxes, 2, generator=g) * 0.5], -1)
    vmask = (torch.arange(boxes)[None] < torch.tensor([[boxes], [boxes - 2], [3]])).long()
    return ids * mask, mask, torch.zeros_like(ids), feats, pos, vmask


def test_hf_question_answering_model_gives_hfs_logits_through_our_code(tmp_path) -> None:
    """Saved as transformers saves it, imported through ``from_hf_state_dict``: our answer logits equal
    HF's within 1e-5 (with and without padded regions). Catches a head mapped to the wrong layers, a
    missing pooler, or an encoder key left in the pretraining layout."""
    hf = _hf_qa(SMALL)
    hf.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    state = from_hf_state_dict(read_state_dict(tmp_path / "hf" / "model.safetensors"))
    assert sorted({k.split(".")[0] for k in state}) == ["logit_fc", "lxrt_encoder"]
    ours = Classifier(config_from_hf(config), config["num_qa_labels"]).eval()
    report = load_state(ours, state, strict=True, source="hf")
    assert not report.missing and not report.unexpected

    ids, mask, types, feats, pos, vmask = _inputs(SMALL)
    with torch.no_grad():
        for visual in (None, vmask):
            ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, visual_feats=feats, visual_pos=pos,
                     visual_attention_mask=visual).question_answering_score  # fmt: skip
            got = ours(ids, feats, pos, mask, types, visual)
            assert ref.shape == got.shape == (3, 3129)
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)

    back = transformers.LxmertForQuestionAnswering(hf.config).eval()  # and our snapshot back into HF
    missing, unexpected = back.load_state_dict(to_hf_state_dict(ours.state_dict()), strict=False)
    assert not missing and not unexpected
    with pytest.raises(Exception, match="unexpected key 'cls.predictions.bias'"):
        from_hf_state_dict({**read_state_dict(tmp_path / "hf" / "model.safetensors"),
                            "cls.predictions.bias": torch.zeros(3)}, layout="task")  # fmt: skip


def test_id2label_of_the_config_is_used_only_when_it_names_the_answers() -> None:
    assert hf_answer_labels({"num_qa_labels": 2, "id2label": {"0": "LABEL_0", "1": "LABEL_1"}}) is None
    assert hf_answer_labels({"num_qa_labels": 3, "id2label": {"0": "yes", "1": "no"}}) is None  # wrong size
    assert hf_answer_labels({"num_qa_labels": 2, "id2label": {"1": "no", "0": "yes"}}) == ["yes", "no"]
    assert hf_answer_labels({"num_qa_labels": 2}) is None


def _release_folder(tmp_path: Path, **hf_fields) -> tuple[Path, object]:
    hf = _hf_qa(SMALL, seed=2, **hf_fields)
    folder = tmp_path / "snap" / "hf" / "lxmert-vqa-uncased"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(hf.config.to_json_string())
    torch.save(hf.state_dict(), folder / "pytorch_model.bin")  # the released files' format (torch.save)
    return folder, hf


def _hf_answers(hf, asker, image: Image.Image, question: str) -> list[str]:
    feats, boxes, _ = asker.encode_image(image)
    tok = asker.tokenizer([question])
    with torch.no_grad():
        scores = hf(input_ids=tok.input_ids, attention_mask=tok.attention_mask, token_type_ids=tok.token_type_ids,
                    visual_feats=feats[None], visual_pos=boxes[None]).question_answering_score[0]  # fmt: skip
    return [asker.answers[i] for i in scores.softmax(-1).topk(5).indices.tolist()]


def _photo() -> Image.Image:
    rng = np.random.default_rng(3)
    pixels = np.full((80, 100, 3), 220, np.uint8)
    pixels[10:60, 20:70] = rng.integers(0, 255, (50, 50, 3))
    return Image.fromarray(pixels)


def test_import_writes_a_snapshot_that_ask_loads_like_any_other(tmp_path) -> None:
    """The import step: ``BEST.pth`` in the original layout, ``BEST.json`` facts (task, sizes, answer table
    identity, source) and the answer table; ``ask`` reads the facts and answers as HF does. A second run
    keeps the import; a changed download is imported again."""
    from ask import Asker

    folder, hf = _release_folder(tmp_path)
    release = hf_import.release_for("vqa-model")
    out = hf_import.import_release(release, tmp_path / "data", tmp_path / "snap", REPO_DATA)
    assert out == tmp_path / "snap" / "vqa" / "lxmert-vqa-uncased" / "BEST.pth"
    facts = read_facts(out)
    labels = json.loads((REPO_DATA / "vqa" / "trainval_label2ans.json").read_text())
    assert facts.task == "vqa" and facts.num_outputs == 3129 and facts.model.hidden_size == 64
    assert facts.answers.matches(labels) and facts.answers.name == "data/vqa/trainval_label2ans.json"
    assert facts.extra["source"] == f"unc-nlp/lxmert-vqa-uncased@{release.revision()}"
    assert json.loads((out.parent / "trainval_label2ans.json").read_text()) == labels
    assert all(k.startswith(("lxrt_encoder.model.bert.", "logit_fc.")) for k in torch.load(out, weights_only=True))

    asker = Asker.from_checkpoint(out, extractor="grid+object", extractor_options=GRID, data_root=tmp_path / "x")
    assert asker.task == "vqa" and asker.info.facts == facts and asker.info.model.num_attention_heads == 4
    result = asker.ask(_photo(), "What is in the picture?")
    assert [a for a, _ in result.answers] == _hf_answers(hf, asker, _photo(), "What is in the picture?")

    before = out.stat().st_mtime_ns
    hf_import.import_release(release, tmp_path / "data", tmp_path / "snap", REPO_DATA)
    assert out.stat().st_mtime_ns == before  # the same download: kept
    torch.save(_hf_qa(SMALL, seed=5).state_dict(), folder / "pytorch_model.bin")
    hf_import.import_release(release, tmp_path / "data", tmp_path / "snap", REPO_DATA)
    assert out.stat().st_mtime_ns != before


def test_answers_named_by_the_config_are_what_the_head_means(tmp_path) -> None:
    """A config whose ``id2label`` names the answers in another order than the original table: the import
    follows the config (what the weights mean), records it in the facts, and ``ask`` answers with those
    names even though data/vqa holds the original table."""
    from ask import Asker

    labels = json.loads((REPO_DATA / "vqa" / "trainval_label2ans.json").read_text())
    shuffled = labels[::-1]
    folder, hf = _release_folder(tmp_path, id2label=dict(enumerate(shuffled)))
    out = hf_import.import_release(hf_import.release_for("vqa-model"), tmp_path / "data", tmp_path / "snap",
                                   REPO_DATA)  # fmt: skip
    facts = read_facts(out)
    assert facts.answers.name == "id2label" and facts.answers.matches(shuffled) and not facts.answers.matches(labels)
    asker = Asker.from_checkpoint(out, extractor="grid+object", extractor_options=GRID, data_root=REPO_DATA)
    assert asker.answers == shuffled
    assert [a for a, _ in asker.ask(_photo(), "what?").answers] == _hf_answers(hf, asker, _photo(), "what?")


def test_imports_that_do_not_fit_are_clear_errors(tmp_path) -> None:
    folder, hf = _release_folder(tmp_path)
    release = hf_import.release_for("vqa-model")
    run = lambda: hf_import.import_release(release, tmp_path / "data", tmp_path / "snap", REPO_DATA)  # noqa: E731
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_attention_heads": 4, "hidden_size": 32}))
    with pytest.raises(hf_import.ReleaseImportError, match="not the LxmertForQuestionAnswering its config.json "
                       "describes: .*shape mismatches"):  # fmt: skip
        run()
    (folder / "config.json").write_text(json.dumps(config))
    torch.save({k: v for k, v in hf.state_dict().items() if not k.startswith("answer_head.")},
               folder / "pytorch_model.bin")  # fmt: skip
    with pytest.raises(hf_import.ReleaseImportError, match="pytorch_model.bin: not an LxmertForQuestionAnswering"):
        run()
    state = hf.state_dict()
    state["answer_head.logit_fc.3.weight"] = state["answer_head.logit_fc.3.weight"][:100]
    state["answer_head.logit_fc.3.bias"] = state["answer_head.logit_fc.3.bias"][:100]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(hf_import.ReleaseImportError, match="the answer head has 100 rows but the answer table "
                       r"\(data/vqa/trainval_label2ans.json\) has 3129"):  # fmt: skip
        run()
    (folder / "pytorch_model.bin").write_text("<html>not found</html>")
    with pytest.raises(hf_import.ReleaseImportError, match="pytorch_model.bin"):
        run()
    assert not (tmp_path / "snap" / "vqa").exists()  # nothing half-imported
    with pytest.raises(hf_import.ReleaseImportError, match="not downloaded; fetch it with `bash "
                       "run/download_data.bash gqa-model`"):  # fmt: skip
        hf_import.import_release(hf_import.release_for("gqa-model"), tmp_path / "data", tmp_path / "snap", REPO_DATA)


def _mirror(tmp_path: Path, monkeypatch) -> tuple[Path, object]:
    """A local mirror of the vqa-model files (a small random model) with the manifest pinned to them."""
    from datatools import download

    folder, hf = _release_folder(tmp_path / "made")
    mirror = tmp_path / "mirror"
    entries = [s for s in manifest.SOURCES if s.group == "vqa-model"]
    pinned = []
    for entry in entries:
        target = mirror / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((folder / Path(entry.path).name).read_bytes())
        pinned.append(replace(entry, size=target.stat().st_size,
                              sha256=hashlib.sha256(target.read_bytes()).hexdigest()))  # fmt: skip
    sources = tuple(pinned[entries.index(s)] if s in entries else s for s in manifest.SOURCES)
    monkeypatch.setattr(manifest, "SOURCES", sources)
    monkeypatch.setattr(manifest.select, "__defaults__", (sources,))
    assert download.manifest is manifest
    return mirror, hf


def test_download_group_fetches_and_imports_from_a_mirror(tmp_path, monkeypatch, capsys) -> None:
    """``download_data.bash vqa-model`` in process: the two files come from a local mirror (checked against
    the pinned size and SHA-256), the import step makes the snapshot, and ``ask`` without ``--load``
    picks it. A mirror whose file does not match the pinned digest publishes nothing."""
    from ask.cli import main as ask_main
    from datatools import download

    mirror, hf = _mirror(tmp_path, monkeypatch)
    argv = ["vqa-model", "--base-url", f"file://{mirror}", "--data-root", str(tmp_path / "data"),
            "--snap-root", str(tmp_path / "snap"), "--no-progress"]  # fmt: skip
    assert download.main(argv) == 0
    assert hf_import.main(["--if-downloaded", *argv]) == 0
    best = tmp_path / "snap" / "vqa" / "lxmert-vqa-uncased" / "BEST.pth"
    assert best.is_file() and read_facts(best).task == "vqa"
    assert hf_import.main(["--if-downloaded", "gqa-model", *argv[1:]]) == 0  # not downloaded: nothing to do
    assert not (tmp_path / "snap" / "gqa").exists()

    monkeypatch.chdir(tmp_path)  # ask's default model: the best photo model under ./snap
    _photo().save(tmp_path / "photo.png")
    assert ask_main(["photo.png", "What is it?", "--extractor", "grid+object", "--option", "grid=2",
                     "--option", "patch=4", "--data-root", str(REPO_DATA)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "snap/vqa/lxmert-vqa-uncased/BEST.pth" in out, out

    entry = next(s for s in manifest.SOURCES if s.name == "hf/lxmert-vqa-uncased/pytorch_model.bin")
    (mirror / entry.path).write_bytes(b"x" * entry.size)  # same size, other bytes
    other = tmp_path / "other"
    assert download.main(["vqa-model", "--base-url", f"file://{mirror}", "--data-root", str(other / "data"),
                          "--snap-root", str(other / "snap"), "--no-progress"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "verification failed" in err and "pytorch_model.bin" in err and "sha256" in err, err
    assert not (other / "snap" / "hf" / "lxmert-vqa-uncased" / "pytorch_model.bin").exists()


def test_offline_download_names_the_file_and_the_url(tmp_path, capsys) -> None:
    import socket

    from datatools import download

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}/hub"
    assert download.main(["vqa-model", "--base-url", base, "--data-root", str(tmp_path / "data"), "--snap-root",
                          str(tmp_path / "snap"), "--retries", "0", "--no-progress"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    revision = hf_import.release_for("vqa-model").revision()
    assert f"{base}/unc-nlp/lxmert-vqa-uncased/resolve/{revision}/config.json" in err, err
    assert "network" in err


def test_manifest_pins_the_released_models() -> None:
    for group, repo in (("vqa-model", "unc-nlp/lxmert-vqa-uncased"), ("gqa-model", "unc-nlp/lxmert-gqa-uncased")):
        files = {Path(s.path).name: s for s in manifest.select([group])}
        assert set(files) == {"config.json", "pytorch_model.bin"}
        weights = files["pytorch_model.bin"]
        assert weights.url.startswith(f"https://huggingface.co/{repo}/resolve/") and len(weights.sha256) == 64
        assert weights.dest == f"snap/hf/{repo.split('/')[1]}/pytorch_model.bin"
        assert hf_import.release_for(group).source == str(Path(weights.dest).parent)
    # VQA is pinned to a full commit id (the hub's file URLs need all 40 digits), the same for both files
    revision = hf_import.release_for("vqa-model").revision()
    assert re.fullmatch(r"[0-9a-f]{40}", revision), revision
    assert [s.url.split("/resolve/")[1].split("/")[0] for s in manifest.select(["vqa-model"])] == [revision] * 2
