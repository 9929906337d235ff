"""The MindSpore binding of the one definition against the torch binding, on real weights and text."""

import numpy as np
import pytest

import mindtransformer as mt
from mindtransformer.backends import get_backend
from mindtransformer.verify import max_abs_diff, task_inputs

TORCH, MINDSPORE = get_backend("torch"), get_backend("mindspore")
# Training runs: GRAPH in the default run; PYNATIVE (the same math, eager) with the slow tests.
GRAPH_BY_DEFAULT = pytest.mark.parametrize(
    "mindspore_mode", ["GRAPH", pytest.param("PYNATIVE", marks=pytest.mark.slow)], indirect=True)
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


@pytest.fixture(scope="module")
def batch(minilm_path, mrpc_pairs):
    first, second = mrpc_pairs
    return mt.load_tokenizer(minilm_path).encode_batch(first[:8], second[:8], max_length=128)


def twin_models(path, task, **overrides):
    """The same weights in both backends (new heads copied from torch into MindSpore)."""
    ours = mt.from_pretrained(path, task=task, **overrides)
    theirs = mt.from_pretrained(path, task=task, backend="mindspore", **overrides)
    MINDSPORE.load_arrays(theirs, TORCH.named_arrays(ours))
    return ours, theirs


@pytest.mark.parametrize("task", mt.TASK_NAMES)
def test_every_head_matches_torch(minilm_path, batch, task, mindspore_mode):
    ours, theirs = twin_models(minilm_path, task)
    inputs = task_inputs(batch, task)
    assert (inputs["attention_mask"] == 0).any(), "the batch must contain padding"
    expected, got = TORCH.infer(ours, inputs), MINDSPORE.infer(theirs, inputs)
    assert expected.keys() == got.keys()
    for name in expected:
        assert max_abs_diff(expected[name], got[name], inputs["attention_mask"]) <= 1e-4, name


def test_parameter_names_are_hf_names(minilm_path):
    ours, theirs = twin_models(minilm_path, "pretraining")
    assert list(MINDSPORE.parameter_shapes(theirs).items()) == list(TORCH.parameter_shapes(ours).items())


def labelled(batch, seed=0):
    rng = np.random.default_rng(seed)
    return {**batch, "labels": rng.integers(0, 2, size=len(batch["input_ids"])).astype(np.int64)}


def test_gradients_agree(minilm_path, batch):
    ours, theirs = twin_models(minilm_path, "sequence_classification", **NO_DROPOUT)
    data = labelled(batch)
    loss_t, grads_t = TORCH.loss_and_gradients(ours, data)
    loss_m, grads_m = MINDSPORE.loss_and_gradients(theirs, data)
    assert abs(loss_t - loss_m) < 1e-5
    assert grads_t.keys() == grads_m.keys() and len(grads_t) == 105
    for name, grad in grads_t.items():
        scale = float(np.abs(grad).max())
        if name.endswith("attention.self.key.bias"):
            # Exactly zero in exact arithmetic (softmax ignores a constant added to every score):
            # both sides must show only rounding noise.
            assert scale < 1e-8 and float(np.abs(grads_m[name]).max()) < 1e-8, name
        else:
            assert float(np.abs(grad - grads_m[name]).max()) <= 1e-4 * scale, name


@pytest.mark.slow  # by default the trainers' 20 AdamW steps on both backends are compared (test_finetune)
@pytest.mark.parametrize("mindspore_mode", ["GRAPH", "PYNATIVE"], indirect=True)
def test_twenty_adamw_steps_give_the_same_losses(minilm_path, batch, mindspore_mode):
    ours, theirs = twin_models(minilm_path, "sequence_classification", **NO_DROPOUT)
    step_t = TORCH.TrainStep(ours, TORCH.make_optimizer(ours, "adamw", 1e-4, 0.01))
    step_m = MINDSPORE.TrainStep(theirs, MINDSPORE.make_optimizer(theirs, "adamw", 1e-4, 0.01),
                                 jit=mindspore_mode == "GRAPH")
    data = labelled(batch)
    losses = [(step_t(data), step_m(data)) for _ in range(20)]
    assert losses[-1][0] < losses[0][0] * 0.5
    assert max(abs(a - b) for a, b in losses) <= 1e-3


