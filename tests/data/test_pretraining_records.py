"""Pretraining records from the real enwiki excerpt: google's schema and masking statistics,
whole-word masking, both containers, worker-count independence, conversion, the inspect tool,
and bad input. The tools run as subprocesses (as users run them): TensorFlow and MindSpore then
never share a process with the rest of the suite."""

import contextlib
import glob
import hashlib
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from mindtransformer.data import records
from mindtransformer.data.pretraining import ChunkTokenizer, read_documents
from mindtransformer.data.tokenization import BertTokenizer
from tests.conftest import REPO_ROOT, shared_file

DUMP = ("wiki_dump", "enwiki", "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
MAX_SEQ, MAX_PRED = 128, 20


def run_tool(script, *args, check=True):
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", script), *args],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    if check and done.returncode != 0:
        raise AssertionError(f"{script} exited {done.returncode}: {done.stderr[-2000:]}")
    return done


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    dump = shared_file(*DUMP)
    from mindtransformer.data.wiki import extract_dump

    out = tmp_path_factory.mktemp("wiki")
    extract_dump(dump, str(out))
    return sorted(glob.glob(str(out / "wiki_*.txt")))


@pytest.fixture(scope="module")
def vocab_file(minilm_path):
    return os.path.join(minilm_path, "vocab.txt")


@pytest.fixture(scope="module")
def made(corpus, vocab_file, tmp_path_factory):
    """Records of the corpus: TFRecord and MindRecord with 1 worker, TFRecord with 2 workers, and
    whole-word-masked TFRecord; small chunks so that there are many."""
    out = tmp_path_factory.mktemp("records")
    common = ["--input_file", ",".join(corpus), "--vocab_file", vocab_file, "--max_seq_length", str(MAX_SEQ),
              "--max_predictions_per_seq", str(MAX_PRED), "--dupe_factor", "2", "--random_seed", "7",
              "--sentences_per_chunk", "1500", "--quiet"]
    paths = {"tf1": out / "w1.tfrecord", "ms1": out / "w1.mindrecord", "tf2": out / "w2.tfrecord",
             "wwm": out / "wwm.tfrecord"}
    run_tool("create_pretraining_data.py", *common, "--output_file", str(paths["tf1"]))
    run_tool("create_pretraining_data.py", *common, "--output_file", str(paths["ms1"]), "--output_format", "mindrecord")
    run_tool("create_pretraining_data.py", *common, "--output_file", str(paths["tf2"]), "--num_workers", "2")
    run_tool("create_pretraining_data.py", *common, "--output_file", str(paths["wwm"]), "--do_whole_word_mask=true")
    return {k: str(v) for k, v in paths.items()}


def stacked(path):
    rows = list(records.iter_records(path))
    return {name: np.stack([r[name] for r in rows]) for name in records.FEATURES}


def originals(arrays):
    """input_ids with every masked position given back its original token: (N, T)."""
    ids = arrays["input_ids"].copy()
    rows, slots = np.nonzero(arrays["masked_lm_weights"] > 0)
    ids[rows, arrays["masked_lm_positions"][rows, slots]] = arrays["masked_lm_ids"][rows, slots]
    return ids


def test_schema_dtypes_and_google_reader(made):
    tf = pytest.importorskip("tensorflow")
    # google-research/bert run_pretraining.py's input_fn_builder feature spec, verbatim in meaning.
    spec = {"input_ids": tf.io.FixedLenFeature([MAX_SEQ], tf.int64),
            "input_mask": tf.io.FixedLenFeature([MAX_SEQ], tf.int64),
            "segment_ids": tf.io.FixedLenFeature([MAX_SEQ], tf.int64),
            "masked_lm_positions": tf.io.FixedLenFeature([MAX_PRED], tf.int64),
            "masked_lm_ids": tf.io.FixedLenFeature([MAX_PRED], tf.int64),
            "masked_lm_weights": tf.io.FixedLenFeature([MAX_PRED], tf.float32),
            "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64)}
    parsed = list(tf.data.TFRecordDataset(made["tf1"]).take(50).map(lambda r: tf.io.parse_single_example(r, spec)))
    assert len(parsed) == 50
    ours = list(records.iter_records(made["tf1"]))[:50]
    for theirs, mine in zip(parsed, ours):
        for name in spec:
            np.testing.assert_array_equal(theirs[name].numpy(), mine[name])
    manifest = records.read_manifest(made["tf1"])
    assert manifest["schema"]["input_ids"] == {"dtype": "int64", "shape": [MAX_SEQ]}
    assert manifest["schema"]["masked_lm_weights"] == {"dtype": "float32", "shape": [MAX_PRED]}
    assert manifest["count"] == len(list(records.iter_records(made["tf1"])))
    assert manifest["vocab_sha256"] == sha256(manifest["vocab_file"]) and manifest["seed"] == 7


@pytest.mark.parametrize("compiled", [True, False], ids=["c", "numpy"])
def test_tfrecord_encoding_equals_tensorflows(made, tmp_path, compiled):
    """Our Example encoders (the compiled one and the numpy fallback) give TensorFlow's
    deterministic bytes, on real records and on edge values (0, 127/128 at varint boundaries,
    large ids, negative zero and tiny floats), and our framing equals tf.io.TFRecordWriter's file."""
    tf = pytest.importorskip("tensorflow")
    if compiled:
        pytest.importorskip("mindtransformer.data._records_c", reason="built without a C compiler")
    from functools import partial

    from mindtransformer.data import tfrecord

    encode_records = partial(tfrecord.encode_records, compiled=compiled)

    dtypes = records.DTYPES
    real = {name: values[:30] for name, values in stacked(made["tf1"]).items()}
    edges = {name: real[name][:2].copy() for name in real}
    edges["input_ids"][0, :6] = [0, 127, 128, 16383, 16384, 2 ** 40]
    edges["masked_lm_weights"][1, :3] = [-0.0, 1e-45, 3.4e38]
    for arrays in (real, edges):
        n = len(arrays["input_ids"])
        theirs = [tf.train.Example(features=tf.train.Features(feature={
            name: tf.train.Feature(int64_list=tf.train.Int64List(value=arrays[name][i].tolist())) if dtype == "int64"
            else tf.train.Feature(float_list=tf.train.FloatList(value=arrays[name][i].tolist()))
            for name, dtype in dtypes.items()})).SerializeToString(deterministic=True) for i in range(n)]
        data, offsets = encode_records(arrays, dtypes, framed=False)
        assert [data[a:b] for a, b in zip(offsets[:-1], offsets[1:])] == theirs
        with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
            for example in theirs:
                writer.write(example)
        assert encode_records(arrays, dtypes)[0] == (tmp_path / "tf.tfrecord").read_bytes()


@pytest.mark.parametrize("compiled", [True, False], ids=["c", "regex"])
def test_fast_tokenization_equals_tokenizers(corpus, vocab_file, monkeypatch, compiled):
    """The chunk tokenizer's fast path (words split in C or by a regex, and a word cache) gives
    `tokenizers`' ids on the real corpus and on text that must leave it (accents, CJK, controls,
    special tokens, long words), cased and uncased, also when its word cache starts again between calls."""
    from mindtransformer.data import pretraining

    if compiled:
        pytest.importorskip("mindtransformer.data._records_c", reason="built without a C compiler")

    monkeypatch.setattr(pretraining, "_WORD_CACHE_LIMIT", 2000)
    sentences = [sentence for document in read_documents(corpus) for sentence in document]
    edges = ["Café au lait, naïve façade – “quoted” … déjà-vu!", "Ünïcödé ÀÉÎÕÜ ﬁ ligature",
             "tab\there", "ctrl\x01char", "[MASK] token and [mask] too", "x" * 150 + " long", "Greek αβγ and 中文字符 mix",
             "Kelvin \u212a sign", "İstanbul", "soft\xadhyphen", "nbsp\xa0here", "zero\u200bwidth", "", "   ",
             "a_b-c.d", "Combining e\u0301 and o\u0308", "\u037e question", "UPPER lower MiXeD 123abc"]
    for lower in (True, False):
        tokenizer = BertTokenizer(vocab_file, do_lower_case=lower)
        chunk_tokenizer = ChunkTokenizer(tokenizer, chinese_words=False, compiled=compiled)
        for batch in (sentences[:4000], edges, sentences[4000:8000] + edges):
            ids, word_start, counts = chunk_tokenizer(batch)
            theirs = [e.ids for e in tokenizer._tokenizer.encode_batch(batch, add_special_tokens=False)]
            assert counts.tolist() == [len(t) for t in theirs]
            assert ids.tolist() == [i for t in theirs for i in t]
            np.testing.assert_array_equal(word_start, ~chunk_tokenizer.is_piece[ids])


@pytest.mark.parametrize("whole_word", [False, True], ids=["tokens", "whole_words"])
@pytest.mark.parametrize("max_seq", [128, 24])
def test_compiled_instances_equal_numpys(corpus, vocab_file, whole_word, max_seq):
    """The compiled packing and instance builder give the Python and numpy path's arrays, value for
    value, from the same draws: on real chunks and a one-document chunk (random next sentences
    from the same document), with and without whole-word masking, long and short sequences."""
    pytest.importorskip("mindtransformer.data._records_c", reason="built without a C compiler")
    from mindtransformer.data import pretraining

    tokenizer = BertTokenizer(vocab_file, do_lower_case=True)
    chunk_tokenizer = ChunkTokenizer(tokenizer, chinese_words=False)
    special = {"cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id, "mask": tokenizer.mask_token_id}
    settings = pretraining.PretrainingSettings(max_seq_length=max_seq, max_predictions_per_seq=7 if max_seq < 64 else 20,
                                               dupe_factor=2, do_whole_word_mask=whole_word)
    chunks = pretraining.chunk_documents(read_documents(corpus), 1500)
    for index, documents in enumerate([*itertools.islice(chunks, 3), [max(next(chunks), key=len)]]):
        tokens = pretraining.tokenize_documents(chunk_tokenizer, documents)
        compiled, numpy = (pretraining.make_chunk(settings, index, tokens, tokenizer.vocab_size, special, compiled=c)
                           for c in (True, False))
        assert compiled.keys() == numpy.keys()
        for name in numpy:
            assert compiled[name].dtype == numpy[name].dtype, name
            np.testing.assert_array_equal(compiled[name], numpy[name], err_msg=name)
        assert (numpy["masked_lm_weights"] > 0).sum() > 0


def test_tool_makes_the_same_bytes_without_the_c_extension(corpus, vocab_file, tmp_path, monkeypatch):
    """Built without a C compiler, the tool makes the same TFRecord file (Python and numpy paths
    throughout: word cache, packing, arrays, encoding)."""
    pytest.importorskip("mindtransformer.data._records_c", reason="built without a C compiler")
    from mindtransformer.data import create_pretraining_data, pretraining, tfrecord

    args = ["--input_file", ",".join(corpus), "--vocab_file", vocab_file, "--dupe_factor", "1", "--quiet",
            "--sentences_per_chunk", "3000", "--do_whole_word_mask=true"]
    assert create_pretraining_data.main([*args, "--output_file", str(tmp_path / "c.tfrecord")]) == 0
    monkeypatch.setattr(pretraining, "_records_c", None)
    monkeypatch.setattr(tfrecord, "_records_c", None)
    assert create_pretraining_data.main([*args, "--output_file", str(tmp_path / "py.tfrecord")]) == 0
    assert (tmp_path / "c.tfrecord").read_bytes() == (tmp_path / "py.tfrecord").read_bytes()


def test_truncation_cuts_the_sides_as_googles_loop_with_fair_coins_for_front_or_back():
    """Per side, the cut counts equal google's truncate_seq_pair loop (one token at a time from the
    longer side, B on a tie) for every length pair; the front/back choice of each cut is a fair
    coin (the front cuts of a side of k cuts have mean k/2 and variance k/4, independent sides)."""
    import random

    from mindtransformer.data.pretraining import _truncation

    def googles(len_a, len_b, max_tokens, rng):
        cuts = [0, 0, 0, 0]
        while len_a + len_b > max_tokens:
            if len_a > len_b:
                cuts[0 if rng.random() < 0.5 else 1] += 1
                len_a -= 1
            else:
                cuts[2 if rng.random() < 0.5 else 3] += 1
                len_b -= 1
        return tuple(cuts)

    for len_a in range(1, 70, 3):
        for len_b in range(1, 70, 2):
            for max_tokens in (2, 5, 40, 61, 125):
                seed = f"{len_a}/{len_b}/{max_tokens}"
                ours = _truncation(len_a, len_b, max_tokens, random.Random(seed))
                theirs = googles(len_a, len_b, max_tokens, random.Random(seed))
                assert (ours[0] + ours[1], ours[2] + ours[3]) == (theirs[0] + theirs[1], theirs[2] + theirs[3])
                assert min(ours) >= 0
    rng = random.Random(0)
    draws = np.array([_truncation(70, 75, 125, rng) for _ in range(20000)])  # 20 cuts: B 5, then B 8 and A 7
    cut_a, cut_b = draws[0, 0] + draws[0, 1], draws[0, 2] + draws[0, 3]
    assert (cut_a, cut_b) == (7, 13)
    for front, k in ((draws[:, 0], cut_a), (draws[:, 2], cut_b)):
        assert abs(front.mean() - k / 2) < 4 * np.sqrt(k / 4 / len(front))
        assert abs(front.var() / (k / 4) - 1) < 0.06
    assert abs(np.corrcoef(draws[:, 0], draws[:, 2])[0, 1]) < 0.03


def test_masking_and_nsp_statistics(made, vocab_file):
    a = stacked(made["tf1"])
    n = len(a["input_ids"])
    assert n > 5000  # the excerpt makes about 12k instances at dupe_factor 2
    lengths = a["input_mask"].sum(axis=1)
    budget = np.minimum(MAX_PRED, np.maximum(1, np.round(lengths * 0.15).astype(int)))
    # Every instance has far more candidates than its budget: exactly the budget is masked.
    np.testing.assert_array_equal((a["masked_lm_weights"] > 0).sum(axis=1), budget)
    mask_id = BertTokenizer(vocab_file).mask_token_id
    rows, slots = np.nonzero(a["masked_lm_weights"] > 0)
    shown = a["input_ids"][rows, a["masked_lm_positions"][rows, slots]]
    truth = a["masked_lm_ids"][rows, slots]
    total = len(rows)  # ~200k masked tokens: 3 sigma of a 10 % share is about 0.2 %
    as_mask, kept = (shown == mask_id).mean(), (shown == truth).mean()
    assert 0.79 < as_mask < 0.81, as_mask
    assert 0.095 < kept < 0.105, kept  # 10 % kept plus random picks that hit the same id (~0)
    assert 0.095 < 1 - as_mask - kept < 0.105, (total, as_mask, kept)
    # NSP: 50 % random next, plus google's forced random next when a chunk holds one segment.
    random_next = a["next_sentence_labels"].mean()
    assert 0.49 < random_next < 0.58, random_next


def test_masked_ids_are_the_original_tokens(made, corpus, vocab_file):
    """Segments A and B of every instance, with the masked tokens given back, are runs of tokens
    of documents of the corpus; for 'actual next' instances B follows A in the same document
    (truncation may cut A's end or B's start, so A B need not be one run)."""
    tokenizer = BertTokenizer(vocab_file)
    chunk_tokenizer = ChunkTokenizer(tokenizer, chinese_words=False)
    documents = []
    for document in read_documents(corpus):
        ids = chunk_tokenizer(document)[0]
        documents.append(" " + " ".join(map(str, ids.tolist())) + " ")
    a = stacked(made["tf1"])
    full = originals(a)
    sep = tokenizer.sep_token_id
    checked_next = 0
    for row in range(0, len(full), 40):  # ~300 instances spread over the file
        length = int(a["input_mask"][row].sum())
        tokens = full[row, :length]
        first_sep = int(np.flatnonzero(tokens == sep)[0])
        seg_a = " " + " ".join(map(str, tokens[1:first_sep])) + " "
        seg_b = " " + " ".join(map(str, tokens[first_sep + 1:length - 1])) + " "
        holding_a = [doc for doc in documents if seg_a in doc]
        assert holding_a, f"instance {row}: segment A is not a run of the text"
        assert any(seg_b in doc for doc in documents), f"instance {row}: segment B is not a run of the text"
        if a["next_sentence_labels"][row, 0] == 0:
            assert any(seg_b in doc[doc.index(seg_a) + len(seg_a) - 1:] for doc in holding_a), \
                f"instance {row}: B does not follow A in its document"
            checked_next += 1
    assert checked_next > 100


def test_whole_word_masking_never_splits_a_word(made, vocab_file):
    tokenizer = BertTokenizer(vocab_file)
    is_piece = np.array([tokenizer.ids_to_tokens[i].startswith("##") for i in range(tokenizer.vocab_size)])
    a = stacked(made["wwm"])
    full = originals(a)
    masked = np.zeros_like(full, dtype=bool)
    rows, slots = np.nonzero(a["masked_lm_weights"] > 0)
    masked[rows, a["masked_lm_positions"][rows, slots]] = True
    special = np.isin(full, [tokenizer.cls_token_id, tokenizer.sep_token_id, 0])
    piece = is_piece[full] & ~special
    # A word piece and the token before it are masked together, unless a special token separates them.
    joined = piece[:, 1:] & ~special[:, :-1]
    assert (masked[:, 1:][joined] == masked[:, :-1][joined]).all()
    assert joined.sum() > 10000 and masked[:, 1:][joined].sum() > 500  # the check had words to bite on
    lengths = a["input_mask"].sum(axis=1)
    budget = np.minimum(MAX_PRED, np.maximum(1, np.round(lengths * 0.15).astype(int)))
    assert (masked.sum(axis=1) <= budget).all()


def test_containers_and_worker_counts_agree(made):
    tf1, ms1 = stacked(made["tf1"]), stacked(made["ms1"])
    for name in records.FEATURES:
        assert tf1[name].dtype == ms1[name].dtype
        np.testing.assert_array_equal(tf1[name], ms1[name])
    assert sha256(made["tf1"]) == sha256(made["tf2"])  # 1 and 2 workers: the same bytes
    for path in (made["tf1"], made["tf2"], made["ms1"]):  # each manifest names its file's hash
        assert records.read_manifest(path)["sha256"] == sha256(path)


def test_shards_are_the_same_from_one_and_two_workers(corpus, vocab_file, tmp_path):
    """Round-robin over 3 shards, continued across chunks, whether chunks come from this process
    or from workers (whose encoded chunks come back through files)."""
    common = ["--input_file", ",".join(corpus), "--vocab_file", vocab_file, "--max_seq_length", str(MAX_SEQ),
              "--max_predictions_per_seq", str(MAX_PRED), "--dupe_factor", "1", "--random_seed", "3",
              "--sentences_per_chunk", "1500", "--num_shards", "3", "--quiet"]
    made = {}
    for workers in (1, 2):
        name = str(tmp_path / f"w{workers}.tfrecord")
        run_tool("create_pretraining_data.py", *common, "--output_file", name, "--num_workers", str(workers))
        made[workers] = [f"{name}-{i:05d}-of-00003" for i in range(3)]
    counts = [records.read_manifest(path)["count"] for path in made[1]]
    assert max(counts) - min(counts) <= 1 and sum(counts) > 1000
    for one, two in zip(made[1], made[2]):
        assert sha256(one) == sha256(two) == records.read_manifest(two)["sha256"]


def test_frameworks_read_our_files_directly(made):
    pytest.importorskip("mindspore")
    # MindSpore's own readers, in a fresh process (as a training job would use them).
    code = f"""
import numpy as np, mindspore.dataset as ds
a = next(ds.MindDataset({made['ms1']!r}, shuffle=False).create_dict_iterator(output_numpy=True))
b = next(ds.TFRecordDataset({made['tf1']!r}, shuffle=False).create_dict_iterator(output_numpy=True))
for k in a:
    assert np.array_equal(a[k].reshape(-1), b[k].reshape(-1)), k
print(len(a), a['input_ids'].dtype, a['masked_lm_weights'].dtype)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["7", "int64", "float32"]


def test_mindrecord_blobs_equal_mindsporess_own_writer(made, tmp_path):
    """Our MindRecord rows (each row's blob built for all rows at once, then MindSpore's C++ writer)
    read back the same as those of MindSpore's public FileWriter.write_raw_data, in a process of
    their own (MindSpore)."""
    code = """
import sys
import numpy as np
from mindtransformer.data import records
rows = [r for _, r in zip(range(300), records.iter_records(sys.argv[1]))]
arrays = {name: np.stack([r[name] for r in rows]) for name in records.FEATURES}
lengths = records.record_lengths(rows[0])
records.write_file(sys.argv[2], "mindrecord", arrays, lengths, {})
records.MindRecordWriter._blobs = lambda self, arrays, rows: None  # MindSpore's own path
records.write_file(sys.argv[3], "mindrecord", arrays, lengths, {})
ours, theirs = (list(records.iter_records(path)) for path in sys.argv[2:])
assert len(ours) == len(theirs) == 300
for i, (a, b) in enumerate(zip(ours, theirs)):
    for name in records.FEATURES:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name
        assert np.array_equal(a[name], arrays[name][i]), name
print("same")
"""
    done = subprocess.run([sys.executable, "-c", code, made["tf1"], str(tmp_path / "ours.mindrecord"),
                           str(tmp_path / "theirs.mindrecord")], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "same", done.stderr[-2000:]


def test_tfrecord_to_mindrecord_conversion(made, tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    for suffix in ("", ".json"):
        os.symlink(made["tf1"] + suffix, source / ("w1.tfrecord" + suffix))
    run_tool("parallel_tfrecord_to_mindrecord.py", "--input_tfrecord_dir", str(source),
             "--output_mindrecord_dir", str(tmp_path / "out"), "--num_workers", "1")
    converted = str(tmp_path / "out" / "w1.tfrecord.mindrecord")
    a, b = stacked(made["tf1"]), stacked(converted)
    for name in records.FEATURES:
        np.testing.assert_array_equal(a[name], b[name])
    assert records.read_manifest(converted)["count"] == len(a["input_ids"])


def test_inspect_tool_prints_and_validates(made):
    done = run_tool("vis_tfrecord_or_mindrecord.py", "--file_name", made["ms1"], "--vis_option", "vis_mindrecord",
                    "--num_records", "1", "--validate")
    assert "== record 0" in done.stdout and "[CLS]" in done.stdout and "->" in done.stdout
    assert done.stdout.strip().endswith("valid")


def test_validator_reads_the_layout_from_the_original_tokens(made, vocab_file):
    """A masked position may show [SEP] (google's random replacement draws from the whole vocab):
    still valid. A [SEP] that is no masked position, inside segment A: a violation."""
    from mindtransformer.data.inspect_records import Validator

    tokenizer = BertTokenizer(vocab_file)
    record = next(records.iter_records(made["tf1"]))
    weights, positions = record["masked_lm_weights"], record["masked_lm_positions"]
    first_b = int(np.flatnonzero(record["input_ids"] == tokenizer.sep_token_id)[0]) + 1
    masked_in_a = [int(p) for p in positions[weights > 0] if p < first_b - 1]
    unmasked_in_a = sorted(set(range(1, first_b - 1)) - set(positions[weights > 0].tolist()))
    assert masked_in_a and unmasked_in_a
    for position, valid in ((masked_in_a[0], True), (unmasked_in_a[0], False)):
        changed = dict(record, input_ids=record["input_ids"].copy())
        changed["input_ids"][position] = tokenizer.sep_token_id
        validator = Validator(tokenizer)
        validator.check(0, changed)
        assert (not validator.violations) == valid, (position, dict(validator.violations))


def corrupt_copy(source, target, offset):
    data = bytearray(open(source, "rb").read())
    data[offset] ^= 0xFF
    open(target, "wb").write(bytes(data))


def test_inspect_tool_rejects_damaged_and_foreign_files(made, tmp_path):
    bad_crc = str(tmp_path / "bad.tfrecord")
    corrupt_copy(made["tf1"], bad_crc, 5000)
    done = run_tool("vis_tfrecord_or_mindrecord.py", "--file_name", bad_crc, "--vocab_file",
                    records.read_manifest(made["tf1"])["vocab_file"], "--validate", check=False)
    assert done.returncode == 2 and "corrupt TFRecord" in done.stderr and bad_crc in done.stderr
    truncated = str(tmp_path / "cut.tfrecord")
    open(truncated, "wb").write(open(made["tf1"], "rb").read()[:100_000])
    done = run_tool("vis_tfrecord_or_mindrecord.py", "--file_name", truncated, "--vocab_file",
                    records.read_manifest(made["tf1"])["vocab_file"], "--validate", check=False)
    assert done.returncode == 2 and "corrupt TFRecord" in done.stderr
    foreign = str(tmp_path / "other.tfrecord")
    code = f"""
import tensorflow as tf
with tf.io.TFRecordWriter({foreign!r}) as w:
    w.write(tf.train.Example(features=tf.train.Features(feature={{"label": tf.train.Feature(
        int64_list=tf.train.Int64List(value=[1]))}})).SerializeToString())
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    done = run_tool("vis_tfrecord_or_mindrecord.py", "--file_name", foreign, "--vocab_file",
                    records.read_manifest(made["tf1"])["vocab_file"], check=False)
    assert done.returncode == 2 and "not a record file of this kind" in done.stderr and "label" in done.stderr


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, vocab_file, corpus):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = tmp_path / "o.tfrecord"
    done = run_tool("create_pretraining_data.py", "--input_file", str(empty), "--output_file", str(out),
                    "--vocab_file", vocab_file, check=False)
    assert done.returncode == 2 and "empty" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n\n")
    done = run_tool("create_pretraining_data.py", "--input_file", str(blank), "--output_file", str(out),
                    "--vocab_file", vocab_file, "--quiet", check=False)
    assert done.returncode == 2 and "no instance" in done.stderr
    done = run_tool("create_pretraining_data.py", "--input_file", corpus[0], "--output_file", str(out),
                    "--vocab_file", str(tmp_path / "missing_vocab.txt"), check=False)
    assert done.returncode == 2 and "missing_vocab.txt" in done.stderr
    done = run_tool("create_pretraining_data.py", "--input_file", corpus[0], "--output_file", str(out),
                    "--vocab_file", vocab_file, "--max_seq_lenght", "64", check=False)
    assert done.returncode == 2 and "--max_seq_length" in done.stderr  # the nearest valid flag
    assert sorted(os.listdir(tmp_path)) == ["blank.txt", "empty.txt"]  # no output, no temporary file


@pytest.mark.parametrize("output_format, workers", [("mindrecord", 1), ("tfrecord", 2)])
def test_interrupted_run_leaves_no_complete_looking_file(tmp_path, vocab_file, corpus, monkeypatch, output_format,
                                                         workers):
    """Nothing is left: no record file, no temporary one, and (with workers) no scratch directory
    with their encoded chunks, which lies beside the output."""
    from mindtransformer.data import create_pretraining_data as tool

    real = tool.make_instances

    def dies_after_two(*args, **kwargs):
        with contextlib.closing(real(*args, **kwargs)) as made:
            for index, chunk in enumerate(made):
                if index == 2:
                    raise KeyboardInterrupt
                yield chunk

    monkeypatch.setattr(tool, "make_instances", dies_after_two)
    out = tmp_path / f"x.{output_format}"
    with pytest.raises(KeyboardInterrupt):
        tool.main(["--input_file", ",".join(corpus), "--output_file", str(out), "--vocab_file", vocab_file,
                   "--output_format", output_format, "--num_workers", str(workers), "--sentences_per_chunk", "500",
                   "--dupe_factor", "1", "--quiet"])
    assert os.listdir(tmp_path) == []


def test_generate_pretrain_mindrecords_example(tmp_path, vocab_file):
    """The shell entry point on the bundled excerpt (no ../shared needed): one MindRecord per
    input file, made by a bounded pool, each valid."""
    from mindtransformer.data.wiki import extract_dump
    from mindtransformer.utils.bundled import RESOURCES

    text = tmp_path / "text"
    extract_dump(os.path.join(RESOURCES, "enwiki-excerpt-6-articles.xml.bz2"), str(text))
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    lines = open(glob.glob(str(text / "wiki_*.txt"))[0], encoding="utf-8").read().split("\n\n")
    (inputs / "part_a.txt").write_text("\n\n".join(lines[:3]), encoding="utf-8")
    (inputs / "part_b.txt").write_text("\n\n".join(lines[3:]), encoding="utf-8")
    done = subprocess.run(["bash", os.path.join(REPO_ROOT, "examples", "generate_mindrecord",
                                                "generate_pretrain_mindrecords.sh"),
                           str(inputs), str(tmp_path / "out"), vocab_file, "--dupe_factor=1"],
                          capture_output=True, text=True, env=dict(os.environ, WORKERS="2"))
    assert done.returncode == 0, done.stderr[-2000:]
    made = sorted(os.listdir(tmp_path / "out"))
    assert made == ["part_a.txt.mindrecord", "part_a.txt.mindrecord.db", "part_a.txt.mindrecord.json",
                    "part_b.txt.mindrecord", "part_b.txt.mindrecord.db", "part_b.txt.mindrecord.json"]
    for name in ("part_a.txt.mindrecord", "part_b.txt.mindrecord"):
        path = str(tmp_path / "out" / name)
        assert records.read_manifest(path)["count"] == sum(1 for _ in records.iter_records(path)) > 0


@pytest.mark.parametrize("case", ["glob_matches_nothing", "not_utf8", "bad_shards", "not_a_vocab",
                                  "vis_missing_file", "convert_missing_dir", "convert_no_tfrecords"])
def test_more_bad_input_is_one_line(case, tmp_path, vocab_file):
    """Each bad input: exit status 2, one `error:` line naming the culprit, no output left."""
    text = tmp_path / "in.txt"
    text.write_text("One sentence here.\nAnother one.\n\nA second document.\nWith two lines.\n", encoding="utf-8")
    out = str(tmp_path / "out" / "o.tfrecord")
    make = ["create_pretraining_data.py", "--output_file", out, "--vocab_file", vocab_file, "--quiet"]
    args, named = {
        "glob_matches_nothing": (make + ["--input_file", str(tmp_path / "nothing_*.txt")], "nothing_*.txt"),
        "not_utf8": (make + ["--input_file", str(tmp_path / "latin1.txt")], "latin1.txt"),
        "bad_shards": (make + ["--input_file", str(text), "--num_shards", "0"], "--num_shards"),
        "not_a_vocab": (["create_pretraining_data.py", "--output_file", out, "--input_file", str(text),
                         "--vocab_file", str(text)], "not a BERT vocab"),
        "vis_missing_file": (["vis_tfrecord_or_mindrecord.py", "--file_name", str(tmp_path / "gone.tfrecord")], "gone.tfrecord"),
        "convert_missing_dir": (["parallel_tfrecord_to_mindrecord.py", "--input_tfrecord_dir", str(tmp_path / "nodir"),
                                 "--output_mindrecord_dir", str(tmp_path / "out")], "nodir"),
        "convert_no_tfrecords": (["parallel_tfrecord_to_mindrecord.py", "--input_tfrecord_dir", str(tmp_path),
                                  "--output_mindrecord_dir", str(tmp_path / "out")], "no TFRecord file"),
    }[case]
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait.\n".encode("latin-1"))
    done = run_tool(*args, check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], done.stderr
    assert not os.path.exists(tmp_path / "out") or os.listdir(tmp_path / "out") == []


def test_compiled_encoder_equals_numpys_at_every_varint_width():
    """The C encoder's per-row paths (one byte per value, up to three bytes without branches, the
    general varint) give the numpy encoder's bytes for values up to each width's edge."""
    pytest.importorskip("mindtransformer.data._records_c", reason="built without a C compiler")
    from mindtransformer.data.tfrecord import encode_records

    rng = np.random.default_rng(0)
    dtypes = {"ids": "int64", "weights": "float32"}
    for top in (2, 128, 129, 2 ** 14 + 1, 2 ** 21, 2 ** 21 + 1, 2 ** 35, 2 ** 63 - 1):
        arrays = {"ids": rng.integers(0, top, (50, 17)), "weights": rng.random((50, 3)).astype(np.float32)}
        arrays["ids"][::7, -1] = top - 1  # some rows reach the edge, the others stay below it
        for framed in (True, False):
            (data, offsets), (expected, expected_offsets) = (encode_records(arrays, dtypes, framed, compiled=c)
                                                             for c in (True, False))
            assert data == expected, top
            np.testing.assert_array_equal(offsets, expected_offsets)


@pytest.mark.parametrize("compiled", [True, False], ids=["c", "numpy"])
def test_tfrecord_encoder_refuses_negative_ints(compiled):
    """Both encoders write int64 as plain varints: a negative value is refused, not wrapped."""
    from mindtransformer.data.tfrecord import encode_records

    with pytest.raises(ValueError, match="negative"):
        encode_records({"a": np.array([[1, -2]])}, {"a": "int64"}, compiled=compiled)
