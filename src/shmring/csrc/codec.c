/*
 * codec.c - small plain Python objects straight into a claimed record and
 * straight out of a held one: one C call per message each way.
 *
 * Why: for a small dict, pickle.dumps and pickle.loads alone cost more than
 * a whole round through the ring (~670 ns and ~520 ns here against ~150 ns),
 * and they build a bytes object on each side that is copied once more. A
 * codec that knows only the exact builtin types (None, bool, int, float,
 * str, bytes, tuple, list, dict) needs no memo, no opcodes and no
 * intermediate object: it writes the record where the consumer will read it
 * and builds the objects from the ring.
 *
 * What it refuses (so send_obj pickles instead, unchanged): any other type or
 * subclass; an int outside int64; a str with lone surrogates (not UTF-8);
 * nesting deeper than CODEC_MAX_DEPTH containers; and a list or dict reached
 * twice (a shared or self-containing container: pickle keeps that identity,
 * this codec would not). Immutable objects reached twice are encoded twice:
 * equal values, as pickle gives, only `is` between them differs.
 *
 * Format (little-endian), after the record's tag byte CODEC_TAG (0x01):
 *
 *   0x00-0x7f  int 0..127
 *   0x80-0x9f  str of 0..31 UTF-8 bytes, then the bytes
 *   0xa0-0xaf  tuple of 0..15 items, then the items
 *   0xb0-0xbf  list of 0..15 items
 *   0xc0-0xcf  dict of 0..15 pairs, then key, value, key, value... (in order)
 *   0xd0 None   0xd1 False   0xd2 True
 *   0xd3 int8  0xd4 int16  0xd5 int32  0xd6 int64   (two's complement)
 *   0xd7 float (IEEE 754 binary64: -0.0, inf and nan payloads kept)
 *   0xd8 str    u32 byte count, UTF-8 bytes
 *   0xd9 bytes  u32 byte count, the bytes
 *   0xda tuple  u32 count, items
 *   0xdb list   u32 count, items
 *   0xdc dict   u32 pair count, pairs
 *   0xdd-0xff   invalid
 *
 * The value ends exactly at the end of the record.
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
 * Receiving: the record is decoded where it lies; every length is checked
 * against the bytes left before anything is read or allocated (a count of
 * items can never exceed the bytes left, so a corrupt count cannot make a
 * huge allocation) and nesting is bounded, so corrupt bytes from another
 * process raise DecodeError and never read outside the record (invariant 2).
 * A record of another kind (a pickle, a framed record) is left held and
 * NotImplemented returned: the Python caller takes it the usual way.
 */
#include "codec.h"

#include <string.h>

#include "atomics.h"
#include "wait.h"

/* Type bytes (see the table above). */
#define T_FIXSTR 0x80u
#define T_FIXTUPLE 0xa0u
#define T_FIXLIST 0xb0u
#define T_FIXDICT 0xc0u
#define T_NONE 0xd0u
#define T_FALSE 0xd1u
#define T_TRUE 0xd2u
#define T_I8 0xd3u
#define T_I16 0xd4u
#define T_I32 0xd5u
#define T_I64 0xd6u
#define T_F64 0xd7u
#define T_STR 0xd8u
#define T_BYTES 0xd9u
#define T_TUPLE 0xdau
#define T_LIST 0xdbu
#define T_DICT 0xdcu
#define FIXSTR_MAX 31u
#define FIXSEQ_MAX 15u

/* Containers remembered in a plain array before a hash set takes over. */
#define SEEN_INLINE 16
/* Dict keys of up to FIXSTR_MAX ASCII bytes are kept in a direct-mapped
 * cache of this many slots (a power of two), as msgspec does. */
#define KEY_CACHE 512

static PyObject *E_Decode; /* shmring.DecodeError, from set_decode_error() */

PyObject *decode_error_class(void) { return E_Decode ? E_Decode : PyExc_ValueError; }

static inline uint16_t le16(uint16_t v) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_bswap16(v);
#else
    return v;
#endif
}
static inline uint32_t le32(uint32_t v) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_bswap32(v);
#else
    return v;
#endif
}
static inline uint64_t le64(uint64_t v) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_bswap64(v);
#else
    return v;
#endif
}

/* ------------------------------------------------------------- encoding -- */

