"""mindtransformer: BERT pretraining and fine-tuning with one model definition and two backends.

    import mindtransformer as mt
    model = mt.from_pretrained("path/to/hf_folder", task="sequence_classification", num_labels=2)
    tokenizer = mt.load_tokenizer("path/to/hf_folder")
    batch = tokenizer.encode_batch(["a sentence"], max_length=128)
    mt.save_pretrained(model, "out_folder")
"""

from mindtransformer.data.tokenization import BertTokenizer, load_tokenizer  # noqa: F401
from mindtransformer.errors import UserInputError  # noqa: F401
from mindtransformer.models.bert import TASK_NAMES, BertConfig, build_model  # noqa: F401
from mindtransformer.pretrained import from_pretrained, save_pretrained  # noqa: F401

__version__ = "0.1.0"
