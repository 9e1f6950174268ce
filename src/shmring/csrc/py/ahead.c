/* py/ahead.c - reading ahead on a ConsumerCore (ring/ahead.c): _ahead reads
 * a window of records and copies them out without releasing any, _settle
 * releases them by key once they are safe elsewhere (an exporting bridge:
 * once the remote host acknowledged them). While any are read ahead, the
 * one-record calls (recv, recv_many, recv_into, _peek, recv_obj...) refuse. */
#include "py/ahead.h"

#include "py/core.h"
#include "wait.h"

/* shmring._errors.InvalidArgument, looked up the first time it is raised. */
static PyObject *invalid_argument(void) {
    static PyObject *cls;
    if (!cls) {
        PyObject *m = PyImport_ImportModule("shmring._errors");
        if (m) {
            cls = PyObject_GetAttrString(m, "InvalidArgument");
            Py_DECREF(m);
        }
        if (!cls) {
            PyErr_Clear();
            return PyExc_ValueError;
        }
    }
    return cls;
}

static PyObject *raise_invalid(EndpointObject *self, const char *msg) {
    PyObject *l = endpoint_get_label(self, NULL);
    if (!l) return NULL;
    PyErr_Format(invalid_argument(), "%U: %s", l, msg);
    Py_DECREF(l);
    return NULL;
}

int ahead_refuse(EndpointObject *self, const char *what) {
    PyObject *l = endpoint_get_label(self, NULL);
    if (!l) return -1;
    PyErr_Format(invalid_argument(),
                 "%U: %s is not allowed while records read ahead (_ahead) are not settled "
                 "(%llu of them): _settle them first",
                 l, what, (unsigned long long)self->ring.ahead_n);
    Py_DECREF(l);
    return -1;
}

/* (max_count, max_bytes, timeout=None), timeout by position or keyword. */
static int parse(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **count,
                 PyObject **bytes, PyObject **timeout) {
    *timeout = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < 2 || nargs + nkw > 3) goto bad;
    *count = args[0];
    *bytes = args[1];
    if (nargs == 3) *timeout = args[2];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (!PyUnicode_Check(k) || PyUnicode_CompareWithASCIIString(k, "timeout") != 0)
            goto bad;
        *timeout = args[nargs + i];
    }
    return 0;
bad:
    PyErr_SetString(PyExc_TypeError,
                    "_ahead(max_count, max_bytes, timeout=None): bad arguments");
    return -1;
}

/* One record read ahead: appends (key, copy) to out and keeps it. 0, or -1
 * with an error set (the record put back, nothing kept). */
static int keep_one(EndpointObject *self, PyObject *out, PyObject *b) {
    ring_t *r = &self->ring;
    PyObject *t = PyTuple_New(2);
    PyObject *key = t ? PyLong_FromUnsignedLongLong(r->held_pos) : NULL;
    int rc = -1;
    if (key) {
        PyTuple_SET_ITEM(t, 0, key);
        Py_INCREF(b);
        PyTuple_SET_ITEM(t, 1, b);
        /* Holds an int and bytes only: nothing for the collector to look at
         * (as CPython's own lazy untracking of such tuples decides). */
        PyObject_GC_UnTrack(t);
        rc = PyList_Append(out, t);
    }
    Py_XDECREF(t);
    if (rc < 0) {
        ring_ahead_putback(r);
        return -1;
    }
    if (ring_ahead_keep(r) < 0) { /* put back by it */
        (void)PyList_SetSlice(out, PyList_GET_SIZE(out) - 1, PyList_GET_SIZE(out), NULL);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

PyObject *ahead_read(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames) {
    PyObject *countobj, *bytesobj, *timeout;
    int64_t deadline;
    if (parse(args, nargs, kwnames, &countobj, &bytesobj, &timeout) < 0) return NULL;
    if (endpoint_check_open(self) < 0) return NULL;
    ring_t *r = &self->ring;
    if (self->view || r->held)
        return raise_invalid(self, "a record view is held on this consumer: release it first");
    Py_ssize_t maxn = PyNumber_AsSsize_t(countobj, PyExc_OverflowError);
    if (maxn == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t maxb = PyNumber_AsSsize_t(bytesobj, PyExc_OverflowError);
    if (maxb == -1 && PyErr_Occurred()) return NULL;
    if (maxn < 1) return raise_invalid(self, "_ahead(max_count): max_count must be >= 1");
    if (maxb < 0) return raise_invalid(self, "_ahead(max_bytes): max_bytes must be >= 0");
    if (endpoint_deadline(self, timeout, &deadline) < 0) return NULL;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    uint64_t total = 0;
    for (;;) {
        const char *p;
        uint64_t n;
        int rc = ring_ahead_peek(r, &p, &n);
        if (rc == RING_OK) {
            if (PyList_GET_SIZE(out) > 0 && total + n > (uint64_t)maxb) {
                ring_ahead_putback(r); /* for the next call */
                break;
            }
            PyObject *b = PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
            if (!b) {
                ring_ahead_putback(r);
                goto fail;
            }
            if (ring_validate(r) != RING_OK) { /* overwritten under the copy: jumped ahead */
                Py_DECREF(b);
                continue;
            }
            int k = keep_one(self, out, b);
            Py_DECREF(b);
            if (k < 0) goto fail;
            total += n;
            if (PyList_GET_SIZE(out) >= maxn) break;
            continue;
        }
        if (rc == RING_LAPPED) continue;
        if (PyList_GET_SIZE(out) > 0) break; /* an error or end of stream: on the next call */
        if (rc != RING_AGAIN) {
            raise_ring(self, rc);
            goto fail;
        }
        if (deadline >= 0 && mono_ns() >= deadline) break;
        if (PyErr_CheckSignals() < 0) goto fail;
        int w = endpoint_wait(self, 0, deadline);
        if (w < 0) goto fail;
        if (w > 0) break;
    }
    return out;
fail:
    if (PyList_GET_SIZE(out) > 0) {
        /* What was read ahead is returned (its keys are needed to settle it);
         * the error surfaces on the next call, as recv_many does. */
        PyErr_Clear();
        return out;
    }
    Py_DECREF(out);
    return NULL;
}

PyObject *ahead_settle(EndpointObject *self, PyObject *keyobj) {
    if (endpoint_check_open(self) < 0) return NULL;
    if (!PyLong_Check(keyobj)) {
        PyErr_Format(PyExc_TypeError, "_settle(key): key must be an int, not %.100s",
                     Py_TYPE(keyobj)->tp_name);
        return NULL;
    }
    unsigned long long key = PyLong_AsUnsignedLongLong(keyobj);
    if (key == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return NULL;
        PyErr_Clear();
        return raise_invalid(self, "_settle(key): key must be an int in [0, 2**64)");
    }
    uint64_t count = 0;
    if (ring_ahead_settle(&self->ring, (uint64_t)key, &count) != RING_OK)
        return raise_ring(self, RING_LEASE); /* the others are settled */
    return PyLong_FromUnsignedLongLong(count);
}

PyObject *ahead_get_count(EndpointObject *self, void *unused) {
    (void)unused;
    return PyLong_FromUnsignedLongLong(self->ring.ahead_n);
}
