"""Pretrain LXMERT: ``python -m pretrain.lxmert_pretrain [flags]`` (``bash run/lxmert_pretrain.bash``).

Takes the original script's flags (``--taskMaskLM --taskObjPredict --taskMatched --taskQA
--visualLosses obj,attr,feat --wordMaskRate 0.15 --objMaskRate 0.15 --qaSets ...``) plus the
shared loop's; the recipe ``lxmert_pretrain`` holds the released run's settings. Writes
``EpochXX_LXRT.pth`` and ``BEST_EVAL_LOSS_LXRT.pth`` (original key layout) into ``--output``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine import cli, recipes
from engine.config import TrainConfig
from lxrt import LXRTConfig, atomic_write

from .losses import LOSS_COMPAT
from .task import SCHEDULES, PretrainOptions, PretrainTask

RECIPE = "lxmert_pretrain"
OPTIONS_FILE = "pretrain_options.json"

# The released run (run/lxmert_pretrain.bash: from scratch but BERT's MLM output bias), and the same
# starting from BERT-base's language layers and heads.
LXMERT_PRETRAIN = recipes.register(RECIPE, TrainConfig(
    task="lxmert_pretrain", output="snap/pretrain/lxmert",
    train="mscoco_train,mscoco_nominival,vgnococo", valid="mscoco_minival",
    batch_size=256, optim="bert", lr=1e-4, epochs=20, warmup=0.05, clip_norm=1.0, from_scratch=True,
    model=LXRTConfig(llayers=9, xlayers=5, rlayers=5),
))
recipes.register("lxmert_pretrain_bert", LXMERT_PRETRAIN.replace(from_scratch=False))

TASK_FLAGS = {
    "taskMaskLM": "task_mask_lm",
    "taskObjPredict": "task_obj_predict",
    "taskMatched": "task_matched",
    "taskQA": "task_qa",
}


def build_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser("LXMERT pretraining on the shared training loop.", RECIPE)
    g = parser.add_argument_group(
        "pretraining flags",
        "The --task* flags select the pretraining tasks; with none of them given all four are on "
        "(the released recipe).",
    )
    g.add_argument("--taskMaskLM", action="store_true", help="masked language modeling")
    g.add_argument("--taskObjPredict", action="store_true", help="masked-region prediction (--visualLosses)")
    g.add_argument("--taskMatched", action="store_true", help="sentence-image matching (50%% mismatched)")
    g.add_argument("--taskQA", action="store_true", help="image question answering over the answer table")
    g.add_argument("--visualLosses", default="obj,attr,feat", help="masked-region targets: obj, attr, feat")
    g.add_argument("--wordMaskRate", type=float, default=0.15, help="fraction of wordpieces selected")
    g.add_argument("--objMaskRate", type=float, default=0.15, help="fraction of regions selected")
    g.add_argument("--qaSets", default=None,
                   help="keep only the answers of these QA sources (dsets of all_ans.json, comma-separated)")
    g.add_argument(
        "--lossCompat", choices=LOSS_COMPAT, default="original",
        help="original: the released losses; corrected: obj/attr on masked regions only, no LM/QA "
        "targets for mismatched pairs",
    )
    g.add_argument(
        "--schedule", choices=SCHEDULES, default="single",
        help="single: image QA from epoch 1 (the repository); paper: QA after --qaStartEpoch epochs",
    )
    g.add_argument("--qaStartEpoch", type=int, default=10, help="epochs without image QA (--schedule paper)")
    cli.apply_flag_types(parser)
    return parser


def options_from_args(args: argparse.Namespace) -> PretrainOptions:
    chosen = {field: bool(getattr(args, flag)) for flag, field in TASK_FLAGS.items()}
    if not any(chosen.values()):
        chosen = dict.fromkeys(chosen, True)
    qa_sets = tuple(s.strip() for s in args.qaSets.split(",") if s.strip()) if args.qaSets else None
    return PretrainOptions(
        **chosen,
        visual_losses=tuple(s.strip() for s in args.visualLosses.split(",") if s.strip()),
        word_mask_rate=args.wordMaskRate,
        obj_mask_rate=args.objMaskRate,
        qa_sets=qa_sets,
        loss_compat=args.lossCompat,
        schedule=args.schedule,
        qa_start_epoch=args.qaStartEpoch,
    )


def save_options(task: PretrainTask, cfg: TrainConfig) -> Path | None:
    """Keep the pretraining options beside the loop's config.json (rank 0 only)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    text = json.dumps(task.options_dict(), indent=2, sort_keys=True)
    return atomic_write(cfg.output_dir / OPTIONS_FILE, lambda tmp: tmp.write_text(text))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    # DataLoader workers are forked after the tokenizer may have run: keep its thread pool off.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from engine.loop import run  # imported after parsing so that --help stays fast

    cfg = cli.config_from_args(args)
    try:
        options = options_from_args(args)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if not args.print_config:
        from tasks.preflight import preflight

        preflight(PretrainTask, cfg, multi_gpu=args.multiGPU)
    task = PretrainTask(cfg, options)
    if args.print_config:
        cli.print_config_and_exit(cfg, task.options_dict())
    save_options(task, cfg)
    from tasks.preflight import user_errors

    with user_errors():
        return run(task, cfg, device=args.device)


if __name__ == "__main__":
    main(sys.argv[1:])
