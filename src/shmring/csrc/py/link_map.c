/* py/link_map.c - one item of a pipeline's map, filter or sink stage in one
 * call, ConsumerCore._link_map: take an input by linked commit, decode its
 * plain value, call the stage's function, then commit its output linked to
 * the input (a map's result, encoded; a filter's input, if it said yes) or
 * finish the input (a sink; a filter's no), and keep the worker's board
 * entry, with no return to Python in between.
 *
 * Why: a map stage of small items spent most of its time in the Python
 * between the calls _link_take, decode_value, encode_value and _link_send
 * (and the board's words, written through a memoryview): this does the same
 * steps in the same order, with the same ring calls (ring/link.c), so what
 * holds across a worker's death holds here unchanged.
 *
 * Only the common case is done here: a plain value at the top of its item,
 * within its attempts, with no output sent by an earlier attempt, and (a
 * map's) a result that is a plain value that fits VALUE_STACK_BYTES, with
 * the output committed within a second. Everything else goes back to the
 * worker's Python code (shmring/_pipeline/worker.py), which does what it
 * always did: the call returns what _link_take does, or that and what it
 * did so far. */
#include "py/core.h"

#include <string.h>

#include "atomics.h"
#include "py/link.h"
#include "value/value.h"
#include "wait.h"

/* Words of a board entry (shmring/_pipeline/board.py: ITEM, STARTED, AGAIN,
 * FIRST, OUT, BUSY_NS, HIST, BUCKETS). tests/unit/test_pipeline_fast.py
 * checks that these are the board's. */
#define W_ITEM 1u
#define W_STARTED 2u
#define W_AGAIN 3u
#define W_FIRST 4u
#define W_OUT 5u
#define W_BUSY_NS 6u
#define W_HIST 16u
#define W_BUCKETS 96u
#define W_ENTRY (W_HIST + W_BUCKETS)

#define COMMIT_WITHIN_NS 1000000000LL

/* _link_map's mode (shmring/_pipeline/worker.py: LINK_MODE). */
#define STAGE_MAP 0
#define STAGE_FILTER 1
#define STAGE_SINK 2
#define MODE_KIND 3
#define MODE_STATE 4
#define MODE_ORDERED 8

/* board.py's bucket(): octave b / 4 of 1.024 us units, quarter b % 4 of it. */
static unsigned bucket(uint64_t ns) {
    uint64_t us = ns >> 10;
    if (!us) return 0;
    unsigned n = 64u - (unsigned)__builtin_clzll(us);
    unsigned b = 4u * (n - 1u) + (unsigned)(((us << 2) >> (n - 1u)) & 3u);
    return b < W_BUCKETS - 1u ? b : W_BUCKETS - 1u;
}

/* The worker's own entry: only it writes these words, the parent reads
 * them, so a relaxed load and store make each add (as the memoryview's
 * plain word stores did in Python). */
static void add_word(char *entry, unsigned word, uint64_t v) {
    /* SYNC(board): a worker's own counter; read by the parent's Board.totals. */
    st_rlx(entry, 8u * word, ld_rlx(entry, 8u * word) + v);
}

/* The item is done: no item held, its time counted; the board released.
 * None, _link_map's "done here". */
static PyObject *board_done(Py_buffer *board, char *entry, int64_t t0) {
    uint64_t dt = (uint64_t)(mono_ns() - t0);
    /* SYNC(board): no item held; read by the parent's timeout check. */
    st_rel(entry, 8u * W_ITEM, 0);
    add_word(entry, W_BUSY_NS, dt);
    add_word(entry, W_HIST + bucket(dt), 1);
    PyBuffer_Release(board);
    Py_RETURN_NONE;
}

/* Back to Python after fn ran: (item, attempts, done, view, t0, raised, obj),
 * obj the exception fn raised (raised = 1) or its result to send (raised = 0). */
