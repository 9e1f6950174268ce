/* py/link.c - the linked commit (ring/link.c) as methods of the endpoint
 * cores, for shmring's pipelines: a worker takes an input with
 * ConsumerCore._link_take, sends each output with ProducerCore._link_send (or
 * _link_claim and _link_commit, to write in place), and ends an input with
 * no more outputs with ConsumerCore._link_finish. Each is one call. */
#include "py/core.h"

#include <string.h>

#include "atomics.h"
#include "py/link.h"

int link_as_u64(PyObject *o, uint64_t *v) {
    unsigned long long x = PyLong_AsUnsignedLongLong(o);
    if (x == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *v = x;
    return 0;
}

/* Decrements the u64 at offset of buffer counter. */
static int count_down(PyObject *counter, PyObject *offset) {
    uint64_t off = 0;
    if (offset && link_as_u64(offset, &off) < 0) return -1;
    Py_buffer vb;
    if (PyObject_GetBuffer(counter, &vb, PyBUF_WRITABLE) < 0) return -1;
    if (off % 8 || off + 8 > (uint64_t)vb.len) {
        PyBuffer_Release(&vb);
        PyErr_SetString(PyExc_ValueError, "_link_take: counter offset outside the buffer");
        return -1;
    }
    /* SYNC(py-word), SYNC(inflight): a pipeline's count of items waiting in an edge; pairs with
     * its adds by _core.fetch_add (py/module.c m_fetch_add) in shmring/_pipeline/board.py. */
    fadd_sc(vb.buf, off, (uint64_t)-1);
    PyBuffer_Release(&vb);
    return 0;
}

/* The consumer an output is linked to: open, holding a record it began. */
static EndpointObject *linked_input(PyObject *o) {
    if (!PyObject_TypeCheck(o, &ConsumerType)) {
        PyErr_SetString(PyExc_TypeError, "a linked send needs the Consumer its input came from");
        return NULL;
    }
    EndpointObject *in = (EndpointObject *)o;
    if (endpoint_check_open(in) < 0) return NULL;
    /* SYNC(link): our own link word, read back (ring_link_begin stored it). */
    if (!in->ring.held ||
        ld_acq(in->ring.base, in->ring.slot_off + SLOT_LINK_IN) != in->ring.held_pos + 1) {
        PyErr_SetString(PyExc_RuntimeError, "the consumer holds no input taken with _link_take");
        return NULL;
    }
    return in;
}

/* (timeout=None, single=False, counter=None, offset=0, region=0). region: this
 * region's id (its inode), recorded for a forced recovery. counter: a writable
 * buffer whose u64 at offset is decremented the first time a record is taken
 * (a pipeline's count of items waiting in an edge), before its attempt is
 * counted: a taker killed in between leaves the count one low, never high. */
int link_take_raw(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                  const char **pp, uint64_t *pn, uint64_t *item, uint32_t *attempts,
                  uint32_t *done) {
    if (nargs > 5) {
        PyErr_SetString(PyExc_TypeError, "_link_take(timeout=None, single=False, "
                                         "counter=None, offset=0, region=0)");
        return -1;
    }
    if (nargs == 5 && link_as_u64(args[4], &self->ring.link_region) < 0) return -1;
    int64_t deadline;
    if (endpoint_check_open(self) < 0 ||
        endpoint_deadline(self, nargs >= 1 ? args[0] : Py_None, &deadline) < 0)
        return -1;
    int single = 0;
    if (nargs >= 2 && PyLong_Check(args[1])) {
        single = (int)PyLong_AsLong(args[1]);
        if (single < 0 || single > 2) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "single is 0, 1 or 2");
            return -1;
        }
    } else if (nargs >= 2 && (single = PyObject_IsTrue(args[1])) < 0) {
        return -1;
    }
    ring_t *r = &self->ring;
    if (r->pattern != PATTERN_MPMC) {
        PyErr_SetString(PyExc_ValueError, "a linked commit takes its input from an mpmc "
                                          "channel");
        return -1;
    }
    const char *p;
    uint64_t n;
    if (consumer_take(self, deadline, 0, &p, &n) != 0) return -1;
    if (nargs >= 3 && args[2] != Py_None && n >= LINK_HDR) {
        uint32_t before;
        memcpy(&before, p + LINK_HDR_ATTEMPTS, 4);
        if (before == 0 && count_down(args[2], nargs >= 4 ? args[3] : NULL) < 0) {
            ring_unhold(r);
            return -1;
        }
    }
    int rc = ring_link_begin(r, single, item, attempts, done);
    if (rc == RING_LEASE) { /* handed back already */
        raise_ring(self, rc);
        return -1;
    }
    if (rc != RING_OK) {
        ring_unhold(r); /* not consumed: it goes back */
        raise_ring(self, rc);
        return -1;
    }
    *pp = p;
    *pn = n;
    return 0;
}

PyObject *link_take(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const char *p;
    uint64_t n, item;
    uint32_t attempts, done;
    if (link_take_raw(self, args, nargs, &p, &n, &item, &attempts, &done) < 0) return NULL;
    PyObject *view = link_input_view(self, p, n);
    if (!view) return NULL;
    return Py_BuildValue("(KIIN)", (unsigned long long)item, attempts, done, view);
}

PyObject *link_input_view(EndpointObject *in, const char *p, uint64_t n) {
    endpoint_drop_view(in);
    in->view = PyMemoryView_FromMemory((char *)p + LINK_HDR, (Py_ssize_t)(n - LINK_HDR),
                                       PyBUF_READ);
    if (!in->view) return NULL;
    Py_INCREF(in->view);
    return in->view;
}

