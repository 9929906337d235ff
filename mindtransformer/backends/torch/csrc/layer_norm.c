/* LayerNorm over the last dimension for the torch binding's bf16 steps on a CPU
(mindtransformer.backends.torch._layer_norm).

Under bf16 autocast a transformer's LayerNorm runs in fp32 and its output goes two ways: to the
residual sum in fp32 and to the next linear layer, which casts it to bf16. torch makes that cast
a pass of its own, and in the backward pass one more to cast the linear's bf16 gradient back to
fp32 and another to add it to the residual's. Here the forward writes the fp32 output and its
bf16 copy together, and the backward takes both gradients and sums them on the way: those three
passes are gone. Rows are normalized one at a time while they sit in L1 (768 fp32 values: 3 KB).

layer_norm_forward: y = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps) with the
biased variance (as torch), mean and variance in two passes over the row, in fp32.
layer_norm_backward: with g = grad_y + grad_copy (either may be absent) and xhat = (x - mean) * rstd,
grad_x = rstd * (g w - mean(g w) - xhat mean(g w xhat)); grad_weight and grad_bias (fp32, given
zeroed) get the sums over rows of g xhat and g, through per-block partial sums so that their fp32
rounding stays that of short sums.

Rows whose length is a multiple of 16 go 16 values at a time with AVX-512 where the CPU has it
(checked at run time); others one at a time (the same formulas; sums in another order). Optional
like dropout.c: without a C compiler ops.layer_norm is torch's. */

#include <math.h>
#include <stdlib.h>

#include "bf16.h"

#define ROWS_PER_BLOCK 64  /* rows whose weight and bias gradient terms are summed before the totals */

static void forward_row_scalar(const float *x, const float *w, const float *b, Py_ssize_t n, float eps, float *y,
                               uint16_t *copy, float *mean, float *rstd) {
    float sum = 0.0f, squares = 0.0f;
    for (Py_ssize_t j = 0; j < n; j++) sum += x[j];
    float m = sum / (float)n;
    for (Py_ssize_t j = 0; j < n; j++) squares += (x[j] - m) * (x[j] - m);
    float r = 1.0f / sqrtf(squares / (float)n + eps);
    for (Py_ssize_t j = 0; j < n; j++) {
        y[j] = (x[j] - m) * r * w[j] + b[j];
        copy[j] = float_to_bf16(y[j]);
    }
    *mean = m;
    *rstd = r;
}

/* g = grad_y + grad_copy (either may be NULL) into `sum_g` (n floats of scratch); the row's grad_x; the
   row's terms added into the block sums gw_block and gb_block */
static void backward_row_scalar(const float *x, const float *w, const float *grad_y, const uint16_t *grad_copy,
                                Py_ssize_t n, float m, float r, float *g, float *grad_x, float *gw_block,
                                float *gb_block) {
    float sum_gw = 0.0f, sum_gwx = 0.0f;
    for (Py_ssize_t j = 0; j < n; j++) {
        g[j] = (grad_y ? grad_y[j] : 0.0f) + (grad_copy ? bf16_to_float(grad_copy[j]) : 0.0f);
        float xhat = (x[j] - m) * r;
        sum_gw += g[j] * w[j];
        sum_gwx += g[j] * w[j] * xhat;
        gw_block[j] += g[j] * xhat;
        gb_block[j] += g[j];
    }
    float a = sum_gw / (float)n, c = sum_gwx / (float)n;
    for (Py_ssize_t j = 0; j < n; j++) grad_x[j] = r * (g[j] * w[j] - a - (x[j] - m) * r * c);
}

#if HAVE_AVX512
AVX512 static void forward_row_avx512(const float *x, const float *w, const float *b, Py_ssize_t n, float eps,
                                      float *y, uint16_t *copy, float *mean, float *rstd) {
    __m512 sum = _mm512_setzero_ps(), squares = _mm512_setzero_ps();
    for (Py_ssize_t j = 0; j < n; j += 16) sum = _mm512_add_ps(sum, _mm512_loadu_ps(x + j));
    float m = _mm512_reduce_add_ps(sum) / (float)n;
    __m512 mv = _mm512_set1_ps(m);
    for (Py_ssize_t j = 0; j < n; j += 16) {
        __m512 d = _mm512_sub_ps(_mm512_loadu_ps(x + j), mv);
        squares = _mm512_fmadd_ps(d, d, squares);
    }
    float r = 1.0f / sqrtf(_mm512_reduce_add_ps(squares) / (float)n + eps);
    __m512 rv = _mm512_set1_ps(r);
    for (Py_ssize_t j = 0; j < n; j += 16) {
        __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), mv), rv);
        __m512 out = _mm512_fmadd_ps(xhat, _mm512_loadu_ps(w + j), _mm512_loadu_ps(b + j));
        _mm512_storeu_ps(y + j, out);
        store_bf16(copy + j, out);
    }
    *mean = m;
    *rstd = r;
}

