/*
 * py/objects.h - the object paths of the endpoint types (py/objects.c):
 * send_obj and recv_obj with their fast path for plain values, and the
 * pieces of it that shmring.Queue's C put and get (py/queue.c) reuse.
 */
#ifndef SHMRING_PY_OBJECTS_H
#define SHMRING_PY_OBJECTS_H

#include "py/core.h"
#include "value/value.h"

/* Encodes obj as a value record into stack (VALUE_STACK_BYTES long): 1 with *n
 * its size (the stack holds it whole only if *n <= VALUE_STACK_BYTES; a larger
 * one is encoded again into its claim), 0 not a plain value, -1 error. */
int obj_encode(PyObject *obj, unsigned char *stack, size_t *n);
/* Sends what obj_encode made of obj, waiting for space until the deadline
 * (<0: none) as send does: True sent, False nothing sent because it is
 * larger than max_message or obj changed into something that is not a plain
 * value meanwhile (send it another way), NULL error. */
PyObject *obj_send_encoded(EndpointObject *self, PyObject *obj, unsigned char *stack,
                             size_t n, int64_t deadline, int nowait);
/* The next record decoded, waiting until the deadline: the value,
 * NotImplemented (another kind of record, left held), or NULL with an error
 * (the class decode_error_class() for a malformed record, consumed). */
PyObject *obj_recv(EndpointObject *self, int64_t deadline, int nowait);
/* fn(self, *args, **kwargs) for a METH_FASTCALL | METH_KEYWORDS method that
 * hands its call to a Python function. */
PyObject *call_with_self(PyObject *fn, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames);

/* Producer._send_value(obj, timeout=None, nowait=False) -> bool */
PyObject *obj_send_value(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);
/* Consumer._recv_value(timeout=None, nowait=False) -> object | NotImplemented */
PyObject *obj_recv_value(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);
/* Producer.send_obj and Consumer.recv_obj: the common call in C, the rest
 * handed to shmring._objects (whose functions of the same names these are,
 * for the type checker). */
#define OBJ_SEND_DOC                                                                   \
    "send_obj($self, obj, timeout=None, *, serializer=None)\n--\n\n"                        \
    "Send one Python object, waiting up to ``timeout`` seconds for space.\n\n"               \
    "A plain value (None, bool, int, float, str, bytes, tuple, list, dict) is encoded\n"     \
    "straight into the ring; anything else is pickled (protocol 5), large buffers\n"        \
    "(numpy arrays, big ``bytes``) written into one claimed record without an\n"            \
    "intermediate copy. Raises :class:`~shmring.Timeout`,\n"                                \
    ":class:`~shmring.MessageTooLarge` (the encoded object exceeds the channel's\n"         \
    "``max_message``; nothing was sent), or whatever the serializer raises for an\n"        \
    "object it cannot encode.\n\n"                                                          \
    "Example::\n\n"                                                                          \
    "    tx.send_obj({\"id\": 7, \"image\": np.zeros((480, 640), np.uint8)})\n"
#define OBJ_RECV_DOC                                                                   \
    "recv_obj($self, timeout=None, *, copy=True, serializer=None)\n--\n\n"                  \
    "Receive one object, waiting up to ``timeout`` seconds for it.\n\n"                      \
    "With ``copy=True`` (the default) the object owns its memory: a received numpy\n"       \
    "array is a writable copy (read-only if the sent one was). ``copy=False``\n"           \
    "returns an :class:`ObjectView` to use as a context manager: its arrays are\n"         \
    "zero-copy, read-only views of the ring, valid inside the block. Raises\n"             \
    ":class:`~shmring.Timeout`, :class:`~shmring.EndOfStream`, or\n"                        \
    ":class:`~shmring.DecodeError` (the record could not be decoded; it is consumed).\n\n" \
    "Example::\n\n"                                                                          \
    "    obj = rx.recv_obj(timeout=5)\n"                                                     \
    "    with rx.recv_obj(copy=False) as frame:\n"                                          \
    "        mean = frame[\"image\"].mean()\n"
PyObject *obj_send_obj(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames);
PyObject *obj_recv_obj(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames);
/* set_object_paths(PickleSerializer, send_obj, _send_encoded, recv_obj,
 * _recv_other): the Python functions the object methods hand calls to. */
PyObject *obj_set_object_paths(PyObject *m, PyObject *args);

#endif
