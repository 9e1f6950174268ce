/*
 * py/lock.c - the Lock type (see lock.h): acquire with a timeout and with
 * the GIL released, release, locked, and the context manager.
 */
#include "py/lock.h"

#include "wait.h"

/* 1 taken, 0 timed out (timeout_ns >= 0), -1 a signal handler raised. */
static int lock_acquire(LockObject *l, int64_t timeout_ns) {
    if (lock_try(l)) return 1;
    if (timeout_ns == 0) return 0;
    int64_t deadline = timeout_ns < 0 ? -1 : mono_ns() + timeout_ns;
    for (;;) {
        PY_TIMEOUT_T us = -1;
        if (deadline >= 0) {
            int64_t left = deadline - mono_ns();
            if (left <= 0) return 0;
            us = (PY_TIMEOUT_T)((left + 999) / 1000);
            if (us > PY_TIMEOUT_MAX) us = PY_TIMEOUT_MAX;
        }
        PyLockStatus r;
        Py_BEGIN_ALLOW_THREADS
        r = PyThread_acquire_lock_timed(l->lock, us, 1);
        Py_END_ALLOW_THREADS
        if (r == PY_LOCK_ACQUIRED) {
            l->locked = 1;
            return 1;
        }
        /* Interrupted: run the signal handlers (Ctrl-C), then wait on. */
        if (r == PY_LOCK_INTR && PyErr_CheckSignals() < 0) return -1;
    }
}

static PyObject *Lock_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    if (PyTuple_GET_SIZE(args) || (kw && PyDict_GET_SIZE(kw))) {
        PyErr_SetString(PyExc_TypeError, "Lock() takes no arguments");
        return NULL;
    }
    LockObject *self = (LockObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->lock = PyThread_allocate_lock();
    if (!self->lock) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void Lock_dealloc(LockObject *self) {
    if (self->weakrefs) PyObject_ClearWeakRefs((PyObject *)self);
    if (self->lock) {
        if (self->locked) PyThread_release_lock(self->lock);
        PyThread_free_lock(self->lock);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Lock_acquire(LockObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    double timeout = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|pd:acquire", kwlist, &blocking, &timeout))
        return NULL;
    if (!blocking && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return NULL;
    }
    if ((timeout < 0 && timeout != -1) || timeout != timeout) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return NULL;
    }
    if (timeout > (double)PY_TIMEOUT_MAX / 1e6) {
        PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
        return NULL;
    }
    int64_t ns = !blocking ? 0 : timeout < 0 ? -1 : (int64_t)(timeout * 1e9);
    int r = lock_acquire(self, ns);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

static PyObject *Lock_release(LockObject *self, PyObject *unused) {
    if (!self->locked) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    lock_release(self);
    Py_RETURN_NONE;
}

static PyObject *Lock_locked(LockObject *self, PyObject *unused) {
    return PyBool_FromLong(self->locked);
}

static PyObject *Lock_enter(LockObject *self, PyObject *unused) {
    if (lock_acquire(self, -1) < 0) return NULL;
    Py_RETURN_TRUE;
}

static PyObject *Lock_exit(LockObject *self, PyObject *args) { return Lock_release(self, NULL); }

static PyMethodDef Lock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))Lock_acquire, METH_VARARGS | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool: take the lock, as threading.Lock does."},
    {"release", (PyCFunction)Lock_release, METH_NOARGS, "release(): let go of the lock."},
    {"locked", (PyCFunction)Lock_locked, METH_NOARGS, "locked() -> bool: is it held?"},
    {"__enter__", (PyCFunction)Lock_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Lock_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}};

PyTypeObject LockType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "shmring._core.Lock",
    .tp_basicsize = sizeof(LockObject),
    .tp_dealloc = (destructor)Lock_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A thread lock with threading.Lock's methods, which shmring.Queue's C put "
              "and get also take.",
    .tp_weaklistoffset = offsetof(LockObject, weakrefs),
    .tp_methods = Lock_methods,
    .tp_new = Lock_new,
};
