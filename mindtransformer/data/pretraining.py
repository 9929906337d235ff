"""MLM + NSP pretraining instances with google-research/bert's semantics, as pure functions.

Input text: one sentence per line, a blank line between documents. The corpus is streamed in
chunks of whole documents (about `sentences_per_chunk` sentences each, cut only between
documents, so the cut depends on the text alone). A chunk is turned into instances by
`make_chunk(settings, chunk_index, tokens)`, a pure function of the settings, the chunk's
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

A chunk's tokens are held once, back to back (`TokenizedChunk`); the dupe_factor passes reuse
them. Packing runs per instance in Python on token ranges (segments are runs of whole sentences,
so a few random draws and bisections each); building the padded arrays and masking run
vectorised over all instances of a chunk. Shape legend: N instances, T max_seq_length,
P max_predictions_per_seq, W candidate words per instance.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
import unicodedata
from bisect import bisect_left
from typing import Iterable, Iterator, List, Optional

import numpy as np

from mindtransformer.errors import UserInputError

try:
    from mindtransformer.data import _records_c
except ImportError:  # built without a C compiler: numpy does the same
    _records_c = None

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

# Characters BERT's pre-tokenizer makes one-character words, met beside ASCII in most English
# sentences: the Unicode punctuation (category P*) of Latin-1 and of General Punctuation (dashes,
# quotes, ellipsis). They have no case and no accent.
_PUNCTUATION = "".join(chr(c) for c in [*range(0xA1, 0xC0), *range(0x2010, 0x205F)]
                       if unicodedata.category(chr(c)).startswith("P"))
_NOT_FAST = re.compile(f"[^\x20-\x7e\t\n\r{re.escape(_PUNCTUATION)}]")  # ASCII controls count as not fast
# BERT's words of such text, letter/digit runs and punctuation, and the line ends between sentences.
_WORDS = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9\s]|\n")
_COMBINING = dict.fromkeys(range(0x300, 0x370))  # the accents NFD splits off Latin letters (category Mn)
_MAX_WORD_CHARS = 100  # WordPiece's max_input_chars_per_word: a longer word is [UNK]
_WORD_CACHE_LIMIT = 250_000  # distinct words cached per process (tens of MB); past it the cache starts again


class _RegexWordRows(dict):
    """word -> row of the piece table: _records_c.WordTable's interface in Python (the fallback)."""

    def __init__(self, vocab: dict, max_chars: int):
        super().__init__({"\n": 0})  # row 0: the line end between sentences, no pieces
        self._new = []
        self._vocab, self._max_chars = vocab, max_chars

    def __missing__(self, word):
        row = self[word] = len(self)
        self._new.append(word)
        return row

    def rows(self, text: str):
        """(bytes of the (W,) int64 rows of text's words, the words unseen before, in order, bytes
        of their (new,) int64 vocab ids, -1 for a word that is no vocab entry)."""
        words = _WORDS.findall(text)
        rows = np.fromiter(map(self.__getitem__, words), dtype=np.int64, count=len(words))
        new, self._new = self._new, []
        known = [self._vocab.get(word, -1) if len(word) <= self._max_chars else -1 for word in new]
        return rows.tobytes(), new, np.array(known, dtype=np.int64).tobytes()


@dataclasses.dataclass(frozen=True)
class TokenizedChunk:
    """A chunk's text as tokens, empty sentences and documents dropped. K tokens, S sentences,
    D documents: ids (K,) int32 and word_start (K,) bool, all sentences back to back;
    sentence_starts (S + 1,) token offsets; document_starts (D + 1,) sentence offsets."""

    ids: np.ndarray
    word_start: np.ndarray
    sentence_starts: np.ndarray
    document_starts: np.ndarray