AVX512 static void backward_row_avx512(const float *x, const float *w, const float *grad_y,
                                       const uint16_t *grad_copy, Py_ssize_t n, float m, float r, float *g,
                                       float *grad_x, float *gw_block, float *gb_block) {
    __m512 mv = _mm512_set1_ps(m), rv = _mm512_set1_ps(r);
    __m512 sum_gw = _mm512_setzero_ps(), sum_gwx = _mm512_setzero_ps();
    for (Py_ssize_t j = 0; j < n; j += 16) {
        __m512 gj = grad_y ? _mm512_loadu_ps(grad_y + j) : _mm512_setzero_ps();
        if (grad_copy) gj = _mm512_add_ps(gj, load_bf16(grad_copy + j));
        _mm512_storeu_ps(g + j, gj);
        __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), mv), rv);
        __m512 gw = _mm512_mul_ps(gj, _mm512_loadu_ps(w + j));
        sum_gw = _mm512_add_ps(sum_gw, gw);
        sum_gwx = _mm512_fmadd_ps(gw, xhat, sum_gwx);
        _mm512_storeu_ps(gw_block + j, _mm512_fmadd_ps(gj, xhat, _mm512_loadu_ps(gw_block + j)));
        _mm512_storeu_ps(gb_block + j, _mm512_add_ps(gj, _mm512_loadu_ps(gb_block + j)));
    }
    __m512 a = _mm512_set1_ps(_mm512_reduce_add_ps(sum_gw) / (float)n);
    __m512 c = _mm512_set1_ps(_mm512_reduce_add_ps(sum_gwx) / (float)n);
    for (Py_ssize_t j = 0; j < n; j += 16) {
        __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), mv), rv);
        __m512 gw = _mm512_mul_ps(_mm512_loadu_ps(g + j), _mm512_loadu_ps(w + j));
        _mm512_storeu_ps(grad_x + j, _mm512_mul_ps(rv, _mm512_sub_ps(_mm512_sub_ps(gw, a), _mm512_mul_ps(xhat, c))));
    }
}
#endif

static int vectorized(Py_ssize_t n) { return HAVE_AVX512 && n % 16 == 0 && have_avx512(); }

static void forward_rows(const float *x, const float *w, const float *b, Py_ssize_t rows, Py_ssize_t n, float eps,
                         float *y, uint16_t *copy, float *mean, float *rstd) {
    int fast = vectorized(n);
    for (Py_ssize_t i = 0; i < rows; i++) {
#if HAVE_AVX512
        if (fast) {
            forward_row_avx512(x + i * n, w, b, n, eps, y + i * n, copy + i * n, mean + i, rstd + i);
            continue;
        }
#endif
        (void)fast;
        forward_row_scalar(x + i * n, w, b, n, eps, y + i * n, copy + i * n, mean + i, rstd + i);
    }
}

/* scratch: 3 n floats (g, and the block's weight and bias sums); grad_w and grad_b are added into */
static void backward_rows(const float *x, const float *w, const float *mean, const float *rstd, const float *grad_y,
                          const uint16_t *grad_copy, Py_ssize_t rows, Py_ssize_t n, float *grad_x, float *grad_w,
                          float *grad_b, float *scratch) {
    int fast = vectorized(n);
    float *g = scratch, *gw_block = scratch + n, *gb_block = scratch + 2 * n;
    for (Py_ssize_t start = 0; start < rows; start += ROWS_PER_BLOCK) {
        Py_ssize_t end = rows - start < ROWS_PER_BLOCK ? rows : start + ROWS_PER_BLOCK;
        memset(gw_block, 0, 2 * n * sizeof(float));
        for (Py_ssize_t i = start; i < end; i++) {
            const float *gy = grad_y ? grad_y + i * n : NULL;
            const uint16_t *gc = grad_copy ? grad_copy + i * n : NULL;
#if HAVE_AVX512
            if (fast) {
                backward_row_avx512(x + i * n, w, gy, gc, n, mean[i], rstd[i], g, grad_x + i * n, gw_block, gb_block);
                continue;
            }
#endif
            (void)fast;
            backward_row_scalar(x + i * n, w, gy, gc, n, mean[i], rstd[i], g, grad_x + i * n, gw_block, gb_block);
        }
        for (Py_ssize_t j = 0; j < n; j++) {
            grad_w[j] += gw_block[j];
            grad_b[j] += gb_block[j];
        }
    }
}

