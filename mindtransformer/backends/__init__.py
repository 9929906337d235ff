"""Backend bindings: the only code that imports torch or mindspore.

Each backend package (`backends/torch`, `backends/mindspore`) exposes the same small set of
names, which the one BERT definition in `models/bert/modeling.py` is written against:

- `nn`: `Module`, `ModuleList`, `Linear`, `LayerNorm`, `Embedding`, `Dropout`, `zeros_parameter`
- `ops`: attention, activations, head reshapes, `linear`, `tanh`, `shape`, `reshape`
- model-level helpers: `named_arrays(model)`, `load_arrays(model, arrays)`, `set_train(model, mode)`,
  `named_modules(model)`, `replace_module(model, name, module)`, `set_trainable(model, names)`,
  `trainable_names(model)`

`models/bert/modeling.py` is executed once per backend (see `models.bert.modeling_for`); while it
runs, `current_binding()` hands it that backend's `nn` and `ops`.
"""

import contextlib
import importlib

from mindtransformer.errors import UserInputError, closest_name

BACKENDS = {
    "torch": "mindtransformer.backends.torch",
    "mindspore": "mindtransformer.backends.mindspore",
}

_binding_stack = []


def get_backend(name: str):
    """The backend package for `name` ("torch" or "mindspore")."""
    if name not in BACKENDS:
        raise UserInputError(f"unknown backend {name!r}{closest_name(name, BACKENDS)}; use one of {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as err:
        raise UserInputError(
            f"backend {name!r} needs a package that is not installed ({err}); "
            f"install it with: pip install 'mindtransformer[{name}]'") from None


@contextlib.contextmanager
def binding(backend):
    """While active, modules that call `current_binding()` are built against `backend`."""
    _binding_stack.append(backend)
    try:
        yield
    finally:
        _binding_stack.pop()


def current_binding():
    """(nn, ops) of the backend a model module is being executed for."""
    if not _binding_stack:
        raise ImportError("mindtransformer model modules are executed per backend: "
                          "use mindtransformer.models.bert.modeling_for('torch') instead of importing them")
    backend = _binding_stack[-1]
    return backend.nn, backend.ops
