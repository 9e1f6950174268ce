/*
 * py/journal.c - the journal's hot path for shmring/_journal: the C base of
 * the Python Writer (JournalWriterCore), whose append is one call, and
 * journal_read_many, the reader's scan that checks and copies many records
 * per call. The record format is journal/record.c's.
 *
 * JournalWriterCore holds the writer's hot state (the mapped tail segment,
 * the meta page, the next offset and seq, the last time, the index
 * position) as attributes the Python subclass reads and writes (_off,
 * _next, ...). append(data) writes the record when it fits and nothing
 * needs Python; otherwise (no room: a roll; _slow set: closed, failed, or
 * the flusher's error to check) it calls the subclass's _append_slow(data),
 * which does the checks, rolls, and comes back through _append_here. So
 * segment rolling, sync policies and errors stay in Python, off the
 * per-append path.
 */
#include "py/core.h"

#include <stddef.h>
#include <string.h>
#include <structmember.h>
#include <time.h>

#include "atomics.h"
#include "guard.h"
#include "journal/crc.h"
#include "journal/record.h"
#include "wait.h"

typedef struct {
    PyObject_HEAD
    Py_buffer seg;  /* the tail segment's mapping (writable), if has_seg */
    Py_buffer meta; /* the meta page, if has_meta */
    char has_seg, has_meta;
    char sealed;    /* the segment ends with END: the next append rolls */
    char slow;      /* every append goes through _append_slow */
    char eager;     /* after each append, call _sync_policy(nbytes) */
    unsigned long long off, next, last_t, limit, data_off, stride, n_index, idx, index_at;
} JWriterObject;

static PyObject *S_append_slow, *S_sync_policy;

static int jw_init(JWriterObject *self, PyObject *args, PyObject *kw) {
    (void)args;
    (void)kw;
    self->index_at = 0;
    return 0;
}

static void jw_release(JWriterObject *self) {
    if (self->has_seg) {
        self->has_seg = 0;
        PyBuffer_Release(&self->seg);
    }
    if (self->has_meta) {
        self->has_meta = 0;
        PyBuffer_Release(&self->meta);
    }
}

