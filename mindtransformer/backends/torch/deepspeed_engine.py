"""The torch engine on DeepSpeed (--deepspeed ds_config.json): ZeRO stages 0-3, the config's
fp16/bf16 blocks, DeepSpeed's checkpoints; the same methods as the plain engine, so the one loop
(trainer/loop.py) drives either.

DeepSpeed's own order is kept: backward then step() after every micro-batch, the optimizer
applied at the accumulation boundary (DeepSpeed scales each micro-batch's loss by 1 / the
accumulation steps itself). The optimizer is the trainer's and the learning rate comes from the
trainer's schedule, set before each boundary step (the config's optimizer and scheduler blocks
became those settings: trainer/deepspeed_config.py). Checkpoints are DeepSpeed's
(`save_checkpoint` into the trainer's checkpoint directory, the directory name as its tag);
DeepSpeed reads its own checkpoints with pickle, so resume only from checkpoints your runs wrote.
"""

from __future__ import annotations

import contextlib
import math
import os

import torch

from mindtransformer.backends.torch import make_optimizer, named_arrays
from mindtransformer.backends.torch.train import Engine, _join, run_hyperparameters_kept
from mindtransformer.errors import UserInputError


class DeepSpeedEngine(Engine):
    def __init__(self, model, world, ds_config: dict, optimizer: str = "adamw", learning_rate: float = 1e-4,
                 weight_decay: float = 0.01, adam_epsilon: float = 1e-6, precision: str = "fp32",
                 device_target: str = "CPU",
                 num_threads: int = 0, **_):
        import deepspeed  # ImportError: the caller falls back to the plain engine

        if num_threads:
            torch.set_num_threads(num_threads)
        self.world = world
        self.device = torch.device("cuda", world.local_rank) if device_target == "GPU" else torch.device("cpu")
        # DeepSpeed reads torchrun's variables even when the group exists; mpirun and a plain
        # `python` set none of them.
        for name, value in (("RANK", world.rank), ("WORLD_SIZE", world.size), ("LOCAL_RANK", world.local_rank),
                            ("MASTER_ADDR", world.master_addr), ("MASTER_PORT", world.master_port)):
            os.environ.setdefault(name, str(value))
        _join(world, "nccl" if self.device.type == "cuda" else "gloo")  # DeepSpeed joins this group
        self.ds_config = ds_config
        self.ds, self.optimizer, _, _ = deepspeed.initialize(
            model=model.to(self.device), optimizer=make_optimizer(model, optimizer, learning_rate, weight_decay,
                                                                  adam_epsilon),
            config=ds_config,
            model_parameters=[p for p in model.parameters() if p.requires_grad])
        self.model = model
        self.scaler = None
        # DeepSpeed's fp16/bf16 blocks convert the model; our autocast only when they are off.
        half = any(ds_config.get(k, {}).get("enabled") for k in ("fp16", "bf16"))
        self.autocast_dtype = None if half else {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.zero_stage = ds_config.get("zero_optimization", {}).get("stage", 0)

    def _inputs(self, batch: dict) -> list:
        inputs = super()._inputs(batch)
        dtype = next(self.model.parameters()).dtype  # DeepSpeed's fp16/bf16 casts the weights, not the ids
        return [t if t is None or not t.is_floating_point() else t.to(dtype) for t in inputs]

    def forward_backward(self, batch: dict, weight: float) -> float:
        self.ds.train()
        with self._autocast():
            loss = self.ds(*self._inputs(batch))["loss"]
        self.ds.backward(loss.float())
        if not self.ds.is_gradient_accumulation_boundary():
            self.ds.step()  # a micro-step: DeepSpeed counts it and applies nothing
        return float(loss.detach())

    def step(self, learning_rate: float, local_loss: float, step: int) -> dict:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.ds.step()
        loss = self.all_sum([local_loss], step)[0] / self.world.size
        norm = self.ds.get_global_grad_norm()
        norm = float(norm) if norm is not None else math.nan
        return {"loss": loss, "grad_norm": norm, "skipped": not self.ds.was_step_applied()}

    @contextlib.contextmanager
    def full_parameters(self):
        """ZeRO-3 partitions the weights over ranks: gather them for reading (export, fingerprints)."""
        if self.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None):
                yield
        else:
            yield

    def named_arrays(self) -> dict:
        with self.full_parameters():
            return named_arrays(self.model)

    def save(self, directory: str) -> dict:
        root, tag = os.path.split(directory.rstrip("/"))
        self.ds.save_checkpoint(root, tag=tag, save_latest=False)
        return {"deepspeed": True}

    def load(self, directory: str, state: dict) -> None:
        if not state.get("deepspeed"):
            raise UserInputError(f"{directory}: a checkpoint of the plain trainer; resume it without --deepspeed "
                                 "(or start a new DeepSpeed run with --init_from on its final/ export)")
        root, tag = os.path.split(directory.rstrip("/"))
        with run_hyperparameters_kept(self.optimizer):
            self.ds.load_checkpoint(root, tag=tag)
