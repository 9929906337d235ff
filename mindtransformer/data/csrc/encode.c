/* encode_examples: tf.train.Example protobufs, optionally TFRecord-framed (see module.c). */

#include "records.h"

/* ---- CRC-32C (Castagnoli), slicing by 8 ------------------------------------------------------ */

static uint32_t crc_table[8][256];
#if defined(__x86_64__) && defined(__GNUC__)
static int has_sse42;  /* the CPU has SSE 4.2's crc32 instruction (set by crc_init) */
#endif

void crc_init(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    has_sse42 = __builtin_cpu_supports("sse4.2");
#endif
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

/* Bytes of one feature's packed payload in record `row` (all int64 values are >= 0: checked);
   *narrow tells whether every value is under 2^21 (at most 3 varint bytes). */
static size_t payload_size(const Feature *f, Py_ssize_t row, uint8_t *narrow) {
    *narrow = 1;
    if (f->is_float) return (size_t)f->length * 4;
    const int64_t *v = (const int64_t *)f->view.buf + row * f->length;
    uint64_t any = 0;
    for (Py_ssize_t i = 0; i < f->length; i++) any |= (uint64_t)v[i];
    if (any < 0x80) return (size_t)f->length;  /* masks, segments, positions, labels: a byte each */
    size_t n = 0;
    *narrow = any < 1u << 21;
    if (*narrow)  /* token ids: 1-3 bytes each, counted without branches */
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

/* `payload` bytes of varints: one byte each when there are as many bytes as values; `narrow`
   from payload_size. */
static uint8_t *put_payload(uint8_t *out, const Feature *f, Py_ssize_t row, size_t payload, int narrow) {
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
    if (narrow) {
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
PyObject *encode_examples(PyObject *self, PyObject *args) {
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
    uint8_t *narrow = NULL;  /* (rows, features): every value under 2^21 (payload_size) */
    for (; held < count; held++) {
        Feature *f = &features[held];
        PyObject *array;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, held), "y#pO", &f->key, &f->key_len, &f->is_float, &array))
            goto done;
        /* (rows, L >= 1) C-contiguous float32 or int64 */
        if (get_array(array, &f->view, f->key, f->is_float ? "f" : "ql", f->is_float ? 4 : 8, 2, rows, -1, 0) < 0)
            goto done;
        f->length = f->view.shape[1];
        if (f->length < 1) {
            held++;
            PyErr_Format(PyExc_ValueError, "feature %s: no values (L = 0)", f->key);
            goto done;
        }
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
    payloads = PyMem_Malloc((rows * count > 0 ? rows * count : 1) * sizeof(size_t));
    narrow = PyMem_Malloc(rows * count > 0 ? rows * count : 1);
    offsets = PyBytes_FromStringAndSize(NULL, (rows + 1) * 8);
    if (!sizes || !payloads || !narrow || !offsets) { PyErr_NoMemory(); goto done; }
    int64_t *offset = (int64_t *)PyBytes_AS_STRING(offsets);
    offset[0] = 0;
    for (Py_ssize_t r = 0; r < rows; r++) {
        size_t features_size = 0, feature, value_list;
        for (Py_ssize_t i = 0; i < count; i++) {
            size_t payload = payloads[r * count + i] = payload_size(&features[i], r, &narrow[r * count + i]);
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
            out = put_payload(out, f, r, payload, narrow[r * count + i]);
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
    PyMem_Free(narrow);
    release(features, held);
    Py_DECREF(seq);
    return result;
}
