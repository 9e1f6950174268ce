/*
 * value/encode.c - a plain Python object into a value record, in one pass
 * that writes what fits the buffer and counts the rest (see value.h for the
 * format and what is refused).
 *
 * A list or dict reached twice (shared, or containing itself) is refused:
 * pickle keeps that identity, this format would not. The containers met so
 * far are remembered in a small inline array, then an open-addressing set.
 */
#include "value/value.h"

#include <string.h>

#include "value/format.h"

/* Containers remembered in a plain array before a hash set takes over. */
#define SEEN_INLINE 16

typedef struct {
    unsigned char *buf;
    size_t cap, pos; /* bytes past cap are counted, not written (unless growing) */
    int grow;        /* past cap, buf moves to a larger heap buffer (value_encode_value) */
    unsigned char *heap; /* that buffer, once made: the caller frees it */
    int depth;
    size_t nseen;
    PyObject *seen[SEEN_INLINE]; /* lists and dicts met so far */
    PyObject **table;            /* then an open-addressing set of them */
    size_t tsize;                /* its slots, a power of two */
} enc_t;

static void enc_init(enc_t *e, void *buf, size_t cap) {
    e->buf = buf;
    e->cap = cap;
    e->pos = 0;
    e->grow = 0;
    e->heap = NULL;
    e->depth = 0;
    e->nseen = 0;
    e->table = NULL;
    e->tsize = 0;
}

static void enc_free(enc_t *e) {
    PyMem_Free(e->table);
    e->table = NULL;
}

/* Room for n more bytes in a growing encoder: the buffer at least doubles.
 * Out of memory it stops growing, and the rest is only counted. */
static int enc_grow(enc_t *e, size_t n) {
    if (!e->grow || e->pos > e->cap || n > SIZE_MAX / 4 - e->pos) return 0;
    size_t cap = e->cap * 2 > e->pos + n ? e->cap * 2 : (e->pos + n) * 2;
    unsigned char *b = e->heap ? PyMem_Realloc(e->heap, cap) : PyMem_Malloc(cap);
    if (!b) {
        e->grow = 0;
        return 0;
    }
    if (!e->heap) memcpy(b, e->buf, e->pos);
    e->heap = e->buf = b;
    e->cap = cap;
    return 1;
}

static inline void put(enc_t *e, const void *src, size_t n) {
    if ((n <= e->cap && e->pos <= e->cap - n) || enc_grow(e, n)) memcpy(e->buf + e->pos, src, n);
    e->pos += n;
}
static inline void put1(enc_t *e, unsigned v) {
    if (e->pos < e->cap || enc_grow(e, 1)) e->buf[e->pos] = (unsigned char)v;
    e->pos++;
}
static inline void put_u32(enc_t *e, unsigned t, uint32_t v) {
    unsigned char b[5];
    b[0] = (unsigned char)t;
    v = le32(v);
    memcpy(b + 1, &v, 4);
    put(e, b, 5);
}

static size_t ptr_slot(PyObject *o, size_t mask) {
    uint64_t h = ((uint64_t)(uintptr_t)o >> 4) * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 32) & mask;
}

/* Records o in the table; 1 if it was there already. */
static int table_insert(PyObject **table, size_t mask, PyObject *o) {
    size_t i = ptr_slot(o, mask);
    while (table[i]) {
        if (table[i] == o) return 1;
        i = (i + 1) & mask;
    }
    table[i] = o;
    return 0;
}

static int table_grow(enc_t *e) {
    size_t size = e->tsize ? 2 * e->tsize : 4 * SEEN_INLINE;
    PyObject **t = PyMem_Calloc(size, sizeof(PyObject *));
    if (!t) {
        PyErr_NoMemory();
        return -1;
    }
    if (e->table) {
        for (size_t i = 0; i < e->tsize; i++)
            if (e->table[i]) table_insert(t, size - 1, e->table[i]);
        PyMem_Free(e->table);
    } else {
        for (size_t i = 0; i < e->nseen; i++) table_insert(t, size - 1, e->seen[i]);
    }
    e->table = t;
    e->tsize = size;
    return 0;
}

