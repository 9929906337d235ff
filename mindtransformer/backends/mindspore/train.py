"""The MindSpore engine the training loop (trainer/loop.py) drives; the same methods as the torch
engine (backends/torch/train.py). Gradients of each micro-batch come from one forward+backward,
compiled (ms.jit, GRAPH mode, the default) or eager (PYNATIVE); the loss is scaled by 1 / micro-batches
before differentiation. In GRAPH mode the rest of a step is small compiled graphs too: summing the
micro-batches' gradients, the data-parallel sum (averaging.py: mindspore.communication's
AllReduce, whose CPU launch under mpirun trainer/distributed.prepare_mindspore sets up, or MPI's
on CPU under mpirun; the loss is also scaled by 1 / world size, so the sum is the mean), the
global gradient norm and the clipping; the update is the optimizer's (optim.py: one fused
kernel per parameter for AdamW). Run op by op, the norm and the update
took ~0.85 s of a 2 s MiniLM step (B 16, T 64), now ~0.2 s.

Dropout and exact resume: MindSpore's dropout keeps its seeds in per-kernel counters that no
API saves or restores. In PYNATIVE mode the engine reseeds before every micro-batch from
(seed, rank, micro-batches done), so the masks are a function of the position and a resumed run
continues bit for bit. A compiled graph bakes its seeds in at compile time: in GRAPH mode the
masks after a resume differ from the uninterrupted run (weights, optimizer, schedule and data
are still restored exactly; with dropout 0 the runs are identical).
"""

from __future__ import annotations

import contextlib
import os

import mindspore as ms
import numpy as np
from mindspore import ops

from mindtransformer.backends import mpi
from mindtransformer.backends.common import forward_arguments
from mindtransformer.backends.mindspore import make_optimizer, named_arrays, read_checkpoint, write_checkpoint
from mindtransformer.backends.mindspore.averaging import sum_over_ranks
from mindtransformer.errors import CollectiveError, UserInputError, first_line


# Per-gradient pieces of a step, as graphs that HyperMap applies to every gradient: compiled once
# per distinct shape (0.3 s for MiniLM's norm) where a Python loop over the gradients would be
# unrolled (3.6 s).
_SQUARE_SUM = ops.MultitypeFuncGraph("square_sum")
_ADD = ops.MultitypeFuncGraph("add")
_SCALE = ops.MultitypeFuncGraph("scale")


@_SQUARE_SUM.register("Tensor")
def _square_sum(gradient):
    return ops.sum(gradient * gradient)


@_ADD.register("Tensor", "Tensor")
def _add(total, gradient):
    return total + gradient


@_SCALE.register("Tensor", "Tensor")
def _scale(factor, gradient):
    return gradient * factor


