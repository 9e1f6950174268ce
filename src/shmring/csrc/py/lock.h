/*
 * py/lock.h - shmring._core.Lock: a thread lock with threading.Lock's
 * methods that the Python side of shmring.Queue and its C put and get
 * (py/queue.c) both take, one per direction, so one thread at a time uses a
 * process's producer or consumer. lock_try and lock_release are inline:
 * the C put and get take them once per call.
 */
#ifndef SHMRING_PY_LOCK_H
#define SHMRING_PY_LOCK_H

#include "py/core.h"

#include <pythread.h>

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    char locked;
    PyObject *weakrefs;
} LockObject;

extern PyTypeObject LockType;

static inline int lock_try(LockObject *l) {
    if (PyThread_acquire_lock_timed(l->lock, 0, 0) != PY_LOCK_ACQUIRED) return 0;
    l->locked = 1;
    return 1;
}

static inline void lock_release(LockObject *l) {
    l->locked = 0;
    PyThread_release_lock(l->lock);
}


#endif