PyObject *link_many(EndpointObject *self, PyObject *unused) {
    (void)unused;
    if (!linked_input((PyObject *)self)) return NULL;
    ring_link_many(&self->ring);
    Py_RETURN_NONE;
}

PyObject *link_finish(EndpointObject *self, PyObject *unused) {
    (void)unused;
    if (endpoint_check_open(self) < 0) return NULL;
    endpoint_drop_view(self);
    if (ring_link_finish(&self->ring) != RING_OK) return raise_ring(self, RING_LEASE);
    Py_RETURN_NONE;
}

/* Claims n payload bytes after the link header, waiting for space. */
int link_claim_space(EndpointObject *self, EndpointObject *in, uint64_t n, uint64_t item,
                     uint64_t region, int64_t deadline, char **dst) {
    ring_t *r = &self->ring;
    if (r->claimed) {
        PyErr_SetString(PyExc_RuntimeError, "a claim is open on this producer");
        return -1;
    }
    for (;;) {
        int rc = ring_link_claim(r, &in->ring, n, item, region, dst);
        if (rc == RING_OK) return 0;
        if (rc == RING_TOOBIG) {
            raise_too_large(self, n + LINK_HDR);
            return -1;
        }
        if (rc != RING_AGAIN) {
            raise_ring(rc == RING_LEASE ? in : self, rc);
            return -1;
        }
        if (producer_wait_space(self, deadline) < 0) return -1;
    }
}

/* (consumer, n, item, region, timeout) for _link_claim; _link_send takes the
 * data instead of n, and last after region. */
PyObject *link_claim(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 4 || nargs > 5)
        return PyErr_Format(PyExc_TypeError, "_link_claim(consumer, n, item, region, "
                                             "timeout=None)");
    EndpointObject *in = linked_input(args[0]);
    uint64_t n, item, region;
    int64_t deadline;
    if (!in || endpoint_check_open(self) < 0 || link_as_u64(args[1], &n) < 0 ||
        link_as_u64(args[2], &item) < 0 || link_as_u64(args[3], &region) < 0 ||
        endpoint_deadline(self, nargs == 5 ? args[4] : Py_None, &deadline) < 0)
        return NULL;
    char *dst;
    if (link_claim_space(self, in, n, item, region, deadline, &dst) < 0) return NULL;
    self->view = PyMemoryView_FromMemory(dst, (Py_ssize_t)n, PyBUF_WRITE);
    if (!self->view) {
        ring_link_abort(&self->ring, &in->ring);
        return NULL;
    }
    Py_INCREF(self->view);
    return self->view;
}

/* (consumer, nbytes=None, last=False) */
PyObject *link_commit(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 3)
        return PyErr_Format(PyExc_TypeError, "_link_commit(consumer, nbytes=None, last=False)");
    EndpointObject *in = linked_input(args[0]);
    if (!in || endpoint_check_open(self) < 0) return NULL;
    ring_t *r = &self->ring;
    if (!r->claimed) {
        PyErr_SetString(PyExc_RuntimeError, "no claim is open");
        return NULL;
    }
    uint64_t used = r->claim_len - LINK_HDR;
    if (nargs >= 2 && args[1] != Py_None) {
        if (link_as_u64(args[1], &used) < 0) return NULL;
        if (used > r->claim_len - LINK_HDR)
            return PyErr_Format(PyExc_ValueError, "_link_commit: nbytes beyond the claim");
    }
    int last = nargs >= 3 ? PyObject_IsTrue(args[2]) : 0;
    if (last < 0) return NULL;
    endpoint_drop_view(self);
    if (last) endpoint_drop_view(in);
    int rc = ring_link_commit(r, &in->ring, used, last);
    if (rc != RING_OK) return raise_ring(rc == RING_LEASE ? in : self, rc);
    Py_RETURN_NONE;
}

PyObject *link_abort(EndpointObject *self, PyObject *consumer) {
    EndpointObject *in = linked_input(consumer);
    if (!in || endpoint_check_open(self) < 0) return NULL;
    endpoint_drop_view(self);
    ring_link_abort(&self->ring, &in->ring);
    Py_RETURN_NONE;
}

/* (consumer, data, item, region, last=False, timeout=None) */
PyObject *link_send(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 4 || nargs > 6)
        return PyErr_Format(PyExc_TypeError, "_link_send(consumer, data, item, region, "
                                             "last=False, timeout=None)");
    EndpointObject *in = linked_input(args[0]);
    uint64_t item, region;
    int64_t deadline;
    if (!in || endpoint_check_open(self) < 0 || link_as_u64(args[2], &item) < 0 ||
        link_as_u64(args[3], &region) < 0)
        return NULL;
    int last = nargs >= 5 ? PyObject_IsTrue(args[4]) : 0;
    if (last < 0 || endpoint_deadline(self, nargs == 6 ? args[5] : Py_None, &deadline) < 0)
        return NULL;
    Py_buffer vb;
    if (PyObject_GetBuffer(args[1], &vb, PyBUF_SIMPLE) < 0) return NULL;
    char *dst;
    if (link_claim_space(self, in, (uint64_t)vb.len, item, region, deadline, &dst) < 0) {
        PyBuffer_Release(&vb);
        return NULL;
    }
    memcpy(dst, vb.buf, (size_t)vb.len);
    PyBuffer_Release(&vb);
    if (last) endpoint_drop_view(in);
    int rc = ring_link_commit(&self->ring, &in->ring, (uint64_t)vb.len, last);
    if (rc != RING_OK) return raise_ring(rc == RING_LEASE ? in : self, rc);
    Py_RETURN_NONE;
}
