"""Checkpoints in the MindSpore model zoo's BERT layout (official/nlp/Bert), mapped to HF names.

One declarative table: zoo names below the zoo's `BertPreTraining` / `BertCLSModel` level, and
the HF names they hold. Dense weights are (out, in) on both sides and embedding tables
(rows, hidden), so values copy over unchanged; only names differ. The zoo's BERT computes GELU
with the tanh approximation and LayerNorm with eps 1e-7, which `ZOO_MATH` records for configs.
"""

from __future__ import annotations

import re

from mindtransformer.errors import UserInputError

# (zoo name, HF name); {i} is the encoder layer index.
ZOO_TO_HF = (
    ("bert.bert_embedding_lookup.embedding_table", "bert.embeddings.word_embeddings.weight"),
    ("bert.bert_embedding_postprocessor.full_position_embedding.embedding_table",
     "bert.embeddings.position_embeddings.weight"),
    ("bert.bert_embedding_postprocessor.token_type_embedding.embedding_table",
     "bert.embeddings.token_type_embeddings.weight"),
    ("bert.bert_embedding_postprocessor.layernorm.gamma", "bert.embeddings.LayerNorm.weight"),
    ("bert.bert_embedding_postprocessor.layernorm.beta", "bert.embeddings.LayerNorm.bias"),
    ("bert.bert_encoder.layers.{i}.attention.attention.query_layer.weight", "bert.encoder.layer.{i}.attention.self.query.weight"),
    ("bert.bert_encoder.layers.{i}.attention.attention.query_layer.bias", "bert.encoder.layer.{i}.attention.self.query.bias"),
    ("bert.bert_encoder.layers.{i}.attention.attention.key_layer.weight", "bert.encoder.layer.{i}.attention.self.key.weight"),
    ("bert.bert_encoder.layers.{i}.attention.attention.key_layer.bias", "bert.encoder.layer.{i}.attention.self.key.bias"),
    ("bert.bert_encoder.layers.{i}.attention.attention.value_layer.weight", "bert.encoder.layer.{i}.attention.self.value.weight"),
    ("bert.bert_encoder.layers.{i}.attention.attention.value_layer.bias", "bert.encoder.layer.{i}.attention.self.value.bias"),
    ("bert.bert_encoder.layers.{i}.attention.output.dense.weight", "bert.encoder.layer.{i}.attention.output.dense.weight"),
    ("bert.bert_encoder.layers.{i}.attention.output.dense.bias", "bert.encoder.layer.{i}.attention.output.dense.bias"),
    ("bert.bert_encoder.layers.{i}.attention.output.layernorm.gamma", "bert.encoder.layer.{i}.attention.output.LayerNorm.weight"),
    ("bert.bert_encoder.layers.{i}.attention.output.layernorm.beta", "bert.encoder.layer.{i}.attention.output.LayerNorm.bias"),
    ("bert.bert_encoder.layers.{i}.intermediate.weight", "bert.encoder.layer.{i}.intermediate.dense.weight"),
    ("bert.bert_encoder.layers.{i}.intermediate.bias", "bert.encoder.layer.{i}.intermediate.dense.bias"),
    ("bert.bert_encoder.layers.{i}.output.dense.weight", "bert.encoder.layer.{i}.output.dense.weight"),
    ("bert.bert_encoder.layers.{i}.output.dense.bias", "bert.encoder.layer.{i}.output.dense.bias"),
    ("bert.bert_encoder.layers.{i}.output.layernorm.gamma", "bert.encoder.layer.{i}.output.LayerNorm.weight"),
    ("bert.bert_encoder.layers.{i}.output.layernorm.beta", "bert.encoder.layer.{i}.output.LayerNorm.bias"),
    ("bert.dense.weight", "bert.pooler.dense.weight"),
    ("bert.dense.bias", "bert.pooler.dense.bias"),
    ("cls1.dense.weight", "cls.predictions.transform.dense.weight"),
    ("cls1.dense.bias", "cls.predictions.transform.dense.bias"),
    ("cls1.layernorm.gamma", "cls.predictions.transform.LayerNorm.weight"),
    ("cls1.layernorm.beta", "cls.predictions.transform.LayerNorm.bias"),
    ("cls1.output_bias", "cls.predictions.bias"),
    ("cls2.dense.weight", "cls.seq_relationship.weight"),
    ("cls2.dense.bias", "cls.seq_relationship.bias"),
    ("dense_1.weight", "classifier.weight"),  # BertCLSModel and BertNERModel
    ("dense_1.bias", "classifier.bias"),
    ("dense1.weight", "qa_outputs.weight"),  # BertSquadModel
    ("dense1.bias", "qa_outputs.bias"),
    # Older zoo checkpoints name the two postprocessor tables differently.
    ("bert.bert_embedding_postprocessor.full_position_embeddings", "bert.embeddings.position_embeddings.weight"),
    ("bert.bert_embedding_postprocessor.embedding_table", "bert.embeddings.token_type_embeddings.weight"),
)
ZOO_MATH = {"hidden_act": "gelu_new", "layer_norm_eps": 1e-7}

_ANCHOR = "bert_embedding_lookup.embedding_table"
_LAYER = re.compile(r"bert_encoder\.layers\.(\d+)\.")


def is_zoo_layout(names) -> bool:
    return any(name.endswith(_ANCHOR) for name in names)


def zoo_layer_count(names) -> int:
    return 1 + max((int(m.group(1)) for n in names if (m := _LAYER.search(n))), default=-1)


def zoo_to_hf(arrays: dict, source: str) -> tuple:
    """({HF name: array}, [ignored zoo names]) for a zoo checkpoint's {name: array}.

    The zoo's training wrappers add prefixes (`bert.` for BertNetworkWithLoss and BertCLS) and
    optimizer state adds copies (`lamb_m.`, `adam_v.`, ...): the backbone's root is found from the
    word-embedding table, and only names under that root that the table knows are taken.
    """
    anchors = sorted((n for n in arrays if n.endswith(_ANCHOR)), key=len)
    if not anchors:
        raise UserInputError(f"{source}: no {_ANCHOR} entry; not a MindSpore model zoo BERT checkpoint")
    backbone_root = anchors[0][: -len("bert_embedding_lookup.embedding_table")]  # e.g. "bert.bert."
    # Table names start at the level above the backbone ("bert." + backbone, or "cls1.", ...).
    wrapper = backbone_root[: -len("bert.")] if backbone_root.endswith("bert.") else None
    layers = zoo_layer_count(arrays)
    converted, taken = {}, set()
    for zoo, hf in ZOO_TO_HF:
        for i in range(layers) if "{i}" in zoo else [None]:
            zoo_name = zoo.format(i=i) if i is not None else zoo
            full = wrapper + zoo_name if wrapper is not None else (
                zoo_name[len("bert."):] if zoo_name.startswith("bert.") else None)
            if full is not None and full in arrays:
                converted[hf.format(i=i) if i is not None else hf] = arrays[full]
                taken.add(full)
    return converted, sorted(set(arrays) - taken)
