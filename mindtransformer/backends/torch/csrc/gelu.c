/* The exact (erf) GELU's backward pass in bf16 for the torch binding on a CPU
(mindtransformer.backends.torch._gelu).

gelu_backward_bf16: grad_z = grad * (Phi(z) + z phi(z)), Phi the normal distribution function and
phi its density, in fp32 and rounded once to bf16, as torch's gelu_backward. Phi comes from erf by
Abramowitz and Stegun 7.1.26 (the polynomial torch's own vectorized erf uses), written for the
tail: Phi(-|z|) = t poly(t) exp(-z^2 / 2) / 2 with t = 1 / (1 + 0.3275911 |z| / sqrt 2), so that
negative z keep their relative precision; the same exponential is phi's, so each value takes one
exponential where torch takes two. 16 values at a time with AVX-512 (checked at run time), else
with libm's erff and expf one at a time. Optional like dropout.c: without it torch's runs. */

#include <math.h>

#include "bf16.h"

#define SQRT_HALF 0.70710678f
#define INV_SQRT_2PI 0.39894228f

static float gelu_slope(float z) {  /* d GELU / dz = Phi(z) + z phi(z) */
    return 0.5f * (1.0f + erff(z * SQRT_HALF)) + z * INV_SQRT_2PI * expf(-0.5f * z * z);
}

#if HAVE_AVX512
AVX512 static Py_ssize_t gelu_backward_avx512(const uint16_t *grad, const uint16_t *z, uint16_t *out, Py_ssize_t n) {
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = load_bf16(z + i);
        __m512 a = _mm512_mul_ps(_mm512_abs_ps(v), _mm512_set1_ps(SQRT_HALF));
        __m512 e = exp_nonpositive(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a));  /* exp(-z^2 / 2) */
        __m512 d = _mm512_fmadd_ps(a, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f));
        __m512 t = _mm512_rcp14_ps(d);  /* 1 / d to 2^-14, then one Newton step: to fp32's precision */
        t = _mm512_mul_ps(t, _mm512_fnmadd_ps(d, t, _mm512_set1_ps(2.0f)));
        __m512 q = _mm512_set1_ps(1.061405429f);
        q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(-1.453152027f));
        q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(1.421413741f));
        q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(-0.284496736f));
        q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(0.254829592f));
        __m512 tail = _mm512_mul_ps(_mm512_mul_ps(q, t), _mm512_mul_ps(e, _mm512_set1_ps(0.5f)));  /* Phi(-|z|) */
        __mmask16 positive = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ);
        __m512 cdf = _mm512_mask_sub_ps(tail, positive, _mm512_set1_ps(1.0f), tail);
        __m512 slope = _mm512_fmadd_ps(_mm512_mul_ps(v, e), _mm512_set1_ps(INV_SQRT_2PI), cdf);
        store_bf16(out + i, _mm512_mul_ps(load_bf16(grad + i), slope));
    }
    return i;
}
#endif

static void gelu_backward_loop(const uint16_t *grad, const uint16_t *z, uint16_t *out, Py_ssize_t n) {
    Py_ssize_t done = 0;
#if HAVE_AVX512
    if (have_avx512()) done = gelu_backward_avx512(grad, z, out, n);
#endif
    for (Py_ssize_t i = done; i < n; i++) out[i] = float_to_bf16(bf16_to_float(grad[i]) * gelu_slope(bf16_to_float(z[i])));
}

static PyObject *gelu_backward_bf16(PyObject *self, PyObject *args) {
    PyObject *grad_object, *z_object, *out_object;
    if (!PyArg_ParseTuple(args, "OOO", &grad_object, &z_object, &out_object)) return NULL;
    Py_buffer grad, z, out;
    if (get_items(grad_object, &grad, 2, 0, "grad") < 0) return NULL;
    if (get_items(z_object, &z, 2, 0, "z") < 0) goto release_grad;
    if (get_items(out_object, &out, 2, 1, "out") < 0) goto release_z;
    if (grad.len != z.len || z.len != out.len) {
        PyErr_SetString(PyExc_ValueError, "gelu_backward_bf16: grad, z and out of one count");
    } else {
        Py_BEGIN_ALLOW_THREADS gelu_backward_loop(grad.buf, z.buf, out.buf, z.len / 2);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&out);
release_z:
    PyBuffer_Release(&z);
release_grad:
    PyBuffer_Release(&grad);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"gelu_backward_bf16", gelu_backward_bf16, METH_VARARGS,
     "gelu_backward_bf16(grad, z, out): out = grad * GELU'(z) (exact erf GELU), bf16 bits as uint16 buffers of one "
     "count, rounded once."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_gelu", NULL, -1, methods};

PyMODINIT_FUNC PyInit__gelu(void) { return PyModule_Create(&module); }
