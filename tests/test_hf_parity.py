"""Parity with `transformers` on the real MiniLM checkpoint and real GLUE dev text."""

import pytest

from mindtransformer.models.bert import TASK_NAMES
from mindtransformer.verify import TOLERANCE, parity_rows


@pytest.fixture(scope="module")
def batches(sst2_sentences, mrpc_pairs):
    # Real sentences of different lengths, so every batch is padded; MRPC gives sentence pairs.
    return {"sst2": (sst2_sentences[:24], None), "mrpc": (mrpc_pairs[0][:24], mrpc_pairs[1][:24])}


@pytest.mark.parametrize("data", ["sst2", "mrpc"])
@pytest.mark.parametrize("task", TASK_NAMES)
def test_torch_matches_transformers(minilm_path, batches, task, data):
    texts, pairs = batches[data]
    rows = parity_rows(minilm_path, texts, pairs, [task], ["torch"])
    assert rows, "no outputs compared"
    for _, name, shape, diffs in rows:
        assert shape[0] == (12 if task == "multiple_choice" else 24)
        assert diffs["torch"] <= TOLERANCE["torch"], f"{task}.{name}: max |diff| {diffs['torch']:.3g}"


@pytest.mark.parametrize("backend", ["torch", "mindspore"])
@pytest.mark.parametrize("task", ["base", "sequence_classification", "multiple_choice"])
def test_hidden_states_match_transformers(minilm_path, batches, task, backend):
    """output_hidden_states=True gives HF's hidden_states: the embeddings' output and every layer's,
    complete (B, T, H) even for the heads that compute only [CLS] of the last layer otherwise."""
    import numpy as np
    import torch
    import transformers

    import mindtransformer as mt
    from mindtransformer.backends import get_backend
    from mindtransformer.data.tokenization import load_tokenizer
    from mindtransformer.verify import HF_CLASSES, max_abs_diff, task_inputs

    batch = task_inputs(load_tokenizer(minilm_path).encode_batch(*batches["mrpc"], max_length=128), task)
    reference = getattr(transformers, HF_CLASSES[task]).from_pretrained(minilm_path).eval()
    with torch.no_grad():
        expected = reference(**{k: torch.from_numpy(v) for k, v in batch.items()}, output_hidden_states=True).hidden_states
    bound = get_backend(backend)
    model = mt.from_pretrained(minilm_path, task=task, backend=backend)
    bound.set_train(model, False)
    outputs = model(*[bound.to_tensor(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids")],
                    output_hidden_states=True)
    mask = batch["attention_mask"].reshape(-1, batch["attention_mask"].shape[-1])  # (B * C, T) for multiple choice
    assert len(outputs["hidden_states"]) == len(expected) == 7
    for ours, theirs in zip(outputs["hidden_states"], expected):
        assert tuple(ours.shape) == tuple(theirs.shape) == (*mask.shape, 384)
        assert max_abs_diff(theirs.numpy(), bound.to_numpy(ours), mask) <= TOLERANCE[backend]
    plain = bound.infer(model, batch)  # without hidden states (the [CLS]-only last layer for pooler heads)
    for name, value in plain.items():
        assert np.abs(value - bound.to_numpy(outputs[name])).max() <= TOLERANCE[backend], name
