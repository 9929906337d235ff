/* The per-record loops of pretraining-record making, compiled (mindtransformer.data._records_c).

Optional: setup.py builds it when a C compiler is there; without it the same functions run in
numpy (tfrecord.py), more slowly, to the same bytes (the tests compare the two).

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

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- CRC-32C (Castagnoli), slicing by 8 ------------------------------------------------------ */

static uint32_t crc_table[8][256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            crc_table[t][n] = (crc_table[t - 1][n] >> 8) ^ crc_table[0][crc_table[t - 1][n] & 0xFF];
}

static uint32_t crc32c(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    while (n && ((uintptr_t)p & 7)) { c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8); n--; }
    while (n >= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        lo = __builtin_bswap32(lo);
        hi = __builtin_bswap32(hi);
#endif
        lo ^= c;
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^ crc_table[5][(lo >> 16) & 0xFF] ^
            crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
            crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

#if defined(__x86_64__) && defined(__GNUC__)
/* The same CRC with SSE 4.2's crc32 instruction (~5x the table's speed), used when the CPU has it. */
#include <nmmintrin.h>
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(const uint8_t *p, size_t n) {
    uint64_t c = 0xFFFFFFFFu;
    for (; n && ((uintptr_t)p & 7); n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = _mm_crc32_u64(c, word);
    }
    for (; n; n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return (uint32_t)c ^ 0xFFFFFFFFu;
}
static int has_sse42;
#define CRC32C(p, n) (has_sse42 ? crc32c_sse42(p, n) : crc32c(p, n))
#else
#define CRC32C(p, n) crc32c(p, n)
#endif

static uint32_t masked_crc(const uint8_t *p, size_t n) {
    uint32_t c = CRC32C(p, n);
    return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

/* ---- protobuf pieces ------------------------------------------------------------------------- */

static inline size_t varint_size(uint64_t v) {
    if (v < 0x80) return 1;  /* masks, segment ids, positions, labels: one byte */
    size_t n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}

static inline uint8_t *put_varint(uint8_t *out, uint64_t v) {
    if (v < 0x80) { *out++ = (uint8_t)v; return out; }
    while (v >= 0x80) { *out++ = (uint8_t)(v | 0x80); v >>= 7; }
    *out++ = (uint8_t)v;
    return out;
}

static inline uint8_t *put_le(uint8_t *out, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) out[i] = (uint8_t)(v >> (8 * i));
    return out + bytes;
}

static inline size_t field_size(size_t payload) { return varint_size(payload) + payload; }  /* length prefix + payload */

typedef struct {
    Py_buffer view;        /* (N, L) C-contiguous int64 ("q"/"l") or float32 ("f") */
    const char *key;
    Py_ssize_t key_len;
    int is_float;
    Py_ssize_t length;     /* L values per record */
} Feature;

/* Bytes of one feature's packed payload in record `row` (all int64 values are >= 0: checked). */
static size_t payload_size(const Feature *f, Py_ssize_t row) {
    if (f->is_float) return (size_t)f->length * 4;
    const int64_t *v = (const int64_t *)f->view.buf + row * f->length;
    uint64_t any = 0;
    for (Py_ssize_t i = 0; i < f->length; i++) any |= (uint64_t)v[i];
    if (any < 0x80) return (size_t)f->length;  /* masks, segments, positions, labels: a byte each */
    size_t n = 0;
    if (any < 1u << 21)  /* token ids: 1-3 bytes each, counted without branches */
        for (Py_ssize_t i = 0; i < f->length; i++) n += 1 + (v[i] >= 1 << 7) + (v[i] >= 1 << 14);
    else
        for (Py_ssize_t i = 0; i < f->length; i++) n += varint_size((uint64_t)v[i]);
    return n;
}

/* Bytes of the map entry's fields (key, value) given the payload size; the sizes of its parts
   are returned through `feature` and `value_list`. */
static size_t entry_size(const Feature *f, size_t payload, size_t *feature, size_t *value_list) {
    *value_list = 1 + field_size(payload);          /* packed value = 1 */
    *feature = 1 + field_size(*value_list);          /* int64_list = 3 / float_list = 2 */
    return 1 + field_size((size_t)f->key_len) + 1 + field_size(*feature);  /* key = 1, value = 2 */
}

/* `payload` bytes of varints: one byte each when there are as many bytes as values. */
static uint8_t *put_payload(uint8_t *out, const Feature *f, Py_ssize_t row, size_t payload) {
    if (f->is_float) {
        const float *v = (const float *)f->view.buf + row * f->length;
        for (Py_ssize_t i = 0; i < f->length; i++) {
            uint32_t bits;
            memcpy(&bits, &v[i], 4);
            out = put_le(out, bits, 4);
        }
        return out;
    }
    const int64_t *v = (const int64_t *)f->view.buf + row * f->length;
    if (payload == (size_t)f->length) {
        for (Py_ssize_t i = 0; i < f->length; i++) out[i] = (uint8_t)v[i];
        return out + f->length;
    }
    uint64_t any = 0;
    for (Py_ssize_t i = 0; i < f->length; i++) any |= (uint64_t)v[i];
    if (any < 1u << 21) {
        /* Each value's three bytes written whatever its width (the buffer has slack after its
           end), then the cursor moves by the width: no branch per value. */
        for (Py_ssize_t i = 0; i < f->length; i++) {
            uint32_t x = (uint32_t)v[i], wide = x >= 1 << 7, wider = x >= 1 << 14;
            out[0] = (uint8_t)((x & 0x7F) | wide << 7);
            out[1] = (uint8_t)(((x >> 7) & 0x7F) | wider << 7);
            out[2] = (uint8_t)(x >> 14);
            out += 1 + wide + wider;
        }
        return out;
    }
    for (Py_ssize_t i = 0; i < f->length; i++) out = put_varint(out, (uint64_t)v[i]);
    return out;
}

static void release(Feature *features, Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < count; i++) PyBuffer_Release(&features[i].view);
    PyMem_Free(features);
}

/* encode_examples(features, rows, framed) -> (bytes, offsets as bytes of (rows + 1) int64).
   features: sequence of (key: bytes, is_float: bool, array with the buffer protocol). */
static PyObject *encode_examples(PyObject *self, PyObject *args) {
    PyObject *spec;
    Py_ssize_t rows;
    int framed;
    if (!PyArg_ParseTuple(args, "Onp", &spec, &rows, &framed)) return NULL;
    PyObject *seq = PySequence_Fast(spec, "features must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    Feature *features = PyMem_Calloc(count ? count : 1, sizeof(Feature));
    if (!features) { Py_DECREF(seq); return PyErr_NoMemory(); }
    Py_ssize_t held = 0;
    PyObject *result = NULL, *data = NULL, *offsets = NULL;
    size_t *sizes = NULL;  /* (rows,): each record's Features message size */
    size_t *payloads = NULL;  /* (rows, features): each feature's packed payload size */
    for (; held < count; held++) {
        Feature *f = &features[held];
        PyObject *array;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, held), "y#pO", &f->key, &f->key_len, &f->is_float, &array))
            goto done;
        if (PyObject_GetBuffer(array, &f->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto done;
        const char *format = f->view.format ? f->view.format : "B";
        if (*format == '<' || *format == '=' || *format == '@') format++;
        int ok = f->is_float ? (strcmp(format, "f") == 0 && f->view.itemsize == 4)
                             : ((strcmp(format, "q") == 0 || strcmp(format, "l") == 0) && f->view.itemsize == 8);
        if (!ok || f->view.ndim != 2 || f->view.shape[0] != rows || f->view.shape[1] < 1) {
            PyBuffer_Release(&f->view);
            PyErr_Format(PyExc_ValueError, "feature %s: expected a C-contiguous (%zd, L >= 1) %s array", f->key, rows,
                         f->is_float ? "float32" : "int64");
            goto done;
        }
        f->length = f->view.shape[1];
        if (!f->is_float) {
            const int64_t *v = f->view.buf;
            for (Py_ssize_t i = 0; i < rows * f->length; i++)
                if (v[i] < 0) {
                    held++;
                    PyErr_SetString(PyExc_ValueError, "negative int64 features are not supported by this encoder");
                    goto done;
                }
        }
    }
    /* Pass 1: every record's size. Pass 2: the bytes. */
    sizes = PyMem_Malloc((rows ? rows : 1) * sizeof(size_t));
    payloads = PyMem_Malloc((rows * count ? rows * count : 1) * sizeof(size_t));
    offsets = PyBytes_FromStringAndSize(NULL, (rows + 1) * 8);
    if (!sizes || !payloads || !offsets) { PyErr_NoMemory(); goto done; }
    int64_t *offset = (int64_t *)PyBytes_AS_STRING(offsets);
    offset[0] = 0;
    for (Py_ssize_t r = 0; r < rows; r++) {
        size_t features_size = 0, feature, value_list;
        for (Py_ssize_t i = 0; i < count; i++) {
            size_t payload = payloads[r * count + i] = payload_size(&features[i], r);
            features_size += 1 + field_size(entry_size(&features[i], payload, &feature, &value_list));
        }
        sizes[r] = features_size;
        offset[r + 1] = offset[r] + (int64_t)(1 + field_size(features_size)) + (framed ? 16 : 0);  /* Example.features = 1 */
    }
    data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)offset[rows] + 2);  /* + put_payload's slack */
    if (!data) goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(data);
    for (Py_ssize_t r = 0; r < rows; r++) {
        size_t example_size = 1 + field_size(sizes[r]);
        uint8_t *record = out;
        if (framed) {
            out = put_le(out, example_size, 8);
            out = put_le(out, masked_crc(record, 8), 4);
        }
        uint8_t *example = out;
        *out++ = 0x0A;  /* Example.features = 1 */
        out = put_varint(out, sizes[r]);
        for (Py_ssize_t i = 0; i < count; i++) {
            const Feature *f = &features[i];
            size_t payload = payloads[r * count + i], feature, value_list;
            size_t entry = entry_size(f, payload, &feature, &value_list);
            *out++ = 0x0A;  /* Features.feature = 1: a map entry */
            out = put_varint(out, entry);
            *out++ = 0x0A;  /* key = 1 */
            out = put_varint(out, (uint64_t)f->key_len);
            memcpy(out, f->key, (size_t)f->key_len);
            out += f->key_len;
            *out++ = 0x12;  /* value = 2 */
            out = put_varint(out, feature);
            *out++ = f->is_float ? 0x12 : 0x1A;  /* float_list = 2, int64_list = 3 */
            out = put_varint(out, value_list);
            *out++ = 0x0A;  /* packed value = 1 */
            out = put_varint(out, payload);
            out = put_payload(out, f, r, payload);
        }
        if (framed) out = put_le(out, masked_crc(example, example_size), 4);
    }
    if (_PyBytes_Resize(&data, (Py_ssize_t)offset[rows]) < 0) goto done;
    result = PyTuple_Pack(2, data, offsets);
