"""Text (one sentence per line, blank line between documents) -> MLM/NSP pretraining records.

google-research/bert's create_pretraining_data.py flags and semantics, plus
--output_format tfrecord|mindrecord, --num_workers and --num_shards. The corpus is streamed in
chunks of whole documents (mindtransformer/data/pretraining.py); workers turn chunks into
instances and the parent writes them in chunk order, round-robin over the shards, so the same
seed gives the same records whatever --num_workers, and memory stays flat as the corpus grows.

    python tools/create_pretraining_data.py --input_file "wiki/*.txt" --output_file out/wiki.tfrecord \\
        --vocab_file vocab.txt --max_seq_length 128 --max_predictions_per_seq 20 --dupe_factor 5
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import glob
import multiprocessing
import os
import sys
import tempfile
import time
import types

from mindtransformer.data import pretraining, records
from mindtransformer.errors import UserInputError
from mindtransformer.utils.cli import StrictParser, boolean


def build_parser() -> StrictParser:
    p = StrictParser(prog="create_pretraining_data.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--input_file", required=True,
                   help="input text file(s): comma-separated paths or globs (google's flag)")
    p.add_argument("--output_file", required=True,
                   help="output record file(s), comma-separated; with --num_shards N > 1 and one name, "
                        "NAME-00000-of-0000N ... are written")
    p.add_argument("--vocab_file", required=True, help="the BERT vocab.txt of the model to pretrain")
    p.add_argument("--do_lower_case", type=boolean, default=True, help="lower-case and strip accents (uncased models)")
    p.add_argument("--do_whole_word_mask", type=boolean, default=False,
                   help="mask whole words (## pieces with their word; Chinese words from jieba)")
    p.add_argument("--max_seq_length", type=int, default=128, help="tokens per instance, [CLS] and [SEP]s included")
    p.add_argument("--max_predictions_per_seq", type=int, default=20, help="at most this many masked tokens per instance")
    p.add_argument("--random_seed", type=int, default=12345, help="same seed, same records (whatever --num_workers)")
    p.add_argument("--dupe_factor", type=int, default=10, help="passes over the input, each with different masks")
    p.add_argument("--masked_lm_prob", type=float, default=0.15, help="share of tokens to mask")
    p.add_argument("--short_seq_prob", type=float, default=0.1,
                   help="share of instances given a random shorter target length")
    p.add_argument("--output_format", choices=records.FORMATS, default="tfrecord", help="record container")
    p.add_argument("--num_workers", type=int, default=1, help="worker processes that make instances")
    p.add_argument("--num_shards", type=int, default=1, help="output files to spread the instances over")
    p.add_argument("--sentences_per_chunk", type=int, default=2000,
                   help="unit of work and of shuffling: whole documents of about this many sentences; "
                        "random next sentences come from the same chunk")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def expand_inputs(spec: str) -> list:
    paths = []
    for pattern in (s.strip() for s in spec.split(",") if s.strip()):
        found = sorted(glob.glob(pattern))
        if not found:
            raise UserInputError(f"--input_file: {pattern} matches no file; pass text files or globs, comma-separated")
        paths += found
    for path in paths:
        if os.path.getsize(path) == 0:
            raise UserInputError(f"{path}: the input file is empty; pass text with one sentence per line")
    return paths


def output_paths(spec: str, num_shards: int) -> list:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if num_shards < 1:
        raise UserInputError(f"--num_shards={num_shards}: must be >= 1")
    if num_shards > 1:
        if len(names) != 1:
            raise UserInputError("--num_shards > 1 takes one --output_file name, numbered per shard")
        return [f"{names[0]}-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]
    return names


# ---- workers -----------------------------------------------------------------------------------

_STATE = {}  # per process: the chunk tokenizer (with its word cache), the settings and the vocab facts


def _init_worker(vocab_file, do_lower_case, settings, chinese_words, encode_tfrecords):
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # --num_workers is the one parallelism knob
    from mindtransformer.data.tokenization import BertTokenizer

    tokenizer = BertTokenizer(vocab_file, do_lower_case=do_lower_case)
    if tokenizer.mask_token_id is None:
        raise UserInputError(f"{vocab_file}: the vocab has no [MASK] token; masked-LM records need one")
    _STATE.update(tokenizer=pretraining.ChunkTokenizer(tokenizer, chinese_words), settings=settings,
                  encode_tfrecords=encode_tfrecords,
                  vocab_size=tokenizer.vocab_size,
                  special_ids={"cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id,
                               "mask": tokenizer.mask_token_id})


def _make(job, scratch=None):
    """One chunk's instances: (count, feature arrays, None); for TFRecord output (count, None,
    (data, offsets)) from tfrecord.encode_records, encoded here in the worker so that the parent
    only writes; (0, None, None) if the chunk made nothing. Given a `scratch` directory (workers
    writing TFRecords), the data goes to a file there and its path comes back in its place: the
    parent reads it with one read() instead of receiving it through the pool's pipe (pickled,
    sent in pipe-sized pieces, gathered and unpickled: most of the parent's CPU time with 2 workers)."""
    chunk_index, documents = job
    tokens = pretraining.tokenize_documents(_STATE["tokenizer"], documents)
    arrays = pretraining.make_chunk(_STATE["settings"], chunk_index, tokens, _STATE["vocab_size"],
                                    _STATE["special_ids"])
    if arrays is None:
        return 0, None, None
    count = len(arrays["input_ids"])
    if not _STATE["encode_tfrecords"]:
        return count, arrays, None
    from mindtransformer.data.tfrecord import encode_records

    data, offsets = encode_records(arrays, records.DTYPES)
    if scratch is None:
        return count, None, (data, offsets)
    path = os.path.join(scratch, f"chunk-{chunk_index}")
    with open(path, "wb") as f:
        f.write(data)
    return count, None, (path, offsets)


