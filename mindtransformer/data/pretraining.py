"""MLM + NSP pretraining instances with google-research/bert's semantics, as pure functions.

Input text: one sentence per line, a blank line between documents. The corpus is streamed in
chunks of whole documents (about `sentences_per_chunk` sentences each, cut only between
documents, so the cut depends on the text alone). A chunk is turned into instances by
`make_chunk(settings, chunk_index, documents)`, a pure function of the settings, the chunk's
index and its text: its random stream is seeded with (random_seed, chunk_index). Workers can
therefore process chunks in any order and the records are the same whatever their number.

Per chunk, as google's `create_training_instances`: documents shuffled; dupe_factor passes over
them; per document google's segment packing (target length, short_seq_prob, A/B split, 50 %
random next sentence from another document, truncation from a random end); masking of
min(max_predictions_per_seq, max(1, round(len * masked_lm_prob))) tokens (len counts [CLS] and
[SEP]), whole words when asked, 80 % [MASK] / 10 % the same / 10 % a random vocab id;
instances shuffled. Where streaming forces a difference from google's one global pass: the
random next sentence comes from another document of the same chunk (google: of the corpus), and
instances are shuffled within their chunk (google: globally; the loaders shuffle again).

Packing runs per instance in Python on token-id lists (a few random draws each); masking runs
vectorised over all instances of a chunk. Shape legend: N instances, T max_seq_length,
P max_predictions_per_seq, W candidate words per instance.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Iterable, Iterator, List, Optional

import numpy as np

from mindtransformer.errors import UserInputError

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df]")


@dataclasses.dataclass(frozen=True)
class PretrainingSettings:
    """google's create_pretraining_data flags (same names and defaults) plus the chunk size."""

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    random_seed: int = 12345
    dupe_factor: int = 10
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    do_whole_word_mask: bool = False
    sentences_per_chunk: int = 2000

    def __post_init__(self):
        if self.max_seq_length < 5:
            raise UserInputError(f"--max_seq_length={self.max_seq_length}: must be at least 5 ([CLS] A [SEP] B [SEP])")
        if self.random_seed < 0:
            raise UserInputError(f"--random_seed={self.random_seed}: must be >= 0")
        if self.max_predictions_per_seq < 1 or self.dupe_factor < 1 or self.sentences_per_chunk < 1:
            raise UserInputError("--max_predictions_per_seq, --dupe_factor and --sentences_per_chunk must be >= 1")
        for name in ("masked_lm_prob", "short_seq_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UserInputError(f"--{name}={value}: must lie in [0, 1]")


# ---- reading text ------------------------------------------------------------------------------

def read_documents(paths: Iterable[str]) -> Iterator[List[str]]:
    """Documents (lists of stripped non-empty lines) from files; a blank line ends a document.
    As google, a document does not run on across files and empty documents are dropped."""
    for path in paths:
        document = []
        with open(path, encoding="utf-8", errors="strict") as f:
            try:
                for line in f:
                    line = line.strip()
                    if line:
                        document.append(line)
                    elif document:
                        yield document
                        document = []
            except UnicodeDecodeError as err:
                raise UserInputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); "
                                     "pass plain text, one sentence per line") from None
        if document:
            yield document


def chunk_documents(documents: Iterable[List[str]], sentences_per_chunk: int) -> Iterator[List[List[str]]]:
    """Group whole documents into chunks of at least `sentences_per_chunk` sentences (the last
    chunk may be smaller); the grouping depends only on the text."""
    chunk, count = [], 0
    for document in documents:
        chunk.append(document)
        count += len(document)
        if count >= sentences_per_chunk:
            yield chunk
            chunk, count = [], 0
    if chunk:
        yield chunk


# ---- tokenization ------------------------------------------------------------------------------

