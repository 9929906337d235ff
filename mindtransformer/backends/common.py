"""Backend-neutral helpers shared by the bindings (no framework imports here)."""

import inspect


def forward_arguments(model, batch: dict) -> list:
    """Batch values in the order of the model's forward parameters (positional: GRAPH mode wants
    no keyword arguments), trailing absent ones dropped. Unknown batch keys are an error."""
    names = list(inspect.signature(model.forward).parameters)
    unknown = set(batch) - set(names)
    if unknown:
        raise KeyError(f"{type(model).__name__}.forward takes {names}, not {sorted(unknown)}")
    args = [batch.get(name) for name in names]
    while args and args[-1] is None:
        args.pop()
    return args


def forward_tensors(model, batch: dict, to_tensor) -> list:
    """forward_arguments converted to the backend's tensors (None stays None)."""
    return [None if value is None else to_tensor(value) for value in forward_arguments(model, batch)]


def no_decay(name: str) -> bool:
    """Biases and LayerNorm weights get no weight decay (google's BERT and HF's Trainer)."""
    return name.endswith("bias") or "LayerNorm" in name
