/* py/module.c - shmring._core: the two endpoint types (and py/queue.c's three),
 * atomic operations on words of a mapping for the Python side's cold paths
 * (region header, attach table, CLI), futex wait and wake, recovery, and the
 * layout constants. */
#include "py/core.h"

#include <errno.h>
#include <string.h>

#include "atomics.h"
#include "guard.h"
#include "py/buffers.h"
#include "py/objects.h"
#include "wait.h"

/* A word of a writable buffer: bounds and alignment checked, since the
 * offsets may come from a corrupt segment. */
static char *word_at(PyObject *obj, Py_buffer *vb, PyObject *offobj, unsigned width) {
    Py_ssize_t off = PyNumber_AsSsize_t(offobj, PyExc_OverflowError);
    if (off == -1 && PyErr_Occurred()) return NULL;
    if (PyObject_GetBuffer(obj, vb, PyBUF_WRITABLE) < 0) return NULL;
    if (off < 0 || off % width || (size_t)off + width > (size_t)vb->len) {
        PyBuffer_Release(vb);
        PyErr_Format(PyExc_ValueError, "offset %zd is not an aligned %u-byte word inside "
                                       "the %zd-byte buffer",
                     off, width, vb->len);
        return NULL;
    }
    return (char *)vb->buf + off;
}