done:
    Py_XDECREF(data);
    Py_XDECREF(offsets);
    PyMem_Free(sizes);
    PyMem_Free(payloads);
    release(features, held);
    Py_DECREF(seq);
    return result;
}

/* ---- instances: padded arrays and the masked-LM choice -------------------------------------- */

/* A buffer of an expected element format and shape; writable when asked. Returns 0 or -1 (error set). */
static int get_array(PyObject *object, Py_buffer *view, const char *name, const char *formats, Py_ssize_t itemsize,
                     int ndim, Py_ssize_t rows, Py_ssize_t cols, int writable) {
    if (PyObject_GetBuffer(object, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    const char *format = view->format ? view->format : "B";
    if (*format == '<' || *format == '=' || *format == '@') format++;
    int ok = view->itemsize == itemsize && strlen(format) == 1 && strchr(formats, *format) && view->ndim == ndim &&
             (rows < 0 || view->shape[0] == rows) && (ndim < 2 || cols < 0 || view->shape[1] == cols);
    if (!ok) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s: wrong dtype or shape", name);
        return -1;
    }
    return 0;
}

typedef struct { double key; int32_t word; } Ranked;

/* Binary heaps on `key`: the largest first (sift_down_max) or the smallest (sift_down_min). */
#define SIFT_DOWN(name, before)                                                          \
    static inline void name(Ranked *heap, Py_ssize_t size, Py_ssize_t i) {               \
        Ranked item = heap[i];                                                           \
        for (Py_ssize_t child; (child = 2 * i + 1) < size; i = child) {                  \
            if (child + 1 < size && before(heap[child + 1].key, heap[child].key)) child++; \
            if (!before(heap[child].key, item.key)) break;                               \
            heap[i] = heap[child];                                                       \
        }                                                                                \
        heap[i] = item;                                                                  \
    }
#define GREATER(a, b) ((a) > (b))
#define LESS(a, b) ((a) < (b))
SIFT_DOWN(sift_down_max, GREATER)
SIFT_DOWN(sift_down_min, LESS)

/* build_instances(ids, word_start, packed, keys, budget, whole_word, cls, sep,
                   input_ids, segment_ids, input_mask, positions, labels, weights) -> total chosen

   Per instance r with packed[r] = (a_begin, a_end, b_begin, b_end, label) token ranges of the
   chunk's ids (K,) int32: input_ids (N, T) = [CLS] A [SEP] B [SEP] 0..., segment_ids and input_mask
   (N, T) int64. The candidates are A's and B's tokens; words are single candidates, or with
   whole_word runs that start at a candidate whose word_start (K,) bool is set (the first candidate
   always starts one, as in google's loop). Word j of row r has the random key keys[r, j] (N, W);
   google's greedy takes the words in ascending key order while the tokens taken plus the word's
   length stay within budget[r], skipping a word that does not fit. The taken positions, ascending,
   fill positions / labels (the original ids) (N, P) int64 and weights (N, P) float32, 0-padded.
   input_ids are left unmasked: the 80/10/10 replacement needs draws made after this count. */
static PyObject *build_instances(PyObject *self, PyObject *args) {
    PyObject *o[14];
    int whole_word;
    long long cls, sep;
    if (!PyArg_ParseTuple(args, "OOOOOpLLOOOOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &whole_word, &cls, &sep,
                          &o[8], &o[9], &o[10], &o[11], &o[12], &o[13]))
        return NULL;
    Py_buffer v[14];
    int held[14] = {0};
    PyObject *result = NULL;
    Ranked *heap = NULL;
    int32_t *word_len = NULL, *word_first = NULL;
#define GET(i, name, formats, size, ndim, rows, cols, w) \
    if (get_array(o[i], &v[i], name, formats, size, ndim, rows, cols, w) < 0) goto done; \
    held[i] = 1;
    GET(0, "ids", "i", 4, 1, -1, -1, 0)
    Py_ssize_t tokens = v[0].shape[0];
    GET(1, "word_start", "?", 1, 1, tokens, -1, 0)
    GET(2, "packed", "ql", 8, 2, -1, 5, 0)
    Py_ssize_t n = v[2].shape[0];
    GET(3, "keys", "d", 8, 2, n, -1, 0)
    Py_ssize_t w = v[3].shape[1];
    GET(4, "budget", "ql", 8, 1, n, -1, 0)
    GET(8, "input_ids", "ql", 8, 2, n, -1, 1)
    Py_ssize_t t = v[8].shape[1];
    GET(9, "segment_ids", "ql", 8, 2, n, t, 1)
    GET(10, "input_mask", "ql", 8, 2, n, t, 1)
    GET(11, "positions", "ql", 8, 2, n, -1, 1)
    Py_ssize_t p = v[11].shape[1];
    GET(12, "labels", "ql", 8, 2, n, p, 1)
    GET(13, "weights", "f", 4, 2, n, p, 1)
#undef GET
    const int32_t *ids = v[0].buf;
    const uint8_t *word_start = v[1].buf;
    const int64_t *packed = v[2].buf;
    const double *keys = v[3].buf;
    const int64_t *budget = v[4].buf;
    heap = PyMem_Malloc((t + 1) * sizeof(Ranked));
    word_len = PyMem_Malloc((t + 1) * sizeof(int32_t));
    word_first = PyMem_Malloc((t + 1) * sizeof(int32_t));
    if (!heap || !word_len || !word_first) { PyErr_NoMemory(); goto done; }
    long long total = 0;
    for (Py_ssize_t r = 0; r < n; r++) {
        const int64_t *range = packed + 5 * r;
        int64_t a0 = range[0], len_a = range[1] - range[0], b0 = range[2], len_b = range[3] - range[2];
        int64_t length = len_a + len_b + 3;
        if (len_a < 1 || len_b < 1 || length > t || a0 < 0 || b0 < 0 || range[1] > tokens || range[3] > tokens) {
            PyErr_Format(PyExc_ValueError, "packed[%zd]: ranges outside the chunk or longer than %zd", r, t);
            goto done;
        }
        int64_t *row_ids = (int64_t *)v[8].buf + r * t, *segment = (int64_t *)v[9].buf + r * t;
        int64_t *mask = (int64_t *)v[10].buf + r * t;
        row_ids[0] = cls;
        for (int64_t i = 0; i < len_a; i++) row_ids[1 + i] = ids[a0 + i];
        row_ids[len_a + 1] = sep;
        for (int64_t i = 0; i < len_b; i++) row_ids[len_a + 2 + i] = ids[b0 + i];
        row_ids[length - 1] = sep;
        for (int64_t i = length; i < t; i++) row_ids[i] = 0;
        /* segment: 0 over [CLS] A [SEP], 1 over B [SEP], 0 over the padding; mask: 1 up to the length. */
        for (int64_t i = 0; i < len_a + 2; i++) segment[i] = 0;
        for (int64_t i = len_a + 2; i < length; i++) segment[i] = 1;
        for (int64_t i = length; i < t; i++) segment[i] = 0;
        for (int64_t i = 0; i < length; i++) mask[i] = 1;
        for (int64_t i = length; i < t; i++) mask[i] = 0;
        /* Words over the candidates c = 0 .. len_a + len_b - 1 (position c + 1 in A, c + 2 in B). */
        int64_t candidates = len_a + len_b, words = 0, limit = budget[r];
        if (limit > p) {
            PyErr_Format(PyExc_ValueError, "budget[%zd] = %lld exceeds the %zd prediction slots", r, (long long)limit, p);
            goto done;
        }
        if (whole_word) {
            for (int64_t c = 0; c < candidates; c++) {
                int64_t token = c < len_a ? a0 + c : b0 + c - len_a;
                if (c == 0 || word_start[token]) { word_first[words] = (int32_t)c; word_len[words++] = 0; }
                word_len[words - 1]++;
            }
        } else {
            words = candidates;
        }
        if (words > w) {
            PyErr_Format(PyExc_ValueError, "keys: row %zd has %lld words, keys only %zd", r, (long long)words, w);
            goto done;
        }
        const double *row_keys = keys + r * w;
        int64_t *row_positions = (int64_t *)v[11].buf + r * p, *row_labels = (int64_t *)v[12].buf + r * p;
        float *row_weights = (float *)v[13].buf + r * p;
        Py_ssize_t slot = 0;
        if (!whole_word) {
            /* Every word is one token: the min(budget, words) smallest keys, through a max-heap of them,
               then their candidates in ascending order (insertion sort of at most P). */
            /* The keys are uniform in [0, 1): the smallest `limit` of `words` lie below about limit / words.
               Gather those under 2.5x that bound without branching; when fewer than `limit` are there
               (rare), take every word. Either way the heap below picks the same smallest keys. */
            double bound = 2.5 * (double)limit / (double)words;
            int64_t m = 0;
            for (int64_t j = 0; j < words; j++) {
                word_first[m] = (int32_t)j;
                m += row_keys[j] < bound;
            }
            if (m < limit) {
                for (int64_t j = 0; j < words; j++) word_first[j] = (int32_t)j;
                m = words;
            }
            Py_ssize_t size = 0;
            for (int64_t q = 0; q < m; q++) {
                int64_t j = word_first[q];
                if (size < limit) {
                    heap[size].key = row_keys[j];
                    heap[size].word = (int32_t)j;
                    for (Py_ssize_t i = size++; i > 0 && heap[(i - 1) / 2].key < heap[i].key; i = (i - 1) / 2) {
                        Ranked tmp = heap[i]; heap[i] = heap[(i - 1) / 2]; heap[(i - 1) / 2] = tmp;
                    }
                } else if (row_keys[j] < heap[0].key) {
                    heap[0].key = row_keys[j];
                    heap[0].word = (int32_t)j;
                    sift_down_max(heap, size, 0);
                }
            }
            for (Py_ssize_t i = 0; i < size; i++) {
                int64_t c = heap[i].word, k = i;
                for (; k > 0 && row_positions[k - 1] > c; k--) row_positions[k] = row_positions[k - 1];
                row_positions[k] = c;
            }
            for (slot = 0; slot < size; slot++) {
                int64_t c = row_positions[slot];
                row_positions[slot] = c < len_a ? c + 1 : c + 2;
            }
        } else {
            /* Ascending keys through a min-heap; a word is taken (its length negated) when it fits. */
            for (int64_t j = 0; j < words; j++) { heap[j].key = row_keys[j]; heap[j].word = (int32_t)j; }
            for (Py_ssize_t i = words / 2 - 1; i >= 0; i--) sift_down_min(heap, words, i);
            int64_t count = 0;
            for (Py_ssize_t size = words; size && count < limit;) {
                int32_t j = heap[0].word;
                heap[0] = heap[--size];
                sift_down_min(heap, size, 0);
                if (count + word_len[j] <= limit) { count += word_len[j]; word_len[j] = -word_len[j]; }
            }
            for (int64_t j = 0; j < words; j++)
                for (int64_t c = word_first[j]; c < word_first[j] - word_len[j] && word_len[j] < 0; c++)
                    row_positions[slot++] = c < len_a ? c + 1 : c + 2;
        }
        for (Py_ssize_t i = 0; i < slot; i++) {
            row_labels[i] = row_ids[row_positions[i]];
            row_weights[i] = 1.0f;
        }
        total += slot;
        for (; slot < p; slot++) { row_positions[slot] = 0; row_labels[slot] = 0; row_weights[slot] = 0.0f; }
    }
    result = PyLong_FromLongLong(total);
done:
    for (int i = 0; i < 14; i++)
        if (held[i]) PyBuffer_Release(&v[i]);
    PyMem_Free(heap);
    PyMem_Free(word_len);
    PyMem_Free(word_first);
    return result;
}

/* ---- packing, with CPython's random.Random --------------------------------------------------- */

/* MT19937 exactly as CPython's _randommodule.c: genrand_uint32, random(), getrandbits(). */
typedef struct { uint32_t state[624]; int index; } Twister;

static uint32_t genrand_uint32(Twister *mt) {
    static const uint32_t mag01[2] = {0x0u, 0x9908b0dfu};
    uint32_t y, *s = mt->state;
    if (mt->index >= 624) {
        int kk;
        for (kk = 0; kk < 624 - 397; kk++) {
            y = (s[kk] & 0x80000000u) | (s[kk + 1] & 0x7fffffffu);
            s[kk] = s[kk + 397] ^ (y >> 1) ^ mag01[y & 1];
        }
        for (; kk < 623; kk++) {
            y = (s[kk] & 0x80000000u) | (s[kk + 1] & 0x7fffffffu);
            s[kk] = s[kk + (397 - 624)] ^ (y >> 1) ^ mag01[y & 1];
        }
        y = (s[623] & 0x80000000u) | (s[0] & 0x7fffffffu);
        s[623] = s[396] ^ (y >> 1) ^ mag01[y & 1];
        mt->index = 0;
    }
    y = s[mt->index++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

static double mt_random(Twister *mt) {  /* random.random(): 53 bits */
    uint32_t a = genrand_uint32(mt) >> 5, b = genrand_uint32(mt) >> 6;
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

static int64_t mt_randint(Twister *mt, int64_t low, int64_t high) {  /* pretraining._randint */
    return low + (int64_t)(mt_random(mt) * (double)(high - low + 1));
}

static int64_t mt_bit_count(Twister *mt, int64_t k) {  /* random.getrandbits(k).bit_count() */
    int64_t bits = 0;
    for (; k > 0; k -= 32) {  /* 32-bit words from the least significant; the last one's top bits */
        uint32_t r = genrand_uint32(mt);
        if (k < 32) r >>= 32 - k;
        bits += __builtin_popcount(r);
    }
    return bits;
}

static uint64_t mt_below(Twister *mt, uint64_t n) {  /* random._randbelow_with_getrandbits(n), n < 2^32 */
    int k = 0;
    while (k < 64 && (n >> k)) k++;  /* n.bit_length() */
    uint64_t r;
    do r = genrand_uint32(mt) >> (32 - k); while (r >= n);
    return r;
}

static int state_in(Twister *mt, PyObject *state) {  /* from random.Random.getstate()[1] */
    PyObject *seq = PySequence_Fast(state, "state must be a sequence");
    if (!seq) return -1;
    if (PySequence_Fast_GET_SIZE(seq) != 625) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "state: expected random.Random.getstate()[1] (625 integers)");
        return -1;
    }
    for (int i = 0; i < 625; i++) {
        unsigned long value = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(seq, i));
        if (value == (unsigned long)-1 && PyErr_Occurred()) { Py_DECREF(seq); return -1; }
        if (i < 624) mt->state[i] = (uint32_t)value; else mt->index = (int)value;
    }
    Py_DECREF(seq);
    if (mt->index < 0 || mt->index > 624) { PyErr_SetString(PyExc_ValueError, "state: bad index"); return -1; }
    return 0;
}

static PyObject *state_out(const Twister *mt) {
    PyObject *state = PyTuple_New(625);
    if (!state) return NULL;
    for (int i = 0; i < 625; i++) {
        PyObject *value = PyLong_FromUnsignedLong(i < 624 ? mt->state[i] : (unsigned long)mt->index);
        if (!value) { Py_DECREF(state); return NULL; }
        PyTuple_SET_ITEM(state, i, value);
    }
    return state;
}

/* bisect.bisect_left(a, x, lo, hi) */
static int64_t bisect_left(const int64_t *a, int64_t x, int64_t lo, int64_t hi) {
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (a[mid] < x) lo = mid + 1; else hi = mid;
    }
    return lo;
}

