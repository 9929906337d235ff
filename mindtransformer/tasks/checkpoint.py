"""Loading a fine-tuned model for the evaluation entry points (tasks/*).

A checkpoint is an HF folder (model.safetensors or pytorch_model.bin + config.json), a MindSpore
.ckpt beside its config.json (or, as the original scripts take it, a bare .ckpt whose size is
given by --embedding_size/--num_layers/--num_heads), or a training checkpoint directory of the
trainer (its config is in trainer_state.json). Every weight of the task's head must be in it.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from mindtransformer.errors import UserInputError


def model_size_config(vocab_file: str, embedding_size: int, num_layers: int, num_heads: int):
    """The config of a bare .ckpt: the size flags, the vocabulary's size, BERT's other defaults."""
    from mindtransformer.models.bert import BertConfig

    with open(vocab_file, encoding="utf-8") as f:
        vocab_size = sum(1 for _ in f)
    return BertConfig(vocab_size=vocab_size, hidden_size=embedding_size, num_hidden_layers=num_layers,
                      num_attention_heads=num_heads, intermediate_size=4 * embedding_size)


def load_fine_tuned(path: str, task: str, backend: str, config=None, what: str = "task head",
                    fix: str = "pass a fine-tuned checkpoint (the trainer's final/ folder)"):
    """The `task` model with every weight from `path` (see the module docstring); `config` is used
    when the checkpoint has none of its own."""
    from mindtransformer.models.bert import BertConfig
    from mindtransformer.pretrained import find_weights, from_pretrained
    from mindtransformer.trainer.checkpoints import STATE_FILE

    state_file = os.path.join(path, STATE_FILE)
    if os.path.isfile(state_file):  # a trainer checkpoint: its config is in trainer_state.json
        with open(state_file, encoding="utf-8") as f:
            config = BertConfig.from_dict(json.load(f)["config"], source=state_file)
    elif os.path.isfile(os.path.join(find_weights(path)[0], "config.json")):
        config = None  # the checkpoint's own config.json
    elif config is None:
        raise UserInputError(f"{path}: no config.json beside the weights; put the model's config.json there or "
                             "give its size (--embedding_size, --num_layers, --num_heads)")
    model = from_pretrained(path, task=task, backend=backend, config=config)
    if model.load_report.initialized:
        raise UserInputError(f"{path}: no {what} weights ({', '.join(model.load_report.initialized)}); {fix}")
    return model


def tokenizer_for(model, vocab_file_path: Optional[str]):
    """--vocab_file_path, else the vocab.txt beside the checkpoint."""
    from mindtransformer.data.tokenization import load_tokenizer

    folder = model.pretrained_path
    if not vocab_file_path and not os.path.isfile(os.path.join(folder, "vocab.txt")):
        raise UserInputError(f"{folder}: no vocab.txt beside the weights; pass --vocab_file_path")
    return load_tokenizer(vocab_file_path or folder)


def select_device(backend: str, device_target: str) -> None:
    if backend == "mindspore" and device_target != "CPU":
        import mindspore as ms

        ms.set_device(device_target)


def pick_device(cpu: bool) -> str:
    """torch's device: "cpu" with --cpu or without a CUDA GPU, else "cuda"."""
    if cpu:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
