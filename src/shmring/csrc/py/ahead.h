/* py/ahead.h - reading ahead on a ConsumerCore (py/ahead.c): _ahead,
 * _settle and _ahead_count, entered in py/consumer.c's tables, and the
 * refusal of the one-record calls while records are read ahead. */
#ifndef SHMRING_PY_AHEAD_H
#define SHMRING_PY_AHEAD_H

#include "py/core.h"

/* _ahead(max_count, max_bytes, timeout=None) -> list[tuple[int, bytes]] */
PyObject *ahead_read(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames);
/* _settle(key) -> int */
PyObject *ahead_settle(EndpointObject *self, PyObject *key);
/* _ahead_packed(max_count, max_bytes, timeout, count[, inplace]) -> (keys, positions, lens,
 * body) */
PyObject *ahead_read_packed(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);
/* the _ahead_count property */
PyObject *ahead_get_count(EndpointObject *self, void *unused);
/* -1 with InvalidArgument set: records are read ahead and not settled, so
 * `what` (recv, _peek...) may not take one. Call it when ring.ahead_n != 0. */
int ahead_refuse(EndpointObject *self, const char *what);

#define AHEAD_DOC                                                                            \
    "_ahead(max_count, max_bytes, timeout=None) -> list[tuple[int, bytes]]: read up to "     \
    "max_count records after those read ahead and not settled (stopping before max_bytes "   \
    "of payload would be exceeded, but at least one), releasing none: (key, copy) each, "    \
    "the key the record's position. Waits up to timeout for the first (None: for ever, 0: " \
    "not at all); [] on timeout. EndOfStream once the channel is closed for sending and "   \
    "nothing is left to read ahead."
#define SETTLE_DOC                                                                           \
    "_settle(key) -> int: release every record read ahead whose key is <= key, wake "       \
    "producers once, and return how many. mpmc: LeaseRevoked (after settling the rest) if " \
    "the lease of one of them was revoked meanwhile."
#define AHEAD_COUNT_DOC "Records read ahead (_ahead) and not settled yet (_settle)."

#endif
