"""Writing TFRecord files of `tf.train.Example`s without importing TensorFlow.

Why not `tf.io.TFRecordWriter` + `tf.train.Example`: importing TensorFlow takes 4-7 s on this
machine and building one Example in Python about 70 us, together more than the whole
instance-making of a corpus of 30k instances. The two formats involved are small and fixed:

- TFRecord framing: uint64 length, masked CRC-32C of the length, data, masked CRC-32C of the data
  (CRC-32C from `google-crc32c`, Google's C implementation).
- `tf.train.Example` protobuf for fixed-length int64 and float32 lists: nested length-delimited
  fields with packed values.

Every byte of a record is one "cell": a varint (tags, lengths, key characters and int64 values:
all fields but the float bytes, the uint64 length and the CRCs) or a raw byte. The cells of a
block of records form an (N, C) table whose layout is the same for every row; only the varint
widths differ. So a block is encoded at once with numpy: widths, 7-bit groups with continuation
bits, then one boolean compress gives the records back to back. Python runs once per record only
for the CRC.

The bytes equal `tf.train.Example(...).SerializeToString(deterministic=True)` (features in key
order), which the tests check against TensorFlow itself, and TensorFlow, google's readers and
`mindspore.dataset.TFRecordDataset` read the files. Reading stays with TensorFlow (`tf.data`),
which also verifies every CRC.

When the package was installed with a C compiler at hand, `_records_c.encode_examples` does the
same in one compiled pass per record (~20x faster than the numpy path, which stays as the
fallback and the reference the tests compare it with).
"""

from __future__ import annotations

import google_crc32c
import numpy as np

try:
    from mindtransformer.data import _records_c
except ImportError:  # built without a C compiler: the numpy encoder below
    _records_c = None

_MASK_DELTA = 0xA282EAD8
_BLOCK_ROWS = 4096  # records encoded together: keeps the (rows, cells, width) temporaries in cache


def _masked(crc: np.ndarray) -> np.ndarray:
    """TFRecord's masked CRC of (N,) uint64 CRC-32C values."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _varint_sizes(values: np.ndarray) -> np.ndarray:
    """Bytes of each value's varint: 1 + the number of 7-bit groups above the first."""
    values = np.asarray(values)
    sizes = np.ones(values.shape, dtype=np.uint8)
    top = int(values.max()) if values.size else 0
    for shift in range(7, 64, 7):
        if top < 1 << shift:
            break
        sizes += values >= np.array(1 << shift, dtype=values.dtype)
    return sizes


def _le_bytes(values: np.ndarray, count: int) -> np.ndarray:
    """(N,) unsigned -> (N, count) uint8 little-endian bytes."""
    values = np.asarray(values, dtype=np.uint64)
    return ((values[:, None] >> (np.uint64(8) * np.arange(count, dtype=np.uint64))) & np.uint64(0xFF)).astype(np.uint8)


def _varints(values: np.ndarray):
    """(N, L) non-negative ints -> a piece of the record: (N, L) uint8 when every value fits one
    byte (the usual case for masks, segment ids, positions, labels, tags and lengths); else
    (flat bytes of every row's varints back to back, bytes per row (N,))."""
    top = int(values.max()) if values.size else 0
    if top < 0x80:
        return values.astype(np.uint8)
    values = values.astype(np.uint32 if top < 1 << 32 else np.uint64)  # ids: half the bytes of uint64
    widths = _varint_sizes(values)
    rows = len(values)
    values, widths = values.ravel(), widths.ravel()  # row-major: the rows' varints in order
    ends = np.cumsum(widths, dtype=np.int64)
    first = ends - widths  # where each value's first byte goes
    flat = np.empty(int(ends[-1]), dtype=np.uint8)
    # Byte j of a varint: 7-bit group j, high bit set when more follow.
    flat[first] = (values.astype(np.uint8) & 0x7F) | ((widths > 1).view(np.uint8) << 7)
    wide = np.flatnonzero(widths > 1)
    for j in range(1, int(widths.max())):
        wide = wide[widths[wide] > j]
        group = (values[wide] >> (7 * j)).astype(np.uint8) & 0x7F
        flat[first[wide] + j] = group | ((widths[wide] > j + 1).view(np.uint8) << 7)
    return flat, widths.reshape(rows, -1).sum(axis=1, dtype=np.int64)


def _size(piece) -> np.ndarray:
    """Bytes per row (N,) of a piece."""
    return np.full(len(piece), piece.shape[1], dtype=np.int64) if isinstance(piece, np.ndarray) else piece[1]