def _collect(result):
    """A worker's result with a chunk file's data read in (and the file removed)."""
    count, arrays, framed = result
    if framed is not None and isinstance(framed[0], str):
        path, offsets = framed
        with open(path, "rb") as f:
            framed = (f.read(), offsets)
        os.unlink(path)
    return count, arrays, framed


def make_instances(paths, vocab_file, do_lower_case, settings, num_workers, encode_tfrecords=False, scratch_dir=None):
    """Yield each chunk's instances in chunk order (see _make); at most 2 x workers chunks are in
    flight, so memory does not grow with the corpus. Workers' encoded TFRecord chunks pass through
    a hidden temporary directory in `scratch_dir` (the output's directory: it has room for them;
    default the system's temporary directory), removed when the run ends or fails."""
    chinese_words = settings.do_whole_word_mask
    jobs = enumerate(pretraining.chunk_documents(pretraining.read_documents(paths), settings.sentences_per_chunk))
    init = (vocab_file, do_lower_case, settings, chinese_words, encode_tfrecords)
    _init_worker(*init)  # in this process first: forked workers inherit it
    if num_workers == 1:
        for job in jobs:
            yield _make(job)
        return
    # Forked workers start at once with the state built above (a spawned one re-imports and
    # rebuilds it, ~0.3 s). Safe: nothing here has run the tokenizer's thread pool, and the
    # caller imports MindSpore (MindRecord output) only after the first chunk came back.
    fork = "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if fork else "spawn")
    with contextlib.ExitStack() as cleanup:
        scratch = None
        if encode_tfrecords:
            scratch = cleanup.enter_context(tempfile.TemporaryDirectory(
                prefix=".mindtransformer-chunks-", dir=scratch_dir, ignore_cleanup_errors=True))
        pool = cleanup.enter_context(context.Pool(num_workers, initializer=None if fork else _init_worker,
                                                  initargs=() if fork else init))
        pending = collections.deque()
        for job in jobs:
            pending.append(pool.apply_async(_make, (job, scratch)))
            if len(pending) >= 2 * num_workers:
                yield _collect(pending.popleft().get())
        while pending:
            yield _collect(pending.popleft().get())


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    settings = pretraining.PretrainingSettings(
        max_seq_length=args.max_seq_length, max_predictions_per_seq=args.max_predictions_per_seq,
        random_seed=args.random_seed, dupe_factor=args.dupe_factor, masked_lm_prob=args.masked_lm_prob,
        short_seq_prob=args.short_seq_prob, do_whole_word_mask=args.do_whole_word_mask,
        sentences_per_chunk=args.sentences_per_chunk)
    if args.num_workers < 1:
        raise UserInputError(f"--num_workers={args.num_workers}: must be >= 1")
    paths = expand_inputs(args.input_file)
    outputs = output_paths(args.output_file, args.num_shards)
    lengths = records.feature_lengths(args.max_seq_length, args.max_predictions_per_seq)
    from mindtransformer.data.tokenization import read_vocab

    read_vocab(args.vocab_file)  # a bad vocab fails here, before the progress bar and any worker start

    out_dir = os.path.dirname(os.path.abspath(outputs[0]))
    os.makedirs(out_dir, exist_ok=True)  # the writers' directory, also the workers' scratch space
    start = time.perf_counter()
    writers = []  # opened with the first chunk: MindSpore's import comes after the workers' fork
    total, chunks, next_writer = 0, 0, 0
    try:
        made = make_instances(paths, args.vocab_file, args.do_lower_case, settings, args.num_workers,
                              args.output_format == "tfrecord", out_dir)
        # closing(): on an error the workers stop and their scratch directory goes at once.
        if args.quiet:  # no bar: tqdm is not even imported (~20 ms of a one-second run)
            progress = contextlib.nullcontext(types.SimpleNamespace(update=lambda n: None))
        else:
            from tqdm import tqdm

            progress = tqdm(desc="instances", unit=" inst", file=sys.stderr)
        with progress as bar, contextlib.closing(made):
            for n, arrays, framed in made:
                chunks += 1
                if not n:
                    continue
                if not writers:
                    writers = [records.open_writer(args.output_format, path, lengths) for path in outputs]
                # google's round-robin over the output files, continued across chunks.
                for offset, writer in enumerate(writers):
                    first = (offset - next_writer) % len(writers)
                    writer.write(arrays, range(first, n, len(writers)), framed)
                next_writer = (next_writer + n) % len(writers)
                total += n
                bar.update(n)
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    if total == 0:
        for writer in writers:
            writer.abort()
        raise UserInputError(f"{args.input_file}: no instance could be made (no document with text); "
                             "pass text with one sentence per line and blank lines between documents")
    for writer in writers:
        writer.close()
    vocab_hash = records.file_sha256(args.vocab_file)
    for path, writer in zip(outputs, writers):
        records.write_manifest(path, args.output_format, writer.count, lengths, {
            "seed": args.random_seed, "vocab_file": os.path.abspath(args.vocab_file), "vocab_sha256": vocab_hash,
            "do_lower_case": args.do_lower_case, "settings": dataclasses.asdict(settings),
            "inputs": [{"path": os.path.abspath(p), "bytes": os.path.getsize(p)} for p in paths],
            "shard": outputs.index(path), "num_shards": len(outputs), "total_count": total,
            "sha256": writer.sha256(),
        })
    seconds = time.perf_counter() - start
    print(f"wrote {total} instances from {chunks} chunks to {len(outputs)} {args.output_format} file(s) "
          f"in {seconds:.1f} s ({total / seconds:.0f} instances/s): {', '.join(outputs)}")
    return 0
