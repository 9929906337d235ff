"""LoRA on the one BERT definition, on the real MiniLM checkpoint: trainable-parameter counts for
BERT-base shapes (computed from the shapes), adapters that peft loads onto transformers' BERT
with the same outputs (and peft's adapters that we load), the round trip, merging into plain
weights that transformers loads, and one-line errors."""

import os

import numpy as np
import pytest
import torch

from mindtransformer.adapters import load_adapter, save_adapter
from mindtransformer.errors import UserInputError
from mindtransformer.models.bert import bert_base, build_model
from mindtransformer.models.bert.lora import LoraSettings, apply_lora, merge_lora, parameter_counts
from mindtransformer.pretrained import from_pretrained, save_pretrained


@pytest.fixture(scope="module")
def inputs(minilm_path, sst2_sentences):
    from mindtransformer.data.tokenization import load_tokenizer

    batch = load_tokenizer(minilm_path).encode_batch(sst2_sentences[:16], max_length=64)
    return [torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids")], batch


def adapted(minilm_path, **settings):
    """MiniLM classifier with LoRA whose B matrices are random (a trained-looking adapter)."""
    torch.manual_seed(0)
    model = from_pretrained(minilm_path, task="sequence_classification")
    apply_lora(model, LoraSettings(dropout=0.0, **settings))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.05)
    return model.eval()


def test_bert_base_lora_r8_on_query_value_trains_about_0_3m():
    config = bert_base().replace(num_labels=2)
    model = apply_lora(build_model(config, "sequence_classification"), LoraSettings(r=8))
    counts = parameter_counts(model)
    h, layers = config.hidden_size, config.num_hidden_layers
    lora = layers * 2 * 8 * (h + h)  # two targets per layer, A (r, H) and B (H, r)
    head = h * config.num_labels + config.num_labels
    assert counts["trainable"] == lora + head
    assert 0.25e6 < counts["trainable"] < 0.35e6 and counts["percent"] < 0.3
    assert counts["total"] == sum(int(np.prod(p.shape)) for p in model.parameters())
    # peft's suffix matching: "dense" is attention.output.dense, intermediate.dense, output.dense
    # in every layer, and the pooler's dense
    model = apply_lora(build_model(config, "sequence_classification"),
                       LoraSettings(r=8, target_modules=("query", "key", "value", "dense")))
    i = config.intermediate_size
    per_layer = 4 * 8 * (h + h) + 2 * 8 * (h + i)
    assert parameter_counts(model)["trainable"] == layers * per_layer + 8 * (h + h) + head


def test_peft_loads_our_adapter_with_the_same_outputs(tmp_path, minilm_path, inputs):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    ours = adapted(minilm_path, target_modules=("query", "value", "attention.output.dense"))
    expected = ours(*inputs[0])["logits"].detach().numpy()
    save_adapter(ours, str(tmp_path / "adapter"), minilm_path)
    hf = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    peft_model = PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    ids, mask, types = inputs[0]
    theirs = peft_model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.detach().numpy()
    np.testing.assert_allclose(theirs, expected, atol=1e-5)
    # and peft's own adapter (saved by peft) loads here with peft's outputs
    peft_model.save_pretrained(str(tmp_path / "from_peft"))
    back = load_adapter(from_pretrained(minilm_path, task="sequence_classification"), str(tmp_path / "from_peft")).eval()
    np.testing.assert_allclose(back(*inputs[0])["logits"].detach().numpy(), theirs, atol=1e-5)


