/*
 * py/buffers.c - address(buffer), copy(dst, offset, src) and
 * pinned(buffer, offset, length, on_free).
 *
 * A pipeline passes a large array on by reference when it lies in the run's
 * pool: address() tells where a buffer's first byte is. copy() moves an
 * array into or out of the pool with the GIL released, so that the parent's
 * source thread copying one array in and its output loop copying another
 * out run on two cores at once (a memoryview slice assignment, or bytes(),
 * holds the GIL for the whole 8 MB). pinned() is a read-only window on a
 * buffer that calls on_free() when the last view of it goes: the parent of
 * a run hands out arrays that lie in the pool, and their slots are freed
 * when the user lets the arrays go.
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

/* ------------------------------------------------------------ pinned -- */
typedef struct {
    PyObject_HEAD
    Py_buffer base; /* held for the window's life: the mapping stays mapped */
    char *start;
    Py_ssize_t length;
    PyObject *on_free;
} PinnedObject;

static int pinned_getbuffer(PyObject *o, Py_buffer *view, int flags) {
    PinnedObject *p = (PinnedObject *)o;
    return PyBuffer_FillInfo(view, o, p->start, p->length, 1, flags);
}

static void pinned_dealloc(PyObject *o) {
    PinnedObject *p = (PinnedObject *)o;
    PyObject *fn = p->on_free;
    p->on_free = NULL;
    if (fn != NULL) {
        PyObject *r = PyObject_CallNoArgs(fn);
        if (r == NULL) PyErr_WriteUnraisable(fn);
        Py_XDECREF(r);
        Py_DECREF(fn);
    }
    if (p->base.obj != NULL) PyBuffer_Release(&p->base);
    Py_TYPE(o)->tp_free(o);
}

static PyBufferProcs pinned_as_buffer = {pinned_getbuffer, NULL};

static PyTypeObject PinnedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shmring._core.Pinned",
    .tp_basicsize = sizeof(PinnedObject),
    .tp_dealloc = pinned_dealloc,
    .tp_as_buffer = &pinned_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A read-only window on a buffer; calls on_free() when it is collected.",
};

PyObject *buffers_pinned(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    if (n != 4) return PyErr_Format(PyExc_TypeError, "pinned(buffer, offset, length, on_free)");
    if (PyType_Ready(&PinnedType) < 0) return NULL;
    Py_ssize_t off = PyNumber_AsSsize_t(a[1], PyExc_OverflowError);
    if (off == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t len = PyNumber_AsSsize_t(a[2], PyExc_OverflowError);
    if (len == -1 && PyErr_Occurred()) return NULL;
    if (!PyCallable_Check(a[3])) return PyErr_Format(PyExc_TypeError, "on_free must be callable");
    PinnedObject *p = PyObject_New(PinnedObject, &PinnedType);
    if (p == NULL) return NULL;
    p->on_free = NULL;
    p->base.obj = NULL;
    if (PyObject_GetBuffer(a[0], &p->base, PyBUF_SIMPLE) < 0) {
        Py_DECREF(p);
        return NULL;
    }
    if (off < 0 || len < 0 || off > p->base.len || len > p->base.len - off) {
        PyErr_Format(PyExc_ValueError, "a window of %zd bytes at %zd of a %zd-byte buffer", len,
                     off, p->base.len);
        Py_DECREF(p);
        return NULL;
    }
    p->start = (char *)p->base.buf + off;
    p->length = len;
    Py_INCREF(a[3]);
    p->on_free = a[3];
    return (PyObject *)p;
}