typedef struct { int64_t *rows; Py_ssize_t count, capacity; } Packed;  /* (count, 5) */

static int packed_append(Packed *out, int64_t a0, int64_t a1, int64_t b0, int64_t b1, int64_t label) {
    if (out->count == out->capacity) {
        Py_ssize_t capacity = out->capacity ? out->capacity * 2 : 4096;
        int64_t *rows = PyMem_Realloc(out->rows, capacity * 5 * sizeof(int64_t));
        if (!rows) { PyErr_NoMemory(); return -1; }
        out->rows = rows;
        out->capacity = capacity;
    }
    int64_t *row = out->rows + 5 * out->count++;
    row[0] = a0; row[1] = a1; row[2] = b0; row[3] = b1; row[4] = label;
    return 0;
}

/* pretraining.pack_document: documents[index]'s instances appended to `out`. */
static int pack_document(const int64_t *starts, const int64_t *documents, int64_t count_documents, int64_t index,
                         int64_t max_seq, double short_seq_prob, Twister *mt, Packed *out) {
    int64_t first = documents[2 * index], end = documents[2 * index + 1];
    int64_t max_tokens = max_seq - 3, target = max_tokens;
    if (mt_random(mt) < short_seq_prob) target = mt_randint(mt, 2, max_tokens);
    for (int64_t begin = first; begin < end;) {
        int64_t stop = bisect_left(starts, starts[begin] + target, begin + 1, end);  /* sentences [begin, stop) */
        int64_t count = stop - begin;
        int64_t a_stop = begin + (count >= 2 ? mt_randint(mt, 1, count - 1) : 1);
        int64_t b_begin, b_stop, next_begin, is_random_next;
        if (count == 1 || mt_random(mt) < 0.5) {
            is_random_next = 1;
            int64_t target_b = target - (starts[a_stop] - starts[begin]), other = index;
            for (int tries = 0; tries < 10; tries++) {
                other = mt_randint(mt, 0, count_documents - 1);
                if (other != index) break;
            }
            int64_t other_first = documents[2 * other], other_end = documents[2 * other + 1];
            b_begin = other_first + mt_randint(mt, 0, other_end - other_first - 1);
            b_stop = bisect_left(starts, starts[b_begin] + target_b, b_begin + 1, other_end);
            next_begin = a_stop;  /* the unused sentences go back to the document */
        } else {
            is_random_next = 0;
            b_begin = a_stop;
            b_stop = stop;
            next_begin = stop;
        }
        int64_t a0 = starts[begin], a1 = starts[a_stop], b0 = starts[b_begin], b1 = starts[b_stop];
        /* pretraining._truncation: the cut counts per side follow from the lengths; the front cuts
           of a side are the set bits of that many random bits. */
        int64_t len_a = a1 - a0, len_b = b1 - b0, excess = len_a + len_b - max_tokens;
        int64_t front_a = 0, back_a = 0, front_b = 0, back_b = 0;
        if (excess > 0) {
            int64_t gap = len_a > len_b ? len_a - len_b : len_b - len_a;
            int64_t longer = excess < gap ? excess : gap;
            int64_t cut_a = (excess - longer) / 2 + (len_a > len_b ? longer : 0), cut_b = excess - cut_a;
            front_a = mt_bit_count(mt, cut_a);
            front_b = mt_bit_count(mt, cut_b);
            back_a = cut_a - front_a;
            back_b = cut_b - front_b;
        }
        if (packed_append(out, a0 + front_a, a1 - back_a, b0 + front_b, b1 - back_b, is_random_next) < 0) return -1;
        begin = next_begin;
    }
    return 0;
}