class ChunkTokenizer:
    """Sentence -> (token ids, word-start flags) with our WordPiece tokenizer.

    A token starts a word unless it is a `##` piece or, with a Chinese segmenter, a CJK character
    inside a segmenter word that began earlier (BERT-wwm's rule for Chinese).
    """

    def __init__(self, tokenizer, chinese_words: bool):
        self.tokenizer = tokenizer
        self._fast = tokenizer._tokenizer
        self._fast.no_truncation()
        self._fast.no_padding()
        vocab_size = tokenizer.vocab_size
        self.is_piece = np.zeros(vocab_size, dtype=bool)  # (V,): the token is a ## continuation
        for token, index in tokenizer.vocab.items():
            self.is_piece[index] = token.startswith("##")
        self.segmenter = None
        if chinese_words:
            try:
                import jieba
            except ImportError:
                raise UserInputError("--do_whole_word_mask on Chinese text needs the jieba segmenter; "
                                     "pip install 'mindtransformer[data]'") from None
            jieba.setLogLevel(60)
            self.segmenter = jieba

    def __call__(self, sentences: List[str]):
        encodings = self._fast.encode_batch(sentences, add_special_tokens=False)
        out = []
        for sentence, encoding in zip(sentences, encodings):
            ids = encoding.ids
            if not ids:
                out.append(None)
                continue
            starts = ~self.is_piece[ids]
            if self.segmenter is not None and CJK.search(sentence):
                starts &= self._chinese_word_starts(sentence, encoding.offsets)
            out.append((ids, starts.tolist()))
        return out

    def _chinese_word_starts(self, sentence, offsets):
        # Character -> index of the segmenter word holding it; a CJK token whose word began at an
        # earlier character continues that word.
        word_of_char = np.zeros(len(sentence), dtype=np.int64)
        position = 0
        for index, word in enumerate(self.segmenter.cut(sentence)):
            word_of_char[position:position + len(word)] = index
            position += len(word)
        starts = np.ones(len(offsets), dtype=bool)
        for i, (begin, end) in enumerate(offsets):
            if i and end - begin == 1 and CJK.match(sentence[begin]) and begin > 0 \
                    and word_of_char[begin] == word_of_char[begin - 1]:
                starts[i] = False
        return starts


def tokenize_documents(chunk_tokenizer: ChunkTokenizer, documents: List[List[str]]):
    """Documents of sentences -> documents of (ids list, word-start flags); empty ones dropped."""
    flat = [sentence for document in documents for sentence in document]
    encoded = iter(chunk_tokenizer(flat))
    out = []
    for document in documents:
        sentences = [e for e in (next(encoded) for _ in document) if e is not None]
        if sentences:
            out.append(sentences)
    return out


# ---- packing (google's create_instances_from_document) -----------------------------------------

def _randint(rng: random.Random, low: int, high: int) -> int:
    """Uniform integer in [low, high], as random.randint but with one draw (randint is ~5x slower)."""
    return low + int(rng.random() * (high - low + 1))


def _truncation(len_a: int, len_b: int, max_tokens: int, rng: random.Random) -> tuple:
    """google's truncate_seq_pair as cut counts (front_a, back_a, front_b, back_b): one token at a
    time from the longer side (B on a tie), from the front or the back at random."""
    cuts = [0, 0, 0, 0]
    while len_a + len_b > max_tokens:
        if len_a > len_b:
            cuts[0 if rng.random() < 0.5 else 1] += 1
            len_a -= 1
        else:
            cuts[2 if rng.random() < 0.5 else 3] += 1
            len_b -= 1
    return cuts


