/* The softmax and dropout passes of attention's training steps in bf16 on a CPU, for
ops._TrainingAttention (mindtransformer.backends.torch._attention).

softmax_keep: rows of bf16 scores -> their softmax (bf16) and, given a keep mask, the softmax
times the mask: one pass over each row where torch makes three (masked_fill, softmax, mul). Masked
keys (key_mask 0) score bf16's lowest value, as ops._softmax_weights's masked_fill: a row with
every key masked comes out uniform. The exponentials are computed in fp32 (bf16.h's
exp_nonpositive) and the weights rounded once to bf16; the dropped
weights are the rounded weights times the 0/1 mask, exact. softmax_keep_backward: from the
weights, the mask and the dropped weights' gradient g, the kept weights (weights * keep, for the
value gradient) and the scores' gradient weights * (g keep - sum(g keep weights)), one pass over
each row where torch makes three (mul, mul, _softmax_backward_data). Either may write over its
input (scores and weights, g and the scores' gradient may share memory): each row is read before
it is written.

AVX-512 (F, BW, VL) only: `vectorized()` says whether this CPU has it; ops uses torch's passes
where it does not. Optional like dropout.c. */

#include <float.h>
#include <stdlib.h>

#include "bf16.h"

#define LOWEST_BF16 (-3.38953139e38f)  /* torch.finfo(torch.bfloat16).min */

#if HAVE_AVX512

static inline __mmask16 lanes(Py_ssize_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

AVX512BW static inline __m512 load_bf16_masked(const uint16_t *p, __mmask16 m) {
    __m256i half = _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
}

AVX512BW static inline void store_bf16_masked(uint16_t *p, __m512 value, __mmask16 m) {
    _mm256_mask_storeu_epi16(p, m, _mm512_cvtepi32_epi16(round_bf16(value)));
}

/* rows of length t: weights = softmax(scores), dropped = weights * keep when keep is not NULL.
   key_mask (uint8, one row of t per rows_per_mask rows) or NULL; scratch: t + 16 floats. */
AVX512BW static void softmax_keep_rows(const uint16_t *scores, const uint16_t *keep, uint16_t *weights,
                                       uint16_t *dropped, Py_ssize_t rows, Py_ssize_t t, const uint8_t *key_mask,
                                       Py_ssize_t rows_per_mask, float *scratch) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        const uint16_t *s = scores + r * t;
        const uint8_t *attend = key_mask ? key_mask + (r / rows_per_mask) * t : NULL;
        __m512 top = _mm512_set1_ps(-FLT_MAX);
        for (Py_ssize_t j = 0; j < t; j += 16) {
            __mmask16 m = lanes(t - j);
            __m512 v = load_bf16_masked(s + j, m);
            if (attend) {
                __m512i flags = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, attend + j));
                __mmask16 on = _mm512_mask_cmpneq_epi32_mask(m, flags, _mm512_setzero_si512());
                v = _mm512_mask_mov_ps(_mm512_set1_ps(LOWEST_BF16), on, v);
            }
            _mm512_storeu_ps(scratch + j, v);
            top = _mm512_mask_max_ps(top, m, top, v);
        }
        __m512 row_max = _mm512_set1_ps(_mm512_reduce_max_ps(top));
        __m512 sum = _mm512_setzero_ps();
        for (Py_ssize_t j = 0; j < t; j += 16) {
            __mmask16 m = lanes(t - j);
            __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(scratch + j), row_max));
            _mm512_storeu_ps(scratch + j, e);
            sum = _mm512_mask_add_ps(sum, m, sum, e);
        }
        __m512 inverse = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
        for (Py_ssize_t j = 0; j < t; j += 16) {
            __mmask16 m = lanes(t - j);
            __m512 w = rounded_to_bf16(_mm512_mul_ps(_mm512_loadu_ps(scratch + j), inverse));
            store_bf16_masked(weights + r * t + j, w, m);
            if (keep) store_bf16_masked(dropped + r * t + j, _mm512_mul_ps(w, load_bf16_masked(keep + r * t + j, m)), m);
        }
    }
}

/* weights_kept = weights * keep; grad_scores = weights * (g keep - sum over the row of g keep weights) */
AVX512BW static void softmax_keep_backward_rows(const uint16_t *weights, const uint16_t *keep, const uint16_t *g,
                                                uint16_t *weights_kept, uint16_t *grad_scores, Py_ssize_t rows,
                                                Py_ssize_t t) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        const uint16_t *w = weights + r * t, *k = keep + r * t, *gr = g + r * t;
        __m512 total = _mm512_setzero_ps();
        for (Py_ssize_t j = 0; j < t; j += 16) {
            __mmask16 m = lanes(t - j);
            __m512 wv = load_bf16_masked(w + j, m), kv = load_bf16_masked(k + j, m);
            total = _mm512_fmadd_ps(_mm512_mul_ps(load_bf16_masked(gr + j, m), kv), wv, total);
            store_bf16_masked(weights_kept + r * t + j, _mm512_mul_ps(wv, kv), m);
        }
        __m512 row_total = _mm512_set1_ps(_mm512_reduce_add_ps(total));
        for (Py_ssize_t j = 0; j < t; j += 16) {
            __mmask16 m = lanes(t - j);
            __m512 kept_g = _mm512_mul_ps(load_bf16_masked(gr + j, m), load_bf16_masked(k + j, m));
            store_bf16_masked(grad_scores + r * t + j,
                              _mm512_mul_ps(load_bf16_masked(w + j, m), _mm512_sub_ps(kept_g, row_total)), m);
        }
    }
}
#endif

