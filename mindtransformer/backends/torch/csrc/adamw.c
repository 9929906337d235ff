/* One AdamW step of one fp32 parameter for the torch binding on a CPU
(mindtransformer.backends.torch._adamw), with the two passes that follow it in a bf16 step folded in:
the parameter's bf16 copy for the next forward pass, and the zeroing of its gradient.

The update is torch's fused CPU AdamW (ATen's FusedAdamKernel.cpp, fp32, amsgrad and maximize off),
operation for operation in the same order and rounding:
    g = grad / grad_scale
    p = p * (1 - lr wd)                                     (when wd != 0)
    m = fma(1 - beta1, g - m, m)                             (torch's lerp, as 1 - beta1 < 0.5)
    v = fma((1 - beta2) g, g, v beta2)
    p = p + (-lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
then copy = bf16(p) (to nearest, ties to even, as torch's cast) and grad = 0. The coefficients are
made in double and rounded to fp32 as torch makes them; the two multiply-adds are fused as in
torch's build, and -ffp-contract=off keeps the compiler from fusing others: the same bits as
torch's (tested), but for a tensor's last size % 16 values, which torch's build fuses one way or
the other by their count (5 and 8 differ): there within an ulp. 16 values at a time with AVX-512
(checked at run time), the rest one at a time. */

#include <math.h>

#include "bf16.h"

typedef struct {
    float grad_scale, decay, lerp_weight, sq_weight, beta2, bias2_sqrt, eps, neg_step;
    int decays;
} Coefficients;

static void adamw_scalar(float *p, float *g, float *m, float *v, uint16_t *copy, Py_ssize_t from, Py_ssize_t n,
                         const Coefficients *c) {
    for (Py_ssize_t i = from; i < n; i++) {
        float grad = g[i] / c->grad_scale;
        float param = c->decays ? p[i] * c->decay : p[i];
        float avg = c->lerp_weight < 0.5f ? fmaf(c->lerp_weight, grad - m[i], m[i])
                                          : fmaf(-(grad - m[i]), 1.0f - c->lerp_weight, grad);
        float avg_sq = fmaf(c->sq_weight * grad, grad, v[i] * c->beta2);
        float denom = sqrtf(avg_sq) / c->bias2_sqrt + c->eps;
        param = param + c->neg_step * avg / denom;
        m[i] = avg;
        v[i] = avg_sq;
        p[i] = param;
        g[i] = 0.0f;
        if (copy) copy[i] = float_to_bf16(param);
    }
}

#if HAVE_AVX512
AVX512 static Py_ssize_t adamw_avx512(float *p, float *g, float *m, float *v, uint16_t *copy, Py_ssize_t n,
                                      const Coefficients *c) {
    if (c->lerp_weight >= 0.5f) return 0;  /* beta1 <= 0.5: torch's other lerp form, one at a time */
    const __m512 scale = _mm512_set1_ps(c->grad_scale), decay = _mm512_set1_ps(c->decay);
    const __m512 lerp_weight = _mm512_set1_ps(c->lerp_weight), sq_weight = _mm512_set1_ps(c->sq_weight);
    const __m512 beta2 = _mm512_set1_ps(c->beta2), bias2_sqrt = _mm512_set1_ps(c->bias2_sqrt);
    const __m512 eps = _mm512_set1_ps(c->eps), neg_step = _mm512_set1_ps(c->neg_step), zero = _mm512_setzero_ps();
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 grad = _mm512_div_ps(_mm512_loadu_ps(g + i), scale);
        __m512 param = _mm512_loadu_ps(p + i);
        if (c->decays) param = _mm512_mul_ps(param, decay);
        __m512 avg = _mm512_loadu_ps(m + i);
        avg = _mm512_fmadd_ps(lerp_weight, _mm512_sub_ps(grad, avg), avg);  /* torch's lerp is this fmadd */
        __m512 avg_sq = _mm512_fmadd_ps(_mm512_mul_ps(sq_weight, grad), grad, _mm512_mul_ps(_mm512_loadu_ps(v + i), beta2));
        __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(avg_sq), bias2_sqrt), eps);
        param = _mm512_add_ps(param, _mm512_div_ps(_mm512_mul_ps(neg_step, avg), denom));
        _mm512_storeu_ps(m + i, avg);
        _mm512_storeu_ps(v + i, avg_sq);
        _mm512_storeu_ps(p + i, param);
        _mm512_storeu_ps(g + i, zero);
        if (copy) store_bf16(copy + i, param);
    }
    return i;
}
#endif

static PyObject *adamw_step(PyObject *self, PyObject *args) {
    PyObject *objects[5];
    double lr, beta1, beta2, eps, weight_decay, step, grad_scale;
    if (!PyArg_ParseTuple(args, "OOOOOddddddd", &objects[0], &objects[1], &objects[2], &objects[3], &objects[4],
                          &lr, &beta1, &beta2, &eps, &weight_decay, &step, &grad_scale))
        return NULL;
    static const Py_ssize_t sizes[5] = {4, 4, 4, 4, 2};
    static const int writable[5] = {1, 1, 1, 1, 1}, optional[5] = {0, 0, 0, 0, 1};
    static const char *names[5] = {"param", "grad", "exp_avg", "exp_avg_sq", "copy"};
    Py_buffer views[5];
    int present[5];
    if (get_all(objects, views, present, 5, sizes, writable, optional, names) < 0) return NULL;
    Py_ssize_t n = views[0].len / 4;
    if (views[1].len != views[0].len || views[2].len != views[0].len || views[3].len != views[0].len ||
        (present[4] && views[4].len != n * 2)) {
        PyErr_Format(PyExc_ValueError, "adamw_step: grad, exp_avg, exp_avg_sq (and copy) must have param's %zd values",
                     n);
    } else if (!(step >= 1 && grad_scale > 0)) {
        PyErr_SetString(PyExc_ValueError, "adamw_step: step must be >= 1 and grad_scale > 0");
    } else {
        /* as torch: in double, then each rounded to fp32 where its kernel rounds it */
        double bias1 = 1 - pow(beta1, step), bias2 = 1 - pow(beta2, step);
        Coefficients c = {(float)grad_scale, (float)(1 - lr * weight_decay), (float)(1 - beta1), (float)(1 - beta2),
                          (float)beta2, (float)sqrt(bias2), (float)eps, (float)(-(lr / bias1)), weight_decay != 0};
        float *p = views[0].buf, *g = views[1].buf, *m = views[2].buf, *v = views[3].buf;
        uint16_t *copy = present[4] ? views[4].buf : NULL;
        Py_BEGIN_ALLOW_THREADS
        Py_ssize_t done = 0;
#if HAVE_AVX512
        if (have_avx512()) done = adamw_avx512(p, g, m, v, copy, n, &c);
#endif
        adamw_scalar(p, g, m, v, copy, done, n, &c);
        Py_END_ALLOW_THREADS
    }
    release_all(views, present, 5);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"adamw_step", adamw_step, METH_VARARGS,
     "adamw_step(param, grad, exp_avg, exp_avg_sq, copy, lr, beta1, beta2, eps, weight_decay, step, grad_scale): "
     "torch's fused AdamW update of the fp32 buffers param, exp_avg, exp_avg_sq from grad / grad_scale (step: the "
     "count including this one); then grad = 0 and, unless copy is None, copy = param in bf16 (uint16 bits)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_adamw", NULL, -1, methods};

PyMODINIT_FUNC PyInit__adamw(void) { return PyModule_Create(&module); }
