"""The engines' step contract on both backends: the schedule's rate is what the update uses, and
a step with a non-finite gradient is skipped (parameters untouched) and reported."""

import numpy as np
import pytest

from mindtransformer.backends import get_backend
from mindtransformer.models.bert import bert_tiny, build_model
from mindtransformer.trainer.distributed import World
from tests.models.test_heads import B, T, V, tiny_inputs

BACKENDS = ["torch", "mindspore"]


def engine_for(backend, **options):
    import importlib

    get_backend(backend).manual_seed(0)
    model = build_model(bert_tiny(vocab_size=V, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                        "pretraining", backend)
    extra = {"jit": False} if backend == "mindspore" else {}  # eager: compiled graphs are never freed
    return importlib.import_module(f"mindtransformer.backends.{backend}.train").Engine(model, World(), **options, **extra)


def batch():
    inputs = tiny_inputs("pretraining")
    positions = np.array([[1, 2], [3, 4], [5, 1]], dtype=np.int64)
    labels = np.take_along_axis(inputs["input_ids"], positions, axis=1)
    return {**inputs, "labels": labels, "next_sentence_label": np.array([0, 1, 0]), "masked_lm_positions": positions}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_the_rate_given_to_step_is_the_rate_applied(backend, optimizer):
    engine = engine_for(backend, optimizer=optimizer, learning_rate=1e-3, weight_decay=0.01)
    moved = []
    for rate in (1e-3, 0.0, 1e-2):
        before = engine.named_arrays()
        loss = engine.forward_backward(batch(), 1.0)
        result = engine.step(rate, loss, 0)
        after = engine.named_arrays()
        assert not result["skipped"] and np.isfinite(result["grad_norm"])
        moved.append(max(float(np.abs(after[k] - before[k]).max()) for k in before))
    assert moved[1] == 0.0  # rate 0: nothing moves (weight decay is scaled by the rate too)
    assert moved[0] > 0 and moved[2] > 5 * moved[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_epsilon_is_the_one_in_the_first_update(backend):
    """AdamW's first update is lr * g / (|g| + eps) (bias-corrected moments: m = g, v = g^2). From
    the same start, the |g| that each of two epsilons implies must be the same gradient."""
    rate, implied = 1e-2, []
    for eps in (1e-3, 1e-2):
        engine = engine_for(backend, learning_rate=rate, weight_decay=0.0, clip_grad_norm=0.0, adam_epsilon=eps)
        before = engine.named_arrays()
        engine.step(rate, engine.forward_backward(batch(), 1.0), 0)
        ratio = {k: np.abs(v - before[k]).astype(np.float64) / rate for k, v in engine.named_arrays().items()}
        implied.append({k: (eps * r / np.maximum(1 - r, 1e-12), r) for k, r in ratio.items()})
    checked = 0
    for name, (gradient, r) in implied[0].items():
        other, r_other = implied[1][name]
        usable = (r > 0.05) & (r < 0.95) & (r_other > 0.05) & (r_other < 0.95)  # both well conditioned
        np.testing.assert_allclose(gradient[usable], other[usable], rtol=1e-2, err_msg=name)
        checked += int(usable.sum())
    assert checked > 100


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_resumed_engine_steps_with_its_own_epsilon_and_weight_decay(backend, tmp_path):
    """A checkpoint brings back the optimizer's moments; epsilon and weight decay are this run's
    flags, as the rate is (torch's optimizer state also holds the saved run's values, which must
    not win): engines resumed from one checkpoint step alike with the same flags, apart with others."""
    options = dict(learning_rate=1e-2, clip_grad_norm=0.0)
    engine = engine_for(backend, adam_epsilon=1e-6, weight_decay=0.0, **options)
    engine.step(1e-2, engine.forward_backward(batch(), 1.0), 0)
    state = engine.save(str(tmp_path))
    moved = []
    for eps, decay in ((1e-6, 0.0), (1e-6, 0.0), (1e-1, 0.0), (1e-6, 0.5)):
        resumed = engine_for(backend, adam_epsilon=eps, weight_decay=decay, **options)
        resumed.load(str(tmp_path), state)
        before = resumed.named_arrays()
        resumed.step(1e-2, resumed.forward_backward(batch(), 1.0), 1)
        moved.append({k: v - before[k] for k, v in resumed.named_arrays().items()})
    assert same_update(moved[0], moved[1])
    assert not same_update(moved[0], moved[2]) and not same_update(moved[0], moved[3])


@pytest.mark.parametrize("backend, optimizer", [("torch", "adamw"), ("torch", "lamb"), ("mindspore", "adamw"),
                                                ("mindspore", "lamb"), ("mindspore", "adamweightdecay")])
def test_every_optimizer_takes_the_epsilon_given(backend, optimizer):
    """The same first step with the same epsilon, another with eps = 1 (g / (|g| + 1) instead of
    about sign(g): LAMB's trust ratio rescales the update but keeps that direction)."""
    moved = []
    for eps in (1e-8, 1e-8, 1.0):
        engine = engine_for(backend, optimizer=optimizer, learning_rate=1e-2, weight_decay=0.0, clip_grad_norm=0.0,
                            adam_epsilon=eps)
        before = engine.named_arrays()
        engine.step(1e-2, engine.forward_backward(batch(), 1.0), 0)
        moved.append({k: v - before[k] for k, v in engine.named_arrays().items()})
    assert same_update(moved[0], moved[1]) and not same_update(moved[0], moved[2])


def same_update(a: dict, b: dict) -> bool:
    return all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-9) for k in a)


