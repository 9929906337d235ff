"""SQuAD metrics: the official scripts' normalisation and scoring on hand-checked cases and on the
real SQuAD v1.1 dev set and CMRC 2018 trial set."""

import json

import pytest

from mindtransformer.data import squad_metrics as sm
from tests.conftest import shared_file


def test_normalisation_and_token_f1_by_hand():
    assert sm.normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert sm.normalize_answer("an apple, a pear") == "apple pear"
    assert sm.exact_match("Denver Broncos", "the denver broncos.") == 1.0
    # prediction "denver broncos team" vs gold "broncos": precision 1/3, recall 1 -> F1 0.5
    assert sm.f1("Denver Broncos team", "Broncos") == pytest.approx(0.5)
    assert sm.f1("Santa Clara", "Levi's Stadium") == 0.0
    # an answer that normalises to nothing: v1.1 scores 0, v2.0 scores agreement
    assert sm.f1("the", "a") == 0.0 and sm.f1("the", "a", empty_agrees=True) == 1.0


def test_v1_on_the_real_dev_set():
    with open(shared_file("squad_v1.1", "dev-v1.1.json"), encoding="utf-8") as f:
        data = json.load(f)["data"]
    qas = list(sm.questions(data))
    assert len(qas) == 10570
    perfect = sm.evaluate_v1(data, {qa["id"]: qa["answers"][0]["text"] for qa in qas})
    assert perfect["exact_match"] == 100.0 and perfect["f1"] == 100.0 and not perfect["missing"]
    # Every other question unanswered: each missing one counts 0 and is listed.
    half = sm.evaluate_v1(data, {qa["id"]: qa["answers"][0]["text"] for qa in qas[::2]})
    assert half["exact_match"] == pytest.approx(100.0 * 5285 / 10570) and len(half["missing"]) == 5285
    # The first answer padded with words from the question: exact 0 there, F1 strictly between.
    noisy = sm.evaluate_v1(data[:1], {qa["id"]: qa["answers"][0]["text"] + " according to " + qa["question"]
                                      for qa in sm.questions(data[:1])})
    assert noisy["exact_match"] < 5 and 0 < noisy["f1"] < 60


def test_v2_counts_unanswerable_questions_apart():
    data = [{"paragraphs": [{"qas": [
        {"id": "a", "answers": [{"text": "Denver Broncos"}]},
        {"id": "b", "answers": []},
        {"id": "c", "answers": []}]}]}]
    result = sm.evaluate_v2(data, {"a": "Broncos", "b": "", "c": "Denver"})
    assert result["HasAns_total"] == 1 and result["NoAns_total"] == 2
    assert result["HasAns_exact"] == 0.0 and result["HasAns_f1"] == pytest.approx(100 * 2 / 3)
    assert result["NoAns_exact"] == 50.0 and result["exact"] == pytest.approx(100 / 3)


def test_cmrc_character_level_scores():
    assert sm.cmrc_segments("《红楼梦》作者曹雪芹 born 1715年") == ["《", "红", "楼", "梦", "》", "作", "者", "曹", "雪", "芹",
                                                           "born", "1715", "年"]
    assert sm.cmrc_exact("曹雪芹。", "曹雪芹") == 1.0
    # gold 曹雪芹 (3 chars), prediction 作者曹雪芹 (5): LCS 3 -> precision 3/5, recall 1 -> F1 0.75
    assert sm.cmrc_f1("作者曹雪芹", "曹雪芹") == pytest.approx(0.75)
    with open(shared_file("cmrc2018", "cmrc2018_trial.json"), encoding="utf-8") as f:
        data = json.load(f)["data"]
    qas = list(sm.questions(data))
    result = sm.evaluate_cmrc(data, {qa["id"]: qa["answers"][0]["text"] for qa in qas})
    assert result["total"] == 1002 and result["exact_match"] == 100.0 and result["f1"] == 100.0


# ---- the official v1.1 formula, written here from evaluate-v1.1.py's published definition ----

def _official_normalize(s):
    import re
    import string

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _official_f1(prediction, ground_truth):
    from collections import Counter

    prediction_tokens = _official_normalize(prediction).split()
    ground_truth_tokens = _official_normalize(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def _official_evaluate(dataset, predictions):
    f1_total = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue  # the official script prints a message and scores 0
                ground_truths = [x["text"] for x in qa["answers"]]
                prediction = predictions[qa["id"]]
                exact_match += max(_official_normalize(prediction) == _official_normalize(g) for g in ground_truths)
                f1_total += max(_official_f1(prediction, g) for g in ground_truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1_total / total}


def _prediction_files(data):
    """name -> {id: text}: gold answers, empty answers, and a deterministic mix (right, partial,
    wrong, missing, and the right answer with other case and punctuation)."""
    qas = list(sm.questions(data))
    mix = {}
    for i, qa in enumerate(qas):
        gold = qa["answers"][-1]["text"]
        kind = i % 5
        if kind == 0:
            mix[qa["id"]] = gold
        elif kind == 1:  # partial: the gold's first word plus words from the question
            mix[qa["id"]] = gold.split()[0] + " " + " ".join(qa["question"].split()[:3])
        elif kind == 2:  # wrong: another question's answer
            mix[qa["id"]] = qas[(i * 7 + 3) % len(qas)]["answers"][0]["text"]
        elif kind == 4:
            mix[qa["id"]] = "The " + gold.upper() + "!"
        # kind 3: missing
    return {"gold": {qa["id"]: qa["answers"][0]["text"] for qa in qas}, "empty": {qa["id"]: "" for qa in qas},
            "mix": mix}


def test_v1_equals_the_official_formula_on_the_real_dev_set(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    path = shared_file("squad_v1.1", "dev-v1.1.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)["data"]
    files = _prediction_files(data)
    for name, predictions in files.items():
        ours, official = sm.evaluate_v1(data, predictions), _official_evaluate(data, predictions)
        assert abs(ours["exact_match"] - official["exact_match"]) < 1e-9, name
        assert abs(ours["f1"] - official["f1"]) < 1e-9, name
        if name == "gold":
            assert official == {"exact_match": 100.0, "f1": 100.0}
        if name == "empty":  # three gold answers normalise to nothing (e.g. "the"), so "" matches them exactly
            assert official == {"exact_match": 100.0 * 3 / 10570, "f1": 0.0}
        if name == "mix":
            assert 30 < official["exact_match"] < 60 and official["exact_match"] < official["f1"] < 70
            assert len(ours["missing"]) == 2114  # every fifth question of 10,570
    # The entry point scores a predictions file the same way: one JSON object on the last line, exit 0.
    predictions_file = tmp_path / "predictions.json"
    predictions_file.write_text(json.dumps(files["mix"]), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "mindtransformer.tasks.question_answering", f"--eval_data_path={path}",
                           f"--predictions_file={predictions_file}"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    official = _official_evaluate(data, files["mix"])
    assert abs(printed["exact_match"] - official["exact_match"]) < 1e-9 and abs(printed["f1"] - official["f1"]) < 1e-9
    assert "2114 questions have no prediction" in done.stderr