static PyObject *m_load(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    Py_buffer vb;
    if (n != 2) return PyErr_Format(PyExc_TypeError, "load(buffer, offset)");
    char *p = word_at(a[0], &vb, a[1], 8);
    if (!p) return NULL;
    /* SYNC(py-word): acquire load for the Python side's cold paths (shmring/_region, _channel,
     * _queue, _supervisor): pairs with the seq-cst stores and read-modify-writes of this file
     * (m_store, m_store32, m_cas, m_fetch_add) made by Python in any process, and with the ring's
     * own releases of the same words. */
    uint64_t v = ld_acq(p, 0);
    PyBuffer_Release(&vb);
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *m_load32(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    Py_buffer vb;
    if (n != 2) return PyErr_Format(PyExc_TypeError, "load32(buffer, offset)");
    char *p = word_at(a[0], &vb, a[1], 4);
    if (!p) return NULL;
    /* SYNC(py-word): acquire load of a 32-bit word, as m_load. */
    uint32_t v = ld32_acq(p, 0);
    PyBuffer_Release(&vb);
    return PyLong_FromUnsignedLong(v);
}

static int get_u64(PyObject *o, uint64_t *v) {
    *v = PyLong_AsUnsignedLongLongMask(o);
    return (*v == (uint64_t)-1 && PyErr_Occurred()) ? -1 : 0;
}

static PyObject *m_store(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    Py_buffer vb;
    uint64_t v;
    if (n != 3) return PyErr_Format(PyExc_TypeError, "store(buffer, offset, value)");
    if (get_u64(a[2], &v) < 0) return NULL;
    char *p = word_at(a[0], &vb, a[1], 8);
    if (!p) return NULL;
    /* SYNC(py-word), SYNC(magic): seq-cst store for Python; pairs with m_load and the ring's
     * acquire loads. The creator publishes the header's magic last through here (shmring/_region),
     * which ring_init acquires. */
    st_sc(p, 0, v);
    PyBuffer_Release(&vb);
    Py_RETURN_NONE;
}

static PyObject *m_store32(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    Py_buffer vb;
    uint64_t v;
    if (n != 3) return PyErr_Format(PyExc_TypeError, "store32(buffer, offset, value)");
    if (get_u64(a[2], &v) < 0) return NULL;
    char *p = word_at(a[0], &vb, a[1], 4);
    if (!p) return NULL;
    /* SYNC(py-word), SYNC(eos), SYNC(slot-state): seq-cst store of a 32-bit word for Python: end-
     * of-stream (shmring/_channel, close_send), a slot's role and state (shmring/_region,
     * _channel); pairs with m_load32 and the ring's acquire loads of them. */
    st32_sc(p, 0, (uint32_t)v);
    PyBuffer_Release(&vb);
    Py_RETURN_NONE;
}

static PyObject *m_cas(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    Py_buffer vb;
    uint64_t e, d;
    if (n != 4) return PyErr_Format(PyExc_TypeError, "cas(buffer, offset, expected, new)");
    if (get_u64(a[2], &e) < 0 || get_u64(a[3], &d) < 0) return NULL;
    char *p = word_at(a[0], &vb, a[1], 8);
    if (!p) return NULL;
    /* SYNC(py-word), SYNC(slot-pid), SYNC(owner): compare-exchange for Python: a slot's pid
     * (shmring/_region), a role's owner (shmring/_channel); pairs with other_live_claim's acquire
     * of the pid and recovery's compare-exchange of the owner. */
    int ok = cas_sc(p, 0, &e, d);
    PyBuffer_Release(&vb);
    return PyBool_FromLong(ok);
}

static PyObject *m_fetch_add(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    Py_buffer vb;
    uint64_t d;
    if (n != 3) return PyErr_Format(PyExc_TypeError, "fetch_add(buffer, offset, delta)");
    if (get_u64(a[2], &d) < 0) return NULL;
    char *p = word_at(a[0], &vb, a[1], 8);
    if (!p) return NULL;
    /* SYNC(py-word), SYNC(ctl-waiters), SYNC(inflight): seq-cst add for Python, e.g. a queue
     * waiter raising its count (shmring/_queue) before it re-reads its condition; pairs with
     * wake_word in py/queue.c; or a pipeline's count of items in an edge (py/link.c). */
    uint64_t old = fadd_sc(p, 0, d);
    PyBuffer_Release(&vb);
    return PyLong_FromUnsignedLongLong(old);
}

static PyObject *m_wake(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    Py_buffer vb;
    if (n != 2) return PyErr_Format(PyExc_TypeError, "wake(buffer, offset)");
    char *p = word_at(a[0], &vb, a[1], 4);
    if (!p) return NULL;
    /* SYNC(py-futex), SYNC(futex): bump, then wake: pairs with the futex waits of m_futex_wait and
     * shm_wait. */
    fadd32_sc(p, 0, 1);
    int woken = futex_wake_word(p, INT_MAX);
    PyBuffer_Release(&vb);
    return PyLong_FromLong(woken);
}

/* futex_wait(buffer, offset, expected, timeout=None) -> bool: sleep while
 * the 32-bit word at offset still holds expected, until a wake() on it or
 * the timeout (seconds). False if the timeout passed; True otherwise (woken,
 * the word differed, or spuriously: callers re-check their condition). For
 * cold-path waits kept in Python (shmring.Queue's item count and join).
 * The GIL is released; the buffer stays exported while we sleep, so its
 * mapping cannot be unmapped under us. A signal runs Python's handlers
 * (Ctrl-C works), then the sleep resumes. */
static PyObject *m_futex_wait(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    Py_buffer vb;
    uint64_t expected;
    int64_t deadline;
    if (n < 3 || n > 4)
        return PyErr_Format(PyExc_TypeError, "futex_wait(buffer, offset, expected, timeout=None)");
    if (get_u64(a[2], &expected) < 0) return NULL;
    if (parse_timeout(n > 3 ? a[3] : NULL, &deadline) < 0) return NULL;
    char *p = word_at(a[0], &vb, a[1], 4);
    if (!p) return NULL;
    int timed_out = 0;
    for (;;) {
        int64_t left = -1;
        if (deadline >= 0) {
            left = deadline - mono_ns();
            if (left <= 0) {
                timed_out = 1;
                break;
            }
        }
        int err;
        Py_BEGIN_ALLOW_THREADS
        /* SYNC(py-futex): pairs with the bump and wake of m_wake and py/queue.c's wake_word. */
        err = futex_wait_word(p, (uint32_t)expected, left);
        Py_END_ALLOW_THREADS
        if (err == EINTR) {
            if (PyErr_CheckSignals() < 0) {
                PyBuffer_Release(&vb);
                return NULL;
            }
            continue;
        }
        timed_out = err == ETIMEDOUT;
        break;
    }
    PyBuffer_Release(&vb);
    return PyBool_FromLong(!timed_out);
}

static PyObject *m_check_region(PyObject *m, PyObject *buffer) {
    (void)m;
    Py_buffer vb;
    ring_t r;
    if (PyObject_GetBuffer(buffer, &vb, PyBUF_SIMPLE) < 0) return NULL;
    int rc = ring_init(&r, vb.buf, (uint64_t)vb.len, 0, 0);
    PyBuffer_Release(&vb);
    if (rc != RING_OK) return PyErr_Format(E_Corrupt, "corrupt region: %s", r.err);
    Py_RETURN_NONE;
}

/* (buffer, slot) arguments of the slot functions below: 0, or -1 with an
 * error set. On 0 the caller releases vb. */
static int buffer_and_slot(PyObject *const *a, Py_ssize_t n, const char *usage, Py_buffer *vb,
                           uint32_t *slot) {
    if (n != 2) {
        PyErr_Format(PyExc_TypeError, "%s(buffer, slot)", usage);
        return -1;
    }
    unsigned long s = PyLong_AsUnsignedLong(a[1]);
    if (s == (unsigned long)-1 && PyErr_Occurred()) return -1;
    if (PyObject_GetBuffer(a[0], vb, PyBUF_WRITABLE) < 0) return -1;
    *slot = (uint32_t)s;
    return 0;
}

static PyObject *m_recover_slot(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    Py_buffer vb, ob;
    uint32_t slot;
    if (n < 2 || n > 4)
        return PyErr_Format(PyExc_TypeError, "recover_slot(buffer, slot, out=None, force=False)");
    if (buffer_and_slot(a, 2, "recover_slot", &vb, &slot) < 0) return NULL;
    int have_out = n >= 3 && a[2] != Py_None;
    int force = n >= 4 ? PyObject_IsTrue(a[3]) : 0;
    if (force < 0 || (have_out && PyObject_GetBuffer(a[2], &ob, PyBUF_WRITABLE) < 0)) {
        PyBuffer_Release(&vb);
        return NULL;
    }
    int fixed;
    /* Recovery may pause a few milliseconds (see recover_claim). */
    Py_BEGIN_ALLOW_THREADS
    fixed = ring_recover_slot(vb.buf, (uint64_t)vb.len, slot, have_out ? ob.buf : NULL,
                              have_out ? (uint64_t)ob.len : 0, force);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&vb);
    if (have_out) PyBuffer_Release(&ob);
    if (fixed == -1)
        return PyErr_Format(E_Corrupt, "corrupt region: cannot recover slot %u", slot);
    return PyLong_FromLong(fixed);
}

