/* py/queue.c - shmring.Queue's put and get in one C call each.
 *
 * shmring/_queue/ builds the queue: an mpmc channel for the items and a
 * control block (the ring bytes of a small second region) for the item
 * count, the unfinished-task count and two futex words. Its put and get in
 * Python cost a frame, a lock, two counter calls and the codec call: about
 * three times what send_obj and recv_obj cost. The common call - block with
 * no timeout, the default serializer, a plain value (csrc/value) - is done
 * here instead, in one C call; every other call, and every call that would
 * wait for a lock another thread holds or for room under maxsize, goes to the
 * Python methods _put and _get, which do everything this file does and more.
 *
 * Three types:
 *   Lock        a thread lock (acquire/release/locked, as threading.Lock) the
 *               Python side and this file both take: one per direction, so
 *               one thread at a time uses this process's producer or
 *               consumer. In py/lock.c.
 *   QueueState  what one process holds of an open queue: the control block's
 *               mapping (exported while the state is valid, so it cannot be
 *               unmapped under a call), the two locks, maxsize, and the
 *               producer and consumer once made. invalidate() lets go of all
 *               of it before the handles are closed.
 *   QueueCore   the base of the Python queue classes: put, get, and the
 *               fields _state, _closed and _plain.
 *
 * The control block's words are layout.h's (CTL_PUTS, CTL_GETS...):
 * items put and items taken are counted on lines of their own, so a putter
 * and a getter in two processes do not pass one line back and forth; the
 * queue holds puts - gets items. A putter counts its item before writing it
 * and a getter after taking it, so that difference read gets-first is never
 * below the true count. Waiters on a futex word raise its waiter count, then
 * re-read their condition; a waker changes the condition, then reads the
 * waiter count, both by sequentially consistent read-modify-writes, so one
 * of the two always sees the other.
 */
#include "py/core.h"

#include <structmember.h>

#include "atomics.h"
#include "py/lock.h"
#include "py/objects.h"
#include "wait.h"

/* The control block's offsets (CTL_*) are layout.h's, with its diagram. */

/* -------------------------------------------------------- QueueState -- */

typedef struct {
    PyObject_HEAD
    Py_buffer ctl;      /* the control block's mapping, exported while valid */
    int valid;
    char *w;            /* its words (the ring bytes) */
    uint64_t maxsize;   /* items; 0: no bound */
    int joinable;
    LockObject *wlock, *rlock;
    PyObject *tx, *rx;  /* this process's Producer and Consumer, once made */
} StateObject;

static PyTypeObject StateType;

static void State_release(StateObject *self) {
    if (self->valid) {
        self->valid = 0;
        self->w = NULL;
        PyBuffer_Release(&self->ctl);
    }
    Py_CLEAR(self->tx);
    Py_CLEAR(self->rx);
}

