/* py/endpoint.c - what a producer and a consumer handle have in common: the
 * mapping they hold, timeouts, waiting without the GIL, and errors. */
#include "py/core.h"

#include <limits.h>
#include <unistd.h>

#include "atomics.h"
#include "guard.h"
#include "wait.h"

PyObject *E_WouldBlock, *E_Timeout, *E_EndOfStream, *E_Broken, *E_Corrupt, *E_TooLarge,
    *E_Closed, *E_Revoked, *E_Lease;
PyObject *SpaceHint;

int endpoint_init(EndpointObject *self, PyObject *args, int consumer) {
    PyObject *mapping, *name = Py_None;
    unsigned int slot;
    if (!PyArg_ParseTuple(args, "OI|O", &mapping, &slot, &name)) return -1;
    if (self->open) {
        PyErr_SetString(PyExc_RuntimeError, "endpoint already initialised");
        return -1;
    }
    if (name != Py_None && !PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "the channel name must be a str or None");
        return -1;
    }
    Py_XSETREF(self->name, name == Py_None ? NULL : Py_NewRef(name));
    self->timeout_s = -1.0;
    if (PyObject_GetBuffer(mapping, &self->buf, PyBUF_WRITABLE) < 0) return -1;
    int rc = ring_init(&self->ring, self->buf.buf, (uint64_t)self->buf.len, slot, consumer);
    if (rc != RING_OK) {
        if (self->name)
            PyErr_Format(E_Corrupt ? E_Corrupt : PyExc_ValueError,
                         "corrupt region of channel %R: %s", self->name, self->ring.err);
        else
            PyErr_Format(E_Corrupt ? E_Corrupt : PyExc_ValueError, "corrupt region: %s",
                         self->ring.err);
        PyBuffer_Release(&self->buf);
        return -1;
    }
    if (!consumer && ring_untether_alloc(&self->ring) < 0) {
        PyBuffer_Release(&self->buf);
        PyErr_NoMemory();
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

/* Records read ahead (mpmc) go back when their reader closes, but only if
 * this process is the slot's holder: a forked child closing its copy of its
 * parent's endpoint must not hand back records the parent still holds. */
static void drop_ahead(EndpointObject *self) {
    ring_t *r = &self->ring;
    uint64_t pid = r->ahead_n ? ld_rlx(r->base, r->slot_off + SLOT_PID) & ~SLOT_RECOVERING : 0;
    if (pid == (uint64_t)getpid()) ring_ahead_drop(r);
    else ring_ahead_free(r);
}

void endpoint_enter(EndpointObject *self) { self->busy++; }

int endpoint_leave(EndpointObject *self) {
    self->busy--;
    if (!self->closing) return 0;
    if (self->busy == 0 && self->open) {
        drop_ahead(self); /* closed under a waiter */
        self->open = 0;
        PyBuffer_Release(&self->buf);
    }
    raise_closed(self, "was closed while this call waited");
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
            drop_ahead(self);
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
    Py_CLEAR(self->name);
    ring_untether_free(&self->ring);
    ring_ahead_free(&self->ring);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

int endpoint_probe(EndpointObject *self) {
    if (endpoint_check_open(self) < 0) return -1;
    /* Touch the mapping's last page: if the segment shrank below it, this
     * faults (caught by guard.c) and the check below sees it. */
    (void)*(volatile const char *)((const char *)self->buf.buf + self->buf.len - 1);
    return endpoint_check_open(self);
}

int endpoint_check_open(EndpointObject *self) {
    if (self->open && !self->closing) {
        if (!guard_faults() || !guard_faults_at(self->buf.buf)) return 0;
        raise_truncated(self);
        return -1;
    }
    raise_closed(self, "is closed");
    return -1;
}

static int parse_timeout_s(PyObject *obj, int64_t *deadline_ns, double *seconds) {
    if (obj == NULL || obj == Py_None) {
        *deadline_ns = -1;
        *seconds = -1.0;
        return 0;
    }
    double t = PyFloat_AsDouble(obj);
    if (t == -1.0 && PyErr_Occurred()) return -1;
    if (!(t >= 0.0)) {
        PyErr_SetString(PyExc_ValueError, "timeout must be None or a number >= 0");
        return -1;
    }
    *seconds = t;
    if (t > 1e9) t = 1e9;
    *deadline_ns = mono_ns() + (int64_t)(t * 1e9);
    return 0;
}

int parse_timeout(PyObject *obj, int64_t *deadline_ns) {
    double unused;
    return parse_timeout_s(obj, deadline_ns, &unused);
}

int endpoint_deadline(EndpointObject *self, PyObject *obj, int64_t *deadline_ns) {
    return parse_timeout_s(obj, deadline_ns, &self->timeout_s);
}

/* The deadline, or slice_ns from now if that is sooner (slice_ns < 0: none). */
static int64_t sooner(int64_t deadline_ns, int64_t slice_ns) {
    if (slice_ns < 0) return deadline_ns;
    int64_t t = mono_ns() + slice_ns;
    return deadline_ns >= 0 && deadline_ns < t ? deadline_ns : t;
}

static int endpoint_wait_loop(EndpointObject *self, int space, int64_t deadline_ns);

int endpoint_wait(EndpointObject *self, int space, int64_t deadline_ns) {
    if (space) ring_space_wait_begins(&self->ring);
    int rc = endpoint_wait_loop(self, space, deadline_ns);
    if (space) ring_space_wait_ends(&self->ring);
    return rc;
}

static int endpoint_wait_loop(EndpointObject *self, int space, int64_t deadline_ns) {
    for (;;) {
        int w;
        ring_t *r = &self->ring;
        /* A truncated ring reads as zeros, which may look ready for ever:
         * every wait looks first (guard.h). */
        if (endpoint_check_open(self) < 0) return -1;
        /* A producer that may untether a slow consumer decides when it looks
         * (ring/untether.c): it wakes often enough to look in time. */
        int64_t until = space ? sooner(deadline_ns, ring_untether_slice_ns(r)) : deadline_ns;
        endpoint_enter(self);
        Py_BEGIN_ALLOW_THREADS
        if (space)
            w = shm_wait(r->base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS, ring_ready_space, r,
                         until, ring_space_nap_ns(r));
        else
            w = shm_wait(r->base, OFF_DATA_FUTEX, OFF_DATA_WAITERS, ring_ready_data, r,
                         deadline_ns, 0);
        Py_END_ALLOW_THREADS
        if (endpoint_leave(self) < 0) return -1;
        if (w == WAIT_TIMEOUT && until != deadline_ns) continue; /* a slice, not the deadline */
        if (w == WAIT_SIGNAL) {
            if (PyErr_CheckSignals() < 0) return -1;
            continue;
        }
        if (w == WAIT_CHECK) {
            if (endpoint_probe(self) < 0) return -1; /* ours was truncated */
            continue;                                /* another mapping, or a slice */
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
    copy.room_until = 0; /* room for nbytes will do (another thread may be waiting with it) */
    int w;
    for (;;) {
        int64_t until = consumer ? deadline : sooner(deadline, ring_untether_slice_ns(&copy));
        endpoint_enter(self);
        Py_BEGIN_ALLOW_THREADS
        if (consumer)
            w = shm_wait(copy.base, OFF_DATA_FUTEX, OFF_DATA_WAITERS, ring_ready_data, &copy,
                         deadline, 0);
        else
            w = shm_wait(copy.base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS, ring_ready_space,
                         &copy, until, ring_space_nap_ns(&copy));
        Py_END_ALLOW_THREADS
        if (endpoint_leave(self) < 0) {
            Py_DECREF(keep);
            return NULL;
        }
        if (w == WAIT_CHECK) {
            if (endpoint_probe(self) < 0) {
                Py_DECREF(keep);
                return NULL;
            }
            continue;
        }
        if (w == WAIT_TIMEOUT && until != deadline) continue; /* a slice */
        if (w != WAIT_SIGNAL) break;
        if (PyErr_CheckSignals() < 0) {
            Py_DECREF(keep);
            return NULL;
        }
    }
    Py_DECREF(keep);
    return PyBool_FromLong(w == WAIT_READY);
}

/* ---- Errors that say what happened (the error path only) ----
 * Each names the channel ("channel 'jobs' (spsc, 4096 bytes)") and sets the
 * facts on the exception too: `channel` always, then what the error is
 * about (`timeout`, `size`, `limit`). The name was given once at
 * construction; pattern and capacity are the ring's own copies, so this is
 * safe after the mapping was released. */

static const char *pattern_name(uint32_t p) {
    switch (p) {
    case PATTERN_SPSC: return "spsc";
    case PATTERN_MPSC: return "mpsc";
    case PATTERN_MPMC: return "mpmc";
    case PATTERN_BROADCAST: return "broadcast";
    default: return "?";
    }
}

/* "channel 'jobs' (spsc, 4096 bytes)"; new reference or NULL. */
static PyObject *label(EndpointObject *self) {
    const char *pat = pattern_name(self->ring.pattern);
    unsigned long long cap = (unsigned long long)self->ring.cap;
    if (self->name) return PyUnicode_FromFormat("channel %R (%s, %llu bytes)", self->name, pat, cap);
    return PyUnicode_FromFormat("the channel (%s, %llu bytes)", pat, cap);
}

PyObject *endpoint_get_label(EndpointObject *self, void *unused) {
    (void)unused;
    return label(self);
}

PyObject *endpoint_get_name(EndpointObject *self, void *unused) {
    (void)unused;
    return Py_NewRef(self->name ? self->name : Py_None);
}

/* Raise cls(msg) (msg stolen) with attribute `channel` and up to two more
 * (values stolen; a NULL key ends the list). NULL always. */
static PyObject *raise_with(EndpointObject *self, PyObject *cls, PyObject *msg, const char *k1,
                            PyObject *v1, const char *k2, PyObject *v2) {
    PyObject *exc = NULL;
    if (msg && (!k1 || v1) && (!k2 || v2)) exc = PyObject_CallOneArg(cls, msg);
    if (exc) {
        PyObject *name = self->name ? self->name : Py_None;
        if (PyObject_SetAttrString(exc, "channel", name) < 0 ||
            (k1 && PyObject_SetAttrString(exc, k1, v1) < 0) ||
            (k2 && PyObject_SetAttrString(exc, k2, v2) < 0))
            Py_CLEAR(exc);
    }
    Py_XDECREF(msg);
    Py_XDECREF(v1);
    Py_XDECREF(v2);
    if (exc) {
        PyErr_SetObject(cls, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* msg = "<prefix><label><suffix>", each part a C string. */
static PyObject *labelled(EndpointObject *self, const char *prefix, const char *suffix) {
    PyObject *l = label(self);
    if (!l) return NULL;
    PyObject *m = PyUnicode_FromFormat("%s%U%s", prefix, l, suffix);
    Py_DECREF(l);
    return m;
}

PyObject *raise_timeout(EndpointObject *self, int space) {
    double t = self->timeout_s;
    PyObject *l = label(self);
    if (!l) return NULL;
    const char *what = space ? "space in" : "a message in";
    PyObject *msg, *tv;
    if (t >= 0.0) {
        char *ts = PyOS_double_to_string(t, 'r', 0, 0, NULL);
        if (!ts) {
            Py_DECREF(l);
            return NULL;
        }
        msg = PyUnicode_FromFormat("timed out after %s s waiting for %s %U", ts, what, l);
        PyMem_Free(ts);
        tv = PyFloat_FromDouble(t);
    } else { /* a deadline without a timeout: not from a call of ours */
        msg = PyUnicode_FromFormat("timed out waiting for %s %U", what, l);
        tv = Py_NewRef(Py_None);
    }
    Py_DECREF(l);
    if (msg && space && SpaceHint) {
        /* The error path only: whatever the hint fails with, the timeout stands. */
        PyObject *hint = PyObject_CallOneArg(SpaceHint, (PyObject *)self);
        if (hint && PyUnicode_Check(hint)) {
            PyObject *m2 = PyUnicode_FromFormat("%U: %U", msg, hint);
            if (m2) Py_SETREF(msg, m2);
        }
        Py_XDECREF(hint);
        PyErr_Clear();
    }
    return raise_with(self, E_Timeout, msg, "timeout", tv, NULL, NULL);
}

PyObject *raise_too_large(EndpointObject *self, uint64_t n) {
    unsigned long long lim = (unsigned long long)self->ring.max_message;
    PyObject *msg =
        self->name
            ? PyUnicode_FromFormat("message of %llu bytes exceeds channel %R max_message %llu",
                                   (unsigned long long)n, self->name, lim)
            : PyUnicode_FromFormat("message of %llu bytes exceeds the channel's max_message "
                                   "%llu", (unsigned long long)n, lim);
    return raise_with(self, E_TooLarge, msg, "size", PyLong_FromUnsignedLongLong(n), "limit",
                      PyLong_FromUnsignedLongLong(lim));
}

PyObject *raise_truncated(EndpointObject *self) {
    return raise_with(self, E_Broken,
                      labelled(self, "",
                               ": its shared memory segment was truncated under it (by some "
                               "process of its owner); what the ring held is lost and the "
                               "channel cannot be used: close it"),
                      NULL, NULL, NULL, NULL);
}

PyObject *raise_would_block(EndpointObject *self, int space) {
    return raise_with(self, E_WouldBlock,
                      labelled(self, "", space ? " is full" : " is empty"), NULL, NULL, NULL,
                      NULL);
}

PyObject *raise_closed(EndpointObject *self, const char *what) {
    PyObject *msg;
    if (!what) { /* end of stream for senders */
        msg = self->name ? PyUnicode_FromFormat("channel %R was closed for sending (close_send)",
                                                self->name)
                         : PyUnicode_FromString("the channel was closed for sending "
                                                "(close_send)");
    } else if (self->name) {
        msg = PyUnicode_FromFormat("this endpoint of channel %R %s", self->name, what);
    } else {
        msg = PyUnicode_FromFormat("this endpoint %s", what);
    }
    return raise_with(self, E_Closed, msg, NULL, NULL, NULL, NULL);
}

PyObject *raise_ring(EndpointObject *self, int rc) {
    switch (rc) {
    case RING_EOS:
        return raise_with(self, E_EndOfStream,
                          labelled(self, "end of stream: ",
                                   " was closed for sending and every message was received"),
                          NULL, NULL, NULL, NULL);
    case RING_BROKEN:
        return raise_with(self, E_Broken,
                          labelled(self, "",
                                   " was marked broken (a peer died holding state that could "
                                   "not be recovered, or the region is being torn down)"),
                          NULL, NULL, NULL, NULL);
    case RING_REVOKED:
        return raise_with(self, E_Revoked,
                          labelled(self, "this producer of ",
                                   " held its claim longer than the supervisor's claim timeout "
                                   "(stopped or stuck), so the claim was revoked and consumers "
                                   "went on: the message was not sent"),
                          NULL, NULL, NULL, NULL);
    case RING_LEASE:
        return raise_with(self, E_Lease,
                          labelled(self, "this consumer of ",
                                   " held its record longer than the channel's lease (stopped "
                                   "or stuck), so the supervisor handed it to the other "
                                   "consumers: it was not consumed here, and what was read of "
                                   "it is dropped"),
                          NULL, NULL, NULL, NULL);
    case RING_CORRUPT: {
        PyObject *l = label(self);
        PyObject *msg = l ? PyUnicode_FromFormat("corrupt region of %U: %s", l, self->ring.err)
                          : NULL;
        Py_XDECREF(l);
        return raise_with(self, E_Corrupt, msg, NULL, NULL, NULL, NULL);
    }
    case RING_TOOBIG: {
        /* Sizes are checked where they are known (raise_too_large); this is
         * a commit larger than its claim. */
        unsigned long long lim = (unsigned long long)self->ring.max_message;
        PyObject *msg = self->name ? PyUnicode_FromFormat(
                                         "message larger than channel %R max_message %llu",
                                         self->name, lim)
                                   : PyUnicode_FromFormat(
                                         "message larger than the channel's max_message %llu",
                                         lim);
        return raise_with(self, E_TooLarge, msg, "limit", PyLong_FromUnsignedLongLong(lim),
                          NULL, NULL);
    }
    default: PyErr_Format(PyExc_RuntimeError, "unexpected ring status %d", rc);
    }
    return NULL;
}
