"""SQuAD features on the real SQuAD v1.1 dev set and the CMRC 2018 trial set: windows equal HF's
(overlap semantics) token for token, google's step semantics, the max-context rule, answer spans,
and Chinese data whose answer offsets are wrong."""

import json
import unicodedata

import numpy as np
import pytest

from mindtransformer.data import squad
from mindtransformer.data.squad_metrics import normalize_answer
from mindtransformer.data.tokenization import load_tokenizer
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def dev():
    return squad.read_examples(shared_file("squad_v1.1", "dev-v1.1.json"), is_training=True)


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    return load_tokenizer(minilm_path)


def test_every_dev_question_is_read_and_chinese_offsets_are_checked(dev):
    assert len(dev.examples) == 10570 and dev.skipped == []
    cmrc = squad.read_examples(shared_file("cmrc2018", "cmrc2018_trial.json"), is_training=True)
    # The trial set's five questions on one paragraph whose answer_start does not point at the answer.
    assert len(cmrc.examples) == 997 and cmrc.skipped == [f"TRIAL_210_QUERY_{i}" for i in range(5)]
    text = "《红楼梦》作者 Cao Xueqin 生于1715年"
    words, word_of_char, spans = squad.split_words(text)
    assert words[:3] == ["《", "红", "楼"] and "Cao" in words and "1715" in words
    assert [text[a:b + 1] for a, b in spans] == words and word_of_char[text.index("Xueqin")] == words.index("Xueqin")
    evaluated = squad.read_examples(shared_file("cmrc2018", "cmrc2018_trial.json"), is_training=False)
    assert len(evaluated.examples) == 1002  # every question is still evaluated


@pytest.mark.parametrize("max_seq_length, stride", [(384, 128), (128, 32)])
def test_overlap_windows_equal_hf_token_for_token(dev, tokenizer, minilm_path, max_seq_length, stride):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(minilm_path)
    examples = dev.examples[:300]
    ours = squad.featurize(tokenizer, examples, max_seq_length, stride, max_query_length=64,
                           doc_stride_semantics="overlap")
    contexts = [" ".join(e.doc_words) for e in examples]
    theirs = hf([e.question for e in examples], contexts, truncation="only_second", max_length=max_seq_length,
                stride=stride, return_overflowing_tokens=True)
    assert len(ours) == len(theirs["input_ids"]) > len(examples)
    for feature, ids, types in zip(ours, theirs["input_ids"], theirs["token_type_ids"]):
        assert feature.input_ids == ids and feature.segment_ids == types


def test_step_semantics_and_the_max_context_rule(dev, tokenizer):
    example = max(dev.examples[:500], key=lambda e: len(e.doc_words))
    query = len(tokenizer.tokenize(example.question))
    step = squad.featurize(tokenizer, [example], 128, 32, doc_stride_semantics="step")
    overlap = squad.featurize(tokenizer, [example], 128, 32, doc_stride_semantics="overlap")
    room = 128 - query - 3
    assert len(step) > len(overlap) > 2
    # google: each window starts doc_stride paragraph tokens after the previous; HF: room - doc_stride.
    assert np.diff([f.window_start for f in step]).tolist() == [32] * (len(step) - 1)
    assert np.diff([f.window_start for f in overlap]).tolist() == [room - 32] * (len(overlap) - 1)
    for features in (step, overlap):
        owners = {}  # paragraph token -> windows where it has its maximum context
        for f in features:
            for position, is_max in f.token_is_max_context.items():
                if is_max:
                    token = f.window_start + position - (query + 2)
                    owners[token] = owners.get(token, 0) + 1
        assert sorted(owners) == list(range(len(owners))) and set(owners.values()) == {1}


def test_training_spans_hold_the_answer(dev, tokenizer):
    features = squad.featurize(tokenizer, dev.examples[:2000], is_training=True)
    spans = [f for f in features if f.start_position]
    assert len(spans) >= 2000  # every question's answer lies in at least one window
    def plain(text):  # the uncased vocabulary strips accents; spaces around punctuation differ after decode
        text = unicodedata.normalize("NFD", normalize_answer(text))
        return "".join(ch for ch in text if unicodedata.category(ch) != "Mn").replace(" ", "")

    exact = 0
    for f in spans:
        exact += plain(tokenizer.decode(f.input_ids[f.start_position:f.end_position + 1])) == \
            plain(dev.examples[f.example_index].answer_text)
        assert f.segment_ids[f.start_position] == 1 and f.start_position <= f.end_position
    # The rest are answers inside a word ("gold" in "golden", "5" in "50"): google's span is the word.
    assert exact / len(spans) > 0.99


