/* Dropout for the torch binding on a CPU (mindtransformer.backends.torch._dropout).

Optional: setup.py builds it when a C compiler is there; without it ops.DropoutMasks and
ops.dropout do the same in numpy and torch, to the same bits (the tests compare both).

keep_mask: dropout's keep masks as bf16 / fp16 bits, 1.0 where a 16-bit level drawn from numpy's
SFC64 is >= threshold, else 0: the same draws and the same masks as numpy's
`SFC64.random_raw(...).view(np.uint16)` (ops.DropoutMasks), in one pass where numpy's way makes
five (draw, view, slice, compare, multiply). With AVX-512 (BW) 32 levels (8 draws) are compared at
a time: a BERT-base layer's attention mask at 32 samples took 2.05 ms against 3.35 (measured).

dropout_bf16: the next keep mask of a bf16 tensor's size and the tensor times it times the scale,
in one pass; given an fp32 residual, the fp32 sum residual + that instead (a transformer's
`dropout(x) + residual` under bf16 autocast, whose mixed-dtype add is a slow pass of its own in
torch). times_kept_bf16: a gradient times a kept mask times the scale (the backward), the gradient
bf16 or fp32 (rounded to bf16 first, as autograd's cast for the bf16 input of the add would).
Both compute x * keep * scale in fp32 and round once to bf16 (to nearest, ties to even; NaN stays
NaN): the bits of torch's `torch.mul(x, keep).mul_(scale)`, whose first product is exact, in one
pass instead of two. 16 values at a time with AVX-512 where the CPU has it (checked at run time),
else one at a time, to the same bits.

Arrays travel through the buffer protocol (numpy views of the tensors' bits), so building needs
neither numpy's nor torch's headers. */

#include "bf16.h"

/* out = x * keep * scale for n bf16 values, one rounding; x bf16 bits, or fp32 values rounded to bf16
   first when x_float (then x_bits is NULL). */
static void times_kept_scalar(const uint16_t *x_bits, const float *x_float, const uint16_t *keep, uint16_t *out,
                              Py_ssize_t n, float scale) {
    for (Py_ssize_t i = 0; i < n; i++) {
        float x = bf16_to_float(x_float ? float_to_bf16(x_float[i]) : x_bits[i]);
        out[i] = float_to_bf16(x * bf16_to_float(keep[i]) * scale);
    }
}

/* out = residual + bf16(x * keep * scale) in fp32, for n values. */
static void plus_times_kept_scalar(const uint16_t *x, const uint16_t *keep, const float *residual, float *out,
                                   Py_ssize_t n, float scale) {
    for (Py_ssize_t i = 0; i < n; i++)
        out[i] = residual[i] + bf16_to_float(float_to_bf16(bf16_to_float(x[i]) * bf16_to_float(keep[i]) * scale));
}

#if HAVE_AVX512
AVX512 static Py_ssize_t times_kept_avx512(const uint16_t *x_bits, const float *x_float, const uint16_t *keep,
                                           uint16_t *out, Py_ssize_t n, float scale) {
    __m512 factor = _mm512_set1_ps(scale);
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 x = x_float ? rounded_to_bf16(_mm512_loadu_ps(x_float + i)) : load_bf16(x_bits + i);
        store_bf16(out + i, _mm512_mul_ps(_mm512_mul_ps(x, load_bf16(keep + i)), factor));
    }
    return i;
}

AVX512 static Py_ssize_t plus_times_kept_avx512(const uint16_t *x, const uint16_t *keep, const float *residual,
                                                float *out, Py_ssize_t n, float scale) {
    __m512 factor = _mm512_set1_ps(scale);
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 dropped = rounded_to_bf16(_mm512_mul_ps(_mm512_mul_ps(load_bf16(x + i), load_bf16(keep + i)), factor));
        _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(residual + i), dropped));
    }
    return i;
}
#endif

static void times_kept(const uint16_t *x_bits, const float *x_float, const uint16_t *keep, uint16_t *out,
                       Py_ssize_t n, float scale) {
    Py_ssize_t done = 0;
#if HAVE_AVX512
    if (have_avx512()) done = times_kept_avx512(x_bits, x_float, keep, out, n, scale);
#endif
    times_kept_scalar(x_float ? NULL : x_bits + done, x_float ? x_float + done : NULL, keep + done, out + done,
                      n - done, scale);
}

static void plus_times_kept(const uint16_t *x, const uint16_t *keep, const float *residual, float *out, Py_ssize_t n,
                            float scale) {
    Py_ssize_t done = 0;
#if HAVE_AVX512
    if (have_avx512()) done = plus_times_kept_avx512(x, keep, residual, out, n, scale);
#endif
    plus_times_kept_scalar(x + done, keep + done, residual + done, out + done, n - done, scale);
}

