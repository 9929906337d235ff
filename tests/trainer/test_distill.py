"""Knowledge distillation through the trainer on real RTE: a MiniLM teacher fine-tuned here, a
2-layer student initialised from its layers 0 and 3, trained on the teacher's softened outputs
plus the labels: the loss falls below its start and the student is exported as an HF folder
that transformers loads. The distillation loss is Hinton's, equal on both backends."""

import json
import os

import numpy as np
import pytest

from mindtransformer.backends import get_backend
from mindtransformer.utils.bundled import RESOURCES
from tests.trainer.cli import finetune, one_line_error, train_losses

RTE = os.path.join(RESOURCES, "glue", "RTE")


def rte(out, *extra):
    return ["--auto_model=bert_glue", "--task_name=rte", f"--data_dir={RTE}", "--global_batch_size=16",
            "--log_steps=1", f"--save_checkpoint_path={out}", "--save_checkpoint_steps=1000", *extra]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, minilm_path):
    out = str(tmp_path_factory.mktemp("teacher") / "run")
    done = finetune(*rte(out, f"--init_from={minilm_path}", "--max_train_examples=96", "--train_steps=6",
                         "--learning_rate=5e-5"))
    assert done.returncode == 0, done.stderr[-3000:]
    return os.path.join(out, "final")


def test_a_two_layer_student_learns_from_the_teacher_and_is_exported(teacher, tmp_path):
    import transformers

    out = str(tmp_path / "student")
    # one batch of 16 at every step: the student must fit the teacher on it
    done = finetune(*rte(out, f"--distill_from={teacher}", "--student_layers=2", "--max_train_examples=16",
                         "--train_steps=8", "--learning_rate=3e-4", "--temperature=2", "--distill_alpha=0.5"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "student: 2 layers, hidden 384; 41 of its weights from the teacher (6 layers)" in done.stdout
    assert "frozen" in next(line for line in done.stdout.splitlines() if line.startswith("parameters:"))
    losses = train_losses(out)
    assert losses[-1] < losses[0] and np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    final = os.path.join(out, "final")
    assert json.load(open(os.path.join(final, "config.json")))["num_hidden_layers"] == 2
    transformers.AutoModelForSequenceClassification.from_pretrained(final)
    # the student's layer 1 started as the teacher's layer 3 (then trained): the export is the student
    from safetensors.numpy import load_file

    assert not any(k.startswith(("teacher.", "student.")) for k in load_file(os.path.join(final, "model.safetensors")))


def test_student_initialisation_picks_evenly_spaced_layers(minilm_path):
    from mindtransformer.models.bert.distill import init_from_teacher, student_config
    from mindtransformer.models.bert import build_model
    from mindtransformer.pretrained import from_pretrained

    teacher = from_pretrained(minilm_path, task="sequence_classification")
    student = build_model(student_config(teacher.config, layers=3), "sequence_classification")
    copied = init_from_teacher(student, teacher)
    bound = get_backend("torch")
    t, s = bound.named_arrays(teacher), bound.named_arrays(student)
    for i, j in ((0, 0), (1, 2), (2, 4)):
        name = f"bert.encoder.layer.{i}.attention.self.query.weight"
        assert name in copied and np.array_equal(s[name], t[f"bert.encoder.layer.{j}.attention.self.query.weight"])
    narrow = build_model(student_config(teacher.config, layers=2, hidden=256), "sequence_classification")
    # a narrower student: only the classifier's bias (one per label) fits; the rest keeps BERT's init
    assert init_from_teacher(narrow, teacher) == ["classifier.bias"]


def test_soft_cross_entropy_is_hintons_loss_on_both_backends():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(6, 4)).astype(np.float32)
    t = 2.0

    def log_softmax(x):
        x = x / t - (x / t).max(axis=1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    p = np.exp(log_softmax(teacher))
    expected = float((p * (log_softmax(teacher) - log_softmax(student))).sum(axis=1).mean() * t * t)
    for name in ("torch", "mindspore"):
        bound = get_backend(name)
        got = bound.ops.soft_cross_entropy(bound.to_tensor(student), bound.to_tensor(teacher), t)
        assert float(bound.to_numpy(got)) == pytest.approx(expected, rel=1e-4), name


def test_a_teacher_without_the_task_head_is_refused(tmp_path, minilm_path):
    done = finetune(*rte(str(tmp_path), f"--distill_from={minilm_path}", "--student_layers=2", "--train_steps=2"))
    one_line_error(done, "no teacher's task head weights", "--distill_from takes a teacher fine-tuned on this task")