/* A list or dict entered: 1 if it was met before, 0 if new, -1 on error. */
static int seen_add(enc_t *e, PyObject *o) {
    if (!e->table) {
        for (size_t i = 0; i < e->nseen; i++)
            if (e->seen[i] == o) return 1;
        if (e->nseen < SEEN_INLINE) {
            e->seen[e->nseen++] = o;
            return 0;
        }
        if (table_grow(e) < 0) return -1;
    } else if (2 * (e->nseen + 1) > e->tsize && table_grow(e) < 0) {
        return -1;
    }
    if (table_insert(e->table, e->tsize - 1, o)) return 1;
    e->nseen++;
    return 0;
}

static int enc(enc_t *e, PyObject *o);

static int enc_str(enc_t *e, PyObject *o) {
    Py_ssize_t n;
    const char *s;
    if (PyUnicode_IS_COMPACT_ASCII(o)) {
        s = PyUnicode_DATA(o);
        n = PyUnicode_GET_LENGTH(o);
    } else {
        s = PyUnicode_AsUTF8AndSize(o, &n); /* cached in the str, as pickle does */
        if (!s) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return VALUE_ERR;
            PyErr_Clear(); /* lone surrogates: pickle them */
            return VALUE_NO;
        }
    }
    if ((size_t)n <= FIXSTR_MAX) {
        put1(e, T_FIXSTR + (unsigned)n);
    } else {
        if ((size_t)n > UINT32_MAX) return VALUE_NO;
        put_u32(e, T_STR, (uint32_t)n);
    }
    put(e, s, (size_t)n);
    return VALUE_OK;
}

static int enc_int(enc_t *e, PyObject *o) {
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow) return VALUE_NO;
    if (v == -1 && PyErr_Occurred()) return VALUE_ERR;
    if (v >= 0 && v < 0x80) {
        put1(e, (unsigned)v);
    } else if (v >= INT8_MIN && v <= INT8_MAX) {
        unsigned char b[2] = {T_I8, (unsigned char)(int8_t)v};
        put(e, b, 2);
    } else if (v >= INT16_MIN && v <= INT16_MAX) {
        unsigned char b[3] = {T_I16};
        uint16_t x = le16((uint16_t)(int16_t)v);
        memcpy(b + 1, &x, 2);
        put(e, b, 3);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        unsigned char b[5] = {T_I32};
        uint32_t x = le32((uint32_t)(int32_t)v);
        memcpy(b + 1, &x, 4);
        put(e, b, 5);
    } else {
        unsigned char b[9] = {T_I64};
        uint64_t x = le64((uint64_t)v);
        memcpy(b + 1, &x, 8);
        put(e, b, 9);
    }
    return VALUE_OK;
}

static int enc_float(enc_t *e, PyObject *o) {
    unsigned char b[9] = {T_F64};
    double d = PyFloat_AS_DOUBLE(o);
    uint64_t x;
    memcpy(&x, &d, 8);
    x = le64(x);
    memcpy(b + 1, &x, 8);
    put(e, b, 9);
    return VALUE_OK;
}

static int put_head(enc_t *e, unsigned fix, unsigned big, size_t n) {
    if (n <= FIXSEQ_MAX) {
        put1(e, fix + (unsigned)n);
        return VALUE_OK;
    }
    if (n > UINT32_MAX) return VALUE_NO;
    put_u32(e, big, (uint32_t)n);
    return VALUE_OK;
}

/* Items of a tuple or list (no Python code runs meanwhile: the list cannot
 * change under us). */
static int enc_items(enc_t *e, PyObject *const *items, Py_ssize_t n, unsigned fix,
                     unsigned big) {
    int rc = put_head(e, fix, big, (size_t)n);
    if (rc != VALUE_OK) return rc;
    if (++e->depth > VALUE_MAX_DEPTH) return VALUE_NO;
    for (Py_ssize_t i = 0; i < n; i++) {
        rc = enc(e, items[i]);
        if (rc != VALUE_OK) return rc;
    }
    e->depth--;
    return VALUE_OK;
}

