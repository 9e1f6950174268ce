/* py/producer.c - the Producer handle: send, send_many, zero-copy claims.
 * Sending one message is one call into this file and no system call unless
 * a consumer sleeps. */
#include "py/core.h"

#include <string.h>

#include "atomics.h"
#include "py/link.h"
#include "py/pipe_batch.h"
#include "py/objects.h"

/* Copies this large are done with the GIL released. */
#define NOGIL_COPY 262144

typedef struct {
    const char *p;
    Py_ssize_t n;
    Py_buffer vb;
    int has_vb;
} data_t;

static int get_data(PyObject *o, data_t *d) {
    d->has_vb = 0;
    if (PyBytes_CheckExact(o)) {
        d->p = PyBytes_AS_STRING(o);
        d->n = PyBytes_GET_SIZE(o);
        return 0;
    }
    if (PyObject_GetBuffer(o, &d->vb, PyBUF_SIMPLE) < 0) return -1;
    d->has_vb = 1;
    d->p = d->vb.buf;
    d->n = d->vb.len;
    return 0;
}

static void put_data(data_t *d) {
    if (d->has_vb) PyBuffer_Release(&d->vb);
}

static int check_sendable(EndpointObject *self) {
    if (endpoint_check_open(self) < 0) return -1;
    if (self->ring.claimed) {
        PyErr_SetString(PyExc_RuntimeError, "a claim is open on this producer: "
                                            "commit or abort it first");
        return -1;
    }
    /* SYNC(eos): acquire of end-of-stream; pairs with its seq-cst store by _core.store32
     * (py/module.c m_store32) in shmring/_channel (close_send). */
    if (ld32_acq(self->ring.base, OFF_EOS)) {
        raise_closed(self, NULL);
        return -1;
    }
    return 0;
}

int producer_claim_wait(EndpointObject *self, uint64_t n, int64_t deadline, int nowait,
                        char **dst) {
    ring_t *r = &self->ring;
    for (;;) {
        int rc = ring_claim(r, n, dst);
        if (rc == RING_OK) return 0;
        if (rc != RING_AGAIN) {
            if (rc == RING_TOOBIG) raise_too_large(self, n);
            else raise_ring(self, rc);
            return -1;
        }
        if (r->batch) ring_flush(r); /* let consumers see what we have */
        if (nowait) {
            raise_would_block(self, 1);
            return -1;
        }
        if (producer_wait_space(self, deadline) < 0) return -1;
    }
}

int producer_wait_space(EndpointObject *self, int64_t deadline) {
    int w = endpoint_wait(self, 1, deadline);
    if (w < 0) return -1;
    if (w > 0) {
        raise_timeout(self, 1);
        return -1;
    }
    /* SYNC(eos): acquire of end-of-stream; pairs with its seq-cst store by _core.store32
     * (py/module.c m_store32) in shmring/_channel (close_send). */
    if (ld32_acq(self->ring.base, OFF_EOS)) {
        raise_closed(self, NULL);
        return -1;
    }
    return 0;
}

/* 0 sent; -1 error set. */
static int send_one(EndpointObject *self, data_t *d, int64_t deadline, int nowait) {
    ring_t *r = &self->ring;
    char *dst;
    if (producer_claim_wait(self, (uint64_t)d->n, deadline, nowait, &dst) < 0) return -1;
    int rc;
    if (d->n >= NOGIL_COPY) {
        /* Busy: a close() from another thread meanwhile defers the release
         * of the mapping until we are done. */
        endpoint_enter(self);
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, d->p, (size_t)d->n);
        Py_END_ALLOW_THREADS
        rc = ring_commit(r, (uint64_t)d->n);
        if (endpoint_leave(self) < 0) PyErr_Clear(); /* it was sent (or revoked) */
    } else {
        memcpy(dst, d->p, (size_t)d->n);
        rc = ring_commit(r, (uint64_t)d->n);
    }
    if (rc == RING_OK) return 0;
    raise_ring(self, rc); /* revoked while we were stopped: not sent */
    return -1;
}

static int parse_data_timeout(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                              const char *fname, PyObject **data, PyObject **timeout) {
    *timeout = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < 1 || nargs + nkw > 2) {
        PyErr_Format(PyExc_TypeError, "%s(data, timeout=None)", fname);
        return -1;
    }
    *data = args[0];
    if (nargs == 2) *timeout = args[1];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (!PyUnicode_Check(k) || PyUnicode_CompareWithASCIIString(k, "timeout") != 0 ||
            nargs == 2) {
            PyErr_Format(PyExc_TypeError, "%s(data, timeout=None)", fname);
            return -1;
        }
        *timeout = args[nargs + i];
    }
    return 0;
}

