/* py/endpoint.c - what a producer and a consumer handle have in common: the
 * mapping they hold, timeouts, waiting without the GIL, and errors. */
#include "py/core.h"

#include <limits.h>

#include "atomics.h"
#include "wait.h"

PyObject *E_WouldBlock, *E_Timeout, *E_EndOfStream, *E_Broken, *E_Corrupt, *E_TooLarge,
    *E_Closed, *E_Revoked;

int endpoint_init(EndpointObject *self, PyObject *args, int consumer) {
    PyObject *mapping;
    unsigned int slot;
    if (!PyArg_ParseTuple(args, "OI", &mapping, &slot)) return -1;
    if (self->open) {
        PyErr_SetString(PyExc_RuntimeError, "endpoint already initialised");
        return -1;
    }
    if (PyObject_GetBuffer(mapping, &self->buf, PyBUF_WRITABLE) < 0) return -1;
    int rc = ring_init(&self->ring, self->buf.buf, (uint64_t)self->buf.len, slot, consumer);
    if (rc != RING_OK) {
        PyErr_Format(E_Corrupt ? E_Corrupt : PyExc_ValueError, "corrupt region: %s",
                     self->ring.err);
        PyBuffer_Release(&self->buf);
        return -1;
    }
    self->ring.cancel = &self->closing;
    self->open = 1;
    return 0;
}

void endpoint_drop_view(EndpointObject *self) {
    if (!self->view) return;
    /* A view handed out for a claim or a record must not outlive it. If the
     * caller still exports it (say, to numpy), it cannot be revoked; it then
     * points at ring bytes that will be reused. */
    PyObject *r = PyObject_CallMethod(self->view, "release", NULL);
    if (r) Py_DECREF(r);
    else PyErr_Clear();
    Py_CLEAR(self->view);
}

void endpoint_enter(EndpointObject *self) { self->busy++; }

int endpoint_leave(EndpointObject *self) {
    self->busy--;
    if (!self->closing) return 0;
    if (self->busy == 0 && self->open) {
        self->open = 0;
        PyBuffer_Release(&self->buf);
    }
    PyErr_SetString(E_Closed, "the endpoint was closed while this call waited");
    return -1;
}

PyObject *endpoint_close(EndpointObject *self, PyObject *unused) {
    (void)unused;
    if (self->open && !self->closing) {
        endpoint_drop_view(self);
        if (self->ring.batch) ring_flush(&self->ring);
        if (self->busy) {
            /* Another thread waits or copies with the GIL released and still
             * uses the mapping: wake it; the last one out releases it. */
            self->closing = 1;
            /* SYNC(futex): bump and wake both directions: pairs with the futex wait in shm_wait,
             * whose caller then sees closing. */
            fadd32_sc(self->ring.base, OFF_DATA_FUTEX, 1);
            futex_wake_word(self->ring.base + OFF_DATA_FUTEX, INT_MAX);
            /* SYNC(futex): the space direction likewise. */
            fadd32_sc(self->ring.base, OFF_SPACE_FUTEX, 1);
            futex_wake_word(self->ring.base + OFF_SPACE_FUTEX, INT_MAX);
        } else {
            ring_unhold(&self->ring); /* consumers: a held record goes back */
            self->open = 0;
            PyBuffer_Release(&self->buf);
        }
    }
    Py_RETURN_NONE;
}

void endpoint_dealloc(EndpointObject *self) {
    PyObject_GC_UnTrack(self);
    if (self->weakrefs) PyObject_ClearWeakRefs((PyObject *)self);
    if (self->open) {
        Py_CLEAR(self->view);
        self->open = 0;
        PyBuffer_Release(&self->buf);
    }
    Py_CLEAR(self->view);
    Py_CLEAR(self->stream);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

int endpoint_check_open(EndpointObject *self) {
    if (self->open && !self->closing) return 0;
    PyErr_SetString(E_Closed, "this endpoint is closed");
    return -1;
}

int parse_timeout(PyObject *obj, int64_t *deadline_ns) {
    if (obj == NULL || obj == Py_None) {
        *deadline_ns = -1;
        return 0;
    }
    double t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred()) return -1;
    if (!(t >= 0.0)) {
        PyErr_SetString(PyExc_ValueError, "timeout must be None or a number >= 0");
        return -1;
    }
    if (t > 1e9) t = 1e9;
    *deadline_ns = mono_ns() + (int64_t)(t * 1e9);
    return 0;
}

