"""tools/convert_bert_weight.py: HF <-> MindSpore checkpoints, the model zoo's layout, bad input."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

import mindtransformer as mt
from mindtransformer.backends import get_backend
from mindtransformer.convert import main as convert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "convert_bert_weight.py")
TORCH, MINDSPORE = get_backend("torch"), get_backend("mindspore")


def run_tool(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def converted(minilm_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    ckpt = str(folder / "minilm.ckpt")
    assert convert(["--layers", "6", "--torch_path", os.path.join(minilm_path, "model.safetensors"),
                    "--mindspore_path", ckpt]) == 0
    return ckpt


@pytest.fixture(scope="module")
def batch(minilm_path):
    return mt.load_tokenizer(minilm_path).encode_batch(
        ["The cat sat on the mat.", "Checkpoints should convert without surprises at all."], max_length=32)


def test_round_trip_is_bit_identical(minilm_path, converted, tmp_path):
    assert convert(["--direction", "ms2hf", "--mindspore_path", converted, "--torch_path", str(tmp_path),
                    "--vocab_file", os.path.join(minilm_path, "vocab.txt")]) == 0
    original, back = load_file(os.path.join(minilm_path, "model.safetensors")), load_file(str(tmp_path / "model.safetensors"))
    assert original.keys() == back.keys() and len(original) == 104
    for name in original:
        assert original[name].dtype == back[name].dtype and np.array_equal(original[name], back[name]), name
    import transformers
    assert transformers.BertModel.from_pretrained(str(tmp_path)).config.num_hidden_layers == 6


@pytest.mark.parametrize("task", ["base", "sequence_classification"])
def test_converted_checkpoint_loads_strictly_into_mindspore(minilm_path, converted, batch, task):
    model = mt.from_pretrained(converted, task=task, backend="mindspore")
    assert model.load_report.initialized == ([] if task == "base" else ["classifier.weight", "classifier.bias"])
    reference = mt.from_pretrained(minilm_path, task=task)
    if task != "base":
        MINDSPORE.load_arrays(model, {k: TORCH.named_arrays(reference)[k] for k in model.load_report.initialized})
    got, expected = MINDSPORE.infer(model, batch), TORCH.infer(reference, batch)
    for name in expected:
        assert np.abs(got[name] - expected[name]).max() <= 1e-4


def zoo_name(hf_name: str) -> str:
    """The model zoo's name for an HF BERT weight inside its pretraining network (BertNetworkWithLoss),
    written from the zoo's attribute nesting, apart from the product's table."""
    rules = [
        (r"^embeddings\.word_embeddings\.weight$", "bert.bert.bert_embedding_lookup.embedding_table"),
        (r"^embeddings\.position_embeddings\.weight$", "bert.bert.bert_embedding_postprocessor.full_position_embedding.embedding_table"),
        (r"^embeddings\.token_type_embeddings\.weight$", "bert.bert.bert_embedding_postprocessor.token_type_embedding.embedding_table"),
        (r"^embeddings\.LayerNorm\.weight$", "bert.bert.bert_embedding_postprocessor.layernorm.gamma"),
        (r"^embeddings\.LayerNorm\.bias$", "bert.bert.bert_embedding_postprocessor.layernorm.beta"),
        (r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$",
         r"bert.bert.bert_encoder.layers.\1.attention.attention.\2_layer.\3"),
        (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)$", r"bert.bert.bert_encoder.layers.\1.attention.output.dense.\2"),
        (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.weight$", r"bert.bert.bert_encoder.layers.\1.attention.output.layernorm.gamma"),
        (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.bias$", r"bert.bert.bert_encoder.layers.\1.attention.output.layernorm.beta"),
        (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)$", r"bert.bert.bert_encoder.layers.\1.intermediate.\2"),
        (r"^encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)$", r"bert.bert.bert_encoder.layers.\1.output.dense.\2"),
        (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.weight$", r"bert.bert.bert_encoder.layers.\1.output.layernorm.gamma"),
        (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.bias$", r"bert.bert.bert_encoder.layers.\1.output.layernorm.beta"),
        (r"^pooler\.dense\.(weight|bias)$", r"bert.bert.dense.\1"),
    ]
    for pattern, replacement in rules:
        if re.match(pattern, hf_name):
            return re.sub(pattern, replacement, hf_name)
    raise KeyError(hf_name)


@pytest.fixture(scope="module")
def zoo_checkpoint(minilm_path, tmp_path_factory):
    """A zoo-layout pretraining checkpoint made from the real MiniLM weights, with the optimizer
    moments and counters such checkpoints carry."""
    weights = {k: v for k, v in load_file(os.path.join(minilm_path, "model.safetensors")).items()
               if not k.endswith("position_ids")}
    arrays = {zoo_name(k): v for k, v in weights.items()}
    arrays.update({f"adam_m.{k}": np.zeros_like(v) for k, v in list(arrays.items())[:5]})
    arrays["global_step"] = np.array([1000], np.int32)
    path = str(tmp_path_factory.mktemp("zoo") / "bert_zoo.ckpt")
    MINDSPORE.write_checkpoint(arrays, path)
    return path


def test_model_zoo_checkpoint_imports_with_the_same_outputs(minilm_path, zoo_checkpoint, batch, tmp_path):
    config = os.path.join(minilm_path, "config.json")
    model = mt.from_pretrained(zoo_checkpoint, backend="mindspore", config=config)
    assert model.load_report.initialized == [] and model.load_report.unexpected == []
    expected = TORCH.infer(mt.from_pretrained(minilm_path), batch)
    got = MINDSPORE.infer(model, batch)
    assert np.abs(got["last_hidden_state"] - expected["last_hidden_state"]).max() <= 1e-4
    # ms2hf writes an HF folder from it that transformers loads to the same outputs.
    assert convert(["--direction", "ms2hf", "--mindspore_path", zoo_checkpoint, "--torch_path", str(tmp_path),
                    "--config_file", config, "--layers", "6"]) == 0
    import torch
    import transformers
    hf = transformers.BertModel.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        out = hf(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
    assert np.abs(out - expected["last_hidden_state"]).max() <= 1e-5


def test_zoo_checkpoint_without_config_gets_the_zoos_math(zoo_checkpoint, tmp_path):
    assert convert(["--direction", "ms2hf", "--mindspore_path", zoo_checkpoint, "--torch_path", str(tmp_path)]) == 0
    config = mt.BertConfig.from_pretrained(str(tmp_path))
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (384, 6, 6)
    assert (config.hidden_act, config.layer_norm_eps) == ("gelu_new", 1e-7)


# ---- bad input -----------------------------------------------------------------------------

def one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_layers_that_disagree(minilm_path, tmp_path):
    message = one_line_error(run_tool("--layers", "12", "--torch_path", minilm_path, "--mindspore_path", str(tmp_path / "x.ckpt")))
    assert "--layers 12 disagrees" in message and "has 6 encoder layers" in message
    assert os.listdir(tmp_path) == []


def test_truncated_and_foreign_checkpoints(converted, tmp_path):
    data = open(converted, "rb").read()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    message = one_line_error(run_tool("--direction", "ms2hf", "--mindspore_path", str(tmp_path / "cut.ckpt"),
                                      "--torch_path", str(tmp_path / "out")))
    assert "cut.ckpt: not a readable MindSpore checkpoint" in message
    (tmp_path / "notes.ckpt").write_text("not a checkpoint at all\n")
    message = one_line_error(run_tool("--direction", "ms2hf", "--mindspore_path", str(tmp_path / "notes.ckpt"),
                                      "--torch_path", str(tmp_path / "out")))
    assert "notes.ckpt: not a readable MindSpore checkpoint" in message
    assert not (tmp_path / "out" / "config.json").exists()


def test_checkpoint_missing_a_layer(minilm_path, tmp_path):
    from safetensors.numpy import save_file

    arrays = load_file(os.path.join(minilm_path, "model.safetensors"))
    del arrays["encoder.layer.4.attention.self.value.weight"]
    save_file(arrays, str(tmp_path / "model.safetensors"))
    message = one_line_error(run_tool("--torch_path", str(tmp_path / "model.safetensors"),
                                      "--mindspore_path", str(tmp_path / "out.ckpt")))
    assert "encoder layer 4 of 6 lacks attention.self.value.weight" in message
    assert not (tmp_path / "out.ckpt").exists()


def test_unwritable_output_path(minilm_path, tmp_path):
    (tmp_path / "a_file").write_text("x")
    message = one_line_error(run_tool("--torch_path", minilm_path, "--mindspore_path", str(tmp_path / "a_file" / "x.ckpt")))
    assert "--mindspore_path" in message and "cannot create" in message


def test_misspelled_flag_names_the_right_one(minilm_path, tmp_path):
    result = run_tool("--layer", "6", "--torch_path", minilm_path, "--mindspore_path", str(tmp_path / "x.ckpt"))
    assert result.returncode == 2 and "unknown flag --layer (did you mean '--layers'?)" in result.stderr


def test_interrupted_write_leaves_no_checkpoint(minilm_path, tmp_path, monkeypatch):
    import mindspore

    def crash_midway(data, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(mindspore, "save_checkpoint", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        convert(["--torch_path", minilm_path, "--mindspore_path", str(tmp_path / "x.ckpt")])
    assert os.listdir(tmp_path) == []
