"""A local page to ask LXMERT about pictures: ``python -m ask.serve [--load ...] [--port 7860]``.

The command: it loads the selected snapshot first (a bad one is reported before serving), then serves
the page of :mod:`ask.page` over the handlers of :mod:`ask.service`, bound to 127.0.0.1 unless
``--host`` is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence

from ask.checkpoints import AskError
from ask.page import build_page, launch_page, upload_roots
from ask.service import Service
from features.extract import parse_option
from lxrt import CheckpointError

log = logging.getLogger("lxmert.serve")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ask.serve",
        description="Serve a local web page that asks LXMERT about pictures (Gradio). Bound to 127.0.0.1 "
        "unless --host is given.",
    )
    p.add_argument("--load", help="snapshot selected first (default: the best photo model under --snap, released "
                   "models first; else the demo's snap/demo/BEST.pth)")  # fmt: skip
    p.add_argument("--extractor", help="region extractor for snapshots other than the demo's (default butd)")
    p.add_argument("--weights", help="extractor weights file (passed as weights=PATH)")
    p.add_argument("--option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="extractor option; repeatable")  # fmt: skip
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE first; repeatable")
    p.add_argument("--data-root", dest="data_root", help="answer tables and the demo's data (default: the run's)")
    p.add_argument("--snap", default="snap", help="folder searched for BEST.pth files for the model picker")
    p.add_argument("--port", type=int, default=7860, help="port (default %(default)s)")
    p.add_argument("--host", nargs="?", const="0.0.0.0", default="127.0.0.1",
                   help="listen on this address (bare --host: every interface; default 127.0.0.1)")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    options = dict(args.option)
    if args.weights:
        options["weights"] = args.weights
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("ask.serve: error: Gradio is not installed: bash run/serve.bash installs it (requirements-serve.txt)",
              file=sys.stderr)  # fmt: skip
        return 2
    service = Service(args.load, args.extractor, options, args.plugin, args.data_root, args.snap,
                      allowed=upload_roots())  # fmt: skip
    try:
        start = time.perf_counter()
        service.asker(None)  # load the selected model now: a bad one is reported before serving
        log.info(f"model ready in {time.perf_counter() - start:.1f} s")
    except (AskError, CheckpointError, OSError) as err:
        print(f"ask.serve: error: {err}", file=sys.stderr)
        return 2
    page = build_page(service)
    host = "127.0.0.1" if args.host in ("127.0.0.1", "localhost") else args.host
    print(f"serving on http://{host if host != '0.0.0.0' else '127.0.0.1'}:{args.port}  (Ctrl-C stops)", flush=True)
    launch_page(page, service, host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
