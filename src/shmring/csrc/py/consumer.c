/* py/consumer.c - the Consumer handle: recv, recv_many, recv_into and
 * zero-copy views of a held record. Receiving one message is one call. */
#include "py/core.h"

#include <string.h>

#include "atomics.h"
#include "py/ahead.h"
#include "py/link.h"
#include "py/objects.h"
#include "py/pipe_batch.h"
#include "wait.h"

#define NOGIL_COPY 262144
#define ONE_AT_A_TIME "recv, recv_many, recv_into, recv_view or recv_obj"

static int check_recvable(EndpointObject *self) {
    if (endpoint_check_open(self) < 0) return -1;
    if (self->ring.ahead_n) return ahead_refuse(self, ONE_AT_A_TIME);
    if (self->view) {
        PyErr_SetString(PyExc_RuntimeError, "a record view is held on this consumer: "
                                            "release it first");
        return -1;
    }
    return 0;
}

/* Takes the next record, waiting until the deadline. 0 with a record held,
 * 1 for "nothing" (nowait), -1 with an error set. */
int consumer_take(EndpointObject *self, int64_t deadline, int nowait, const char **p,
                uint64_t *n) {
    ring_t *r = &self->ring;
    if (r->ahead_n) return ahead_refuse(self, ONE_AT_A_TIME);
    for (;;) {
        int rc = ring_peek(r, p, n);
        if (rc == RING_OK) return 0;
        if (rc == RING_LAPPED) continue;
        if (rc != RING_AGAIN) {
            raise_ring(self, rc);
            return -1;
        }
        if (r->batch) ring_consumer_flush(r);
        if (nowait) return 1;
        /* The wait can say "ready" while nothing is readable (a lossy
         * record being overwritten, corrupt counters): the deadline and
         * signals are honoured here too, or this loop could spin forever. */
        if (deadline >= 0 && mono_ns() >= deadline) {
            raise_timeout(self, 0);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) return -1;
        int w = endpoint_wait(self, 0, deadline);
        if (w < 0) return -1;
        if (w > 0) {
            raise_timeout(self, 0);
            return -1;
        }
    }
}

static PyObject *copy_out(EndpointObject *self, const char *p, uint64_t n) {
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (!b) return NULL;
    if (n >= NOGIL_COPY) {
        char *dst = PyBytes_AS_STRING(b);
        endpoint_enter(self); /* see send_one: close() waits for us */
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, p, n);
        Py_END_ALLOW_THREADS
        self->busy--;
    } else {
        memcpy(PyBytes_AS_STRING(b), p, n);
    }
    return b;
}

/* One message as bytes; NULL with an error, or NULL without one for
 * "nothing now" when nowait. */
static PyObject *recv_one(EndpointObject *self, int64_t deadline, int nowait) {
    ring_t *r = &self->ring;
    for (;;) {
        const char *p;
        uint64_t n;
        int t = consumer_take(self, deadline, nowait, &p, &n);
        if (t != 0) return NULL;
        PyObject *b = copy_out(self, p, n);
        if (!b) return NULL; /* the record stays held: nothing lost */
        if (ring_validate(r) != RING_OK) {
            Py_DECREF(b);
            continue;
        }
        if (ring_release(r) != RING_OK) {
            /* Our lease was revoked during the copy: the bytes may be torn,
             * and the message is another consumer's now. */
            Py_DECREF(b);
            return raise_ring(self, RING_LEASE);
        }
        if (self->closing) {
            /* Closed by another thread during the copy: the message is ours,
             * the mapping goes now. */
            self->busy++;
            if (endpoint_leave(self) < 0) PyErr_Clear();
        }
        return b;
    }
}

static int parse_timeout_only(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                              const char *fname, Py_ssize_t npos, PyObject **pos,
                              PyObject **timeout) {
    *timeout = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < npos || nargs > npos + 1 || nargs + nkw > npos + 1) goto bad;
    for (Py_ssize_t i = 0; i < npos; i++) pos[i] = args[i];
    if (nargs == npos + 1) *timeout = args[npos];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (!PyUnicode_Check(k) || PyUnicode_CompareWithASCIIString(k, "timeout") != 0)
            goto bad;
        *timeout = args[nargs + i];
    }
    return 0;
bad:
    PyErr_Format(PyExc_TypeError, "%s: bad arguments (see its docstring)", fname);
    return -1;
}

