"""SVD-LoRA on the real MiniLM checkpoint and real SST-2 sentences: the cubic budget, sensitivity
scores from real gradients, ranks that shrink to the budget and stay pruned while training goes
on, the orthogonality penalty, and merging into plain weights with the same outputs."""

import numpy as np
import pytest
import torch

from mindtransformer.backends import get_backend
from mindtransformer.backends.torch.rank_budget import Sensitivity
from mindtransformer.models.bert import modeling_for
from mindtransformer.models.bert.lora import parameter_counts
from mindtransformer.models.bert.svd_lora import (SvdLoraSettings, apply_svd_lora, budget, merge_svd_lora, prune,
                                                  ranks, svd_layers)
from mindtransformer.pretrained import from_pretrained

TORCH = get_backend("torch")


@pytest.fixture(scope="module")
def batch(minilm_path, sst2_sentences):
    from mindtransformer.data.tokenization import load_tokenizer

    inputs = load_tokenizer(minilm_path).encode_batch(sst2_sentences[:16], max_length=48)
    inputs["labels"] = np.arange(16) % 2
    return inputs


def test_the_budget_falls_cubically_from_warmup_to_final():
    values = [budget(step, 120, 40, warmup=10, final=70) for step in range(0, 101)]
    assert values[:11] == [120] * 11 and values[70:] == [40] * 31
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[40] == 40 + int(80 * 0.5 ** 3)


def test_ranks_shrink_to_the_budget_and_stay_pruned(minilm_path, batch):
    torch.manual_seed(0)
    model = from_pretrained(minilm_path, task="sequence_classification")
    settings = SvdLoraSettings(init_rank=6, target_rank=2, dropout=0.0)
    apply_svd_lora(model, settings)
    layers = svd_layers(model)
    assert len(layers) == 12 and set(ranks(model).values()) == {6}
    # trainable: P, Q and E of each layer (6 x (384 + 384 + 1)) and the classifier
    assert parameter_counts(model)["trainable"] == 12 * 6 * (384 + 384 + 1) + 384 * 2 + 2
    wrapped = modeling_for("torch").OrthogonalityRegularized(model, list(layers.values()), 0.1)
    sensitivity = Sensitivity(layers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    inputs = [torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids", "labels")]
    penalties = []
    for step in range(1, 9):
        wrapped.train()
        loss = wrapped(*inputs)["loss"]
        penalties.append(float(sum(layer.orthogonality().detach() for layer in layers.values())))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        keep = budget(step, 72, 24, warmup=2, final=6)
        prune(model, sensitivity.numpy(), keep)
        assert sum(ranks(model).values()) == keep
    assert sum(ranks(model).values()) == 24 and penalties[-1] < penalties[0]
    arrays = {name: TORCH.named_arrays(layer) for name, layer in layers.items()}
    for name, a in arrays.items():  # pruned singular values are zero, and they stayed zero through training
        assert np.all(a["lora_E"][a["rank_mask"] == 0] == 0), name
    # merging gives the same outputs as the adapted model
    model.eval()
    expected = model(*inputs[:3])["logits"].detach().numpy()
    merge_svd_lora(model)
    assert not any("lora" in n for n, _ in model.named_parameters())
    np.testing.assert_allclose(model(*inputs[:3])["logits"].detach().numpy(), expected, atol=1e-5)
