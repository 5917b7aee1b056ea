"""The entry point every fine-tuning task shares: flags over the task's recipe, checks, the loop."""

from __future__ import annotations

from collections.abc import Sequence

from engine import cli, recipes
from engine.config import TrainConfig
from engine.loop import run
from tasks.base import FinetuneTask
from tasks.preflight import preflight, user_errors


def check_recipe_task(recipe: str, cfg: TrainConfig, task: str) -> None:
    """Stop when ``--recipe`` belongs to another task than the entry point runs."""
    if cfg.task != task:
        ours = [n for n in recipes.names() if recipes.get(n).task == task]
        raise SystemExit(
            f"--recipe {recipe} is a recipe of task {cfg.task!r}, but this entry point runs task {task!r}: "
            f"use python -m tasks.{cfg.task} for it, or one of the {task} recipes ({', '.join(ours) or 'none'})"
        )


def main(task_cls: type[FinetuneTask], argv: Sequence[str] | None = None) -> dict:
    """Parse the original flags and the task's own over its recipe, build the task and run the loop."""
    parser = cli.build_parser(task_cls.description, task_cls.recipe)
    task_cls.add_arguments(parser.add_argument_group(f"{task_cls.name} flags"))
    args = parser.parse_args(argv)
    cfg = cli.config_from_args(args)
    check_recipe_task(args.recipe, cfg, task_cls.name)
    if not args.print_config:
        preflight(task_cls, cfg, multi_gpu=args.multiGPU)
    with user_errors():
        task = task_cls.from_args(cfg, args)
        if args.print_config:
            cli.print_config_and_exit(cfg, task.options_dict())
        if cfg.test:
            task.test_splits(cfg.test)
        return run(task, cfg, device=args.device)
