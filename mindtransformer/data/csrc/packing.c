/* pack_chunk: google's packing with CPython's Mersenne Twister (see module.c). */

#include "records.h"

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
PyObject *pack_chunk(PyObject *self, PyObject *args) {
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

