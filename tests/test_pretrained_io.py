"""Loading and saving HF folders: transformers loads what we save; strict loading errors."""

import os
import shutil

import numpy as np
import pytest
import torch

import mindtransformer as mt
from mindtransformer.backends import get_backend
from mindtransformer.errors import UserInputError
from mindtransformer.verify import HF_CLASSES, OUTPUT_NAMES, task_inputs

TEXTS = ["The quick brown fox jumps over the lazy dog.", "A short one.", "BERT reads both directions at once."]


@pytest.fixture(scope="module")
def batch(minilm_path):
    return mt.load_tokenizer(minilm_path).encode_batch(TEXTS, max_length=32)


@pytest.mark.parametrize("task", mt.TASK_NAMES)
def test_saved_folder_loads_in_transformers_with_same_outputs(minilm_path, batch, task, tmp_path):
    import transformers

    labels = {} if task in ("question_answering", "multiple_choice") else {"num_labels": 3}
    model = mt.from_pretrained(minilm_path, task=task, **labels)
    mt.save_pretrained(model, str(tmp_path))
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(tmp_path))
    hf, info = getattr(transformers, HF_CLASSES[task]).from_pretrained(str(tmp_path), output_loading_info=True)
    assert info["missing_keys"] == set() or info["missing_keys"] == [], info
    assert not info["mismatched_keys"]
    inputs = task_inputs(batch, task)
    with torch.no_grad():
        reference = hf.eval()(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    ours = get_backend("torch").infer(model, inputs)
    for name in OUTPUT_NAMES[task]:
        np.testing.assert_allclose(ours[name], getattr(reference, name).numpy(), atol=1e-5, rtol=0)
    # transformers' own tokenizer loads from the folder and agrees with ours
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf_tok(TEXTS, padding=True)["input_ids"] == batch["input_ids"].tolist()


def test_load_save_load_is_bit_identical(minilm_path, tmp_path):
    first = mt.from_pretrained(minilm_path, task="sequence_classification")
    mt.save_pretrained(first, str(tmp_path / "a"))
    second = mt.from_pretrained(str(tmp_path / "a"), task="sequence_classification")
    assert second.load_report.initialized == [] and second.load_report.unexpected == []
    mt.save_pretrained(second, str(tmp_path / "b"))
    a, b = get_backend("torch").named_arrays(first), get_backend("torch").named_arrays(second)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    for name in ("model.safetensors", "config.json", "vocab.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_new_head_is_initialised_and_reported(minilm_path):
    model = mt.from_pretrained(minilm_path, task="question_answering")
    assert model.load_report.initialized == ["qa_outputs.weight", "qa_outputs.bias"]
    assert model.load_report.unexpected == ["bert.pooler.dense.bias", "bert.pooler.dense.weight"]
    assert not model.training


def test_reads_pytorch_model_bin_with_weights_only(minilm_path, tmp_path, batch):
    from safetensors.torch import load_file

    shutil.copy(os.path.join(minilm_path, "config.json"), tmp_path)
    torch.save(load_file(os.path.join(minilm_path, "model.safetensors")), tmp_path / "pytorch_model.bin")
    a = get_backend("torch").infer(mt.from_pretrained(str(tmp_path)), batch)
    b = get_backend("torch").infer(mt.from_pretrained(minilm_path), batch)
    assert np.array_equal(a["last_hidden_state"], b["last_hidden_state"])


# ---- bad input: one-line errors naming the file and the problem --------------------------------

def _one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_folder_without_weights(minilm_path, tmp_path):
    shutil.copy(os.path.join(minilm_path, "config.json"), tmp_path)
    with pytest.raises(UserInputError) as err:
        mt.from_pretrained(str(tmp_path))
    assert f"{tmp_path}: no weights found" in _one_line(err)


def test_config_that_disagrees_with_weights(minilm_path, tmp_path):
    for name in ("model.safetensors", "vocab.txt"):
        os.symlink(os.path.join(minilm_path, name), tmp_path / name)
    mt.BertConfig.from_pretrained(minilm_path).replace(intermediate_size=1024).to_json_file(str(tmp_path / "config.json"))
    with pytest.raises(UserInputError) as err:
        mt.from_pretrained(str(tmp_path))
    message = _one_line(err)
    assert "model.safetensors" in message and "config.json" in message
    assert "intermediate.dense.weight is (1536, 384) in the weights but (1024, 384) by the config" in message


def test_checkpoint_missing_backbone_weights(minilm_path, tmp_path):
    from safetensors.numpy import load_file, save_file

    arrays = load_file(os.path.join(minilm_path, "model.safetensors"))
    del arrays["encoder.layer.3.output.dense.weight"]
    save_file(arrays, str(tmp_path / "model.safetensors"))
    shutil.copy(os.path.join(minilm_path, "config.json"), tmp_path)
    with pytest.raises(UserInputError, match="1 backbone weights are missing .first: encoder.layer.3.output.dense.weight"):
        mt.from_pretrained(str(tmp_path))


def test_truncated_weights_file(minilm_path, tmp_path):
    shutil.copy(os.path.join(minilm_path, "config.json"), tmp_path)
    data = open(os.path.join(minilm_path, "model.safetensors"), "rb").read()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserInputError) as err:
        mt.from_pretrained(str(tmp_path))
    assert "model.safetensors: not a readable safetensors file" in _one_line(err)
    os.remove(tmp_path / "model.safetensors")
    (tmp_path / "pytorch_model.bin").write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserInputError) as err:
        mt.from_pretrained(str(tmp_path))
    assert "pytorch_model.bin: not a readable torch checkpoint" in _one_line(err)


def test_vocab_that_is_not_a_vocab(tmp_path):
    (tmp_path / "vocab.txt").write_text("hello\nworld\n")
    with pytest.raises(UserInputError) as err:
        mt.load_tokenizer(str(tmp_path / "vocab.txt"))
    assert "vocab.txt: not a BERT vocab (no [PAD], [UNK], [CLS], [SEP] among 2 lines)" in _one_line(err)
    (tmp_path / "vocab.txt").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserInputError, match="vocab.txt: not a UTF-8 text file"):
        mt.load_tokenizer(str(tmp_path))
    with pytest.raises(UserInputError, match="missing.txt: no such vocab file"):
        mt.load_tokenizer(str(tmp_path / "missing.txt"))


def test_unknown_task_and_backend(minilm_path):
    with pytest.raises(UserInputError, match="unknown task 'sequence_classifcation'.*did you mean 'sequence_classification'"):
        mt.from_pretrained(minilm_path, task="sequence_classifcation")
    with pytest.raises(UserInputError, match="unknown backend 'pytorch'"):
        mt.from_pretrained(minilm_path, backend="pytorch")
