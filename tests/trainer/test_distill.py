"""Knowledge distillation through the trainer on real RTE: a MiniLM teacher fine-tuned here, a
2-layer student initialised from its layers 0 and 3, trained on the teacher's softened outputs,
its hidden states and the labels: the loss falls below its start and the student is exported as an HF folder
that transformers loads. The distillation loss is Hinton's (plus TinyBERT's hidden-state
distance), equal on both backends; MindSpore trains a student through the trainer too."""

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
                         "--train_steps=8", "--learning_rate=3e-4", "--temperature=2", "--distill_alpha=0.5",
                         "--distill_hidden_weight=0.5"))
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

    assert not any(k.startswith(("teacher.", "student.", "project.")) for k in load_file(os.path.join(final, "model.safetensors")))


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


def test_hidden_state_matching_is_tinybert_loss_on_both_backends(minilm_path):
    """With --distill_hidden_weight the loss adds w x the mean over (student k, teacher 3k) of the
    mean squared distance, the 256-wide student's states projected to the teacher's 384; the
    same number on both backends, and equal to one computed here from the models' own states."""
    import mindtransformer as mt
    from mindtransformer.data.tokenization import load_tokenizer
    from mindtransformer.models.bert import build_model
    from mindtransformer.models.bert.distill import distillation, student_config

    quiet = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    rows = [line.split("\t") for line in open(os.path.join(RTE, "dev.tsv"), encoding="utf-8").read().splitlines()[1:5]]
    batch = load_tokenizer(minilm_path).encode_batch([r[1] for r in rows], [r[2] for r in rows], max_length=64)
    labels = np.array([0, 1, 0, 1])
    losses, weights = {}, None
    for name in ("torch", "mindspore"):
        bound = get_backend(name)
        teacher = mt.from_pretrained(minilm_path, task="sequence_classification", backend=name, **quiet)
        student = build_model(student_config(teacher.config, layers=2, hidden=256), "sequence_classification", name)
        model = distillation(student, teacher, temperature=2.0, alpha=0.5, hidden_weight=3.0)
        weights = weights or bound.named_arrays(model)  # torch's draw, copied into MindSpore's twin
        bound.load_arrays(model, weights)
        bound.set_train(model, True)
        tensors = [bound.to_tensor(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids")]
        losses[name] = float(bound.to_numpy(model(*tensors, bound.to_tensor(labels))["loss"]))
        mine = student(*tensors, bound.to_tensor(labels), output_hidden_states=True)
        theirs = model.teacher(*tensors, output_hidden_states=True)
        soft = bound.ops.soft_cross_entropy(mine["logits"], theirs["logits"], 2.0)
        w, b = weights["project.weight"], weights["project.bias"]  # (384, 256), (384,)
        hidden = np.mean([np.mean((bound.to_numpy(mine["hidden_states"][k]) @ w.T + b
                                   - bound.to_numpy(theirs["hidden_states"][t])) ** 2)
                          for k, t in ((0, 0), (1, 3), (2, 6))])
        expected = 0.5 * float(bound.to_numpy(soft)) + 0.5 * float(bound.to_numpy(mine["loss"])) + 3.0 * hidden
        assert losses[name] == pytest.approx(expected, rel=1e-5), name
    assert losses["mindspore"] == pytest.approx(losses["torch"], rel=1e-4)


@pytest.mark.slow
def test_mindspore_trains_a_student(teacher, tmp_path):
    out = str(tmp_path / "student")
    done = finetune(*rte(out, f"--distill_from={teacher}", "--student_layers=2", "--max_train_examples=16",
                         "--train_steps=6", "--learning_rate=3e-4", "--distill_hidden_weight=0.5", "--backend=mindspore"))
    assert done.returncode == 0, done.stderr[-3000:]
    losses = train_losses(out)
    assert losses[-1] < losses[0], losses
    assert json.load(open(os.path.join(out, "final", "config.json")))["num_hidden_layers"] == 2
