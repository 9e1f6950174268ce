/* py/fed.c - ProducerCore._send_fed and _core.fed_state: a producer that
 * commits keyed records (epoch, seq) and the header words that remember the
 * last one committed (ring/feed.c; layout.h, FEED). One call per batch: the
 * records are copied, published with one store of tail and one wake-up
 * (spsc, broadcast) unless the ring fills meanwhile. */
#include "py/core.h"

#include <string.h>

#include "atomics.h"

#define NOGIL_COPY 262144

/* InvalidArgument (shmring._errors), looked up on the error path only. */
static PyObject *invalid(const char *fmt, ...) {
    PyObject *mod = PyImport_ImportModule("shmring._errors");
    PyObject *cls = mod ? PyObject_GetAttrString(mod, "InvalidArgument") : NULL;
    Py_XDECREF(mod);
    if (!cls) return NULL;
    va_list ap;
    va_start(ap, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (msg) {
        PyErr_SetObject(cls, msg);
        Py_DECREF(msg);
    }
    Py_DECREF(cls);
    return NULL;
}

/* An int in lo .. 2**64-1: 0, or -1 with TypeError or InvalidArgument set. */
static int key_word(PyObject *o, const char *what, uint64_t lo, uint64_t *v) {
    if (!PyLong_Check(o) || PyBool_Check(o)) {
        PyErr_Format(PyExc_TypeError, "_send_fed(): %s must be an int, not %.100s", what,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    *v = PyLong_AsUnsignedLongLong(o);
    int bad = *v == (uint64_t)-1 && PyErr_Occurred();
    if (bad && !PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
    if (bad) PyErr_Clear();
    if (bad || *v < lo) {
        invalid("_send_fed(): %s must be in %llu..2**64-1, got %R", what,
                (unsigned long long)lo, o);
        return -1;
    }
    return 0;
}

static int parse(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **v) {
    static const char *const names[4] = {"items", "epoch", "seqs", "timeout"};
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    v[0] = v[1] = v[2] = v[3] = NULL;
    if (nargs > 4) goto usage;
    for (Py_ssize_t i = 0; i < nargs; i++) v[i] = args[i];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        int j = 0;
        while (j < 4 && (!PyUnicode_Check(k) || PyUnicode_CompareWithASCIIString(k, names[j])))
            j++;
        if (j == 4 && PyUnicode_Check(k) && !PyUnicode_CompareWithASCIIString(k, "first_seq"))
            j = 2; /* the brief's name for it */
        if (j == 4 || v[j]) goto usage;
        v[j] = args[nargs + i];
    }
    if (v[0] && v[1] && v[2]) return 0;
usage:
    PyErr_SetString(PyExc_TypeError,
                    "_send_fed(items, epoch, seqs, timeout=None) -> int");
    return -1;
}

/* Adds `sent` to the exception being raised: the caller resends the rest. */
static void note_sent(Py_ssize_t n) {
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    PyObject *cnt = PyLong_FromSsize_t(n);
    if (cnt && exc && PyObject_SetAttrString(exc, "sent", cnt) < 0) PyErr_Clear();
    Py_XDECREF(cnt);
    PyErr_Restore(type, exc, tb);
}

/* One record: claim (waiting for space until the deadline, publishing what
 * the batch has so far before any wait), copy, commit. 0, 1 timed out, or -1
 * with an error set. */
static int feed_bytes(EndpointObject *self, feed_t *f, const char *src, Py_ssize_t n,
                      int64_t deadline) {
    ring_t *r = &self->ring;
    int out = -1;
    char *dst;
    for (;;) {
        int rc = ring_feed_claim(r, f, (uint64_t)n, &dst);
        if (rc == RING_OK) break;
        if (rc == RING_TOOBIG) {
            raise_too_large(self, (uint64_t)n);
            goto done;
        }
        if (rc != RING_AGAIN) {
            raise_ring(self, rc);
            goto done;
        }
        ring_feed_publish(r, f); /* let consumers see what we have */
        if (producer_wait_space(self, deadline) < 0) {
            if (PyErr_ExceptionMatches(E_Timeout)) {
                PyErr_Clear();
                out = 1;
            }
            goto done;
        }
    }
    int rc;
    if (n >= NOGIL_COPY) {
        endpoint_enter(self);
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, src, (size_t)n);
        Py_END_ALLOW_THREADS
        rc = ring_feed_commit(r, f, (uint64_t)n);
        if (endpoint_leave(self) < 0) PyErr_Clear(); /* it was committed (or revoked) */
    } else {
        memcpy(dst, src, (size_t)n);
        FEED_STEP();
        rc = ring_feed_commit(r, f, (uint64_t)n);
    }
    if (rc == RING_OK) out = 0;
    else raise_ring(self, rc);
done:
    return out;
}

static int feed_one(EndpointObject *self, feed_t *f, PyObject *item, int64_t deadline) {
    if (PyBytes_CheckExact(item))
        return feed_bytes(self, f, PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item), deadline);
    Py_buffer vb;
    if (PyObject_GetBuffer(item, &vb, PyBUF_SIMPLE) < 0) return -1;
    int out = feed_bytes(self, f, vb.buf, vb.len, deadline);
    PyBuffer_Release(&vb);
    return out;
}

/* The keys' seqs: first_seq and the consecutive ones after it (*seqs NULL),
 * or one per item, strictly increasing (*seqs malloc'ed). 0, or -1 with an
 * error set. */
static int get_seqs(PyObject *o, Py_ssize_t n, uint64_t *first, uint64_t **seqs) {
    *seqs = NULL;
    if (PyLong_Check(o)) {
        if (key_word(o, "first_seq", 0, first) < 0) return -1;
        if (n > 0 && (uint64_t)(n - 1) > UINT64_MAX - *first) {
            invalid("_send_fed(): first_seq %llu + %zd items runs past 2**64-1",
                    (unsigned long long)*first, n);
            return -1;
        }
        return 0;
    }
    PyObject *sq = PySequence_Fast(o, "_send_fed(): seqs must be an int or a sequence of ints");
    if (!sq) return -1;
    if (PySequence_Fast_GET_SIZE(sq) != n) {
        invalid("_send_fed(): %zd seqs for %zd items", PySequence_Fast_GET_SIZE(sq), n);
        Py_DECREF(sq);
        return -1;
    }
    *seqs = PyMem_Malloc(sizeof(uint64_t) * (size_t)(n ? n : 1));
    if (!*seqs) {
        Py_DECREF(sq);
        PyErr_NoMemory();
        return -1;
    }
    PyObject **el = PySequence_Fast_ITEMS(sq);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (key_word(el[i], "each seq", 0, &(*seqs)[i]) < 0 ||
            (i && (*seqs)[i] <= (*seqs)[i - 1] &&
             !invalid("_send_fed(): seqs must increase: %llu after %llu",
                      (unsigned long long)(*seqs)[i], (unsigned long long)(*seqs)[i - 1]))) {
            PyMem_Free(*seqs);
            *seqs = NULL;
            Py_DECREF(sq);
            return -1;
        }
    }
    Py_DECREF(sq);
    *first = n ? (*seqs)[0] : 0;
    return 0;
}