static int enc_dict(enc_t *e, PyObject *o) {
    int rc = put_head(e, T_FIXDICT, T_DICT, (size_t)PyDict_GET_SIZE(o));
    if (rc != VALUE_OK) return rc;
    if (++e->depth > VALUE_MAX_DEPTH) return VALUE_NO;
    Py_ssize_t i = 0;
    PyObject *k, *v;
    while (PyDict_Next(o, &i, &k, &v)) {
        if ((rc = enc(e, k)) != VALUE_OK || (rc = enc(e, v)) != VALUE_OK) return rc;
    }
    e->depth--;
    return VALUE_OK;
}

static int enc(enc_t *e, PyObject *o) {
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyUnicode_Type) return enc_str(e, o);
    if (t == &PyLong_Type) return enc_int(e, o);
    if (t == &PyFloat_Type) return enc_float(e, o);
    if (t == &PyTuple_Type)
        return enc_items(e, ((PyTupleObject *)o)->ob_item, PyTuple_GET_SIZE(o), T_FIXTUPLE,
                         T_TUPLE);
    if (t == &PyDict_Type || t == &PyList_Type) {
        int s = seen_add(e, o);
        if (s) return s < 0 ? VALUE_ERR : VALUE_NO; /* shared or recursive: pickle keeps it */
        if (t == &PyDict_Type) return enc_dict(e, o);
        return enc_items(e, ((PyListObject *)o)->ob_item, PyList_GET_SIZE(o), T_FIXLIST,
                         T_LIST);
    }
    if (o == Py_None) {
        put1(e, T_NONE);
        return VALUE_OK;
    }
    if (t == &PyBool_Type) {
        put1(e, o == Py_True ? T_TRUE : T_FALSE);
        return VALUE_OK;
    }
    if (t == &PyBytes_Type) {
        size_t n = (size_t)PyBytes_GET_SIZE(o);
        if (n > UINT32_MAX) return VALUE_NO;
        put_u32(e, T_BYTES, (uint32_t)n);
        put(e, PyBytes_AS_STRING(o), n);
        return VALUE_OK;
    }
    return VALUE_NO;
}

/* The whole record, tag included, into buf (cap bytes); e->pos is its size
 * even when that exceeds cap. grow: past cap it goes on in e->heap. */
static int encode_record(enc_t *e, PyObject *obj, void *buf, size_t cap, int grow) {
    enc_init(e, buf, cap);
    e->grow = grow;
    put1(e, VALUE_TAG);
    int rc = enc(e, obj);
    enc_free(e);
    return rc;
}

int value_encode(PyObject *obj, void *buf, size_t cap, size_t *size) {
    enc_t e;
    int rc = encode_record(&e, obj, buf, cap, 0);
    *size = e.pos;
    return rc;
}

PyObject *value_encode_value(PyObject *m, PyObject *obj) {
    (void)m;
    unsigned char stack[VALUE_STACK_BYTES];
    enc_t e;
    /* One pass: a value larger than the stack buffer goes on in a heap one. */
    int rc = encode_record(&e, obj, stack, sizeof stack, 1);
    if (rc != VALUE_OK) {
        PyMem_Free(e.heap);
        if (rc == VALUE_ERR) return NULL;
        Py_RETURN_NONE;
    }
    if (e.pos <= e.cap) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)e.buf, (Py_ssize_t)e.pos);
        PyMem_Free(e.heap);
        return b;
    }
    /* Out of memory while growing: the size is known, encode again into the bytes. */
    PyMem_Free(e.heap);
    size_t n = e.pos;
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (!b) return NULL;
    /* Nothing ran in between: the second pass is the same size. */
    rc = encode_record(&e, obj, PyBytes_AS_STRING(b), n, 0);
    if (rc != VALUE_OK || e.pos != n) {
        Py_DECREF(b);
        if (rc == VALUE_ERR) return NULL;
        PyErr_SetString(PyExc_RuntimeError, "value changed while it was being encoded");
        return NULL;
    }
    return b;
}