class ChunkTokenizer:
    """Sentences -> token ids and word-start flags, equal to our WordPiece tokenizer's output
    (BERT's normaliser, pre-tokenizer and WordPiece in `tokenizers`).

    Fast path, for the sentences BERT's normaliser turns into ASCII plus the punctuation above
    (accents stripped when the model lower-cases) with no control character and no special token:
    the words are split (by _records_c.WordTable in C when it was built, else by a regex and a dict:
    the same rows) and each distinct word is WordPiece'd once per process (words
    repeat: a chunk of the enwiki excerpt has ~50k words, 2-4k of them unseen by earlier chunks;
    half of all distinct words are vocab entries, their own one id).
    Every other sentence (CJK, Greek, symbols, ...) goes through `tokenizers` as a whole. The tests
    check both paths against `tokenizers` on the real corpus and on edge cases.

    A token starts a word unless it is a `##` piece or, with a Chinese segmenter, a CJK character
    inside a segmenter word that began earlier (BERT-wwm's rule for Chinese).
    """

    def __init__(self, tokenizer, chinese_words: bool, compiled: bool = True):
        self.compiled = compiled  # the word cache in C when it was built (False: a dict; the same ids)
        self._fast = tokenizer._tokenizer
        self._fast.no_truncation()
        self._fast.no_padding()
        self._vocab = tokenizer.vocab
        self._lowercase = tokenizer.do_lower_case
        # BertNormalizer strips accents when told to, else when it lower-cases.
        self._strip_accents = tokenizer.do_lower_case if tokenizer.strip_accents is None else tokenizer.strip_accents
        # Special tokens are matched in the raw text, before normalisation ("[MASK]" stays one token).
        specials = sorted(token.content for token in self._fast.get_added_tokens_decoder().values())
        self._specials = re.compile("|".join(map(re.escape, specials))) if specials else None
        self.is_piece = np.zeros(tokenizer.vocab_size, dtype=bool)  # (V,): the token is a ## continuation
        for token, index in tokenizer.vocab.items():
            self.is_piece[index] = token.startswith("##")
        self._clear_cache()
        self.segmenter = None
        if chinese_words:
            try:
                import jieba
            except ImportError:
                raise UserInputError("--do_whole_word_mask on Chinese text needs the jieba segmenter; "
                                     "pip install 'mindtransformer[data]'") from None
            jieba.setLogLevel(60)
            self.segmenter = jieba

    def _clear_cache(self):
        word_rows = _records_c.WordTable if _records_c is not None and self.compiled else _RegexWordRows
        self._word_rows = word_rows(self._vocab, _MAX_WORD_CHARS)
        self._pieces = np.zeros(0, dtype=np.int32)  # WordPiece ids of the cached words, back to back
        # (words + 1,): word r's ids are pieces[starts[r]:starts[r + 1]]; row 0 (line end) has none
        self._piece_starts = np.zeros(2, dtype=np.int64)

    def _add_pieces(self, words: List[str], known: np.ndarray) -> None:
        """Pieces of the new words: known (new,) holds a word's vocab id (WordPiece tries the whole
        word first: half of all words) or -1, then `tokenizers`' WordPiece splits it."""
        missed = np.flatnonzero(known < 0)
        tokenize = self._fast.model.tokenize
        split = [[token.id for token in tokenize(words[i])] for i in missed.tolist()]
        counts = np.ones(len(words), dtype=np.int64)
        counts[missed] = [len(ids) for ids in split]
        ends = np.cumsum(counts)
        pieces = np.empty(int(ends[-1]), dtype=np.int32)
        pieces[ends - counts] = known  # each word's first piece; the split words' are written next
        flat = np.fromiter(itertools.chain.from_iterable(split), dtype=np.int32, count=int(counts[missed].sum()))
        missed_ends = np.cumsum(counts[missed])
        pieces[np.repeat(ends[missed] - missed_ends, counts[missed]) + np.arange(len(flat))] = flat
        self._pieces = np.concatenate([self._pieces, pieces])
        self._piece_starts = np.concatenate([self._piece_starts, self._piece_starts[-1] + ends])

    def _slow_rows(self, sentences: List[str], forms: List[str]) -> List[int]:
        """Rows the fast path cannot take: a special token in the raw text (matched before
        normalisation, "[MASK]" stays one token), or a character other than ASCII and
        the punctuation above in the accent-stripped form. One regex pass over the whole chunk."""
        slow = set()
        for texts, pattern in ((sentences, self._specials), (forms, _NOT_FAST)):
            if pattern is None:
                continue
            text = "\n".join(texts)
            found = [match.start() for match in pattern.finditer(text)]
            if found:
                line_starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
                slow.update((np.searchsorted(line_starts, found, side="right") - 1).tolist())
        return sorted(slow)

    def __call__(self, sentences: List[str]):
        """ids (K,) int32 and word_start (K,) bool of the sentences' tokens back to back;
        counts (S,) int64 tokens per sentence (0 for a sentence without any). A sentence is one
        line: it holds no line break."""
        if not sentences:
            return np.zeros(0, np.int32), np.zeros(0, bool), np.zeros(0, np.int64)
        if len(self._word_rows) > _WORD_CACHE_LIMIT:
            self._clear_cache()
        strip = self._strip_accents
        forms = [s if not strip or s.isascii() else unicodedata.normalize("NFD", s).translate(_COMBINING)
                 for s in sentences]
        slow_rows = self._slow_rows(sentences, forms)
        for row in slow_rows:
            forms[row] = ""
        text = "\n".join(forms)
        # Every word -> its row of the piece table (new words get rows), then all pieces gathered
        # at once. W words (line ends included), S sentences.
        rows, new, known = self._word_rows.rows(text.lower() if self._lowercase else text)
        rows = np.frombuffer(rows, dtype=np.int64)  # (W,)
        if new:
            self._add_pieces(new, np.frombuffer(known, dtype=np.int64))
        piece_counts = self._piece_starts[rows + 1] - self._piece_starts[rows]  # (W,)
        token_ends = np.cumsum(piece_counts)
        ids = self._pieces[np.repeat(self._piece_starts[rows] - token_ends + piece_counts, piece_counts)
                           + np.arange(token_ends[-1] if len(rows) else 0)]
        bounds = np.concatenate([[0], token_ends[rows == 0], [len(ids)]])  # (S + 1,): line ends split sentences
        counts = np.diff(bounds)
        if not slow_rows:
            return ids, ~self.is_piece[ids], counts
        slow = [sentences[row] for row in slow_rows]
        encodings = self._fast.encode_batch(slow, add_special_tokens=False)
        counts[slow_rows] = [len(encoding.ids) for encoding in encodings]
        offsets = np.concatenate([[0], np.cumsum(counts)])  # (S + 1,)
        fast_ids, ids = ids, np.empty(offsets[-1], dtype=np.int32)
        fast_rows = np.setdiff1d(np.arange(len(sentences)), slow_rows)
        fast_counts = counts[fast_rows]
        ids[np.repeat(offsets[fast_rows] - bounds[fast_rows], fast_counts) + np.arange(len(fast_ids))] = fast_ids
        for row, encoding in zip(slow_rows, encodings):
            ids[offsets[row]:offsets[row + 1]] = encoding.ids
        word_start = ~self.is_piece[ids]
        if self.segmenter is not None:
            for row, sentence, encoding in zip(slow_rows, slow, encodings):
                if encoding.ids and CJK.search(sentence):
                    word_start[offsets[row]:offsets[row + 1]] &= self._chinese_word_starts(sentence, encoding.offsets)
        return ids, word_start, counts

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