enum { ENC_OK = 0, ENC_NO = 1, ENC_ERR = -1 }; /* ENC_NO: not encodable, no error set */

typedef struct {
    unsigned char *buf;
    size_t cap, pos; /* bytes past cap are counted, not written */
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
    e->depth = 0;
    e->nseen = 0;
    e->table = NULL;
    e->tsize = 0;
}

static void enc_free(enc_t *e) {
    PyMem_Free(e->table);
    e->table = NULL;
}

static inline void put(enc_t *e, const void *src, size_t n) {
    if (n <= e->cap && e->pos <= e->cap - n) memcpy(e->buf + e->pos, src, n);
    e->pos += n;
}
static inline void put1(enc_t *e, unsigned v) {
    if (e->pos < e->cap) e->buf[e->pos] = (unsigned char)v;
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
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return ENC_ERR;
            PyErr_Clear(); /* lone surrogates: pickle them */
            return ENC_NO;
        }
    }
    if ((size_t)n <= FIXSTR_MAX) {
        put1(e, T_FIXSTR + (unsigned)n);
    } else {
        if ((size_t)n > UINT32_MAX) return ENC_NO;
        put_u32(e, T_STR, (uint32_t)n);
    }
    put(e, s, (size_t)n);
    return ENC_OK;
}

static int enc_int(enc_t *e, PyObject *o) {
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow) return ENC_NO;
    if (v == -1 && PyErr_Occurred()) return ENC_ERR;
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
    return ENC_OK;
}

static int enc_float(enc_t *e, PyObject *o) {
    unsigned char b[9] = {T_F64};
    double d = PyFloat_AS_DOUBLE(o);
    uint64_t x;
    memcpy(&x, &d, 8);
    x = le64(x);
    memcpy(b + 1, &x, 8);
    put(e, b, 9);
    return ENC_OK;
}

static int put_head(enc_t *e, unsigned fix, unsigned big, size_t n) {
    if (n <= FIXSEQ_MAX) {
        put1(e, fix + (unsigned)n);
        return ENC_OK;
    }
    if (n > UINT32_MAX) return ENC_NO;
    put_u32(e, big, (uint32_t)n);
    return ENC_OK;
}

/* Items of a tuple or list (no Python code runs meanwhile: the list cannot
 * change under us). */
static int enc_items(enc_t *e, PyObject *const *items, Py_ssize_t n, unsigned fix,
                     unsigned big) {
    int rc = put_head(e, fix, big, (size_t)n);
    if (rc != ENC_OK) return rc;
    if (++e->depth > CODEC_MAX_DEPTH) return ENC_NO;
    for (Py_ssize_t i = 0; i < n; i++) {
        rc = enc(e, items[i]);
        if (rc != ENC_OK) return rc;
    }
    e->depth--;
    return ENC_OK;
}

static int enc_dict(enc_t *e, PyObject *o) {
    int rc = put_head(e, T_FIXDICT, T_DICT, (size_t)PyDict_GET_SIZE(o));
    if (rc != ENC_OK) return rc;
    if (++e->depth > CODEC_MAX_DEPTH) return ENC_NO;
    Py_ssize_t i = 0;
    PyObject *k, *v;
    while (PyDict_Next(o, &i, &k, &v)) {
        if ((rc = enc(e, k)) != ENC_OK || (rc = enc(e, v)) != ENC_OK) return rc;
    }
    e->depth--;
    return ENC_OK;
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
        if (s) return s < 0 ? ENC_ERR : ENC_NO; /* shared or recursive: pickle keeps it */
        if (t == &PyDict_Type) return enc_dict(e, o);
        return enc_items(e, ((PyListObject *)o)->ob_item, PyList_GET_SIZE(o), T_FIXLIST,
                         T_LIST);
    }
    if (o == Py_None) {
        put1(e, T_NONE);
        return ENC_OK;
    }
    if (t == &PyBool_Type) {
        put1(e, o == Py_True ? T_TRUE : T_FALSE);
        return ENC_OK;
    }
    if (t == &PyBytes_Type) {
        size_t n = (size_t)PyBytes_GET_SIZE(o);
        if (n > UINT32_MAX) return ENC_NO;
        put_u32(e, T_BYTES, (uint32_t)n);
        put(e, PyBytes_AS_STRING(o), n);
        return ENC_OK;
    }
    return ENC_NO;
}