PyObject *producer_send_fed(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames) {
    PyObject *v[4];
    uint64_t epoch, first, *seqs = NULL;
    int64_t deadline;
    if (parse(args, nargs, kwnames, v) < 0) return NULL;
    if (key_word(v[1], "epoch", 1, &epoch) < 0) return NULL;
    if (endpoint_check_open(self) < 0) return NULL;
    ring_t *r = &self->ring;
    if (r->claimed) {
        PyErr_SetString(PyExc_RuntimeError, "a claim is open on this producer: "
                                            "commit or abort it first");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(v[0], "_send_fed() takes a sequence of bytes-like");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), i = 0;
    PyObject *out = NULL;
    if (get_seqs(v[2], n, &first, &seqs) < 0) goto fail;
    /* SYNC(eos): acquire of end-of-stream; pairs with its seq-cst store by _core.store32
     * (py/module.c m_store32) in shmring/_channel (close_send). */
    if (ld32_acq(r->base, OFF_EOS)) {
        raise_closed(self, NULL);
        goto fail;
    }
    if (endpoint_deadline(self, v[3], &deadline) < 0) goto fail;
    if (n == 0) {
        out = PyLong_FromLong(0);
        goto fail;
    }
    feed_t f;
    int rc;
    Py_BEGIN_ALLOW_THREADS /* settling what a dead producer left may pause (mpsc, mpmc) */
    rc = ring_feed_begin(r, &f, epoch, first);
    Py_END_ALLOW_THREADS
    if (rc == FEED_STALE) {
        invalid("_send_fed(): (epoch %llu, seq %llu) is not past the last record committed, "
                "(%llu, %llu)",
                (unsigned long long)epoch, (unsigned long long)first, (unsigned long long)f.e,
                (unsigned long long)f.p);
        goto fail;
    }
    PyObject **its = PySequence_Fast_ITEMS(seq);
    int failed = 0;
    r->batch = 1;
    for (; i < n; i++) {
        if (seqs) f.next = seqs[i];
        int one = feed_one(self, &f, its[i], deadline);
        if (one) {
            failed = one < 0; /* 1: the timeout passed: say how many went in */
            break;
        }
    }
    r->batch = 0;
    if (self->open) ring_feed_end(r, &f);
    if (failed) note_sent(i);
    else out = PyLong_FromSsize_t(i);
fail:
    PyMem_Free(seqs);
    Py_DECREF(seq);
    return out;
}

