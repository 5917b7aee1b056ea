"""BERT for this project's runs: ``lxrt.bert_init.resolve_bert`` with the project's own ways to
provide it added to its message (the download script, ``--bert PATH``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lxrt.bert_init import BERT_BASE_NAME, BertNotFoundError, resolve_bert

PROJECT_HINT = ("in this project, bash run/download_data.bash bert fetches it (where there is network), "
                "and --bert PATH names a local BERT folder")


def find_bert(name_or_path: str | os.PathLike[str] = BERT_BASE_NAME, **options: Any) -> Path:
    """``resolve_bert(name_or_path, **options)``; when BERT is not there, the error also names this
    project's download command and ``--bert PATH``."""
    try:
        return resolve_bert(name_or_path, **options)
    except BertNotFoundError as err:
        raise BertNotFoundError(f"{err}; {PROJECT_HINT}", err.folder, err.urls) from err
