/* Shared by the parts of mindtransformer.data._records_c (see module.c). */

#ifndef MINDTRANSFORMER_RECORDS_H
#define MINDTRANSFORMER_RECORDS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* A buffer of an expected element format (one of `formats`), item size and shape (-1: any);
   writable when asked. Returns 0 or -1 with an error set. (arrays.c) */
int get_array(PyObject *object, Py_buffer *view, const char *name, const char *formats, Py_ssize_t itemsize,
              int ndim, Py_ssize_t rows, Py_ssize_t cols, int writable);

void crc_init(void);                                          /* encode.c */
PyObject *encode_examples(PyObject *self, PyObject *args);    /* encode.c */
PyObject *build_instances(PyObject *self, PyObject *args);    /* instances.c */
PyObject *pack_chunk(PyObject *self, PyObject *args);         /* packing.c */
extern PyTypeObject WordTableType;                            /* word_table.c */

#endif
