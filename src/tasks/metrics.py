"""Task metrics: the original's local evaluators and the official VQA accuracy.

Predictions are ``{example id: answer}`` mappings (answer strings, class names or indices);
results are fractions in [0, 1]. ``metric(name)`` returns a registered ``(predictions, labels) ->
float``; a task names the ones it reports (``FinetuneTask.metrics``), and a new metric is added with
``@register_metric("name")``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from tasks.registry import same_definition

Metric = Callable[[Mapping[Any, Any], Mapping[Any, Any]], float]
_METRICS: dict[str, Metric] = {}


def register_metric(name: str) -> Callable[[Metric], Metric]:
    """Decorator: make ``fn(predictions, labels) -> float`` available as ``metric(name)``."""

    def add(fn: Metric) -> Metric:
        if not same_definition(_METRICS.get(name, fn), fn):
            raise ValueError(f"metric {name!r} is already registered ({_METRICS[name].__module__})")
        _METRICS[name] = fn
        return fn

    return add


def metric(name: str) -> Metric:
    """The metric registered as ``name``."""
    try:
        return _METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(sorted(_METRICS))}") from None


# ---- local (original) evaluators ----------------------------------------------------------------


def check_predictions(predictions: Mapping[Any, Any], labels: Mapping[Any, Any]) -> None:
    if not predictions:
        raise ValueError("no predictions to score")
    missing = [qid for qid in predictions if qid not in labels]
    if missing:
        raise KeyError(f"{len(missing)} predicted ids have no label (first: {missing[0]!r})")


@register_metric("soft_score")
def soft_score_accuracy(predictions: Mapping[Any, str], labels: Mapping[Any, Mapping[str, float]]) -> float:
    """Mean over predicted questions of the label's score for the predicted answer (0 if absent).

    This is the original VQA/GQA evaluator. For VQA the stored scores (0.3/0.6/0.9/1.0 for 1/2/3/4+
    annotators) make it the official accuracy restricted to the answer table; GQA labels hold one
    answer with score 1, so it is exact-match accuracy.
    """
    check_predictions(predictions, labels)
    return sum(float(labels[qid].get(ans, 0.0)) for qid, ans in predictions.items()) / len(predictions)


@register_metric("exact_match")
def exact_match_accuracy(predictions: Mapping[Any, Any], labels: Mapping[Any, Any]) -> float:
    """Fraction of predicted examples whose prediction equals the label (string or integer classes)."""
    check_predictions(predictions, labels)
    return sum(pred == labels[i] for i, pred in predictions.items()) / len(predictions)


def vqa_accuracy(predictions: Mapping[int, str], labels: Mapping[int, Mapping[str, float]]) -> float:
    """The original VQA evaluator (soft scores of ``data/vqa/*.json``)."""
    return soft_score_accuracy(predictions, labels)


def gqa_accuracy(predictions: Mapping[str, str], labels: Mapping[str, Mapping[str, float]]) -> float:
    """GQA exact-match accuracy (the original evaluator; the server's evaluator is more elaborate)."""
    return soft_score_accuracy(predictions, labels)


def oracle_accuracy(labels: Mapping[Any, Mapping[str, float]], answers: Container[str] | None = None) -> float:
    """Best reachable soft-score accuracy: predicting each question's top-scored answer among ``answers``
    (the answer table; None: any answer). This is the original's "Valid Oracle", the score of the argmax
    of each target vector: a question whose answers are all outside the table scores 0."""
    if not labels:
        raise ValueError("no labels")
    total = 0.0
    for label in labels.values():
        total += max((float(v) for a, v in label.items() if answers is None or a in answers), default=0.0)
    return total / len(labels)


# ---- official VQA accuracy from the 10 human answers -------------------------------------------

_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
# A period not followed by a digit. The official pattern also carries a no-op "(?!<=\d)" group. The tool
# runs on Python 2 without re.UNICODE, where \d is [0-9] only: hence re.ASCII.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)", re.ASCII)
_ARTICLES = ("a", "an", "the")
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
# Apostrophe-less spellings -> the official evaluator's spelling (entries with capitals can never
# match because words are lowercased first; they are kept so the table is the official one).
_CONTRACTION_PAIRS = """
    aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
    couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
    hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's
    howd=how'd howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd
    itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't
    mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've
    neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at
    'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've she's=she's shouldve=should've
    shouldnt=shouldn't shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd
    somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's
    someoned=someone'd someoned've=someone'd've someone'dve=someone'd've someonell=someone'll
    someones=someone's somethingd=something'd somethingd've=something'd've
    something'dve=something'd've somethingll=something'll thats=that's thered=there'd
    thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd
    theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas
    wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll
    whatre=what're whats=what's whatve=what've whens=when's whered=where'd wheres=where's
    whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's
    whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't
    wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll
    yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've
    you'dve=you'd've youll=you'll youre=you're youve=you've
"""
_CONTRACTIONS = dict(pair.split("=") for pair in _CONTRACTION_PAIRS.split())
# Python 2's unicode.lower() uses the simple case mapping: these differ from Python 3's str.lower()
# (U+0130 lowers to "i" + combining dot in Python 3; a final capital sigma to "ς").
_PY2_LOWER = {"\u0130": "i", "\u03a3": "\u03c3"}


def py2_lower(text: str) -> str:
    """``unicode.lower()`` as the official tool's Python 2 computes it."""
    if text.isascii():
        return text.lower()
    return "".join(_PY2_LOWER.get(c) or c.lower() for c in text)


def py2_round(value: float, ndigits: int = 2) -> float:
    """Python 2's ``round``: the exact binary value rounded to ``ndigits`` decimals, halves away from zero
    (Python 3 rounds exact halves to even: round(50.125, 2) is 50.12 there, 50.13 in the tool)."""
    return float(Decimal(value).quantize(Decimal(1).scaleb(-ndigits), rounding=ROUND_HALF_UP))


def vqa_process_punctuation(text: str) -> str:
    """The tool's ``processPunctuation``: a mark is deleted if it touches a space somewhere in the input
    (or the input has a digit,digit group), else replaced by a space; then periods not followed by a
    digit are removed (at most 32 of them: the tool passes re.UNICODE as the count)."""
    out = text
    has_digit_comma = _COMMA_STRIP.search(text) is not None
    for p in _PUNCT:
        if p + " " in text or " " + p in text or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=int(re.UNICODE))


def vqa_process_digit_article(text: str) -> str:
    """The tool's ``processDigitArticle``: lowercase, split on whitespace, number words -> digits, drop
    articles, then restore contractions."""
    words = [_NUMBER_WORDS.get(w, w) for w in py2_lower(text).split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words)


def _clean_vqa_text(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_vqa_answer(answer: str) -> str:
    """The tool's full normalization (newlines/tabs, punctuation, then digits/articles/contractions).

    The tool applies it to a question's prediction and human answers only when the human answers
    (after whitespace cleaning) are not all identical; ``vqa_official_accuracy`` follows that rule.
    """
    return vqa_process_digit_article(vqa_process_punctuation(_clean_vqa_text(answer)))


def vqa_official_accuracy(prediction: str, gt_answers: Sequence[str | Mapping[str, Any]]) -> float:
    """Accuracy of one predicted answer against the human answers, as ``VQAEval.evaluate`` computes it.

    ``gt_answers`` are the annotation's answer records (``{"answer", "answer_confidence", "answer_id"}``)
    or bare strings (each then a record of its own). Both sides are cleaned of newlines/tabs and
    stripped; only if the human answers then differ are both sides normalized (so with ten identical
    human answers "Two" does not match "two"). For each human record, the others are the records not
    *equal* to it (the tool compares whole records: records without distinct ``answer_id`` leave out
    all their duplicates), and the record scores ``min(1, matches among the others / 3)``; the result is
    the mean over records.
    """
    if not gt_answers:
        raise ValueError("no human answers to score against")
    records: list[Any] = []
    for i, gt in enumerate(gt_answers):
        record = dict(gt) if isinstance(gt, Mapping) else {"answer": gt, "_position": i}
        if not isinstance(record.get("answer"), str):
            raise ValueError(f"human answer {i} is {record.get('answer')!r}, expected a string")
        record["answer"] = _clean_vqa_text(record["answer"])
        records.append(record)
    res = _clean_vqa_text(prediction)
    if len({r["answer"] for r in records}) > 1:
        for r in records:
            r["answer"] = vqa_process_digit_article(vqa_process_punctuation(r["answer"]))
        res = vqa_process_digit_article(vqa_process_punctuation(res))
    accs = []
    for r in records:
        matching = sum(1 for other in records if other != r and other["answer"] == res)
        accs.append(min(1, float(matching) / 3))
    return float(sum(accs)) / len(accs)


def vqa_official_score(
    predictions: Mapping[int, str], gt_answers: Mapping[int, Sequence[str | Mapping[str, Any]]]
) -> float:
    """Mean official accuracy (a fraction, unrounded) over predicted questions, given their human answers."""
    check_predictions(predictions, gt_answers)
    return sum(vqa_official_accuracy(ans, gt_answers[qid]) for qid, ans in predictions.items()) / len(predictions)
