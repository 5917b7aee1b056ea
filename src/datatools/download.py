"""``python -m datatools.download``: fetch the original LXMERT data files by group, or one URL.

The transfer itself (http(s)://, s3://, file://; resume, retries, checksums, deadline, atomic
publish) is ``lxrt.fetch.download``; manifest entries are fetched, unpacked and recorded by
``datatools.entries``; ``--help`` lists the options. The names below are re-exported for callers of
this module.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import requests

from datatools import sources as manifest
from datatools.archives import extract
from datatools.entries import FetchConfig, fetch_source, outputs_of, verify_source
from datatools.lockfile import DownloadLock
from lxrt.fetch import DEFAULT_DEADLINE, DownloadError, download, make_s3_client
from lxrt.progress import progress_bar

__all__ = [
    "DownloadError",
    "FetchConfig",
    "build_parser",
    "download",
    "extract",
    "fetch_source",
    "main",
    "make_s3_client",
    "verify_source",
]

log = logging.getLogger(__name__)


def _print_list() -> None:
    for group, about in manifest.GROUPS.items():
        print(f"{group}: {about}")
        for s in manifest.SOURCES:
            if s.group == group:
                size = f" ({s.approx_size})" if s.approx_size else ""
                print(f"  {s.name:34s} -> {s.dest}{size}")


def _print_plan(entries: list[manifest.Source], cfg: FetchConfig) -> None:
    for s in entries:
        outputs = outputs_of(s, cfg)
        state = "present" if all(p.is_file() for p in outputs) else "missing"
        dest = manifest.resolve(s.dest, cfg.data_root, cfg.snap_root)
        print(f"[{s.group}] {s.name} ({state})")
        print(f"    {s.url_from(cfg.base_url)}")
        print(f"    -> {dest}")
        if s.archive:
            print(f"    unpack -> {', '.join(str(p) for p in outputs)}")


def _flag_hint(err: DownloadError, args: argparse.Namespace) -> str:
    """The command line's own way out of a failure that ``lxrt.fetch`` describes in general terms."""
    if err.reason == "unreachable":
        return " (--base-url)"
    if err.reason == "deadline":
        return f" (--deadline SECONDS; now {args.deadline:g})"
    return ""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m datatools.download",
        description="Download the original LXMERT data files (question JSON, obj36 features, weights) by "
        "group or file name, or a single URL with --url/--out. Interrupted downloads resume when run again.",
    )
    p.add_argument(
        "groups",
        nargs="*",
        metavar="GROUP",
        help=f"groups ({', '.join(manifest.GROUPS)}), file names from --list, or 'all'",
    )
    p.add_argument("--list", action="store_true", help="list the groups and their files, then exit")
    p.add_argument("--dry-run", action="store_true", help="print what would be fetched and where; fetch nothing")
    p.add_argument("--data-root", type=Path, default=Path("data"), help="folder for data/ files (default: data)")
    p.add_argument("--snap-root", type=Path, default=Path("snap"), help="folder for snap/ files (default: snap)")
    p.add_argument(
        "--base-url",
        help="fetch from a mirror with the same layout (http(s)://, s3://bucket/prefix, "
        "file:///dir) instead of the original servers",
    )
    p.add_argument("--keep-archives", action="store_true", help="keep .zip files after unpacking them")
    p.add_argument("--retries", type=int, default=3, help="retries per file on transient errors (default: 3)")
    p.add_argument("--timeout", type=float, default=60, help="network timeout in seconds (default: 60)")
    p.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE,
        metavar="SECONDS",
        help=f"time one file may take, retries included (default: {DEFAULT_DEADLINE:g}, {DEFAULT_DEADLINE / 3600:g} h; "
        "0: no limit); the bytes received are kept, and the same command resumes them",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--verify",
        action="store_true",
        help="re-check files already on disk against the size and SHA-256 recorded in "
        "<data-root>/download.lock.json when they were downloaded (and the server's current size); "
        "fetch again what does not match",
    )
    one = p.add_argument_group("single file")
    one.add_argument("--url", help="download this URL instead of manifest groups")
    one.add_argument("--out", type=Path, help="destination file for --url")
    one.add_argument("--sha256", help="expected SHA-256 of --url")
    one.add_argument("--md5", help="expected MD5 of --url")
    one.add_argument("--size", type=int, help="expected size in bytes of --url")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list:
        _print_list()
        return 0
    progress = not args.no_progress
    try:
        if args.url:
            if args.groups or not args.out:
                raise DownloadError("--url needs --out and no GROUP arguments")
            if args.dry_run:
                print(f"{args.url}\n    -> {args.out}")
                return 0
            download(
                args.url,
                args.out,
                sha256=args.sha256,
                md5=args.md5,
                expected_size=args.size,
                progress=progress,
                retries=args.retries,
                timeout=args.timeout,
                deadline=args.deadline,
            )
            return 0
        if not args.groups:
            raise DownloadError("name at least one group or file to download (see --list)")
        try:
            entries = manifest.select(args.groups)
        except ValueError as err:
            raise DownloadError(str(err)) from None
        cfg = FetchConfig(
            args.data_root, args.snap_root, args.base_url, args.keep_archives, args.retries, args.timeout, progress,
            args.deadline,
        )
        if args.dry_run:
            _print_plan(entries, cfg)
            return 0
        lock = DownloadLock.beside(cfg.data_root)
        files = progress_bar(len(entries), "files", unit="file", enabled=progress and len(entries) > 1, leave=True)
        with requests.Session() as session, files:
            for entry in entries:
                fetch_source(entry, cfg, session, lock=lock, verify=args.verify)
                log.info("%s: done", entry.name)
                files.update(1)
    except DownloadError as err:
        print(f"error: {err}{_flag_hint(err, args)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
