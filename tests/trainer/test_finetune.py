"""GLUE fine-tuning end to end through the command lines, on the bundled real RTE data and the
real MiniLM checkpoint: short runs on each backend lower the loss and evaluate all 277 dev
examples exactly once, also on 2 ranks; both backends train the same recipe step for step; the
export loads in transformers; evaluation and prediction from the HF folder and the MindSpore
checkpoint; records in; one-line errors."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mindtransformer.utils.bundled import RESOURCES
from tests.conftest import REPO_ROOT
from tests.trainer.cli import (ENV, MPI, evaluations, finetune, one_line_error, run, step_records,
                               train_losses)

RTE = os.path.join(RESOURCES, "glue", "RTE")
# 64 real RTE pairs, 16 per step: 4 steps an epoch, 20 steps = 5 epochs (the loss must fall);
# pairs cut to 64 tokens, which keeps these runs short.
SHORT = ["--auto_model=bert_glue", "--task_name=RTE", f"--data_dir={RTE}", "--max_train_examples=64",
         "--seq_length=64", "--global_batch_size=16", "--learning_rate=1e-4", "--train_steps=20", "--eval_steps=10",
         "--save_checkpoint_steps=10", "--log_steps=5"]


def classify(*args):
    return run("mindtransformer.tasks.text_classification", *args)


def assert_learned_and_evaluated_everything(run_dir, eval_steps=(10, 20)):
    losses = train_losses(run_dir)
    assert len(losses) == 20 and np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.05, losses
    evals = evaluations(run_dir)
    assert [e["step"] for e in evals] == list(eval_steps) and all(e["eval_examples"] == 277 for e in evals)
    assert all(0.0 <= e["accuracy"] <= 1.0 for e in evals)


@pytest.fixture(scope="module")
def start(tmp_path_factory, minilm_path):
    """MiniLM with a new RTE classifier, saved as an HF folder: both backends start from it."""
    from mindtransformer.pretrained import from_pretrained, save_pretrained

    folder = tmp_path_factory.mktemp("rte-start")
    save_pretrained(from_pretrained(minilm_path, task="sequence_classification", num_labels=2), str(folder))
    return folder


# Without dropout and in fp32 the two backends' runs can be compared step for step.
RECIPE = [*SHORT, "--dropout=0", "--precision=fp32"]


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory, start):
    out = tmp_path_factory.mktemp("rte-torch")
    done = finetune(*RECIPE, f"--init_from={start}", f"--save_checkpoint_path={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def mindspore_run(tmp_path_factory, start):
    out = tmp_path_factory.mktemp("rte-ms")
    # One evaluation, at the end: MindSpore evaluates op by op on CPU (~9 s for the 277 pairs).
    done = finetune(*RECIPE, f"--init_from={start}", "--backend=mindspore", "--eval_steps=20",
                    f"--save_checkpoint_path={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_torch_fine_tune_learns_evaluates_all_277_and_keeps_the_best(torch_run):
    assert_learned_and_evaluated_everything(torch_run)
    evals = evaluations(torch_run)
    best = max(evals, key=lambda e: e["accuracy"])  # the first of equals stays best
    kept = sorted(os.listdir(torch_run / "checkpoints"))
    assert f"bert-step{best['step']:08d}" in kept
    assert (torch_run / "loss_curve.png").stat().st_size > 0
    manifest = json.loads((torch_run / "run_manifest.json").read_text())
    assert manifest["train_examples"] == 64 and manifest["dev_examples"] == {"dev": 277}
    assert manifest["main_metric"] == "accuracy"


def test_the_export_loads_in_transformers_with_its_labels_and_the_same_logits(torch_run):
    transformers = pytest.importorskip("transformers")
    import torch

    from mindtransformer.pretrained import from_pretrained

    hf = transformers.AutoModelForSequenceClassification.from_pretrained(torch_run / "final").eval()
    assert hf.config.id2label == {0: "entailment", 1: "not_entailment"}
    tokenizer = transformers.AutoTokenizer.from_pretrained(torch_run / "final")
    batch = tokenizer(["A man is playing a guitar.", "The cat sat."], ["Someone plays music.", "A dog ran."],
                      padding=True, return_tensors="pt")
    ours = from_pretrained(str(torch_run / "final"), task="sequence_classification")
    with torch.no_grad():
        expected = hf(**batch).logits.numpy()
        got = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])["logits"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_evaluation_entry_point_scores_every_dev_example_once(torch_run, tmp_path):
    done = classify(f"--load_checkpoint_path={torch_run / 'final'}", "--task_name=rte", f"--data_dir={RTE}",
                    "--seq_length=64", f"--output_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert metrics["examples"] == 277
    # The same weights, data and truncation as the trainer's last evaluation (fp32 both): the same accuracy.
    assert metrics["accuracy"] == pytest.approx(evaluations(torch_run)[-1]["accuracy"])
    rows = (tmp_path / "predictions_dev.tsv").read_text().splitlines()
    assert rows[0] == "guid\tprediction\tlabel" and len(rows) == 278
    assert len({r.split("\t")[0] for r in rows[1:]}) == 277


def test_text_prediction_from_the_hf_folder_and_from_a_file(torch_run, tmp_path):
    done = classify(f"--load_checkpoint_path={torch_run / 'final'}", "--text", "A man is playing a guitar.",
                    "--text_b", "A man plays music.")
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["label"] in ("entailment", "not_entailment")
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    texts = tmp_path / "pairs.tsv"
    texts.write_text("A man is playing a guitar.\tA man plays music.\nThe cat sat.\tA dog ran.\n", encoding="utf-8")
    done = classify(f"--load_checkpoint_path={torch_run / 'final'}", f"--input_file={texts}", f"--output_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (tmp_path / "predictions_pairs.tsv").read_text().splitlines()
    assert len(lines) == 3 and lines[1].split("\t")[1] == answer["label"]


def test_mindspore_fine_tune_learns_and_predicts_from_its_checkpoint(mindspore_run):
    assert_learned_and_evaluated_everything(mindspore_run, eval_steps=(20,))
    args = ["--text", "A man is playing a guitar.", "--text_b", "A man plays music."]
    from_ckpt = classify(f"--load_checkpoint_path={mindspore_run / 'final' / 'bert.ckpt'}", "--backend=mindspore", *args)
    assert from_ckpt.returncode == 0, from_ckpt.stderr[-3000:]
    from_hf = classify(f"--load_checkpoint_path={mindspore_run / 'final'}", *args)  # the same weights, on torch
    assert from_hf.returncode == 0, from_hf.stderr[-3000:]
    a, b = (json.loads(d.stdout.strip().splitlines()[-1]) for d in (from_ckpt, from_hf))
    assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_both_backends_train_the_same_recipe_step_for_step(torch_run, mindspore_run):
    """From the same weights (MiniLM and one new classifier), the two trainers take the same
    batches, learning rates, clipping and AdamW updates: every step's loss, gradient norm and
    rate, and the last dev evaluation, agree to float rounding."""
    ours, theirs = step_records(torch_run), step_records(mindspore_run)
    assert [r["step"] for r in ours] == [r["step"] for r in theirs] == list(range(1, 21))
    assert [r["lr"] for r in ours] == pytest.approx([r["lr"] for r in theirs], rel=1e-9)
    np.testing.assert_allclose([r["loss"] for r in theirs], [r["loss"] for r in ours], rtol=0, atol=1e-5)
    np.testing.assert_allclose([r["grad_norm"] for r in theirs], [r["grad_norm"] for r in ours], rtol=1e-4)
    ours_eval, (theirs_eval,) = evaluations(torch_run)[-1], evaluations(mindspore_run)
    assert ours_eval["step"] == theirs_eval["step"] == 20
    assert ours_eval["accuracy"] == theirs_eval["accuracy"]
    assert ours_eval["eval_loss"] == pytest.approx(theirs_eval["eval_loss"], abs=1e-5)


@pytest.mark.skipif(MPI is None, reason="OpenMPI's mpirun is not installed")
@pytest.mark.parametrize("backend", ["torch", pytest.param("mindspore", marks=pytest.mark.slow)])
def test_two_ranks_match_one_process_and_evaluate_each_example_once(tmp_path, minilm_path, backend):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    common = [*SHORT[1:], "--train_steps=6", "--eval_steps=3", "--dropout=0", f"--backend={backend}"]
    two = subprocess.run(["bash", os.path.join(REPO_ROOT, "examples", "finetune", "run_classifier_distributed.sh"),
                          "2", str(hostfile), "RTE", *common, "--precision=fp32",
                          f"--save_checkpoint_path={tmp_path / 'dp'}"],
                         capture_output=True, text=True, env={**ENV, "INIT_FROM": minilm_path}, timeout=900,
                         cwd=REPO_ROOT)
    assert two.returncode == 0, two.stderr[-3000:]
    one = finetune("--auto_model=bert_glue", *common, f"--init_from={minilm_path}", "--grad_accumulation_steps=2",
                   f"--save_checkpoint_path={tmp_path / 'sp'}")
    assert one.returncode == 0, one.stderr[-3000:]
    np.testing.assert_allclose(train_losses(tmp_path / "dp"), train_losses(tmp_path / "sp"), rtol=0, atol=1e-5)
    dp, sp = evaluations(tmp_path / "dp"), evaluations(tmp_path / "sp")
    assert [e["eval_examples"] for e in dp] == [277, 277]
    assert [e["accuracy"] for e in dp] == [e["accuracy"] for e in sp]
    np.testing.assert_allclose([e["eval_loss"] for e in dp], [e["eval_loss"] for e in sp], atol=1e-5)


@pytest.mark.slow  # ~1 min; run with -m slow
def test_training_from_mindrecords_equals_training_from_the_tsv(tmp_path, minilm_path):
    records = tmp_path / "records"
    made = subprocess.run(["bash", os.path.join(REPO_ROOT, "examples", "generate_mindrecord", "generate_glue_mindrecord.sh"),
                           "RTE", RTE, str(records), os.path.join(minilm_path, "vocab.txt")],
                          capture_output=True, text=True, env=ENV, timeout=600, cwd=REPO_ROOT)
    assert made.returncode == 0, made.stderr[-3000:]
    assert "train.mindrecord: 2490 examples" in made.stdout and "dev.mindrecord: 277 examples" in made.stdout
    common = [*SHORT, "--train_steps=4", "--eval_steps=4", "--dropout=0", f"--init_from={minilm_path}"]
    from_tsv = finetune(*common, f"--save_checkpoint_path={tmp_path / 'tsv'}")
    from_records = finetune(*common, "--dataset_format=mindrecord", f"--train_data_path={records / 'train.mindrecord'}",
                            f"--eval_data_path={records / 'dev.mindrecord'}", f"--save_checkpoint_path={tmp_path / 'rec'}")
    assert from_tsv.returncode == 0 and from_records.returncode == 0, from_records.stderr[-3000:]
    assert train_losses(tmp_path / "tsv") == train_losses(tmp_path / "rec")
    assert evaluations(tmp_path / "rec")[-1]["eval_examples"] == 277


# ---- bad input: one line, exit 2, nothing trained ----------------------------------------------

def test_a_misspelled_task_and_a_damaged_row_are_one_line_errors(tmp_path, minilm_path):
    one_line_error(finetune(*SHORT, "--task_name=RTF", f"--init_from={minilm_path}",
                             f"--save_checkpoint_path={tmp_path / 'a'}"), "--task_name=RTF", "did you mean 'rte'")
    assert not (tmp_path / "a" / "metrics.jsonl").exists()
    data = tmp_path / "RTE"
    data.mkdir()
    shutil.copy(os.path.join(RTE, "dev.tsv"), data / "dev.tsv")
    lines = open(os.path.join(RTE, "train.tsv"), encoding="utf-8").read().splitlines()
    lines[41] = "\t".join(lines[41].split("\t")[:2])  # row of line 42 loses two fields
    (data / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    one_line_error(finetune(*SHORT[:2], f"--data_dir={data}", *SHORT[3:], f"--init_from={minilm_path}",
                             f"--save_checkpoint_path={tmp_path / 'b'}"), "train.tsv:42", "2 fields")
    one_line_error(classify(f"--load_checkpoint_path={minilm_path}", "--task_name=rte", f"--data_dir={RTE}"),
                    "no classifier weights")
    one_line_error(finetune(*SHORT, "--num_labels=3", f"--init_from={minilm_path}",
                             f"--save_checkpoint_path={tmp_path / 'c'}"), "--num_labels=3", "RTE has 2")


@pytest.mark.slow  # ~1 min; run with -m slow
def test_init_from_a_converted_checkpoint_equals_init_from_the_hf_folder(tmp_path, minilm_path):
    from mindtransformer import convert

    ckpt = tmp_path / "ms" / "minilm.ckpt"
    ckpt.parent.mkdir()
    convert.main(["--torch_path", minilm_path, "--mindspore_path", str(ckpt)])  # config.json lands beside it
    common = [*SHORT, "--train_steps=3", "--eval_steps=3", "--dropout=0"]
    from_hf = finetune(*common, f"--init_from={minilm_path}", f"--save_checkpoint_path={tmp_path / 'hf'}")
    without_vocab = finetune(*common, f"--init_from={ckpt}", f"--save_checkpoint_path={tmp_path / 'x'}")
    one_line_error(without_vocab, "--vocab_file_path")
    from_ckpt = finetune(*common, f"--init_from={ckpt}", f"--vocab_file_path={os.path.join(minilm_path, 'vocab.txt')}",
                         f"--save_checkpoint_path={tmp_path / 'ckpt'}")
    assert from_hf.returncode == 0 and from_ckpt.returncode == 0, from_ckpt.stderr[-3000:]
    assert train_losses(tmp_path / "hf") == train_losses(tmp_path / "ckpt")


@pytest.mark.slow  # ~1 min; run with -m slow
def test_a_resumed_fine_tune_continues_with_the_same_losses(tmp_path, minilm_path):
    common = [*SHORT, "--train_steps=6", "--eval_steps=3", "--save_checkpoint_steps=3", f"--init_from={minilm_path}"]
    full = finetune(*common, f"--save_checkpoint_path={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-3000:]
    # Resuming from the full run's step-3 checkpoint (weights, optimizer, RNG, data position, schedule).
    resumed = finetune(*common, f"--save_checkpoint_path={tmp_path / 'full-resumed'}",
                       f"--load_checkpoint_path={tmp_path / 'full' / 'checkpoints' / 'bert-step00000003'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert train_losses(tmp_path / "full-resumed") == train_losses(tmp_path / "full")[3:]
    assert evaluations(tmp_path / "full-resumed")[-1]["accuracy"] == evaluations(tmp_path / "full")[-1]["accuracy"]


def test_a_csv_task_holds_out_a_seeded_dev_split_and_trains(tmp_path, minilm_path):
    from tests.conftest import shared_file

    source = shared_file("chinese_sentiment", "waimai_10k", "waimai_10k.csv")
    lines = open(source, encoding="utf-8").read().splitlines()
    sample = tmp_path / "reviews.csv"
    sample.write_text("\n".join(lines[:1] + lines[1:101] + lines[-100:]) + "\n", encoding="utf-8")  # both labels
    common = ["--auto_model=bert_glue", "--task_name=csv", f"--train_data_path={sample}", "--text_column=review",
              "--global_batch_size=16", "--train_steps=4", f"--init_from={minilm_path}", "--dev_fraction=0.2"]
    done = finetune(*common, f"--save_checkpoint_path={tmp_path / 'a'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "40 of 200 examples held out" in done.stdout
    final = evaluations(tmp_path / "a")[-1]
    assert final["eval_examples"] == 40 and {"accuracy", "f1_weighted", "precision_weighted"} <= set(final)
    manifest = json.loads((tmp_path / "a" / "run_manifest.json").read_text())
    assert manifest["labels"] == ["0", "1"] and manifest["train_examples"] == 160
    config = json.loads((tmp_path / "a" / "final" / "config.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "1"}


def test_bad_input_to_the_evaluation_and_record_tools_is_one_line_and_writes_nothing(tmp_path, torch_run):
    one_line_error(classify(f"--load_checkpoint_path={torch_run / 'final'}", "--txet=hello"), "--txet", "--text")
    one_line_error(classify(f"--load_checkpoint_path={torch_run / 'final'}", f"--input_file={tmp_path / 'none.txt'}"),
                    "none.txt", "no such file")
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("a\tb\nc\n", encoding="utf-8")
    one_line_error(classify(f"--load_checkpoint_path={torch_run / 'final'}", f"--input_file={ragged}"), "ragged.tsv:2")
    # train.tsv but no dev.tsv: every file is read before anything is written, so nothing is left.
    data = tmp_path / "RTE"
    data.mkdir()
    shutil.copy(os.path.join(RTE, "train.tsv"), data / "train.tsv")
    out = tmp_path / "records"
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "examples", "generate_mindrecord",
                                                        "generate_glue_mindrecord.py"), "--task_name=RTE",
                           f"--vocab_path={torch_run / 'final'}", f"--input_dir={data}", f"--output_dir={out}",
                           "--output_format=tfrecord"], capture_output=True, text=True, env=ENV, cwd=REPO_ROOT)
    one_line_error(done, "dev.tsv", "no such file")
    assert not out.exists() or not any(out.iterdir())