@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
@pytest.mark.parametrize("limit", [1e-3, 1e3])  # every step clipped / none
def test_torch_clipping_updates_as_clip_grad_norm_then_step(optimizer, limit):
    """The fused AdamW gets the clip factor as its grad_scale instead of a pass over the gradients;
    the update is torch's clip_grad_norm_ + step, to float rounding."""
    import torch

    engine = engine_for("torch", optimizer=optimizer, learning_rate=1e-2, clip_grad_norm=limit)
    reference = engine_for("torch", optimizer=optimizer, learning_rate=1e-2, clip_grad_norm=0.0)  # same init
    for step in range(3):
        result = engine.step(1e-2, engine.forward_backward(batch(), 1.0), step)
        reference.forward_backward(batch(), 1.0)
        norm = float(torch.nn.utils.clip_grad_norm_(reference.parameters, limit))
        reference.optimizer.step()
        reference.optimizer.zero_grad(set_to_none=True)
        assert result["grad_norm"] == pytest.approx(norm, rel=1e-5)
        assert (norm > limit) == (limit < 1)
    ours, theirs = engine.named_arrays(), reference.named_arrays()
    assert max(float(np.abs(ours[k] - theirs[k]).max()) for k in ours) < 1e-6
    assert max(float(np.abs(ours[k] - before).max()) for k, before in engine_for("torch").named_arrays().items()) > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_with_a_non_finite_gradient_is_skipped_and_reported(backend):
    engine = engine_for(backend, learning_rate=1e-3)
    before = engine.named_arrays()
    loss = engine.forward_backward(batch(), 1.0)
    if backend == "torch":
        engine.parameters[0].grad[0, 0] = float("nan")
    else:
        import mindspore as ms

        engine._sums = (engine._sums[0] * ms.Tensor(np.float32("inf")), *engine._sums[1:])
    result = engine.step(1e-3, loss, 0)
    assert result["skipped"] and not np.isfinite(result["grad_norm"])
    after = engine.named_arrays()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    # The next step is a normal one again.
    assert not engine.step(1e-3, engine.forward_backward(batch(), 1.0), 1)["skipped"]


def test_torch_bf16_autocast_trains_with_fp32_master_weights():
    engine = engine_for("torch", learning_rate=1e-3, precision="bf16")
    losses = []
    for step in range(3):
        loss = engine.forward_backward(batch(), 1.0)
        assert not engine.step(1e-3, loss, step)["skipped"]
        losses.append(loss)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in engine.parameters)