/* slot_take(buffer, pid, limit) / slots_of(buffer, pid, start): attach slots found
 * in C (ring/slots.c), a table may have thousands. */
static PyObject *m_slot_take(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    Py_buffer vb;
    uint64_t pid, limit;
    if (n != 3) return PyErr_Format(PyExc_TypeError, "slot_take(buffer, pid, limit)");
    if (get_u64(a[1], &pid) < 0 || get_u64(a[2], &limit) < 0) return NULL;
    if (limit > MAX_SLOTS) limit = MAX_SLOTS;
    if (pid == 0 || (pid & SLOT_RECOVERING))
        return PyErr_Format(PyExc_ValueError, "slot_take: bad pid %llu", (unsigned long long)pid);
    if (PyObject_GetBuffer(a[0], &vb, PyBUF_WRITABLE) < 0) return NULL;
    int64_t slot = ring_slot_take(vb.buf, (uint64_t)vb.len, pid, (uint32_t)limit);
    PyBuffer_Release(&vb);
    if (slot == -2) return PyErr_Format(E_Corrupt, "corrupt region: bad attach slot count");
    if (slot < 0) Py_RETURN_NONE;
    return PyLong_FromLongLong(slot);
}

static PyObject *m_slots_of(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    Py_buffer vb;
    uint64_t pid, start;
    if (n != 3) return PyErr_Format(PyExc_TypeError, "slots_of(buffer, pid, start)");
    if (get_u64(a[1], &pid) < 0 || get_u64(a[2], &start) < 0) return NULL;
    uint32_t *found = PyMem_Malloc(MAX_SLOTS * sizeof(uint32_t));
    if (!found) return PyErr_NoMemory();
    if (PyObject_GetBuffer(a[0], &vb, PyBUF_WRITABLE) < 0) {
        PyMem_Free(found);
        return NULL;
    }
    int k = ring_slots_of(vb.buf, (uint64_t)vb.len, pid, start, found, (int)MAX_SLOTS);
    PyBuffer_Release(&vb);
    PyObject *out = PyList_New(k);
    if (!out) {
        PyMem_Free(found);
        return NULL;
    }
    for (int i = 0; i < k; i++) {
        PyObject *v = PyLong_FromUnsignedLong(found[i]);
        if (!v) {
            Py_DECREF(out);
            PyMem_Free(found);
            return NULL;
        }
        PyList_SET_ITEM(out, i, v);
    }
    PyMem_Free(found);
    return out;
}

