"""mindtransformer: BERT pretraining and fine-tuning with one model definition and two backends.

    import mindtransformer as mt
    model = mt.from_pretrained("path/to/hf_folder", task="sequence_classification", num_labels=2)
    tokenizer = mt.load_tokenizer("path/to/hf_folder")
    batch = tokenizer.encode_batch(["a sentence"], max_length=128)
    mt.save_pretrained(model, "out_folder")
"""

import importlib

__version__ = "0.1.0"

# The public names, imported when first used: the command-line tools import submodules of this
# package (record making needs neither the model nor checkpoint loading) and start sooner.
_PUBLIC = {
    "BertTokenizer": "mindtransformer.data.tokenization", "load_tokenizer": "mindtransformer.data.tokenization",
    "UserInputError": "mindtransformer.errors",
    "TASK_NAMES": "mindtransformer.models.bert", "BertConfig": "mindtransformer.models.bert",
    "build_model": "mindtransformer.models.bert",
    "from_pretrained": "mindtransformer.pretrained", "save_pretrained": "mindtransformer.pretrained",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mindtransformer' has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(_PUBLIC[name]), name)
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