def tokenize_documents(chunk_tokenizer: ChunkTokenizer, documents: List[List[str]]) -> TokenizedChunk:
    """Documents of sentences -> their tokens, sentences without tokens and then documents without
    sentences dropped (as google)."""
    ids, word_start, counts = chunk_tokenizer([sentence for document in documents for sentence in document])
    kept = counts > 0
    document_of = np.repeat(np.arange(len(documents)), [len(document) for document in documents])[kept]
    per_document = np.bincount(document_of, minlength=len(documents))
    return TokenizedChunk(ids, word_start, np.concatenate([[0], np.cumsum(counts[kept])]),
                          np.concatenate([[0], np.cumsum(per_document[per_document > 0])]))


# ---- packing (google's create_instances_from_document) -----------------------------------------

def _randint(rng: random.Random, low: int, high: int) -> int:
    """Uniform integer in [low, high], as random.randint but with one draw (randint is ~5x slower)."""
    return low + int(rng.random() * (high - low + 1))


def _truncation(len_a: int, len_b: int, max_tokens: int, rng: random.Random) -> tuple:
    """google's truncate_seq_pair as cut counts (front_a, back_a, front_b, back_b).

    google cuts one token at a time from the longer side (B on a tie), from the front or the back
    by a fair coin each. Which side each cut comes from follows from the lengths alone:
    |len_a - len_b| cuts from the longer side, then B, A, B, A, ...; so the counts per side are
    fixed, and the front cuts of a side of k cuts are k fair coins: the set bits of k random bits
    (one draw per side instead of one per token; the same distribution)."""
    excess = len_a + len_b - max_tokens
    if excess <= 0:
        return 0, 0, 0, 0
    longer = min(excess, abs(len_a - len_b))
    rest = excess - longer  # alternating B, A, B, ...: B gets the odd one
    cut_a = rest // 2 + (longer if len_a > len_b else 0)
    cut_b = excess - cut_a
    front_a, front_b = rng.getrandbits(cut_a).bit_count(), rng.getrandbits(cut_b).bit_count()
    return front_a, cut_a - front_a, front_b, cut_b - front_b


