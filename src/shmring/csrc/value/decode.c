/*
 * value/decode.c - a value record into Python objects, built from the bytes
 * where they lie (a held record in the ring, or any buffer).
 *
 * Receiving: the record is decoded where it lies; every length is checked
 * against the bytes left before anything is read or allocated (a count of
 * items can never exceed the bytes left, so a corrupt count cannot make a
 * huge allocation) and nesting is bounded, so corrupt bytes from another
 * process raise DecodeError and never read outside the record (invariant 2).
 * A record of another kind (a pickle, a framed record) is left held and
 * NotImplemented returned: the Python caller takes it the usual way.
 */
#include "value/value.h"

#include <string.h>

#include "value/format.h"

/* Dict keys of up to FIXSTR_MAX ASCII bytes are kept in a direct-mapped
 * cache of this many slots (a power of two), as msgspec does. */
#define KEY_CACHE 512

static PyObject *E_Decode; /* shmring.DecodeError, from set_decode_error() */

PyObject *decode_error_class(void) { return E_Decode ? E_Decode : PyExc_ValueError; }

typedef struct {
    const unsigned char *p, *end, *start;
    int depth;
} dec_t;

static PyObject *bad(dec_t *d, const char *what) {
    PyErr_Format(decode_error_class(), "corrupt value record: %s at byte %zd", what,
                 (Py_ssize_t)(d->p - d->start));
    return NULL;
}

static inline size_t left(dec_t *d) { return (size_t)(d->end - d->p); }

static PyObject *dec(dec_t *d);

/* The keys of a stream of dicts repeat. A cached key costs a hash of its
 * bytes and a memcmp instead of a new str, and it carries its str hash, so
 * the dict insertion does not compute one either. A str is immutable: the
 * same object in many dicts is indistinguishable from equal ones. */
static PyObject *key_cache[KEY_CACHE];

static size_t key_slot(const unsigned char *p, size_t n) {
    uint64_t h = (uint64_t)n * 0x9E3779B97F4A7C15ULL;
    if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, p, 8);
        memcpy(&b, p + n - 8, 8);
        h ^= a * 0xff51afd7ed558ccdULL;
        h = (h ^ (h >> 31)) * 0xc4ceb9fe1a85ec53ULL;
        h ^= b;
    } else {
        for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    }
    h = (h ^ (h >> 29)) * 0xbf58476d1ce4e5b9ULL;
    return (size_t)(h >> 40) & (KEY_CACHE - 1);
}

/* A dict key: short str keys through the cache, anything else as a value. */
static PyObject *dec_key(dec_t *d) {
    if (d->p >= d->end) return dec(d);
    unsigned t = *d->p;
    size_t n = t - T_FIXSTR;
    if (t < T_FIXSTR || t >= T_FIXTUPLE || n < 2 || n + 1 > left(d)) return dec(d);
    const unsigned char *s = d->p + 1;
    size_t i = key_slot(s, n);
    PyObject *k = key_cache[i];
    if (k && (size_t)PyUnicode_GET_LENGTH(k) == n && memcmp(PyUnicode_DATA(k), s, n) == 0) {
        d->p += n + 1;
        return Py_NewRef(k);
    }
    k = dec(d);
    if (k && PyUnicode_IS_COMPACT_ASCII(k)) {
        /* Hash it now: the insertion needs it, and the cache keeps it. */
        if (PyObject_Hash(k) == -1) PyErr_Clear();
        Py_XSETREF(key_cache[i], Py_NewRef(k));
    }
    return k;
}

static PyObject *dec_str(dec_t *d, size_t n) {
    if (n > left(d)) return bad(d, "str longer than the record");
    PyObject *s = PyUnicode_DecodeUTF8((const char *)d->p, (Py_ssize_t)n, NULL);
    d->p += n;
    return s;
}

static PyObject *dec_bytes(dec_t *d, size_t n) {
    if (n > left(d)) return bad(d, "bytes longer than the record");
    PyObject *b = PyBytes_FromStringAndSize((const char *)d->p, (Py_ssize_t)n);
    d->p += n;
    return b;
}

/* Items of a new tuple or list: n <= bytes left (each item takes one at
 * least), checked before the allocation. */
static PyObject *dec_seq(dec_t *d, size_t n, int tuple) {
    if (n > left(d)) return bad(d, "more items than bytes left");
    if (++d->depth > VALUE_MAX_DEPTH) return bad(d, "nested too deep");
    PyObject *seq = tuple ? PyTuple_New((Py_ssize_t)n) : PyList_New((Py_ssize_t)n);
    if (!seq) return NULL;
    PyObject **items = tuple ? ((PyTupleObject *)seq)->ob_item : ((PyListObject *)seq)->ob_item;
    for (size_t i = 0; i < n; i++) {
        PyObject *v = dec(d);
        if (!v) {
            Py_DECREF(seq); /* unset items are NULL: both deallocators skip them */
            return NULL;
        }
        items[i] = v;
    }
    d->depth--;
    return seq;
}

