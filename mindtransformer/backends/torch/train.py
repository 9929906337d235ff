"""The torch engine the training loop (trainer/loop.py) drives: gradient accumulation,
data-parallel averaging (torch.distributed, or MPI on CPU under mpirun: backends/mpi.py),
clipping, bf16 autocast, fp16 loss scaling, the optimizer, and the engine's part of a checkpoint.
The MindSpore engine has the same methods.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import os

import numpy as np
import torch

from mindtransformer.backends import mpi
from mindtransformer.backends.common import forward_arguments
from mindtransformer.backends.torch import adamw, bf16_gemm, make_optimizer, named_arrays, weight_grads
from mindtransformer.errors import CollectiveError, UserInputError, first_line
from mindtransformer.utils.heap import keep_freed_blocks


class Engine:
    def __init__(self, model, world, optimizer: str = "adamw", learning_rate: float = 1e-4,
                 weight_decay: float = 0.01, adam_epsilon: float = 1e-6, clip_grad_norm: float = 1.0,
                 precision: str = "fp32",
                 device_target: str = "CPU", num_threads: int = 0, allreduce: str = "auto"):
        if num_threads:
            torch.set_num_threads(num_threads)
        self.world = world
        self.device = torch.device("cuda", world.local_rank) if device_target == "GPU" else torch.device("cpu")
        if self.device.type == "cpu":
            keep_freed_blocks()  # large per-step tensors are not page-faulted in afresh every step
        self.model = model.to(self.device)
        self.optimizer = make_optimizer(model, optimizer, learning_rate, weight_decay, adam_epsilon)
        self.clip_grad_norm = clip_grad_norm
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        # fp16 needs dynamic loss scaling. Users get fp16 on GPU only (settings.check refuses it on
        # CPU, where it is slow); the scaling itself is device-neutral, and tested on CPU.
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self._flat_grads, self._transport = None, None
        self._step_weight_grads = None  # the step's weight_grads.Deferred, when it accumulates micro-batches
        self._weight_casts = weight_grads.WeightCasts()  # its weights in the forward's dtype, kept from step to step
        self._adds_into_grads = (self.device.type == "cpu" and self.autocast_dtype == torch.bfloat16
                                 and bf16_gemm.available())
        if world.size > 1:
            collectives = "nccl" if self.device.type == "cuda" else "gloo"
            _join(world, collectives)  # also for metrics, barriers and failure detection under MPI
            self._flat_grads = _flat_gradient_views(self.parameters)
            self._transport = mpi.transport(world, allreduce, device_target)
            mpi.announce(world, self._transport, f"torch.distributed ({collectives})")

    # ---- one optimizer step = forward_backward on each micro-batch, then step -------------------

    def _inputs(self, batch: dict) -> list:
        return [None if v is None else torch.from_numpy(np.ascontiguousarray(v)).to(self.device)
                for v in forward_arguments(self.model, batch)]

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def forward_backward(self, batch: dict, weight: float) -> float:
        """Loss of one micro-batch; its gradient times `weight` (1 / micro-batches per step) is added
        (the linear layers' weight gradients at the end of the step, when it has several)."""
        self.model.train()
        if self.device.type == "cpu" and self._step_weight_grads is None:
            if weight < 1.0:
                # Several micro-batches on a CPU: each linear weight is cast to bf16 once and gets
                # its gradient from one matmul per step (weight_grads.py); on a GPU autograd's stay.
                self._step_weight_grads = weight_grads.Deferred(casts=self._weight_casts)
            elif self._adds_into_grads:
                # One micro-batch in bf16: nothing to keep (budget 0), but each weight gradient is
                # added into its fp32 .grad by MKL at once, without a bf16 copy to cast (bf16_gemm.py).
                self._step_weight_grads = weight_grads.Deferred(budget_bytes=0, casts=self._weight_casts)
        with self._step_weight_grads or contextlib.nullcontext():  # open only during this call
            with self._autocast():
                loss = self.model(*self._inputs(batch))["loss"]
            scaled = loss.float() * weight
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        return float(loss.detach())

    def step(self, learning_rate: float, local_loss: float, step: int) -> dict:
        """Average gradients (and the loss) over ranks, clip, update; a step whose gradient is not
        finite is skipped (parameters untouched) and reported, never applied."""
        if self._step_weight_grads is not None:
            self._step_weight_grads.flush()  # every gradient in .grad before averaging and clipping
            self._step_weight_grads = None
        loss = local_loss
        flat = self._flat_grads
        if flat is not None:
            # One all-reduce for every gradient and the loss, in place: the gradients already
            # live in `flat` (see _flat_gradient_views).
            flat[-1] = local_loss
            if self._transport == "mpi":
                self._collective(functools.partial(mpi.sum_in_place, world=self.world, step=step),
                                 [flat.numpy()], step)  # flat.numpy() is flat's memory
            else:
                self._all_reduce(flat, step)
            flat /= self.world.size
            loss = float(flat[-1])
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.parameters if p.grad is not None]
        total_norm = torch.nn.utils.get_total_norm(grads)
        norm = float(total_norm)
        skipped = not math.isfinite(norm)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        clipping = self.clip_grad_norm > 0 and norm > self.clip_grad_norm and not skipped
        # The fused AdamW divides each gradient by its `grad_scale` as it reads it (what GradScaler
        # uses to unscale): given clip_grad_norm_'s factor there, it spares a read and a write of
        # every gradient (BERT-base: 110M values, about 2 % of a bf16 step here).
        folded = clipping and self.scaler is None and self.optimizer.defaults.get("fused", False)
        if clipping and not folded:
            torch.nn.utils.clip_grads_with_norm_(self.parameters, self.clip_grad_norm, total_norm)
        zeroed = False
        if self.scaler:
            self.scaler.step(self.optimizer)  # skips by itself when the unscaled gradient has inf/NaN
            self.scaler.update()
        elif not skipped and self._adds_into_grads and adamw.can_step(self.optimizer):
            # bf16 on a CPU: the update, the weights' bf16 copies for the next forward pass and the
            # zeroed gradients in one pass (adamw.py)
            scale = float((total_norm + 1e-6) / self.clip_grad_norm) if folded else 1.0
            self._weight_casts.written(adamw.step(self.optimizer, scale, self._weight_casts.copies(torch.bfloat16)))
            zeroed = True
        elif not skipped:
            self.optimizer.grad_scale = (total_norm + 1e-6) / self.clip_grad_norm if folded else None
            try:
                self.optimizer.step()
            finally:
                self.optimizer.grad_scale = None
            for p in self.parameters:  # torch's fused optimizers do not count their in-place update
                torch.autograd.graph.increment_version(p)
        if not zeroed and flat is not None:
            flat.zero_()  # keeps the views: the next backward adds into them again
        elif not zeroed:
            # Kept and zeroed where MKL adds weight gradients into them (bf16 on a CPU): adding into
            # an existing gradient ran faster than making a new one (bf16_gemm.py).
            self.optimizer.zero_grad(set_to_none=not self._adds_into_grads)
        return {"loss": loss, "grad_norm": norm, "skipped": skipped,
                **({"loss_scale": float(self.scaler.get_scale())} if self.scaler else {})}

    @torch.no_grad()
    def evaluate(self, batch: dict) -> float:
        self.model.eval()
        with self._autocast():
            return float(self.model(*self._inputs(batch))["loss"])

    @torch.no_grad()
    def outputs(self, batch: dict) -> dict:
        """The model's outputs (loss when labels are given, logits, ...) as float32 numpy arrays."""
        self.model.eval()
        with self._autocast():
            return {k: v.float().cpu().numpy() for k, v in self.model(*self._inputs(batch)).items()}

    def all_sum(self, values: list, step: int) -> list:
        """Sum a few numbers over ranks (evaluation totals)."""
        if self.world.size == 1:
            return list(values)
        flat = torch.tensor(values, dtype=torch.float64, device=self.device)
        self._all_reduce(flat, step)
        return flat.tolist()

    def _all_reduce(self, tensor, step: int) -> None:
        import torch.distributed as dist

        self._collective(dist.all_reduce, tensor, step)

    def _collective(self, operation, argument, step: int) -> None:
        """operation(argument); a failure (dist.DistError is a RuntimeError) names this rank and step."""
        try:
            operation(argument)
        except RuntimeError as err:
            raise CollectiveError(f"rank {self.world.rank}: the all-reduce of step {step} failed: another rank "
                                  f"stopped or stopped answering ({first_line(err)})") from None

    def barrier(self) -> None:
        if self.world.size > 1:
            self._all_reduce(torch.zeros(1, device=self.device), -1)

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    # ---- checkpoints: weights and optimizer from rank 0, RNG state from every rank -------------

    def save(self, directory: str) -> dict:
        """Write this rank's files into `directory`; returns JSON-able state for trainer_state.json."""
        torch.save(_rng_state(), os.path.join(directory, f"rng-rank{self.world.rank}.pt"))
        if self.world.is_main:
            from safetensors.torch import save_file

            save_file({k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()},
                      os.path.join(directory, "model.safetensors"))
            torch.save(self.optimizer.state_dict(), os.path.join(directory, "optimizer.pt"))
        return {"loss_scaler": self.scaler.state_dict() if self.scaler else None}

    def load(self, directory: str, state: dict) -> None:
        from safetensors.torch import load_file

        if state.get("deepspeed"):
            raise UserInputError(f"{directory}: a DeepSpeed checkpoint; resume it with --deepspeed and its config")

        weights = load_file(os.path.join(directory, "model.safetensors"), device=str(self.device))
        self.model.load_state_dict(weights, strict=True)
        optimizer_state = torch.load(os.path.join(directory, "optimizer.pt"), map_location=self.device, weights_only=True)
        with run_hyperparameters_kept(self.optimizer):
            self.optimizer.load_state_dict(optimizer_state)
        if self.scaler and state.get("loss_scaler"):
            self.scaler.load_state_dict(state["loss_scaler"])
        rng_file = os.path.join(directory, f"rng-rank{self.world.rank}.pt")
        if os.path.isfile(rng_file):  # absent when resuming with more ranks than were saved
            _set_rng_state(torch.load(rng_file, weights_only=True))

    def full_parameters(self):
        """A context in which every parameter is whole on this rank (always, here; ZeRO-3 gathers)."""
        return contextlib.nullcontext()

    def named_arrays(self) -> dict:
        return named_arrays(self.model)


