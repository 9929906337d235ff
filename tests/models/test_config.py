import json

import pytest

from mindtransformer.errors import UserInputError
from mindtransformer.models.bert import BertConfig, bert_base, bert_large, bert_tiny


def test_presets_have_google_shapes():
    assert (bert_base().hidden_size, bert_base().num_hidden_layers, bert_base().num_attention_heads) == (768, 12, 12)
    assert (bert_large().hidden_size, bert_large().num_hidden_layers, bert_large().intermediate_size) == (1024, 24, 4096)
    assert (bert_tiny().hidden_size, bert_tiny().num_hidden_layers, bert_tiny().num_attention_heads) == (128, 2, 2)


def test_reads_real_hf_config(minilm_path):
    config = BertConfig.from_pretrained(minilm_path)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (384, 6, 12)
    assert config.intermediate_size == 1536 and config.vocab_size == 30522 and config.hidden_act == "gelu"


def test_json_round_trip_and_transformers_reads_it(tmp_path):
    import transformers

    config = bert_tiny(num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"})
    config.to_json_file(str(tmp_path / "config.json"))
    assert BertConfig.from_pretrained(str(tmp_path)) == config
    hf = transformers.BertConfig.from_pretrained(str(tmp_path))
    assert (hf.hidden_size, hf.num_labels, hf.id2label[2]) == (128, 3, "pos")


def test_frozen_and_replace_checks_names():
    config = bert_tiny()
    with pytest.raises(Exception):
        config.hidden_size = 3
    assert config.replace(num_labels=5).num_labels == 5 and config.num_labels == 2
    with pytest.raises(UserInputError, match="did you mean 'num_labels'"):
        config.replace(num_label=5)


@pytest.mark.parametrize("changes, message", [
    ({"hidden_size": 100, "num_attention_heads": 12}, "divisible by num_attention_heads"),
    ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer"),
    ({"hidden_act": "gleu"}, "did you mean 'gelu'"),
    ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob must be in"),
    ({"num_labels": 3, "id2label": {0: "a"}}, "id2label has 1 labels but num_labels is 3"),
])
def test_invalid_configs_fail_clearly(changes, message):
    with pytest.raises(UserInputError, match=message):
        BertConfig(**changes)


def test_bad_config_json_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(UserInputError, match="config.json: not valid JSON"):
        BertConfig.from_pretrained(str(tmp_path))
    path.write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(UserInputError, match="model_type is 'roberta'"):
        BertConfig.from_pretrained(str(path))
    path.write_text(json.dumps({"hidden_size": 100, "num_attention_heads": 12}))
    with pytest.raises(UserInputError, match=r"config.json: BertConfig.hidden_size \(100\)"):
        BertConfig.from_pretrained(str(path))