static PyObject *P_send(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames) {
    PyObject *data, *timeout;
    int64_t deadline;
    data_t d;
    if (nargs == 1 && !kwnames) {
        /* send(data): the common call, parsed without a look at keywords or the clock. */
        data = args[0];
        deadline = -1;
        self->timeout_s = -1.0;
        if (check_sendable(self) < 0) return NULL;
    } else {
        if (parse_data_timeout(args, nargs, kwnames, "send", &data, &timeout) < 0) return NULL;
        if (check_sendable(self) < 0 || endpoint_deadline(self, timeout, &deadline) < 0)
            return NULL;
    }
    if (get_data(data, &d) < 0) return NULL;
    int rc = send_one(self, &d, deadline, 0);
    put_data(&d);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *P_send_nowait(EndpointObject *self, PyObject *data) {
    data_t d;
    if (check_sendable(self) < 0) return NULL;
    if (get_data(data, &d) < 0) return NULL;
    int rc = send_one(self, &d, -1, 1);
    put_data(&d);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *P_send_many(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    PyObject *items, *timeout;
    int64_t deadline;
    if (parse_data_timeout(args, nargs, kwnames, "send_many", &items, &timeout) < 0)
        return NULL;
    if (check_sendable(self) < 0 || endpoint_deadline(self, timeout, &deadline) < 0) return NULL;
    PyObject *seq = PySequence_Fast(items, "send_many() takes an iterable of bytes-like");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), i;
    PyObject **its = PySequence_Fast_ITEMS(seq);
    self->ring.batch = 1;
    for (i = 0; i < n; i++) {
        data_t d;
        if (get_data(its[i], &d) < 0) break;
        int rc = send_one(self, &d, deadline, 0);
        put_data(&d);
        if (rc < 0) break;
    }
    self->ring.batch = 0;
    ring_flush(&self->ring);
    Py_DECREF(seq);
    if (i < n) {
        /* Say how many went out: the caller resends only the rest. */
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        PyObject *cnt = PyLong_FromSsize_t(i);
        if (cnt && exc && PyObject_SetAttrString(exc, "sent", cnt) < 0) PyErr_Clear();
        Py_XDECREF(cnt);
        PyErr_Restore(type, exc, tb);
        return NULL;
    }
    return PyLong_FromSsize_t(n);
}

static PyObject *P_claim(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames) {
    PyObject *size, *timeout;
    int64_t deadline;
    if (parse_data_timeout(args, nargs, kwnames, "claim", &size, &timeout) < 0) return NULL;
    if (check_sendable(self) < 0 || endpoint_deadline(self, timeout, &deadline) < 0) return NULL;
    Py_ssize_t n = PyNumber_AsSsize_t(size, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "claim size must be >= 0");
        return NULL;
    }
    ring_t *r = &self->ring;
    char *dst;
    for (;;) {
        int rc = ring_claim(r, (uint64_t)n, &dst);
        if (rc == RING_OK) break;
        if (rc == RING_TOOBIG) return raise_too_large(self, (uint64_t)n);
        if (rc != RING_AGAIN) return raise_ring(self, rc);
        if (producer_wait_space(self, deadline) < 0) return NULL;
    }
    self->view = PyMemoryView_FromMemory(dst, n, PyBUF_WRITE);
    if (!self->view) {
        ring_abort(r);
        return NULL;
    }
    Py_INCREF(self->view);
    return self->view;
}

static PyObject *P_commit(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (endpoint_check_open(self) < 0) return NULL;
    ring_t *r = &self->ring;
    if (!r->claimed) {
        PyErr_SetString(PyExc_RuntimeError, "no claim is open");
        return NULL;
    }
    uint64_t used = r->claim_len;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "commit(nbytes=None)");
        return NULL;
    }
    if (nargs == 1 && args[0] != Py_None) {
        Py_ssize_t u = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
        if (u == -1 && PyErr_Occurred()) return NULL;
        if (u < 0 || (uint64_t)u > r->claim_len) {
            PyErr_Format(PyExc_ValueError, "commit(nbytes): nbytes must be 0..%llu",
                         (unsigned long long)r->claim_len);
            return NULL;
        }
        used = (uint64_t)u;
    }
    endpoint_drop_view(self);
    int rc = ring_commit(r, used);
    if (rc != RING_OK) return raise_ring(self, rc);
    Py_RETURN_NONE;
}

