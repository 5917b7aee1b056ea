"""Command line of every entry point: the original flags, plus the new ones, over a named recipe."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lxrt import LXRTConfig
from lxrt.fileio import describe_file

from . import recipes
from .config import TrainConfig
from .validate import FLAG_TYPES, check_config

MODEL_PRESETS = {"base": LXRTConfig(), "tiny": LXRTConfig.tiny()}

# flag -> TrainConfig field, for flags that map one to one
_FIELDS = {
    "train": "train", "valid": "valid", "test": "test", "batchSize": "batch_size", "optim": "optim",
    "lr": "lr", "epochs": "epochs", "seed": "seed", "output": "output", "numWorkers": "num_workers",
    "load": "load", "loadLXMERT": "load_lxmert", "loadLXMERTQA": "load_lxmert_qa", "data_root": "data_root",
    "eval_batch_size": "eval_batch_size", "amp": "amp", "save_every": "save_every", "max_steps": "max_steps",
    "warmup": "warmup", "clip_norm": "clip_norm", "log_every": "log_every", "bert": "bert",
    "max_seq_length": "max_seq_length", "weight_decay": "weight_decay",
}
_SWITCHES = {"tiny": "tiny", "fast": "fast", "fromScratch": "from_scratch", "compile": "compile",
             "fsdp": "fsdp", "resume": "resume", "allow_missing": "allow_missing",
             "features_on_device": "features_on_device"}


class _ListRecipes(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        for name in recipes.names():
            print(f"{name:28s} task {recipes.get(name).task}")
        parser.exit()


def build_parser(description: str, recipe: str) -> argparse.ArgumentParser:
    """Parser with the original's flags (same names) and this project's additions."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--recipe", default=recipe, help="named experiment (--list-recipes shows them)")
    p.add_argument("--list-recipes", action=_ListRecipes, help="print every recipe with its task and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    g = p.add_argument_group("original flags")
    g.add_argument("--train", help="training splits, comma-separated (e.g. train,nominival)")
    g.add_argument("--valid", help="validation split(s); empty for none")
    g.add_argument("--test", help="split to predict and write submission files for")
    g.add_argument("--batchSize", type=int, help="global batch size (split over processes)")
    g.add_argument("--optim", choices=["bert", "adamw", "adam", "adamax", "rms", "sgd"])
    g.add_argument("--lr", type=float)
    g.add_argument("--epochs", type=int)
    g.add_argument("--dropout", type=float, help="accepted for compatibility (unused, as in the original)")
    g.add_argument("--seed", type=int)
    g.add_argument("--output", help="run folder (snap/<task>/<name>)")
    g.add_argument("--fast", action="store_true", default=None, help="debug subset: ~5000 images (the task picks them)")
    g.add_argument("--tiny", action="store_true", default=None, help="debug subset: ~512 images (the task picks them)")
    g.add_argument("--tqdm", action="store_true", help="accepted for compatibility (progress bars are on)")
    g.add_argument("--load", help="fine-tuned snapshot to start from (PATH -> PATH.pth)")
    g.add_argument("--loadLXMERT", help="pretrained encoder (PATH -> PATH_LXRT.pth)")
    g.add_argument("--loadLXMERTQA", help="pretrained encoder + QA head (PATH -> PATH_LXRT.pth)")
    g.add_argument("--fromScratch", action="store_true", default=None, help="no BERT initialization")
    g.add_argument("--llayers", type=int)
    g.add_argument("--xlayers", type=int)
    g.add_argument("--rlayers", type=int)
    g.add_argument("--multiGPU", action="store_true", help="use every visible GPU (the run script starts torchrun)")
    g.add_argument("--numWorkers", type=int, help="DataLoader worker processes")
    n = p.add_argument_group("new flags")
    n.add_argument("--data-root", dest="data_root",
                   help="folder holding the task's data folder and the *_imgfeat/ feature folders")
    n.add_argument("--model-config", dest="model_config",
                   help="model size: 'base' (LXMERT), 'tiny', or a JSON file of LXRTConfig fields")
    n.add_argument("--bert", help="HF BERT folder to initialize the language layers (without --fromScratch)")
    n.add_argument("--from-bert", dest="from_bert", action="store_true",
                   help="start without the pretrained LXMERT weights (the recipe's --loadLXMERT/--loadLXMERTQA "
                   "dropped): the language layers from BERT-base, the rest random (with --fromScratch: all random)")
    n.add_argument("--eval-batch-size", dest="eval_batch_size", type=int)
    n.add_argument("--amp", choices=["auto", "bf16", "fp16", "none"], help="autocast precision")
    n.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    n.add_argument("--fsdp", action="store_true", default=None, help="FSDP2 (fully_shard) instead of DDP")
    n.add_argument("--resume", action="store_true", default=None, help="continue from <output>/checkpoint.pt")
    n.add_argument("--save-every", dest="save_every", type=int, help="steps between resumable checkpoints")
    n.add_argument("--max-steps", dest="max_steps", type=int, help="stop after this many steps")
    n.add_argument("--warmup", type=float, help="warm-up fraction of the linear schedule")
    n.add_argument("--weight-decay", dest="weight_decay", type=float)
    n.add_argument("--clip-norm", dest="clip_norm", type=float, help="gradient clipping norm (0: off)")
    n.add_argument("--log-every", dest="log_every", type=int)
    n.add_argument("--max-seq-length", dest="max_seq_length", type=int)
    n.add_argument("--full-encoder", action="store_true", help="compute every output row (no pooled-only path)")
    n.add_argument("--no-progress", action="store_true", help="no progress bars")
    n.add_argument("--features-on-device", dest="features_on_device", action="store_true", default=None,
                   help="copy the region features the run uses into device memory once and gather batches "
                        "there (falls back to the store, with a message, when they do not fit)")
    n.add_argument("--device", default="auto", help="auto, cpu, cuda")
    n.add_argument("--allow-missing", dest="allow_missing", action="store_true", default=None,
                   help="write a server split's submission even when some questions have no image features "
                   "(they are listed in <output>/<split>_missing.txt); without it such a run fails")
    apply_flag_types(p)
    return p


def apply_flag_types(parser: argparse.ArgumentParser) -> None:
    """Give every numeric flag its range check (``engine.validate.FLAG_TYPES``), so that a bad value
    stops at parse time with the flag's name."""
    for action in parser._actions:
        for opt in action.option_strings:
            if opt in FLAG_TYPES:
                action.type = FLAG_TYPES[opt]


def model_config(spec: str | None, base: LXRTConfig) -> LXRTConfig:
    if spec is None:
        return base
    if spec in MODEL_PRESETS:
        return MODEL_PRESETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise SystemExit(f"--model-config: {spec!r} is neither a preset ({', '.join(MODEL_PRESETS)}) nor a file")
    try:
        return LXRTConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError, TypeError) as e:
        raise SystemExit(f"--model-config {path}: {e} (the file is {describe_file(path)})") from None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The recipe named by ``--recipe`` with every flag given on the command line applied."""
    cfg = recipes.get(args.recipe)
    changes: dict[str, Any] = {"recipe": args.recipe}
    for flag, name in _FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            changes[name] = value
    for flag, name in _SWITCHES.items():
        if getattr(args, flag, None):
            changes[name] = True
    if getattr(args, "from_bert", False):
        given = [f for f in ("loadLXMERT", "loadLXMERTQA") if getattr(args, f, None)]
        if given:
            raise SystemExit(f"error: --from-bert starts without pretrained LXMERT weights; drop --{given[0]}")
        changes["load_lxmert"] = changes["load_lxmert_qa"] = ""
    if getattr(args, "full_encoder", False):
        changes["pooled_only"] = False
    if getattr(args, "no_progress", False):
        changes["progress"] = False
    model = model_config(getattr(args, "model_config", None), cfg.model)
    layers = {k: getattr(args, k) for k in ("llayers", "xlayers", "rlayers") if getattr(args, k, None) is not None}
    changes["model"] = model.replace(**layers) if layers else model
    cfg = cfg.replace(**changes)
    try:
        check_config(cfg)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    return cfg


def print_config_and_exit(cfg: TrainConfig, extra: dict[str, Any] | None = None) -> None:
    d = cfg.to_dict()
    if extra:
        d.update(extra)
    print(json.dumps(d, indent=2, sort_keys=True))
    sys.exit(0)
