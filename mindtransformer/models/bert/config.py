"""BertConfig: one frozen dataclass with google-research/bert and HF `config.json` field names."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Optional

from mindtransformer.errors import UserInputError, closest_name

# hidden_act values and what they mean (HF's ACT2FN names): "gelu" is the exact erf GELU that
# google's BERT uses; "gelu_new"/"gelu_pytorch_tanh" are the tanh approximation.
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # Task-head settings, spelled as in HF so a fine-tuned config.json round-trips.
    num_labels: int = 2
    classifier_dropout: Optional[float] = None
    problem_type: Optional[str] = None
    id2label: Optional[dict] = field(default=None, compare=True)

    def __post_init__(self):
        positive = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserInputError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise UserInputError(
                f"BertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads}); change one of them")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserInputError(f"BertConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise UserInputError(f"BertConfig.classifier_dropout must be in [0, 1), got {self.classifier_dropout!r}")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise UserInputError(
                f"BertConfig.hidden_act {self.hidden_act!r} is not supported"
                f"{closest_name(self.hidden_act, SUPPORTED_ACTIVATIONS)}; use one of {', '.join(SUPPORTED_ACTIVATIONS)}")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise UserInputError(f"BertConfig.problem_type {self.problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}")
        if self.layer_norm_eps <= 0:
            raise UserInputError(f"BertConfig.layer_norm_eps must be positive, got {self.layer_norm_eps!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise UserInputError(f"BertConfig.pad_token_id ({self.pad_token_id}) must be inside the vocabulary (size {self.vocab_size})")
        if self.id2label is not None and len(self.id2label) != self.num_labels:
            raise UserInputError(
                f"BertConfig.id2label has {len(self.id2label)} labels but num_labels is {self.num_labels}; make them agree")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def replace(self, **changes) -> "BertConfig":
        """A new config with some fields changed (configs are never mutated)."""
        names = {f.name for f in dataclasses.fields(self)}
        for key in changes:
            if key not in names:
                raise UserInputError(f"BertConfig has no field {key!r}{closest_name(key, names)}")
        if "num_labels" in changes and "id2label" not in changes and self.id2label is not None \
                and len(self.id2label) != changes["num_labels"]:
            changes["id2label"] = None  # a new label set; the old names no longer apply
        return dataclasses.replace(self, **changes)

    # ---- HF config.json ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "BertConfig":
        model_type = values.get("model_type", "bert")
        if model_type != "bert":
            raise UserInputError(f"{source}: model_type is {model_type!r}; only 'bert' checkpoints are supported")
        position_type = values.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise UserInputError(
                f"{source}: position_embedding_type {position_type!r} is not supported; only 'absolute' (BERT's) is")
        names = {f.name for f in dataclasses.fields(cls)}
        # Other keys are HF bookkeeping (architectures, transformers_version, use_cache, ...).
        kwargs = {k: v for k, v in values.items() if k in names}
        if kwargs.get("id2label") is not None:
            kwargs["id2label"] = {int(k): v for k, v in kwargs["id2label"].items()}
            kwargs.setdefault("num_labels", len(kwargs["id2label"]))
        try:
            return cls(**kwargs)
        except UserInputError as err:
            raise UserInputError(f"{source}: {err}") from None
        except TypeError as err:
            raise UserInputError(f"{source}: {err}") from None

    @classmethod
    def from_pretrained(cls, path: str) -> "BertConfig":
        """Read an HF `config.json`, given the file itself or the model folder holding it."""
        config_file = os.path.join(path, "config.json") if os.path.isdir(path) else path
        if not os.path.isfile(config_file):
            raise UserInputError(f"{config_file}: no such file; pass an HF model folder with a config.json")
        try:
            with open(config_file, encoding="utf-8") as f:
                values = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserInputError(f"{config_file}: not valid JSON ({err}); pass an HF config.json") from None
        if not isinstance(values, dict):
            raise UserInputError(f"{config_file}: expected a JSON object of config fields")
        return cls.from_dict(values, source=config_file)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        if values["id2label"] is None:
            values.pop("id2label")
        else:
            values["id2label"] = {str(k): v for k, v in self.id2label.items()}
            values["label2id"] = {v: k for k, v in self.id2label.items()}
        values["model_type"] = "bert"
        values["position_embedding_type"] = "absolute"
        return values

    def to_json_file(self, path: str, architectures: Optional[list] = None) -> None:
        from mindtransformer.utils.files import atomic_write_text

        values = self.to_dict()
        if architectures:
            values["architectures"] = list(architectures)
        atomic_write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")


def bert_base(**changes) -> BertConfig:
    return BertConfig().replace(**changes)


def bert_large(**changes) -> BertConfig:
    return BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                      intermediate_size=4096).replace(**changes)


def bert_tiny(**changes) -> BertConfig:
    """google's BERT-Tiny shape (L=2, H=128, A=2), for tests and quick runs."""
    return BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=512).replace(**changes)
