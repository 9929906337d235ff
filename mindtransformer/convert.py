"""Move BERT checkpoints between the HF layout and MindSpore `.ckpt` files.

    python tools/convert_bert_weight.py --layers 12 --torch_path pytorch_model.bin --mindspore_path ./bertbase.ckpt
    python tools/convert_bert_weight.py --direction ms2hf --mindspore_path ./bertbase.ckpt --torch_path ./hf_folder

Our MindSpore models use HF's parameter names, so hf2ms changes the container only: every tensor
is copied under its own name, and ms2hf gives the same bytes back. ms2hf also reads checkpoints
in the MindSpore model zoo's BERT layout (names mapped by `zoo_layout.ZOO_TO_HF`).
"""

from __future__ import annotations

import os
import re
import shutil
import sys

import numpy as np

from mindtransformer.errors import UserInputError
from mindtransformer.models.bert import BertConfig
from mindtransformer.utils.cli import StrictParser, run_main
from mindtransformer.zoo_layout import ZOO_MATH, is_zoo_layout, zoo_to_hf

_LAYER = re.compile(r"encoder\.layer\.(\d+)\.(.+)$")
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def check_layers(arrays: dict, source: str, expected=None, config_file=None) -> int:
    """The encoder layer count; every layer must hold the same weights as layer 0."""
    if not any(k.endswith(WORD_EMBEDDINGS) for k in arrays):
        raise UserInputError(f"{source}: no {WORD_EMBEDDINGS}; not a BERT checkpoint")
    layers = {}
    for key in arrays:
        match = _LAYER.search(key)
        if match:
            layers.setdefault(int(match.group(1)), set()).add(match.group(2))
    count = max(layers, default=-1) + 1
    for index in range(count):
        missing = sorted(layers.get(0, set()) - layers.get(index, set()))
        if missing:
            raise UserInputError(f"{source}: encoder layer {index} of {count} lacks {missing[0]}"
                                 f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}; "
                                 "the checkpoint is incomplete")
    if config_file is not None:
        configured = BertConfig.from_pretrained(config_file).num_hidden_layers
        if configured != count:
            raise UserInputError(f"{source}: has {count} encoder layers but {config_file} says "
                                 f"num_hidden_layers={configured}; use the config that came with it")
    if expected is not None and expected != count:
        raise UserInputError(f"--layers {expected} disagrees with {source}, which has {count} encoder layers; "
                             f"pass --layers {count} or the right checkpoint")
    return count


def infer_config(arrays: dict, layers: int, zoo: bool) -> BertConfig:
    """Sizes read off the weights; heads assume BERT's 64-wide heads; zoo checkpoints get the zoo's math."""
    def shape(suffix):
        return next(v.shape for k, v in arrays.items() if k.endswith(suffix))

    vocab, hidden = shape(WORD_EMBEDDINGS)
    values = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=max(1, hidden // 64),
                  intermediate_size=shape("encoder.layer.0.intermediate.dense.weight")[0],
                  max_position_embeddings=shape("embeddings.position_embeddings.weight")[0],
                  type_vocab_size=shape("embeddings.token_type_embeddings.weight")[0])
    if "classifier.weight" in arrays:
        values["num_labels"] = arrays["classifier.weight"].shape[0]
    return BertConfig(**values, **(ZOO_MATH if zoo else {}))


def hf_to_mindspore(torch_path: str, ckpt_path: str, layers=None) -> str:
    from mindtransformer.backends import get_backend
    from mindtransformer.pretrained import find_weights, read_raw_weights

    folder, weights_file = find_weights(torch_path)
    config_file = os.path.join(folder, "config.json")
    arrays = read_raw_weights(weights_file)
    count = check_layers(arrays, weights_file, layers, config_file if os.path.isfile(config_file) else None)
    _check_writable(ckpt_path, "--mindspore_path")
    get_backend("mindspore").write_checkpoint(arrays, ckpt_path)
    lines = [f"wrote {ckpt_path}: {len(arrays)} tensors, {count} encoder layers, from {weights_file}"]
    beside = os.path.join(os.path.dirname(os.path.abspath(ckpt_path)), "config.json")
    if os.path.isfile(config_file) and not os.path.exists(beside):
        shutil.copyfile(config_file, beside)
        lines.append(f"wrote {beside} (from_pretrained reads it beside the .ckpt)")
    return "\n".join(lines)