static PyObject *dec_dict(dec_t *d, size_t n) {
    if (n > left(d) / 2) return bad(d, "more dict pairs than bytes left");
    if (++d->depth > VALUE_MAX_DEPTH) return bad(d, "nested too deep");
#if PY_VERSION_HEX < 0x030D0000
    PyObject *dict = _PyDict_NewPresized((Py_ssize_t)n);
#else
    PyObject *dict = PyDict_New();
#endif
    if (!dict) return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *k = dec_key(d);
        if (!k) goto fail;
        PyObject *v = dec(d);
        if (!v) {
            Py_DECREF(k);
            goto fail;
        }
        int rc = PyDict_SetItem(dict, k, v); /* an unhashable key: TypeError */
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc < 0) goto fail;
    }
    d->depth--;
    return dict;
fail:
    Py_DECREF(dict);
    return NULL;
}

static int get_fixed(dec_t *d, void *dst, size_t n) {
    if (n > left(d)) {
        bad(d, "number cut short");
        return -1;
    }
    memcpy(dst, d->p, n);
    d->p += n;
    return 0;
}

static PyObject *dec(dec_t *d) {
    if (d->p >= d->end) return bad(d, "value cut short");
    unsigned t = *d->p++;
    if (t < 0x80) return PyLong_FromLong((long)t);
    if (t < T_FIXTUPLE) return dec_str(d, t - T_FIXSTR);
    if (t < T_FIXLIST) return dec_seq(d, t - T_FIXTUPLE, 1);
    if (t < T_FIXDICT) return dec_seq(d, t - T_FIXLIST, 0);
    if (t < T_NONE) return dec_dict(d, t - T_FIXDICT);
    switch (t) {
    case T_NONE: Py_RETURN_NONE;
    case T_FALSE: Py_RETURN_FALSE;
    case T_TRUE: Py_RETURN_TRUE;
    case T_I8: {
        int8_t v;
        if (get_fixed(d, &v, 1) < 0) return NULL;
        return PyLong_FromLong(v);
    }
    case T_I16: {
        uint16_t v;
        if (get_fixed(d, &v, 2) < 0) return NULL;
        return PyLong_FromLong((int16_t)le16(v));
    }
    case T_I32: {
        uint32_t v;
        if (get_fixed(d, &v, 4) < 0) return NULL;
        return PyLong_FromLong((long)(int32_t)le32(v));
    }
    case T_I64: {
        uint64_t v;
        if (get_fixed(d, &v, 8) < 0) return NULL;
        return PyLong_FromLongLong((long long)le64(v));
    }
    case T_F64: {
        uint64_t v;
        double x;
        if (get_fixed(d, &v, 8) < 0) return NULL;
        v = le64(v);
        memcpy(&x, &v, 8);
        return PyFloat_FromDouble(x);
    }
    default: break;
    }
    if (t > T_DICT) {
        d->p--;
        return bad(d, "unknown type byte");
    }
    uint32_t n;
    if (get_fixed(d, &n, 4) < 0) return NULL;
    n = le32(n);
    switch (t) {
    case T_STR: return dec_str(d, n);
    case T_BYTES: return dec_bytes(d, n);
    case T_TUPLE: return dec_seq(d, n, 1);
    case T_LIST: return dec_seq(d, n, 0);
    default: return dec_dict(d, n);
    }
}

/* Any error but our own becomes DecodeError, the original as its cause. */
static void as_decode_error(void) {
    PyObject *type, *val, *tb;
    PyErr_Fetch(&type, &val, &tb);
    PyErr_NormalizeException(&type, &val, &tb);
    if (type && PyErr_GivenExceptionMatches(type, decode_error_class())) {
        PyErr_Restore(type, val, tb);
        return;
    }
    if (val && tb) PyException_SetTraceback(val, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    PyErr_Format(decode_error_class(), "could not decode a received value record: %S",
                 val ? val : Py_None);
    PyObject *t2, *v2, *tb2;
    PyErr_Fetch(&t2, &v2, &tb2);
    PyErr_NormalizeException(&t2, &v2, &tb2);
    if (v2 && val) {
        PyException_SetContext(v2, Py_NewRef(val));
        PyException_SetCause(v2, val); /* steals val */
    } else {
        Py_XDECREF(val);
    }
    PyErr_Restore(t2, v2, tb2);
}

/* A whole record (its first byte is VALUE_TAG). */
static PyObject *decode_record(const char *p, size_t n) {
    dec_t d = {(const unsigned char *)p + 1, (const unsigned char *)p + n,
               (const unsigned char *)p, 0};
    PyObject *v = dec(&d);
    if (v && d.p != d.end) {
        Py_DECREF(v);
        v = bad(&d, "bytes after the value");
    }
    if (!v) as_decode_error();
    return v;
}

PyObject *value_decode(const char *p, size_t n) { return decode_record(p, n); }

PyObject *value_decode_value(PyObject *m, PyObject *buffer) {
    (void)m;
    Py_buffer vb;
    if (PyObject_GetBuffer(buffer, &vb, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *v;
    if (vb.len < 1 || ((unsigned char *)vb.buf)[0] != VALUE_TAG)
        v = PyErr_Format(decode_error_class(), "not a value record (its first byte is "
                                               "not 0x%02x)",
                         VALUE_TAG);
    else
        v = decode_record(vb.buf, (size_t)vb.len);
    PyBuffer_Release(&vb);
    return v;
}

PyObject *value_set_decode_error(PyObject *m, PyObject *cls) {
    (void)m;
    if (!PyExceptionClass_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "set_decode_error(cls): an exception class");
        return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(E_Decode, cls);
    Py_RETURN_NONE;
}
