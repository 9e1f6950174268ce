/*
 * py/objects.c - Producer.send_obj / _send_value and Consumer.recv_obj /
 * _recv_value: a plain value straight into a claimed record and straight out
 * of a held one (value/), one C call per message each way; every other call
 * handed to the Python functions of shmring._objects.
 *
 * Why: for a small dict, pickle.dumps and pickle.loads alone cost more than
 * a whole round through the ring, and they build a bytes object on each side
 * that is copied once more.
 *
 * Sending: one encoding pass into a stack buffer, which also counts the size
 * of what does not fit; a claim of exactly that size; a memcpy. A value too
 * large for the stack buffer is encoded a second time, straight into the
 * claimed record. The claim may wait with the GIL released, when another
 * thread may change a list or dict being sent: the second pass writes only
 * inside the claim, and if the size came out different the claim is aborted
 * and the value encoded again. Encoding runs no Python code (no __hash__, no
 * __eq__: exact types only), so each pass sees one consistent object.
 *
 * Receiving: a record of another kind (a pickle, a framed record) is left
 * held and NotImplemented returned: the Python caller takes it the usual
 * way.
 */
#include "py/objects.h"

#include <string.h>

#include "atomics.h"
#include "value/value.h"
#include "wait.h"

/* ------------------------------------------------------- the endpoints -- */

static int parse_flags(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                       Py_ssize_t first, int64_t *deadline, int *nowait) {
    if (endpoint_deadline(self, nargs > first ? args[first] : NULL, deadline) < 0) return -1;
    *nowait = 0;
    if (nargs > first + 1 && (*nowait = PyObject_IsTrue(args[first + 1])) < 0) return -1;
    return 0;
}

/* Publishes the claim as Producer.send does: True, or an error (a claim
 * revoked while this process was stopped is not sent). */
static PyObject *committed(EndpointObject *self, uint64_t n) {
    int rc = ring_commit(&self->ring, n);
    if (rc != RING_OK) return raise_ring(self, rc);
    Py_RETURN_TRUE;
}

int obj_encode(PyObject *obj, unsigned char *stack, size_t *n) {
    int rc = value_encode(obj, stack, VALUE_STACK_BYTES, n);
    if (rc != VALUE_OK) return rc == VALUE_ERR ? -1 : 0;
    return 1;
}

PyObject *obj_send_encoded(EndpointObject *self, PyObject *obj, unsigned char *stack,
                             size_t n, int64_t deadline, int nowait) {
    if (endpoint_check_open(self) < 0) return NULL;
    ring_t *r = &self->ring;
    if (r->claimed) {
        PyErr_SetString(PyExc_RuntimeError, "a claim is open on this producer: "
                                            "commit or abort it first");
        return NULL;
    }
    /* SYNC(eos): acquire of end-of-stream; pairs with its seq-cst store by _core.store32
     * (py/module.c m_store32) in shmring/_channel (close_send). */
    if (ld32_acq(r->base, OFF_EOS)) {
        return raise_closed(self, NULL);
    }
    /* Too large for one record: the pickle path streams a large top-level
     * bytes-like object where the pattern allows, else raises. */
    if (n > r->max_message) Py_RETURN_FALSE;
    size_t size;
    int rc;
    for (;;) {
        char *dst;
        if (producer_claim_wait(self, n, deadline, nowait, &dst) < 0) return NULL;
        if (n <= VALUE_STACK_BYTES) {
            memcpy(dst, stack, n);
            return committed(self, n);
        }
        /* Too large for the stack: encode again, into the record itself. */
        rc = value_encode(obj, dst, n, &size);
        if (rc == VALUE_OK && size == n) return committed(self, n);
        ring_abort(r);
        if (rc == VALUE_ERR) return NULL;
        if (rc == VALUE_NO) Py_RETURN_FALSE;
        /* It changed while we waited for space: claim its new size. */
        if (size <= VALUE_STACK_BYTES) {
            rc = value_encode(obj, stack, VALUE_STACK_BYTES, &size);
            if (rc == VALUE_ERR) return NULL;
            if (rc == VALUE_NO) Py_RETURN_FALSE;
        }
        n = size;
    }
}

/* True sent, False not a plain value (nothing sent), NULL error. */
static PyObject *send_value(EndpointObject *self, PyObject *obj, int64_t deadline, int nowait) {
    unsigned char stack[VALUE_STACK_BYTES];
    size_t n;
    int rc = obj_encode(obj, stack, &n);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_FALSE;
    return obj_send_encoded(self, obj, stack, n, deadline, nowait);
}

