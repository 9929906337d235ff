"""SQuAD features on the real SQuAD v1.1 dev set and the CMRC 2018 trial set: windows equal HF's
(overlap semantics) token for token, google's step semantics, the max-context rule, answer spans,
and Chinese data whose answer offsets are wrong."""

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
    words, _ = squad.split_words("《红楼梦》作者 Cao Xueqin 生于1715年")
    assert words[:3] == ["《", "红", "楼"] and "Cao" in words and "1715" in words
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