def _encode_block(arrays: dict, names: list, dtypes: dict, framed: bool):
    """Records of one block of rows -> (flat uint8 bytes, record sizes (N,) int64).

    A record is built from pieces in order, each a fixed (N, k) byte table or a variable one
    (see _varints); the pieces are then scattered to their places in the records at once."""
    n = len(arrays[names[0]])
    pieces = []
    features_size = np.zeros(n, dtype=np.int64)

    def field(value):  # bytes of a length-delimited field's length prefix + its value of `value` bytes
        return _varint_sizes(np.asarray(value, dtype=np.uint64)).astype(np.int64) + value

    for name in names:
        key = name.encode()
        values = np.asarray(arrays[name]).reshape(n, -1)
        if dtypes[name] == "int64":
            if (values < 0).any():
                raise ValueError("negative int64 features are not supported by this encoder")
            payload, kind = _varints(values), 0x1A  # Feature.int64_list = 3
        else:
            payload, kind = np.ascontiguousarray(values, dtype="<f4").view(np.uint8), 0x12  # float_list = 2
        payload_size = _size(payload)
        value_list = 1 + field(payload_size)  # packed `value` = 1
        feature = 1 + field(value_list)
        entry = 1 + field(len(key)) + 1 + field(feature)  # map entry: key = 1, value = 2
        features_size += 1 + field(entry)  # Features.feature = 1
        pieces.append(_varints(np.column_stack([np.full(n, 0x0A), entry])))
        pieces.append(np.broadcast_to(np.frombuffer(b"\x0a" + bytes([len(key)]) + key + b"\x12", np.uint8),
                                      (n, len(key) + 3)))
        pieces.append(_varints(np.column_stack([feature, np.full(n, kind), value_list, np.full(n, 0x0A),
                                                payload_size])))
        pieces.append(payload)
    example_size = 1 + field(features_size)
    head = [_varints(np.column_stack([np.full(n, 0x0A), features_size]))]  # Example.features = 1
    if framed:
        head = [np.hstack([_le_bytes(example_size, 8), np.zeros((n, 4), np.uint8)])] + head  # length, its CRC
        pieces.append(np.zeros((n, 4), np.uint8))  # the data's CRC
    pieces = head + pieces
    sizes = np.column_stack([_size(piece) for piece in pieces])  # (N, pieces)
    record_sizes = sizes.sum(axis=1)
    ends = np.cumsum(record_sizes)
    piece_starts = ends[:, None] - record_sizes[:, None] + np.cumsum(sizes, axis=1) - sizes  # (N, pieces)
    flat = np.empty(int(ends[-1]), dtype=np.uint8)
    for index, piece in enumerate(pieces):
        if isinstance(piece, np.ndarray):
            flat[piece_starts[:, index, None] + np.arange(piece.shape[1])] = piece
        else:
            data, row_sizes = piece
            row_first = np.cumsum(row_sizes) - row_sizes
            flat[np.repeat(piece_starts[:, index] - row_first, row_sizes) + np.arange(len(data))] = data
    if framed:
        starts = ends - record_sizes
        data = flat.tobytes()
        crc = google_crc32c.value
        lengths, length_index = np.unique(example_size, return_inverse=True)  # few distinct lengths
        length_crc = _masked(np.array([crc(int(v).to_bytes(8, "little")) for v in lengths], dtype=np.uint64))
        data_crc = _masked(np.array([crc(data[s + 12:e - 4]) for s, e in zip(starts.tolist(), ends.tolist())],
                                    dtype=np.uint64))
        four = np.arange(4)
        flat[(starts + 8)[:, None] + four] = _le_bytes(length_crc[length_index], 4)
        flat[(ends - 4)[:, None] + four] = _le_bytes(data_crc, 4)
    return flat, record_sizes


def encode_records(arrays: dict, dtypes: dict, framed: bool = True, compiled: bool = True):
    """Serialized `tf.train.Example`s of every row of {name: (N, L) array}, back to back:
    (data bytes, offsets (N + 1,) int64); record i is data[offsets[i]:offsets[i + 1]].

    dtypes: name -> "int64" | "float32"; features in key order (deterministic serialization).
    framed: each record as a TFRecord (length, CRCs), ready to append to a file.
    compiled: use the C encoder when it was built (False: the numpy one, for the tests)."""
    names = sorted(dtypes)
    n = len(arrays[names[0]])
    if compiled and _records_c is not None:
        features = [(name.encode(), dtypes[name] != "int64",
                     np.ascontiguousarray(np.asarray(arrays[name]).reshape(n, -1),
                                          dtype=np.int64 if dtypes[name] == "int64" else np.float32))
                    for name in names]
        data, offsets = _records_c.encode_examples(features, n, framed)
        return data, np.frombuffer(offsets, dtype=np.int64)
    parts, sizes = [], []
    for first in range(0, n, _BLOCK_ROWS):
        block = {name: np.asarray(arrays[name])[first:first + _BLOCK_ROWS] for name in names}
        flat, record_sizes = _encode_block(block, names, dtypes, framed)
        parts.append(flat)
        sizes.append(record_sizes)
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(sizes))]) if n else np.zeros(1, np.int64)
    return b"".join(part.tobytes() for part in parts), offsets
