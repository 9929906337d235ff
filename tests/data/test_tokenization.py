"""Tokenizer parity with transformers.BertTokenizerFast on real English and Chinese text."""

import os

import numpy as np
import pytest

import mindtransformer as mt

KEYS = ("input_ids", "token_type_ids", "attention_mask")


def assert_same_encoding(ours, theirs):
    for key in KEYS:
        assert ours[key].dtype == np.int64
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def reference(path, **kwargs):
    """transformers' tokenizer: the checkpoint's own tokenizer.json, or one built from vocab.txt."""
    import transformers

    if not kwargs:
        return transformers.AutoTokenizer.from_pretrained(path)
    return transformers.BertTokenizerFast(vocab=os.path.join(path, "vocab.txt"), **kwargs)


@pytest.mark.parametrize("max_length", [128, 24])
def test_english_sentences_and_pairs(minilm_path, sst2_sentences, mrpc_pairs, max_length):
    ours, theirs = mt.load_tokenizer(minilm_path), reference(minilm_path)
    first, second = mrpc_pairs
    assert len(sst2_sentences) + len(first) >= 1000
    for start in range(0, len(sst2_sentences), 256):  # batches: padding is to each batch's longest
        texts = sst2_sentences[start:start + 256]
        assert_same_encoding(ours.encode_batch(texts, max_length=max_length),
                             theirs(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np"))
    # Pairs at max_length 24 exercise longest-first truncation of both sentences.
    assert_same_encoding(ours.encode_batch(first, second, max_length=max_length),
                         theirs(first, second, padding=True, truncation=True, max_length=max_length, return_tensors="np"))


def test_chinese_reviews(minilm_path, waimai_reviews):
    ours, theirs = mt.load_tokenizer(minilm_path), reference(minilm_path)
    reviews = waimai_reviews[:1200]
    encoded = ours.encode_batch(reviews, max_length=64)
    assert_same_encoding(encoded, theirs(reviews, padding=True, truncation=True, max_length=64, return_tensors="np"))
    # CJK characters are split one per token, as BERT does.
    assert ours.tokenize("很快，好吃") == ["[UNK]" if c not in ours.vocab else c for c in "很快，好吃"]
    pairs = waimai_reviews[1:1201]
    assert_same_encoding(ours.encode_batch(reviews, pairs, max_length=48),
                         theirs(reviews, pairs, padding=True, truncation=True, max_length=48, return_tensors="np"))


def test_cased_vocab_settings(minilm_path, sst2_sentences, waimai_reviews, tmp_path):
    texts = [s.capitalize() for s in sst2_sentences[:300]] + ["Café Déjà Vu in Zürich", "台灣 臺北 今天天氣很好"]
    ours = mt.BertTokenizer(os.path.join(minilm_path, "vocab.txt"), do_lower_case=False)
    theirs = reference(minilm_path, do_lower_case=False)
    assert_same_encoding(ours.encode_batch(texts, max_length=64),
                         theirs(texts, padding=True, truncation=True, max_length=64, return_tensors="np"))
    # Settings survive save -> load, and transformers reads the saved files the same way.
    ours.save(str(tmp_path))
    again = mt.load_tokenizer(str(tmp_path))
    assert again.do_lower_case is False
    assert_same_encoding(again.encode_batch(texts, max_length=64), ours.encode_batch(texts, max_length=64))
    import transformers
    saved = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert_same_encoding(ours.encode_batch(texts, max_length=64),
                         saved(texts, padding=True, truncation=True, max_length=64, return_tensors="np"))


def test_pad_to_max_length_and_helpers(minilm_path):
    tok = mt.load_tokenizer(minilm_path)
    batch = tok.encode_batch(["hello world", "hi"], max_length=16, pad_to_max_length=True)
    assert batch["input_ids"].shape == (2, 16)
    assert batch["attention_mask"].sum(axis=1).tolist() == [4, 3]
    ids = batch["input_ids"][0]
    assert tok.convert_ids_to_tokens(ids[:4]) == ["[CLS]", "hello", "world", "[SEP]"]
    assert tok.decode(ids) == "hello world"
    assert tok.decode(ids, skip_special_tokens=False).startswith("[CLS] hello world [SEP]")
    assert tok.convert_tokens_to_ids(["hello", "not-a-token"]) == [tok.vocab["hello"], tok.unk_token_id]
    assert tok.tokenize("the weather is [MASK] today") == ["the", "weather", "is", "[MASK]", "today"]
