/*
 * py/buffers.h - buffer helpers for the pipeline's array pool
 * (shmring/_pipeline/arrays.py): where a buffer lies, and a large copy made
 * with the GIL released, and a window whose last view's end frees slots.
 */
#ifndef SHMRING_PY_BUFFERS_H
#define SHMRING_PY_BUFFERS_H

#include "py/core.h"

PyObject *buffers_address(PyObject *m, PyObject *arg);
PyObject *buffers_copy(PyObject *m, PyObject *const *a, Py_ssize_t n);
PyObject *buffers_pinned(PyObject *m, PyObject *const *a, Py_ssize_t n);

#endif