def pack_document(documents, index: int, settings: PretrainingSettings, rng: random.Random, out: list) -> None:
    """Append (a_ids, a_starts, b_ids, b_starts, is_random_next) instances of documents[index]
    to `out`: the token ids of segments A and B (without [CLS]/[SEP]) and their word-start flags."""
    document = documents[index]
    max_tokens = settings.max_seq_length - 3
    target = max_tokens
    if rng.random() < settings.short_seq_prob:
        target = _randint(rng, 2, max_tokens)
    chunk, length, i = [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i][0])
        if i == len(document) - 1 or length >= target:
            a_end = _randint(rng, 1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a_ids, a_starts = [], []
            for ids, starts in chunk[:a_end]:
                a_ids += ids
                a_starts += starts
            b_ids, b_starts = [], []
            if len(chunk) == 1 or rng.random() < 0.5:
                is_random_next = True
                target_b = target - len(a_ids)
                for _ in range(10):
                    other = _randint(rng, 0, len(documents) - 1)
                    if other != index:
                        break
                other_document = documents[other]
                for ids, starts in other_document[_randint(rng, 0, len(other_document) - 1):]:
                    b_ids += ids
                    b_starts += starts
                    if len(b_ids) >= target_b:
                        break
                i -= len(chunk) - a_end  # the unused segments go back to the document
            else:
                is_random_next = False
                for ids, starts in chunk[a_end:]:
                    b_ids += ids
                    b_starts += starts
            front_a, back_a, front_b, back_b = _truncation(len(a_ids), len(b_ids), max_tokens, rng)
            end_a, end_b = len(a_ids) - back_a, len(b_ids) - back_b
            if end_a > front_a and end_b > front_b:  # google asserts both sides are non-empty
                out.append((a_ids[front_a:end_a], a_starts[front_a:end_a],
                            b_ids[front_b:end_b], b_starts[front_b:end_b], is_random_next))
            chunk, length = [], 0
        i += 1


# ---- masking, vectorised over a chunk ----------------------------------------------------------

def assemble(instances, settings: PretrainingSettings, special_ids: dict):
    """Packed pairs -> padded arrays: ids (N, T); candidate and word_start (N, T) over the
    maskable tokens (not [CLS]/[SEP]/padding); segment (N, T); lengths (N,);
    next_sentence_labels (N,). Built from one flat token list, not row by row."""
    n, t = len(instances), settings.max_seq_length
    cls, sep = special_ids["cls"], special_ids["sep"]
    flat_ids, flat_starts = [], []
    len_a = np.empty(n, dtype=np.int64)
    lengths = np.empty(n, dtype=np.int64)
    labels = np.empty(n, dtype=np.int64)
    for row, (a_ids, a_starts, b_ids, b_starts, is_random_next) in enumerate(instances):
        flat_ids += [cls, *a_ids, sep, *b_ids, sep]
        flat_starts += [False, *a_starts, False, *b_starts, False]
        len_a[row] = len(a_ids)
        lengths[row] = len(a_ids) + len(b_ids) + 3
        labels[row] = is_random_next
    position = np.arange(t)[None, :]  # (1, T)
    used = position < lengths[:, None]  # (N, T): row-major order of `used` is the flat order
    ids = np.zeros((n, t), dtype=np.int64)
    ids[used] = flat_ids
    word_start = np.zeros((n, t), dtype=bool)
    word_start[used] = flat_starts
    first_b = len_a[:, None] + 2  # position of B's first token
    candidate = used & (position > 0) & (position != first_b - 1) & (position != lengths[:, None] - 1)
    segment = (used & (position >= first_b)).astype(np.int64)
    return ids, candidate, word_start, segment, lengths, labels


def choose_masked(candidate, word_start, lengths, settings: PretrainingSettings, rng: np.random.Generator):
    """Boolean (N, T): the positions to predict.

    google's procedure per instance: candidate words (a `##` piece or a continuing Chinese
    character joins the word before it, when whole-word masking is on; else every token is a
    word) in random order; a word is taken while the count plus its length stays within the
    budget min(P, max(1, round(len * masked_lm_prob))); a word that does not fit is skipped.
    """
    n, t = candidate.shape
    starts = candidate & (word_start if settings.do_whole_word_mask else True)  # (N, T)
    # A continuing token before any word start in its row starts a word (google: the first
    # candidate always opens a word).
    first = np.argmax(candidate, axis=1)
    starts[np.arange(n), first] |= candidate[np.arange(n), first]
    word_of = np.cumsum(starts, axis=1) - 1  # (N, T): word index of each candidate token
    words = starts.sum(axis=1)  # (N,)
    w = int(words.max()) if n else 0
    rows = np.broadcast_to(np.arange(n)[:, None], (n, t))
    flat_word = rows[candidate] * w + word_of[candidate]
    word_len = np.bincount(flat_word, minlength=n * w).reshape(n, w)  # (N, W) tokens per word
    budget = np.minimum(settings.max_predictions_per_seq,
                        np.maximum(1, np.round(lengths * settings.masked_lm_prob).astype(np.int64)))
    # A random order of each row's words: sort random keys, absent words last.
    keys = rng.random((n, w))
    keys[np.arange(w)[None, :] >= words[:, None]] = 2.0
    order = np.argsort(keys, axis=1, kind="stable")  # (N, W)
    length_in_order = np.take_along_axis(word_len, order, axis=1)
    taken_in_order = np.zeros((n, w), dtype=bool)
    count = np.zeros(n, dtype=np.int64)
    for j in range(w):  # greedy over the ranked words, all rows at once
        fits = (length_in_order[:, j] > 0) & (count + length_in_order[:, j] <= budget)
        taken_in_order[:, j] = fits
        count += np.where(fits, length_in_order[:, j], 0)
        if (count >= budget).all():
            break
    taken = np.zeros((n, w), dtype=bool)
    np.put_along_axis(taken, order, taken_in_order, axis=1)
    chosen = np.zeros((n, t), dtype=bool)
    chosen[candidate] = taken.reshape(-1)[flat_word]
    return chosen


def mask_tokens(ids, chosen, vocab_size: int, mask_id: int, settings: PretrainingSettings, rng: np.random.Generator):
    """google's 80/10/10 at the chosen positions -> the masked_lm_* arrays and the masked ids.

    Returns input_ids (N, T), masked_lm_positions (N, P), masked_lm_ids (N, P),
    masked_lm_weights (N, P) float32; positions ascending, padded with 0 (weight 0)."""
    n, p = ids.shape[0], settings.max_predictions_per_seq
    rows, cols = np.nonzero(chosen)  # row-major: positions ascending within a row
    originals = ids[rows, cols]
    first, second = rng.random(len(rows)), rng.random(len(rows))
    replacement = np.where(first < 0.8, mask_id,
                           np.where(second < 0.5, originals, rng.integers(0, vocab_size, len(rows))))
    masked = ids.copy()
    masked[rows, cols] = replacement
    slot = np.cumsum(chosen, axis=1)[rows, cols] - 1  # rank of each chosen position in its row
    positions = np.zeros((n, p), dtype=np.int64)
    labels = np.zeros((n, p), dtype=np.int64)
    weights = np.zeros((n, p), dtype=np.float32)
    positions[rows, slot] = cols
    labels[rows, slot] = originals
    weights[rows, slot] = 1.0
    return masked, positions, labels, weights


def make_chunk(settings: PretrainingSettings, chunk_index: int, documents, vocab_size: int,
               special_ids: dict) -> Optional[dict]:
    """All instances of one tokenized chunk as google's features (numpy arrays), or None.

    input_ids, input_mask, segment_ids (N, T) int64; masked_lm_positions, masked_lm_ids (N, P)
    int64; masked_lm_weights (N, P) float32; next_sentence_labels (N, 1) int64."""
    rng = random.Random(f"{settings.random_seed}/{chunk_index}")  # str seeds hash the same in every process
    np_rng = np.random.default_rng([settings.random_seed, chunk_index])
    documents = list(documents)
    rng.shuffle(documents)
    packed = []
    for _ in range(settings.dupe_factor):
        for index in range(len(documents)):
            pack_document(documents, index, settings, rng, packed)
    if not packed:
        return None
    rng.shuffle(packed)
    ids, candidate, word_start, segment, lengths, labels = assemble(packed, settings, special_ids)
    chosen = choose_masked(candidate, word_start, lengths, settings, np_rng)
    input_ids, positions, masked_ids, weights = mask_tokens(ids, chosen, vocab_size, special_ids["mask"],
                                                            settings, np_rng)
    input_mask = (np.arange(settings.max_seq_length)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment,
            "masked_lm_positions": positions, "masked_lm_ids": masked_ids, "masked_lm_weights": weights,
            "next_sentence_labels": labels[:, None]}
