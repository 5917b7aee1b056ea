"""``BertTokenizer.from_pretrained`` honours ``PRETRAINED_VOCAB_ARCHIVE_MAP`` as the original does.

Bugs caught: a fork that points ``bert-base-uncased`` at its own vocabulary (a file, a folder, a URL)
silently getting the shipped one; the default name needing the network; a URL's vocabulary fetched
again on every call.
"""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lxrt import tokenization
from lxrt.tokenization import PRETRAINED_VOCAB_ARCHIVE_MAP, BertTokenizer
from lxrt.tokenizer import DEFAULT_VOCAB_PATH

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture
def small_vocab(tmp_path: Path) -> Path:
    path = tmp_path / "mine" / "vocab.txt"
    path.parent.mkdir()
    path.write_text("\n".join([*SPECIALS, "red", "cube", "##s"]) + "\n")
    return path


def test_default_name_reads_the_shipped_vocabulary_without_network(monkeypatch) -> None:
    monkeypatch.setattr(tokenization, "DEFAULT_CACHE", Path("/nonexistent"))
    tok = BertTokenizer.from_pretrained("bert-base-uncased")
    assert tok.vocab_path == DEFAULT_VOCAB_PATH and tok.vocab_size == 30522 and tok.max_len == 512


@pytest.mark.parametrize("as_folder", [False, True])
def test_a_changed_entry_points_at_a_local_vocabulary(monkeypatch, small_vocab: Path, as_folder: bool) -> None:
    target = small_vocab.parent if as_folder else small_vocab
    monkeypatch.setitem(PRETRAINED_VOCAB_ARCHIVE_MAP, "bert-base-uncased", str(target))
    tok = BertTokenizer.from_pretrained("bert-base-uncased")
    assert tok.vocab_path == small_vocab and tok.tokenize("Red cubes") == ["red", "cube", "##s"]


def test_a_changed_entry_points_at_a_url(monkeypatch, small_vocab: Path, tmp_path: Path) -> None:
    hits: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            hits.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(small_vocab.parent)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/vocab.txt"
        monkeypatch.setitem(PRETRAINED_VOCAB_ARCHIVE_MAP, "bert-base-uncased", url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        tok = BertTokenizer.from_pretrained("bert-base-uncased", cache_dir=str(tmp_path / "cache"))
        assert tok.vocab_size == 8 and tok.vocab_path.parent == tmp_path / "cache"
        again = BertTokenizer.from_pretrained("bert-base-uncased", cache_dir=str(tmp_path / "cache"))
        assert again.vocab_path == tok.vocab_path and len(hits) == 1  # fetched once, then read from the cache
    finally:
        server.shutdown()


def test_an_unknown_vocabulary_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Can't find a vocabulary file"):
        BertTokenizer.from_pretrained(str(tmp_path / "nowhere"))
