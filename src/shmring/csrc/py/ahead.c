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

/* A peek that found no record (rc): 1 to look again (lapped, or one came
 * within the deadline), 0 to return what was read (`got` of them; an error
 * or end of stream then surfaces on the next call), -1 with an error set. */
static int nothing_ready(EndpointObject *self, int rc, Py_ssize_t got, int64_t deadline) {
    if (rc == RING_LAPPED) return 1;
    if (got > 0) return 0;
    if (rc != RING_AGAIN) {
        raise_ring(self, rc);
        return -1;
    }
    if (deadline >= 0 && mono_ns() >= deadline) return 0;
    if (PyErr_CheckSignals() < 0) return -1;
    int w = endpoint_wait(self, 0, deadline);
    if (w < 0) return -1;
    return w == 0;
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
        int more = nothing_ready(self, rc, PyList_GET_SIZE(out), deadline);
        if (more < 0) goto fail;
        if (!more) break;
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

/* ---- _ahead_packed: the same read, packed for a bridge's DATA batch ----
 * No Python object per record: the keys, positions and lengths come back as
 * arrays of native integers and the payloads back to back in one bytes, the
 * frames of a batch as they go on the wire (shmring/_bridge/wire.py). */

#define PACKED_NOGIL_COPY 262144
#define PACKED_FIRST_CAP 65536

typedef struct {
    PyObject *body; /* bytes, grown as records are added, cut to size at the end */
    Py_ssize_t used;
} packed_t;

/* Room for n more bytes in p->body. 0, or -1 with MemoryError set. */
static int packed_reserve(packed_t *p, Py_ssize_t n) {
    if (!p->body) {
        p->body = PyBytes_FromStringAndSize(NULL, n > PACKED_FIRST_CAP ? n : PACKED_FIRST_CAP);
        return p->body ? 0 : -1;
    }
    Py_ssize_t cap = PyBytes_GET_SIZE(p->body);
    if (p->used + n <= cap) return 0;
    Py_ssize_t want = cap * 2 > p->used + n ? cap * 2 : p->used + n;
    return _PyBytes_Resize(&p->body, want);
}

static int append_u64(PyObject *ba, uint64_t v) {
    Py_ssize_t k = PyByteArray_GET_SIZE(ba);
    if (PyByteArray_Resize(ba, k + 8) < 0) return -1;
    memcpy(PyByteArray_AS_STRING(ba) + k, &v, 8);
    return 0;
}

static int append_u32(PyObject *ba, uint32_t v) {
    Py_ssize_t k = PyByteArray_GET_SIZE(ba);
    if (PyByteArray_Resize(ba, k + 4) < 0) return -1;
    memcpy(PyByteArray_AS_STRING(ba) + k, &v, 4);
    return 0;
}

/* Appends the held record's key, position and length n to the arrays and
 * keeps it read ahead. 0, or -1 with an error set and the record put back. */
static int keep_packed(ring_t *r, PyObject *keys, PyObject *poss, PyObject *lens, uint64_t key,
                       uint64_t n) {
    if (append_u64(keys, key) < 0 || append_u64(poss, r->held_pos) < 0 ||
        append_u32(lens, (uint32_t)n) < 0) {
        ring_ahead_putback(r);
        return -1;
    }
    if (ring_ahead_keep(r) < 0) { /* put back by it */
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* A read-only memoryview of the n bytes at p in the region's mapping: a
 * view of the mapping object itself (the mmap), so the mapping stays until
 * the last such view goes, whatever happens to this endpoint. */
static PyObject *mapping_view(EndpointObject *self, const char *p, uint64_t n) {
    Py_ssize_t off = (Py_ssize_t)(p - (const char *)self->buf.buf);
    PyObject *whole = PyMemoryView_FromObject(self->buf.obj);
    if (!whole) return NULL;
    PyObject *part = PySequence_GetSlice(whole, off, off + (Py_ssize_t)n);
    Py_DECREF(whole);
    if (!part) return NULL;
    PyObject *ro = PyObject_CallMethod(part, "toreadonly", NULL);
    Py_DECREF(part);
    return ro;
}

/* _ahead_packed(max_count, max_bytes, timeout, count[, inplace]) -> (keys,
 * positions, lens, body): what _ahead reads, as a u64 array of keys (a
 * record's position + 1 if count < 0, else count + 1, count + 2, ...: an
 * exporting stream's sequence numbers), a u64 array of positions (what
 * _settle takes), a u32 array of lengths and the payloads back to back.
 * Empty when nothing came within the timeout.
 *
 * inplace > 0: a record of at least that many bytes comes alone and its body
 * is not copied: it is a read-only memoryview of the record in the mapping,
 * valid while the record is read ahead and not settled (a kept record is
 * not reused before _settle releases it) - except where records can be
 * overwritten under a reader (lossy broadcast, untethering: r->validating),
 * which are copied as before. */
PyObject *ahead_read_packed(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "_ahead_packed(max_count, max_bytes, timeout, count"
                                         "[, inplace]): 4 or 5 arguments");
        return NULL;
    }
    if (endpoint_check_open(self) < 0) return NULL;
    ring_t *r = &self->ring;
    if (self->view || r->held)
        return raise_invalid(self, "a record view is held on this consumer: release it first");
    Py_ssize_t maxn = PyNumber_AsSsize_t(args[0], PyExc_OverflowError);
    if (maxn == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t maxb = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (maxb == -1 && PyErr_Occurred()) return NULL;
    long long count = PyLong_AsLongLong(args[3]);
    if (count == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t inplace = 0;
    if (nargs == 5) {
        inplace = PyNumber_AsSsize_t(args[4], PyExc_OverflowError);
        if (inplace == -1 && PyErr_Occurred()) return NULL;
    }
    if (maxn < 1) return raise_invalid(self, "_ahead_packed(max_count): must be >= 1");
    if (maxb < 0) return raise_invalid(self, "_ahead_packed(max_bytes): must be >= 0");
    if (inplace < 0) return raise_invalid(self, "_ahead_packed(inplace): must be >= 0");
    if (r->validating) inplace = 0; /* records can change under a reader: copy them */
    int64_t deadline;
    if (endpoint_deadline(self, args[2], &deadline) < 0) return NULL;
    PyObject *keys = PyByteArray_FromStringAndSize(NULL, 0);
    PyObject *poss = PyByteArray_FromStringAndSize(NULL, 0);
    PyObject *lens = PyByteArray_FromStringAndSize(NULL, 0);
    packed_t pk = {NULL, 0};
    Py_ssize_t got = 0;
    PyObject *out = NULL;
    if (!keys || !poss || !lens) goto done;
    for (;;) {
        const char *p;
        uint64_t n;
        int rc = ring_ahead_peek(r, &p, &n);
        if (rc == RING_OK) {
            int alone = inplace > 0 && n >= (uint64_t)inplace;
            if (got > 0 && (alone || (uint64_t)pk.used + n > (uint64_t)maxb)) {
                ring_ahead_putback(r); /* for the next call */
                break;
            }
            if (alone) {
                pk.body = mapping_view(self, p, n);
                if (!pk.body) {
                    ring_ahead_putback(r);
                    goto fail;
                }
                uint64_t key = count < 0 ? r->held_pos + 1 : (uint64_t)count + 1;
                if (keep_packed(r, keys, poss, lens, key, n) < 0) {
                    Py_CLEAR(pk.body);
                    goto fail;
                }
                got = 1;
                goto viewed;
            }
            if (packed_reserve(&pk, (Py_ssize_t)n) < 0) {
                ring_ahead_putback(r);
                goto fail;
            }
            char *dst = PyBytes_AS_STRING(pk.body) + pk.used;
            if (n >= PACKED_NOGIL_COPY) {
                endpoint_enter(self); /* close() waits for us */
                Py_BEGIN_ALLOW_THREADS
                memcpy(dst, p, (size_t)n);
                Py_END_ALLOW_THREADS
                self->busy--;
            } else {
                memcpy(dst, p, (size_t)n);
            }
            if (ring_validate(r) != RING_OK) continue; /* overwritten under the copy */
            uint64_t key = count < 0 ? r->held_pos + 1 : (uint64_t)count + (uint64_t)got + 1;
            if (keep_packed(r, keys, poss, lens, key, n) < 0) goto fail;
            pk.used += (Py_ssize_t)n;
            got++;
            if (got >= maxn) break;
            continue;
        }
        int more = nothing_ready(self, rc, got, deadline);
        if (more < 0) goto fail;
        if (!more) break;
    }
    goto pack;
fail:
    if (got == 0) goto done;
    /* What was kept is returned (its keys are needed to settle it); the
     * error surfaces on the next call, as _ahead does. */
    PyErr_Clear();
    /* The last record's arrays may be one entry long: cut them to got. */
    if (PyByteArray_GET_SIZE(keys) > 8 * got) (void)PyByteArray_Resize(keys, 8 * got);
    if (PyByteArray_GET_SIZE(poss) > 8 * got) (void)PyByteArray_Resize(poss, 8 * got);
    if (PyByteArray_GET_SIZE(lens) > 4 * got) (void)PyByteArray_Resize(lens, 4 * got);
pack:
    if (!pk.body) {
        pk.body = PyBytes_FromStringAndSize(NULL, 0);
        if (!pk.body) goto done;
    } else if (PyBytes_GET_SIZE(pk.body) != pk.used && _PyBytes_Resize(&pk.body, pk.used) < 0) {
        goto done;
    }
viewed:
    out = PyTuple_Pack(4, keys, poss, lens, pk.body);
done:
    Py_XDECREF(keys);
    Py_XDECREF(poss);
    Py_XDECREF(lens);
    Py_XDECREF(pk.body);
    return out;
}
