"""Multiple-choice questions on the real TMMLU copy: every row read (four-option questions kept,
five-option and essay questions counted), the options split out of the question text, the same
questions through the question,A,B,C,D,answer layout (with and without a header), a seeded
per-subject 70/25/5 split, JSON round trip, features (B, C, T), one-line errors; and the Chinese
tokenizer path (CJK split, no lower-casing of CJK) equal to HF's on every TMMLU question."""

import csv
import glob
import os

import numpy as np
import pytest

from mindtransformer.data import multiple_choice as mc
from mindtransformer.data.batches import pad_batch
from mindtransformer.errors import UserInputError
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def tmmlu():
    return shared_file("tmmlu")


@pytest.fixture(scope="module")
def tmmlu_questions(tmmlu):
    return mc.read_subjects(tmmlu)


def test_every_tmmlu_row_is_read(tmmlu, tmmlu_questions):
    rows = 0
    for path in glob.glob(os.path.join(tmmlu, "subjects", "*", "data.csv")):
        with open(path, encoding="utf-8", newline="") as f:
            rows += sum(1 for row in list(csv.reader(f))[1:] if any(cell.strip() for cell in row))
    data = tmmlu_questions
    assert rows == 3313  # the 50 files' data rows (one file ends with a blank line)
    assert len(data.questions) + sum(data.skipped.values()) == rows
    assert len(data.questions) == 3239
    assert data.skipped == {"5 options": 21, "no options in the text (an essay question)": 53}
    # 50 subjects; 分科測驗物理's seven questions all have five options
    assert len({q.subject for q in data.questions}) == 49
    assert "分科測驗物理" not in {q.subject for q in data.questions}
    for q in data.questions:
        assert len(q.options) == 4 and all(o.strip() for o in q.options), q.source
        assert 0 <= q.answer < 4 and q.question.strip(), q.source
        assert "(A)" not in q.question[-5:], q.source
    # the five-option questions are the ones read with --num_choices=5
    assert len(mc.read_subjects(tmmlu, num_choices=5).questions) == 21


def test_options_are_split_from_the_end(tmmlu_questions):
    by_source = {q.source.rsplit("subjects/", 1)[-1]: q for q in tmmlu_questions.questions}
    first = by_source["中式麵食加工/data.csv:2"]
    assert first.question.endswith("下列產品中何者使用非發酵麵皮")
    assert first.options == ("肉末燒餅", "糖鼓燒餅", "蔥脂燒餅", "香酥燒餅") and first.answer == 3
    coli = by_source["中式麵食加工/data.csv:26"]  # "(E) coli" inside option B stays text
    assert coli.options[1] == "「大腸桿菌((E) coli)」：1,000 MPN/g 以下" and coli.answer == 3


def write_mmlu_csv(path, questions, header=True):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(["question", "A", "B", "C", "D", "answer"])
        for q in questions:
            w.writerow([q.question, *q.options, "ABCD"[q.answer]])


@pytest.mark.parametrize("header", [True, False])
def test_question_abcd_answer_layout(tmp_path, tmmlu_questions, header):
    real = [q for q in tmmlu_questions.questions if q.subject == "普通物理"]
    path = tmp_path / "普通物理.csv"
    write_mmlu_csv(path, real, header)
    read = mc.read_subjects(str(tmp_path)).questions
    assert [(q.question, q.options, q.answer, q.subject) for q in read] == \
        [(q.question, q.options, q.answer, q.subject) for q in real]


def test_split_is_seeded_per_subject(tmmlu_questions):
    questions = tmmlu_questions.questions
    parts = mc.split(questions, seed=0)
    assert sum(len(p) for p in parts.values()) == len(questions)
    seen = [q.source for p in parts.values() for q in p]
    assert len(set(seen)) == len(questions)
    for subject in {q.subject for q in questions}:
        n = sum(q.subject == subject for q in questions)
        counts = {name: sum(q.subject == subject for q in part) for name, part in parts.items()}
        assert counts["validation"] == round(0.25 * n) and counts["test"] == round(0.05 * n), subject
    assert [q.source for q in mc.split(questions, seed=0)["test"]] == [q.source for q in parts["test"]]
    assert [q.source for q in mc.split(questions, seed=1)["test"]] != [q.source for q in parts["test"]]
    assert len(parts["test"]) == 164 and len(parts["validation"]) == 812