def mindspore_to_hf(ckpt_path: str, out_dir: str, layers=None, config_file=None, vocab_file=None) -> str:
    from safetensors.numpy import save_file

    from mindtransformer.backends import get_backend
    from mindtransformer.data.tokenization import load_tokenizer
    from mindtransformer.utils.files import atomic_path

    if not os.path.isfile(ckpt_path):
        raise UserInputError(f"{ckpt_path}: no such checkpoint; pass --mindspore_path FILE.ckpt")
    arrays = get_backend("mindspore").read_checkpoint(ckpt_path)
    zoo = is_zoo_layout(arrays)
    if zoo:
        arrays, _ = zoo_to_hf(arrays, ckpt_path)
    beside = os.path.join(os.path.dirname(os.path.abspath(ckpt_path)), "config.json")
    config_file = config_file or (beside if os.path.isfile(beside) else None)
    count = check_layers(arrays, ckpt_path, layers, config_file)
    config = BertConfig.from_pretrained(config_file) if config_file else infer_config(arrays, count, zoo)
    _check_writable(os.path.join(out_dir, "config.json"), "--torch_path")
    with atomic_path(os.path.join(out_dir, "model.safetensors")) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp, metadata={"format": "pt"})
    vocab_beside = os.path.join(os.path.dirname(os.path.abspath(ckpt_path)), "vocab.txt")
    vocab_file = vocab_file or (vocab_beside if os.path.isfile(vocab_beside) else None)
    if vocab_file:
        load_tokenizer(vocab_file).save(out_dir)
    architecture = "BertForPreTraining" if any(k.startswith("cls.") for k in arrays) else "BertModel"
    config.to_json_file(os.path.join(out_dir, "config.json"), architectures=[architecture])
    origin = "the model zoo's layout" if zoo else "HF names"
    return (f"wrote {out_dir}: model.safetensors ({len(arrays)} tensors, {count} encoder layers, from {origin}), "
            f"config.json ({'from ' + config_file if config_file else 'inferred from the weights'})"
            f"{', tokenizer files' if vocab_file else ''}")


def _check_writable(path: str, flag: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise UserInputError(f"{flag} {path}: cannot create {directory} ({err.strerror})") from None
    if not os.access(directory, os.W_OK):
        raise UserInputError(f"{flag} {path}: {directory} is not writable; choose another output path")


def build_parser() -> StrictParser:
    parser = StrictParser(prog="python tools/convert_bert_weight.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch_path", required=True,
                        help="HF side: pytorch_model.bin, model.safetensors or an HF folder (read for hf2ms, "
                             "written as a folder for ms2hf)")
    parser.add_argument("--mindspore_path", required=True, help="MindSpore side: the .ckpt file")
    parser.add_argument("--layers", type=int, default=None,
                        help="expected number of encoder layers: a check against the checkpoint, not a setting")
    parser.add_argument("--direction", choices=("hf2ms", "ms2hf"), default="hf2ms",
                        help="hf2ms: HF weights -> .ckpt; ms2hf: .ckpt (ours or the model zoo's) -> HF folder")
    parser.add_argument("--config_file", default=None,
                        help="ms2hf: config.json to write (default: config.json beside the .ckpt, else inferred "
                             "from the weights with 64-wide heads)")
    parser.add_argument("--vocab_file", default=None,
                        help="ms2hf: vocab.txt for the tokenizer files (default: vocab.txt beside the .ckpt)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.direction == "hf2ms":
        print(hf_to_mindspore(args.torch_path, args.mindspore_path, args.layers))
    else:
        print(mindspore_to_hf(args.mindspore_path, args.torch_path, args.layers, args.config_file, args.vocab_file))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