static PyObject *State_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"buffer", "offset", "maxsize", "joinable", "wlock", "rlock", NULL};
    PyObject *buffer, *wlock, *rlock;
    Py_ssize_t off;
    unsigned long long maxsize;
    int joinable;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OnKpO!O!:QueueState", kwlist, &buffer, &off,
                                     &maxsize, &joinable, &LockType, &wlock, &LockType, &rlock))
        return NULL;
    StateObject *self = (StateObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    if (PyObject_GetBuffer(buffer, &self->ctl, PyBUF_WRITABLE) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->valid = 1;
    if (off < 0 || off % LINE || (size_t)off + CTL_BYTES > (size_t)self->ctl.len) {
        PyErr_Format(PyExc_ValueError, "a queue's control block does not fit at offset "
                                       "%zd of a %zd-byte mapping",
                     off, self->ctl.len);
        Py_DECREF(self);
        return NULL;
    }
    self->w = (char *)self->ctl.buf + off;
    self->maxsize = maxsize;
    self->joinable = joinable;
    Py_INCREF(wlock);
    Py_INCREF(rlock);
    self->wlock = (LockObject *)wlock;
    self->rlock = (LockObject *)rlock;
    return (PyObject *)self;
}

static void State_dealloc(StateObject *self) {
    State_release(self);
    Py_CLEAR(self->wlock);
    Py_CLEAR(self->rlock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *State_invalidate(StateObject *self, PyObject *unused) {
    State_release(self);
    Py_RETURN_NONE;
}

static PyObject *State_get_ep(StateObject *self, void *which) {
    PyObject *ep = which ? self->rx : self->tx;
    if (!ep) Py_RETURN_NONE;
    Py_INCREF(ep);
    return ep;
}

static int State_set_ep(StateObject *self, PyObject *v, void *which) {
    PyTypeObject *want = which ? &ConsumerType : &ProducerType;
    if (v == Py_None) v = NULL;
    if (v && !PyObject_TypeCheck(v, want)) {
        PyErr_Format(PyExc_TypeError, "expected a %s, not %s", want->tp_name,
                     Py_TYPE(v)->tp_name);
        return -1;
    }
    if (v && !self->valid) {
        PyErr_SetString(PyExc_ValueError, "the queue state was invalidated");
        return -1;
    }
    Py_XINCREF(v);
    Py_XSETREF(*(which ? &self->rx : &self->tx), v);
    return 0;
}

static PyGetSetDef State_getset[] = {
    {"tx", (getter)State_get_ep, (setter)State_set_ep, "this process's Producer, or None",
     NULL},
    {"rx", (getter)State_get_ep, (setter)State_set_ep, "this process's Consumer, or None",
     (void *)1},
    {NULL, NULL, NULL, NULL, NULL}};

/* ------------------------------------------------------ the counters -- */
/* The one implementation of the control block's protocol: the C put and
 * get call these directly, the Python paths through QueueState's methods. */

static void wake_word(StateObject *st, uint64_t seq, uint64_t waiters) {
    /* SYNC(ctl-waiters): seq-cst RMW read: pairs with the waiter's raise of its count (the
     * waiter is Python, in shmring/_queue: _core.fetch_add, its condition again, then
     * _core.futex_wait). */
    if (fadd_sc(st->w, waiters, 0)) {
        /* SYNC(py-futex): bump, then wake: pairs with m_futex_wait (py/module.c). */
        fadd32_sc(st->w, seq, 1);
        futex_wake_word(st->w + seq, INT_MAX);
    }
}

/* One more item, if there is room under maxsize now (and, for a
 * JoinableQueue, one more unfinished task): 1, else 0. The loads are seq-cst:
 * a putter that raised its waiter count and then finds no room here pairs
 * with the getter's count_out, which reads that count after its RMW. */
static int reserve_now(StateObject *st) {
    if (!st->maxsize) {
        /* SYNC(ctl-count): items put; pairs with the seq-cst loads of the counts here and in
         * State_count, and count_out's add of gets. */
        fadd_sc(st->w, CTL_PUTS, 1);
    } else {
        for (;;) {
            /* SYNC(ctl-count): gets, then puts, then the compare-exchange of puts. */
            uint64_t g = ld_sc(st->w, CTL_GETS);
            uint64_t p = ld_sc(st->w, CTL_PUTS);
            if (p - g >= st->maxsize) return 0; /* g first: p - g is never below 0 */
            /* SYNC(ctl-count): one more item, if puts did not move meanwhile. */
            if (cas_sc(st->w, CTL_PUTS, &p, p + 1)) break;
        }
    }
    /* SYNC(ctl-unfinished): pairs with task_done's acquire and compare-exchange of the count. */
    if (st->joinable) fadd_sc(st->w, CTL_UNFINISHED, 1);
    return 1;
}

/* An item left the queue (taken, or its put undone): wake a full put. */
static void count_out(StateObject *st) {
    /* SYNC(ctl-count): items taken, before the waiter count is read (wake_word): pairs with
     * reserve_now's seq-cst loads. */
    fadd_sc(st->w, CTL_GETS, 1);
    if (st->maxsize) wake_word(st, CTL_NOTFULL_SEQ, CTL_NOTFULL_WAITERS);
}

/* One unfinished task done, waking join() at zero: 1, or 0 if none was. */
static int task_done(StateObject *st) {
    /* SYNC(ctl-unfinished): pairs with reserve_now's add. */
    uint64_t u = ld_acq(st->w, CTL_UNFINISHED);
    do {
        if (!u) return 0;
        /* SYNC(ctl-unfinished): one task fewer, by compare-exchange: never below zero. */
    } while (!cas_sc(st->w, CTL_UNFINISHED, &u, u - 1));
    if (u == 1) wake_word(st, CTL_JOIN_SEQ, CTL_JOIN_WAITERS);
    return 1;
}

/* Undo a put that did not happen: its count and its unfinished task. */
static void unreserve(StateObject *st) {
    count_out(st);
    if (st->joinable) task_done(st);
}

static StateObject *valid_state(StateObject *st) {
    if (st->valid) return st;
    PyErr_SetString(PyExc_ValueError, "the queue state was invalidated");
    return NULL;
}

static PyObject *State_reserve(StateObject *self, PyObject *unused) {
    if (!valid_state(self)) return NULL;
    return PyBool_FromLong(reserve_now(self));
}

static PyObject *State_taken(StateObject *self, PyObject *unused) {
    if (!valid_state(self)) return NULL;
    count_out(self);
    Py_RETURN_NONE;
}

static PyObject *State_unreserve(StateObject *self, PyObject *unused) {
    if (!valid_state(self)) return NULL;
    unreserve(self);
    Py_RETURN_NONE;
}

static PyObject *State_task_done(StateObject *self, PyObject *unused) {
    if (!valid_state(self)) return NULL;
    return PyBool_FromLong(task_done(self));
}

static PyObject *State_count(StateObject *self, PyObject *unused) {
    if (!valid_state(self)) return NULL;
    /* SYNC(ctl-count): gets first, as in reserve_now. */
    uint64_t g = ld_sc(self->w, CTL_GETS);
    uint64_t c = ld_sc(self->w, CTL_PUTS) - g;
    return PyLong_FromUnsignedLongLong(c < (1ULL << 63) ? c : 0);
}

/* count_many(put, taken, done) -> int: what a bridge carrying the queue
 * counts for a batch at once (shmring/_bridge/queues.py): `put` items
 * committed that nothing held back (puts, and unfinished tasks on a
 * JoinableQueue), `taken` items that left the queue or puts undone (one
 * wake of the putters waiting for room), and up to `done` unfinished tasks
 * done (one wake of join at zero); returns how many tasks were done. */
static PyObject *State_count_many(StateObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (!valid_state(self)) return NULL;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "count_many(put, taken, done): 3 arguments");
        return NULL;
    }
    uint64_t v[3];
    for (int i = 0; i < 3; i++) {
        v[i] = PyLong_AsUnsignedLongLong(args[i]);
        if (v[i] == (uint64_t)-1 && PyErr_Occurred()) return NULL;
    }
    if (v[0]) {
        /* SYNC(ctl-count): as reserve_now's add, for many at once. */
        fadd_sc(self->w, CTL_PUTS, v[0]);
        /* SYNC(ctl-unfinished): as reserve_now's add. */
        if (self->joinable) fadd_sc(self->w, CTL_UNFINISHED, v[0]);
    }
    if (v[1]) {
        /* SYNC(ctl-count): as count_out's add, then one wake for them all. */
        fadd_sc(self->w, CTL_GETS, v[1]);
        if (self->maxsize) wake_word(self, CTL_NOTFULL_SEQ, CTL_NOTFULL_WAITERS);
    }
    uint64_t done = 0;
    if (v[2]) {
        /* SYNC(ctl-unfinished): pairs with reserve_now's add, as task_done's load. */
        uint64_t u = ld_acq(self->w, CTL_UNFINISHED);
        uint64_t k;
        do {
            k = u < v[2] ? u : v[2];
            if (!k) break;
            /* SYNC(ctl-unfinished): k tasks fewer, by compare-exchange: never below zero. */
        } while (!cas_sc(self->w, CTL_UNFINISHED, &u, u - k));
        done = k;
        if (k && u == k) wake_word(self, CTL_JOIN_SEQ, CTL_JOIN_WAITERS);
    }
    return PyLong_FromUnsignedLongLong(done);
}

static PyMethodDef State_methods[] = {
    {"count_many", (PyCFunction)(void (*)(void))State_count_many, METH_FASTCALL,
     "count_many(put, taken, done) -> int: count a batch at once (a bridge's): put, taken "
     "(or undone) and tasks done; how many tasks were done."},
    {"invalidate", (PyCFunction)State_invalidate, METH_NOARGS,
     "invalidate(): let go of the mapping and the endpoints (before closing them)."},
    {"reserve", (PyCFunction)State_reserve, METH_NOARGS,
     "reserve() -> bool: count one more item (and task) if maxsize leaves room now."},
    {"taken", (PyCFunction)State_taken, METH_NOARGS,
     "taken(): an item left the queue; wake a put waiting for room."},
    {"unreserve", (PyCFunction)State_unreserve, METH_NOARGS,
     "unreserve(): undo reserve() for a put that did not happen."},
    {"task_done", (PyCFunction)State_task_done, METH_NOARGS,
     "task_done() -> bool: one unfinished task done (False if there was none)."},
    {"count", (PyCFunction)State_count, METH_NOARGS,
     "count() -> int: the items in the queue (items put less items taken)."},
    {NULL, NULL, 0, NULL}};

static PyTypeObject StateType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmring._core.QueueState",
    .tp_basicsize = sizeof(StateObject),
    .tp_dealloc = (destructor)State_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "QueueState(buffer, offset, maxsize, joinable, wlock, rlock): what one process "
              "holds of an open shmring.Queue.",
    .tp_methods = State_methods,
    .tp_getset = State_getset,
    .tp_new = State_new,
};

