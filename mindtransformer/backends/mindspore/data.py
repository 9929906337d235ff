"""MindSpore adaptor of the pretraining record stream (mindtransformer/data/loaders.py)."""

import mindspore.dataset as ds

from mindtransformer.data.records import FEATURES


def pretraining_dataset(stream, epoch: int = 0, skip: int = 0):
    """A mindspore.dataset pipeline of this rank's batches from batch `skip` on (google's column order)."""
    names = list(FEATURES)

    def generate():
        for batch in stream.batches(epoch, skip):
            yield tuple(batch[name] for name in names)

    return ds.GeneratorDataset(generate, column_names=names, shuffle=False)
