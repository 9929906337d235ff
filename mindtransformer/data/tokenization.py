"""BERT WordPiece tokenization on the `tokenizers` library.

The pipeline is BERT's: clean text, split CJK characters, lower-case and strip accents (per the
checkpoint), split on whitespace and punctuation, WordPiece with `##` continuations, then
[CLS] A [SEP] (B [SEP]) with segment ids 0/1. Batches come back as numpy int64 arrays.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from mindtransformer.errors import UserInputError
from mindtransformer.utils.files import atomic_path, atomic_write_text

SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                  "cls_token": "[CLS]", "mask_token": "[MASK]"}
REQUIRED_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def read_vocab(vocab_file: str) -> dict:
    """token -> id from a one-token-per-line vocab.txt (a later duplicate wins, as in HF)."""
    if not os.path.isfile(vocab_file):
        raise UserInputError(f"{vocab_file}: no such vocab file; pass a BERT vocab.txt or a model folder holding one")
    try:
        with open(vocab_file, encoding="utf-8") as f:
            tokens = f.read().split("\n")
    except UnicodeDecodeError:
        raise UserInputError(f"{vocab_file}: not a UTF-8 text file; a BERT vocab.txt has one token per line") from None
    if tokens and tokens[-1] == "":
        tokens.pop()
    vocab = {token.rstrip("\r"): index for index, token in enumerate(tokens)}
    missing = [t for t in REQUIRED_TOKENS if t not in vocab]
    if missing:
        raise UserInputError(
            f"{vocab_file}: not a BERT vocab (no {', '.join(missing)} among {len(vocab)} lines); "
            "pass the vocab.txt that came with the checkpoint")
    return vocab


class BertTokenizer:
    """WordPiece tokenizer with BERT's normalisation; `encode_batch` returns numpy arrays."""

    def __init__(self, vocab_file: str, do_lower_case: bool = True, strip_accents: Optional[bool] = None,
                 tokenize_chinese_chars: bool = True, model_max_length: int = 512):
        self.vocab_file = vocab_file
        self.vocab = read_vocab(vocab_file)
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.model_max_length = model_max_length
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}
        self.pad_token_id = self.vocab["[PAD]"]
        self.cls_token_id = self.vocab["[CLS]"]
        self.sep_token_id = self.vocab["[SEP]"]
        self.unk_token_id = self.vocab["[UNK]"]
        self.mask_token_id = self.vocab.get("[MASK]")

        tok = Tokenizer(WordPiece(self.vocab, unk_token="[UNK]", continuing_subword_prefix="##",
                                  max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
            strip_accents=strip_accents, lowercase=do_lower_case)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", self.cls_token_id), ("[SEP]", self.sep_token_id)])
        tok.decoder = decoders.WordPiece(prefix="##")
        # Marked special (ids unchanged): "[MASK]" in input text stays one token, and decode can skip them.
        tok.add_special_tokens([t for t in SPECIAL_TOKENS.values() if t in self.vocab])
        self._tokenizer = tok
        self._settings = None  # (max_length, pad_to) currently applied to self._tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @classmethod
    def from_pretrained(cls, path: str) -> "BertTokenizer":
        """From a model folder (vocab.txt + optional tokenizer_config.json) or a vocab.txt file."""
        folder, vocab_file = (path, os.path.join(path, "vocab.txt")) if os.path.isdir(path) \
            else (os.path.dirname(path), path)
        settings = {}
        config_file = os.path.join(folder, "tokenizer_config.json")
        if os.path.isfile(config_file):
            try:
                with open(config_file, encoding="utf-8") as f:
                    settings = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise UserInputError(f"{config_file}: not valid JSON ({err})") from None
        max_length = settings.get("model_max_length", 512)
        return cls(vocab_file,
                   do_lower_case=settings.get("do_lower_case", True),
                   strip_accents=settings.get("strip_accents"),
                   tokenize_chinese_chars=settings.get("tokenize_chinese_chars", True),
                   model_max_length=max_length if isinstance(max_length, int) and max_length < 10**6 else 512)

    def _configure(self, max_length: Optional[int], pad_to: Optional[int], pad: bool = True):
        if self._settings == (max_length, pad_to, pad):
            return
        if max_length is None:
            self._tokenizer.no_truncation()
        else:
            self._tokenizer.enable_truncation(max_length, strategy="longest_first")
        if pad:
            self._tokenizer.enable_padding(pad_id=self.pad_token_id, pad_token="[PAD]", length=pad_to)
        else:
            self._tokenizer.no_padding()
        self._settings = (max_length, pad_to, pad)

    def encode_batch(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None, max_length: int = 128,
                     pad_to_max_length: bool = False) -> dict:
        """Encode sentences (and optional second sentences) into int64 arrays of shape (B, T).

        Truncation is longest-first to `max_length` tokens including specials; padding goes to the
        longest sequence in the batch, or to `max_length` with `pad_to_max_length`.
        """
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of texts; wrap a single text in a list")
        self._configure(max_length, max_length if pad_to_max_length else None)
        if pairs is None:
            encodings = self._tokenizer.encode_batch(list(texts))
        else:
            if len(pairs) != len(texts):
                raise ValueError(f"encode_batch: {len(texts)} texts but {len(pairs)} pairs")
            encodings = self._tokenizer.encode_batch(list(zip(texts, pairs)))
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }

    def encode_unpadded(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None,
                        max_length: int = 128) -> tuple:
        """([ids (T_i,) int32], [segment ids (T_i,) int8]) per text (or pair), truncated longest-first
        to `max_length` tokens with specials and not padded: the featurizer pads per batch."""
        self._configure(max_length, None, pad=False)
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        encodings = self._tokenizer.encode_batch(inputs)
        return ([np.asarray(e.ids, dtype=np.int32) for e in encodings],
                [np.asarray(e.type_ids, dtype=np.int8) for e in encodings])

    def encode_words(self, words: Sequence[str]):
        """The `tokenizers` Encoding of pre-split words, no specials: `.ids`, `.tokens` and
        `.word_ids` (the word each token came from; BERT's punctuation split still applies within words)."""
        self._configure(None, None, pad=False)
        return self._tokenizer.encode(list(words), is_pretokenized=True, add_special_tokens=False)

    def basic_tokenize(self, text: str) -> list:
        """google's BasicTokenizer: clean, lower-case and strip accents (per the checkpoint), split
        CJK characters, whitespace and punctuation; no WordPiece."""
        normalized = self._tokenizer.normalizer.normalize_str(text)
        return [piece for piece, _ in self._tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]

    def tokenize(self, text: str) -> list:
        """WordPiece tokens of one text, without special tokens."""
        self._configure(None, None)
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def convert_tokens_to_ids(self, tokens) -> list:
        return [self.vocab.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids) -> list:
        return [self.ids_to_tokens[int(i)] for i in ids]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def save(self, folder: str) -> None:
        """Write vocab.txt, tokenizer.json, tokenizer_config.json and special_tokens_map.json."""
        os.makedirs(folder, exist_ok=True)
        tokens = [self.ids_to_tokens[i] for i in sorted(self.ids_to_tokens)]
        atomic_write_text(os.path.join(folder, "vocab.txt"), "".join(t + "\n" for t in tokens))
        self._configure(None, None)
        with atomic_path(os.path.join(folder, "tokenizer.json")) as tmp:
            self._tokenizer.save(tmp)
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": self.do_lower_case,
                  "strip_accents": self.strip_accents, "tokenize_chinese_chars": self.tokenize_chinese_chars,
                  "model_max_length": self.model_max_length, **SPECIAL_TOKENS}
        atomic_write_text(os.path.join(folder, "tokenizer_config.json"), json.dumps(config, indent=2) + "\n")
        atomic_write_text(os.path.join(folder, "special_tokens_map.json"), json.dumps(SPECIAL_TOKENS, indent=2) + "\n")


def load_tokenizer(path_or_vocab_file: str) -> BertTokenizer:
    """The tokenizer of a model folder, or of a bare vocab.txt (lower-casing by default)."""
    return BertTokenizer.from_pretrained(path_or_vocab_file)