/* --------------------------------------------------------- QueueCore -- */

typedef struct {
    PyObject_HEAD
    PyObject *state; /* QueueState, or NULL before attaching and after close */
    char closed;
    char plain;      /* the serializer is exactly PickleSerializer */
} QueueObject;

static PyObject *Str_put, *Str_get, *Str_block, *Str_timeout, *Str_close_if_idle,
    *Str_take_record, *Str_decode_data;

/* The state, if this call is the common one (block=True, timeout=None; only
 * the first npos arguments before them) and the queue is open here with
 * the endpoint it needs: a borrowed reference, else NULL. */
static StateObject *fast_state(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames, Py_ssize_t npos, int get) {
    if (self->closed || !self->plain || nargs < npos || nargs > npos + 2) return NULL;
    if (nargs > npos && args[npos] != Py_True) return NULL;
    if (nargs > npos + 1 && args[npos + 1] != Py_None) return NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i), *v = args[nargs + i];
        if (PyUnicode_Compare(k, Str_block) == 0 && v == Py_True && nargs <= npos) continue;
        if (PyUnicode_Compare(k, Str_timeout) == 0 && v == Py_None && nargs <= npos + 1)
            continue;
        return NULL;
    }
    StateObject *st = (StateObject *)self->state;
    if (!st || !st->valid || !(get ? st->rx : st->tx)) return NULL;
    return st;
}