def pack_document(starts: list, documents: list, index: int, settings: PretrainingSettings,
                  rng: random.Random, out: list) -> None:
    """Append the instances of documents[index] to `out` as (a_begin, a_end, b_begin, b_end,
    is_random_next): token ranges of segments A and B (without [CLS]/[SEP]), truncated.

    starts: sentence token offsets (S + 1); documents: (first sentence, end sentence) per document.
    google's loop adds sentences until the target length or the document's end; bisect finds that
    sentence at once, as segments are runs of whole sentences."""
    first, end = documents[index]
    max_tokens = settings.max_seq_length - 3
    target = max_tokens
    if rng.random() < settings.short_seq_prob:
        target = _randint(rng, 2, max_tokens)
    begin = first
    while begin < end:
        stop = bisect_left(starts, starts[begin] + target, begin + 1, end)  # sentences [begin, stop)
        count = stop - begin
        a_stop = begin + (_randint(rng, 1, count - 1) if count >= 2 else 1)
        if count == 1 or rng.random() < 0.5:
            is_random_next = 1
            target_b = target - (starts[a_stop] - starts[begin])
            for _ in range(10):
                other = _randint(rng, 0, len(documents) - 1)
                if other != index:
                    break
            other_first, other_end = documents[other]
            b_begin = other_first + _randint(rng, 0, other_end - other_first - 1)
            b_stop = bisect_left(starts, starts[b_begin] + target_b, b_begin + 1, other_end)
            next_begin = a_stop  # the unused sentences go back to the document
        else:
            is_random_next = 0
            b_begin, b_stop = a_stop, stop
            next_begin = stop
        a0, a1, b0, b1 = starts[begin], starts[a_stop], starts[b_begin], starts[b_stop]
        front_a, back_a, front_b, back_b = _truncation(a1 - a0, b1 - b0, max_tokens, rng)
        # Both sides keep tokens (google asserts it): each held a sentence with tokens, and the
        # cuts leave a side min(its length, about max_tokens / 2 >= 1).
        out.append((a0 + front_a, a1 - back_a, b0 + front_b, b1 - back_b, is_random_next))
        begin = next_begin


# ---- masking, vectorised over a chunk ----------------------------------------------------------

def assemble(chunk: TokenizedChunk, packed: np.ndarray, settings: PretrainingSettings, special_ids: dict):
    """Packed ranges (N, 5) -> padded arrays: ids (N, T); candidate and word_start (N, T) over the
    maskable tokens (not [CLS]/[SEP]/padding); segment (N, T); lengths (N,);
    next_sentence_labels (N,). Each position reads its token from the chunk at once."""
    t = settings.max_seq_length
    a_begin, a_end, b_begin, b_end, labels = (packed[:, i:i + 1] for i in range(5))  # (N, 1) each
    len_a = a_end - a_begin
    lengths = len_a + (b_end - b_begin) + 3
    position = np.arange(t)[None, :]  # (1, T): [CLS] A [SEP] B [SEP] padding
    in_a = (position >= 1) & (position <= len_a)
    candidate = in_a | ((position >= len_a + 2) & (position < lengths - 1))
    source = np.where(in_a, a_begin - 1 + position, b_begin - len_a - 2 + position)  # (N, T) token offset
    source = np.where(candidate, source, 0)
    ids = np.where(candidate, chunk.ids[source], 0).astype(np.int64)
    rows = np.arange(len(packed))
    ids[:, 0] = special_ids["cls"]
    ids[rows, len_a[:, 0] + 1] = special_ids["sep"]
    ids[rows, lengths[:, 0] - 1] = special_ids["sep"]
    word_start = candidate & chunk.word_start[source]
    segment = ((position >= len_a + 2) & (position < lengths)).astype(np.int64)
    return ids, candidate, word_start, segment, lengths[:, 0], labels[:, 0]