def test_final_text_keeps_the_paragraphs_case_and_punctuation(tokenizer):
    from mindtransformer.data.squad_answers import final_text

    assert final_text("steve smith", "Steve Smith's", tokenizer) == "Steve Smith"
    assert final_text("beyonce", "Beyoncé,", tokenizer) == "Beyoncé"
    assert final_text("1715", "(1715–1763)", tokenizer) == "1715"
    assert final_text("not there", "Denver Broncos", tokenizer) == "Denver Broncos"


def test_oracle_logits_give_the_gold_answers_through_post_processing(dev, tokenizer):
    """Logits peaked at each feature's gold span: the post-processing must recover the answers
    (exact match only misses answers that are part of a word, such as "gold" in "golden")."""
    from mindtransformer.data import squad_answers, squad_metrics

    examples = dev.examples[:1500]
    features = squad.featurize(tokenizer, examples, 384, 128, is_training=True)
    starts, ends = [], []
    for f in features:
        s, e = np.zeros(len(f.input_ids)), np.zeros(len(f.input_ids))
        s[f.start_position] += 10.0
        e[f.end_position] += 10.0
        starts.append(s)
        ends.append(e)
    predictions, nbest, _ = squad_answers.answers(examples, features, starts, ends, tokenizer)
    assert set(predictions) == {e.qas_id for e in examples}
    assert all(len(v) <= 20 and abs(sum(n["probability"] for n in v) - 1) < 1e-6 for v in nbest.values())
    asked = {e.qas_id for e in examples}
    data = [{"paragraphs": [{"qas": [q for q in squad_metrics.questions(json_data()) if q["id"] in asked]}]}]
    scores = squad_metrics.evaluate_v1(data, predictions)
    assert scores["total"] == 1500 and scores["exact_match"] > 97 and scores["f1"] > 98.5


def json_data():
    import json

    with open(shared_file("squad_v1.1", "dev-v1.1.json"), encoding="utf-8") as f:
        return json.load(f)["data"]


def test_the_real_dev_set_has_a_stable_number_of_windows(dev, tokenizer):
    """10,570 questions at 384/128/64: 10,833 windows with google's step semantics (183 questions
    in several windows, at most 5), 10,784 with HF's overlap semantics; every question has one."""
    step = squad.featurize(tokenizer, dev.examples, 384, 128, 64, doc_stride_semantics="step")
    overlap = squad.featurize(tokenizer, dev.examples, 384, 128, 64, doc_stride_semantics="overlap")
    assert len(dev.examples) == 10570 and len(step) == 10833 and len(overlap) == 10784
    per_question = np.bincount([f.example_index for f in step], minlength=len(dev.examples))
    assert per_question.min() == 1 and per_question.max() == 5 and int((per_question > 1).sum()) == 183


@pytest.mark.parametrize("output_format", ["tfrecord", "mindrecord"])
def test_records_and_maps_give_back_the_same_windows(dev, tokenizer, tmp_path, output_format):
    from mindtransformer.data import squad_records

    examples = dev.examples[:300]
    features = squad.featurize(tokenizer, examples, 384, 128, 64)
    path = str(tmp_path / f"dev.{output_format}")
    squad_records.write_records(features, path, output_format, 384, {"split": "dev"}, examples=examples)
    back_examples, back = squad_records.read_eval(path)
    assert [e.qas_id for e in back_examples] == [e.qas_id for e in examples]
    assert [e.doc_words for e in back_examples] == [e.doc_words for e in examples]
    assert len(back) == len(features)
    for a, b in zip(back, features):
        assert (a.example_index, a.window, a.window_start, a.input_ids, a.segment_ids) == \
            (b.example_index, b.window, b.window_start, b.input_ids, b.segment_ids)
        assert a.token_to_word == b.token_to_word and a.token_is_max_context == b.token_is_max_context
    training = squad.featurize(tokenizer, squad.read_examples(shared_file("squad_v1.1", "dev-v1.1.json"), True)
                               .examples[:200], 384, 128, 64, is_training=True)
    squad_records.write_records(training, str(tmp_path / f"train.{output_format}"), output_format, 384, {})
    spans = squad_records.read_train([str(tmp_path / f"train.{output_format}")])
    assert spans.input_ids == [f.input_ids for f in training]
    assert spans.start_positions.tolist() == [f.start_position for f in training]
    assert spans.end_positions.tolist() == [f.end_position for f in training]


