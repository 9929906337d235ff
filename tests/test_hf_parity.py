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
