"""TFRecord -> MindRecord conversion of pretraining records, a bounded pool of processes.

The original suite's command line:

    python tools/parallel_tfrecord_to_mindrecord.py --input_tfrecord_dir DIR --output_mindrecord_dir DIR

Every TFRecord file F in the input directory (files with a `.json` manifest beside them, or
named *.tfrecord*) becomes OUT/F.mindrecord with the same instances in the same order, the same
int64/float32 schema and a manifest of its own. A file is converted whole or not at all.
"""

from __future__ import annotations

import json
import multiprocessing
import os

from mindtransformer.data import records
from mindtransformer.errors import UserInputError
from mindtransformer.utils.cli import StrictParser


def build_parser() -> StrictParser:
    p = StrictParser(prog="parallel_tfrecord_to_mindrecord.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--input_tfrecord_dir", required=True, help="directory of TFRecord files to convert")
    p.add_argument("--output_mindrecord_dir", required=True, help="directory for the MindRecord files")
    p.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="files converted at once (each in its own process)")
    return p


def tfrecord_files(directory: str) -> list:
    if not os.path.isdir(directory):
        raise UserInputError(f"--input_tfrecord_dir={directory}: no such directory")
    names = sorted(n for n in os.listdir(directory) if not n.startswith(".") and not n.endswith(".json")
                   and (".tfrecord" in n or os.path.isfile(os.path.join(directory, n + ".json"))))
    if not names:
        raise UserInputError(f"--input_tfrecord_dir={directory}: no TFRecord file (*.tfrecord* or with a .json manifest)")
    return [os.path.join(directory, n) for n in names]


def convert_file(source: str, target: str) -> int:
    """Copy every record of TFRecord `source` into MindRecord `target`; the record count."""
    manifest = records.read_manifest(source) if os.path.isfile(records.manifest_path(source)) else None
    stream = records.iter_records(source, "tfrecord")
    first = next(stream, None)
    if first is None:
        raise UserInputError(f"{source}: holds no records")
    lengths = records.record_lengths(first)
    writer = records.open_writer("mindrecord", target, lengths)
    batch, count = [first], 0
    try:
        for record in stream:
            batch.append(record)
            if len(batch) == 1000:
                count += _flush(writer, batch)
        count += _flush(writer, batch)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    extra = {k: v for k, v in (manifest or {}).items() if k not in ("format", "file", "count", "schema", "sha256")}
    records.write_manifest(target, "mindrecord", count, lengths,
                           dict(extra, converted_from=os.path.abspath(source), sha256=records.file_sha256(target)))
    return count


def _flush(writer, batch: list) -> int:
    import numpy as np

    arrays = {name: np.stack([r[name] for r in batch]) for name in records.FEATURES}
    writer.write(arrays, range(len(batch)))
    n = len(batch)
    batch.clear()
    return n


def _convert(job):
    source, target = job
    try:
        return source, convert_file(source, target), None
    except UserInputError as err:
        return source, 0, str(err)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_workers < 1:
        raise UserInputError(f"--num_workers={args.num_workers}: must be >= 1")
    sources = tfrecord_files(args.input_tfrecord_dir)
    os.makedirs(args.output_mindrecord_dir, exist_ok=True)
    jobs = [(s, os.path.join(args.output_mindrecord_dir, os.path.basename(s) + ".mindrecord")) for s in sources]
    from tqdm import tqdm

    workers = min(args.num_workers, len(jobs))
    context = multiprocessing.get_context("spawn")
    results = []
    with context.Pool(workers) as pool, tqdm(total=len(jobs), desc="files", unit=" file") as bar:
        for result in pool.imap_unordered(_convert, jobs):
            results.append(result)
            bar.update(1)
    errors = [message for _, _, message in results if message]
    if errors:
        raise UserInputError(f"{len(errors)} of {len(jobs)} files failed; first: {errors[0]}")
    total = sum(count for _, count, _ in results)
    summary = {os.path.basename(s): c for s, c, _ in sorted(results)}
    print(f"converted {total} records in {len(jobs)} files to {args.output_mindrecord_dir}: {json.dumps(summary)}")
    return 0
