"""SQuAD scores exactly as the official scripts compute them.

- v1.1 (`evaluate-v1.1.py`): answers normalised (lower-case, punctuation removed, articles
  a/an/the removed, whitespace collapsed); exact match and token F1 (bag-of-tokens overlap), each
  the maximum over the gold answers, averaged over every question of the dataset, x100. A
  question without a prediction scores 0 and is reported.
- v2.0 (`evaluate-v2.0.py`): the same normalisation; an unanswerable question's gold is "", so
  the empty prediction scores 1; totals also split into HasAns and NoAns.
- CMRC 2018 (`cmrc2018_evaluate.py`), for Chinese: text lower-cased and segmented into CJK
  characters and runs of other text; F1 from the longest common substring of the segments,
  EM on the text with punctuation removed. The official script splits the non-CJK runs with
  NLTK's word tokenizer (which needs downloaded data); here a run is split into words and
  single punctuation marks (`\\w+|[^\\w\\s]`), which agrees with NLTK on plain words and numbers.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Dict, Iterable, List

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop articles, collapse whitespace (the official order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str, empty_agrees: bool = False) -> float:
    """Token F1. v1.1 scores an empty side 0; v2.0 (empty_agrees) scores 1 when both are empty."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if empty_agrees and (not predicted or not expected):
        return float(predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def questions(dataset: Iterable[dict]) -> Iterable[dict]:
    """Every question (`qas` entry) of a SQuAD-format `data` list, in file order."""
    for article in dataset:
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]


def _max_over_golds(dataset: List[dict], predictions: Dict[str, str], exact, overlap) -> tuple:
    """(mean exact x100, mean overlap x100, questions, ids without a prediction): each question
    scores the maximum over its gold answers, a missing prediction scores 0."""
    total, em, f1_sum, missing = 0, 0.0, 0.0, []
    for qa in questions(dataset):
        total += 1
        if qa["id"] not in predictions:
            missing.append(qa["id"])
            continue
        golds = [answer["text"] for answer in qa["answers"]]
        prediction = predictions[qa["id"]]
        em += max(exact(prediction, gold) for gold in golds)
        f1_sum += max(overlap(prediction, gold) for gold in golds)
    return 100.0 * em / total, 100.0 * f1_sum / total, total, missing


def evaluate_v1(dataset: List[dict], predictions: Dict[str, str]) -> dict:
    """{"exact_match", "f1"} (x100) over every question, plus "total" and "missing" (ids without a prediction)."""
    em, f1_value, total, missing = _max_over_golds(dataset, predictions, exact_match, f1)
    return {"exact_match": em, "f1": f1_value, "total": total, "missing": missing}


def evaluate_v2(dataset: List[dict], predictions: Dict[str, str]) -> dict:
    """v2.0: unanswerable questions have gold [""]; totals overall, HasAns and NoAns (x100).
    Unlike the official script, which leaves questions without a prediction out of the totals,
    a missing prediction counts as wrong here (and is listed in "missing")."""
    scores = {"HasAns": [], "NoAns": []}
    missing = []
    for qa in questions(dataset):
        golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])] or [""]
        kind = "HasAns" if qa["answers"] else "NoAns"
        if qa["id"] not in predictions:
            missing.append(qa["id"])
            scores[kind].append((0.0, 0.0))
            continue
        prediction = predictions[qa["id"]]
        scores[kind].append((max(exact_match(prediction, g) for g in golds),
                             max(f1(prediction, g, empty_agrees=True) for g in golds)))
    every = scores["HasAns"] + scores["NoAns"]
    result = {"exact": _mean(every, 0), "f1": _mean(every, 1), "total": len(every), "missing": missing}
    for kind, values in scores.items():
        if values:
            result.update({f"{kind}_exact": _mean(values, 0), f"{kind}_f1": _mean(values, 1),
                           f"{kind}_total": len(values)})
    return result


def _mean(pairs: list, index: int) -> float:
    return 100.0 * sum(p[index] for p in pairs) / len(pairs)


# ---- CMRC 2018 (Chinese) -------------------------------------------------------------------

_CMRC_PUNCTUATION = {"-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=", "，", "。", "：", "？", "！", "“", "”",
                     "；", "’", "《", "》", "……", "·", "、", "「", "」", "（", "）", "－", "～", "『", "』"}
_CJK = re.compile(r"[\u4e00-\u9fa5]")
_WORDS = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def cmrc_segments(text: str, drop_punctuation: bool = False) -> List[str]:
    """CJK characters and the official punctuation one per segment, other runs split into words."""
    segments, run = [], ""
    for ch in str(text).lower().strip():
        if drop_punctuation and ch in _CMRC_PUNCTUATION:
            continue
        if _CJK.match(ch) or ch in _CMRC_PUNCTUATION:
            segments += _WORDS.findall(run)
            run = ""
            segments.append(ch)
        else:
            run += ch
    return segments + _WORDS.findall(run)


def _longest_common_substring(a: list, b: list) -> int:
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def cmrc_f1(prediction: str, gold: str) -> float:
    predicted, expected = cmrc_segments(prediction, True), cmrc_segments(gold, True)
    common = _longest_common_substring(expected, predicted)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def cmrc_exact(prediction: str, gold: str) -> float:
    def strip(text: str) -> str:
        return "".join(ch for ch in str(text).lower().strip() if ch not in _CMRC_PUNCTUATION)

    return float(strip(prediction) == strip(gold))


def evaluate_cmrc(dataset: List[dict], predictions: Dict[str, str]) -> dict:
    """{"exact_match", "f1", "average"} (x100) as cmrc2018_evaluate.py reports them."""
    em, f1_value, total, missing = _max_over_golds(dataset, predictions, cmrc_exact, cmrc_f1)
    return {"exact_match": em, "f1": f1_value, "average": (em + f1_value) / 2, "total": total, "missing": missing}


# ---- which metric a data set gets --------------------------------------------------------------

METRICS = ("v1.1", "v2.0", "cmrc")


def metric_for(contexts: Iterable[str], version_2_with_negative: bool) -> str:
    """v2.0 with unanswerable questions; cmrc when most of the text is CJK (CMRC 2018, DRCD); else v1.1."""
    if version_2_with_negative:
        return "v2.0"
    cjk = total = 0
    for context in contexts:
        cjk += len(_CJK.findall(context))
        total += sum(not ch.isspace() for ch in context)
    return "cmrc" if total and cjk / total > 0.5 else "v1.1"


def evaluate(dataset: List[dict], predictions: Dict[str, str], metric: str) -> dict:
    """The scores of `metric` (see METRICS); keys as the official scripts print them."""
    return {"v1.1": evaluate_v1, "v2.0": evaluate_v2, "cmrc": evaluate_cmrc}[metric](dataset, predictions)
