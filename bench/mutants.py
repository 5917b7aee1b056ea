"""Mutation testing of the modules users depend on most, one module at a time (``bash bench/mutants.sh``).

For each module: the tracked files of the repository are copied into ``.mutants/<module>/`` (what a fresh
clone holds), a ``setup.cfg`` there tells mutmut which files to mutate and which fast tests cover them, and
``mutmut run`` tries every mutant with one worker. The score (killed / all) and the surviving mutants are
printed and written to ``.mutants/<module>.json``, the survivors' diffs to ``.mutants/<module>.survivors.diff``.
``--list`` names the modules, their files and tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".mutants"


@dataclass(frozen=True)
class Module:
    files: tuple[str, ...]  # glob patterns of the files to mutate, relative to the repository
    tests: tuple[str, ...]  # pytest arguments selecting the fast tests that cover them


MODULES: dict[str, Module] = {
    "metrics": Module(("src/tasks/metrics.py",), ("tests/test_metrics.py", "tests/test_vqa_eval.py")),
    "vqa_eval": Module(("src/tasks/vqa_eval.py",), ("tests/test_vqa_eval.py", "tests/test_vqa_eval_inputs.py")),
    "completeness": Module(
        ("src/tasks/completeness.py",),
        ("tests/test_completeness.py", "tests/test_run_safety.py", "-k", "completeness or server_split"),
    ),
    "masking": Module(("src/pretrain/masking.py",), ("tests/test_pretrain_masking.py",)),
    "optim": Module(("src/engine/optim.py",), ("tests/test_optim.py",)),
    "checkpoint": Module(
        ("src/lxrt/checkpoint.py",),
        ("tests/test_checkpoint.py", "tests/test_checkpoint_details.py", "tests/test_bad_files.py"),
    ),
    "butd.ops": Module(("src/features/butd/ops.py",), ("tests/test_butd_ops.py", "tests/test_butd_presets.py")),
    "butd.presets": Module(("src/features/butd/presets.py",), ("tests/test_butd_presets.py", "tests/test_butd_ops.py")),
    "butd.pipeline": Module(
        ("src/features/butd/pipeline.py",),
        ("tests/test_butd_ops.py", "tests/test_butd_presets.py", "tests/test_butd_reference.py",
         "tests/test_butd_proposals.py", "-m", "not slow"),
    ),  # fmt: skip
    "butd.weights": Module(("src/features/butd/weights.py",), ("tests/test_butd_weights.py",)),
    "butd.rest": Module(
        ("src/features/butd/model.py", "src/features/butd/extractor.py", "src/features/butd/labels.py"),
        ("tests/test_butd_reference.py", "tests/test_butd_extract.py", "tests/test_butd_weights.py",
         "tests/test_butd_architecture.py", "-m", "not slow"),
    ),  # fmt: skip
    "store": Module(
        ("src/features/store.py", "src/features/store_writer.py"),
        ("tests/test_store.py", "tests/test_store_details.py", "tests/test_bad_files.py"),
    ),
    "ask": Module(  # narrowed to what a snapshot is (task, sizes, default model); the rest of ask is end-to-end tested
        ("src/ask/checkpoints.py",),
        ("tests/test_ask_checkpoints.py", "tests/test_ask.py", "-k", "checkpoints or snapshot"),
    ),
}

STATUS = re.compile(r"^\s*(\S+): (killed|survived|timeout|suspicious|no tests|skipped|segfault|not checked)", re.M)


def prepare(name: str, module: Module) -> Path:
    """A fresh copy of the tracked files with mutmut's configuration for ``module``."""
    folder = WORK / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, tracked.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, folder / rel)
    lines = "\n    ".join
    (folder / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths = src\n"
        f"only_mutate =\n    {lines(module.files)}\n"
        f"pytest_add_cli_args_test_selection =\n    {lines(module.tests)}\n"
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -x\n    -q\n"
        "also_copy =\n    data\n    run\n    bench\n",
        encoding="utf-8",
    )
    return folder


def results(folder: Path, mutmut: list[str]) -> dict[str, str]:
    """mutant name -> status, as ``mutmut results --all true`` reports them."""
    out = subprocess.run([*mutmut, "results", "--all", "true"], cwd=folder, capture_output=True, text=True).stdout
    return {m.group(1): m.group(2) for m in STATUS.finditer(out)}


def run_module(name: str, mutmut: list[str]) -> dict:
    module = MODULES[name]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    folder = prepare(name, module)
    start = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([*mutmut, "run", "--max-children", "1"], cwd=folder, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    seconds = time.perf_counter() - start
    status = results(folder, mutmut)
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    checked = sum(v for k, v in counts.items() if k not in ("not checked", "skipped"))
    killed = counts.get("killed", 0) + counts.get("timeout", 0) + counts.get("segfault", 0)
    survivors = sorted(k for k, v in status.items() if v in ("survived", "no tests", "suspicious"))
    report = {
        "module": name,
        "files": list(module.files),
        "tests": list(module.tests),
        "commit": commit.stdout.strip(),
        "seconds": round(seconds),
        "mutants": checked,
        "killed": killed,
        "score": round(100 * killed / checked, 1) if checked else None,
        "counts": counts,
        "survivors": survivors,
        "exit_code": proc.returncode,
    }
    (WORK / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    diffs = [subprocess.run([*mutmut, "show", m], cwd=folder, capture_output=True, text=True).stdout for m in survivors]
    (WORK / f"{name}.survivors.diff").write_text("".join(diffs), encoding="utf-8")
    if proc.returncode != 0 or not checked:
        print(proc.stdout[-4000:], file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bash bench/mutants.sh", description=__doc__.splitlines()[0])
    p.add_argument("modules", nargs="*", metavar="MODULE", help=f"default: all, in order ({', '.join(MODULES)})")
    p.add_argument("--list", action="store_true", help="print the modules, their files and tests")
    args = p.parse_args(argv)
    if args.list:
        for name, module in MODULES.items():
            print(f"{name:14} {' '.join(module.files):55} {' '.join(module.tests)}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        p.error(f"unknown module {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    mutmut = [sys.executable, "-m", "mutmut"]
    worst = 0
    for name in args.modules or list(MODULES):
        r = run_module(name, mutmut)
        print(f"{name}: {r['killed']}/{r['mutants']} killed ({r['score']} %) in {r['seconds']} s; "
              f"survivors: {' '.join(r['survivors']) or 'none'}")  # fmt: skip
        worst = max(worst, 0 if r["exit_code"] == 0 and r["mutants"] else 1)
    return worst


if __name__ == "__main__":
    sys.exit(main())
