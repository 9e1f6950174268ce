/* py/pipe_batch.c - a pipeline's parent moves plain values in batches:
 * ProducerCore._send_items (the source's feeder: items of an iterator into
 * the first edge) and ConsumerCore._recv_values (the run's outputs: values
 * out of the last edge), many records per call, none of them waited for.
 *
 * Why: the feeder and the loop over a run's outputs are two threads of one
 * process, so one GIL: with map stages of one C call per item
 * (py/link_map.c), the Python of these two loops was what bounded a run of
 * small items. Each call here does what the Python did for each record in
 * turn (shmring/_pipeline/run.py: _feed, _outputs) and stops at the first
 * record it does not do, which the Python then does as before.
 *
 * Record format (shmring/_pipeline/item.py): the ring's link header
 * (LINK_HDR: item, attempts, done), 8 bytes of kind, depth and path (all
 * zero for a value at the top of its item), then a value record. */
#include "py/core.h"

#include <string.h>

#include "atomics.h"
#include "value/value.h"

#define PLAIN_PREFIX 8u

/* (iterator, first, max_n) -> (sent, obj, exhausted). Sends up to max_n
 * items taken from iterator, item ids first, first + 1, ..., while each is a
 * plain value that fits VALUE_STACK_BYTES and its record fits the ring now.
 * obj is the item taken and not sent (the caller sends it; it is not lost),
 * or None; exhausted is True once the iterator has ended. An exception from
 * the iterator propagates (the items before it are sent). */
PyObject *pipe_send_items(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "_send_items(iterator, first, max_n)");
    unsigned long long first = PyLong_AsUnsignedLongLong(args[1]);
    Py_ssize_t max_n = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred() || endpoint_check_open(self) < 0) return NULL;
    ring_t *r = &self->ring;
    if (r->claimed) {
        PyErr_SetString(PyExc_RuntimeError, "a claim is open on this producer");
        return NULL;
    }
    unsigned char rec[LINK_HDR + PLAIN_PREFIX + VALUE_STACK_BYTES];
    Py_ssize_t sent = 0;
    PyObject *left = NULL;
    int exhausted = 0;
    while (sent < max_n) {
        PyObject *obj = PyIter_Next(args[0]);
        if (!obj) {
            if (PyErr_Occurred()) return NULL;
            exhausted = 1;
            break;
        }
        size_t size;
        int rc = value_encode(obj, rec + LINK_HDR + PLAIN_PREFIX, VALUE_STACK_BYTES, &size);
        uint64_t n = LINK_HDR + PLAIN_PREFIX + size;
        char *dst;
        /* SYNC(eos): acquire of end-of-stream; pairs with its seq-cst store by _core.store32
         * (py/module.c m_store32) in shmring/_channel (close_send). */
        if (rc != VALUE_OK || size > VALUE_STACK_BYTES || n > r->max_message ||
            ld32_acq(r->base, OFF_EOS) || ring_claim(r, n, &dst) != RING_OK) {
            if (rc == VALUE_ERR) PyErr_Clear(); /* the caller's send says what is wrong */
            left = obj;
            break;
        }
        uint64_t item = first + (uint64_t)sent;
        memcpy(rec, &item, 8);
        memset(rec + 8, 0, LINK_HDR - 8 + PLAIN_PREFIX);
        memcpy(dst, rec, n);
        Py_DECREF(obj);
        rc = ring_commit(r, n);
        if (rc != RING_OK) return raise_ring(self, rc);
        sent++;
    }
    if (r->batch) ring_flush(r);
    return Py_BuildValue("(nNO)", sent, left ? left : Py_NewRef(Py_None),
                         exhausted ? Py_True : Py_False);
}

/* (max_n, max_bytes) -> list: the values of up to max_n records there now,
 * each one that holds a value at the top of its item; stops at the first
 * that does not, left held so that the caller's _peek gets it at once, at
 * anything else the caller's _peek would raise (it raises it then), and
 * after the record that brings what it took to max_bytes. The values taken
 * are out of the ring and not yet the caller's: the bounds keep that little. */
PyObject *pipe_recv_values(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) return PyErr_Format(PyExc_TypeError, "_recv_values(max_n, max_bytes)");
    Py_ssize_t max_n = PyLong_AsSsize_t(args[0]);
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[1]);
    if (PyErr_Occurred() || endpoint_check_open(self) < 0) return NULL;
    Py_ssize_t took = 0;
    if (self->view || self->stream) {
        PyErr_SetString(PyExc_RuntimeError, "_recv_values: a record is held on this consumer");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    ring_t *r = &self->ring;
    while (PyList_GET_SIZE(out) < max_n && took < max_bytes) {
        const char *p;
        uint64_t n;
        int rc = consumer_take(self, -1, 1, &p, &n);
        if (rc != 0) {
            if (rc < 0) PyErr_Clear(); /* end of stream, or worse: _peek raises it */
            break;
        }
        const unsigned char *body = (const unsigned char *)p + LINK_HDR;
        static const unsigned char plain[PLAIN_PREFIX] = {0};
        if (n < LINK_HDR + PLAIN_PREFIX + 1 || memcmp(body, plain, PLAIN_PREFIX) != 0 ||
            body[PLAIN_PREFIX] != VALUE_TAG)
            break; /* held: the caller's _peek takes this same record */
        /* Building objects can run a collection, whose finalizers may close
         * this endpoint from another thread: busy makes close() wait for us
         * instead of unmapping the record we read (as py/objects.c). */
        endpoint_enter(self);
        PyObject *v = value_decode((const char *)body + PLAIN_PREFIX,
                                   (size_t)(n - LINK_HDR - PLAIN_PREFIX));
        int closing = self->closing;
        if (!v) {
            /* Malformed: left held, for the caller's general path to report. */
            PyErr_Clear();
            if (closing) endpoint_leave(self);
            else self->busy--;
            break;
        }
        rc = ring_release(r);
        if (closing) {
            endpoint_leave(self); /* the value is ours; the mapping goes now */
            PyErr_Clear();
        } else {
            self->busy--;
        }
        if (rc != RING_OK) { /* leased away meanwhile: another consumer has it */
            Py_DECREF(v);
            break;
        }
        took += (Py_ssize_t)n;
        int app = PyList_Append(out, v);
        Py_DECREF(v);
        if (app < 0) {
            Py_DECREF(out);
            return NULL;
        }
        if (closing) break;
    }
    return out;
}