/* type(self).<name>(self, *args): the Python path. */
static PyObject *slow(QueueObject *self, PyObject *name, PyObject *const *args,
                      Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *fn = PyObject_GetAttr((PyObject *)Py_TYPE(self), name);
    if (!fn) return NULL;
    PyObject *r = call_with_self(fn, (PyObject *)self, args, nargs, kwnames);
    Py_DECREF(fn);
    return r;
}

/* After a put or get, if another thread closed the queue meanwhile: the
 * handles go now (close() left them to us). Keeps the current exception. */
static void close_if_closed(QueueObject *self) {
    if (!self->closed) return;
    PyObject *type, *val, *tb;
    PyErr_Fetch(&type, &val, &tb);
    PyObject *r = PyObject_CallMethodNoArgs((PyObject *)self, Str_close_if_idle);
    if (r) Py_DECREF(r);
    else PyErr_WriteUnraisable((PyObject *)self);
    PyErr_Restore(type, val, tb);
}

static PyObject *Q_put(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames) {
    StateObject *st = fast_state(self, args, nargs, kwnames, 1, 0);
    if (!st) return slow(self, Str_put, args, nargs, kwnames);
    PyObject *obj = args[0];
    unsigned char stack[VALUE_STACK_BYTES];
    size_t n;
    int rc = obj_encode(obj, stack, &n);
    if (rc < 0) return NULL;
    /* Not a plain value (pickled in Python), another thread putting, or no
     * room under maxsize: the Python path waits and does it. */
    if (rc == 0 || !lock_try(st->wlock)) return slow(self, Str_put, args, nargs, kwnames);
    if (!reserve_now(st)) {
        lock_release(st->wlock);
        return slow(self, Str_put, args, nargs, kwnames);
    }
    /* While we wait for space another thread may close the queue or drop
     * this state: our reference keeps the mapping until we are done. */
    Py_INCREF(st);
    PyObject *sent = obj_send_encoded((EndpointObject *)st->tx, obj, stack, n, -1, 0);
    if (sent != Py_True) unreserve(st);
    lock_release(st->wlock);
    Py_DECREF(st);
    close_if_closed(self);
    if (sent == Py_False) {
        Py_DECREF(sent); /* larger than a record, or no longer a plain value */
        return slow(self, Str_put, args, nargs, kwnames);
    }
    if (!sent) return NULL;
    Py_DECREF(sent);
    Py_RETURN_NONE;
}

