"""Pretraining records: one schema (google's features and dtypes), two containers.

TFRecord is written without TensorFlow (mindtransformer/data/tfrecord.py says why; the bytes
equal TensorFlow's) and read through TensorFlow's `tf.data`, which checks every CRC; google's own
readers and `mindspore.dataset.TFRecordDataset` read our files as they are.
MindRecord goes through `mindspore.mindrecord.FileWriter` / `FileReader`. Both frameworks are
imported only when a container of theirs is used. Each data file `F` gets a manifest `F.json`
(schema, count, seed, vocab hash, settings); data and manifest are written under temporary names
and renamed when complete, so an interrupted run leaves nothing that looks finished.

Shape legend: T max_seq_length, P max_predictions_per_seq.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterator

import numpy as np

from mindtransformer.errors import UserInputError, first_line
from mindtransformer.utils.files import atomic_path, atomic_write_text, make_readable

FORMATS = ("tfrecord", "mindrecord")

# name -> (dtype, length: "T", "P" or 1); int64 in both containers (google's Int64List).
FEATURES = {
    "input_ids": ("int64", "T"),
    "input_mask": ("int64", "T"),
    "segment_ids": ("int64", "T"),
    "masked_lm_positions": ("int64", "P"),
    "masked_lm_ids": ("int64", "P"),
    "masked_lm_weights": ("float32", "P"),
    "next_sentence_labels": ("int64", 1),
}


DTYPES = {name: dtype for name, (dtype, _) in FEATURES.items()}


def feature_lengths(max_seq_length: int, max_predictions_per_seq: int) -> dict:
    """name -> (dtype, length) for the given sizes."""
    sizes = {"T": max_seq_length, "P": max_predictions_per_seq, 1: 1}
    return {name: (dtype, sizes[length]) for name, (dtype, length) in FEATURES.items()}


def record_lengths(record: dict) -> dict:
    """name -> (dtype, length) as one record shows them."""
    return {name: (dtype, len(record[name])) for name, dtype in DTYPES.items()}


def file_lengths(path: str) -> dict:
    """name -> (dtype, length) of a record file: from its manifest, else from its first record."""
    if os.path.isfile(manifest_path(path)):
        return {name: (spec["dtype"], spec["shape"][0]) for name, spec in read_manifest(path)["schema"].items()}
    first = next(iter_records(path), None)
    if first is None:
        raise UserInputError(f"{path}: holds no records")
    return record_lengths(first)


def manifest_path(path: str) -> str:
    return path + ".json"


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(path: str) -> dict:
    """The manifest of a record file; an error naming the file when it is absent or broken."""
    name = manifest_path(path)
    try:
        with open(name, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserInputError(f"{name}: no manifest beside the record file; make records with "
                             "tools/create_pretraining_data.py or pass the sizes explicitly") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{name}: not valid JSON ({err})") from None


def detect_format(path: str) -> str:
    """'mindrecord' when a MindRecord index (F.db) lies beside F, else 'tfrecord'."""
    return "mindrecord" if os.path.isfile(path + ".db") else "tfrecord"


# ---- writers -----------------------------------------------------------------------------------

class TFRecordWriter:
    """Rows of google's features -> one TFRecord file of tf.train.Example protos (encoded by
    mindtransformer/data/tfrecord.py, byte-identical to TensorFlow's deterministic encoding)."""

    def __init__(self, path: str, lengths: dict):
        self.path, self.count = path, 0
        self.dtypes = {name: dtype for name, (dtype, _) in lengths.items()}
        self._atomic = atomic_path(path)
        self._file = open(self._atomic.__enter__(), "wb")
        self._digest = hashlib.sha256()  # of the bytes as written: no second pass over the file for the manifest

    def write(self, arrays: dict, rows: range, framed: tuple = None) -> None:
        """Append the rows of `arrays`; or, given `framed` = (data, offsets) of a whole chunk from
        tfrecord.encode_records (made in a worker process, so the parent only writes; `arrays`
        may then be None), those rows of it."""
        if framed is None:
            from mindtransformer.data.tfrecord import encode_records

            framed = encode_records({name: np.asarray(arrays[name])[list(rows)] for name in self.dtypes}, self.dtypes)
            rows = range(len(rows))
        data, offsets = framed
        if rows.step == 1 and rows:  # a contiguous run (one shard): one slice
            part = memoryview(data)[offsets[rows.start]:offsets[rows.stop]]
        else:
            part = b"".join(data[offsets[row]:offsets[row + 1]] for row in rows)
        self._file.write(part)
        self._digest.update(part)
        self.count += len(rows)

    def sha256(self) -> str:
        """The hex SHA-256 of the file as written."""
        return self._digest.hexdigest()

    def close(self) -> None:
        self._file.close()
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        self._file.close()
        self._atomic.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)


