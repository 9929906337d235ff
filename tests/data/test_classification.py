"""Classification features on the bundled real RTE data: tokenization against HF's tokenizer,
length-grouped batches (every example once, ranks = accumulation, exact resume), evaluation
shards, records in both containers, the CSV task and the metrics."""

import os

import numpy as np
import pytest

from mindtransformer.data import batches, classification, glue
from mindtransformer.data.tokenization import load_tokenizer
from mindtransformer.errors import UserInputError
from mindtransformer.utils.bundled import RESOURCES
from tests.conftest import shared_file

RTE = os.path.join(RESOURCES, "glue", "RTE")


@pytest.fixture(scope="module")
def rte(minilm_path):
    task = glue.get_task("rte")
    tokenizer = load_tokenizer(minilm_path)
    train = glue.read_examples(task, os.path.join(RTE, "train.tsv"))
    dev = glue.read_examples(task, os.path.join(RTE, "dev.tsv"))
    return task, tokenizer, classification.featurize(tokenizer, task, train, 128), \
        classification.featurize(tokenizer, task, dev, 128), dev


def test_features_equal_hf_tokenizer_with_truncation(rte, minilm_path):
    transformers = pytest.importorskip("transformers")
    task, _, _, dev_features, dev = rte
    hf = transformers.AutoTokenizer.from_pretrained(minilm_path)
    encoded = hf([e.text_a for e in dev], [e.text_b for e in dev], truncation=True, max_length=128)
    assert len(dev_features) == 277
    assert sum(len(ids) == 128 for ids in dev_features.input_ids) > 0  # some pairs are truncated
    for i in range(len(dev)):
        assert dev_features.input_ids[i].tolist() == encoded["input_ids"][i]
        assert dev_features.segment_ids[i].tolist() == encoded["token_type_ids"][i]
    assert dev_features.labels.tolist() == glue.label_ids(task, dev).tolist()


def test_an_epoch_holds_every_example_once_and_grouping_pads_less(rte):
    train = rte[2]
    grouped = batches.TrainBatches(train, 32, seed=3)
    plain = batches.TrainBatches(train, 32, seed=3, group_by_length=False)
    for stream in (grouped, plain):
        seen = np.concatenate(stream.epoch_batches(0))
        assert sorted(seen.tolist()) == list(range(len(train)))
    assert grouped.epoch_batches(0)[0].tolist() != grouped.epoch_batches(1)[0].tolist()  # reshuffled per epoch

    def padded_tokens(stream):
        return sum(b["input_ids"].size for b in stream.batches(0))

    real = int(train.lengths.sum())
    assert padded_tokens(grouped) < 0.8 * padded_tokens(plain)  # measured ~0.6 on RTE
    assert padded_tokens(grouped) >= real
    batch = next(grouped.batches(0))
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == lengths.max() and batch["labels"].dtype == np.int64
    eight = next(batches.TrainBatches(train, 32, seed=3, pad_multiple=32).batches(0))
    assert eight["input_ids"].shape[1] % 32 == 0


@pytest.mark.parametrize("batch_size", [32, 8, 1000])
def test_length_grouping_orders_as_hf_trainer(rte, batch_size):
    """The same permutation regrouped by ours and by HF Trainer's get_length_grouped_indices
    (group_by_length): the same order, on RTE's real lengths (many ties) and on distinct ones,
    with mega-batches of 19 and 50 batches (batch sizes 32 and 8) and of one batch (1,000: the
    multiplier's floor)."""
    torch = pytest.importorskip("torch")
    trainer_utils = pytest.importorskip("transformers.trainer_pt_utils")
    # RTE's lengths, and distinct ones: there the longest is in mega-batch 0 only by chance
    for lengths in (rte[2].lengths, np.arange(len(rte[2].lengths))):
        expected = trainer_utils.get_length_grouped_indices(lengths.tolist(), batch_size,
                                                            generator=torch.Generator().manual_seed(5))
        permutation = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(5)).numpy()
        ours = batches.length_grouped(permutation, lengths, batch_size)
        assert ours.tolist() == expected
        assert lengths[ours[0]] == lengths.max() and sorted(ours.tolist()) == list(range(len(lengths)))