def test_json_round_trip(tmp_path, tmmlu_questions):
    questions = tmmlu_questions.questions[:50]
    path = str(tmp_path / "test_questions.json")
    mc.write_json(questions, path)
    back = mc.read_json(path)
    assert [(q.subject, q.question, q.options, q.answer) for q in back] == \
        [(q.subject, q.question, q.options, q.answer) for q in questions]


def test_features_are_question_option_pairs(minilm_path, tmmlu_questions):
    from mindtransformer.data.tokenization import load_tokenizer

    tok = load_tokenizer(minilm_path)
    questions = tmmlu_questions.questions[:6]
    features = mc.featurize(tok, questions, 64)
    assert len(features) == 6 and all(len(w) == 4 for w in features.input_ids)
    ids = features.input_ids[0][2]
    segments = features.segment_ids[0][2]
    option = tok.convert_tokens_to_ids(tok.tokenize(questions[0].options[2]))
    first_sep = list(ids).index(tok.sep_token_id)
    assert ids[0] == tok.cls_token_id and list(ids[first_sep + 1:-1]) == option and ids[-1] == tok.sep_token_id
    assert set(segments[:first_sep + 1]) == {0} and set(segments[first_sep + 1:]) == {1}
    batch = pad_batch(features, [0, 3, 5])
    assert batch["input_ids"].shape[:2] == (3, 4) and batch["input_ids"].shape == batch["attention_mask"].shape
    assert list(batch["labels"]) == [questions[i].answer for i in (0, 3, 5)]
    assert batch["attention_mask"][1, 2].sum() == len(features.input_ids[3][2])


def test_malformed_files_are_one_line_errors(tmp_path, tmmlu):
    bad = tmp_path / "bad.csv"
    bad.write_text("question,A,B,C,D,answer\nWhat?,1,2,3,4,F\n", encoding="utf-8")
    with pytest.raises(UserInputError, match=r"bad.csv:2: answer 'F' is not one of A/B/C/D"):
        mc.read_csv(str(bad), "bad")
    bad.write_text("question,A,B,C,answer\nWhat?,1,2,3,A\n", encoding="utf-8")
    with pytest.raises(UserInputError, match="has no option column D"):
        mc.read_csv(str(bad), "bad")
    bad.write_text("question,A,B,C,D,answer\nWhat?,1,2\n", encoding="utf-8")
    with pytest.raises(UserInputError, match=r"bad.csv:2: 3 columns, expected 6"):
        mc.read_csv(str(bad), "bad")
    with pytest.raises(UserInputError, match="nope: no such file or folder"):
        mc.read_subjects(str(tmp_path / "nope"))
    with pytest.raises(UserInputError, match="no such file; pass questions JSON"):
        mc.read_json(str(tmp_path / "test_questions.json"))
    with pytest.raises(UserInputError, match="no subject '普通物埋'.*did you mean '普通物理'"):
        mc.read_subjects(tmmlu, "普通物埋")


def chinese_vocab(path, texts) -> str:
    """A character vocabulary (bert-base-chinese's kind) from real text: specials, every
    character seen (lower-cased), and one Latin word."""
    chars = sorted({c for t in texts for c in t.lower() if not c.isspace()})
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "dna", *chars]) + "\n", encoding="utf-8")
    return str(path)


def test_chinese_tokenizer_matches_hf_on_tmmlu(tmp_path, tmmlu_questions, waimai_reviews):
    from transformers import BertTokenizerFast

    from mindtransformer.data.tokenization import load_tokenizer

    traditional = [q.question + "".join(q.options) for q in tmmlu_questions.questions]
    simplified = waimai_reviews[:2000]
    vocab = chinese_vocab(tmp_path / "vocab.txt", traditional + simplified)
    ours = load_tokenizer(vocab)
    hf = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    for text in traditional + simplified:
        assert ours.tokenize(text) == hf.tokenize(text)
    # Every CJK character is a word of its own, traditional and simplified alike, untouched by
    # lower-casing and accent stripping; Latin is lower-cased.
    assert ours.tokenize("今天天氣很好") == list("今天天氣很好")
    assert ours.tokenize("今天天气很好") == list("今天天气很好")
    assert ours.tokenize("DNA複製") == ["dna", "複", "製"]


def test_accuracy_by_subject():
    out = mc.accuracy_by_subject(["a", "a", "b", "b", "b"], np.array([0, 1, 2, 2, 0]), np.array([0, 0, 2, 2, 2]))
    assert out == {"overall": 3 / 5, "a": 0.5, "b": 2 / 3}