static PyObject *Q_get(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames) {
    StateObject *st = fast_state(self, args, nargs, kwnames, 0, 1);
    if (!st || !lock_try(st->rlock)) return slow(self, Str_get, args, nargs, kwnames);
    Py_INCREF(st);
    PyObject *rx = st->rx;
    Py_INCREF(rx);
    PyObject *v = obj_recv((EndpointObject *)rx, -1, 0), *data = NULL;
    int taken = v != NULL;
    if (v == Py_NotImplemented) {
        /* Another kind of record, held: _take_record takes it under our
         * lock, decoded (obj, None) or to decode after it (None, data). */
        Py_DECREF(v);
        PyObject *pair = PyObject_CallMethodOneArg((PyObject *)self, Str_take_record, rx);
        v = NULL;
        taken = 0;
        if (pair && PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2) {
            v = PyTuple_GET_ITEM(pair, 0);
            data = PyTuple_GET_ITEM(pair, 1);
            Py_INCREF(v);
            if (data == Py_None) data = NULL;
            else Py_INCREF(data);
            taken = 1;
        } else if (pair) {
            PyErr_SetString(PyExc_TypeError, "_take_record must return a pair");
        }
        Py_XDECREF(pair);
    }
    if (!v && PyErr_ExceptionMatches(decode_error_class()))
        taken = 1; /* a record that cannot be decoded is consumed */
    lock_release(st->rlock);
    if (taken) count_out(st);
    Py_DECREF(st);
    close_if_closed(self);
    if (data) {
        PyObject *call[3] = {(PyObject *)self, rx, data};
        Py_XDECREF(v);
        v = PyObject_VectorcallMethod(Str_decode_data, call, 3, NULL);
        Py_DECREF(data);
    }
    Py_DECREF(rx);
    return v;
}

static PyObject *Q_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    QueueObject *self = (QueueObject *)type->tp_alloc(type, 0);
    return (PyObject *)self;
}

static int Q_traverse(QueueObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->state);
    return 0;
}

