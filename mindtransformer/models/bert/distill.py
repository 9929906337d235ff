"""Knowledge distillation on the one BERT definition: a smaller student from a fine-tuned teacher.

- `student_config(teacher_config, layers, hidden)`: the teacher's config with fewer layers and/or
  a smaller hidden size (intermediate 4 x hidden, heads of 64 where the hidden size changes).
- `init_from_teacher(student, teacher)`: every student weight whose shape the teacher has is
  copied: embeddings, pooler, task head, and student layer i from teacher layer i x L_t // L_s
  (evenly spaced from the first: 2 of 6 -> 0, 3; 3 of 6 -> 0, 2, 4, DistilBERT's every other).
- `distillation(student, teacher, temperature, alpha, hidden_weight)`: the `Distillation` module
  (modeling.py) with the teacher frozen and its dropout off, so that its targets do not change
  between steps; hidden_weight > 0 adds hidden-state matching (TinyBERT's uniform layer mapping).

Shape legend: L_t teacher layers, L_s student layers.
"""

from __future__ import annotations

from mindtransformer.backends import get_backend
from mindtransformer.errors import UserInputError


def student_config(teacher_config, layers: int = 0, hidden: int = 0):
    layers = layers or teacher_config.num_hidden_layers
    if layers > teacher_config.num_hidden_layers:
        raise UserInputError(f"--student_layers={layers} exceeds the teacher's {teacher_config.num_hidden_layers} layers")
    changes = {"num_hidden_layers": layers}
    if hidden and hidden != teacher_config.hidden_size:
        if hidden % 64:
            raise UserInputError(f"--student_hidden_size={hidden}: use a multiple of 64 (heads of 64)")
        changes.update(hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=hidden // 64)
    return teacher_config.replace(**changes)


def teacher_layer(index: int, student_layers: int, teacher_layers: int) -> int:
    return index * teacher_layers // student_layers


def init_from_teacher(student, teacher) -> list:
    """Copy what fits (see the module docstring); returns the student weights copied."""
    bound = get_backend(student.backend)
    source = bound.named_arrays(teacher)
    shapes = bound.parameter_shapes(student)
    ls, lt = student.config.num_hidden_layers, teacher.config.num_hidden_layers
    copied = {}
    for name, shape in shapes.items():
        origin = name
        if ".encoder.layer." in name:
            head, rest = name.split(".encoder.layer.", 1)
            index, tail = rest.split(".", 1)
            origin = f"{head}.encoder.layer.{teacher_layer(int(index), ls, lt)}.{tail}"
        if origin in source and tuple(source[origin].shape) == shape:
            copied[name] = source[origin]
    bound.load_arrays(student, copied)
    return sorted(copied)


def check_loss_weights(temperature: float, alpha: float, hidden_weight: float) -> None:
    if temperature <= 0 or not 0 <= alpha <= 1 or hidden_weight < 0:
        raise UserInputError(f"--temperature={temperature} must be > 0, --distill_alpha={alpha} in [0, 1] and "
                             f"--distill_hidden_weight={hidden_weight} >= 0")


def distillation(student, teacher, temperature: float = 2.0, alpha: float = 0.5, hidden_weight: float = 0.0):
    """The student wrapped with its teacher (frozen, dropout off) in the Distillation module."""
    from mindtransformer.models.bert import build_model, modeling_for

    check_loss_weights(temperature, alpha, hidden_weight)
    if student.task != teacher.task:
        raise UserInputError(f"the teacher is a {teacher.task} model but the student a {student.task} one; "
                             "distil a teacher fine-tuned on this task")
    if student.config.vocab_size != teacher.config.vocab_size:
        raise UserInputError(f"the teacher's vocabulary ({teacher.config.vocab_size}) differs from the student's "
                             f"({student.config.vocab_size}); they must read the same tokens")
    bound = get_backend(student.backend)
    # the teacher rebuilt without dropout, with its own weights: its targets are deterministic
    quiet = build_model(teacher.config.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
                        teacher.task, teacher.backend)
    bound.load_arrays(quiet, bound.named_arrays(teacher))
    bound.set_trainable(quiet, set())
    model = modeling_for(student.backend).Distillation(student, quiet, temperature, alpha, hidden_weight)
    model.config, model.task, model.backend = student.config, student.task, student.backend
    return model