def choose_masked(candidate, word_start, lengths, settings: PretrainingSettings, rng: np.random.Generator):
    """Boolean (N, T): the positions to predict (numpy; _records_c.build_instances does the same in C).

    google's procedure per instance: candidate words (a `##` piece or a continuing Chinese
    character joins the word before it, when whole-word masking is on; else every token is a
    word) in random order; a word is taken while the count plus its length stays within the
    budget min(P, max(1, round(len * masked_lm_prob))); a word that does not fit is skipped.
    """
    n, t = candidate.shape
    budget = _budgets(lengths, settings)
    if not settings.do_whole_word_mask:
        # Every word is one token: the greedy takes the `budget` smallest keys of a row, so a
        # partial sort finds them (same keys, same choice as the greedy below).
        words = candidate.sum(axis=1)  # (N,)
        w = int(words.max()) if n else 0
        keys = rng.random((n, w))  # (N, W): row r's word j is its j-th candidate token
        present = np.arange(w)[None, :] < words[:, None]
        keys[~present] = 2.0
        k = min(settings.max_predictions_per_seq, w)
        smallest = np.sort(np.partition(keys, k - 1, axis=1)[:, :k], axis=1)  # (N, k) ascending
        threshold = smallest[np.arange(n), np.minimum(budget, k) - 1]
        chosen = np.zeros((n, t), dtype=bool)
        chosen[candidate] = ((keys <= threshold[:, None]) & present)[present]
        return chosen
    starts = candidate & word_start  # (N, T)
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
    # A random order of each row's words: sort random keys (distinct: no ties), absent words last.
    keys = rng.random((n, w))
    keys[np.arange(w)[None, :] >= words[:, None]] = 2.0
    order = np.argsort(keys, axis=1)  # (N, W)
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


def _replacements(originals, vocab_size: int, mask_id: int, rng: np.random.Generator):
    """google's 80/10/10 for the chosen tokens' original ids (C,): [MASK], the same id, or a random
    vocab id. Draws two uniforms per token, then the random ids."""
    first, second = rng.random(len(originals)), rng.random(len(originals))
    return np.where(first < 0.8, mask_id,
                    np.where(second < 0.5, originals, rng.integers(0, vocab_size, len(originals))))


def mask_tokens(ids, chosen, vocab_size: int, mask_id: int, settings: PretrainingSettings, rng: np.random.Generator):
    """The chosen positions -> the masked_lm_* arrays and the masked ids (80/10/10).

    Returns input_ids (N, T), masked_lm_positions (N, P), masked_lm_ids (N, P),
    masked_lm_weights (N, P) float32; positions ascending, padded with 0 (weight 0)."""
    n, p = ids.shape[0], settings.max_predictions_per_seq
    rows, cols = np.nonzero(chosen)  # row-major: positions ascending within a row
    originals = ids[rows, cols]
    masked = ids.copy()
    masked[rows, cols] = _replacements(originals, vocab_size, mask_id, rng)
    slot = np.cumsum(chosen, axis=1)[rows, cols] - 1  # rank of each chosen position in its row
    positions = np.zeros((n, p), dtype=np.int64)
    labels = np.zeros((n, p), dtype=np.int64)
    weights = np.zeros((n, p), dtype=np.float32)
    positions[rows, slot] = cols
    labels[rows, slot] = originals
    weights[rows, slot] = 1.0
    return masked, positions, labels, weights


def _budgets(lengths, settings: PretrainingSettings):
    """Tokens to predict per instance (N,): min(P, max(1, round(len * masked_lm_prob)))."""
    return np.minimum(settings.max_predictions_per_seq,
                      np.maximum(1, np.round(lengths * settings.masked_lm_prob).astype(np.int64)))


def _instances_numpy(chunk, packed, settings, vocab_size, special_ids, rng):
    """make_chunk's arrays in numpy, vectorised over the chunk (the fallback of _instances_compiled)."""
    ids, candidate, word_start, segment, lengths, labels = assemble(chunk, packed, settings, special_ids)
    chosen = choose_masked(candidate, word_start, lengths, settings, rng)
    input_ids, positions, masked_ids, weights = mask_tokens(ids, chosen, vocab_size, special_ids["mask"], settings,
                                                            rng)
    input_mask = (np.arange(settings.max_seq_length)[None, :] < lengths[:, None]).astype(np.int64)
    return input_ids, input_mask, segment, positions, masked_ids, weights


