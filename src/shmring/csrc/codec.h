/*
 * codec.h - the value codec: small plain Python objects to bytes and back,
 * encoded straight into a claimed record and decoded straight from a held
 * one (see codec.c for the format and why).
 *
 * A value record is the tag byte CODEC_TAG, then one encoded value. The tag
 * tells it apart from the other records send_obj writes: a pickle (protocol
 * 2 and up) starts with 0x80, a framed record with 0x00, and 0x01 is no
 * pickle opcode at all.
 */
#ifndef SHMRING_CODEC_H
#define SHMRING_CODEC_H

#include "core.h"

#define CODEC_TAG 0x01
#define CODEC_MAX_DEPTH 32 /* nesting of containers; deeper goes to pickle */

/* Producer._send_value(obj, timeout=None, nowait=False) -> bool */
PyObject *codec_send_value(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);
/* Consumer._recv_value(timeout=None, nowait=False) -> object | NotImplemented */
PyObject *codec_recv_value(EndpointObject *self, PyObject *const *args, Py_ssize_t nargs);
/* Module functions: encode_value(obj) -> bytes | None, decode_value(buffer),
 * set_decode_error(cls). */
PyObject *codec_encode_value(PyObject *m, PyObject *obj);
PyObject *codec_decode_value(PyObject *m, PyObject *buffer);
PyObject *codec_set_decode_error(PyObject *m, PyObject *cls);

#endif