def test_malformed_squad_files_are_one_line_errors(tmp_path):
    from mindtransformer.errors import UserInputError

    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [', encoding="utf-8")
    with pytest.raises(UserInputError, match="not a SQuAD-format JSON file"):
        squad.read_examples(str(broken), False)
    cases = [({"data": [{"paragraphs": [{"qas": []}]}]}, r"data\[0\].paragraphs\[0\] has no 'context' field"),
             ({"data": [{"title": "x"}]}, r"data\[0\] has no 'paragraphs' field"),
             ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1"}]}]}]},
              r"data\[0\].paragraphs\[0\].qas\[0\] has no 'question' field"),
             ({"data": [{"paragraphs": [{"context": 5, "qas": []}]}]}, r"context is a int")]
    for content, message in cases:
        path = tmp_path / "case.json"
        path.write_text(json.dumps(content), encoding="utf-8")
        with pytest.raises(UserInputError, match=message) as raised:
            squad.read_examples(str(path), False)
        assert "\n" not in str(raised.value)


def _oracle_logits(features, null=()):
    """Logits peaked at each window's gold span, or at [CLS] for the examples in `null`."""
    starts, ends = [], []
    for f in features:
        s, e = np.zeros(len(f.input_ids)), np.zeros(len(f.input_ids))
        at_null = f.example_index in null
        s[0 if at_null else f.start_position] += 10.0
        e[0 if at_null else f.end_position] += 10.0
        starts.append(s)
        ends.append(e)
    return starts, ends


def test_version_2_predicts_no_answer_where_the_null_score_wins(dev, tokenizer):
    from mindtransformer.data import squad_answers, squad_metrics

    examples = dev.examples[:400]
    impossible = set(range(1, 400, 3))  # every third question treated as unanswerable
    features = squad.featurize(tokenizer, examples, 384, 128, is_training=True)
    starts, ends = _oracle_logits(features, impossible)
    predictions, nbest, null_diff = squad_answers.answers(examples, features, starts, ends, tokenizer,
                                                          version_2_with_negative=True)
    for i, e in enumerate(examples):
        if i in impossible:
            assert predictions[e.qas_id] == "" and null_diff[e.qas_id] > 0
        else:
            assert null_diff[e.qas_id] < 0
        assert any(n["text"] == "" for n in nbest[e.qas_id])  # the null answer is always listed in v2
    gold = [{"paragraphs": [{"qas": [{"id": e.qas_id, "answers": [] if i in impossible else e.answers}
                                     for i, e in enumerate(examples)]}]}]
    scores = squad_metrics.evaluate_v2(gold, predictions)
    assert scores["NoAns_total"] == len(impossible) and scores["NoAns_exact"] == 100.0
    assert scores["HasAns_exact"] > 97
    # A threshold above every difference answers everything.
    everything, _, _ = squad_answers.answers(examples, features, starts, ends, tokenizer, version_2_with_negative=True,
                                             null_score_diff_threshold=1e9)
    assert all(everything[e.qas_id] for i, e in enumerate(examples) if i not in impossible)


def test_chinese_cmrc_answers_come_back_through_windows_and_post_processing(tokenizer):
    """CMRC 2018 trial: every CJK character a word; oracle logits give the gold text back (CMRC
    metric), also for answers inside long paragraphs split into several windows. (Chinese answers
    are long: max_answer_length 30 would cut 5 % of them; MiniLM's English vocabulary maps many
    characters to [UNK], where google's final-text matching falls back to whole words.)"""
    from mindtransformer.data import squad_answers, squad_metrics

    path = shared_file("cmrc2018", "cmrc2018_trial.json")
    read = squad.read_examples(path, is_training=True)
    features = squad.featurize(tokenizer, read.examples, 384, 128, is_training=True)
    assert len(features) > len(read.examples)  # long Chinese paragraphs take several windows
    starts, ends = _oracle_logits(features)
    predictions, _, _ = squad_answers.answers(read.examples, features, starts, ends, tokenizer, max_answer_length=256)
    data = json.loads(open(path, encoding="utf-8").read())["data"]
    assert squad_metrics.metric_for([e.context for e in read.examples], False) == "cmrc"
    scores = squad_metrics.evaluate_cmrc(data, predictions)
    # the 5 questions with a wrong answer_start were not windowed for training, so they miss here
    assert scores["total"] == 1002 and len(scores["missing"]) == 5
    assert scores["exact_match"] > 95 and scores["f1"] > 97, scores
