/* build_instances: the padded arrays and google's masked-LM choice (see module.c). */

#include "records.h"

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
PyObject *build_instances(PyObject *self, PyObject *args) {
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

