"""Learning-rate schedules as pure functions of the step (google's BERT: linear warmup, then
polynomial decay to an end value; power 1 is linear decay)."""


def learning_rate(step: int, base_lr: float, warmup_steps: int, total_steps: int,
                  decay: str = "linear", end_lr: float = 0.0, power: float = 1.0) -> float:
    """The rate for optimizer step `step` (0-based).

    Warmup: base_lr * (step + 1) / warmup_steps for step < warmup_steps (never 0, so the first
    step moves). Then decay over the remaining steps: "linear" (power 1), "polynomial"
    (base - end) * (1 - progress) ** power + end, or "constant"."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if decay == "constant":
        return base_lr
    if decay not in ("linear", "polynomial"):
        raise ValueError(f"decay {decay!r}: use linear, polynomial or constant")
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    exponent = 1.0 if decay == "linear" else power
    return (base_lr - end_lr) * (1.0 - progress) ** exponent + end_lr
