"""A step's weight gradients made once per step (backends/torch/weight_grads.py) equal autograd's
per-micro-batch ones: in fp32 to float rounding, in bf16 within bf16 rounding; the forward pass
is unchanged bit for bit; a frozen weight and an exhausted budget take autograd's way."""

import numpy as np
import pytest
import torch

from mindtransformer.backends.torch import weight_grads
from mindtransformer.models.bert import bert_tiny, build_model
from tests.models.test_heads import V, tiny_inputs

MICRO_BATCHES = 3


def model_and_batches():
    torch.manual_seed(0)
    model = build_model(bert_tiny(vocab_size=V, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                        "pretraining", "torch")
    batches = []
    for seed in range(MICRO_BATCHES):
        inputs = tiny_inputs("pretraining", seed=seed)
        positions = np.array([[1, 2], [3, 4], [5, 1]], dtype=np.int64)
        batches.append({k: torch.from_numpy(v) for k, v in {
            **inputs, "labels": np.take_along_axis(inputs["input_ids"], positions, axis=1),
            "next_sentence_label": np.array([0, 1, 0]), "masked_lm_positions": positions}.items()})
    return model, batches


def accumulated(precision, collection=None):
    """(per-parameter gradients, first micro-batch's loss) of MICRO_BATCHES micro-batches."""
    model, batches = model_and_batches()
    losses = []
    with collection if collection is not None else torch.enable_grad():
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(**batch)["loss"]
            (loss.float() / MICRO_BATCHES).backward()
            losses.append(loss.detach())
        if collection is not None:
            collection.flush()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, losses


def test_fp32_gradients_equal_autograd_and_the_forward_is_unchanged():
    ours, our_losses = accumulated("fp32", weight_grads.Deferred())
    theirs, their_losses = accumulated("fp32")
    assert ours.keys() == theirs.keys() and len(ours) > 20
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-7)
    assert all(torch.equal(a, b) for a, b in zip(our_losses, their_losses))


def test_bf16_gradients_are_autograds_within_bf16_rounding_and_the_forward_is_unchanged():
    exact, _ = accumulated("fp32")
    ours, our_losses = accumulated("bf16", weight_grads.Deferred())
    theirs, their_losses = accumulated("bf16")
    assert all(torch.equal(a, b) for a, b in zip(our_losses, their_losses))  # the same casts and matmuls
    largest = max(float(g.norm()) for g in exact.values())
    for name in exact:
        scale = float(exact[name].norm())
        if scale < 1e-4 * largest:  # e.g. the key biases': zero in exact arithmetic, rounding noise here
            continue
        our_error, their_error = (float((g[name] - exact[name]).norm() / scale) for g in (ours, theirs))
        assert our_error < 2e-2 and our_error < 3 * their_error + 2e-3, (name, our_error, their_error)


def test_past_the_budget_gradients_are_added_at_once():
    collection = weight_grads.Deferred(budget_bytes=0)
    ours, _ = accumulated("fp32", collection)
    theirs, _ = accumulated("fp32")
    assert collection.kept_bytes == 0
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-7)


def test_a_frozen_weight_gets_no_gradient_and_its_layer_still_trains_its_input():
    torch.manual_seed(0)
    frozen, trained = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)
    frozen.weight.requires_grad_(False)
    x = torch.randn(5, 4)
    with weight_grads.Deferred() as collection:
        out = weight_grads.linear(weight_grads.linear(x, (frozen.weight,), frozen.bias), (trained.weight,), trained.bias)
        out.square().sum().backward()
        assert trained.weight.grad is None  # deferred until the flush
        collection.flush()
    assert frozen.weight.grad is None and frozen.bias.grad is not None
    reference = (trained(frozen(x))).square().sum()
    expected = torch.autograd.grad(reference, trained.weight)[0]
    torch.testing.assert_close(trained.weight.grad, expected)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_outside_a_collection_or_without_gradients_layers_are_plain_linear(precision):
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 4)
    x = torch.randn(2, 3, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
        assert torch.equal(weight_grads.linear(x, (layer.weight,), layer.bias), expected)
        with weight_grads.Deferred(), torch.no_grad():
            assert torch.equal(weight_grads.linear(x, (layer.weight,), layer.bias), expected)
    assert weight_grads._active is None


def test_an_embedding_table_gets_autograds_rows_and_none_for_its_padding_row():
    torch.manual_seed(0)
    table = torch.nn.Parameter(torch.randn(7, 4))
    ids = [torch.tensor([[1, 2, 2, 0], [3, 0, 1, 6]]), torch.tensor([[6, 6, 0, 5]])]  # repeats and padding (0)
    with weight_grads.Deferred() as collection:
        for batch in ids:
            (weight_grads.embedding(batch, table, padding_idx=0) * torch.arange(4.0)).sum().backward()
        assert table.grad is None  # deferred until the flush
        collection.flush()
    reference = torch.nn.Parameter(table.detach().clone())
    for batch in ids:
        (torch.nn.functional.embedding(batch, reference, padding_idx=0) * torch.arange(4.0)).sum().backward()
    assert torch.equal(table.grad, reference.grad) and not table.grad[0].any()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_weights_cast_for_a_step_are_this_steps_weights_in_memory_kept_from_the_last(precision):
    """With the caller's WeightCasts, each step's stacked weights are the weights as they are
    now (after the update), written into the memory of the last step's."""
    torch.manual_seed(0)
    query, key = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)
    casts, pointers = weight_grads.WeightCasts(), set()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    for _ in range(2):
        with weight_grads.Deferred(casts=casts) as collection:
            stacked = collection.stacked((query.weight, key.weight), dtype)
            assert torch.equal(stacked, torch.cat([query.weight, key.weight]).to(dtype))
            pointers.add(stacked.data_ptr())
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                weight_grads.linear(torch.randn(3, 6), (query.weight, key.weight), None).sum().backward()
            collection.flush()
        with torch.no_grad():  # the update
            query.weight -= 0.1 * query.weight.grad
            key.weight -= 0.1 * key.weight.grad
    assert len(pointers) == 1
