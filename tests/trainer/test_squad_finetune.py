"""SQuAD fine-tuning end to end through the command lines, on the bundled real SQuAD v1.1 slices
and the real MiniLM checkpoint: 10 steps on each backend lower the loss and write prediction
files that answer every question; the evaluation entry point reproduces the run's scores from
the HF folder and the MindSpore checkpoint and scores a predictions file; two ranks predict
every window once; one-line errors for malformed JSON, a missing context and a checkpoint of the
wrong size."""

import json
import os
import shutil

import numpy as np
import pytest

from mindtransformer.utils.bundled import RESOURCES
from tests.trainer.cli import MPI, evaluations, finetune, one_line_error, run, run_script, train_losses

SQUAD = os.path.join(RESOURCES, "squad")
# 32 real questions of the training article, 8 per step: 4 steps an epoch, 10 steps = 2.5 epochs;
# windows of 256 tokens, not the usual 384, to keep the runs short (each of the 32 fits in one).
WINDOW = "--seq_length=256"
SHORT = ["--auto_model=bert_squad", f"--train_data_path={os.path.join(SQUAD, 'train.json')}",
         "--max_train_examples=32", "--global_batch_size=8", "--learning_rate=1e-4", "--train_steps=10",
         "--eval_steps=5", "--save_checkpoint_steps=5", "--log_steps=1", WINDOW]


def answer(*args):
    return run("mindtransformer.tasks.question_answering", *args)


@pytest.fixture(scope="module")
def dev_slice(tmp_path_factory):
    """The first 4 paragraphs of the bundled dev article (Force): a quick evaluation set."""
    with open(os.path.join(SQUAD, "dev.json"), encoding="utf-8") as f:
        data = json.load(f)
    data["data"][0]["paragraphs"] = data["data"][0]["paragraphs"][:4]
    path = tmp_path_factory.mktemp("squad-dev") / "dev.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    ids = [qa["id"] for p in data["data"][0]["paragraphs"] for qa in p["qas"]]
    return str(path), ids


