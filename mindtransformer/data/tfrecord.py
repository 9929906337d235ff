"""Writing TFRecord files of `tf.train.Example`s without importing TensorFlow.

Why not `tf.io.TFRecordWriter` + `tf.train.Example`: importing TensorFlow takes 4-7 s on this
machine and building one Example in Python about 70 us, together more than the whole
instance-making of a corpus of 30k instances. The two formats involved are small and fixed:

- TFRecord framing: uint64 length, masked CRC-32C of the length, data, masked CRC-32C of the data
  (CRC-32C from `google-crc32c`, Google's C implementation).
- `tf.train.Example` protobuf for fixed-length int64 and float32 lists: nested length-delimited
  fields with packed values. Values are varint-encoded for a whole chunk at once with numpy.

The bytes equal `tf.train.Example(...).SerializeToString(deterministic=True)` (features in key
order), which the tests check against TensorFlow itself, and TensorFlow, google's readers and
`mindspore.dataset.TFRecordDataset` read the files. Reading stays with TensorFlow (`tf.data`),
which also verifies every CRC.
"""

from __future__ import annotations

import struct

import google_crc32c
import numpy as np

_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF)


def frame(record: bytes) -> bytes:
    """One TFRecord: length, its CRC, the data, its CRC."""
    length = struct.pack("<Q", len(record))
    return length + masked_crc(length) + record + masked_crc(record)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [_encode_varint(v) for v in range(1 << 14)]  # every length an Example here can have


def _varint(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < 16384 else _encode_varint(value)


def _packed_varints(values: np.ndarray):
    """(N, L) non-negative int64 -> (flat bytes of every row's varints, row lengths in bytes (N,))."""
    if (values < 0).any():
        raise ValueError("negative int64 features are not supported by this encoder")
    v = values.astype(np.uint64)
    # Bytes per value: 1 + the number of 7-bit groups above the first.
    sizes = np.ones(v.shape, dtype=np.int64)
    for shift in range(7, 64, 7):
        sizes += v >= (np.uint64(1) << np.uint64(shift))
    width = int(sizes.max()) if v.size else 1
    groups = np.stack([(v >> np.uint64(7 * j)) & np.uint64(0x7F) for j in range(width)], axis=-1).astype(np.uint8)
    j = np.arange(width)
    groups |= np.where(j < sizes[..., None] - 1, 0x80, 0).astype(np.uint8)  # continuation bits
    flat = groups[j < sizes[..., None]]  # (sum of sizes,) row-major: rows, values, groups in order
    return flat.tobytes(), sizes.sum(axis=1)


def _float_rows(values: np.ndarray):
    v = np.ascontiguousarray(values, dtype="<f4")
    return v.tobytes(), np.full(len(v), v.shape[1] * 4, dtype=np.int64)


def encode_examples(arrays: dict, dtypes: dict, rows) -> list:
    """Serialized `tf.train.Example`s for the given rows of {name: (N, L) array}.

    dtypes: name -> "int64" | "float32". Features are written in key order (deterministic)."""
    names = sorted(dtypes)
    rows = np.asarray(list(rows), dtype=np.int64)
    parts = []  # per feature: (key header bytes, flat value bytes, row offsets, row sizes, kind tag)
    for name in names:
        values = np.asarray(arrays[name])[rows].reshape(len(rows), -1)
        if dtypes[name] == "int64":
            flat, sizes = _packed_varints(values)
            kind = 0x1A  # Feature.int64_list = 3, length-delimited
        else:
            flat, sizes = _float_rows(values)
            kind = 0x12  # Feature.float_list = 2
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        key = name.encode()
        parts.append((b"\x0a" + _varint(len(key)) + key, memoryview(flat), offsets.tolist(), sizes.tolist(), kind))
    out = []
    for i in range(len(rows)):
        entries = []
        for key_header, flat, offsets, sizes, kind in parts:
            size = sizes[i]
            value_list = b"\x0a" + _varint(size) + flat[offsets[i]:offsets[i] + size]  # the packed `value`
            feature = bytes([kind]) + _varint(len(value_list)) + value_list
            entry = key_header + b"\x12" + _varint(len(feature)) + feature  # map entry: key 1, value 2
            entries.append(b"\x0a" + _varint(len(entry)) + entry)  # Features.feature = 1
        features = b"".join(entries)
        out.append(b"\x0a" + _varint(len(features)) + features)  # Example.features = 1
    return out


def encode_framed(arrays: dict, dtypes: dict, rows) -> list:
    """encode_examples, each already framed as a TFRecord (what a writer appends to its file)."""
    return [frame(example) for example in encode_examples(arrays, dtypes, rows)]
