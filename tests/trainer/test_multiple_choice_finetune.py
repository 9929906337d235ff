"""Multiple-choice fine-tuning through the command lines on real TMMLU subjects and the real
MiniLM checkpoint: the training loss goes down, the validation questions are evaluated each
exactly once, the split is written as JSON, and the evaluation entry point scores the whole test
split per subject with the fine-tuned head and with masked-LM scoring side by side (table, JSON,
chart). One-line errors for a misspelled subject and a checkpoint without either head."""

import json
import os

import numpy as np
import pytest

from tests.conftest import shared_file
from tests.trainer.cli import evaluations, finetune, one_line_error, run, train_losses

SUBJECTS = "普通物理,國際法,邏輯推理"  # 30 + 20 + 15 real four-option questions (one essay skipped)


@pytest.fixture(scope="module")
def tmmlu():
    return shared_file("tmmlu")


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory, tmmlu, minilm_path):
    out = str(tmp_path_factory.mktemp("mcq") / "run")
    done = finetune("--auto_model=bert_multiple_choice", f"--data_dir={tmmlu}", f"--subjects={SUBJECTS}",
                    f"--init_from={minilm_path}", "--global_batch_size=8", "--learning_rate=1e-4", "--epoch_size=6",
                    "--max_train_examples=16", "--dropout=0", "--seq_length=48", "--log_steps=1", "--eval_steps=6",
                    f"--save_checkpoint_path={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def test_fine_tune_lowers_the_loss_and_writes_the_split(fine_tuned):
    out, done = fine_tuned
    losses = train_losses(out)
    # the first 16 training questions, 8 per step: 2 steps an epoch, 12 steps
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1, losses
    split = {name: json.load(open(os.path.join(out, f"{name}_questions.json"), encoding="utf-8"))
             for name in ("train", "validation", "test")}
    assert {name: len(q) for name, q in split.items()} == {"train": 44, "validation": 17, "test": 4}
    assert all(len(q["options"]) == 4 and q["answer"] in "ABCD" for part in split.values() for q in part)
    for record in evaluations(out, "accuracy"):
        assert record["eval_examples"] == 17
    manifest = json.load(open(os.path.join(out, "run_manifest.json"), encoding="utf-8"))
    assert manifest["questions"] == {"train": 44, "validation": 17, "test": 4}
    assert os.path.isfile(os.path.join(out, "loss_curve.png"))
    assert "16 training, 17 validation, 4 test questions" in done.stdout + done.stderr
    assert manifest["skipped_questions"] == {"no options in the text (an essay question)": 1}


def test_entry_point_scores_base_and_fine_tuned_side_by_side(fine_tuned, tmp_path, tmmlu):
    from mindtransformer.backends import get_backend
    from mindtransformer.pretrained import from_pretrained, save_pretrained

    out, _ = fine_tuned
    # a masked-LM checkpoint of the base model: the real MiniLM with a seeded, tied MLM head
    get_backend("torch").manual_seed(0)
    base = str(tmp_path / "base_mlm")
    save_pretrained(from_pretrained(os.path.join(out, "final"), task="masked_lm"), base)
    # the whole validation split (17 questions over 3 subjects), read again from --data_dir
    report = str(tmp_path / "report")
    done = run("mindtransformer.tasks.multiple_choice", f"--data_dir={tmmlu}", f"--subjects={SUBJECTS}",
               "--split=validation", "--seq_length=48", f"--model=base={base}",
               f"--model=fine_tuned={os.path.join(out, 'final')}", f"--output_dir={report}")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.load(open(os.path.join(report, "accuracy.json"), encoding="utf-8"))
    assert summary["questions"]["overall"] == 17 and summary["chance"] == 0.25
    assert summary["models"]["base"]["method"] == "masked-LM scoring"
    assert summary["models"]["fine_tuned"]["method"] == "multiple-choice head"
    # the fine-tuned head answers the validation questions as the run's own last evaluation did
    last = evaluations(out, "accuracy")[-1]
    assert summary["models"]["fine_tuned"]["accuracy"]["overall"] == pytest.approx(last["accuracy"])
    for subject in SUBJECTS.split(","):
        assert f"| {subject} |" in done.stdout
    assert os.path.getsize(os.path.join(report, "accuracy.png")) > 5000
    # the test split JSON the run wrote is evaluated whole
    done = run("mindtransformer.tasks.multiple_choice", f"--questions={os.path.join(out, 'test_questions.json')}",
               f"--model=fine_tuned={os.path.join(out, 'final')}", f"--output_dir={report}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.load(open(os.path.join(report, "accuracy.json"), encoding="utf-8"))["questions"]["overall"] == 4


def test_errors(tmmlu, minilm_path, tmp_path):
    done = finetune("--auto_model=bert_multiple_choice", f"--data_dir={tmmlu}", "--subjects=普通物埋",
                    f"--init_from={minilm_path}", f"--save_checkpoint_path={tmp_path}")
    one_line_error(done, "--subjects: no subject '普通物埋'", "did you mean '普通物理'")
    done = run("mindtransformer.tasks.multiple_choice", f"--data_dir={tmmlu}", "--subjects=普通物理",
               f"--model=base={minilm_path}")
    one_line_error(done, "neither a multiple-choice head nor a masked-LM head")
    done = finetune("--auto_model=bert_multiple_choice", f"--init_from={minilm_path}")
    one_line_error(done, "needs --data_dir")



@pytest.mark.slow
def test_example_script_on_the_bundled_subjects(tmp_path):
    from tests.trainer.cli import run_script

    out = str(tmp_path / "run")
    done = run_script("finetune/run_multiple_choice.sh", 0, "--train_steps=2", env={"MC_OUT": out})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.load(open(os.path.join(out, "eval", "accuracy.json"), encoding="utf-8"))
    # the three bundled subjects' test split: 2 + 1 + 1 questions
    assert summary["questions"] == {"overall": 4, "普通物理": 2, "國際法": 1, "邏輯推理": 1}
    assert set(summary["models"]) == {"untuned", "fine_tuned"}