def _instances_compiled(chunk, packed, settings, vocab_size, special_ids, rng):
    """The same arrays from the same random draws, one compiled pass per instance
    (_records_c.build_instances) instead of numpy passes over (N, T) temporaries."""
    n, t, p = len(packed), settings.max_seq_length, settings.max_predictions_per_seq
    a_begin, a_end, b_begin, b_end = (packed[:, i] for i in range(4))
    lengths = a_end - a_begin + b_end - b_begin + 3
    if settings.do_whole_word_mask:  # words per instance: word starts, and the first token always opens one
        starts = np.concatenate([[0], np.cumsum(chunk.word_start, dtype=np.int64)])  # (K + 1,)
        words = starts[a_end] - starts[a_begin] + starts[b_end] - starts[b_begin] + ~chunk.word_start[a_begin]
    else:
        words = lengths - 3
    keys = rng.random((n, int(words.max())))  # (N, W): as choose_masked draws them
    input_ids, segment, input_mask = (np.empty((n, t), np.int64) for _ in range(3))
    positions, masked_ids, weights = np.empty((n, p), np.int64), np.empty((n, p), np.int64), np.empty((n, p), np.float32)
    _records_c.build_instances(chunk.ids, chunk.word_start, packed, keys, _budgets(lengths, settings),
                               settings.do_whole_word_mask, special_ids["cls"], special_ids["sep"],
                               input_ids, segment, input_mask, positions, masked_ids, weights)
    taken = weights > 0  # (N, P): row-major, positions ascending, as np.nonzero(chosen)
    rows, cols = np.nonzero(taken)[0], positions[taken]
    input_ids[rows, cols] = _replacements(masked_ids[taken], vocab_size, special_ids["mask"], rng)
    return input_ids, input_mask, segment, positions, masked_ids, weights


def make_chunk(settings: PretrainingSettings, chunk_index: int, chunk: TokenizedChunk, vocab_size: int,
               special_ids: dict, compiled: bool = True) -> Optional[dict]:
    """All instances of one tokenized chunk as google's features (numpy arrays), or None.

    input_ids, input_mask, segment_ids (N, T) int64; masked_lm_positions, masked_lm_ids (N, P)
    int64; masked_lm_weights (N, P) float32; next_sentence_labels (N, 1) int64.
    compiled: pack and build the arrays in C when it was built (False: Python and numpy; the same
    draws, the same arrays)."""
    compiled = compiled and _records_c is not None
    rng = random.Random(f"{settings.random_seed}/{chunk_index}")  # str seeds hash the same in every process
    np_rng = np.random.default_rng([settings.random_seed, chunk_index])
    bounds = chunk.document_starts.tolist()
    documents = list(zip(bounds[:-1], bounds[1:]))  # (first sentence, end sentence) per document
    rng.shuffle(documents)
    if compiled:  # the loops below in C, drawing from this same generator
        version, state, gauss = rng.getstate()
        packed, state = _records_c.pack_chunk(chunk.sentence_starts.astype(np.int64),
                                              np.array(documents, dtype=np.int64).reshape(-1, 2),
                                              settings.max_seq_length, settings.short_seq_prob, settings.dupe_factor,
                                              state)
        rng.setstate((version, state, gauss))
        packed = np.frombuffer(packed, dtype=np.int64).reshape(-1, 5)
    else:
        starts = chunk.sentence_starts.tolist()  # bisect and indexing on a list: ~10x numpy's per-call cost
        packed = []
        for _ in range(settings.dupe_factor):
            for index in range(len(documents)):
                pack_document(starts, documents, index, settings, rng, packed)
        rng.shuffle(packed)
        packed = np.array(packed, dtype=np.int64).reshape(-1, 5)  # (N, 5)
    if not len(packed):
        return None
    build = _instances_compiled if compiled else _instances_numpy
    input_ids, input_mask, segment, positions, masked_ids, weights = build(chunk, packed, settings, vocab_size,
                                                                           special_ids, np_rng)
    return {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment,
            "masked_lm_positions": positions, "masked_lm_ids": masked_ids, "masked_lm_weights": weights,
            "next_sentence_labels": packed[:, 4:5].copy()}