static int Q_clear(QueueObject *self) {
    Py_CLEAR(self->state);
    return 0;
}

static void Q_dealloc(QueueObject *self) {
    PyObject_GC_UnTrack(self);
    Q_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Q_get_state(QueueObject *self, void *unused) {
    if (!self->state) Py_RETURN_NONE;
    Py_INCREF(self->state);
    return self->state;
}

static int Q_set_state(QueueObject *self, PyObject *v, void *unused) {
    if (v == Py_None) v = NULL;
    if (v && !PyObject_TypeCheck(v, &StateType)) {
        PyErr_SetString(PyExc_TypeError, "_state must be a QueueState or None");
        return -1;
    }
    Py_XINCREF(v);
    Py_XSETREF(self->state, v);
    return 0;
}

static PyGetSetDef Q_getset[] = {
    {"_state", (getter)Q_get_state, (setter)Q_set_state,
     "this process's QueueState, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMemberDef Q_members[] = {
    {"_closed", T_BOOL, offsetof(QueueObject, closed), 0, "closed in this process"},
    {"_plain", T_BOOL, offsetof(QueueObject, plain), 0,
     "the serializer is exactly PickleSerializer (plain values go through the codec)"},
    {NULL, 0, 0, 0, NULL}};

#define PUT_DOC                                                                             \
    "put($self, obj, block=True, timeout=None)\n--\n\n"                                    \
    "Put ``obj`` in the queue, waiting up to ``timeout`` seconds for room\n"               \
    "(``queue.Full`` if there is none; at once if ``block`` is false).\n\n"                \
    "Example::\n\n"                                                                         \
    "    q.put({\"job\": 1})\n"                                                             \
    "    q.put(b\"x\" * 100, timeout=0.5)\n"
#define GET_DOC                                                                             \
    "get($self, block=True, timeout=None)\n--\n\n"                                         \
    "Remove and return an item, waiting up to ``timeout`` seconds for one\n"               \
    "(``queue.Empty`` if none comes; at once if ``block`` is false).\n\n"                  \
    "Example::\n\n"                                                                         \
    "    try:\n"                                                                            \
    "        item = q.get(timeout=1)\n"                                                     \
    "    except queue.Empty:\n"                                                             \
    "        item = None\n"

static PyMethodDef Q_methods[] = {
    {"put", (PyCFunction)(void (*)(void))Q_put, METH_FASTCALL | METH_KEYWORDS, PUT_DOC},
    {"get", (PyCFunction)(void (*)(void))Q_get, METH_FASTCALL | METH_KEYWORDS, GET_DOC},
    {NULL, NULL, 0, NULL}};

PyTypeObject QueueCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmring._core.QueueCore",
    .tp_basicsize = sizeof(QueueObject),
    .tp_dealloc = (destructor)Q_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The base of shmring's queues: put and get of plain values in C.",
    .tp_traverse = (traverseproc)Q_traverse,
    .tp_clear = (inquiry)Q_clear,
    .tp_methods = Q_methods,
    .tp_members = Q_members,
    .tp_getset = Q_getset,
    .tp_new = Q_new,
};

int queue_add_types(PyObject *m) {
    static struct {
        PyObject **s;
        const char *v;
    } names[] = {{&Str_put, "_put"},
                 {&Str_get, "_get"},
                 {&Str_block, "block"},
                 {&Str_timeout, "timeout"},
                 {&Str_close_if_idle, "_close_if_idle"},
                 {&Str_take_record, "_take_record"},
                 {&Str_decode_data, "_decode_data"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!(*names[i].s = PyUnicode_InternFromString(names[i].v))) return -1;
    PyTypeObject *types[] = {&LockType, &StateType, &QueueCoreType};
    const char *tnames[] = {"Lock", "QueueState", "QueueCore"};
    for (int i = 0; i < 3; i++) {
        if (PyType_Ready(types[i]) < 0) return -1;
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, tnames[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            return -1;
        }
    }
    return 0;
}