static void jw_dealloc(JWriterObject *self) {
    jw_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* _attach(segment, meta, limit, data_off, stride, n_index): take the mappings
 * (the old ones are let go first); the offsets are the Python side's. */
static PyObject *jw_attach(JWriterObject *self, PyObject *args) {
    PyObject *seg, *meta;
    unsigned long long limit, data_off, stride, n_index;
    if (!PyArg_ParseTuple(args, "OOKKKK:_attach", &seg, &meta, &limit, &data_off, &stride,
                          &n_index))
        return NULL;
    jw_release(self);
    if (PyObject_GetBuffer(seg, &self->seg, PyBUF_WRITABLE) < 0) return NULL;
    self->has_seg = 1;
    if (PyObject_GetBuffer(meta, &self->meta, PyBUF_WRITABLE) < 0) {
        jw_release(self);
        return NULL;
    }
    self->has_meta = 1;
    if (limit > (unsigned long long)self->seg.len || data_off > limit || stride == 0 ||
        self->meta.len < 48 ||
        JINDEX_OFF + (unsigned long long)JINDEX_ENTRY * n_index > data_off) {
        jw_release(self);
        return PyErr_Format(PyExc_ValueError, "_attach: limit %llu, data_off %llu, stride %llu, "
                            "n_index %llu do not fit the mapping", limit, data_off, stride,
                            n_index);
    }
    self->limit = limit;
    self->data_off = data_off;
    self->stride = stride;
    self->n_index = n_index;
    Py_RETURN_NONE;
}

static PyObject *jw_detach(JWriterObject *self, PyObject *unused) {
    (void)unused;
    jw_release(self);
    Py_RETURN_NONE;
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Index entries for a record at off, the next seq published, readers woken
 * if any sleep, then the eager policy: the record at off is written. */
static PyObject *jw_publish(JWriterObject *self, uint64_t off, uint64_t end, uint64_t t) {
    uint64_t seq = self->next;
    char *base = (char *)self->seg.buf;
    if (off >= self->index_at) {
        while (self->idx < self->n_index && off >= self->data_off + self->idx * self->stride) {
            jindex_write(base, (uint32_t)self->idx, seq, t, (uint32_t)off);
            self->idx++;
        }
        self->index_at = self->idx < self->n_index ? self->data_off + self->idx * self->stride
                                                   : (1ull << 62);
    }
    self->off = end;
    self->next = seq + 1;
    self->last_t = t;
    char *meta = (char *)self->meta.buf;
    /* SYNC(journal-next): seq-cst: orders the record's word (released before it) and this
     * store before the load of the waiters count below; pairs with a reader's seq-cst
     * increment of the count (Meta.waiting) before its last look at the record. */
    st_sc(meta, JMETA_NEXT, seq + 1);
    /* SYNC(journal-next): the load half of that store-load pair: a count of 0 means the
     * reader's increment comes after our store, so its last look sees the record. */
    if (ld_sc(meta, JMETA_WAITERS)) {
        /* SYNC(py-futex): bump, then wake, as _core.wake: pairs with Meta.sleep. */
        fadd32_sc(meta, JMETA_WAKE, 1);
        futex_wake_word(meta + JMETA_WAKE, INT_MAX);
    }
    if (self->eager) {
        PyObject *nb = PyLong_FromUnsignedLongLong(end - off);
        if (!nb) return NULL;
        PyObject *r = PyObject_CallMethodOneArg((PyObject *)self, S_sync_policy, nb);
        Py_DECREF(nb);
        if (!r) return NULL;
        Py_DECREF(r);
    }
    return PyLong_FromUnsignedLongLong(seq);
}

/* The append itself; slow_ok: on no room (or _slow), hand over to
 * _append_slow rather than raise. */
static PyObject *jw_do_append(JWriterObject *self, PyObject *data, int slow_ok) {
    if ((self->slow || !self->has_seg) && slow_ok)
        return PyObject_CallMethodOneArg((PyObject *)self, S_append_slow, data);
    if (!self->has_seg) return PyErr_Format(PyExc_ValueError, "the writer has no segment");
    Py_buffer b;
    if (PyObject_GetBuffer(data, &b, PyBUF_SIMPLE) < 0) {
        if (!slow_ok) return NULL;
        /* Not a contiguous buffer (or not one at all): Python copes, or says why. */
        PyErr_Clear();
        return PyObject_CallMethodOneArg((PyObject *)self, S_append_slow, data);
    }
    uint64_t n = (uint64_t)b.len, off = self->off;
    /* The roll test of Writer._reserve, exactly: _append_slow reserves, then comes back. */
    if (self->sealed || n > JREC_MAX_PAYLOAD || off > self->limit ||
        jrec_align(off + JREC_SIZE + n) > self->limit) {
        PyBuffer_Release(&b);
        if (slow_ok) return PyObject_CallMethodOneArg((PyObject *)self, S_append_slow, data);
        return PyErr_Format(PyExc_ValueError, "_append_here: %llu bytes do not fit at %llu",
                            (unsigned long long)n, (unsigned long long)off);
    }
    uint64_t t = now_ns();
    if (t < self->last_t) t = self->last_t;
    uint64_t end = jrec_write((char *)self->seg.buf, off, self->next, t, b.buf, (uint32_t)n);
    PyBuffer_Release(&b);
    return jw_publish(self, off, end, t);
}

static PyObject *jw_append(JWriterObject *self, PyObject *data) {
    return jw_do_append(self, data, 1);
}

static PyObject *jw_append_here(JWriterObject *self, PyObject *data) {
    return jw_do_append(self, data, 0);
}

/* _commit_claim(off, n): seal and publish the record whose n payload bytes
 * the caller wrote in place at off (a claim). */
static PyObject *jw_commit_claim(JWriterObject *self, PyObject *const *a, Py_ssize_t na) {
    unsigned long long off, n;
    if (na != 2) return PyErr_Format(PyExc_TypeError, "_commit_claim(off, n)");
    off = PyLong_AsUnsignedLongLong(a[0]);
    if (PyErr_Occurred()) return NULL;
    n = PyLong_AsUnsignedLongLong(a[1]);
    if (PyErr_Occurred()) return NULL;
    if (!self->has_seg || off != self->off || n > JREC_MAX_PAYLOAD || off > self->limit ||
        off + JREC_SIZE + n > (unsigned long long)self->seg.len)
        return PyErr_Format(PyExc_ValueError, "_commit_claim: no claim of %llu bytes at %llu",
                            n, off);
    uint64_t t = now_ns();
    if (t < self->last_t) t = self->last_t;
    uint64_t end = jrec_write((char *)self->seg.buf, off, self->next, t, NULL, (uint32_t)n);
    return jw_publish(self, off, end, t);
}

static PyObject *jw_get_mark(JWriterObject *self, void *unused) {
    (void)unused;
    return Py_BuildValue("(KK)", self->next, self->off);
}

static PyMethodDef jw_methods[] = {
    {"append", (PyCFunction)jw_append, METH_O,
     "append(data) -> seq: append one record; return its sequence number."},
    {"_append_here", (PyCFunction)jw_append_here, METH_O,
     "_append_here(data) -> seq: append at _off, which the caller made room for."},
    {"_commit_claim", (PyCFunction)(void (*)(void))jw_commit_claim, METH_FASTCALL,
     "_commit_claim(off, n) -> seq: seal and publish the claimed record at off."},
    {"_attach", (PyCFunction)jw_attach, METH_VARARGS,
     "_attach(segment, meta, limit, data_off, stride, n_index): the mappings to write."},
    {"_detach", (PyCFunction)jw_detach, METH_NOARGS, "_detach(): let the mappings go."},
    {NULL, NULL, 0, NULL}};

#define M(name, type, field) {name, type, offsetof(JWriterObject, field), 0, NULL}
static PyMemberDef jw_members[] = {
    M("_off", T_ULONGLONG, off),       M("_next", T_ULONGLONG, next),
    M("_last_t", T_ULONGLONG, last_t), M("_idx", T_ULONGLONG, idx),
    M("_index_at", T_ULONGLONG, index_at), M("_sealed", T_BOOL, sealed),
    M("_slow", T_BOOL, slow),          M("_eager", T_BOOL, eager),
    {NULL, 0, 0, 0, NULL}};

static PyGetSetDef jw_getset[] = {
    {"_mark", (getter)jw_get_mark, NULL, "(next seq, offset) after the last record, together.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject JWriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmring._core.JournalWriterCore",
    .tp_basicsize = sizeof(JWriterObject),
    .tp_dealloc = (destructor)jw_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The hot state and append of a journal writer (the base of Writer).",
    .tp_methods = jw_methods,
    .tp_members = jw_members,
    .tp_getset = jw_getset,
    .tp_init = (initproc)jw_init,
    .tp_new = PyType_GenericNew,
};

/* journal_read_many(segment, off, end, seq, max_records, max_bytes)
 *   -> (records, off, seq, status)
 * Checks and copies the records from off while each is a DATA record with
 * the seq expected, up to max_records of them or until max_bytes of payload
 * were copied (at least one). records: a list of (seq, bytes), each payload
 * copied first and its checksum checked over the copy, so what is returned
 * is what was checked. off, seq: where it stopped. status: 0 a limit, then
 * what is at off: 1 nothing yet, 2 bytes that do not check (format.py's
 * read_record would say BAD), 3 a record that checks but has another seq,
 * 4 an END record that checks, 5 the mapping faulted (truncated). */
static PyObject *m_read_many(PyObject *m, PyObject *const *a, Py_ssize_t na) {
    (void)m;
    if (na != 6)
        return PyErr_Format(PyExc_TypeError,
                            "journal_read_many(segment, off, end, seq, max_records, max_bytes)");
    unsigned long long v[5];
    for (int i = 0; i < 5; i++) {
        v[i] = PyLong_AsUnsignedLongLong(a[i + 1]);
        if (PyErr_Occurred()) return NULL;
    }
    uint64_t off = v[0], end = v[1], seq = v[2], max_n = v[3], max_bytes = v[4];
    Py_buffer b;
    if (PyObject_GetBuffer(a[0], &b, PyBUF_SIMPLE) < 0) return NULL;
    if (end > (uint64_t)b.len) end = (uint64_t)b.len;
    PyObject *out = PyList_New(0);
    if (!out) goto fail;
    const char *base = (const char *)b.buf;
    uint64_t copied = 0, got = 0;
    int status = 0;
    while (got < max_n && (got == 0 || copied < max_bytes)) {
        jrec_t r;
        int rc = jrec_head(base, off, end, &r);
        if (rc != JREC_OK) {
            status = rc == JREC_EMPTY ? 1 : 2;
            break;
        }
        if (r.seq != seq || r.kind == JREC_KIND_END) {
            /* A stop: which, as format.read_record sees it (the checksum first). */
            if (!jrec_check(&r, base + r.payload_off)) status = 2;
            else status = r.seq != seq ? 3 : 4;
            break;
        }
        PyObject *data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)r.length);
        if (!data) goto fail;
        memcpy(PyBytes_AS_STRING(data), base + r.payload_off, r.length);
        if (!jrec_check(&r, PyBytes_AS_STRING(data))) {
            Py_DECREF(data);
            status = 2;
            break;
        }
        PyObject *item = PyTuple_New(2), *s = PyLong_FromUnsignedLongLong(seq);
        if (!item || !s) {
            Py_XDECREF(item);
            Py_XDECREF(s);
            Py_DECREF(data);
            goto fail;
        }
        PyTuple_SET_ITEM(item, 0, s);
        PyTuple_SET_ITEM(item, 1, data);
        int err = PyList_Append(out, item);
        Py_DECREF(item);
        if (err < 0) goto fail;
        got++;
        copied += r.length;
        seq++;
        off = r.next_off;
    }
    if (guard_faults() && guard_faults_at(base)) status = 5;
    PyBuffer_Release(&b);
    return Py_BuildValue("(NKKi)", out, (unsigned long long)off, (unsigned long long)seq, status);
fail:
    Py_XDECREF(out);
    PyBuffer_Release(&b);
    return NULL;
}

/* journal_crc(word, seq, time_ns, payload) -> int: a record's checksum, as
 * format.record_crc (for the tests' cross-checks). */
static PyObject *m_crc(PyObject *m, PyObject *const *a, Py_ssize_t na) {
    (void)m;
    if (na != 4) return PyErr_Format(PyExc_TypeError, "journal_crc(word, seq, time_ns, payload)");
    unsigned long long v[3];
    for (int i = 0; i < 3; i++) {
        v[i] = PyLong_AsUnsignedLongLong(a[i]);
        if (PyErr_Occurred()) return NULL;
    }
    Py_buffer b;
    if (PyObject_GetBuffer(a[3], &b, PyBUF_SIMPLE) < 0) return NULL;
    uint32_t crc = jrec_crc((uint32_t)v[0], v[1], v[2], b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(crc);
}

/* journal_nonzero(buffer, start, end) -> int: the offset of the first
 * non-zero byte in [start, end), or end (recovery's cut of a torn tail:
 * memcmp speed instead of a Python comparison per chunk). */
static PyObject *m_nonzero(PyObject *m, PyObject *const *a, Py_ssize_t na) {
    (void)m;
    static const char zeros[4096];
    if (na != 3) return PyErr_Format(PyExc_TypeError, "journal_nonzero(buffer, start, end)");
    Py_ssize_t start = PyNumber_AsSsize_t(a[1], PyExc_OverflowError);
    if (start == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t end = PyNumber_AsSsize_t(a[2], PyExc_OverflowError);
    if (end == -1 && PyErr_Occurred()) return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(a[0], &b, PyBUF_SIMPLE) < 0) return NULL;
    if (end > b.len) end = b.len;
    if (start < 0) start = 0;
    const char *p = (const char *)b.buf;
    Py_ssize_t at = start;
    while (at < end) {
        Py_ssize_t k = end - at < (Py_ssize_t)sizeof zeros ? end - at : (Py_ssize_t)sizeof zeros;
        if (memcmp(p + at, zeros, (size_t)k) != 0) {
            while (!p[at]) at++;
            break;
        }
        at += k;
    }
    PyBuffer_Release(&b);
    return PyLong_FromSsize_t(at); /* start if start >= end */
}

static PyMethodDef journal_functions[] = {
    {"journal_nonzero", (PyCFunction)(void (*)(void))m_nonzero, METH_FASTCALL,
     "journal_nonzero(buffer, start, end) -> int: the first non-zero byte's offset, or end."},
    {"journal_read_many", (PyCFunction)(void (*)(void))m_read_many, METH_FASTCALL,
     "journal_read_many(segment, off, end, seq, max_records, max_bytes) -> "
     "(records, off, seq, status): check and copy many records."},
    {"journal_crc", (PyCFunction)(void (*)(void))m_crc, METH_FASTCALL,
     "journal_crc(word, seq, time_ns, payload) -> int: a journal record's CRC32."},
    {NULL, NULL, 0, NULL}};

int journal_add_types(PyObject *m) {
    if (!S_append_slow && !(S_append_slow = PyUnicode_InternFromString("_append_slow")))
        return -1;
    if (!S_sync_policy && !(S_sync_policy = PyUnicode_InternFromString("_sync_policy")))
        return -1;
    jcrc32_init();
    if (PyType_Ready(&JWriterType) < 0) return -1;
    Py_INCREF(&JWriterType);
    if (PyModule_AddObject(m, "JournalWriterCore", (PyObject *)&JWriterType) < 0) {
        Py_DECREF(&JWriterType);
        return -1;
    }
    if (PyModule_AddIntConstant(m, "JOURNAL_CRC_CLMUL", jcrc32_accelerated()) < 0) return -1;
    return PyModule_AddFunctions(m, journal_functions);
}