/* _send_fed_packed(body, lens, seqs, epoch, skip, timeout=None) -> int: the
 * records of one bridge DATA batch straight from its frames: `body` the
 * payloads back to back, `lens` their lengths (u32 each, native order),
 * `seqs` their seqs (u64 each, increasing); the first `skip` records are
 * left out (the importer has them). No Python object per record. */
PyObject *producer_send_fed_packed(EndpointObject *self, PyObject *const *args,
                                   Py_ssize_t nargs) {
    if (nargs < 5 || nargs > 6) {
        PyErr_SetString(PyExc_TypeError,
                        "_send_fed_packed(body, lens, seqs, epoch, skip, timeout=None) -> int");
        return NULL;
    }
    uint64_t epoch, skip;
    if (key_word(args[3], "epoch", 1, &epoch) < 0 || key_word(args[4], "skip", 0, &skip) < 0)
        return NULL;
    if (endpoint_check_open(self) < 0) return NULL;
    ring_t *r = &self->ring;
    if (r->claimed) {
        PyErr_SetString(PyExc_RuntimeError, "a claim is open on this producer: "
                                            "commit or abort it first");
        return NULL;
    }
    Py_buffer body, lens, seqb;
    if (PyObject_GetBuffer(args[0], &body, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &lens, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&body);
        return NULL;
    }
    if (PyObject_GetBuffer(args[2], &seqb, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&lens);
        PyBuffer_Release(&body);
        return NULL;
    }
    PyObject *out = NULL;
    Py_ssize_t n = lens.len / 4, i = 0;
    const char *lp = lens.buf, *sp = seqb.buf;
    uint64_t total = 0, prev = 0, first = 0;
    if (lens.len % 4 || seqb.len != n * 8 || skip > (uint64_t)n) {
        invalid("_send_fed_packed(): %zd bytes of lengths, %zd of seqs, skip %llu", lens.len,
                seqb.len, (unsigned long long)skip);
        goto fail;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        uint32_t ln;
        uint64_t sq;
        memcpy(&ln, lp + 4 * k, 4);
        memcpy(&sq, sp + 8 * k, 8);
        total += ln;
        if (k && sq <= prev) {
            invalid("_send_fed_packed(): seqs must increase: %llu after %llu",
                    (unsigned long long)sq, (unsigned long long)prev);
            goto fail;
        }
        prev = sq;
    }
    if (total != (uint64_t)body.len) {
        invalid("_send_fed_packed(): lengths add up to %llu, the body has %zd bytes",
                (unsigned long long)total, body.len);
        goto fail;
    }
    /* SYNC(eos): acquire of end-of-stream; pairs with its seq-cst store by _core.store32
     * (py/module.c m_store32) in shmring/_channel (close_send). */
    if (ld32_acq(r->base, OFF_EOS)) {
        raise_closed(self, NULL);
        goto fail;
    }
    int64_t deadline;
    if (endpoint_deadline(self, nargs > 5 ? args[5] : Py_None, &deadline) < 0) goto fail;
    if ((Py_ssize_t)skip == n) {
        out = PyLong_FromLong(0);
        goto fail;
    }
    const char *src = body.buf;
    for (Py_ssize_t k = 0; k < (Py_ssize_t)skip; k++) {
        uint32_t ln;
        memcpy(&ln, lp + 4 * k, 4);
        src += ln;
    }
    memcpy(&first, sp + 8 * skip, 8);
    feed_t f;
    int rc;
    Py_BEGIN_ALLOW_THREADS /* settling what a dead producer left may pause (mpsc, mpmc) */
    rc = ring_feed_begin(r, &f, epoch, first);
    Py_END_ALLOW_THREADS
    if (rc == FEED_STALE) {
        invalid("_send_fed_packed(): (epoch %llu, seq %llu) is not past the last record "
                "committed, (%llu, %llu)",
                (unsigned long long)epoch, (unsigned long long)first, (unsigned long long)f.e,
                (unsigned long long)f.p);
        goto fail;
    }
    int failed = 0;
    r->batch = 1;
    for (i = (Py_ssize_t)skip; i < n; i++) {
        uint32_t ln;
        memcpy(&ln, lp + 4 * i, 4);
        memcpy(&f.next, sp + 8 * i, 8);
        int one = feed_bytes(self, &f, src, (Py_ssize_t)ln, deadline);
        if (one) {
            failed = one < 0;
            break;
        }
        src += ln;
    }
    r->batch = 0;
    if (self->open) ring_feed_end(r, &f);
    if (failed) note_sent(i - (Py_ssize_t)skip);
    else out = PyLong_FromSsize_t(i - (Py_ssize_t)skip);
fail:
    PyBuffer_Release(&seqb);
    PyBuffer_Release(&lens);
    PyBuffer_Release(&body);
    return out;
}

PyObject *module_feed_trap(PyObject *m, PyObject *n) {
    (void)m;
    long v = PyLong_AsLong(n);
    if (v == -1 && PyErr_Occurred()) return NULL;
    if (v < 0 || v > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "_feed_trap(n): n must be 0..2**31-1");
        return NULL;
    }
    ring_feed_trap = (int)v;
    Py_RETURN_NONE;
}

PyObject *module_fed_state(PyObject *m, PyObject *buffer) {
    (void)m;
    Py_buffer vb;
    ring_t r;
    uint64_t e, s;
    if (PyObject_GetBuffer(buffer, &vb, PyBUF_SIMPLE) < 0) return NULL;
    int rc = ring_init(&r, vb.buf, (uint64_t)vb.len, 0, 0);
    if (rc != RING_OK) {
        PyBuffer_Release(&vb);
        return PyErr_Format(E_Corrupt, "corrupt region: %s", r.err);
    }
    Py_BEGIN_ALLOW_THREADS
    ring_feed_state(&r, &e, &s);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&vb);
    return Py_BuildValue("(KK)", (unsigned long long)e, (unsigned long long)s);
}