/* The whole record, tag included, into buf (cap bytes); e->pos is its size
 * even when that exceeds cap. */
static int encode_record(enc_t *e, PyObject *obj, void *buf, size_t cap) {
    enc_init(e, buf, cap);
    put1(e, CODEC_TAG);
    int rc = enc(e, obj);
    enc_free(e);
    return rc;
}

/* ------------------------------------------------------------- decoding -- */

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
    if (++d->depth > CODEC_MAX_DEPTH) return bad(d, "nested too deep");
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
    if (++d->depth > CODEC_MAX_DEPTH) return bad(d, "nested too deep");
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

/* A whole record (its first byte is CODEC_TAG). */
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

/* ------------------------------------------------------- the endpoints -- */

static int parse_flags(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t first,
                       int64_t *deadline, int *nowait) {
    if (parse_timeout(nargs > first ? args[first] : NULL, deadline) < 0) return -1;
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

int codec_encode(PyObject *obj, unsigned char *stack, size_t *n) {
    enc_t e;
    int rc = encode_record(&e, obj, stack, STACK_BYTES);
    if (rc != ENC_OK) return rc == ENC_ERR ? -1 : 0;
    *n = e.pos;
    return 1;
}

PyObject *codec_send_encoded(EndpointObject *self, PyObject *obj, unsigned char *stack,
                             size_t n, int64_t deadline, int nowait) {
    if (endpoint_check_open(self) < 0) return NULL;
    ring_t *r = &self->ring;
    if (r->claimed) {
        PyErr_SetString(PyExc_RuntimeError, "a claim is open on this producer: "
                                            "commit or abort it first");
        return NULL;
    }
    if (ld32_acq(r->base, OFF_EOS)) {
        PyErr_SetString(E_Closed, "the channel was closed for sending (close_send)");
        return NULL;
    }
    /* Too large for one record: the pickle path streams a large top-level
     * bytes-like object where the pattern allows, else raises. */
    if (n > r->max_message) Py_RETURN_FALSE;
    enc_t e;
    int rc;
    for (;;) {
        char *dst;
        if (producer_claim_wait(self, n, deadline, nowait, &dst) < 0) return NULL;
        if (n <= STACK_BYTES) {
            memcpy(dst, stack, n);
            return committed(self, n);
        }
        /* Too large for the stack: encode again, into the record itself. */
        rc = encode_record(&e, obj, dst, n);
        if (rc == ENC_OK && e.pos == n) return committed(self, n);
        ring_abort(r);
        if (rc == ENC_ERR) return NULL;
        if (rc == ENC_NO) Py_RETURN_FALSE;
        /* It changed while we waited for space: claim its new size. */
        if (e.pos <= STACK_BYTES) {
            rc = encode_record(&e, obj, stack, STACK_BYTES);
            if (rc == ENC_ERR) return NULL;
            if (rc == ENC_NO) Py_RETURN_FALSE;
        }
        n = e.pos;
    }
}

/* True sent, False not a plain value (nothing sent), NULL error. */
static PyObject *send_value(EndpointObject *self, PyObject *obj, int64_t deadline, int nowait) {
    unsigned char stack[STACK_BYTES];
    size_t n;
    int rc = codec_encode(obj, stack, &n);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_FALSE;
    return codec_send_encoded(self, obj, stack, n, deadline, nowait);
}

PyObject *codec_send_value(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t deadline;
    int nowait;
    if (nargs < 1 || nargs > 3)
        return PyErr_Format(PyExc_TypeError, "_send_value(obj, timeout=None, nowait=False)");
    if (parse_flags(args, nargs, 1, &deadline, &nowait) < 0) return NULL;
    return send_value(self, args[0], deadline, nowait);
}

/* Takes the next record, waiting as Consumer.recv does: 0 with a record
 * held, -1 with an error set (WouldBlock when nowait finds nothing). */
static int take_wait(EndpointObject *self, int64_t deadline, int nowait, const char **p,
                     uint64_t *n) {
    int rc = consumer_take(self, deadline, nowait, p, n);
    if (rc == 1) PyErr_SetString(E_WouldBlock, "channel empty");
    return rc ? -1 : 0;
}

/* The decoded value, NotImplemented (another kind of record, left held), or
 * NULL with an error. */
PyObject *codec_recv(EndpointObject *self, int64_t deadline, int nowait) {
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
        if (n == 0 || (unsigned char)p[0] != CODEC_TAG) {
            /* Not ours: it stays held, and the caller's recv() or _peek()
             * gets this same record at once. */
            Py_RETURN_NOTIMPLEMENTED;
        }
        /* Building objects can run a collection, whose finalizers may close
         * this endpoint from another thread: busy makes close() wait for us
         * instead of unmapping the record we read. */
        endpoint_enter(self);
        PyObject *v = decode_record(p, n);
        /* Lossy broadcast: the producer may have overwritten the record
         * while we read it; then drop what we built and read on. */
        if (ring_validate(r) != RING_OK) {
            Py_XDECREF(v);
            PyErr_Clear();
            if (endpoint_leave(self) < 0) return NULL;
            continue;
        }
        ring_release(r); /* consumed, decoded or not */
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

PyObject *codec_recv_value(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t deadline;
    int nowait;
    if (nargs > 2) return PyErr_Format(PyExc_TypeError, "_recv_value(timeout=None, nowait=False)");
    if (parse_flags(args, nargs, 0, &deadline, &nowait) < 0) return NULL;
    return codec_recv(self, deadline, nowait);
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

PyObject *codec_send_obj(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames) {
    PyObject *timeout, *ser;
    int64_t deadline;
    if (nargs < 1 || !fast_args(args, nargs, kwnames, 1, 0, &timeout) ||
        !(ser = pickle_serializer(self))) {
        if (PyErr_Occurred()) return NULL;
        return forward(Send_full, (PyObject *)self, args, nargs, kwnames);
    }
    PyObject *sent = NULL;
    if (parse_timeout(timeout, &deadline) == 0) sent = send_value(self, args[0], deadline, 0);
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

PyObject *codec_recv_obj(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames) {
    PyObject *timeout, *ser;
    int64_t deadline;
    if (!fast_args(args, nargs, kwnames, 0, 1, &timeout) || !(ser = pickle_serializer(self))) {
        if (PyErr_Occurred()) return NULL;
        return forward(Recv_full, (PyObject *)self, args, nargs, kwnames);
    }
    PyObject *v = NULL;
    if (parse_timeout(timeout, &deadline) == 0) v = codec_recv(self, deadline, 0);
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

PyObject *codec_set_object_paths(PyObject *m, PyObject *args) {
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

PyObject *codec_encode_value(PyObject *m, PyObject *obj) {
    (void)m;
    unsigned char stack[STACK_BYTES];
    enc_t e;
    int rc = encode_record(&e, obj, stack, sizeof stack);
    if (rc == ENC_ERR) return NULL;
    if (rc == ENC_NO) Py_RETURN_NONE;
    if (e.pos <= sizeof stack) return PyBytes_FromStringAndSize((const char *)stack, (Py_ssize_t)e.pos);
    size_t n = e.pos;
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (!b) return NULL;
    /* Nothing ran in between: the second pass is the same size. */
    rc = encode_record(&e, obj, PyBytes_AS_STRING(b), n);
    if (rc != ENC_OK || e.pos != n) {
        Py_DECREF(b);
        if (rc == ENC_ERR) return NULL;
        PyErr_SetString(PyExc_RuntimeError, "value changed while it was being encoded");
        return NULL;
    }
    return b;
}

PyObject *codec_decode_value(PyObject *m, PyObject *buffer) {
    (void)m;
    Py_buffer vb;
    if (PyObject_GetBuffer(buffer, &vb, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *v;
    if (vb.len < 1 || ((unsigned char *)vb.buf)[0] != CODEC_TAG)
        v = PyErr_Format(decode_error_class(), "not a value record (its first byte is "
                                               "not 0x%02x)",
                         CODEC_TAG);
    else
        v = decode_record(vb.buf, (size_t)vb.len);
    PyBuffer_Release(&vb);
    return v;
}

PyObject *codec_set_decode_error(PyObject *m, PyObject *cls) {
    (void)m;
    if (!PyExceptionClass_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "set_decode_error(cls): an exception class");
        return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(E_Decode, cls);
    Py_RETURN_NONE;
}
