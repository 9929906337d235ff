"""Loaders of pretraining records: one deterministic stream for both backends, rank and worker
sharding, exact resume, size checks. Records are made from the bundled Wikipedia excerpt."""

import os
import subprocess
import sys

import numpy as np
import pytest

from mindtransformer.data import loaders, records
from mindtransformer.errors import UserInputError
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def shards(tmp_path_factory, minilm_path):
    from mindtransformer.data.wiki import extract_dump
    from mindtransformer.utils.bundled import RESOURCES

    root = tmp_path_factory.mktemp("loader")
    extract_dump(os.path.join(RESOURCES, "enwiki-excerpt-6-articles.xml.bz2"), str(root / "text"))
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "create_pretraining_data.py"),
                           "--input_file", str(root / "text" / "wiki_*.txt"), "--output_file", str(root / "rec" / "wiki.tfrecord"),
                           "--vocab_file", os.path.join(minilm_path, "vocab.txt"), "--dupe_factor", "1",
                           "--num_shards", "2", "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return loaders.record_files(str(root / "rec"))


def key(batch):
    """Identity of each row of a batch: its input ids and masked positions as bytes."""
    return [batch["input_ids"][i].tobytes() + batch["masked_lm_positions"][i].tobytes()
            for i in range(len(batch["input_ids"]))]


def rows(batches):
    return [k for batch in batches for k in key(batch)]


def test_stream_is_deterministic_and_covers_every_record_once(shards):
    everything = [k for path in shards for k in key(loaders._stack(list(records.iter_records(path))))]
    assert len(everything) == len(set(everything)) > 400
    stream = loaders.PretrainingStream(shards, batch_size=8, seed=3, buffer_size=100)
    epoch0 = rows(stream.batches(0))
    assert epoch0 == rows(loaders.PretrainingStream(shards, batch_size=8, seed=3, buffer_size=100).batches(0))
    assert epoch0 != rows(stream.batches(1)) and epoch0 != everything[:len(epoch0)]  # shuffled, per epoch
    assert len(epoch0) == len(everything) // 8 * 8 and set(epoch0) <= set(everything)
    # Two ranks split the same epoch without overlap.
    ranks = [rows(loaders.PretrainingStream(shards, batch_size=8, seed=3, buffer_size=100, rank=r, world_size=2)
                  .batches(0)) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1])
    assert len(ranks[0]) + len(ranks[1]) >= len(everything) - 2 * 8


def test_resume_skips_exactly_the_batches_taken(shards):
    stream = loaders.PretrainingStream(shards, batch_size=16, seed=5, buffer_size=64)
    full = [key(b) for b in stream.batches(2)]
    resumed = [key(b) for b in stream.batches(2, skip=7)]
    assert resumed == full[7:]


def test_torch_dataloader_workers_keep_the_order(shards):
    torch = pytest.importorskip("torch")
    stream = loaders.PretrainingStream(shards, batch_size=8, seed=1, buffer_size=50)
    expected = [key(b) for b in stream.batches(0, skip=3)]
    # spawn: workers must not be forked from a process whose TensorFlow threads are running
    from mindtransformer.backends.torch.data import PretrainingData

    loader = torch.utils.data.DataLoader(PretrainingData(stream, epoch=0, skip=3), batch_size=None,
                                         num_workers=2, multiprocessing_context="spawn")
    got = []
    for batch in loader:
        assert batch["input_ids"].dtype == torch.int64 and batch["masked_lm_weights"].dtype == torch.float32
        assert tuple(batch["input_ids"].shape) == (8, 128)
        got.append(key({k: v.numpy() for k, v in batch.items()}))
    assert got == expected


def test_mindspore_pipeline_gives_the_same_batches(shards):
    pytest.importorskip("mindspore")
    stream = loaders.PretrainingStream(shards, batch_size=8, seed=1, buffer_size=50)
    expected = [key(b) for b in stream.batches(0)][:5]
    from mindtransformer.backends.mindspore.data import pretraining_dataset

    dataset = pretraining_dataset(stream, epoch=0)
    got = [key(b) for _, b in zip(range(5), dataset.create_dict_iterator(output_numpy=True, num_epochs=1))]
    assert got == expected


def test_sizes_that_disagree_with_the_run(shards):
    assert loaders.check_sizes(shards, 128, 20) == {"seq": 128, "pred": 20}
    with pytest.raises(UserInputError, match="max_predictions_per_seq 20 .* --max_predictions_per_seq 76"):
        loaders.check_sizes(shards, 128, 76)
    with pytest.raises(UserInputError, match="--seq_length 512"):
        loaders.check_sizes(shards, 512, 20)
    with pytest.raises(UserInputError, match="no record file"):
        loaders.record_files(os.path.join(os.path.dirname(shards[0]), "nothing*"))
