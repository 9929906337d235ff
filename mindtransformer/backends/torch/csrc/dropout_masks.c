/* Dropout masks for the torch binding on a CPU (mindtransformer.backends.torch._dropout_masks).

Optional: setup.py builds it when a C compiler is there; without it ops.DropoutMasks makes the
same masks in numpy (the tests compare both).

keep_mask: dropout's keep masks as bf16 / fp16 bits, 1.0 where a 16-bit level drawn from numpy's
SFC64 is >= threshold, else 0: the same draws and the same masks as numpy's
`SFC64.random_raw(...).view(np.uint16)` (ops.DropoutMasks), in one pass where numpy's way makes
five (draw, view, slice, compare, multiply).

Arrays travel through the buffer protocol (numpy views of the tensors' bits), so building needs
neither numpy's nor torch's headers. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static inline uint64_t sfc64_next(uint64_t *s) {  /* numpy's sfc64_next: s = a, b, c, counter */
    const uint64_t tmp = s[0] + s[1] + s[3]++;
    s[0] = s[1] ^ (s[1] >> 11);
    s[1] = s[2] + (s[2] << 3);
    s[2] = ((s[2] << 24) | (s[2] >> 40)) + tmp;
    return tmp;
}

static void keep_mask_loop(uint64_t *state, uint16_t *out, Py_ssize_t rows, Py_ssize_t per_row, uint16_t threshold,
                           uint16_t one_bits) {
    for (Py_ssize_t row = 0; row < rows; row++) {  /* each row starts on a fresh draw, as in numpy's reshape */
        uint16_t *o = out + row * per_row;
        Py_ssize_t j = 0;
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

/* A buffer of `itemsize`-byte items, writable if asked; a clear TypeError / ValueError if not. */
static int get_items(PyObject *object, Py_buffer *view, Py_ssize_t itemsize, int writable, const char *name) {
    if (PyObject_GetBuffer(object, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) return -1;
    if (view->len % itemsize != 0) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes is not a whole number of %zd-byte items", name, view->len,
                     itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
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

static PyMethodDef methods[] = {
    {"keep_mask", keep_mask, METH_VARARGS,
     "keep_mask(state, out, rows, threshold, one_bits): out (rows * per_row uint16) = one_bits where the next 16-bit "
     "level of numpy's SFC64 (state: its 4 uint64, advanced in place; each row starts on a fresh draw) is >= "
     "threshold, else 0."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_dropout_masks", NULL, -1, methods};

PyMODINIT_FUNC PyInit__dropout_masks(void) { return PyModule_Create(&module); }