/* revoke_claim(buffer, slot) / lift_quarantine(buffer): the supervisor's
 * side of revocation (ring/revoke.c). */
static PyObject *m_revoke_claim(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    Py_buffer vb;
    uint32_t slot;
    if (buffer_and_slot(a, n, "revoke_claim", &vb, &slot) < 0) return NULL;
    int rc = ring_revoke_claim(vb.buf, (uint64_t)vb.len, slot);
    PyBuffer_Release(&vb);
    if (rc == -1) return PyErr_Format(E_Corrupt, "corrupt region: cannot revoke in slot %u", slot);
    return PyLong_FromLong(rc);
}

/* lease_scan(buffer) -> [(pos, word)] / revoke_lease(buffer, pos, word, out=None): the
 * supervisor's side of consumer leases (ring/lease.c). */
#define LEASE_SCAN_MAX 512
static PyObject *m_lease_scan(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    Py_buffer vb;
    if (n != 1) return PyErr_Format(PyExc_TypeError, "lease_scan(buffer)");
    if (PyObject_GetBuffer(a[0], &vb, PyBUF_SIMPLE) < 0) return NULL;
    uint64_t pos[LEASE_SCAN_MAX], word[LEASE_SCAN_MAX];
    int k = ring_lease_scan(vb.buf, (uint64_t)vb.len, pos, word, LEASE_SCAN_MAX);
    PyBuffer_Release(&vb);
    if (k < 0) return PyErr_Format(E_Corrupt, "corrupt region: cannot look at its leases");
    PyObject *out = PyList_New(k);
    if (!out) return NULL;
    for (int i = 0; i < k; i++) {
        PyObject *t = Py_BuildValue("(KK)", (unsigned long long)pos[i],
                                    (unsigned long long)word[i]);
        if (!t) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, t);
    }
    return out;
}

static PyObject *m_revoke_lease(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    Py_buffer vb, ob;
    uint64_t pos, word;
    if (n < 3 || n > 4)
        return PyErr_Format(PyExc_TypeError, "revoke_lease(buffer, pos, word, out=None)");
    if (get_u64(a[1], &pos) < 0 || get_u64(a[2], &word) < 0) return NULL;
    int have_out = n == 4 && a[3] != Py_None;
    if (PyObject_GetBuffer(a[0], &vb, PyBUF_WRITABLE) < 0) return NULL;
    if (have_out && PyObject_GetBuffer(a[3], &ob, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&vb);
        return NULL;
    }
    int rc = ring_revoke_lease(vb.buf, (uint64_t)vb.len, pos, word, have_out ? ob.buf : NULL,
                               have_out ? (uint64_t)ob.len : 0);
    PyBuffer_Release(&vb);
    if (have_out) PyBuffer_Release(&ob);
    if (rc == -1) return PyErr_Format(E_Corrupt, "corrupt region: cannot revoke a lease");
    return PyLong_FromLong(rc);
}

static PyObject *m_lift_quarantine(PyObject *m, PyObject *const *a, Py_ssize_t n) {
    (void)m;
    Py_buffer vb;
    if (n != 1) return PyErr_Format(PyExc_TypeError, "lift_quarantine(buffer)");
    if (PyObject_GetBuffer(a[0], &vb, PyBUF_WRITABLE) < 0) return NULL;
    int rc = ring_lift_quarantine(vb.buf, (uint64_t)vb.len);
    PyBuffer_Release(&vb);
    if (rc < 0) return PyErr_Format(E_Corrupt, "corrupt region: cannot lift its quarantine");
    return PyLong_FromLong(rc);
}