class Engine:
    def __init__(self, model, world, optimizer: str = "adamw", learning_rate: float = 1e-4,
                 weight_decay: float = 0.01, adam_epsilon: float = 1e-6, clip_grad_norm: float = 1.0,
                 precision: str = "fp32",
                 device_target: str = "CPU", num_threads: int = 0, jit: bool = True, seed: int = 0,
                 allreduce: str = "auto"):
        if precision == "bf16" and device_target == "CPU":
            raise UserInputError("--precision=bf16 with --backend=mindspore: MindSpore 2.10 has no bf16 LayerNorm "
                                 "kernel on CPU; use --precision=fp32, or --backend=torch for bf16")
        if precision == "fp16":
            raise UserInputError("--precision=fp16 with --backend=mindspore is not supported by this trainer; "
                                 "use fp32 (or --backend=torch)")
        self.world, self.model = world, model
        if ms.get_context("device_target") != device_target:
            ms.set_context(device_target=device_target)
        if num_threads:
            ms.set_context(runtime_num_threads=num_threads)
        if world.size > 1:
            from mindspore.communication import init

            init()  # the scheduler and MS_* variables were prepared before mindspore was imported
            self._all_reduce_op = ops.AllReduce()  # SUM: the only reduction CPU offers
            self._sum_over_ranks, transport = sum_over_ranks(world, allreduce, device_target)
            mpi.announce(world, transport, "mindspore.communication's AllReduce")
        self.optimizer = make_optimizer(model, optimizer, learning_rate, weight_decay, adam_epsilon)
        self.parameters = list(self.optimizer.parameters)
        self.clip_grad_norm = clip_grad_norm

        compiled = ms.jit if jit else (lambda function: function)
        each = ops.HyperMap()

        def weighted_loss(weight, *args):  # weight: () float32, 1 / (micro-batches per step x world size)
            loss = model(*args)["loss"]
            return loss * weight, loss  # differentiated: the first; the second rides along (has_aux)

        grad_fn = ms.value_and_grad(weighted_loss, None, self.parameters, has_aux=True)

        def weighted_gradients(weight, *args):  # -> loss (), gradients of loss * weight
            (_, loss), grads = grad_fn(weight, *args)
            return loss, grads

        def add(sums, grads):
            return each(_ADD, sums, grads)

        def scale(grads, factor):  # factor: () float32
            return each(ops.partial(_SCALE, factor), grads)

        def global_norm(grads):  # () float32: the L2 norm of all gradients together
            return ops.sqrt(ops.addn(each(_SQUARE_SUM, grads)))

        self._gradients, self._add = compiled(weighted_gradients), compiled(add)
        self._scale, self._global_norm = compiled(scale), compiled(global_norm)
        self.jit, self.seed = jit, seed
        self.micro_batches = 0  # done so far (kept in checkpoints): the PYNATIVE dropout seed
        self._sums = None

    def _inputs(self, batch: dict) -> list:
        return [None if v is None else ms.Tensor(np.ascontiguousarray(v)) for v in forward_arguments(self.model, batch)]

    def forward_backward(self, batch: dict, weight: float) -> float:
        self.model.set_train(True)
        if not self.jit:
            ms.set_seed((self.seed * 1_000_003 + self.world.rank * 7919 + self.micro_batches) % 2**31)
        self.micro_batches += 1
        # Scaled by 1 / world size too: the sum over the ranks (step) is then the mean.
        loss, grads = self._gradients(ms.Tensor(weight / self.world.size, ms.float32), *self._inputs(batch))
        self._sums = grads if self._sums is None else self._add(ms.mutable(self._sums), ms.mutable(grads))
        return float(loss.asnumpy())

    def step(self, learning_rate: float, local_loss: float, step: int) -> dict:
        grads, self._sums = self._sums, None
        loss = local_loss
        if self.world.size > 1:
            try:
                grads, loss_sum = self._sum_over_ranks(grads, local_loss, step)
            except RuntimeError as err:
                self._collective_failed(err, step)
            loss = loss_sum / self.world.size
        grads = ms.mutable(tuple(grads))  # mutable: a tuple of tensors is otherwise a constant of the graph
        norm = float(self._global_norm(grads).asnumpy())
        skipped = not np.isfinite(norm)
        if not skipped:
            if self.clip_grad_norm > 0 and norm > self.clip_grad_norm:
                grads = ms.mutable(self._scale(grads, ms.Tensor(self.clip_grad_norm / (norm + 1e-6), ms.float32)))
            _set_learning_rate(self.optimizer, learning_rate)
            self.optimizer(grads)  # mutable: MindSpore's own optimizers are compiled
        return {"loss": loss, "grad_norm": norm, "skipped": skipped}

    def evaluate(self, batch: dict) -> float:
        self.model.set_train(False)
        return float(self.model(*self._inputs(batch))["loss"].asnumpy())

    def outputs(self, batch: dict) -> dict:
        """The model's outputs (loss when labels are given, logits, ...) as float32 numpy arrays."""
        self.model.set_train(False)
        return {k: v.astype(ms.float32).asnumpy() for k, v in self.model(*self._inputs(batch)).items()}

    def all_sum(self, values: list, step: int) -> list:
        if self.world.size == 1:
            return list(values)
        return self._all_reduce(ms.Tensor(np.asarray(values, np.float32)), step).asnumpy().tolist()

    def _all_reduce(self, tensor, step: int):
        try:
            return self._all_reduce_op(tensor)
        except RuntimeError as err:
            self._collective_failed(err, step)

    def _collective_failed(self, err, step: int):
        raise CollectiveError(f"rank {self.world.rank}: the all-reduce of step {step} failed: another rank "
                              f"stopped or stopped answering ({first_line(err)})") from None

    def barrier(self) -> None:
        if self.world.size > 1:
            self._all_reduce(ms.Tensor(np.zeros(1, np.float32)), -1).asnumpy()

    def close(self) -> None:
        if self.world.size > 1:
            from mindspore.communication import release

            release()

    # ---- checkpoints -----------------------------------------------------------------------

    def _state_parameters(self) -> dict:
        """Every Parameter of the model and the optimizer (moments, step counters), by name."""
        found = {p.name: p for _, p in self.model.parameters_and_names()}
        found.update({p.name: p for _, p in self.optimizer.parameters_and_names()})
        return found

    def save(self, directory: str) -> dict:
        if self.world.is_main:
            write_checkpoint({name: p.asnumpy() for name, p in self._state_parameters().items()},
                             os.path.join(directory, "state.ckpt"))
        return {"micro_batches": self.micro_batches}

    def load(self, directory: str, state: dict) -> None:
        arrays = read_checkpoint(os.path.join(directory, "state.ckpt"))
        params = self._state_parameters()
        missing = sorted(set(params) - set(arrays))
        if missing:
            raise UserInputError(f"{directory}/state.ckpt lacks {len(missing)} parameters (first: {missing[0]}); "
                                 "it was written for another optimizer or model: resume with the same flags")
        for name, p in params.items():
            # In place, as the learning rate (see _set_learning_rate).
            ops.assign(p, ms.Tensor(arrays[name].reshape(p.shape), dtype=p.dtype))
        self.micro_batches = int(state.get("micro_batches", 0))

    def full_parameters(self):
        """A context in which every parameter is whole on this rank (always, here; ZeRO-3 gathers)."""
        return contextlib.nullcontext()

    def named_arrays(self) -> dict:
        return named_arrays(self.model)


def _set_learning_rate(optimizer, value: float) -> None:
    """The schedule is computed in Python; every optimizer here keeps its rate in the Parameter
    `learning_rate`, assigned in place (MindSpore's compiled optimizers ignore a
    Parameter.set_data once they ran: tested)."""
    ops.assign(optimizer.learning_rate, ms.Tensor(np.float32(value)))