def count_weight_casts(parameters):
    """A dispatch mode counting the casts of these parameters' matrices (biases are cheap): a cast
    (_to_copy), or a copy into bf16 memory kept from the last step (copy_)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountWeightCasts(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ids, self.count = {id(p) for p in parameters}, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            sources = ([args[1]] if func is torch.ops.aten.copy_.default
                       else [args[0]] if func is torch.ops.aten._to_copy.default else [])
            self.count += sum(1 for t in sources if id(t) in self.ids and t.dim() == 2)
            return func(*args, **(kwargs or {}))

    return CountWeightCasts()


def test_torch_bf16_casts_each_weight_once_per_step_and_accumulates_the_gradients(monkeypatch):
    """With gradient accumulation on a CPU the engine makes each linear weight's gradient once per
    step (weight_grads.py), casting each weight to bf16 once per step; the accumulated gradients
    equal those of torch's usual pattern (autocast and a backward per micro-batch) within bf16
    rounding, and are all in .grad when the update starts."""
    import torch

    from mindtransformer.backends.torch import train

    # torch's optimizer.step (replaced below), not the C update that writes the casts itself (tested apart)
    monkeypatch.setattr(train.adamw, "can_step", lambda optimizer: False)
    engine = engine_for("torch", learning_rate=1e-3, precision="bf16", clip_grad_norm=0.0)  # .grad unclipped
    counter = count_weight_casts(engine.parameters)
    micro_batches = 3
    with counter:
        losses = [engine.forward_backward(batch(), 1.0 / micro_batches) for _ in range(micro_batches)]
    linear_weights = sum(1 for m in engine.model.modules() if isinstance(m, torch.nn.Linear))
    # each weight matrix once per step, whatever the micro-batches: the Linear layers' and the word
    # embeddings' (the MLM decoder's tied weight)
    assert counter.count == linear_weights + 1

    reference = engine_for("torch", learning_rate=1e-3, precision="bf16")  # the same seed, the same weights
    for _ in range(micro_batches):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = reference.model(*reference._inputs(batch()))["loss"]
        (loss.float() / micro_batches).backward()
    seen = {}
    engine.optimizer.step = lambda: seen.update({id(p): p.grad.clone() for p in engine.parameters})
    engine.step(1e-3, sum(losses) / micro_batches, 0)
    for ours, theirs in zip(engine.parameters, reference.parameters):
        torch.testing.assert_close(seen[id(ours)], theirs.grad, rtol=2e-2, atol=1e-3)
    # The next step casts the changed weights afresh (here one micro-batch: autocast's own casts).
    before = counter.count
    with counter:
        engine.forward_backward(batch(), 1.0)
    assert counter.count - before == before


@pytest.mark.parametrize("limit", [1e-3, 0.0])  # every step clipped (the factor in the C update) / no clipping
def test_torch_bf16_steps_with_the_c_update_as_with_torchs_adamw_and_casts(monkeypatch, limit):
    """A bf16 step on a CPU updates with adamw.step (C), which also writes the weights' bf16 copies
    for the next forward pass and zeroes the gradients: the losses and weights of three steps are
    those of torch's fused AdamW, zero_grad and casts of the weights (bit for bit but for a
    tensor's last size % 16 values: tests/backends/test_torch_adamw.py)."""
    import torch

    from mindtransformer.backends.torch import adamw, train

    runs = {}
    for c_update in (True, False):
        if not c_update:
            monkeypatch.setattr(train.adamw, "can_step", lambda optimizer: False)
        engine = engine_for("torch", learning_rate=1e-2, weight_decay=0.01, precision="bf16", clip_grad_norm=limit)
        assert adamw.can_step(engine.optimizer) == c_update
        losses = []
        for step in range(3):
            counter = count_weight_casts(engine.parameters)
            with counter:
                losses.append(engine.forward_backward(batch(), 1.0))
            # after the C update, the copies it wrote; else each weight cast afresh
            assert (counter.count == 0) == (c_update and step > 0)
            assert not engine.step(1e-2, losses[-1], step)["skipped"]
            assert all(not p.grad.any() for p in engine.parameters)
        runs[c_update] = losses, engine.named_arrays()
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-6) and len(set(runs[True][0])) == 3
    for name, theirs in runs[False][1].items():
        np.testing.assert_allclose(runs[True][1][name], theirs, rtol=1e-6, atol=1e-9, err_msg=name)


