/* The per-record loops of pretraining-record making, compiled (mindtransformer.data._records_c),
one source file per part below.

Optional: setup.py builds it when a C compiler is there; without it the same work runs in Python
and numpy (pretraining.py, tfrecord.py), more slowly, to the same bytes (the tests compare them).

WordTable: the chunk tokenizer's word cache. rows(text) splits text into BERT's words (runs of
ASCII letters and digits; any other character but a space, tab or CR alone; a line end is word
row 0) and gives each its row, numbering unseen words in order of appearance; an unseen word
that is a vocab entry comes with its id (WordPiece's first try), the others are WordPiece'd by
the caller.

pack_chunk: google's segment packing (create_instances_from_document) of a chunk's documents and
the instances' shuffle, drawing from Python's own Mersenne Twister (random.Random's state in,
its state out: the same draws as pretraining.pack_document, hence the same instances).

build_instances: a chunk's packed segment ranges -> the padded feature arrays, with google's
choice of the positions to mask (the random keys come from numpy, so both paths draw the same).

encode_examples: serialized tf.train.Example protobufs of fixed-length int64 / float32 features,
each optionally framed as a TFRecord (uint64 length, masked CRC-32C of it, data, masked CRC-32C
of the data). The bytes equal TensorFlow's SerializeToString(deterministic=True) with the
features in the order given (the caller sorts them by key).

Arrays travel through the buffer protocol, so building needs no numpy headers. */

#include "records.h"

static PyMethodDef methods[] = {
    {"encode_examples", encode_examples, METH_VARARGS,
     "encode_examples(features, rows, framed) -> (data, offsets): serialized tf.train.Examples of `rows` records, "
     "optionally TFRecord-framed. features: [(key bytes, is_float, (rows, L) int64/float32 array)] in key order; "
     "offsets: bytes of (rows + 1) int64, record i is data[offsets[i]:offsets[i + 1]]."},
    {"pack_chunk", pack_chunk, METH_VARARGS,
     "pack_chunk(starts, documents, max_seq_length, short_seq_prob, dupe_factor, state) -> (bytes of (N, 5) int64 "
     "packed rows, new state): google's packing and the instances' shuffle with random.Random's draws."},
    {"build_instances", build_instances, METH_VARARGS,
     "build_instances(ids, word_start, packed, keys, budget, whole_word, cls, sep, input_ids, segment_ids, input_mask, "
     "positions, labels, weights) -> total chosen: fills the given arrays (see the C source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_records_c", NULL, -1, methods};

PyMODINIT_FUNC PyInit__records_c(void) {
    crc_init();
    if (PyType_Ready(&WordTableType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&WordTableType);
    if (PyModule_AddObject(m, "WordTable", (PyObject *)&WordTableType) < 0) {
        Py_DECREF(&WordTableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