class MindRecordWriter:
    """Rows of google's features -> one MindRecord file F (and its index F.db)."""

    def __init__(self, path: str, lengths: dict):
        from mindspore.mindrecord import FileWriter

        self.path, self.count = path, 0
        self.names = list(lengths)
        # MindRecord writes NAME and NAME.db itself and records NAME inside them: write both under
        # the final name in a hidden directory beside it, then move them out.
        self._dir = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.tmp")
        os.makedirs(self._dir, exist_ok=True)
        self._tmp = os.path.join(self._dir, os.path.basename(path))
        self._writer = FileWriter(self._tmp, shard_num=1, overwrite=True)
        # The 32 MB default page made 100 rows take 50 MB; a row here is a few KB.
        self._writer.set_page_size(1 << 22)
        self._writer.set_header_size(1 << 20)
        schema = {name: {"type": dtype, "shape": [-1]} for name, (dtype, _) in lengths.items()}
        self._writer.add_schema(schema, "mindtransformer records")
        self._layout = None  # [(blob field, dtype)] in the header's order, or False: see _blob_layout

    def sha256(self) -> str:
        """The hex SHA-256 of the data file (after close)."""
        return file_sha256(self.path)

    def write(self, arrays: dict, rows: range, framed: tuple = None) -> None:
        rows = list(rows)
        if not rows:
            return
        blobs = self._blobs(arrays, rows)
        if blobs is None:
            self._writer.write_raw_data([{name: arrays[name][row] for name in self.names} for row in rows])
        else:
            shard = self._writer._writer  # the same preparation as FileWriter.write_raw_data
            if not shard.is_open:
                shard.open(self._writer._paths, self._writer._overwrite)
            if not shard.get_shard_header():
                shard.set_shard_header(self._writer._header)
            shard._writer.write_raw_data({}, blobs, False, False)
        self.count += len(rows)

    def _blobs(self, arrays: dict, rows: list):
        """Each row's MindRecord blob, built at once for all rows, or None where this MindSpore's
        writer is not laid out as 2.10's.

        Why: FileWriter.write_raw_data checks every field of every row against the schema in
        Python and merges each row's blob field by field, asking the C++ header for the schema
        again each time: 8 s for the 28k instances of the enwiki excerpt, against 0.5 s to make
        them. The blob's layout is MindSpore's own (ShardWriter._merge_blob): per blob field, in
        the header's order, the value's byte count (8 bytes, big-endian) and the values in the
        schema's dtype. Our rows are fixed-length arrays (cast here to the schema's dtypes), so
        all blobs are one (N, bytes) table; MindSpore's C++ writer then writes them unvalidated."""
        if self._layout is None:  # decided at the first write
            self._layout = self._blob_layout()
        if not self._layout:
            return None
        pieces = []
        for field, dtype in self._layout:
            values = np.ascontiguousarray(np.asarray(arrays[field])[rows], dtype=dtype)  # (N, L)
            values = values.reshape(len(rows), -1).view(np.uint8)  # (N, L * itemsize)
            size = np.frombuffer(values.shape[1].to_bytes(8, "big"), dtype=np.uint8)
            pieces += [np.broadcast_to(size, (len(rows), 8)), values]
        table = np.concatenate(pieces, axis=1)  # (N, blob bytes)
        return [row.tobytes() for row in table]

    def _blob_layout(self):
        """[(blob field, dtype)] in the header's order when MindSpore's writer is laid out as
        2.10's and every feature is a blob field; else False (FileWriter.write_raw_data is used)."""
        shard = getattr(self._writer, "_writer", None)
        if not all(hasattr(self._writer, name) for name in ("_paths", "_overwrite", "_header")) or \
                not all(hasattr(shard, name) for name in ("is_open", "open", "get_shard_header", "set_shard_header")) \
                or not hasattr(getattr(shard, "_writer", None), "write_raw_data"):
            return False
        header = self._writer._header
        layout = [(field, header.schema[field]["type"]) for field in header.blob_fields]
        return layout if sorted(field for field, _ in layout) == sorted(self.names) else False

    def close(self) -> None:
        self._writer.commit()
        for name in (self._tmp + ".db", self._tmp):
            make_readable(name)
        os.replace(self._tmp + ".db", self.path + ".db")
        os.replace(self._tmp, self.path)  # last: the data file's presence means complete
        os.rmdir(self._dir)

    def abort(self) -> None:
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)