static PyObject *C_recv(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames) {
    PyObject *timeout;
    int64_t deadline;
    if (nargs == 0 && !kwnames) {
        /* recv(): the common call, parsed without a look at keywords or the clock. */
        self->timeout_s = -1.0;
        if (check_recvable(self) < 0) return NULL;
        return recv_one(self, -1, 0);
    }
    if (parse_timeout_only(args, nargs, kwnames, "recv", 0, NULL, &timeout) < 0) return NULL;
    if (check_recvable(self) < 0 || endpoint_deadline(self, timeout, &deadline) < 0) return NULL;
    return recv_one(self, deadline, 0);
}

static PyObject *C_recv_nowait(EndpointObject *self, PyObject *unused) {
    (void)unused;
    if (check_recvable(self) < 0) return NULL;
    PyObject *b = recv_one(self, -1, 1);
    if (!b && !PyErr_Occurred()) raise_would_block(self, 0);
    return b;
}

static PyObject *C_recv_many(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    PyObject *timeout, *maxobj;
    int64_t deadline;
    if (parse_timeout_only(args, nargs, kwnames, "recv_many", 1, &maxobj, &timeout) < 0)
        return NULL;
    if (check_recvable(self) < 0 || endpoint_deadline(self, timeout, &deadline) < 0) return NULL;
    Py_ssize_t maxn = PyNumber_AsSsize_t(maxobj, PyExc_OverflowError);
    if (maxn == -1 && PyErr_Occurred()) return NULL;
    if (maxn < 1) {
        PyErr_SetString(PyExc_ValueError, "recv_many(max_count): max_count must be >= 1");
        return NULL;
    }
    PyObject *first = recv_one(self, deadline, 0);
    if (!first) return NULL;
    PyObject *out = PyList_New(1);
    if (!out) {
        Py_DECREF(first);
        return NULL;
    }
    PyList_SET_ITEM(out, 0, first);
    ring_t *r = &self->ring;
    if (r->pattern != PATTERN_MPMC) r->batch = 1;
    while (PyList_GET_SIZE(out) < maxn) {
        PyObject *b = recv_one(self, -1, 1);
        if (!b) {
            if (PyErr_ExceptionMatches(E_EndOfStream)) PyErr_Clear();
            break;
        }
        int rc = PyList_Append(out, b);
        Py_DECREF(b);
        if (rc < 0) break;
    }
    ring_consumer_flush(r);
    if (PyErr_Occurred()) {
        /* What was taken is returned; the error surfaces on the next call. */
        PyErr_Clear();
    }
    return out;
}

static PyObject *C_recv_into(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    PyObject *timeout, *target;
    int64_t deadline;
    if (parse_timeout_only(args, nargs, kwnames, "recv_into", 1, &target, &timeout) < 0)
        return NULL;
    if (check_recvable(self) < 0 || endpoint_deadline(self, timeout, &deadline) < 0) return NULL;
    Py_buffer vb;
    if (PyObject_GetBuffer(target, &vb, PyBUF_WRITABLE) < 0) return NULL;
    ring_t *r = &self->ring;
    PyObject *res = NULL;
    for (;;) {
        const char *p;
        uint64_t n;
        if (consumer_take(self, deadline, 0, &p, &n) != 0) break;
        if (n > (uint64_t)vb.len) {
            /* Keep the record for a later, larger buffer. */
            PyErr_Format(PyExc_ValueError,
                         "recv_into: buffer of %zd bytes is too small for a %llu-byte "
                         "message (the message stays in the channel)",
                         vb.len, (unsigned long long)n);
            if (r->validating) r->held = 0;
            break;
        }
        memcpy(vb.buf, p, n);
        if (ring_validate(r) != RING_OK) continue;
        if (ring_release(r) != RING_OK) {
            raise_ring(self, RING_LEASE); /* what was copied may be torn */
            break;
        }
        res = PyLong_FromUnsignedLongLong(n);
        break;
    }
    PyBuffer_Release(&vb);
    return res;
}

static PyObject *C_peek(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames) {
    PyObject *timeout;
    int64_t deadline;
    if (parse_timeout_only(args, nargs, kwnames, "peek", 0, NULL, &timeout) < 0) return NULL;
    if (check_recvable(self) < 0 || endpoint_deadline(self, timeout, &deadline) < 0) return NULL;
    ring_t *r = &self->ring;
    if (r->validating) {
        /* The producer may overwrite a record under a lossy (or untethered)
         * reader: a view is of a validated copy. */
        PyObject *b = recv_one(self, deadline, 0);
        if (!b) return NULL;
        self->view = PyMemoryView_FromObject(b);
        Py_DECREF(b);
        if (!self->view) return NULL;
        Py_INCREF(self->view);
        return self->view;
    }
    const char *p;
    uint64_t n;
    if (consumer_take(self, deadline, 0, &p, &n) != 0) return NULL;
    self->view = PyMemoryView_FromMemory((char *)p, (Py_ssize_t)n, PyBUF_READ);
    if (!self->view) return NULL;
    Py_INCREF(self->view);
    return self->view;
}