static PyObject *handed_back(EndpointObject *in, const char *p, uint64_t n, uint64_t item,
                             uint32_t attempts, uint32_t done, int64_t t0, int raised,
                             PyObject *obj) {
    PyObject *view = link_input_view(in, p, n);
    if (!view) {
        Py_DECREF(obj);
        return NULL;
    }
    return Py_BuildValue("(KIINLiN)", (unsigned long long)item, attempts, done, view,
                         (long long)t0, raised, obj);
}

/* The exception now set, as an object with its traceback, or NULL (the error
 * left set) when it is not an Exception: KeyboardInterrupt, SystemExit and
 * the worker's own BaseExceptions go up, as they did from Python. */
static PyObject *caught(void) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (!value || !PyObject_IsInstance(value, PyExc_Exception) ||
        PyObject_IsInstance(value, E_Lease)) {
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    if (tb) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* (tx, fn, state, mode, timeout, counter, offset, in_region, out_region,
 *  board, entry, max_attempts, sent_offset): see _link_take for timeout,
 * counter, offset and in_region; mode the stage's kind (STAGE_MAP,
 * STAGE_FILTER, STAGE_SINK) | MODE_STATE (fn takes state too) | MODE_ORDERED;
 * tx the ProducerCore of the next edge (unused by a sink), out_region its
 * region's id; board a writable buffer holding the worker's entry at byte
 * offset entry; sent_offset the byte offset in it of the next edge's count
 * of items waiting (raised after the commit), or None. */