/* pack_chunk(starts, documents, max_seq_length, short_seq_prob, dupe_factor, state)
   -> (bytes of (N, 5) int64 packed rows, the new state)

   starts (S + 1,) int64 sentence token offsets; documents (D, 2) int64 (first, end sentence) in
   their shuffled order; state = random.Random.getstate()[1]. dupe_factor passes of
   pack_document over the documents, then random.shuffle of the instances. */
static PyObject *pack_chunk(PyObject *self, PyObject *args) {
    PyObject *starts_object, *documents_object, *state;
    long long max_seq, dupe_factor;
    double short_seq_prob;
    if (!PyArg_ParseTuple(args, "OOLdLO", &starts_object, &documents_object, &max_seq, &short_seq_prob, &dupe_factor,
                          &state))
        return NULL;
    Twister mt;
    if (state_in(&mt, state) < 0) return NULL;
    Py_buffer starts, documents;
    if (get_array(starts_object, &starts, "starts", "ql", 8, 1, -1, -1, 0) < 0) return NULL;
    if (get_array(documents_object, &documents, "documents", "ql", 8, 2, -1, 2, 0) < 0) {
        PyBuffer_Release(&starts);
        return NULL;
    }
    PyObject *result = NULL, *rows = NULL, *new_state = NULL;
    Packed out = {NULL, 0, 0};
    int64_t count_documents = documents.shape[0], sentences = starts.shape[0] - 1;
    const int64_t *docs = documents.buf;
    for (int64_t d = 0; d < count_documents; d++)
        if (docs[2 * d] < 0 || docs[2 * d] >= docs[2 * d + 1] || docs[2 * d + 1] > sentences) {
            PyErr_Format(PyExc_ValueError, "documents[%lld]: not a non-empty sentence range", (long long)d);
            goto done;
        }
    if (max_seq < 5) { PyErr_SetString(PyExc_ValueError, "max_seq_length must be at least 5"); goto done; }
    for (long long pass = 0; pass < dupe_factor; pass++)
        for (int64_t index = 0; index < count_documents; index++)
            if (pack_document(starts.buf, docs, count_documents, index, max_seq, short_seq_prob, &mt, &out) < 0)
                goto done;
    for (Py_ssize_t i = out.count - 1; i > 0; i--) {  /* random.shuffle */
        Py_ssize_t j = (Py_ssize_t)mt_below(&mt, (uint64_t)i + 1);
        int64_t tmp[5];
        memcpy(tmp, out.rows + 5 * i, sizeof tmp);
        memcpy(out.rows + 5 * i, out.rows + 5 * j, sizeof tmp);
        memcpy(out.rows + 5 * j, tmp, sizeof tmp);
    }
    rows = PyBytes_FromStringAndSize((const char *)out.rows, out.count * 5 * (Py_ssize_t)sizeof(int64_t));
    new_state = state_out(&mt);
    if (rows && new_state) result = PyTuple_Pack(2, rows, new_state);
done:
    Py_XDECREF(rows);
    Py_XDECREF(new_state);
    PyMem_Free(out.rows);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&documents);
    return result;
}

