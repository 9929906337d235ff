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
