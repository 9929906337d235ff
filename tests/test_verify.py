"""python -m mindtransformer.verify: the parity table users run after a conversion."""

import os
import subprocess
import sys

import numpy as np

from mindtransformer.backends import get_backend
from mindtransformer.convert import main as convert


def run_verify(*args):
    return subprocess.run([sys.executable, "-m", "mindtransformer.verify", *args],
                          capture_output=True, text=True, timeout=600)


def test_converted_checkpoint_passes_and_a_damaged_one_fails(minilm_path, tmp_path):
    ckpt = str(tmp_path / "model.ckpt")
    assert convert(["--torch_path", minilm_path, "--mindspore_path", ckpt]) == 0
    tasks = ["--tasks", "base,question_answering", "--backends", "torch,mindspore"]
    good = run_verify("--model_path", minilm_path, "--mindspore_path", ckpt, *tasks)
    assert good.returncode == 0, good.stdout + good.stderr[-2000:]
    assert "|mindspore - HF|" in good.stdout and "OK: every output within tolerance" in good.stdout
    assert sum(line.startswith(("base", "question_answering")) for line in good.stdout.splitlines()) == 4

    ms = get_backend("mindspore")
    arrays = ms.read_checkpoint(ckpt)
    arrays["encoder.layer.2.output.LayerNorm.weight"] = arrays["encoder.layer.2.output.LayerNorm.weight"] * np.float32(1.01)
    damaged = str(tmp_path / "damaged" / "model.ckpt")
    ms.write_checkpoint(arrays, damaged)
    # One head on the damaged backend is enough to see the failure.
    bad = run_verify("--model_path", minilm_path, "--mindspore_path", damaged, "--tasks", "base", "--backends", "mindspore")
    assert bad.returncode == 1 and "FAIL" in bad.stdout
    assert "('base', 'last_hidden_state', 'mindspore')" in bad.stdout


def test_text_file_and_bad_input(minilm_path, tmp_path, sst2_sentences):
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(sst2_sentences[:10]) + "\n")
    ok = run_verify("--model_path", minilm_path, "--text_file", str(text), "--tasks", "base", "--backends", "torch")
    assert ok.returncode == 0 and "10 examples from" in ok.stdout
    missing = run_verify("--model_path", minilm_path, "--text_file", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2 and "nope.txt: no such text file" in missing.stderr
    typo = run_verify("--model_path", minilm_path, "--task", "base")
    assert typo.returncode == 2 and "did you mean '--tasks'" in typo.stderr
    assert not os.path.exists(tmp_path / "model.ckpt")
