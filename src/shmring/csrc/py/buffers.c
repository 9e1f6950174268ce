/*
 * py/buffers.c - address(buffer) and copy(dst, offset, src).
 *
 * A pipeline passes a large array on by reference when it lies in the run's
 * pool: address() tells where a buffer's first byte is. copy() moves an
 * array into or out of the pool with the GIL released, so that the parent's
 * source thread copying one array in and its output loop copying another
 * out run on two cores at once (a memoryview slice assignment, or bytes(),
 * holds the GIL for the whole 8 MB).
 */
#include "py/buffers.h"

#include <string.h>

/* Copies smaller than this keep the GIL: releasing it costs more. */
#define COPY_UNLOCKED (64 << 10)

PyObject *buffers_address(PyObject *m, PyObject *arg) {
    (void)m;
    Py_buffer vb;
    if (PyObject_GetBuffer(arg, &vb, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *r = PyLong_FromVoidPtr(vb.buf);
    PyBuffer_Release(&vb);
    return r;
}

PyObject *buffers_copy(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    if (n != 3) return PyErr_Format(PyExc_TypeError, "copy(dst, offset, src)");
    Py_ssize_t off = PyNumber_AsSsize_t(a[1], PyExc_OverflowError);
    if (off == -1 && PyErr_Occurred()) return NULL;
    Py_buffer d, s;
    if (PyObject_GetBuffer(a[0], &d, PyBUF_WRITABLE) < 0) return NULL;
    if (PyObject_GetBuffer(a[2], &s, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&d);
        return NULL;
    }
    if (off < 0 || off > d.len || s.len > d.len - off) {
        PyErr_Format(PyExc_ValueError, "copy of %zd bytes to offset %zd of a %zd-byte buffer",
                     s.len, off, d.len);
    } else if (s.len >= COPY_UNLOCKED) {
        /* Both buffers stay exported (the views hold them) while unlocked. */
        Py_BEGIN_ALLOW_THREADS
        memcpy((char *)d.buf + off, s.buf, (size_t)s.len);
        Py_END_ALLOW_THREADS
    } else {
        memcpy((char *)d.buf + off, s.buf, (size_t)s.len);
    }
    PyBuffer_Release(&s);
    PyBuffer_Release(&d);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}
