/* bf16 helpers shared by the torch binding's C kernels (the .c files beside it): conversions to and from fp32 (to
nearest, ties to even, as torch), their AVX-512 forms for 16 values, an AVX-512 exponential, the
run-time AVX-512 check, and typed buffers from Python objects. */

#ifndef MT_BF16_H
#define MT_BF16_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX512 1
#else
#define HAVE_AVX512 0
#endif

static inline float bf16_to_float(uint16_t bits) {
    uint32_t wide = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &wide, sizeof value);
    return value;
}

static inline uint16_t float_to_bf16(float value) {  /* to nearest, ties to even; a NaN stays a quiet NaN */
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
    return (uint16_t)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

#if HAVE_AVX512
#define AVX512 __attribute__((target("avx512f")))
#define AVX512BW __attribute__((target("avx512f,avx512bw,avx512vl")))

AVX512 static inline __m512 load_bf16(const uint16_t *p) {
    __m256i half = _mm256_loadu_si256((const __m256i *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
}

/* 16 fp32 values rounded to bf16 (as float_to_bf16), in the low 16 bits of each 32-bit lane */
AVX512 static inline __m512i round_bf16(__m512 value) {
    __m512i bits = _mm512_castps_si512(value);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
    __mmask16 nan = _mm512_cmp_ps_mask(value, value, _CMP_UNORD_Q);
    return _mm512_mask_mov_epi32(rounded, nan, _mm512_set1_epi32(0x7FC0));
}

AVX512 static inline __m512 rounded_to_bf16(__m512 value) {  /* the fp32 value of round_bf16's result */
    return _mm512_castsi512_ps(_mm512_slli_epi32(round_bf16(value), 16));
}

AVX512 static inline void store_bf16(uint16_t *p, __m512 value) {
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(round_bf16(value)));
}

/* e^y for y <= 0 (0 below -104, NaN for NaN): a degree-6 Taylor polynomial after range reduction;
   within 2.7 ulp of exp in fp32 over [-87, 0] (every 200th float, measured) */
AVX512 static inline __m512 exp_nonpositive(__m512 y) {
    y = _mm512_max_ps(_mm512_set1_ps(-104.0f), y);  /* max_ps returns its second operand if either is NaN */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(1.44269504f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), y);  /* y - n ln 2, ln 2 in two parts */
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}
#endif

static inline int have_avx512(void) {
#if HAVE_AVX512
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

static inline int have_avx512bw(void) {  /* AVX-512 with 16-bit lanes and 256-bit masked forms */
#if HAVE_AVX512
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

/* A buffer of `itemsize`-byte items, writable if asked; a clear TypeError / ValueError if not. */
static inline int get_items(PyObject *object, Py_buffer *view, Py_ssize_t itemsize, int writable, const char *name) {
    if (PyObject_GetBuffer(object, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) return -1;
    if (view->len % itemsize != 0) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes is not a whole number of %zd-byte items", name, view->len,
                     itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Buffers for objects[0..count): item sizes, writable flags; None allowed where optional[i]. */
static inline int get_all(PyObject **objects, Py_buffer *views, int *present, int count, const Py_ssize_t *sizes,
                          const int *writable, const int *optional, const char **names) {
    for (int i = 0; i < count; i++) {
        present[i] = objects[i] != Py_None;
        if (!present[i] && !optional[i]) {
            PyErr_Format(PyExc_ValueError, "%s is required", names[i]);
        } else if (!present[i] || get_items(objects[i], &views[i], sizes[i], writable[i], names[i]) == 0) {
            continue;
        }
        while (i-- > 0)
            if (present[i]) PyBuffer_Release(&views[i]);
        return -1;
    }
    return 0;
}

static inline void release_all(Py_buffer *views, const int *present, int count) {
    for (int i = 0; i < count; i++)
        if (present[i]) PyBuffer_Release(&views[i]);
}

#endif