def _fine_tune(tmp_path_factory, minilm_path, dev_slice, backend, *flags):
    out = tmp_path_factory.mktemp(f"squad-{backend}")
    done = finetune(*SHORT, f"--eval_data_path={dev_slice[0]}", f"--init_from={minilm_path}", f"--backend={backend}",
                    *flags, f"--save_checkpoint_path={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory, minilm_path, dev_slice):
    return _fine_tune(tmp_path_factory, minilm_path, dev_slice, "torch")


@pytest.fixture(scope="module")
def mindspore_run(tmp_path_factory, minilm_path, dev_slice):
    # One evaluation, at the end: MindSpore evaluates op by op on CPU.
    return _fine_tune(tmp_path_factory, minilm_path, dev_slice, "mindspore", "--eval_steps=10")


def assert_learned_and_answered_everything(run_dir, ids, eval_steps=(5, 10)):
    losses = train_losses(run_dir)
    assert len(losses) == 10 and np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3, losses
    evals = evaluations(run_dir, key="f1")
    assert [e["step"] for e in evals] == list(eval_steps)
    assert all(e["total"] == len(ids) and e["missing_predictions"] == 0 for e in evals)
    predictions = json.loads((run_dir / "predictions.json").read_text(encoding="utf-8"))
    nbest = json.loads((run_dir / "nbest_predictions.json").read_text(encoding="utf-8"))
    assert sorted(predictions) == sorted(ids) and all(isinstance(v, str) for v in predictions.values())
    assert sorted(nbest) == sorted(ids)
    for qid, entries in nbest.items():
        assert 1 <= len(entries) <= 20 and abs(sum(e["probability"] for e in entries) - 1) < 1e-6
        assert entries[0]["text"] == predictions[qid]  # the best entry is the prediction (v1.1)
    return evals[-1]


def last_json(done) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_torch_fine_tune_learns_and_answers_every_question(torch_run, dev_slice):
    final = assert_learned_and_answered_everything(torch_run, dev_slice[1])
    manifest = json.loads((torch_run / "run_manifest.json").read_text())
    assert manifest["train_features"] >= 32 and manifest["eval_questions"] == len(dev_slice[1])
    assert manifest["metric"] == "v1.1" and manifest["windows"]["doc_stride_semantics"] == "step"
    # The evaluation entry point on the HF export reproduces the run's last scores.
    out = torch_run / "answered"
    scores = last_json(answer(f"--eval_data_path={dev_slice[0]}", f"--load_checkpoint_path={torch_run / 'final'}",
                              f"--output_dir={out}", WINDOW))
    assert scores["exact_match"] == pytest.approx(final["exact_match"], abs=1e-9)
    assert scores["f1"] == pytest.approx(final["f1"], abs=1e-9) and scores["missing_predictions"] == 0
    # Scoring the written predictions file alone gives the same numbers (evaluate-v1.1.py's role).
    alone = last_json(answer(f"--eval_data_path={dev_slice[0]}", f"--predictions_file={out / 'predictions.json'}"))
    assert alone["exact_match"] == scores["exact_match"] and alone["f1"] == scores["f1"]


def test_the_export_loads_in_transformers_with_the_same_logits(torch_run, dev_slice):
    transformers = pytest.importorskip("transformers")
    import torch

    from mindtransformer.pretrained import from_pretrained

    final = str(torch_run / "final")
    hf = transformers.AutoModelForQuestionAnswering.from_pretrained(final).eval()
    ours = from_pretrained(final, task="question_answering")
    tokenizer = transformers.AutoTokenizer.from_pretrained(final)
    inputs = tokenizer(["Who won?"], ["The Denver Broncos won Super Bowl 50."], return_tensors="pt")
    with torch.no_grad():
        expected = hf(**inputs)
        got = ours(inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"])
    np.testing.assert_allclose(got["start_logits"].numpy(), expected.start_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(got["end_logits"].numpy(), expected.end_logits.numpy(), atol=1e-4)


def test_mindspore_fine_tune_learns_and_answers_from_its_checkpoint(mindspore_run, dev_slice):
    final = assert_learned_and_answered_everything(mindspore_run, dev_slice[1], eval_steps=(10,))
    scores = last_json(answer(f"--eval_data_path={dev_slice[0]}", "--backend=mindspore", WINDOW,
                              f"--load_checkpoint_path={mindspore_run / 'final' / 'bert.ckpt'}",
                              f"--output_dir={mindspore_run / 'answered'}"))
    assert scores["f1"] == pytest.approx(final["f1"], abs=1e-6) and scores["missing_predictions"] == 0


@pytest.mark.skipif(MPI is None, reason="OpenMPI's mpirun is not installed")
@pytest.mark.slow  # ~30 s; the GLUE twin runs by default
def test_two_ranks_match_one_process_and_predict_every_window_once(tmp_path, minilm_path, dev_slice):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    common = [*SHORT[1:], "--train_steps=4", "--eval_steps=4", "--dropout=0", "--precision=fp32",
              f"--eval_data_path={dev_slice[0]}"]
    two = run_script("finetune/run_squad_distributed.sh", 2, hostfile, *common,
                     f"--save_checkpoint_path={tmp_path / 'dp'}", env={"INIT_FROM": minilm_path})
    assert two.returncode == 0, two.stderr[-3000:]
    one = finetune("--auto_model=bert_squad", *common, f"--init_from={minilm_path}", "--grad_accumulation_steps=2",
                   f"--save_checkpoint_path={tmp_path / 'sp'}")
    assert one.returncode == 0, one.stderr[-3000:]
    np.testing.assert_allclose(train_losses(tmp_path / "dp"), train_losses(tmp_path / "sp"), rtol=0, atol=1e-5)
    dp, sp = evaluations(tmp_path / "dp", "f1")[-1], evaluations(tmp_path / "sp", "f1")[-1]
    assert dp["total"] == len(dev_slice[1]) and dp["missing_predictions"] == 0
    assert dp["exact_match"] == sp["exact_match"] and dp["f1"] == pytest.approx(sp["f1"], abs=1e-9)
    assert json.loads((tmp_path / "dp" / "predictions.json").read_text()) == \
        json.loads((tmp_path / "sp" / "predictions.json").read_text())


@pytest.mark.slow  # ~1 min; run with -m slow
def test_training_from_records_equals_training_from_the_json(tmp_path, minilm_path, dev_slice):
    records = tmp_path / "records"
    made = run_script("generate_mindrecord/generate_squad_mindrecord.sh", os.path.join(SQUAD, "train.json"),
                      dev_slice[0], records, os.path.join(minilm_path, "vocab.txt"))
    assert made.returncode == 0, made.stderr[-3000:]
    assert "train.mindrecord: " in made.stdout and (records / "dev.mindrecord.maps.json").is_file()
    # Records hold every window of the article, the JSON run its first 32 questions: compare whole epochs of both.
    # The records script makes windows of the usual 384 tokens.
    common = [*SHORT, "--max_train_examples=0", "--train_steps=3", "--eval_steps=3", "--dropout=0",
              "--do_shuffle=false", "--seq_length=384", f"--init_from={minilm_path}"]
    from_json = finetune(*common, f"--eval_data_path={dev_slice[0]}", f"--save_checkpoint_path={tmp_path / 'json'}")
    from_records = finetune(*common, "--dataset_format=mindrecord", f"--train_data_path={records / 'train.mindrecord'}",
                            f"--eval_data_path={records / 'dev.mindrecord'}", f"--save_checkpoint_path={tmp_path / 'rec'}")
    assert from_json.returncode == 0 and from_records.returncode == 0, from_records.stderr[-3000:]
    assert train_losses(tmp_path / "json") == train_losses(tmp_path / "rec")
    assert evaluations(tmp_path / "json", "f1")[-1]["f1"] == evaluations(tmp_path / "rec", "f1")[-1]["f1"]


# ---- bad input: one line, exit 2, nothing trained ----------------------------------------------

def test_malformed_json_and_a_missing_context_are_one_line_errors(tmp_path, minilm_path, dev_slice):
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [{"paragraphs": [', encoding="utf-8")
    one_line_error(finetune(*SHORT, f"--train_data_path={broken}", f"--init_from={minilm_path}",
                            f"--save_checkpoint_path={tmp_path / 'a'}"), str(broken), "not a SQuAD-format JSON")
    assert not (tmp_path / "a" / "metrics.jsonl").exists()
    data = json.loads(open(dev_slice[0], encoding="utf-8").read())
    del data["data"][0]["paragraphs"][2]["context"]
    no_context = tmp_path / "no_context.json"
    no_context.write_text(json.dumps(data), encoding="utf-8")
    one_line_error(finetune(*SHORT, f"--eval_data_path={no_context}", f"--init_from={minilm_path}",
                            f"--save_checkpoint_path={tmp_path / 'b'}"),
                   str(no_context), "data[0].paragraphs[2] has no 'context' field")
    one_line_error(answer(f"--eval_data_path={no_context}", f"--load_checkpoint_path={minilm_path}"),
                   "data[0].paragraphs[2] has no 'context' field")
    one_line_error(answer(f"--eval_data_path={dev_slice[0]}", f"--predictions_file={broken}"),
                   str(broken), "not valid JSON")
    one_line_error(finetune(*SHORT, f"--train_data_path={tmp_path / 'absent.json'}", f"--init_from={minilm_path}",
                            f"--save_checkpoint_path={tmp_path / 'c'}"), "absent.json: no such SQuAD file")
    one_line_error(answer(f"--eval_data_path={dev_slice[0]}", "--predictions_fle=p.json"),
                   "unknown flag --predictions_fle", "--predictions_file")


def test_a_checkpoint_of_the_wrong_size_or_without_a_head_is_a_one_line_error(tmp_path, torch_run, dev_slice, minilm_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(torch_run / "final" / "model.safetensors", bare / "model.safetensors")
    vocab = os.path.join(minilm_path, "vocab.txt")
    # The original scripts' size flags for bert-base against MiniLM's weights (hidden 384, 6 layers).
    one_line_error(answer(f"--eval_data_path={dev_slice[0]}", f"--load_checkpoint_path={bare}",
                          f"--vocab_file_path={vocab}", "--embedding_size=768", "--num_layers=12", "--num_heads=12"),
                   "model.safetensors")
    one_line_error(answer(f"--eval_data_path={dev_slice[0]}", f"--load_checkpoint_path={bare}"), "no config.json")
    # A pretrained checkpoint without the question-answering head is not a fine-tuned model.
    one_line_error(answer(f"--eval_data_path={dev_slice[0]}", f"--load_checkpoint_path={minilm_path}"),
                   "no question-answering head weights", "qa_outputs")


def test_chinese_cmrc_fine_tunes_and_is_scored_with_the_cmrc_metric(tmp_path, minilm_path):
    from tests.conftest import shared_file

    trial = shared_file("cmrc2018", "cmrc2018_trial.json")
    with open(trial, encoding="utf-8") as f:
        data = json.load(f)
    data["data"] = data["data"][:3]  # three articles to answer
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    done = finetune(*SHORT[:1], f"--train_data_path={trial}", *SHORT[2:], f"--eval_data_path={dev}",
                    f"--init_from={minilm_path}", "--max_answer_length=64",
                    "--train_steps=3", "--eval_steps=3", "--save_checkpoint_steps=3",  # what is tested: data and metric
                    f"--save_checkpoint_path={tmp_path / 'run'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "5 skipped (answer not found at its answer_start)" in done.stderr
    manifest = json.loads((tmp_path / "run" / "run_manifest.json").read_text())
    assert manifest["metric"] == "cmrc" and manifest["skipped_questions"] == [f"TRIAL_210_QUERY_{i}" for i in range(5)]
    last = evaluations(tmp_path / "run", "f1")[-1]
    questions = sum(len(p["qas"]) for a in data["data"] for p in a["paragraphs"])
    assert last["total"] == questions and last["missing_predictions"] == 0 and "average" in last
    predictions = json.loads((tmp_path / "run" / "predictions.json").read_text(encoding="utf-8"))
    assert len(predictions) == questions and all(isinstance(v, str) for v in predictions.values())
