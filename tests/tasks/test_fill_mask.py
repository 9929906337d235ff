"""fill_mask on a real checkpoint with an MLM head (the real MiniLM with a seeded, tied head, saved
as an HF folder): the same top-k tokens and probabilities as transformers' fill-mask pipeline,
from the HF folder and from a MindSpore .ckpt (torch and MindSpore backends); several masks; the
interactive mode driven through stdin (prompt, qa, options, quit, end of input); a checkpoint
without MLM head weights is a one-line error."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.trainer.cli import ENV, REPO_ROOT, one_line_error, run

PROMPTS = ["The capital of France is [MASK].", "She went to the [MASK] to buy some bread.",
           "I [MASK] this movie, it was [MASK] good.", "今天天氣很[MASK]。"]


def save_with_head(minilm_path, task, folder):
    """The real MiniLM with a seeded head for `task`, saved as an HF folder."""
    from mindtransformer.backends import get_backend
    from mindtransformer.pretrained import from_pretrained, save_pretrained

    get_backend("torch").manual_seed(0)
    model = from_pretrained(minilm_path, task=task)
    assert any(k.startswith("cls.predictions") for k in model.load_report.initialized)
    save_pretrained(model, folder)
    return folder


@pytest.fixture(scope="module")
def mlm_folder(tmp_path_factory, minilm_path):
    return save_with_head(minilm_path, "masked_lm", str(tmp_path_factory.mktemp("mlm") / "hf"))


@pytest.fixture(scope="module")
def mlm_ckpt(mlm_folder, tmp_path_factory):
    """The same weights as a MindSpore checkpoint beside its config.json and vocab."""
    from mindtransformer.backends.mindspore import write_checkpoint
    from mindtransformer.pretrained import read_weights

    folder = tmp_path_factory.mktemp("mlm-ms")
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(mlm_folder, name), folder / name)
    write_checkpoint(read_weights(os.path.join(mlm_folder, "model.safetensors")), str(folder / "bert.ckpt"))
    return str(folder / "bert.ckpt")


def hf_fill(folder, text, top_k=5):
    from transformers import pipeline

    answers = pipeline("fill-mask", model=folder, device="cpu")(text, top_k=top_k)
    return answers if isinstance(answers[0], list) else [answers]


def assert_same(ours, theirs, tolerance):
    assert len(ours) == len(theirs)
    for mine, hf in zip(ours, theirs):
        assert [p["token"] for p in mine] == [p["token"] for p in hf]
        assert [p["token_str"] for p in mine] == [p["token_str"] for p in hf]
        assert [p["sequence"] for p in mine] == [p["sequence"] for p in hf]
        np.testing.assert_allclose([p["score"] for p in mine], [p["score"] for p in hf], atol=tolerance)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_same_top_k_as_transformers_pipeline(mlm_folder, prompt):
    from mindtransformer.tasks.masked_lm import MaskedLanguageModel

    assert_same(MaskedLanguageModel.load(mlm_folder).fill(prompt, 5), hf_fill(mlm_folder, prompt), 1e-6)


def test_pretraining_checkpoint(tmp_path, minilm_path):
    """A BertForPreTraining folder (MLM + NSP heads, what our pretraining runs export)."""
    from mindtransformer.tasks.masked_lm import MaskedLanguageModel

    folder = save_with_head(minilm_path, "pretraining", str(tmp_path / "pretraining"))
    assert_same(MaskedLanguageModel.load(folder).fill(PROMPTS[0], 5), hf_fill(folder, PROMPTS[0]), 1e-6)


def test_mindspore_checkpoint_on_both_backends(mlm_folder, mlm_ckpt):
    from mindtransformer.tasks.masked_lm import MaskedLanguageModel

    prompt = PROMPTS[1]
    theirs = hf_fill(mlm_folder, prompt)
    assert_same(MaskedLanguageModel.load(mlm_ckpt).fill(prompt, 5), theirs, 1e-6)
    assert_same(MaskedLanguageModel.load(mlm_ckpt, backend="mindspore").fill(prompt, 5), theirs, 1e-5)


def test_command_line_json_equals_pipeline(mlm_folder):
    import json

    done = run("mindtransformer.tasks.fill_mask", f"--model_path={mlm_folder}", "--prompt", PROMPTS[2],
               "--top_k", "3", "--json", "--cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same(json.loads(done.stdout.strip().splitlines()[-1]), hf_fill(mlm_folder, PROMPTS[2], 3), 1e-6)


def test_interactive_mode_through_stdin(mlm_folder):
    session = "\n".join(["The capital of France is [MASK].", "no mask here", "qa", "The capital of France is",
                         "Paris | a banana | London", "mask", "quit", "never read"]) + "\n"
    done = subprocess.run([sys.executable, "-m", "mindtransformer.tasks.fill_mask", f"--model_path={mlm_folder}",
                           "--top_k", "2"], input=session, capture_output=True, text=True, env=ENV, cwd=REPO_ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert out.count("[MASK]: ") == 1 and "-> the capital of france is" in out
    assert "error: no [MASK] in 'no mask here'" in out
    assert "question mode" in out and "options> " in out
    ranked = [line for line in out.splitlines() if "mean log-probability" in line]
    assert len(ranked) == 3 and {line.split(". ", 1)[1].split("  (")[0] for line in ranked} == \
        {"Paris", "a banana", "London"}
    assert "fill-mask mode" in out and "never read" not in out
    # the end of the input (no quit) leaves cleanly too
    done = subprocess.run([sys.executable, "-m", "mindtransformer.tasks.fill_mask", f"--model_path={mlm_folder}"],
                          input="今天天氣很[MASK]。\n", capture_output=True, text=True, env=ENV, cwd=REPO_ROOT,
                          timeout=300)
    assert done.returncode == 0 and "[MASK]: " in done.stdout, done.stderr[-2000:]


def test_checkpoint_without_mlm_head_is_an_error(minilm_path):
    done = run("mindtransformer.tasks.fill_mask", f"--model_path={minilm_path}", "--prompt", PROMPTS[0])
    one_line_error(done, "no masked-LM head (cls.predictions.*) weights", "cls.predictions.bias",
                   "pass a pretraining or masked-LM checkpoint")
    done = run("mindtransformer.tasks.fill_mask", f"--model_path={minilm_path}", "--top-k", "3")
    one_line_error(done, "--top-k")