def test_torch_fp16_dynamic_loss_scaling_skips_overflowing_steps_and_lowers_the_scale(tmp_path):
    """fp16 is a GPU setting for users (settings.check), but the engine's loss scaling is the same
    code on any device: here on CPU, a scale so large that the fp16 backward overflows."""
    engine = engine_for("torch", learning_rate=1e-3, precision="fp16")
    assert not engine.step(1e-3, engine.forward_backward(batch(), 1.0), 0)["skipped"]  # the default scale fits
    engine.scaler.update(2.0 ** 40)  # the scaler's own API for setting the scale
    before = engine.named_arrays()
    results = []
    for step in range(1, 40):
        results.append(engine.step(1e-3, engine.forward_backward(batch(), 1.0), step))
        if not results[-1]["skipped"]:
            break
        now = engine.named_arrays()
        assert all(np.array_equal(before[k], now[k]) for k in before)  # a skipped step changes nothing
    skipped = [r for r in results if r["skipped"]]
    assert skipped and not results[-1]["skipped"], results  # overflowed first, then trained
    assert [r["loss_scale"] for r in skipped] == [2.0 ** (39 - i) for i in range(len(skipped))]  # halved each time
    assert all(not np.isfinite(r["grad_norm"]) for r in skipped) and np.isfinite(results[-1]["grad_norm"])
    after = engine.named_arrays()
    assert any(not np.array_equal(before[k], after[k]) for k in before)  # the one applied step moved them
    # Parameters stay fp32 (master weights); only the forward and backward ran in fp16.
    assert all(p.dtype == np.dtype("float32") for p in after.values())
    # The scale is part of a checkpoint: a resumed engine continues from it.
    state = engine.save(str(tmp_path))
    resumed = engine_for("torch", learning_rate=1e-3, precision="fp16")
    resumed.load(str(tmp_path), state)
    assert resumed.scaler.get_scale() == engine.scaler.get_scale() == skipped[-1]["loss_scale"]


def test_mindspore_refuses_bf16_on_cpu_with_the_reason():
    from mindtransformer.errors import UserInputError

    with pytest.raises(UserInputError, match="no bf16 LayerNorm kernel on CPU"):
        engine_for("mindspore", precision="bf16")


@pytest.mark.parametrize("world, device, reason", [
    (World(rank=0, size=2, launcher="torchrun"), "CPU", "started by torchrun, not mpirun"),
    (World(rank=0, size=2, launcher="mpirun"), "GPU", "--device_target=GPU"),
])
def test_mpi_averaging_is_refused_where_it_cannot_apply(world, device, reason):
    from mindtransformer.backends.mpi import transport
    from mindtransformer.errors import UserInputError

    with pytest.raises(UserInputError, match=f"--allreduce=mpi: .*{reason}.*use --allreduce=framework"):
        transport(world, "mpi", device)
    assert transport(world, "auto", device) == "framework"


@pytest.mark.parametrize("compiled", [True, False], ids=["graph", "pynative"])
def test_mindspore_gradients_can_be_summed_in_place_through_asnumpy(compiled):
    """averaging._mpi_sum all-reduces each gradient in place on its asnumpy() array: that array
    must be the tensor's own memory, and what is written there must be what the step then reads."""
    import mindspore as ms

    from mindtransformer.backends.mindspore.train import Engine

    get_backend("mindspore").manual_seed(0)
    model = build_model(bert_tiny(vocab_size=V, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                        "pretraining", "mindspore")
    engine = Engine(model, World(), jit=compiled)
    engine.forward_backward(batch(), 1.0)
    gradients = engine._sums
    for gradient in gradients:
        gradient.asnumpy()[...] = 2.0
    size = sum(int(np.prod(g.shape)) for g in gradients)
    norm = float(engine._global_norm(ms.mutable(gradients)).asnumpy())
    assert norm == pytest.approx(2.0 * size ** 0.5, rel=1e-6)