PyObject *obj_send_value(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t deadline;
    int nowait;
    if (nargs < 1 || nargs > 3)
        return PyErr_Format(PyExc_TypeError, "_send_value(obj, timeout=None, nowait=False)");
    if (parse_flags(self, args, nargs, 1, &deadline, &nowait) < 0) return NULL;
    return send_value(self, args[0], deadline, nowait);
}

/* Takes the next record, waiting as Consumer.recv does: 0 with a record
 * held, -1 with an error set (WouldBlock when nowait finds nothing). */
static int take_wait(EndpointObject *self, int64_t deadline, int nowait, const char **p,
                     uint64_t *n) {
    int rc = consumer_take(self, deadline, nowait, p, n);
    if (rc == 1) raise_would_block(self, 0);
    return rc ? -1 : 0;
}

/* The decoded value, NotImplemented (another kind of record, left held), or
 * NULL with an error. */
PyObject *obj_recv(EndpointObject *self, int64_t deadline, int nowait) {
    if (endpoint_check_open(self) < 0) return NULL;
    /* A streamed object is being received: its chunks, and the record that
     * may cut it short, are the Python path's (shmring._objects). */
    if (self->stream) Py_RETURN_NOTIMPLEMENTED;
    if (self->view) {
        PyErr_SetString(PyExc_RuntimeError, "a record view is held on this consumer: "
                                            "release it first");
        return NULL;
    }
    ring_t *r = &self->ring;
    for (;;) {
        const char *p;
        uint64_t n;
        if (take_wait(self, deadline, nowait, &p, &n) < 0) return NULL;
        if (n == 0 || (unsigned char)p[0] != VALUE_TAG) {
            /* Not ours: it stays held, and the caller's recv() or _peek()
             * gets this same record at once. */
            Py_RETURN_NOTIMPLEMENTED;
        }
        /* Building objects can run a collection, whose finalizers may close
         * this endpoint from another thread: busy makes close() wait for us
         * instead of unmapping the record we read. */
        endpoint_enter(self);
        PyObject *v = value_decode(p, n);
        /* Lossy broadcast: the producer may have overwritten the record
         * while we read it; then drop what we built and read on. */
        if (ring_validate(r) != RING_OK) {
            Py_XDECREF(v);
            PyErr_Clear();
            if (endpoint_leave(self) < 0) return NULL;
            continue;
        }
        if (ring_release(r) != RING_OK) { /* consumed, decoded or not; unless leased away */
            Py_XDECREF(v);
            PyErr_Clear();
            raise_ring(self, RING_LEASE);
            v = NULL;
        }
        if (self->closing) {
            PyObject *type, *val, *tb;
            PyErr_Fetch(&type, &val, &tb);
            endpoint_leave(self); /* the message is ours; the mapping goes now */
            PyErr_Clear();
            PyErr_Restore(type, val, tb);
        } else {
            self->busy--;
        }
        return v;
    }
}

PyObject *obj_recv_value(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t deadline;
    int nowait;
    if (nargs > 2) return PyErr_Format(PyExc_TypeError, "_recv_value(timeout=None, nowait=False)");
    if (parse_flags(self, args, nargs, 0, &deadline, &nowait) < 0) return NULL;
    return obj_recv(self, deadline, nowait);
}

/* ------------------------------------------------ send_obj and recv_obj -- */

/* Producer.send_obj and Consumer.recv_obj are these two methods: the common
 * call (default serializer, a plain value, copy=True) costs one C call and
 * no Python frame; anything else goes to the Python functions of
 * shmring._objects, handed over once by set_object_paths(). */
static PyObject *Pickle_type;  /* shmring.PickleSerializer */
static PyObject *Send_full;    /* send_obj(self, obj, timeout=None, *, serializer=None) */
static PyObject *Send_pickled; /* _send_encoded(self, obj, timeout, serializer) */
static PyObject *Recv_full;    /* recv_obj(self, timeout=None, *, copy=True, serializer=None) */
static PyObject *Recv_other;   /* _recv_other(self, timeout, serializer) */
static PyObject *Str_serializer, *Str_timeout, *Str_copy;

/* The endpoint's serializer if it is exactly PickleSerializer (a new
 * reference), else NULL without an error; NULL with one on failure. */
static PyObject *pickle_serializer(EndpointObject *self) {
    PyObject *ser = PyObject_GetAttr((PyObject *)self, Str_serializer);
    if (ser && (PyObject *)Py_TYPE(ser) != Pickle_type) Py_CLEAR(ser);
    return ser;
}

static int kw_is(PyObject *k, PyObject *name) {
    return k == name || (PyUnicode_Check(k) && PyUnicode_Compare(k, name) == 0);
}