/* ---- the word cache ------------------------------------------------------------------------ */

typedef struct {
    uint64_t hash;
    int64_t start;  /* the word's bytes in the arena */
    int64_t row;    /* -1: empty slot */
    int32_t length;
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    int64_t capacity;  /* a power of 2 */
    int64_t count;     /* words held = the next row */
    char *arena;
    int64_t arena_used, arena_size;
    PyObject *vocab;     /* token -> id: an unseen word that is a vocab entry is its own one piece */
    Py_ssize_t max_chars;  /* WordPiece's max_input_chars_per_word: a longer word is not looked up */
} WordTable;

static uint64_t hash_bytes(const uint8_t *p, Py_ssize_t n) {  /* FNV-1a */
    uint64_t h = 0xcbf29ce484222325ull;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static int table_grow(WordTable *table) {
    int64_t capacity = table->capacity ? table->capacity * 2 : 1 << 16;
    Slot *slots = PyMem_Malloc(capacity * sizeof(Slot));
    if (!slots) { PyErr_NoMemory(); return -1; }
    for (int64_t i = 0; i < capacity; i++) slots[i].row = -1;
    for (int64_t i = 0; i < table->capacity; i++) {
        Slot *old = &table->slots[i];
        if (old->row < 0) continue;
        int64_t j = old->hash & (capacity - 1);
        while (slots[j].row >= 0) j = (j + 1) & (capacity - 1);
        slots[j] = *old;
    }
    PyMem_Free(table->slots);
    table->slots = slots;
    table->capacity = capacity;
    return 0;
}

/* The row of a word, added (and appended to `fresh` as str) when unseen; -1 on error. */
static int64_t table_row(WordTable *table, const uint8_t *word, Py_ssize_t length, PyObject *fresh) {
    uint64_t h = hash_bytes(word, length);
    int64_t j = h & (table->capacity - 1);
    for (; table->slots[j].row >= 0; j = (j + 1) & (table->capacity - 1)) {
        Slot *slot = &table->slots[j];
        if (slot->hash == h && slot->length == length && memcmp(table->arena + slot->start, word, length) == 0)
            return slot->row;
    }
    if (table->arena_used + length > table->arena_size) {
        int64_t size = (table->arena_size + length) * 2;
        char *arena = PyMem_Realloc(table->arena, size);
        if (!arena) { PyErr_NoMemory(); return -1; }
        table->arena = arena;
        table->arena_size = size;
    }
    PyObject *text = PyUnicode_DecodeUTF8((const char *)word, length, "strict");
    if (!text) return -1;
    int failed = PyList_Append(fresh, text);
    Py_DECREF(text);
    if (failed) return -1;
    memcpy(table->arena + table->arena_used, word, length);
    table->slots[j] = (Slot){h, table->arena_used, table->count, (int32_t)length};
    table->arena_used += length;
    int64_t row = table->count++;
    if (table->count * 2 > table->capacity && table_grow(table) < 0) return -1;
    return row;
}

static PyObject *table_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *vocab;
    Py_ssize_t max_chars;
    if (!_PyArg_NoKeywords("WordTable", kwargs) || !PyArg_ParseTuple(args, "O!n:WordTable", &PyDict_Type, &vocab,
                                                                     &max_chars))
        return NULL;
    WordTable *table = (WordTable *)type->tp_alloc(type, 0);
    if (!table) return NULL;
    Py_INCREF(vocab);
    table->vocab = vocab;
    table->max_chars = max_chars;
    PyObject *fresh = PyList_New(0);
    if (!fresh || table_grow(table) < 0 || table_row(table, (const uint8_t *)"\n", 1, fresh) < 0) {
        Py_XDECREF(fresh);
        Py_DECREF(table);
        return NULL;
    }
    Py_DECREF(fresh);
    return (PyObject *)table;
}