int endpoint_wait(EndpointObject *self, int space, int64_t deadline_ns) {
    for (;;) {
        int w;
        ring_t *r = &self->ring;
        endpoint_enter(self);
        Py_BEGIN_ALLOW_THREADS
        if (space)
            w = shm_wait(r->base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS, ring_ready_space, r,
                         deadline_ns);
        else
            w = shm_wait(r->base, OFF_DATA_FUTEX, OFF_DATA_WAITERS, ring_ready_data, r,
                         deadline_ns);
        Py_END_ALLOW_THREADS
        if (endpoint_leave(self) < 0) return -1;
        if (w == WAIT_SIGNAL) {
            if (PyErr_CheckSignals() < 0) return -1;
            continue;
        }
        return w == WAIT_READY ? 0 : 1;
    }
}

/* _wait(timeout=None, nbytes=0) -> bool: block until the endpoint could make
 * progress (a consumer: a message, end-of-stream or breakage; a producer:
 * room for nbytes), without taking or claiming anything. It waits on a
 * private copy of the ring state, so another thread may use the endpoint
 * meanwhile; asyncio integration waits this way in a helper thread. */
PyObject *endpoint_wait_ready(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t deadline;
    uint64_t nbytes = 0;
    if (nargs > 2) return PyErr_Format(PyExc_TypeError, "_wait(timeout=None, nbytes=0)");
    if (parse_timeout(nargs > 0 ? args[0] : NULL, &deadline) < 0) return NULL;
    if (nargs > 1) {
        nbytes = PyLong_AsUnsignedLongLong(args[1]);
        if (PyErr_Occurred()) return NULL;
    }
    if (endpoint_check_open(self) < 0) return NULL;
    PyObject *keep = (PyObject *)self;
    Py_INCREF(keep);
    ring_t copy = self->ring;
    int consumer = Py_IS_TYPE(self, &ConsumerType) || PyObject_TypeCheck(self, &ConsumerType);
    copy.want = align_up(nbytes + RECORD_HEADER, RECORD_ALIGN);
    copy.batch = 0;
    int w;
    for (;;) {
        endpoint_enter(self);
        Py_BEGIN_ALLOW_THREADS
        if (consumer)
            w = shm_wait(copy.base, OFF_DATA_FUTEX, OFF_DATA_WAITERS, ring_ready_data, &copy,
                         deadline);
        else
            w = shm_wait(copy.base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS, ring_ready_space,
                         &copy, deadline);
        Py_END_ALLOW_THREADS
        if (endpoint_leave(self) < 0) {
            Py_DECREF(keep);
            return NULL;
        }
        if (w != WAIT_SIGNAL) break;
        if (PyErr_CheckSignals() < 0) {
            Py_DECREF(keep);
            return NULL;
        }
    }
    Py_DECREF(keep);
    return PyBool_FromLong(w == WAIT_READY);
}

PyObject *raise_ring(EndpointObject *self, int rc) {
    switch (rc) {
    case RING_EOS: PyErr_SetString(E_EndOfStream, "end of stream"); break;
    case RING_BROKEN:
        PyErr_SetString(E_Broken, "the channel was marked broken (a peer died holding "
                                  "state that could not be recovered, or the region is "
                                  "being torn down)");
        break;
    case RING_REVOKED:
        PyErr_SetString(E_Revoked, "this producer held its claim longer than the supervisor's "
                                   "claim timeout (stopped or stuck), so the claim was revoked "
                                   "and consumers went on: the message was not sent");
        break;
    case RING_CORRUPT:
        PyErr_Format(E_Corrupt, "corrupt region: %s", self->ring.err);
        break;
    case RING_TOOBIG:
        PyErr_Format(E_TooLarge, "message larger than this channel's max_message (%llu bytes)",
                     (unsigned long long)self->ring.max_message);
        break;
    default: PyErr_Format(PyExc_RuntimeError, "unexpected ring status %d", rc);
    }
    return NULL;
}
