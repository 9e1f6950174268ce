/* py/core.h - what the Python-facing files of _core share. */
#ifndef SHMRING_CORE_H
#define SHMRING_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "ring/ring.h"

/* The exception classes, defined in shmring/_errors.py and handed to the
 * extension once at import by _core.set_errors(). */
extern PyObject *E_WouldBlock, *E_Timeout, *E_EndOfStream, *E_Broken, *E_Corrupt,
    *E_TooLarge, *E_Closed, *E_Revoked, *E_Lease;
/* A callable(endpoint) -> str | None that says why a producer found no space
 * (no live consumer...), added to its Timeout's message; set once by
 * _core.set_space_hint(), NULL if never. */
extern PyObject *SpaceHint;

typedef struct {
    PyObject_HEAD
    Py_buffer buf;       /* the region's mapping, held while open */
    int open;
    ring_t ring;
    PyObject *view;      /* memoryview of the open claim or held record */
    int busy;            /* calls using the mapping without the GIL */
    volatile int closing; /* closed while busy: the last one out releases */
    PyObject *weakrefs;
    PyObject *stream;    /* consumer: a streamed object being received, or NULL */
    /* For error messages only (never read on the hot path): the channel's
     * name, given once at construction (or NULL), and the timeout of the
     * call in progress in seconds (-1 for none), stored by
     * endpoint_deadline. */
    PyObject *name;
    double timeout_s;
} EndpointObject;

extern PyTypeObject ProducerType, ConsumerType;

/* queue.c: adds Lock, QueueState and QueueCore to the module; 0 or -1. */
int queue_add_types(PyObject *m);
/* journal.c: adds JournalWriterCore and the journal_* functions; 0 or -1. */
int journal_add_types(PyObject *m);

/* Shared by producer.c and consumer.c. */
int endpoint_init(EndpointObject *self, PyObject *args, int consumer);
void endpoint_dealloc(EndpointObject *self);
int endpoint_check_open(EndpointObject *self);
/* endpoint_check_open, after touching the mapping's last page (guard.h). */
int endpoint_probe(EndpointObject *self);
int parse_timeout(PyObject *obj, int64_t *deadline_ns);
/* parse_timeout for a call of this endpoint: also keeps the timeout for the
 * error message. */
int endpoint_deadline(EndpointObject *self, PyObject *obj, int64_t *deadline_ns);
/* Waits with the GIL released; 0 ready, 1 timed out, -1 Python error. */
int endpoint_wait(EndpointObject *self, int space, int64_t deadline_ns);
PyObject *raise_ring(EndpointObject *self, int rc);
/* The error path: each sets an exception naming the channel (an attribute
 * `channel` too) and returns NULL. */
PyObject *raise_timeout(EndpointObject *self, int space);
/* Broken: the endpoint's segment was truncated (a fault caught by guard.c). */
PyObject *raise_truncated(EndpointObject *self);
PyObject *raise_too_large(EndpointObject *self, uint64_t n);
PyObject *raise_would_block(EndpointObject *self, int space);
PyObject *raise_closed(EndpointObject *self, const char *what);
/* Getters `_label` ("channel 'jobs' (spsc, 4096 bytes)", for messages
 * raised in Python) and `_name` (the channel's name or None). */
PyObject *endpoint_get_label(EndpointObject *self, void *unused);
PyObject *endpoint_get_name(EndpointObject *self, void *unused);
void endpoint_drop_view(EndpointObject *self);
/* Bracket any use of the mapping with the GIL released. leave() returns -1
 * with Closed set if the endpoint was closed meanwhile. */
void endpoint_enter(EndpointObject *self);
int endpoint_leave(EndpointObject *self);
PyObject *endpoint_close(EndpointObject *self, PyObject *unused);
/* Claims n bytes, waiting for space until the deadline (as send does): 0,
 * or -1 with WouldBlock (nowait), Timeout, Closed or the ring's error set. */
int producer_claim_wait(EndpointObject *self, uint64_t n, int64_t deadline, int nowait,
                        char **dst);
/* After a full ring: waits for space until the deadline; 0 to try again, or
 * -1 with Timeout or Closed (end of stream) set. */
int producer_wait_space(EndpointObject *self, int64_t deadline);
/* Takes the next record, waiting until the deadline (as recv does): 0 with
 * it held, 1 for nothing (nowait), -1 with an error set. */
int consumer_take(EndpointObject *self, int64_t deadline, int nowait, const char **p,
                  uint64_t *n);
/* fed.c: ProducerCore._send_fed and _core.fed_state (ring/feed.c). */
PyObject *producer_send_fed_packed(EndpointObject *self, PyObject *const *args,
                                   Py_ssize_t nargs);
PyObject *producer_send_fed(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames);
PyObject *module_fed_state(PyObject *m, PyObject *buffer);
PyObject *module_feed_trap(PyObject *m, PyObject *n);
PyObject *endpoint_wait_ready(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);

#endif