def test_ranks_deal_the_batches_of_one_stream_and_resume_skips_exactly(rte):
    train = rte[2]
    one = batches.TrainBatches(train, 16, seed=1)
    ranks = [batches.TrainBatches(train, 16, seed=1, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == ranks[1].batches_per_epoch == one.batches_per_epoch // 2
    everything = one.epoch_batches(2)
    for r, stream in enumerate(ranks):
        mine = [b["input_ids"] for b in stream.batches(2)]
        expected = [batches.pad_batch(train, idx)["input_ids"] for idx in everything[r::2][:len(mine)]]
        assert all(np.array_equal(a, b) for a, b in zip(mine, expected)) and len(mine) == stream.batches_per_epoch
    full = list(ranks[1].batches(0))
    resumed = list(ranks[1].batches(0, skip=7))
    assert len(resumed) == len(full) - 7 and all(np.array_equal(a["input_ids"], b["input_ids"])
                                                 for a, b in zip(resumed, full[7:]))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_evaluation_shards_cover_every_example_exactly_once(rte, world):
    dev = rte[3]
    seen = [int(i) for r in range(world) for idx, _ in batches.eval_batches(dev, 64, r, world) for i in idx]
    assert sorted(seen) == list(range(277))


@pytest.mark.parametrize("output_format", ["tfrecord", "mindrecord"])
def test_records_round_trip_to_the_same_features(rte, tmp_path, output_format):
    dev = rte[3]
    path = str(tmp_path / f"dev.{output_format}")
    classification.write_records(dev, path, output_format, 128, {"task": "rte"})
    back = classification.read_records([path], regression=False)
    assert len(back) == 277 and back.labels.tolist() == dev.labels.tolist()
    assert all(a.tolist() == b.tolist() for a, b in zip(back.input_ids, dev.input_ids))
    assert all(a.tolist() == b.tolist() for a, b in zip(back.segment_ids, dev.segment_ids))
    with pytest.raises(UserInputError, match="lacks masked_lm_positions"):
        next(iter(__import__("mindtransformer.data.records", fromlist=["x"]).iter_records(path)))


def test_regression_labels_are_floats_in_records(tmp_path, minilm_path):
    task = glue.get_task("sts-b")
    source = tmp_path / "dev.tsv"
    source.write_text("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                      "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\t"
                      "An air plane is taking off.\t5.000\n"
                      "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a large flute.\t"
                      "A man is playing a flute.\t3.800\n", encoding="utf-8")
    features = classification.featurize(load_tokenizer(minilm_path), task, glue.read_examples(task, str(source)), 128)
    path = str(tmp_path / "dev.tfrecord")
    classification.write_records(features, path, "tfrecord", 128, {})
    back = classification.read_records([path], regression=True)
    assert back.labels.dtype == np.float32 and back.labels.tolist() == pytest.approx([5.0, 3.8])


def test_csv_task_reads_quoted_csv_and_splits_with_a_seed(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('label,review\n1,"很快，好吃，味道足，量大"\n0,"送餐慢, 菜凉了"\n1,"不错"\n0,"太咸"\n'
                    '1,"包装好,\n下次再来"\n', encoding="utf-8")
    task = glue.csv_task(str(path), "review", "label")
    assert task.labels == ("0", "1") and task.main_metric == "accuracy" and "f1_weighted" in task.metrics
    examples = glue.read_examples(task, str(path))
    assert [e.label for e in examples] == ["1", "0", "1", "0", "1"] and examples[4].text_a == "包装好,\n下次再来"
    train, dev = glue.split_examples(examples, 0.4, seed=5)
    again = glue.split_examples(examples, 0.4, seed=5)
    assert len(dev) == 2 and len(train) == 3 and [e.guid for e in dev] == [e.guid for e in again[1]]
    assert not {e.guid for e in train} & {e.guid for e in dev}
    with pytest.raises(UserInputError, match="no 'text' column.*set --label_column"):
        glue.csv_task(str(path), "review", "text")


def test_csv_task_on_the_real_chinese_reviews(minilm_path):
    path = shared_file("chinese_sentiment", "waimai_10k", "waimai_10k.csv")
    task = glue.csv_task(path, "review", "label")
    examples = glue.read_examples(task, path)
    assert task.labels == ("0", "1") and len(examples) == 11987
    assert sum(e.label == "1" for e in examples) == 4000
    features = classification.featurize(load_tokenizer(minilm_path), task, examples[:50], 128)
    assert all(len(ids) > 2 for ids in features.input_ids)


def test_metrics_match_scikit_learn_and_scipy():
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score, matthews_corrcoef, precision_score, recall_score

    rng = np.random.default_rng(0)
    references = glue.label_ids(glue.get_task("rte"), glue.read_examples(glue.get_task("rte"), os.path.join(RTE, "dev.tsv")))
    predictions = np.where(rng.random(277) < 0.7, references, 1 - references)
    mrpc = glue.score(glue.get_task("mrpc"), predictions, references)
    assert mrpc["f1"] == f1_score(references, predictions) and mrpc["accuracy"] == np.mean(predictions == references)
    assert glue.score(glue.get_task("cola"), predictions, references)["matthews_corrcoef"] == \
        matthews_corrcoef(references, predictions)
    generic = glue.Task(glue.GENERIC, text_a="t", metrics=glue.WEIGHTED_METRICS)
    weighted = glue.score(generic, predictions, references)
    assert weighted["f1_weighted"] == f1_score(references, predictions, average="weighted")
    assert weighted["precision_weighted"] == precision_score(references, predictions, average="weighted")
    assert weighted["recall_weighted"] == recall_score(references, predictions, average="weighted")
    scores, gold = rng.random(50) * 5, rng.random(50) * 5
    stsb = glue.score(glue.get_task("sts-b"), scores, gold)
    assert stsb == {"pearson": pearsonr(scores, gold)[0], "spearman": spearmanr(scores, gold)[0]}