static PyObject *C_release(EndpointObject *self, PyObject *unused) {
    (void)unused;
    if (endpoint_check_open(self) < 0) return NULL;
    endpoint_drop_view(self);
    if (ring_release(&self->ring) != RING_OK) return raise_ring(self, RING_LEASE);
    Py_RETURN_NONE;
}

static PyObject *C_join(EndpointObject *self, PyObject *unused) {
    (void)unused;
    if (endpoint_check_open(self) < 0) return NULL;
    ring_consumer_join(&self->ring);
    Py_RETURN_NONE;
}

static PyObject *C_resume(EndpointObject *self, PyObject *unused) {
    (void)unused;
    if (endpoint_check_open(self) < 0) return NULL;
    if (ring_consumer_resume(&self->ring) != RING_OK)
        return PyErr_Format(PyExc_ValueError, "_resume: only a broadcast consumer resumes");
    Py_RETURN_NONE;
}

static int C_init(EndpointObject *self, PyObject *args, PyObject *kw) {
    (void)kw;
    return endpoint_init(self, args, 1);
}

static int C_traverse(EndpointObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->view);
    Py_VISIT(self->stream);
    return 0;
}

static PyObject *C_get_missed(EndpointObject *self, void *c) {
    (void)c;
    if (endpoint_check_open(self) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(
        ld_rlx(self->ring.base, self->ring.slot_off + SLOT_MISSED));
}
static PyObject *C_get_leases(EndpointObject *self, void *c) {
    (void)c;
    if (endpoint_check_open(self) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(
        ld_rlx(self->ring.base, self->ring.slot_off + SLOT_LEASE) & LEASE_COUNT_MASK);
}
static PyObject *C_get_untethered(EndpointObject *self, void *c) {
    (void)c;
    if (endpoint_check_open(self) < 0) return NULL;
    return PyLong_FromUnsignedLongLong(self->ring.untethered);
}
static PyObject *C_get_closed(EndpointObject *self, void *c) {
    (void)c;
    return PyBool_FromLong(!self->open);
}

static PyMethodDef C_methods[] = {
    {"recv", (PyCFunction)(void (*)(void))C_recv, METH_FASTCALL | METH_KEYWORDS,
     "recv(timeout=None) -> bytes: the next message, waiting for one."},
    {"recv_nowait", (PyCFunction)C_recv_nowait, METH_NOARGS,
     "recv_nowait() -> bytes: the next message, or raise WouldBlock."},
    {"recv_many", (PyCFunction)(void (*)(void))C_recv_many, METH_FASTCALL | METH_KEYWORDS,
     "recv_many(max_count, timeout=None) -> list[bytes]: wait for one message, then take "
     "up to max_count without waiting."},
    {"recv_into", (PyCFunction)(void (*)(void))C_recv_into, METH_FASTCALL | METH_KEYWORDS,
     "recv_into(buffer, timeout=None) -> int: copy the next message into buffer."},
    {"_peek", (PyCFunction)(void (*)(void))C_peek, METH_FASTCALL | METH_KEYWORDS,
     "_peek(timeout=None) -> memoryview: hold the next record and view it in place."},
    {"_release", (PyCFunction)C_release, METH_NOARGS, "_release(): free the held record."},
    {"_ahead", (PyCFunction)(void (*)(void))ahead_read, METH_FASTCALL | METH_KEYWORDS, AHEAD_DOC},
    {"_ahead_packed", (PyCFunction)(void (*)(void))ahead_read_packed, METH_FASTCALL,
     "_ahead_packed(max_count, max_bytes, timeout, count[, inplace]) -> (keys, positions, "
     "lens, body): _ahead, packed as a bridge batch's frames (u64 keys, u64 positions, u32 "
     "lengths, the payloads back to back); keys are position + 1 if count < 0, else count + "
     "1, ...; a record of at least inplace bytes comes alone, its body a read-only view of "
     "it in the mapping (copied where records can change under a reader)"},
    {"_settle", (PyCFunction)ahead_settle, METH_O, SETTLE_DOC},
    {"_link_take", (PyCFunction)(void (*)(void))link_take, METH_FASTCALL,
     "_link_take(timeout=None, single=False) -> (item, attempts, done, view): take an input "
     "to pass on by linked commits (ring/link.c)."},
    {"_link_map", (PyCFunction)(void (*)(void))link_map, METH_FASTCALL,
     "_link_map(tx, fn, state, with_state, timeout, counter, offset, in_region, out_region, "
     "board, entry, max_attempts, sent_offset) -> None | tuple: one item of a map stage "
     "(py/link_map.c); a tuple hands it back to Python."},
    {"_recv_values", (PyCFunction)(void (*)(void))pipe_recv_values, METH_FASTCALL,
     "_recv_values(max_n, max_bytes) -> list: the plain values at the top of their items in "
     "the records there now, up to max_n records or max_bytes, in order (py/pipe_batch.c); "
     "stops at any other record."},
    {"_link_many", (PyCFunction)link_many, METH_NOARGS,
     "_link_many(): no output is sent yet, and one output no longer completes the input."},
    {"_link_finish", (PyCFunction)link_finish, METH_NOARGS,
     "_link_finish(): every output of the input is sent: release it."},
    {"_recv_value", (PyCFunction)(void (*)(void))obj_recv_value, METH_FASTCALL,
     "_recv_value(timeout=None, nowait=False): the next record decoded, if it is a value "
     "record (csrc/value); otherwise NotImplemented, the record left held."},
    {"recv_obj", (PyCFunction)(void (*)(void))obj_recv_obj, METH_FASTCALL | METH_KEYWORDS,
     OBJ_RECV_DOC},
    {"_join", (PyCFunction)C_join, METH_NOARGS, "_join(): start reading at the tail."},
    {"_resume", (PyCFunction)C_resume, METH_NOARGS,
     "_resume(): broadcast: go on from the slot's cursor (an adopted durable subscription)."},
    {"_close", (PyCFunction)endpoint_close, METH_NOARGS, "_close(): release the mapping."},
    {"_wait", (PyCFunction)(void (*)(void))endpoint_wait_ready, METH_FASTCALL,
     "_wait(timeout=None, nbytes=0) -> bool: wait until progress is possible, taking "
     "nothing."},
    {NULL, NULL, 0, NULL}};

static PyObject *C_get_stream(EndpointObject *self, void *unused);
static int C_set_stream(EndpointObject *self, PyObject *v, void *unused);

static PyGetSetDef C_getset[] = {
    {"missed", (getter)C_get_missed, NULL,
     "Broadcast: messages this consumer was overrun on and never saw (lossy, or untethered "
     "after slow_consumer_timeout).", NULL},
    {"untethered", (getter)C_get_untethered, NULL,
     "Lossless broadcast with slow_consumer_timeout: times the producer stopped waiting for "
     "this consumer (it found out when it read next; missed counts what it lost).", NULL},
    {"leases_revoked", (getter)C_get_leases, NULL,
     "mpmc: records the supervisor took from this consumer because it held them past the "
     "channel's lease (each ended in LeaseRevoked).",
     NULL},
    {"_ahead_count", (getter)ahead_get_count, NULL, AHEAD_COUNT_DOC, NULL},
    {"_closed", (getter)C_get_closed, NULL, "True once closed.", NULL},
    {"_label", (getter)endpoint_get_label, NULL,
     "The channel as error messages name it: channel 'jobs' (spsc, 4096 bytes).", NULL},
    {"_name", (getter)endpoint_get_name, NULL, "The channel's name (None if not given).",
     NULL},
    {"_stream", (getter)C_get_stream, (setter)C_set_stream,
     "A streamed object being received (shmring._objects.stream._Stream), or None: while one "
     "is, recv_obj leaves every record to the Python path.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyObject *C_get_stream(EndpointObject *self, void *unused) {
    PyObject *st = self->stream ? self->stream : Py_None;
    Py_INCREF(st);
    return st;
}

static int C_set_stream(EndpointObject *self, PyObject *v, void *unused) {
    if (v == Py_None) v = NULL;
    Py_XINCREF(v);
    Py_XSETREF(self->stream, v);
    return 0;
}

PyTypeObject ConsumerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmring._core.ConsumerCore",
    .tp_basicsize = sizeof(EndpointObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ConsumerCore(mapping, slot): the C half of shmring.Consumer.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)C_init,
    .tp_dealloc = (destructor)endpoint_dealloc,
    .tp_traverse = (traverseproc)C_traverse,
    .tp_methods = C_methods,
    .tp_getset = C_getset,
    .tp_weaklistoffset = offsetof(EndpointObject, weakrefs),
};