def open_writer(output_format: str, path: str, lengths: dict):
    if output_format == "tfrecord":
        return TFRecordWriter(path, lengths)
    if output_format == "mindrecord":
        return MindRecordWriter(path, lengths)
    raise UserInputError(f"--output_format={output_format}: use one of {', '.join(FORMATS)}")


def write_file(path: str, output_format: str, arrays: dict, lengths: dict, extra: dict) -> None:
    """Every row of `arrays` (name -> (N, length)) into one record file, then its manifest; an
    error leaves neither behind."""
    count = len(next(iter(arrays.values())))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    writer = open_writer(output_format, path, lengths)
    try:
        writer.write(arrays, range(count))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    write_manifest(path, output_format, count, lengths, extra)


def write_manifest(path: str, output_format: str, count: int, lengths: dict, extra: dict) -> None:
    manifest = {"format": output_format, "file": os.path.basename(path), "count": count,
                "schema": {name: {"dtype": dtype, "shape": [length]} for name, (dtype, length) in lengths.items()},
                **extra}
    atomic_write_text(manifest_path(path), json.dumps(manifest, indent=2) + "\n")


# ---- readers -----------------------------------------------------------------------------------

def iter_records(path: str, output_format: str = None, dtypes: dict = None) -> Iterator[dict]:
    """Every record of a file as {name: numpy array}, in file order; bad files -> UserInputError.
    `dtypes` (name -> dtype) is the schema expected, by default the pretraining one."""
    output_format = output_format or detect_format(path)
    dtypes = dtypes or DTYPES
    if not os.path.isfile(path):
        raise UserInputError(f"{path}: no such record file")
    if output_format == "mindrecord":
        yield from _iter_mindrecord(path, dtypes)
    else:
        yield from _iter_tfrecord(path, dtypes)


def _lacks(path: str, where: str, dtypes: dict, found) -> None:
    missing = [name for name in dtypes if name not in found]
    if missing:
        raise UserInputError(f"{path}: {where} lacks {', '.join(missing)}: not a record file of this kind "
                             f"(it has {', '.join(sorted(found))}); make it with this toolkit's tools")


def _iter_tfrecord(path: str, dtypes: dict, batch: int = 512) -> Iterator[dict]:
    from mindtransformer.utils.env import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    index = 0
    try:
        raw = tf.data.TFRecordDataset(path)
        first = next(iter(raw.take(1)), None)
        if first is None:
            return
        # The sizes come from the first record; the rest is parsed by TensorFlow's C++ op in
        # batches (per-record protobuf parsing in Python is ~17x slower once MindSpore, which
        # forces the pure-Python protobuf, has been imported).
        features = tf.train.Example.FromString(first.numpy()).features.feature
        _lacks(path, "record 0", dtypes, features)
        spec = {}
        for name, dtype in dtypes.items():
            values = features[name].int64_list.value if dtype == "int64" else features[name].float_list.value
            spec[name] = tf.io.FixedLenFeature([len(values)], tf.int64 if dtype == "int64" else tf.float32)
        for parsed in raw.batch(batch).map(lambda r: tf.io.parse_example(r, spec)).as_numpy_iterator():
            n = len(parsed["input_ids"])
            for row in range(n):
                yield {name: parsed[name][row] for name in dtypes}
            index += n
    except tf.errors.DataLossError as err:
        raise UserInputError(f"{path}: corrupt TFRecord after {index} records ({err.message.splitlines()[0]}); "
                             "the file is damaged or truncated: make it again") from None
    except tf.errors.InvalidArgumentError as err:
        raise UserInputError(f"{path}: record after {index} does not have the expected schema "
                             f"({err.message.splitlines()[0][:200]}); pass a file made by this toolkit's tools") from None


def _iter_mindrecord(path: str, dtypes: dict) -> Iterator[dict]:
    from mindspore.mindrecord import FileReader

    try:
        reader = FileReader(path)
    except Exception as err:  # noqa: BLE001  MindRecord raises RuntimeError/ValueError variously
        first = first_line(err)
        raise UserInputError(f"{path}: not a readable MindRecord file ({first}); make it again") from None
    try:
        fields = None
        for row in reader.get_next():
            if fields is None:
                _lacks(path, "the first record", dtypes, row)
                fields = True
            yield {name: np.asarray(row[name], dtype=dtype).reshape(-1) for name, dtype in dtypes.items()}
    finally:
        reader.close()