static void table_dealloc(WordTable *table) {
    PyMem_Free(table->slots);
    PyMem_Free(table->arena);
    Py_XDECREF(table->vocab);
    Py_TYPE(table)->tp_free((PyObject *)table);
}

static Py_ssize_t table_length(WordTable *table) { return (Py_ssize_t)table->count; }

static inline int is_alnum(uint8_t c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* rows(text: str) -> (bytes of (W,) int64 rows, [the unseen words, in order],
                      bytes of their (new,) int64 vocab ids, -1 where a word is not a vocab entry) */
static PyObject *table_rows(WordTable *table, PyObject *arg) {
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(arg, &size);  /* cached in the str: no copy for ASCII */
    if (!utf8) return NULL;
    const uint8_t *p = (const uint8_t *)utf8, *end = p + size;
    PyObject *fresh = PyList_New(0), *rows = NULL, *known = NULL, *result = NULL;
    /* At most one word per byte. */
    int64_t *out = PyMem_Malloc((size ? size : 1) * sizeof(int64_t));
    if (!fresh || !out) { PyErr_NoMemory(); goto done; }
    Py_ssize_t words = 0;
    while (p < end) {
        uint8_t c = *p;
        const uint8_t *start = p;
        if (c == ' ' || c == '\t' || c == '\r') { p++; continue; }
        if (c == '\n') { out[words++] = 0; p++; continue; }
        if (is_alnum(c)) {
            while (p < end && is_alnum(*p)) p++;
        } else {
            p++;
            if (c >= 0xC0) while (p < end && (*p & 0xC0) == 0x80) p++;  /* one whole UTF-8 character */
        }
        int64_t row = table_row(table, start, p - start, fresh);
        if (row < 0) goto done;
        out[words++] = row;
    }
    rows = PyBytes_FromStringAndSize((const char *)out, words * (Py_ssize_t)sizeof(int64_t));
    Py_ssize_t count = PyList_GET_SIZE(fresh);
    known = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(int64_t));
    if (!rows || !known) goto done;
    int64_t *ids = (int64_t *)PyBytes_AS_STRING(known);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *word = PyList_GET_ITEM(fresh, i), *id = NULL;
        if (PyUnicode_GET_LENGTH(word) <= table->max_chars && !(id = PyDict_GetItemWithError(table->vocab, word)) &&
            PyErr_Occurred())
            goto done;
        ids[i] = id ? PyLong_AsLongLong(id) : -1;
        if (ids[i] == -1 && PyErr_Occurred()) goto done;
    }
    result = PyTuple_Pack(3, rows, fresh, known);
done:
    PyMem_Free(out);
    Py_XDECREF(rows);
    Py_XDECREF(known);
    Py_XDECREF(fresh);
    return result;
}

static PyMethodDef table_methods[] = {
    {"rows", (PyCFunction)table_rows, METH_O,
     "rows(text: str) -> (bytes of (W,) int64 word rows, [unseen words in order], bytes of their int64 vocab ids or "
     "-1); a line end is row 0."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods table_sequence = {.sq_length = (lenfunc)table_length};

static PyTypeObject WordTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mindtransformer.data._records_c.WordTable",
    .tp_basicsize = sizeof(WordTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "WordTable(vocab, max_chars): word -> row; rows(text) splits text into BERT's words and numbers the "
              "unseen ones.",
    .tp_new = table_new,
    .tp_dealloc = (destructor)table_dealloc,
    .tp_methods = table_methods,
    .tp_as_sequence = &table_sequence,
};

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
#if defined(__x86_64__) && defined(__GNUC__)
    has_sse42 = __builtin_cpu_supports("sse4.2");
#endif
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