def test_round_trip_and_merge(tmp_path, minilm_path, inputs):
    from transformers import AutoModelForSequenceClassification

    ours = adapted(minilm_path)
    expected = ours(*inputs[0])["logits"].detach().numpy()
    save_adapter(ours, str(tmp_path / "adapter"))
    size = os.path.getsize(tmp_path / "adapter" / "adapter_model.safetensors")
    assert size < 0.01 * os.path.getsize(os.path.join(minilm_path, "model.safetensors"))  # a small file
    model = load_adapter(from_pretrained(minilm_path, task="sequence_classification"), str(tmp_path / "adapter")).eval()
    np.testing.assert_array_equal(model(*inputs[0])["logits"].detach().numpy(), expected)
    merge_lora(model)
    assert not any("lora" in name or "base_layer" in name for name, _ in model.named_parameters())
    np.testing.assert_allclose(model(*inputs[0])["logits"].detach().numpy(), expected, atol=1e-5)
    save_pretrained(model, str(tmp_path / "merged"))
    hf = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "merged")).eval()
    ids, mask, types = inputs[0]
    np.testing.assert_allclose(hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.detach().numpy(),
                               expected, atol=1e-5)


def test_the_base_is_frozen_and_starts_unchanged(minilm_path, inputs):
    torch.manual_seed(0)
    plain = from_pretrained(minilm_path, task="sequence_classification").eval()
    torch.manual_seed(0)
    model = apply_lora(from_pretrained(minilm_path, task="sequence_classification"), LoraSettings()).eval()
    # lora_B starts at zero: the adapted model computes what the plain one does (to rounding)
    np.testing.assert_allclose(model(*inputs[0])["logits"].detach().numpy(),
                               plain(*inputs[0])["logits"].detach().numpy(), atol=1e-6)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if ".lora_" in n or n.startswith("classifier.")}


def test_errors(tmp_path, minilm_path):
    model = from_pretrained(minilm_path, task="sequence_classification")
    with pytest.raises(UserInputError, match="matches no Linear layer.*query.*value"):
        apply_lora(model, LoraSettings(target_modules=("qurey",)))
    with pytest.raises(UserInputError, match="rank 0 must be >= 1"):
        LoraSettings(r=0)
    with pytest.raises(UserInputError, match="adapter_config.json: no such file"):
        load_adapter(model, str(tmp_path))
    with pytest.raises(UserInputError, match="no LoRA adapter to save"):
        save_adapter(model, str(tmp_path))


def test_mindspore_loads_the_adapter_merges_and_trains_only_it(tmp_path, minilm_path, inputs):
    """The same definition on MindSpore: torch's adapter loads with the same outputs, merges to
    the same plain weights, and a training step there moves only the adapter and the head."""
    from mindtransformer.backends import get_backend

    ours = adapted(minilm_path)
    expected = ours(*inputs[0])["logits"].detach().numpy()
    save_adapter(ours, str(tmp_path / "adapter"))
    ms_backend = get_backend("mindspore")
    model = load_adapter(from_pretrained(minilm_path, task="sequence_classification", backend="mindspore"),
                         str(tmp_path / "adapter"))
    ms_backend.set_train(model, False)
    np.testing.assert_allclose(ms_backend.infer(model, inputs[1])["logits"], expected, atol=1e-4)
    assert parameter_counts(model) == parameter_counts(ours)
    before = ms_backend.named_arrays(model)
    ms_backend.set_train(model, True)
    step = ms_backend.TrainStep(model, ms_backend.make_optimizer(model, "adamw", 1e-3, 0.01), jit=False)
    step({**inputs[1], "labels": np.array([0, 1] * 8)})
    moved = {k for k, v in ms_backend.named_arrays(model).items() if not np.array_equal(v, before[k])}
    assert moved == {k for k in before if ".lora_" in k or k.startswith("classifier.")}
    merged = ms_backend.named_arrays(merge_lora(load_adapter(
        from_pretrained(minilm_path, task="sequence_classification", backend="mindspore"), str(tmp_path / "adapter"))))
    torch_merged = {k: v.detach().numpy() for k, v in merge_lora(ours).state_dict().items()}
    assert sorted(merged) == sorted(k for k in torch_merged if k in merged) and "bert.encoder.layer.0.attention.self.query.weight" in merged
    assert max(np.abs(merged[k] - torch_merged[k]).max() for k in merged) < 1e-6
