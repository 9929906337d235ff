/* Arrays from Python through the buffer protocol (no numpy headers needed to build). */

#include "records.h"

/* A buffer of an expected element format and shape; writable when asked. Returns 0 or -1 (error set). */
int get_array(PyObject *object, Py_buffer *view, const char *name, const char *formats, Py_ssize_t itemsize,
              int ndim, Py_ssize_t rows, Py_ssize_t cols, int writable) {
    if (PyObject_GetBuffer(object, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    const char *format = view->format ? view->format : "B";
    if (*format == '<' || *format == '=' || *format == '@') format++;
    int ok = view->itemsize == itemsize && strlen(format) == 1 && strchr(formats, *format) && view->ndim == ndim &&
             (rows < 0 || view->shape[0] == rows) && (ndim < 2 || cols < 0 || view->shape[1] == cols);
    if (!ok) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s: wrong dtype or shape", name);
        return -1;
    }
    return 0;
}

