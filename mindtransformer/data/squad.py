"""SQuAD-format reading comprehension: examples and windowed features, google's semantics.

Examples (`read_examples`): each paragraph is split into words on whitespace, and each CJK
character is a word of its own (Chinese SQuAD-format data: CMRC 2018, DRCD), keeping the
character -> word map for the final answer text. A training answer is mapped from its character
offset to words; an answer whose `answer_start` is -1 or does not point at its text is skipped for
training and counted (`Examples.skipped`); every question is still evaluated.

Features (`featurize`): [CLS] question [SEP] window of the paragraph [SEP]; the question is cut to
`max_query_length` tokens, the windows hold `max_seq_length - len(question) - 3` paragraph tokens.
`doc_stride_semantics="step"` (google's and MindSpore's run_squad) moves each window `doc_stride`
tokens past the start of the previous one; `"overlap"` (HF) makes consecutive windows share
`doc_stride` tokens. A token in several windows is scored only in the one where it has the most
context (google's `_check_is_max_context`). For training, the answer's token span is the words'
tokens tightened to the tokenized answer text (`_improve_answer_span`); a window without the whole
answer points at [CLS] (0, 0).

Shape legend: T max_seq_length (features are unpadded lists; records pad to T).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import List, Optional

import numpy as np

from mindtransformer.data.batches import lengths_of
from mindtransformer.errors import UserInputError

# Characters that are words of their own: CJK ideographs, and the punctuation of CJK text (CJK
# symbols, full-width forms, curly quotes), which would otherwise stick to a neighbouring run of
# Latin letters or digits ("。AGG01", "Dha)”") and end up in answers.
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df"
                  r"\u3000-\u303f\uff00-\uffef\u2018-\u201f]")


@dataclasses.dataclass
class Example:
    qas_id: str
    question: str
    context: str
    doc_words: List[str]              # the paragraph's words
    word_of_char: List[int]           # paragraph character -> word index
    word_spans: List[tuple]           # word -> (first, last) character in the paragraph
    answers: List[dict]               # gold answers as in the file ({"text", "answer_start"})
    start_word: int = -1              # training answer span in words (-1: none usable)
    end_word: int = -1
    answer_text: str = ""
    is_impossible: bool = False


@dataclasses.dataclass
class Examples:
    examples: List[Example]
    skipped: List[str]                # ids whose answer could not be placed in the paragraph


def split_words(context: str) -> tuple:
    """(words, word index of each character, (first, last) character of each word): whitespace
    separates words (a space belongs to the word before it, as in google's char_to_word_offset),
    a CJK character or CJK punctuation mark is a word of its own."""
    words, word_of_char, spans, new_word = [], [], [], True
    for position, ch in enumerate(context):
        if ch.isspace() or ord(ch) == 0x202F:
            new_word = True
            word_of_char.append(len(words) - 1)
            continue
        if _CJK.match(ch) or new_word:
            words.append(ch)
            spans.append([position, position])
            new_word = bool(_CJK.match(ch))
        else:
            words[-1] += ch
            spans[-1][1] = position
        word_of_char.append(len(words) - 1)
    return words, word_of_char, [tuple(span) for span in spans]


def read_examples(path: str, is_training: bool, version_2_with_negative: bool = False) -> Examples:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)["data"]
    except FileNotFoundError:
        raise UserInputError(f"{path}: no such SQuAD file") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise UserInputError(f"{path}: not a SQuAD-format JSON file with a 'data' list ({err})") from None
    if not isinstance(data, list):
        raise UserInputError(f"{path}: 'data' is not a list of articles; use the SQuAD JSON format")
    examples, skipped = [], []
    for a, article in enumerate(data):
        for p, paragraph in enumerate(_field(path, article, "paragraphs", list, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(path, paragraph, "context", str, where)
            words, word_of_char, spans = split_words(context)
            for q, qa in enumerate(_field(path, paragraph, "qas", list, where)):
                at = f"{where}.qas[{q}]"
                qas_id, question = _field(path, qa, "id", (str, int), at), _field(path, qa, "question", str, at)
                answers = qa.get("answers", []) if isinstance(qa, dict) else []
                if not isinstance(answers, list):
                    raise UserInputError(f"{path}: {at}.answers is not a list; give a list of {{text, answer_start}}")
                example = Example(str(qas_id), question, context, words, word_of_char, spans, answers,
                                  is_impossible=bool(qa.get("is_impossible", False)) and version_2_with_negative)
                if is_training and not example.is_impossible:
                    if not _place_answer(example, context):
                        skipped.append(example.qas_id)
                        continue
                examples.append(example)
    return Examples(examples, skipped)


def _field(path: str, record, name: str, kind, where: str):
    """record[name], checked; a missing or mistyped field is a one-line error naming it."""
    if not isinstance(record, dict) or name not in record:
        raise UserInputError(f"{path}: {where} has no '{name}' field; every SQuAD record needs it")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserInputError(f"{path}: {where}.{name} is a {type(value).__name__}, not the expected "
                             f"{getattr(kind, '__name__', 'string')}; fix the file")
    return value


def _place_answer(example: Example, context: str) -> bool:
    """Map the first answer to words; False when its offset is missing or does not point at it."""
    if not example.answers:
        return False
    answer = example.answers[0]
    text, start = answer.get("text", ""), answer.get("answer_start", -1)
    if not text or not isinstance(start, int) or start < 0 or context[start:start + len(text)] != text:
        return False
    example.start_word = example.word_of_char[start]
    example.end_word = example.word_of_char[start + len(text) - 1]
    example.answer_text = text
    return True


@dataclasses.dataclass
class Feature:
    example_index: int
    window: int                       # window number within the example
    window_start: int                 # index of the window's first token among the paragraph's tokens
    input_ids: List[int]
    segment_ids: List[int]
    token_to_word: dict               # token position -> paragraph word index (paragraph tokens only)
    token_is_max_context: dict        # token position -> bool
    start_position: int = 0           # training: the answer's token span, or 0, 0 ([CLS])
    end_position: int = 0


class SpanFeatures:
    """A list of `Feature`s as the batches of data/batches.py see them; `targets` are the answer
    spans (start_positions, end_positions (B,)) when `is_training`."""

    def __init__(self, features: List[Feature], is_training: bool):
        self.features, self.is_training = features, is_training
        self.input_ids = [f.input_ids for f in features]
        self.segment_ids = [f.segment_ids for f in features]
        self.lengths = lengths_of(self.input_ids)
        self.start_positions = np.array([f.start_position for f in features], dtype=np.int64)
        self.end_positions = np.array([f.end_position for f in features], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.features)

    def targets(self, indices: np.ndarray) -> dict:
        if not self.is_training:
            return {}
        return {"start_positions": self.start_positions[indices], "end_positions": self.end_positions[indices]}


def featurize(tokenizer, examples: List[Example], max_seq_length: int = 384, doc_stride: int = 128,
              max_query_length: int = 64, is_training: bool = False, doc_stride_semantics: str = "step") -> List[Feature]:
    if doc_stride_semantics not in ("step", "overlap"):
        raise UserInputError(f"--doc_stride_semantics={doc_stride_semantics}: use step (google) or overlap (HF)")
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    features, cache = [], {}
    for index, example in enumerate(examples):
        query = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(example.question))[:max_query_length]
        key = id(example.doc_words)  # the questions of one paragraph share its words: tokenize them once
        if key not in cache:
            cache = {key: _tokenize_words(tokenizer, example.doc_words)}
        doc_ids, token_word, first_token_of_word = cache[key]
        room = max_seq_length - len(query) - 3
        if room < 1:
            raise UserInputError(f"--max_seq_length={max_seq_length} leaves no room for the paragraph after a "
                                 f"{len(query)}-token question; raise it or lower --max_query_length")
        step = doc_stride if doc_stride_semantics == "step" else room - doc_stride
        if step < 1:
            raise UserInputError(f"--doc_stride={doc_stride} with overlap semantics must be below the window "
                                 f"({room} paragraph tokens); lower it")
        windows, start = [], 0
        while True:
            length = min(len(doc_ids) - start, room)
            windows.append((start, length))
            if start + length >= len(doc_ids):
                break
            start += min(length, step)
        answer = _answer_tokens(tokenizer, example, doc_ids, first_token_of_word) if is_training else None
        for number, (start, length) in enumerate(windows):
            offset = len(query) + 2  # [CLS] query [SEP]
            ids = [cls] + query + [sep] + doc_ids[start:start + length] + [sep]
            segments = [0] * offset + [1] * (length + 1)
            to_word = {offset + i: token_word[start + i] for i in range(length)}
            max_context = {offset + i: _is_max_context(windows, number, start + i) for i in range(length)}
            feature = Feature(index, number, start, ids, segments, to_word, max_context)
            if answer is not None and not example.is_impossible:
                a, b = answer
                if start <= a and b < start + length:
                    feature.start_position, feature.end_position = a - start + offset, b - start + offset
            features.append(feature)
    return features


def _tokenize_words(tokenizer, words: List[str]) -> tuple:
    """(token ids, word index of each token, first token of each word) of a paragraph."""
    encoding = tokenizer.encode_words(words)
    token_word = list(encoding.word_ids)
    first, previous = [0] * (len(words) + 1), -1
    for position, word in enumerate(token_word):
        if word != previous:
            for w in range(previous + 1, word + 1):  # words with no token (e.g. control characters) point ahead
                first[w] = position
            previous = word
    for w in range(previous + 1, len(words) + 1):
        first[w] = len(token_word)
    return list(encoding.ids), token_word, first


def _answer_tokens(tokenizer, example: Example, doc_ids: List[int], first_token_of_word: List[int]) -> Optional[tuple]:
    """The answer's (start, end) paragraph-token span, tightened to the tokenized answer (google)."""
    if example.start_word < 0:
        return None
    start = first_token_of_word[example.start_word]
    end = first_token_of_word[example.end_word + 1] - 1
    wanted = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(example.answer_text))
    for new_start in range(start, end + 1):
        for new_end in range(end, new_start - 1, -1):
            if doc_ids[new_start:new_end + 1] == wanted:
                return new_start, new_end
    return start, end


def _is_max_context(windows: List[tuple], current: int, position: int) -> bool:
    """google's rule: the window where min(left context, right context) + 0.01 * length is largest."""
    best_score, best = None, None
    for number, (start, length) in enumerate(windows):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best = score, number
    return best == current
