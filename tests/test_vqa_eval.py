"""The official VQA accuracy: ``tasks.metrics.vqa_official_accuracy`` and ``python -m tasks.vqa_eval``.

``_ToolRules`` below restates, independently and as literally as possible, the rules of the VQA
evaluation tool (GT-Vision-Lab/VQA ``vqaEval.py``, Python 2): clean newlines/tabs and strip; only when
the human answers differ, run processPunctuation then processDigitArticle on both sides; leave out
each human answer *record* by dict inequality; min(1, matches / 3); mean; round(100 * sum / n, 2) with
Python 2 rounding. Hand-made cases exercise each quirk; real-format files go through the command.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from tasks.metrics import normalize_vqa_answer, py2_round, vqa_official_accuracy
from tasks.vqa_eval import VQAEvalError, evaluate, main

REPO = Path(__file__).resolve().parents[1]


class _ToolRules:
    """The tool's scoring, restated for the test (not imported from the code under test)."""

    punct = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
    numbers = dict(zip(["none", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"],
                       ["0", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]))
    contractions = {"dont": "don't", "isnt": "isn't", "whats": "what's", "cant": "can't", "Im": "I'm",
                    "oclock": "o'clock", "twas": "'twas", "somebody'd": "somebodyd"}

    @staticmethod
    def lower(text: str) -> str:  # Python 2 unicode.lower: simple case mapping
        return "".join("i" if c == "\u0130" else c.lower() for c in text)

    def punctuation(self, text: str) -> str:
        out = text
        digit_comma = re.search("[0-9],[0-9]", text) is not None
        for p in self.punct:
            out = out.replace(p, "" if (p + " " in text or " " + p in text or digit_comma) else " ")
        removed, chars = 0, []
        for i, c in enumerate(out):  # periods not followed by an ASCII digit, the first 32 only
            nxt = out[i + 1] if i + 1 < len(out) else ""
            if c == "." and not ("0" <= nxt <= "9") and removed < 32:
                removed += 1
                continue
            chars.append(c)
        return "".join(chars)

    def digit_article(self, text: str) -> str:
        words = [self.numbers.get(w, w) for w in self.lower(text).split()]
        words = [w for w in words if w not in ("a", "an", "the")]
        return " ".join(self.contractions.get(w, w) for w in words)

    def question(self, answer: str, records: list[dict]) -> float:
        gts = [dict(r, answer=r["answer"].replace("\n", " ").replace("\t", " ").strip()) for r in records]
        res = answer.replace("\n", " ").replace("\t", " ").strip()
        if len({g["answer"] for g in gts}) > 1:
            for g in gts:
                g["answer"] = self.digit_article(self.punctuation(g["answer"]))
            res = self.digit_article(self.punctuation(res))
        accs = []
        for g in gts:
            matches = len([o for o in gts if o != g and o["answer"] == res])
            accs.append(min(1, float(matches) / 3))
        return float(sum(accs)) / len(accs)

    @staticmethod
    def round2(x: float) -> float:  # Python 2: exact value, halves away from zero
        scaled = Fraction(x) * 100
        whole = scaled.numerator // scaled.denominator
        if scaled - whole >= Fraction(1, 2):
            whole += 1
        return float(Fraction(whole, 100))

    def accuracy(self, anns: list[dict], preds: dict[int, str]) -> dict:
        per_q, qtype, atype = [], {}, {}
        for ann in anns:
            acc = self.question(preds[ann["question_id"]], ann["answers"])
            per_q.append(acc)
            qtype.setdefault(ann["question_type"], []).append(acc)
            atype.setdefault(ann["answer_type"], []).append(acc)

        def pct(v: list[float]) -> float:
            return self.round2(100 * float(sum(v)) / len(v))

        return {"overall": pct(per_q), "perQuestionType": {k: pct(v) for k, v in sorted(qtype.items())},
                "perAnswerType": {k: pct(v) for k, v in sorted(atype.items())}}


TOOL = _ToolRules()


def _records(*answers: str, ids: bool = True) -> list[dict]:
    return [{"answer": a, "answer_confidence": "yes", **({"answer_id": i + 1} if ids else {})}
            for i, a in enumerate(answers)]


# Each case: prediction, human answers, the tool's accuracy worked out by hand.
QUIRKS = [
    ("two", ["2"] * 10, 0.0),  # identical human answers: nothing is normalized
    ("Yes", ["yes"] * 10, 0.0),  # ... not even the case
    (" yes\n", ["yes"] * 10, 1.0),  # newlines/tabs and surrounding spaces always go
    ("Two", ["2"] * 9 + ["3"], 1.0),  # humans differ: both sides normalized
    ("2", ["two"] * 3 + ["3"] * 7, 0.9),  # number words -> digits on the human side too
    ("yes", ["yes!", "yes", "yes"] + ["no"] * 7, 0.9),  # "yes!" -> "yes " -> "yes"
    ("left right", ["left - right"] + ["up"] * 9, 0.3),  # a mark touching a space is deleted
    ("t shirt", ["t-shirt"] * 2 + ["shirt"] * 8, 0.6),  # otherwise it becomes a space
    ("1000", ["1,000"] * 4 + ["many"] * 6, 1.0),  # a digit,digit group deletes every mark
    ("3.5", ["3.5", "3.50"] + ["4"] * 8, 0.3),  # a period before a digit stays
    ("dog", ["the dog."] * 2 + ["cat"] * 8, 0.6),  # articles and final periods go
    ("apple", ["an apple"] * 2 + ["a pear"] * 8, 0.6),  # "an" is an article too
    ("red apple", ["a red apple", "the red apple", "an red apple"] + ["pear"] * 7, 0.9),  # all three articles
    ("don't know", ["dont know"] * 3 + ["no"] * 7, 0.9),  # contractions are restored
    ("none", ["0"] * 2 + ["1"] * 8, 0.6),  # "none" is the digit 0
]


@pytest.mark.parametrize("pred,humans,expected", QUIRKS)
def test_each_quirk_of_the_tool(pred: str, humans: list[str], expected: float):
    records = _records(*humans)
    assert TOOL.question(pred, records) == pytest.approx(expected)
    assert vqa_official_accuracy(pred, records) == pytest.approx(expected)
    assert vqa_official_accuracy(pred, humans) == pytest.approx(expected)  # bare strings: one record each


def test_records_are_left_out_by_equality_as_the_tool_does():
    # Without distinct answer_id, every record equal to the left-out one is left out with it.
    assert vqa_official_accuracy("yes", _records(*["yes"] * 10, ids=False)) == 0.0
    assert TOOL.question("yes", _records(*["yes"] * 10, ids=False)) == 0.0
    mixed = _records(*["yes"] * 4 + ["no"] * 6, ids=False)
    # "yes" records see no other "yes" (0 each); "no" records see the 4 "yes" (1 each): 6 / 10
    assert vqa_official_accuracy("yes", mixed) == TOOL.question("yes", mixed) == pytest.approx(0.6)
    assert vqa_official_accuracy("yes", _records(*["yes"] * 4 + ["no"] * 6)) == pytest.approx(1.0)


def test_python2_details():
    assert normalize_vqa_answer("\uff11,\uff12") == "\uff11 \uff12"  # \d is ASCII only: no digit,digit group
    assert normalize_vqa_answer("." * 40) == "." * 8  # re.UNICODE passed as the count: 32 periods at most
    assert normalize_vqa_answer("\u0130t") == "it"  # simple lower case mapping
    assert py2_round(50.125) == 50.13 and round(50.125, 2) == 50.12  # exact half: away from zero
    assert py2_round(2.675) == 2.67  # 2.675 is below the half in binary
    assert py2_round(66.666666) == 66.67 and py2_round(0.0) == 0.0


def _random_answer(rng: random.Random) -> str:
    pool = ["yes", "Yes", "no", "2", "two", "Two.", "the dog", "dog", "t-shirt", "t shirt", "1,000", "1000",
            "3.5", "dont know", "don't know", "left - right", "red!", "red", "none", "0", "a cat", "  cat\t",
            "(blue)", "blue", "10", "ten", "whats up", "what's up", "3.", "3", "\u0130stanbul", "istanbul"]
    return rng.choice(pool)


def _official_files(tmp_path: Path, n: int, seed: int = 0) -> tuple[Path, Path, Path, list[dict], dict]:
    """Annotation, question and result files in the official formats, with tie-prone agreement patterns."""
    rng = random.Random(seed)
    anns, questions, results = [], [], []
    for i in range(n):
        qid = 1000 * i + 7
        pattern = rng.random()
        if pattern < 0.3:
            humans = [_random_answer(rng)] * 10
        else:
            humans = [_random_answer(rng) for _ in range(10)]
        atype = rng.choice(["yes/no", "number", "other"])
        anns.append({"question_id": qid, "image_id": i, "question_type": rng.choice(["what is", "how many", "is the"]),
                     "answer_type": atype, "multiple_choice_answer": humans[0], "answers": _records(*humans)})
        questions.append({"question_id": qid, "image_id": i, "question": f"question {i}?"})
        answer = rng.choice(humans) if rng.random() < 0.7 else _random_answer(rng)
        results.append({"question_id": qid, "answer": answer})
    rng.shuffle(results)
    ann_file, q_file, r_file = tmp_path / "anns.json", tmp_path / "questions.json", tmp_path / "results.json"
    ann_file.write_text(json.dumps({"info": {}, "license": {}, "data_subtype": "val2014", "annotations": anns}))
    q_file.write_text(json.dumps({"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {},
                                  "data_subtype": "val2014", "questions": questions}))
    r_file.write_text(json.dumps(results))
    return ann_file, q_file, r_file, anns, {r["question_id"]: r["answer"] for r in results}


def test_command_gives_the_tools_numbers_on_official_files(tmp_path: Path, capsys: pytest.CaptureFixture):
    ann_file, q_file, r_file, anns, preds = _official_files(tmp_path, 600)
    assert main(["--annotations", str(ann_file), "--questions", str(q_file), "--predictions", str(r_file)]) == 0
    got = json.loads((tmp_path / "results_vqa_eval.json").read_text())
    assert got == TOOL.accuracy(anns, preds)
    printed = capsys.readouterr().out
    assert f"Overall Accuracy is: {got['overall']:.02f}" in printed and "Per Answer Type Accuracy" in printed
    # A subset (like minival within val2014), scored in the order given.
    subset = [a["question_id"] for a in anns[::3]]
    (tmp_path / "minival.json").write_text(json.dumps([{"question_id": q, "sent": "?"} for q in subset]))
    out = tmp_path / "sub.json"
    assert main(["--annotations", str(ann_file), "--questions", str(q_file), "--predictions", str(r_file),
                 "--question-ids", str(tmp_path / "minival.json"), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == TOOL.accuracy(anns[::3], preds)


def test_rounding_of_an_exact_half(tmp_path: Path):
    anns = [{"question_id": i, "question_type": "what", "answer_type": "other",
             "answers": _records(*["a"] * 10)} for i in range(800)]
    preds = {i: "a" if i < 401 else "b" for i in range(800)}
    assert evaluate(anns, preds)["overall"] == TOOL.accuracy(anns, preds)["overall"] == 50.13


def test_unknown_and_missing_question_ids_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture):
    ann_file, q_file, r_file, anns, preds = _official_files(tmp_path, 20)
    rows = json.loads(r_file.read_text())
    args = ["--annotations", str(ann_file), "--questions", str(q_file), "--predictions", str(r_file)]
    r_file.write_text(json.dumps(rows + [{"question_id": 5, "answer": "x"}]))
    assert main(args) == 1
    assert "1 predicted question ids are not in the annotations (first: 5)" in capsys.readouterr().err
    r_file.write_text(json.dumps(rows[1:]))
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"1 of 20 questions have no prediction (first: {rows[0]['question_id']})" in err
    assert "--question-ids" in err
    assert main([*args, "--only-predicted"]) == 0
    r_file.write_text(json.dumps(rows + rows[:1]))
    assert main(args) == 1 and "predicted twice" in capsys.readouterr().err
    r_file.write_text(json.dumps([{"question_id": str(rows[0]["question_id"]), "answer": "x"}]))
    assert main(args) == 1 and "expected an integer" in capsys.readouterr().err
    with pytest.raises(VQAEvalError, match="no prediction"):
        evaluate(anns, {})


def test_help():
    proc = subprocess.run([sys.executable, "-m", "tasks.vqa_eval", "--help"], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode == 0 and "--annotations" in proc.stdout and "--question-ids" in proc.stdout