static PyObject *m_set_errors(PyObject *m, PyObject *args) {
    (void)m;
    PyObject *e[10];
    if (!PyArg_ParseTuple(args, "OOOOOOOOOO", &e[0], &e[1], &e[2], &e[3], &e[4], &e[5], &e[6],
                          &e[7], &e[8], &e[9]))
        return NULL;
    for (int i = 0; i < 10; i++)
        if (!PyExceptionClass_Check(e[i]))
            return PyErr_Format(PyExc_TypeError, "set_errors: argument %d is not an exception class",
                                i + 1);
    /* The value decoder (value/decode.c) keeps its own: it has no py/ header. */
    PyObject *r = value_set_decode_error(m, e[8]);
    if (!r) return NULL;
    Py_DECREF(r);
    PyObject **dst[10] = {&E_WouldBlock, &E_Timeout, &E_EndOfStream, &E_Broken, &E_Corrupt,
                          &E_TooLarge,   &E_Closed,  &E_Revoked,     NULL,      &E_Lease};
    for (int i = 0; i < 10; i++) {
        if (!dst[i]) continue;
        Py_INCREF(e[i]);
        Py_XSETREF(*dst[i], e[i]);
    }
    Py_RETURN_NONE;
}

/* watch(mapping) -> address: guard the mapping against SIGBUS (guard.h);
 * unwatch(address) before it is unmapped; faults(mapping) -> faults caught
 * in it (0: intact as far as this process touched it). */
static PyObject *m_watch(PyObject *m, PyObject *arg) {
    (void)m;
    Py_buffer vb;
    if (PyObject_GetBuffer(arg, &vb, PyBUF_SIMPLE) < 0) return NULL;
    void *base = vb.buf;
    size_t len = (size_t)vb.len;
    PyBuffer_Release(&vb);
    if (guard_watch(base, len) < 0)
        return PyErr_Format(PyExc_RuntimeError, "too many shmring mappings to guard");
    return PyLong_FromVoidPtr(base);
}

static PyObject *m_unwatch(PyObject *m, PyObject *arg) {
    (void)m;
    void *base = PyLong_AsVoidPtr(arg);
    if (!base && PyErr_Occurred()) return NULL;
    guard_unwatch(base);
    Py_RETURN_NONE;
}

static PyObject *m_faults(PyObject *m, PyObject *arg) {
    (void)m;
    Py_buffer vb;
    if (PyObject_GetBuffer(arg, &vb, PyBUF_SIMPLE) < 0) return NULL;
    uint64_t f = guard_faults() ? guard_faults_at(vb.buf) : 0;
    PyBuffer_Release(&vb);
    return PyLong_FromUnsignedLongLong(f);
}

/* set_space_hint(callable): see SpaceHint in core.h. */
static PyObject *m_set_space_hint(PyObject *m, PyObject *fn) {
    (void)m;
    if (!PyCallable_Check(fn)) return PyErr_Format(PyExc_TypeError, "set_space_hint: not callable");
    Py_XSETREF(SpaceHint, Py_NewRef(fn));
    Py_RETURN_NONE;
}

/* empty_bytearray(n): a bytearray of n bytes left uninitialised, for a
 * receiver that is about to overwrite all of them (bytearray(n) would
 * write zeros first: a second pass over a large buffer). */
static PyObject *m_empty_bytearray(PyObject *m, PyObject *arg) {
    (void)m;
    Py_ssize_t n = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0) return PyErr_Format(PyExc_ValueError, "negative size %zd", n);
    /* Not PyByteArray_FromStringAndSize(NULL, n): when its allocation fails
     * it deallocates an object whose ob_exports is uninitialised (CPython
     * 3.11), which can print "deallocated bytearray object has exported
     * buffers". Resizing an empty one fails cleanly. */
    PyObject *b = PyByteArray_FromStringAndSize(NULL, 0);
    if (!b) return NULL;
    if (n && PyByteArray_Resize(b, n) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    return b;
}