static PyObject *layer_norm_forward(PyObject *self, PyObject *args) {
    PyObject *objects[7];  /* x, weight, bias, y, copy, mean, rstd */
    float eps;
    if (!PyArg_ParseTuple(args, "OOOfOOOO", &objects[0], &objects[1], &objects[2], &eps, &objects[3], &objects[4],
                          &objects[5], &objects[6]))
        return NULL;
    static const char *names[7] = {"x", "weight", "bias", "y", "copy", "mean", "rstd"};
    static const Py_ssize_t sizes[7] = {4, 4, 4, 4, 2, 4, 4};
    static const int writable[7] = {0, 0, 0, 1, 1, 1, 1};
    static const int optional[7] = {0, 0, 0, 0, 0, 0, 0};
    Py_buffer views[7];
    int present[7];
    if (get_all(objects, views, present, 7, sizes, writable, optional, names) < 0) return NULL;
    Py_ssize_t n = views[1].len / 4, count = views[0].len / 4, rows = n ? count / n : 0;
    if (n == 0 || count % n != 0 || views[2].len / 4 != n || views[3].len / 4 != count ||
        views[4].len / 2 != count || views[5].len / 4 != rows || views[6].len / 4 != rows) {
        PyErr_SetString(PyExc_ValueError, "layer_norm_forward: x and y (rows, n), weight and bias (n,), copy "
                                          "(rows, n) bf16, mean and rstd (rows,)");
    } else {
        Py_BEGIN_ALLOW_THREADS forward_rows(views[0].buf, views[1].buf, views[2].buf, rows, n, eps, views[3].buf,
                                            views[4].buf, views[5].buf, views[6].buf);
        Py_END_ALLOW_THREADS
    }
    release_all(views, present, 7);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *layer_norm_backward(PyObject *self, PyObject *args) {
    PyObject *objects[9];  /* x, weight, mean, rstd, grad_y or None, grad_copy or None, grad_x, grad_w, grad_b */
    if (!PyArg_ParseTuple(args, "OOOOOOOOO", &objects[0], &objects[1], &objects[2], &objects[3], &objects[4],
                          &objects[5], &objects[6], &objects[7], &objects[8]))
        return NULL;
    static const char *names[9] = {"x", "weight", "mean", "rstd", "grad_y", "grad_copy", "grad_x", "grad_w",
                                   "grad_b"};
    static const Py_ssize_t sizes[9] = {4, 4, 4, 4, 4, 2, 4, 4, 4};
    static const int writable[9] = {0, 0, 0, 0, 0, 0, 1, 1, 1};
    static const int optional[9] = {0, 0, 0, 0, 1, 1, 0, 0, 0};
    Py_buffer views[9];
    int present[9];
    if (get_all(objects, views, present, 9, sizes, writable, optional, names) < 0) return NULL;
    Py_ssize_t n = views[1].len / 4, count = views[0].len / 4, rows = n ? count / n : 0;
    int ok = n > 0 && count % n == 0 && views[2].len / 4 == rows && views[3].len / 4 == rows &&
             views[6].len / 4 == count && views[7].len / 4 == n && views[8].len / 4 == n &&
             (!present[4] || views[4].len / 4 == count) && (!present[5] || views[5].len / 2 == count);
    float *scratch = ok ? malloc(3 * n * sizeof(float)) : NULL;
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "layer_norm_backward: x, grad_y and grad_x (rows, n), grad_copy (rows, "
                                          "n) bf16, weight, grad_w and grad_b (n,), mean and rstd (rows,)");
    } else if (!scratch) {
        PyErr_NoMemory();
    } else {
        Py_BEGIN_ALLOW_THREADS backward_rows(views[0].buf, views[1].buf, views[2].buf, views[3].buf,
                                             present[4] ? views[4].buf : NULL, present[5] ? views[5].buf : NULL,
                                             rows, n, views[6].buf, views[7].buf, views[8].buf, scratch);
        Py_END_ALLOW_THREADS
    }
    free(scratch);
    release_all(views, present, 9);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"layer_norm_forward", layer_norm_forward, METH_VARARGS,
     "layer_norm_forward(x, weight, bias, eps, y, copy, mean, rstd): y = LayerNorm(x) over rows of weight's length "
     "and copy = y rounded to bf16 (uint16 bits); mean and rstd per row, for the backward. fp32 buffers else."},
    {"layer_norm_backward", layer_norm_backward, METH_VARARGS,
     "layer_norm_backward(x, weight, mean, rstd, grad_y, grad_copy, grad_x, grad_w, grad_b): grad_x for the "
     "gradient grad_y (fp32) plus grad_copy (bf16 bits), either None when absent; the weight's and bias's "
     "gradients added into grad_w and grad_b."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_layer_norm", NULL, -1, methods};

PyMODINIT_FUNC PyInit__layer_norm(void) { return PyModule_Create(&module); }