@GRAPH_BY_DEFAULT
@pytest.mark.parametrize("optimizer", ["adamweightdecay", "lamb"])
def test_mindspore_optimizers_lower_the_loss(minilm_path, batch, optimizer, mindspore_mode):
    model = mt.from_pretrained(minilm_path, task="sequence_classification", backend="mindspore")
    step = MINDSPORE.TrainStep(model, MINDSPORE.make_optimizer(model, optimizer, 3e-3 if optimizer == "lamb" else 1e-4, 0.01),
                               jit=mindspore_mode == "GRAPH")
    data = labelled(batch, seed=1)
    losses = [step(data) for _ in range(8)]
    assert losses[-1] < losses[0] * 0.7, losses


@GRAPH_BY_DEFAULT
def test_fp16_mixed_precision_trains_finite(minilm_path, batch, mindspore_mode):
    """Cell.to_float(fp16) (what amp O2/O3 does to a BERT): the fp32 master weights are cast per
    op and the padding bias stays finite, so the loss is finite and near the fp32 one."""
    import mindspore as ms

    data = labelled(batch, seed=2)
    reference = mt.from_pretrained(minilm_path, task="sequence_classification", backend="mindspore", **NO_DROPOUT)
    fp32_loss, _ = MINDSPORE.loss_and_gradients(reference, data)
    model = mt.from_pretrained(minilm_path, task="sequence_classification", backend="mindspore", **NO_DROPOUT)
    MINDSPORE.load_arrays(model, MINDSPORE.named_arrays(reference))  # the same new classifier
    model.to_float(ms.float16)
    step = MINDSPORE.TrainStep(model, MINDSPORE.make_optimizer(model, "adamweightdecay", 1e-4, 0.01),
                               jit=mindspore_mode == "GRAPH")
    losses = [step(data) for _ in range(3)]
    assert np.isfinite(losses).all(), losses
    assert abs(losses[0] - fp32_loss) < 1e-2, (losses[0], fp32_loss)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("compiled", [True, False], ids=["jit", "eager"])
def test_mindspore_dropout_drops_at_its_rate_scales_the_rest_and_draws_anew_each_call(compiled):
    """Both backends' runs of one recipe differ only by their random draws (docs/benchmarks.md,
    "Are the two backends' recipes the same?"): so the draws must be right. A compiled graph bakes
    its dropout seed in; each call must still draw a new mask (else every step drops the same units)."""
    import mindspore as ms

    from mindtransformer.backends.mindspore import nn as ms_nn
    from mindtransformer.backends.mindspore import ops as ms_ops

    get_backend("mindspore").manual_seed(0)
    dropout = ms_nn.Dropout(0.1)
    dropout.set_train(True)
    ones = ms.Tensor(np.ones(200_000, np.float32))

    def hidden(x):
        return dropout(x)

    def attend(q):  # (B, N, T, H): the attention probabilities dropped at 0.5
        return ms_ops.attention(q, q, q, None, 0.5)

    if compiled:
        hidden, attend = ms.jit(hidden), ms.jit(attend)
    first, second = hidden(ones).asnumpy(), hidden(ones).asnumpy()
    for out in (first, second):
        assert abs((out == 0).mean() - 0.1) < 0.005  # 200k draws: the std of the fraction is 0.0007
        np.testing.assert_allclose(out[out != 0], 1 / 0.9, rtol=1e-6)
    assert not np.array_equal(first == 0, second == 0)
    # The attention probabilities' dropout, inside the one attention op.
    query = ms.Tensor(np.random.default_rng(0).standard_normal((2, 2, 16, 8)).astype(np.float32))
    assert not np.array_equal(attend(query).asnumpy(), attend(query).asnumpy())