static inline uint64_t sfc64_next(uint64_t *s) {  /* numpy's sfc64_next: s = a, b, c, counter */
    const uint64_t tmp = s[0] + s[1] + s[3]++;
    s[0] = s[1] ^ (s[1] >> 11);
    s[1] = s[2] + (s[2] << 3);
    s[2] = ((s[2] << 24) | (s[2] >> 40)) + tmp;
    return tmp;
}

#if HAVE_AVX512
/* The first n - n % 32 values of a row: 8 draws (32 levels, in memory order) compared at a time. */
AVX512BW static Py_ssize_t keep_mask_avx512(uint64_t *state, uint16_t *o, Py_ssize_t n, uint16_t threshold,
                                            uint16_t one_bits) {
    __m512i level = _mm512_set1_epi16((short)threshold), one = _mm512_set1_epi16((short)one_bits);
    uint64_t draws[8];
    Py_ssize_t j = 0;
    for (; j + 32 <= n; j += 32) {
        for (int k = 0; k < 8; k++) draws[k] = sfc64_next(state);
        __mmask32 kept = _mm512_cmpge_epu16_mask(_mm512_loadu_si512(draws), level);
        _mm512_storeu_si512(o + j, _mm512_maskz_mov_epi16(kept, one));
    }
    return j;
}
#endif

static void keep_mask_loop(uint64_t *state, uint16_t *out, Py_ssize_t rows, Py_ssize_t per_row, uint16_t threshold,
                           uint16_t one_bits) {
    int wide = have_avx512bw();
    for (Py_ssize_t row = 0; row < rows; row++) {  /* each row starts on a fresh draw, as in numpy's reshape */
        uint16_t *o = out + row * per_row;
        Py_ssize_t j = 0;
#if HAVE_AVX512
        if (wide) j = keep_mask_avx512(state, o, per_row, threshold, one_bits);  /* whole draws: the rest follows on */
#endif
        (void)wide;
        for (; j + 4 <= per_row; j += 4) {
            uint64_t draw = sfc64_next(state);
            for (int k = 0; k < 4; k++) o[j + k] = (uint16_t)(draw >> (16 * k)) >= threshold ? one_bits : 0;
        }
        if (j < per_row) {
            uint64_t draw = sfc64_next(state);
            for (int k = 0; j + k < per_row; k++) o[j + k] = (uint16_t)(draw >> (16 * k)) >= threshold ? one_bits : 0;
        }
    }
}

#define DROPOUT_BLOCK 4096  /* values per block: its mask (8 KB) is still in L1 when applied */

/* out = x * keep * scale (bf16 bits), or residual + that in fp32 when residual is not NULL. */
static void dropout_loop(uint64_t *state, const uint16_t *x, void *out, uint16_t *keep, Py_ssize_t n,
                         uint16_t threshold, float scale, const float *residual) {
    for (Py_ssize_t start = 0; start < n; start += DROPOUT_BLOCK) {  /* blocks of whole draws: 4096 = 4 x 1024 */
        Py_ssize_t size = n - start < DROPOUT_BLOCK ? n - start : DROPOUT_BLOCK;
        keep_mask_loop(state, keep + start, 1, size, threshold, 0x3F80);
        if (residual)
            plus_times_kept(x + start, keep + start, residual + start, (float *)out + start, size, scale);
        else
            times_kept(x + start, NULL, keep + start, (uint16_t *)out + start, size, scale);
    }
}


