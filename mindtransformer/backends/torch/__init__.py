"""PyTorch binding of the backend interface (see mindtransformer/backends/__init__.py)."""

import numpy as np
import torch

from mindtransformer.backends.torch import nn, ops  # noqa: F401  (the interface)

name = "torch"


def named_arrays(model) -> dict:
    """HF-named parameters as float numpy arrays (copies)."""
    return {k: v.detach().cpu().float().numpy().copy() for k, v in model.state_dict().items()}


def parameter_shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_arrays(model, arrays: dict) -> None:
    """Copy numpy arrays into the parameters of the same names (names already checked)."""
    state = model.state_dict()
    with torch.no_grad():
        for key, value in arrays.items():
            target = state[key]
            target.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype))


def set_train(model, mode: bool):
    return model.train(mode)


def to_tensor(array):
    return torch.from_numpy(np.ascontiguousarray(array))


def to_numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().float().numpy()


def infer(model, inputs: dict) -> dict:
    """Run the model on numpy inputs without gradients; numpy outputs."""
    with torch.no_grad():
        outputs = model(to_tensor(inputs["input_ids"]), to_tensor(inputs["attention_mask"]),
                        to_tensor(inputs["token_type_ids"]))
    return {k: to_numpy(v) for k, v in outputs.items()}