PyObject *link_map(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 13)
        return PyErr_Format(PyExc_TypeError, "_link_map(tx, fn, state, mode, timeout, "
                                             "counter, offset, in_region, out_region, board, "
                                             "entry, max_attempts, sent_offset)");
    if (!PyObject_TypeCheck(args[0], &ProducerType)) {
        PyErr_SetString(PyExc_TypeError, "_link_map: tx is a ProducerCore");
        return NULL;
    }
    EndpointObject *tx = (EndpointObject *)args[0];
    PyObject *fn = args[1], *state = args[2];
    long mode = PyLong_AsLong(args[3]);
    int kind = (int)(mode & MODE_KIND), with_state = (mode & MODE_STATE) != 0;
    int ordered = (mode & MODE_ORDERED) != 0;
    uint64_t out_region, entry_off, max_attempts, sent_off = 0;
    int counted = args[12] != Py_None;
    if ((mode == -1 && PyErr_Occurred()) || kind > STAGE_SINK)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "_link_map: bad mode");
    if (link_as_u64(args[8], &out_region) < 0 || link_as_u64(args[10], &entry_off) < 0 ||
        link_as_u64(args[11], &max_attempts) < 0 ||
        (counted && link_as_u64(args[12], &sent_off) < 0) ||
        endpoint_check_open(tx) < 0)
        return NULL;
    PyObject *take_args[5] = {args[4], Py_True, args[5], args[6], args[7]};
    const char *p;
    uint64_t n, item;
    uint32_t attempts, done;
    if (link_take_raw(self, take_args, 5, &p, &n, &item, &attempts, &done) < 0) return NULL;
    endpoint_drop_view(self); /* a view of an earlier input must not outlive it */
    const unsigned char *body = (const unsigned char *)p + LINK_HDR;
    if (n < LINK_HDR + 9 || body[0] != 0 || body[1] != 0 || body[8] != VALUE_TAG ||
        attempts > max_attempts || done != 0) {
        /* Not the common case: worker.py does it, from what _link_take returns. */
        PyObject *view = link_input_view(self, p, n);
        if (!view) return NULL;
        return Py_BuildValue("(KIIN)", (unsigned long long)item, attempts, done, view);
    }

    Py_buffer board;
    if (PyObject_GetBuffer(args[9], &board, PyBUF_WRITABLE) < 0) return NULL;
    if (entry_off % 8 || entry_off + 8u * W_ENTRY > (uint64_t)board.len ||
        (counted && (sent_off % 8 || sent_off + 8 > (uint64_t)board.len))) {
        PyBuffer_Release(&board);
        PyErr_SetString(PyExc_ValueError, "_link_map: board offsets outside the buffer");
        return NULL;
    }
    char *entry = (char *)board.buf + entry_off;
    add_word(entry, attempts == 1 ? W_FIRST : W_AGAIN, 1);
    int64_t t0 = mono_ns();
    /* SYNC(board): the start before the item (Run._timeouts reads the item, then the start). */
    st_rlx(entry, 8u * W_STARTED, (uint64_t)t0);
    /* SYNC(board): the item after its start; read by the parent's timeout check. */
    st_rel(entry, 8u * W_ITEM, item + 1);

    PyObject *value = value_decode((const char *)body + 8, (size_t)(n - LINK_HDR - 8));
    PyObject *result = NULL;
    if (value) {
        result = with_state ? PyObject_CallFunctionObjArgs(fn, value, state, NULL)
                            : PyObject_CallOneArg(fn, value);
        Py_DECREF(value);
    }
    PyObject *exc = NULL;
    /* The output, prefix included: a map's result encoded after the plain
     * prefix (kind VALUE, no path: 8 zero bytes), or a filter's input as it
     * came. NULL: no output (a sink, or a filter's no). */
    char enc[8 + VALUE_STACK_BYTES];
    const char *out = NULL;
    size_t out_len = 0;
    int truth = 0;
    if (result && kind == STAGE_MAP) {
        size_t size = 0;
        int rc = value_encode(result, enc + 8, VALUE_STACK_BYTES, &size);
        if (rc == VALUE_NO || (rc == VALUE_OK && size > VALUE_STACK_BYTES)) {
            PyBuffer_Release(&board);
            return handed_back(self, p, n, item, attempts, done, t0, 0, result);
        }
        if (rc == VALUE_ERR) Py_CLEAR(result);
        memset(enc, 0, 8);
        out = enc;
        out_len = 8 + size;
    } else if (result && kind == STAGE_FILTER) {
        if ((truth = PyObject_IsTrue(result)) < 0) Py_CLEAR(result);
        else if (truth) out = (const char *)body, out_len = (size_t)(n - LINK_HDR);
        else if (ordered) { /* its place is kept by a tombstone: worker.py sends it */
            PyBuffer_Release(&board);
            return handed_back(self, p, n, item, attempts, done, t0, 0, result);
        }
    }
    if (!result || endpoint_check_open(self) < 0 || endpoint_check_open(tx) < 0) {
        Py_XDECREF(result);
        PyBuffer_Release(&board);
        if (!(exc = caught())) return NULL;
        return handed_back(self, p, n, item, attempts, done, t0, 1, exc);
    }

    if (!out) {
        /* Nothing goes on: the input is done (as _link_finish). */
        Py_DECREF(result);
        if (ring_link_finish(&self->ring) != RING_OK) {
            PyBuffer_Release(&board);
            return raise_ring(self, RING_LEASE);
        }
        return board_done(&board, entry, t0);
    }
    /* The output, committed as the input's last. */
    char *dst;
    int64_t deadline = mono_ns() + COMMIT_WITHIN_NS;
    if (link_claim_space(tx, self, out_len, item, out_region, deadline, &dst) < 0) {
        PyBuffer_Release(&board);
        if (PyErr_ExceptionMatches(E_Timeout)) {
            PyErr_Clear(); /* a full edge: worker.py waits for it patiently */
            return handed_back(self, p, n, item, attempts, done, t0, 0, result);
        }
        Py_DECREF(result);
        if (!PyErr_ExceptionMatches(E_TooLarge) || !(exc = caught())) return NULL;
        return handed_back(self, p, n, item, attempts, done, t0, 1, exc);
    }
    Py_DECREF(result);
    memcpy(dst, out, out_len);
    int rc = ring_link_commit(&tx->ring, &self->ring, out_len, 1);
    if (rc != RING_OK) {
        PyBuffer_Release(&board);
        return raise_ring(rc == RING_LEASE ? self : tx, rc);
    }
    if (counted) {
        /* SYNC(py-word), SYNC(inflight): the next edge's count of items waiting; pairs with
         * _link_take's count down (py/link.c count_down). */
        fadd_sc(board.buf, sent_off, 1);
    }
    add_word(entry, W_OUT, 1);
    return board_done(&board, entry, t0);
}
