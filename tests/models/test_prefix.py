"""Prefix-Tuning on the one BERT definition, on the real MiniLM checkpoint: the trainable count
for BERT-base shapes with the MLP folded away (computed from the shapes), folding keeps the
outputs, prefixes survive saving (in the HF folder and apart), padding does not change an
example's outputs, and the MindSpore model computes the same with the same prefixes."""

import numpy as np
import pytest
import torch

from mindtransformer.adapters import load_prefix, save_prefix
from mindtransformer.backends import get_backend
from mindtransformer.errors import UserInputError
from mindtransformer.models.bert import bert_base, build_model
from mindtransformer.models.bert.lora import parameter_counts
from mindtransformer.models.bert.prefix import PrefixSettings, apply_prefix, fold_prefix, prefix_length
from mindtransformer.pretrained import from_pretrained, save_pretrained

TORCH = get_backend("torch")


@pytest.fixture(scope="module")
def batch(minilm_path, sst2_sentences):
    from mindtransformer.data.tokenization import load_tokenizer

    return load_tokenizer(minilm_path).encode_batch(sst2_sentences[:12], max_length=64)


def logits(model, batch):
    return TORCH.infer(model, batch)["logits"]


def prefixed(minilm_path):
    torch.manual_seed(0)
    return apply_prefix(from_pretrained(minilm_path, task="sequence_classification"), PrefixSettings(length=10)).eval()


def test_bert_base_prefix_of_10_is_about_0_2m_folded():
    config = bert_base().replace(num_labels=2)
    model = apply_prefix(build_model(config, "sequence_classification"), PrefixSettings(length=10, mlp_hidden=512))
    h, layers = config.hidden_size, config.num_hidden_layers
    head = h * config.num_labels + config.num_labels
    mlp = 10 * h + (h * 512 + 512) + (512 * 2 * h + 2 * h)  # embedding, H -> R, R -> 2H
    assert parameter_counts(model)["trainable"] == layers * mlp + head
    fold_prefix(model)
    TORCH.set_trainable(model, {n for n, _ in model.named_parameters() if ".prefix." in n})
    folded = parameter_counts(model)["trainable"]
    assert folded == layers * 10 * 2 * h and 0.15e6 < folded < 0.25e6


def test_fold_save_and_load_keep_the_outputs(tmp_path, minilm_path, batch):
    model = prefixed(minilm_path)
    expected = logits(model, batch)
    plain = logits(from_pretrained(minilm_path, task="sequence_classification").eval(), batch)
    assert np.abs(expected - plain).max() > 1e-3  # the prefixes do change the model
    fold_prefix(model)
    np.testing.assert_allclose(logits(model, batch), expected, atol=1e-6)
    save_pretrained(model, str(tmp_path / "hf"))  # the tables travel in the HF folder ...
    again = from_pretrained(str(tmp_path / "hf"), task="sequence_classification").eval()
    assert prefix_length(again) == 10
    np.testing.assert_allclose(logits(again, batch), expected, atol=1e-6)
    save_prefix(model, str(tmp_path / "apart"))  # ... and apart, onto the base
    base = from_pretrained(minilm_path, task="sequence_classification")
    np.testing.assert_allclose(logits(load_prefix(base, str(tmp_path / "apart")).eval(), batch), expected, atol=1e-6)


def test_padding_does_not_change_an_example(minilm_path, batch):
    model = fold_prefix(prefixed(minilm_path))
    together = logits(model, batch)
    for i in (0, 5):
        n = int(batch["attention_mask"][i].sum())
        alone = logits(model, {k: v[i:i + 1, :n] for k, v in batch.items()})
        np.testing.assert_allclose(alone, together[i:i + 1], atol=1e-5)


def test_mindspore_computes_the_same_with_the_same_prefixes(tmp_path, minilm_path, batch):
    model = fold_prefix(prefixed(minilm_path))
    save_pretrained(model, str(tmp_path / "hf"))
    theirs = from_pretrained(str(tmp_path / "hf"), task="sequence_classification", backend="mindspore")
    np.testing.assert_allclose(get_backend("mindspore").infer(theirs, batch)["logits"], logits(model, batch), atol=1e-4)


def test_errors(tmp_path, minilm_path):
    with pytest.raises(UserInputError, match="length 0"):
        PrefixSettings(length=0)
    with pytest.raises(UserInputError, match="no prefixes to save"):
        save_prefix(from_pretrained(minilm_path, task="sequence_classification"), str(tmp_path))
    with pytest.raises(UserInputError, match="prefix_config.json: no such file"):
        load_prefix(from_pretrained(minilm_path, task="sequence_classification"), str(tmp_path))