static PyMethodDef methods[] = {
    {"load", (PyCFunction)(void (*)(void))m_load, METH_FASTCALL,
     "load(buffer, offset) -> int: acquire load of a 64-bit word."},
    {"load32", (PyCFunction)(void (*)(void))m_load32, METH_FASTCALL,
     "load32(buffer, offset) -> int: acquire load of a 32-bit word."},
    {"store", (PyCFunction)(void (*)(void))m_store, METH_FASTCALL,
     "store(buffer, offset, value): seq-cst store of a 64-bit word."},
    {"store32", (PyCFunction)(void (*)(void))m_store32, METH_FASTCALL,
     "store32(buffer, offset, value): seq-cst store of a 32-bit word."},
    {"cas", (PyCFunction)(void (*)(void))m_cas, METH_FASTCALL,
     "cas(buffer, offset, expected, new) -> bool: compare-exchange a 64-bit word."},
    {"fetch_add", (PyCFunction)(void (*)(void))m_fetch_add, METH_FASTCALL,
     "fetch_add(buffer, offset, delta) -> int: atomic add, returns the old value."},
    {"wake", (PyCFunction)(void (*)(void))m_wake, METH_FASTCALL,
     "wake(buffer, offset) -> int: bump a futex word and wake all its waiters."},
    {"futex_wait", (PyCFunction)(void (*)(void))m_futex_wait, METH_FASTCALL,
     "futex_wait(buffer, offset, expected, timeout=None) -> bool: sleep while the 32-bit "
     "word is expected, until wake() or the timeout (False if it passed)."},
    {"check_region", (PyCFunction)m_check_region, METH_O,
     "check_region(buffer): raise CorruptRegion unless the header is valid."},
    {"recover_slot", (PyCFunction)(void (*)(void))m_recover_slot, METH_FASTCALL,
     "recover_slot(buffer, slot, out=None, force=False) -> int: repair what a dead endpoint "
     "left; RECOVER_DEFERRED (-3): a linked claim waits for its input's recovery; "
     "RECOVER_ORPHANED (-4): a held durable subscription, left as it is."},
    {"fed_state", (PyCFunction)module_fed_state, METH_O,
     "fed_state(buffer) -> (epoch, seq): the key of the last record a fed producer committed "
     "(ProducerCore._send_fed), exact whatever instant it died at; (0, 0) if never fed."},
    {"_feed_trap", (PyCFunction)module_feed_trap, METH_O,
     "_feed_trap(n): for tests: this process stops itself (SIGSTOP) at the n-th step of the "
     "fed protocol from now (ring/ring.h, FEED_STEP); 0: never."},
    {"lease_scan", (PyCFunction)(void (*)(void))m_lease_scan, METH_FASTCALL,
     "lease_scan(buffer) -> list[(pos, word)]: the mpmc records consumers hold."},
    {"revoke_lease", (PyCFunction)(void (*)(void))m_revoke_lease, METH_FASTCALL,
     "revoke_lease(buffer, pos, word, out=None) -> int: hand a record held too long back "
     "(1), done (2), not held so any more (0), not yet (-2)."},
    {"slot_take", (PyCFunction)(void (*)(void))m_slot_take, METH_FASTCALL,
     "slot_take(buffer, pid, limit) -> int | None: take a free attach slot below limit for pid "
     "(its pid word, by compare-exchange); None if every one is taken."},
    {"slots_of", (PyCFunction)(void (*)(void))m_slots_of, METH_FASTCALL,
     "slots_of(buffer, pid, start) -> list[int]: the attach slots held by that process."},
    {"revoke_claim", (PyCFunction)(void (*)(void))m_revoke_claim, METH_FASTCALL,
     "revoke_claim(buffer, slot) -> int: revoke a stuck producer's claim (1), "
     "nothing to revoke (0), quarantine table full (-2)."},
    {"lift_quarantine", (PyCFunction)(void (*)(void))m_lift_quarantine, METH_FASTCALL,
     "lift_quarantine(buffer) -> int: free revoked claims that are done with."},
    {"address", (PyCFunction)buffers_address, METH_O, "address(buffer) -> int: its first byte's."},
    {"copy", (PyCFunction)(void (*)(void))buffers_copy, METH_FASTCALL, "copy(dst, offset, src)"},
    {"pinned", (PyCFunction)(void (*)(void))buffers_pinned, METH_FASTCALL,
     "pinned(buffer, offset, length, on_free): a read-only window; on_free() once it is gone."},
    {"empty_bytearray", (PyCFunction)m_empty_bytearray, METH_O,
     "empty_bytearray(n) -> bytearray: n bytes, not initialised (to be overwritten)."},
    {"encode_value", (PyCFunction)value_encode_value, METH_O,
     "encode_value(obj) -> bytes | None: obj as a value record, or None if it is not a "
     "plain value."},
    {"decode_value", (PyCFunction)value_decode_value, METH_O,
     "decode_value(buffer): the object in a value record; DecodeError if malformed."},
    {"set_object_paths", (PyCFunction)obj_set_object_paths, METH_VARARGS,
     "set_object_paths(PickleSerializer, send_obj, send_encoded, recv_obj, recv_other): "
     "the Python functions send_obj and recv_obj hand other calls to."},
    {"watch", (PyCFunction)m_watch, METH_O,
     "watch(mapping) -> address: a SIGBUS in it (a truncated segment) is caught and counted."},
    {"unwatch", (PyCFunction)m_unwatch, METH_O, "unwatch(address): before the unmap."},
    {"faults", (PyCFunction)m_faults, METH_O,
     "faults(mapping) -> SIGBUS faults caught in it (0: intact as far as touched)."},
    {"set_space_hint", (PyCFunction)m_set_space_hint, METH_O,
     "set_space_hint(fn): fn(producer) -> str | None explains a timeout waiting for space."},
    {"set_errors", (PyCFunction)m_set_errors, METH_VARARGS,
     "set_errors(WouldBlock, Timeout, EndOfStream, Broken, CorruptRegion, "
     "MessageTooLarge, Closed, ClaimRevoked, DecodeError, LeaseRevoked): the classes the extension raises, "
     "handed over once by shmring._errors."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "shmring._core",
                                    "shmring's hot path: atomics, futex waits, rings.", -1,
                                    methods};

#define C(name) {#name, (unsigned long long)(name)}
static const struct {
    const char *name;
    unsigned long long value;
} constants[] = {
    C(SHMRING_MAGIC), C(LAYOUT_VERSION), C(LINE), C(HDR_MAGIC), C(HDR_VERSION),
    C(HDR_PATTERN), C(HDR_TOTAL_SIZE), C(HDR_CAPACITY), C(HDR_MAX_MESSAGE),
    C(HDR_SLOT_COUNT), C(HDR_FLAGS), C(HDR_CREATED_NS), C(HDR_DATA_OFFSET),
    C(HDR_CREATOR_PID), C(HDR_UNTETHER_NS), C(HDR_SLOT_HIGH), C(HDR_FEED_EPOCH), C(HDR_FEED_SEQ),
    C(HDR_FEED_PENDING), C(HDR_FEED_MARK), C(FEED_PEND), C(FEED_NEW), C(FEED_VOID),
    C(FEED_FLAGS), C(FEED_NOTE), C(OFF_TAIL), C(OFF_HEAD),
    C(OFF_READ_CLAIM), C(OFF_LATEST),
    C(OFF_INTENT), C(OFF_REDELIVER), C(OFF_DATA_FUTEX), C(OFF_DATA_WAITERS),
    C(OFF_SPACE_FUTEX), C(OFF_SPACE_WAITERS), C(OFF_EOS), C(OFF_BROKEN),
    C(OFF_PRODUCER_OWNER), C(OFF_CONSUMER_OWNER), C(OFF_MSGNO), C(OFF_GATE_EPOCH), C(OFF_STATS_IN_MSGS),
    C(OFF_STATS_IN_BYTES), C(OFF_STATS_OUT_MSGS), C(OFF_STATS_OUT_BYTES), C(REGION_HEADER_SIZE),
    C(SLOTS_OFFSET), C(SLOT_SIZE), C(MAX_SLOTS), C(SLOT_PID), C(SLOT_START_TIME),
    C(SLOT_ROLE), C(SLOT_STATE), C(SLOT_CLAIM_POS), C(SLOT_CLAIM_LEN), C(SLOT_CURSOR),
    C(SLOT_MESSAGES), C(SLOT_BYTES), C(SLOT_MISSED), C(SLOT_LAST_MSGNO), C(CLAIM_NONE), C(CLAIM_CONFIRMED),
    C(PATTERN_SPSC), C(PATTERN_MPSC), C(PATTERN_MPMC), C(PATTERN_BROADCAST),
    C(FLAG_PERSISTENT), C(FLAG_LOSSY), C(ROLE_ATTACH), C(ROLE_PRODUCER), C(ROLE_CONSUMER),
    C(SLOT_FREE), C(SLOT_ACTIVE), C(SLOT_CLOSING), C(SLOT_UNTETHERED), C(RECORD_HEADER), C(RECORD_ALIGN),
    C(REC_MSG), C(REC_PAD), C(REC_REVOKED), C(ST_READY), C(ST_TAKEN), C(ST_DONE), C(ST_SWEEP),
    C(MIN_CAPACITY), C(MAX_CAPACITY), C(PAGE_ALIGN), C(OFF_QUAR_COUNT), C(OFF_QUAR_ENTRIES),
    C(QUAR_ENTRY), C(QUAR_ENTRIES), C(QUAR_POS), C(QUAR_LEN), C(QUAR_FLAGS), C(QUAR_DONE),
    C(QUAR_OWNER_SHIFT), C(QUAR_OWNER_MASK), C(SLOT_RECOVERING), C(REC_WORD), C(REC_SEQ),
    C(REC_LEN_MASK), C(REC_TYPE_SHIFT), C(REC_TYPE_MASK), C(REC_STATE_SHIFT), C(REC_STATE_MASK),
    C(REC_OWNER_SHIFT), C(REC_OWNER_MASK), C(REC_LAP_SHIFT), C(REC_LAP_MASK), C(CTL_PUTS),
    C(CTL_GETS), C(CTL_NOTFULL_SEQ), C(CTL_NOTFULL_WAITERS), C(CTL_UNFINISHED), C(CTL_JOIN_SEQ),
    C(CTL_JOIN_WAITERS), C(CTL_MAXSIZE), C(CTL_MAGIC), C(CTL_BYTES), C(CTL_MAGIC_VALUE),
    C(SLOT_LINK_IN), C(SLOT_LINK_OUT), C(SLOT_LINK_REGION), C(SLOT_LINK_DONE), C(SLOT_PIDNS), C(LINK_COUNT_MASK),
    C(LINK_SLOT_SHIFT), C(LINK_SLOT_MASK), C(LINK_COUNTED), C(LINK_SINGLE), C(LINK_COMPLETE), C(LINK_RESOLVING),
    C(LINK_HDR), C(LINK_HDR_ITEM), C(LINK_HDR_ATTEMPTS), C(LINK_HDR_DONE),
    C(HDR_LEASE_MS), C(LEASE_NEVER), C(SLOT_LEASE), C(LEASE_BUSY), C(LEASE_COUNT_MASK),
    C(ST_LEASED), C(SLOT_ORPHAN), C(SLOT_ORPHAN_PID), C(SLOT_DURABLE_TAG), C(SLOT_DURABLE_HOLD),
    C(SLOT_DURABLE_UNTIL),
};

PyMODINIT_FUNC PyInit__core(void) {
    if (PyType_Ready(&ProducerType) < 0 || PyType_Ready(&ConsumerType) < 0) return NULL;
    int gerr = guard_install();
    if (gerr) return PyErr_Format(PyExc_OSError, "cannot install the SIGBUS guard: %s",
                                  strerror(gerr));
    PyObject *m = PyModule_Create(&moddef);
    if (!m) return NULL;
    PyObject *layout = PyDict_New();
    if (!layout) goto fail;
    for (size_t i = 0; i < sizeof(constants) / sizeof(constants[0]); i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(constants[i].value);
        if (!v || PyDict_SetItemString(layout, constants[i].name, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(layout);
            goto fail;
        }
        Py_DECREF(v);
    }
    if (PyModule_AddIntConstant(m, "RECOVER_DEFERRED", RECOVER_DEFERRED) < 0 ||
        PyModule_AddIntConstant(m, "RECOVER_ORPHANED", RECOVER_ORPHANED) < 0) {
        Py_DECREF(layout);
        goto fail;
    }
    if (PyModule_AddObject(m, "LAYOUT", layout) < 0) {
        Py_DECREF(layout);
        goto fail;
    }
    Py_INCREF(&ProducerType);
    Py_INCREF(&ConsumerType);
    if (PyModule_AddObject(m, "ProducerCore", (PyObject *)&ProducerType) < 0 ||
        PyModule_AddObject(m, "ConsumerCore", (PyObject *)&ConsumerType) < 0 ||
        queue_add_types(m) < 0 || journal_add_types(m) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
