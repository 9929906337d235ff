"""BERT: the config, the one model definition and its task heads."""

import importlib.util
import os
import sys

from mindtransformer.backends import binding, get_backend
from mindtransformer.errors import UserInputError, closest_name
from mindtransformer.models.bert.config import BertConfig, bert_base, bert_large, bert_tiny  # noqa: F401

TASK_NAMES = ("base", "pretraining", "masked_lm", "sequence_classification", "question_answering",
              "multiple_choice", "token_classification")

_MODELING_FILE = os.path.join(os.path.dirname(__file__), "modeling.py")


def modeling_for(backend_name: str):
    """modeling.py executed against one backend; cached, so each backend gets one copy of the classes."""
    module_name = f"mindtransformer.models.bert.modeling_{backend_name}"
    if module_name not in sys.modules:
        backend = get_backend(backend_name)
        spec = importlib.util.spec_from_file_location(module_name, _MODELING_FILE)
        module = importlib.util.module_from_spec(spec)
        with binding(backend):
            spec.loader.exec_module(module)
        sys.modules[module_name] = module
    return sys.modules[module_name]


def check_task(task: str) -> str:
    if task not in TASK_NAMES:
        raise UserInputError(f"unknown task {task!r}{closest_name(task, TASK_NAMES)}; use one of {', '.join(TASK_NAMES)}")
    return task


def build_model(config: BertConfig, task: str = "base", backend: str = "torch"):
    """A randomly initialised model (BERT's init) for `task` on `backend`."""
    if check_task(task) == "question_answering" and config.num_labels != 2:
        # HF sizes qa_outputs by num_labels and splits it into start and end: it must be 2.
        raise UserInputError(f"question_answering predicts a start and an end logit, so num_labels must be 2, "
                             f"not {config.num_labels}; drop the num_labels override")
    model = modeling_for(backend).TASKS[task](config)
    model.config = config
    model.task = task
    model.backend = backend
    return model