/* The arguments of the fast path: timeout only (positional or keyword),
 * serializer=None and copy=True allowed as keywords. 1 fast, 0 not. */
static int fast_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                     Py_ssize_t npos, int allow_copy, PyObject **timeout) {
    *timeout = nargs > npos ? args[npos] : NULL;
    if (nargs > npos + 1) return 0;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i), *v = args[nargs + i];
        if (kw_is(k, Str_timeout) && nargs == npos) *timeout = v;
        else if (kw_is(k, Str_serializer) && v == Py_None) continue;
        else if (allow_copy && kw_is(k, Str_copy) && v == Py_True) continue;
        else return 0;
    }
    return 1;
}

static PyObject *forward(PyObject *fn, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames) {
    if (!fn) {
        PyErr_SetString(PyExc_RuntimeError, "shmring._objects did not set its object paths");
        return NULL;
    }
    return call_with_self(fn, self, args, nargs, kwnames);
}

PyObject *call_with_self(PyObject *fn, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames) {
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *small[8], **all = small;
    if (nargs + nkw + 1 > 8) {
        all = PyMem_Malloc((size_t)(nargs + nkw + 1) * sizeof(PyObject *));
        if (!all) return PyErr_NoMemory();
    }
    all[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++) all[i + 1] = args[i];
    PyObject *r = PyObject_Vectorcall(fn, all, (size_t)(nargs + 1), kwnames);
    if (all != small) PyMem_Free(all);
    return r;
}

PyObject *obj_send_obj(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames) {
    PyObject *timeout, *ser;
    int64_t deadline;
    if (nargs < 1 || !fast_args(args, nargs, kwnames, 1, 0, &timeout) ||
        !(ser = pickle_serializer(self))) {
        if (PyErr_Occurred()) return NULL;
        return forward(Send_full, (PyObject *)self, args, nargs, kwnames);
    }
    PyObject *sent = NULL;
    if (endpoint_deadline(self, timeout, &deadline) == 0) sent = send_value(self, args[0], deadline, 0);
    if (sent == Py_False) {
        /* Not a plain value: pickle it, as send_obj always did. */
        Py_DECREF(sent);
        PyObject *call[4] = {(PyObject *)self, args[0], timeout ? timeout : Py_None, ser};
        sent = PyObject_Vectorcall(Send_pickled, call, 4, NULL);
        Py_DECREF(ser);
        return sent;
    }
    Py_DECREF(ser);
    if (!sent) return NULL;
    Py_DECREF(sent);
    Py_RETURN_NONE;
}

PyObject *obj_recv_obj(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames) {
    PyObject *timeout, *ser;
    int64_t deadline;
    if (!fast_args(args, nargs, kwnames, 0, 1, &timeout) || !(ser = pickle_serializer(self))) {
        if (PyErr_Occurred()) return NULL;
        return forward(Recv_full, (PyObject *)self, args, nargs, kwnames);
    }
    PyObject *v = NULL;
    if (endpoint_deadline(self, timeout, &deadline) == 0) v = obj_recv(self, deadline, 0);
    if (v == Py_NotImplemented) {
        /* Another kind of record, held (or a stream in progress): the Python
         * path takes it, with what is left of the timeout - a stream's
         * chunks may still be to come. */
        Py_DECREF(v);
        PyObject *left = Py_NewRef(Py_None);
        if (deadline >= 0) {
            int64_t ns = deadline - mono_ns();
            Py_SETREF(left, PyFloat_FromDouble(ns > 0 ? (double)ns / 1e9 : 0.0));
        }
        v = NULL;
        if (left) {
            PyObject *call[3] = {(PyObject *)self, left, ser};
            v = PyObject_Vectorcall(Recv_other, call, 3, NULL);
            Py_DECREF(left);
        }
    }
    Py_DECREF(ser);
    return v;
}

PyObject *obj_set_object_paths(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *o[5];
    if (!PyArg_UnpackTuple(args, "set_object_paths", 5, 5, &o[0], &o[1], &o[2], &o[3], &o[4]))
        return NULL;
    if (!Str_serializer) {
        Str_serializer = PyUnicode_InternFromString("serializer");
        Str_timeout = PyUnicode_InternFromString("timeout");
        Str_copy = PyUnicode_InternFromString("copy");
        if (!Str_serializer || !Str_timeout || !Str_copy) return NULL;
    }
    PyObject **dst[5] = {&Pickle_type, &Send_full, &Send_pickled, &Recv_full, &Recv_other};
    for (int i = 0; i < 5; i++) {
        Py_INCREF(o[i]);
        Py_XSETREF(*dst[i], o[i]);
    }
    Py_RETURN_NONE;
}

/* ----------------------------------------------------- module functions -- */
