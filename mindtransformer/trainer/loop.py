"""The one training loop, shared by pretraining and fine-tuning; only the engine differs by
backend (backends/<name>/train.py: forward_backward, step, evaluate, save, load, barrier).

    for each optimizer step:
        accumulate gradients over `accumulation` micro-batches (each weighted 1 / accumulation)
        engine.step(lr(step)): average over ranks, clip, update (non-finite -> skipped, logged)
        log; evaluate every eval_steps; checkpoint every save_steps and at the end
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterator, Optional


@dataclasses.dataclass
class Plan:
    start_step: int            # optimizer steps already done (0, or a checkpoint's step)
    total_steps: int
    accumulation: int          # micro-batches per optimizer step on each rank
    samples_per_step: int      # the global batch
    save_steps: int
    eval_steps: int            # 0: evaluate only at the end
    learning_rate: Callable[[int], float]  # optimizer step (0-based) -> rate


class MicroBatches:
    """This rank's micro-batches, endlessly over epochs, with the position to resume from.

    `make_epoch(epoch, skip)` yields the epoch's batches from batch `skip` on;
    `batches_per_epoch` is how many whole batches an epoch holds (the same on every rank)."""

    def __init__(self, make_epoch, batches_per_epoch: int, epoch: int = 0, taken: int = 0, convert=None):
        self.make_epoch, self.per_epoch, self.convert = make_epoch, batches_per_epoch, convert
        self.epoch, self.taken = epoch, taken
        self._iterator = None

    @property
    def position(self) -> dict:
        return {"epoch": self.epoch, "batches": self.taken}

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.taken >= self.per_epoch:
            self.epoch, self.taken, self._iterator = self.epoch + 1, 0, None
        if self._iterator is None:
            self._iterator = iter(self.make_epoch(self.epoch, self.taken))
        batch = next(self._iterator)
        self.taken += 1
        return self.convert(batch) if self.convert else batch


@dataclasses.dataclass
class Best:
    """The best evaluation so far (kept in checkpoints, so a resumed run keeps it)."""
    metric: str = "eval_loss"
    higher_is_better: bool = False
    step: Optional[int] = None
    value: Optional[float] = None

    def offer(self, step: int, metrics: dict) -> None:
        value = metrics[self.metric]
        if self.value is None or (value > self.value if self.higher_is_better else value < self.value):
            self.step, self.value = step, value


def run(engine, batches: Iterator[dict], plan: Plan, log, checkpoints, state_of: Callable[[int], dict],
        best: Best, evaluate: Optional[Callable[[int], dict]] = None,
        after_step: Optional[Callable[[int], dict]] = None) -> None:
    """Train from plan.start_step to plan.total_steps; after_step(done) may change the model between
    steps (SVD-LoRA's rank budget) and returns values for the step's log line."""
    for step in range(plan.start_step, plan.total_steps):
        started = time.perf_counter()
        losses = [engine.forward_backward(next(batches), 1.0 / plan.accumulation) for _ in range(plan.accumulation)]
        lr = plan.learning_rate(step)
        result = engine.step(lr, sum(losses) / len(losses), step)
        done = step + 1
        if after_step:
            result.update(after_step(done))
        log.step({"step": done, **result, "lr": lr,
                  "samples_per_s": plan.samples_per_step / (time.perf_counter() - started)})
        if evaluate and ((plan.eval_steps and done % plan.eval_steps == 0) or done == plan.total_steps):
            metrics = evaluate(done)
            log.evaluation({"step": done, **metrics})
            best.offer(done, metrics)
        if done % plan.save_steps == 0 or done == plan.total_steps:
            checkpoints.save(done, state_of(done), best.step)