@contextlib.contextmanager
def run_hyperparameters_kept(optimizer):
    """Loading an optimizer's state brings back the checkpoint's epsilon and weight decay per
    parameter group; this run's flags (--adam_epsilon, --weight_decay) win instead, as on the
    MindSpore backend, whose checkpoints hold only the moments, and as the learning rate, which
    the schedule sets at every step."""
    configured = [{k: group[k] for k in ("eps", "weight_decay") if k in group} for group in optimizer.param_groups]
    yield
    for group, values in zip(optimizer.param_groups, configured):
        group.update(values)


def _flat_gradient_views(parameters: list) -> torch.Tensor:
    """One zeroed (N + 1,) buffer holding every parameter's gradient as a view, N = the
    parameters' total size; the last element is left for the loss. Backward adds into an
    existing .grad in place, so a data-parallel step all-reduces the buffer itself instead of
    gathering the gradients into a new one and copying them back (for BERT-base here that
    copy took about 0.2 s of a 0.55 s all-reduce)."""
    dtypes = {p.dtype for p in parameters}
    if len(dtypes) != 1:
        raise ValueError(f"data parallel needs one parameter dtype, not {sorted(map(str, dtypes))}")
    flat = torch.zeros(sum(p.numel() for p in parameters) + 1, dtype=dtypes.pop(), device=parameters[0].device)
    offset = 0
    for p in parameters:
        p.grad = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    return flat


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _join(world, backend: str) -> None:
    """Join the process group at rank 0's address; collectives time out after world.timeout_s."""
    import torch.distributed as dist

    if dist.is_initialized():  # joined already (a DeepSpeed engine that failed to start, then this one)
        return
    if world.network_interface:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", world.network_interface)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", world.network_interface)
    try:
        dist.init_process_group(backend, init_method=f"tcp://{world.master_addr}:{world.master_port}",
                                rank=world.rank, world_size=world.size,
                                timeout=datetime.timedelta(seconds=world.timeout_s))
    except (RuntimeError, dist.DistError) as err:
        raise CollectiveError(f"rank {world.rank}: could not join the {world.size}-rank group at "
                              f"{world.master_addr}:{world.master_port} ({first_line(err)}); check --master_addr/--master_port "
                              "and that every rank started") from None
