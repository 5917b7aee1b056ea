"""How many answers change when the same weights read the fp16 feature store instead of a float32 one.

Generates synthetic VQA data in the original formats (2048-d ReLU region features, 36 boxes, minival
questions), converts its val2014 TSV into a float16 store and a float32 store, and runs one model (the
released architecture, 9/5/5 layers or --layers, 3129 answers, random weights with a fixed seed, fp32 compute)
on every minival question from each store. Reports the answers that differ and the logit differences;
``--bf16 N`` also compares bf16 autocast with fp32 compute on the first N questions (float32 store).

    PYTHONPATH=src python bench/feature_precision.py --images 1000 --out bench/results/feature_precision.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from features.convert import convert_tsv  # noqa: E402
from features.store import FeatureStore  # noqa: E402
from lxrt import LXRTConfig  # noqa: E402
from lxrt.tokenizer import LXRTTokenizer  # noqa: E402
from tasks.models import Classifier  # noqa: E402
from tasks.synthetic import SyntheticConfig, generate  # noqa: E402


def predict(model: Classifier, tok: LXRTTokenizer, store: FeatureStore, questions: list[dict], batch: int,
            autocast: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Argmax answer and top-2 logit margin of every question."""
    answers, logits_all = [], []
    for start in range(0, len(questions), batch):
        rows = questions[start:start + batch]
        text = tok([q["sent"] for q in rows], max_length=20)
        feats, boxes, mask = store.gather([q["img_id"] for q in rows], dtype=np.float32)
        ctx = torch.autocast("cpu", dtype=autocast) if autocast else torch.no_grad()
        with torch.no_grad(), ctx:
            out = model(torch.as_tensor(text.input_ids), torch.from_numpy(feats), torch.from_numpy(boxes),
                        attention_mask=torch.as_tensor(text.attention_mask))
        logits = out.float()
        answers.append(logits.argmax(-1).numpy())
        logits_all.append(logits.numpy())
    return np.concatenate(answers), np.concatenate(logits_all)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1000, help="minival images (3 questions each)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", default="9,5,5", help="language,cross,vision layers (the released 9,5,5)")
    p.add_argument("--bf16", type=int, default=0, help="also compare bf16 autocast on this many questions")
    p.add_argument("--out", type=Path, help="JSON file for the figures")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        t0 = time.perf_counter()
        generate(root, SyntheticConfig(seed=args.seed, feat_dim=2048, sizes=dict(
            coco_train_images=1, coco_val_images=args.images, minival_images=args.images, coco_test_images=1,
            vg_images=2, gqa_valid_images=1, gqa_submit_images=1, gqa_testdev_images=1, nlvr2_train_sets=1,
            nlvr2_valid_sets=1, nlvr2_test_sets=1,
        )), progress=False)
        tsv = root / "mscoco_imgfeat" / "val2014_obj36.tsv"
        stores = {}
        for dtype in ("float16", "float32"):
            out = Path(tmp) / f"val2014.{dtype}.store"
            convert_tsv(tsv, out, dtype=dtype, progress=False)
            stores[dtype] = FeatureStore(out)
        questions = json.loads((root / "vqa" / "minival.json").read_text())
        print(f"{len(questions)} questions on {args.images} images, data ready in {time.perf_counter() - t0:.0f}s")
        llayers, xlayers, rlayers = (int(n) for n in args.layers.split(","))
        config = LXRTConfig(llayers=llayers, xlayers=xlayers, rlayers=rlayers)
        model = Classifier(config, 3129, pooled_only=True).eval()
        tok = LXRTTokenizer(max_length=20)
        t0 = time.perf_counter()
        a32, l32 = predict(model, tok, stores["float32"], questions, args.batch)
        a16, l16 = predict(model, tok, stores["float16"], questions, args.batch)
        seconds = time.perf_counter() - t0
        top2 = np.sort(l32, axis=-1)[:, -2:]
        result = {
            "questions": len(questions),
            "model": f"LXRT {args.layers} layers (hidden 768, 2048-d features, 3129 answers), random weights "
                     f"seed {args.seed}, fp32 compute",
            "fp16_store_changed_answers": int((a16 != a32).sum()),
            "fp16_store_changed_fraction": float((a16 != a32).mean()),
            "fp16_store_max_abs_logit_diff": float(np.abs(l16 - l32).max()),
            "fp16_store_mean_abs_logit_diff": float(np.abs(l16 - l32).mean()),
            "median_top2_margin_fp32": float(np.median(top2[:, 1] - top2[:, 0])),
            "feature_abs_diff_max": float(np.abs(stores["float16"].gather([questions[0]["img_id"]])[0]
                                                 - stores["float32"].gather([questions[0]["img_id"]])[0]).max()),
            "seconds_two_passes": round(seconds, 1),
        }
        if args.bf16:
            sub = questions[: args.bf16]
            abf, lbf = predict(model, tok, stores["float32"], sub, args.batch, autocast=torch.bfloat16)
            result["bf16_questions"] = len(sub)
            result["bf16_autocast_changed_answers"] = int((abf != a32[: len(sub)]).sum())
            result["bf16_autocast_max_abs_logit_diff"] = float(np.abs(lbf - l32[: len(sub)]).max())
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
