"""Tiny-config shape tests for every head on every backend."""

import numpy as np
import pytest

from mindtransformer.backends import get_backend
from mindtransformer.models.bert import TASK_NAMES, bert_tiny, build_model

BACKENDS = ["torch", "mindspore"]
B, C, T, V, L = 3, 2, 9, 120, 4

EXPECTED = {
    "base": {"last_hidden_state": (B, T, 128), "pooler_output": (B, 128)},
    "pretraining": {"prediction_logits": (B, T, V), "seq_relationship_logits": (B, 2)},
    "masked_lm": {"logits": (B, T, V)},
    "sequence_classification": {"logits": (B, L)},
    "question_answering": {"start_logits": (B, T), "end_logits": (B, T)},
    "multiple_choice": {"logits": (B, C)},
    "token_classification": {"logits": (B, T, L)},
}


def tiny_inputs(task, seed=0):
    rng = np.random.default_rng(seed)
    shape = (B, C, T) if task == "multiple_choice" else (B, T)
    ids = rng.integers(5, V, size=shape).astype(np.int64)
    mask = np.ones(shape, dtype=np.int64)
    mask[..., -3:] = 0  # padding at the end of every row
    ids[mask == 0] = 0
    types = np.zeros(shape, dtype=np.int64)
    types[..., T // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("task", TASK_NAMES)
def test_head_output_names_and_shapes(task, backend):
    labels = 2 if task == "question_answering" else L
    model = build_model(bert_tiny(vocab_size=V, num_labels=labels), task, backend)
    get_backend(backend).set_train(model, False)
    outputs = get_backend(backend).infer(model, tiny_inputs(task))
    assert {k: v.shape for k, v in outputs.items()} == EXPECTED[task]
    assert all(np.isfinite(v).all() for v in outputs.values())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("task", ["base", "sequence_classification"])
def test_padding_does_not_change_real_tokens(task, backend):
    # The same sentence with extra padding must give the same outputs at its real positions.
    model = build_model(bert_tiny(vocab_size=V), task, backend)
    bound = get_backend(backend)
    bound.set_train(model, False)
    short = tiny_inputs(task)
    short = {k: v[:, :T - 3] for k, v in short.items()}
    padded = tiny_inputs(task)
    a, b = bound.infer(model, short), bound.infer(model, padded)
    key = "last_hidden_state" if task == "base" else "logits"
    got = b[key][:, :T - 3] if task == "base" else b[key]
    np.testing.assert_allclose(got, a[key], atol=1e-5)


def test_mlm_decoder_is_tied_to_word_embeddings():
    import torch

    model = build_model(bert_tiny(vocab_size=V), "pretraining", "torch")
    assert "cls.predictions.decoder.weight" not in model.state_dict()
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight[7].fill_(0.0)
        model.cls.predictions.bias[7] = 123.0
    logits = get_backend("torch").infer(model, tiny_inputs("pretraining"))["prediction_logits"]
    np.testing.assert_allclose(logits[..., 7], 123.0, atol=1e-4)


def test_unknown_task_names_the_closest():
    from mindtransformer.errors import UserInputError

    with pytest.raises(UserInputError, match="unknown task 'maskedlm'.*did you mean 'masked_lm'"):
        build_model(bert_tiny(), "maskedlm")


@pytest.mark.parametrize("backend", BACKENDS)
def test_mlm_at_masked_positions_only_gives_the_full_sequence_loss(backend):
    # google's way (the trainer's): the MLM head runs at masked_lm_positions (B, P) only.
    bound = get_backend(backend)
    model = build_model(bert_tiny(vocab_size=V), "pretraining", backend)
    bound.set_train(model, False)
    inputs = tiny_inputs("pretraining")
    positions = np.array([[1, 4, 0], [2, 3, 5], [5, 0, 0]], dtype=np.int64)  # 0 = padding slot
    ids = np.take_along_axis(inputs["input_ids"], positions, axis=1)
    ids[positions == 0] = -100
    full = np.full((B, T), -100, dtype=np.int64)
    np.put_along_axis(full, positions, ids, axis=1)
    full[:, 0] = -100
    nsp = np.array([0, 1, 0], dtype=np.int64)
    whole = bound.loss_and_gradients(model, {**inputs, "labels": full, "next_sentence_label": nsp})[0]
    gathered = bound.loss_and_gradients(model, {**inputs, "labels": ids, "next_sentence_label": nsp,
                                                "masked_lm_positions": positions})[0]
    assert abs(whole - gathered) < 1e-5
