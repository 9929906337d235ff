"""PyTorch binding of the backend interface (see mindtransformer/backends/__init__.py)."""

import os

# oneDNN, which runs torch's bf16 matmuls on a CPU, keeps 1,024 compiled kernels (primitives) by
# default. Fine-tuning on length-grouped batches meets dozens of batch lengths per epoch (50 in
# an MRPC epoch), each needing about 20 kernels (forward, backward, attention), so the cache
# overflowed and every epoch compiled them all again: MRPC's second epoch ran no faster than the
# first (136 vs 138 examples/s), and 6-10 % faster with room for more (docs/benchmarks.md).
# oneDNN reads this at its first use; a value set by the user wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8192")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mindtransformer.backends.common import forward_tensors, no_decay
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


def named_modules(model) -> list:
    """(dotted name, module) for the model and every submodule."""
    return list(model.named_modules())


def replace_module(model, name: str, module) -> None:
    """Put `module` at the dotted `name` (e.g. bert.encoder.layer.0.attention.self.query)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def set_trainable(model, names) -> None:
    """Train exactly the parameters in `names`; freeze the rest."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in names)


def trainable_names(model) -> list:
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def manual_seed(seed: int) -> None:
    """Seed weight initialisation and dropout."""
    torch.manual_seed(seed)


def set_train(model, mode: bool):
    return model.train(mode)


def to_tensor(array):
    return torch.from_numpy(np.ascontiguousarray(array))


def to_numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().float().numpy()


def infer(model, inputs: dict) -> dict:
    """Run the model on numpy inputs without gradients; numpy outputs."""
    device = next(model.parameters()).device  # the inputs go where the model is (CPU or a GPU)
    with torch.no_grad():
        outputs = model(*(to_tensor(inputs[k]).to(device) for k in ("input_ids", "attention_mask", "token_type_ids")))
    return {k: to_numpy(v) for k, v in outputs.items()}


def make_optimizer(model, name: str, learning_rate: float, weight_decay: float = 0.0, eps: float = 1e-6):
    """adamw (torch.optim.AdamW, fused: one kernel for every parameter, ~6x faster than its default
    per-tensor loop on CPU) or lamb (backends/torch/optim.py); decay off for biases and LayerNorm."""

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if not no_decay(n)], "weight_decay": weight_decay},
              {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0}]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=learning_rate, eps=eps, fused=True)
    if name == "lamb":
        from mindtransformer.backends.torch.optim import Lamb
        return Lamb(groups, lr=learning_rate, eps=eps)
    raise ValueError(f"optimizer {name!r} is not available on torch")


class TrainStep:
    """One optimisation step on a numpy batch: forward (with labels) -> loss -> backward -> update."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer

    def __call__(self, batch: dict) -> float:

        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.model(*forward_tensors(self.model, batch, to_tensor))["loss"]
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def loss_and_gradients(model, batch: dict) -> tuple:
    """(loss, {name: gradient}) for a numpy batch with labels, as numpy."""

    model.zero_grad(set_to_none=True)
    loss = model(*forward_tensors(model, batch, to_tensor))["loss"]
    loss.backward()
    return float(loss.detach()), {n: to_numpy(p.grad) for n, p in model.named_parameters() if p.grad is not None}


def read_state_dict(weights_file: str) -> dict:
    """name -> numpy array from a torch checkpoint, loaded with weights_only (never a plain unpickle)."""
    from mindtransformer.errors import UserInputError, first_line

    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  the weights-only unpickler raises many kinds on garbage
        first = first_line(err)
        raise UserInputError(f"{weights_file}: not a readable torch checkpoint ({first}); "
                             "pass pytorch_model.bin or model.safetensors from an HF model folder") from None
    for wrapper in ("state_dict", "model", "module"):  # trainer checkpoints that wrap the weights
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserInputError(f"{weights_file}: holds no name -> tensor mapping; pass an HF BERT state dict")
    # bf16 has no numpy dtype; every other dtype is kept as stored.
    return {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in state.items()}