static PyObject *vectorized(PyObject *self, PyObject *args) { return PyBool_FromLong(have_avx512bw()); }

static PyObject *softmax_keep(PyObject *self, PyObject *args) {
    PyObject *objects[5];  /* scores, keep, weights, dropped, key_mask */
    Py_ssize_t t, rows_per_mask;
    if (!PyArg_ParseTuple(args, "OOOOOnn", &objects[0], &objects[1], &objects[2], &objects[3], &objects[4], &t,
                          &rows_per_mask))
        return NULL;
    static const char *names[5] = {"scores", "keep", "weights", "dropped", "key_mask"};
    static const Py_ssize_t sizes[5] = {2, 2, 2, 2, 1};
    static const int writable[5] = {0, 0, 1, 1, 0}, optional[5] = {0, 1, 0, 1, 1};
    Py_buffer views[5];
    int present[5];
    if (!have_avx512bw()) {
        PyErr_SetString(PyExc_RuntimeError, "softmax_keep: this CPU lacks AVX-512 (see vectorized())");
        return NULL;
    }
    if (get_all(objects, views, present, 5, sizes, writable, optional, names) < 0) return NULL;
    Py_ssize_t count = views[0].len / 2, rows = t > 0 ? count / t : 0;
    if (t < 1 || count % t != 0 || views[2].len != views[0].len || present[1] != present[3] ||
        (present[1] && (views[1].len != views[0].len || views[3].len != views[0].len)) ||
        (present[4] && (rows_per_mask < 1 || rows % rows_per_mask != 0 || views[4].len != rows / rows_per_mask * t))) {
        PyErr_SetString(PyExc_ValueError, "softmax_keep: scores, weights (and keep, dropped, both or neither) of "
                                          "rows x length; key_mask (rows / rows_per_mask) x length");
    } else {
        float *scratch = malloc((t + 16) * sizeof(float));
        if (!scratch) {
            PyErr_NoMemory();
        } else {
#if HAVE_AVX512
            Py_BEGIN_ALLOW_THREADS softmax_keep_rows(views[0].buf, present[1] ? views[1].buf : NULL, views[2].buf,
                                                     present[3] ? views[3].buf : NULL, rows, t,
                                                     present[4] ? views[4].buf : NULL, rows_per_mask, scratch);
            Py_END_ALLOW_THREADS
#endif
            free(scratch);
        }
    }
    release_all(views, present, 5);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *softmax_keep_backward(PyObject *self, PyObject *args) {
    PyObject *objects[5];  /* weights, keep, g, weights_kept, grad_scores */
    Py_ssize_t t;
    if (!PyArg_ParseTuple(args, "OOOOOn", &objects[0], &objects[1], &objects[2], &objects[3], &objects[4], &t))
        return NULL;
    static const char *names[5] = {"weights", "keep", "g", "weights_kept", "grad_scores"};
    static const Py_ssize_t sizes[5] = {2, 2, 2, 2, 2};
    static const int writable[5] = {0, 0, 0, 1, 1}, optional[5] = {0, 0, 0, 0, 0};
    Py_buffer views[5];
    int present[5];
    if (!have_avx512bw()) {
        PyErr_SetString(PyExc_RuntimeError, "softmax_keep_backward: this CPU lacks AVX-512 (see vectorized())");
        return NULL;
    }
    if (get_all(objects, views, present, 5, sizes, writable, optional, names) < 0) return NULL;
    Py_ssize_t count = views[0].len / 2;
    int same = 1;
    for (int i = 1; i < 5; i++) same = same && views[i].len == views[0].len;
    if (t < 1 || count % t != 0 || !same) {
        PyErr_SetString(PyExc_ValueError, "softmax_keep_backward: every buffer rows x length bf16");
    } else {
#if HAVE_AVX512
        Py_BEGIN_ALLOW_THREADS softmax_keep_backward_rows(views[0].buf, views[1].buf, views[2].buf, views[3].buf,
                                                          views[4].buf, count / t, t);
        Py_END_ALLOW_THREADS
#endif
    }
    release_all(views, present, 5);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"vectorized", vectorized, METH_NOARGS, "vectorized(): whether this CPU has the AVX-512 the kernels need."},
    {"softmax_keep", softmax_keep, METH_VARARGS,
     "softmax_keep(scores, keep, weights, dropped, key_mask, length, rows_per_mask): weights = softmax of each row "
     "of `length` bf16 scores, keys where key_mask is 0 masked; dropped = weights * keep (keep and dropped may both "
     "be None). bf16 as uint16 buffers; key_mask uint8, one row per rows_per_mask rows, or None."},
    {"softmax_keep_backward", softmax_keep_backward, METH_VARARGS,
     "softmax_keep_backward(weights, keep, g, weights_kept, grad_scores, length): weights_kept = weights * keep and "
     "grad_scores = weights * (g keep - row sum of g keep weights), rows of `length` bf16 values."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_attention", NULL, -1, methods};

PyMODINIT_FUNC PyInit__attention(void) { return PyModule_Create(&module); }