static PyObject *keep_mask(PyObject *self, PyObject *args) {
    PyObject *state_object, *out_object;
    Py_ssize_t rows;
    unsigned int threshold, one_bits;
    if (!PyArg_ParseTuple(args, "OOnII", &state_object, &out_object, &rows, &threshold, &one_bits)) return NULL;
    if (threshold > 0xFFFF || one_bits > 0xFFFF || rows < 1) {
        PyErr_SetString(PyExc_ValueError, "keep_mask: threshold and one_bits are 16-bit, rows >= 1");
        return NULL;
    }
    Py_buffer state, out;
    if (get_items(state_object, &state, 8, 1, "state") < 0) return NULL;
    if (get_items(out_object, &out, 2, 1, "out") < 0) {
        PyBuffer_Release(&state);
        return NULL;
    }
    if (state.len != 4 * 8 || (out.len / 2) % rows != 0) {
        PyErr_SetString(PyExc_ValueError, "keep_mask: state is SFC64's 4 uint64, out's size a multiple of rows");
    } else {
        Py_BEGIN_ALLOW_THREADS keep_mask_loop(state.buf, out.buf, rows, out.len / 2 / rows, (uint16_t)threshold,
                                              (uint16_t)one_bits);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&state);
    PyBuffer_Release(&out);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *dropout_bf16(PyObject *self, PyObject *args) {
    PyObject *state_object, *x_object, *out_object, *keep_object, *residual_object = Py_None;
    unsigned int threshold;
    float scale;
    if (!PyArg_ParseTuple(args, "OOOOIf|O", &state_object, &x_object, &out_object, &keep_object, &threshold, &scale,
                          &residual_object))
        return NULL;
    if (threshold > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "dropout_bf16: threshold is 16-bit");
        return NULL;
    }
    int with_residual = residual_object != Py_None;
    Py_ssize_t out_size = with_residual ? 4 : 2;
    Py_buffer state, x, out, keep, residual = {0};
    if (get_items(state_object, &state, 8, 1, "state") < 0) return NULL;
    if (get_items(x_object, &x, 2, 0, "x") < 0) goto release_state;
    if (get_items(out_object, &out, out_size, 1, "out") < 0) goto release_x;
    if (get_items(keep_object, &keep, 2, 1, "keep") < 0) goto release_out;
    if (with_residual && get_items(residual_object, &residual, 4, 0, "residual") < 0) goto release_keep;
    if (state.len != 4 * 8 || out.len / out_size != x.len / 2 || x.len != keep.len ||
        (with_residual && residual.len != out.len)) {
        PyErr_SetString(PyExc_ValueError,
                        "dropout_bf16: state is SFC64's 4 uint64; x, out, keep (and residual) of one count");
    } else {
        Py_BEGIN_ALLOW_THREADS dropout_loop(state.buf, x.buf, out.buf, keep.buf, x.len / 2, (uint16_t)threshold, scale,
                                            with_residual ? residual.buf : NULL);
        Py_END_ALLOW_THREADS
    }
    if (with_residual) PyBuffer_Release(&residual);
release_keep:
    PyBuffer_Release(&keep);
release_out:
    PyBuffer_Release(&out);
release_x:
    PyBuffer_Release(&x);
release_state:
    PyBuffer_Release(&state);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *times_kept_bf16(PyObject *self, PyObject *args) {
    PyObject *x_object, *keep_object, *out_object;
    float scale;
    int x_float;
    if (!PyArg_ParseTuple(args, "OOOfp", &x_object, &keep_object, &out_object, &scale, &x_float)) return NULL;
    Py_buffer x, keep, out;
    Py_ssize_t x_size = x_float ? 4 : 2;
    if (get_items(x_object, &x, x_size, 0, "x") < 0) return NULL;
    if (get_items(keep_object, &keep, 2, 0, "keep") < 0) goto release_x;
    if (get_items(out_object, &out, 2, 1, "out") < 0) goto release_keep;
    if (x.len / x_size != keep.len / 2 || keep.len != out.len) {
        PyErr_SetString(PyExc_ValueError, "times_kept_bf16: x, keep and out of one count");
    } else {
        Py_BEGIN_ALLOW_THREADS times_kept(x_float ? NULL : x.buf, x_float ? x.buf : NULL, keep.buf, out.buf,
                                          keep.len / 2, scale);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&out);
release_keep:
    PyBuffer_Release(&keep);
release_x:
    PyBuffer_Release(&x);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"dropout_bf16", dropout_bf16, METH_VARARGS,
     "dropout_bf16(state, x, out, keep, threshold, scale, residual=None): keep = the next mask of x's size (as "
     "keep_mask with one row), out = x * keep * scale; bf16 bits as uint16 buffers of one count, state advanced in "
     "place. Given an fp32 residual, out (fp32) = residual + that bf16 product."},
    {"times_kept_bf16", times_kept_bf16, METH_VARARGS,
     "times_kept_bf16(x, keep, out, scale, x_float): out = x * keep * scale, rounded once; bf16 bits as uint16 "
     "buffers, x fp32 (rounded to bf16 first) when x_float."},
    {"keep_mask", keep_mask, METH_VARARGS,
     "keep_mask(state, out, rows, threshold, one_bits): out (rows * per_row uint16) = one_bits where the next 16-bit "
     "level of numpy's SFC64 (state: its 4 uint64, advanced in place; each row starts on a fresh draw) is >= "
     "threshold, else 0."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_dropout", NULL, -1, methods};

PyMODINIT_FUNC PyInit__dropout(void) { return PyModule_Create(&module); }
