"""MindSpore binding of the backend interface (see mindtransformer/backends/__init__.py)."""

import numpy as np
import mindspore as ms

from mindtransformer.backends.common import forward_tensors, no_decay
from mindtransformer.backends.mindspore import nn, ops  # noqa: F401  (the interface)

name = "mindspore"

if ms.get_context("device_target") == "CPU":
    # CPU kernels gain nothing from the asynchronous launch queue, and PYNATIVE pays for it:
    # blocking launch makes a MiniLM training step ~1.5x faster there (GRAPH mode is unchanged).
    ms.runtime.launch_blocking()


def _parameters(model) -> dict:
    return dict(model.parameters_and_names())


def named_arrays(model) -> dict:
    """HF-named parameters as float numpy arrays (copies)."""
    return {k: v.asnumpy().astype(np.float32, copy=True) for k, v in _parameters(model).items()}


def parameter_shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in _parameters(model).items()}


def load_arrays(model, arrays: dict) -> None:
    """Copy numpy arrays into the parameters of the same names (names already checked)."""
    params = _parameters(model)
    for key, value in arrays.items():
        target = params[key]
        target.set_data(ms.Tensor(np.ascontiguousarray(value), dtype=target.dtype))


def named_modules(model) -> list:
    """(dotted name, cell) for the model and every sub-cell."""
    return list(model.cells_and_names())


def replace_module(model, name: str, cell) -> None:
    """Put `cell` at the dotted `name`, its parameters named from the root: MindSpore prefixes a
    cell's parameter names only with the attribute it is set as, and an optimizer refuses two
    parameters of the same name (`query.lora_A.weight` in every layer)."""
    parent, _, child = name.rpartition(".")
    setattr(dict(model.cells_and_names())[parent], child, cell)
    cell.update_parameters_name(name + ".")


def set_trainable(model, names) -> None:
    """Train exactly the parameters in `names`; freeze the rest."""
    for name, parameter in _parameters(model).items():
        parameter.requires_grad = name in names


def trainable_names(model) -> list:
    return [name for name, parameter in _parameters(model).items() if parameter.requires_grad]


def manual_seed(seed: int) -> None:
    """Seed weight initialisation (numpy, see nn._normal) and dropout."""
    ms.set_seed(seed)
    np.random.seed(seed)


def set_train(model, mode: bool):
    return model.set_train(mode)


def to_tensor(array):
    return ms.Tensor(np.ascontiguousarray(array))


def to_numpy(tensor) -> np.ndarray:
    return tensor.astype(ms.float32).asnumpy()


def infer(model, inputs: dict) -> dict:
    """Run the model on numpy inputs (no gradients are taken in MindSpore unless asked); numpy outputs."""
    outputs = model(to_tensor(inputs["input_ids"]), to_tensor(inputs["attention_mask"]),
                    to_tensor(inputs["token_type_ids"]))
    return {k: to_numpy(v) for k, v in outputs.items()}


def make_optimizer(model, name: str, learning_rate: float, weight_decay: float = 0.0, eps: float = 1e-6):
    """adamw (bias-corrected, the same math as torch's), adamweightdecay (google's BERT optimizer,
    no bias correction) or lamb; decay off for biases and LayerNorm."""

    params = model.trainable_params()
    names = {id(p): n for n, p in model.parameters_and_names()}
    decay = [p for p in params if not no_decay(names[id(p)])]
    rest = [p for p in params if no_decay(names[id(p)])]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if name == "adamweightdecay":
        return ms.nn.AdamWeightDecay(groups, learning_rate=learning_rate, eps=eps)
    if name in ("adamw", "lamb"):
        from mindtransformer.backends.mindspore import optim

        kind = optim.AdamW if name == "adamw" else optim.Lamb
        return kind(decay + rest, [weight_decay] * len(decay) + [0.0] * len(rest), learning_rate, eps=eps)
    raise ValueError(f"optimizer {name!r} is not available on mindspore")


class TrainStep:
    """One optimisation step on a numpy batch; `jit=True` compiles it as a MindSpore graph."""

    def __init__(self, model, optimizer, jit: bool = False):
        self.model, self.optimizer = model, optimizer
        parameters = optimizer.parameters

        def loss_of(*args):
            return model(*args)["loss"]

        grad_fn = ms.value_and_grad(loss_of, None, parameters)

        def step(*args):
            loss, grads = grad_fn(*args)
            optimizer(grads)
            return loss

        self._step = ms.jit(step) if jit else step

    def __call__(self, batch: dict) -> float:

        self.model.set_train(True)
        return float(self._step(*forward_tensors(self.model, batch, to_tensor)).asnumpy())


def loss_and_gradients(model, batch: dict) -> tuple:
    """(loss, {name: gradient}) for a numpy batch with labels, as numpy."""

    params = model.trainable_params()
    names = {id(p): n for n, p in model.parameters_and_names()}

    def loss_of(*args):
        return model(*args)["loss"]

    grad_fn = ms.value_and_grad(loss_of, None, params)
    loss, grads = grad_fn(*forward_tensors(model, batch, to_tensor))
    return float(loss.asnumpy()), {names[id(p)]: to_numpy(g) for p, g in zip(params, grads)}


def read_checkpoint(path: str) -> dict:
    """name -> numpy array from a MindSpore .ckpt."""
    from mindtransformer.errors import UserInputError, first_line

    try:
        params = ms.load_checkpoint(path)
    except Exception as err:  # noqa: BLE001  MindSpore raises ValueError/RuntimeError variously
        first = first_line(err)
        raise UserInputError(f"{path}: not a readable MindSpore checkpoint ({first}); "
                             "pass a .ckpt written by mindspore.save_checkpoint") from None
    if not params:
        raise UserInputError(f"{path}: the checkpoint holds no parameters")
    return {name: value.asnumpy() for name, value in params.items()}


def write_checkpoint(arrays: dict, path: str) -> None:
    """Write {name: numpy array} as a .ckpt under a temporary name, then rename it onto `path`."""
    from mindtransformer.utils.files import atomic_path

    with atomic_path(path, suffix=".ckpt") as tmp:
        ms.save_checkpoint([{"name": k, "data": ms.Tensor(np.ascontiguousarray(v))} for k, v in arrays.items()], tmp)