static PyObject *P_abort(EndpointObject *self, PyObject *unused) {
    (void)unused;
    if (endpoint_check_open(self) < 0) return NULL;
    endpoint_drop_view(self);
    ring_abort(&self->ring);
    Py_RETURN_NONE;
}

static int P_init(EndpointObject *self, PyObject *args, PyObject *kw) {
    (void)kw;
    return endpoint_init(self, args, 0);
}

static int P_traverse(EndpointObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->view);
    return 0;
}

static PyObject *P_get_claimed(EndpointObject *self, void *c) {
    (void)c;
    return PyBool_FromLong(self->open && self->ring.claimed);
}
static PyObject *P_get_closed(EndpointObject *self, void *c) {
    (void)c;
    return PyBool_FromLong(!self->open);
}

/* What the object and asyncio code (shmring._objects, _channel/aio.py) need to
 * know of the channel, read from the ring the endpoint has mapped, so that
 * code never reaches back up to the Channel. */
static PyObject *P_get_max_message(EndpointObject *self, void *c) {
    (void)c;
    if (endpoint_check_open(self) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(self->ring.max_message);
}
static PyObject *P_get_pattern(EndpointObject *self, void *c) {
    (void)c;
    if (endpoint_check_open(self) < 0) return NULL;
    return PyLong_FromUnsignedLong(self->ring.pattern);
}
static PyObject *P_get_lossy(EndpointObject *self, void *c) {
    (void)c;
    if (endpoint_check_open(self) < 0) return NULL;
    return PyBool_FromLong(self->ring.lossy);
}
static PyObject *P_get_validating(EndpointObject *self, void *c) {
    (void)c;
    if (endpoint_check_open(self) < 0) return NULL;
    return PyBool_FromLong(self->ring.validating);
}
static PyObject *P_get_eos(EndpointObject *self, void *c) {
    (void)c;
    if (endpoint_check_open(self) < 0) return NULL;
    /* SYNC(eos): acquire of end-of-stream for the asyncio helper; pairs with its seq-cst
     * store by _core.store32 in Channel.close_send. */
    return PyBool_FromLong(ld32_acq(self->ring.base, OFF_EOS) != 0);
}

/* _skip_msgno(n): broadcast: number the next message n further on, so that
 * subscribers that count what they missed (lossy, or untethered) count n
 * more before it. A bridge feeding the ring says so for the messages its
 * own subscription upstream never saw. */
static PyObject *P_skip_msgno(EndpointObject *self, PyObject *arg) {
    if (endpoint_check_open(self) < 0) return NULL;
    unsigned long long n = PyLong_AsUnsignedLongLong(arg);
    if (n == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (self->ring.pattern != PATTERN_BROADCAST) {
        PyErr_SetString(PyExc_ValueError, "_skip_msgno: broadcast channels only");
        return NULL;
    }
    self->ring.msgno += n;
    Py_RETURN_NONE;
}

static PyMethodDef P_methods[] = {
    {"send", (PyCFunction)(void (*)(void))P_send, METH_FASTCALL | METH_KEYWORDS,
     "send(data, timeout=None): copy one message into the channel, waiting for space."},
    {"send_nowait", (PyCFunction)P_send_nowait, METH_O,
     "send_nowait(data): send or raise WouldBlock if the channel is full."},
    {"send_many", (PyCFunction)(void (*)(void))P_send_many, METH_FASTCALL | METH_KEYWORDS,
     "send_many(items, timeout=None) -> int: send every item, publishing once per batch."},
    {"_send_fed", (PyCFunction)(void (*)(void))producer_send_fed, METH_FASTCALL | METH_KEYWORDS,
     "_send_fed(items, epoch, seqs, timeout=None) -> int: commit items keyed (epoch, seq), "
     "seqs an int (the first of consecutive seqs) or one seq per item, increasing; the ring's "
     "header keeps the last key committed (fed_state). How many were committed: fewer only "
     "if the timeout passed."},
    {"_skip_msgno", (PyCFunction)P_skip_msgno, METH_O,
     "_skip_msgno(n): broadcast: the next message is numbered n further on (n missed)."},
    {"_send_fed_packed", (PyCFunction)(void (*)(void))producer_send_fed_packed, METH_FASTCALL,
     "_send_fed_packed(body, lens, seqs, epoch, skip, timeout=None) -> int: _send_fed of the "
     "records packed in body (lengths: u32 each in lens; seqs: u64 each in seqs, native "
     "order), leaving out the first skip; how many were committed."},
    {"_claim", (PyCFunction)(void (*)(void))P_claim, METH_FASTCALL | METH_KEYWORDS,
     "_claim(n, timeout=None) -> memoryview: reserve n writable bytes in the ring."},
    {"_commit", (PyCFunction)(void (*)(void))P_commit, METH_FASTCALL,
     "_commit(nbytes=None): publish the open claim (its first nbytes)."},
    {"_abort", (PyCFunction)P_abort, METH_NOARGS, "_abort(): withdraw the open claim."},
    {"_link_claim", (PyCFunction)(void (*)(void))link_claim, METH_FASTCALL,
     "_link_claim(consumer, n, item, region, timeout=None) -> memoryview: claim an output of "
     "the consumer's input (a linked commit, ring/link.c)."},
    {"_link_commit", (PyCFunction)(void (*)(void))link_commit, METH_FASTCALL,
     "_link_commit(consumer, nbytes=None, last=False): commit it; last: the input is done."},
    {"_link_abort", (PyCFunction)link_abort, METH_O, "_link_abort(consumer): withdraw it."},
    {"_send_items", (PyCFunction)(void (*)(void))pipe_send_items, METH_FASTCALL,
     "_send_items(iterator, first, max_n) -> (sent, obj, exhausted): a pipeline source's "
     "items as records, while each is a plain value with room for it now (py/pipe_batch.c)."},
    {"_link_send", (PyCFunction)(void (*)(void))link_send, METH_FASTCALL,
     "_link_send(consumer, data, item, region, last=False, timeout=None): claim, copy and "
     "commit one output."},
    {"_send_value", (PyCFunction)(void (*)(void))obj_send_value, METH_FASTCALL,
     "_send_value(obj, timeout=None, nowait=False) -> bool: send obj as a value record "
     "(csrc/value); False, sending nothing, if it is not a plain value."},
    {"send_obj", (PyCFunction)(void (*)(void))obj_send_obj, METH_FASTCALL | METH_KEYWORDS,
     OBJ_SEND_DOC},
    {"_close", (PyCFunction)endpoint_close, METH_NOARGS, "_close(): release the mapping."},
    {"_wait", (PyCFunction)(void (*)(void))endpoint_wait_ready, METH_FASTCALL,
     "_wait(timeout=None, nbytes=0) -> bool: wait until progress is possible, taking "
     "nothing."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef P_getset[] = {
    {"_claimed", (getter)P_get_claimed, NULL, "True while a claim is open.", NULL},
    {"_closed", (getter)P_get_closed, NULL, "True once closed.", NULL},
    {"_label", (getter)endpoint_get_label, NULL,
     "The channel as error messages name it: channel 'jobs' (spsc, 4096 bytes).", NULL},
    {"_name", (getter)endpoint_get_name, NULL, "The channel's name (None if not given).",
     NULL},
    {"_max_message", (getter)P_get_max_message, NULL, "The channel's max_message.", NULL},
    {"_pattern", (getter)P_get_pattern, NULL, "The channel's pattern (a PATTERN_* code).",
     NULL},
    {"_lossy", (getter)P_get_lossy, NULL, "True on a lossy broadcast channel.", NULL},
    {"_validating", (getter)P_get_validating, NULL,
     "True where readers may be overrun (lossy broadcast, or lossless with "
     "slow_consumer_timeout): they validate every copy.", NULL},
    {"_eos", (getter)P_get_eos, NULL, "True once the channel was closed for sending.", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyTypeObject ProducerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmring._core.ProducerCore",
    .tp_basicsize = sizeof(EndpointObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ProducerCore(mapping, slot): the C half of shmring.Producer.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)P_init,
    .tp_dealloc = (destructor)endpoint_dealloc,
    .tp_traverse = (traverseproc)P_traverse,
    .tp_methods = P_methods,
    .tp_getset = P_getset,
    .tp_weaklistoffset = offsetof(EndpointObject, weakrefs),
};
