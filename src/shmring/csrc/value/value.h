/*
 * value/value.h - the value record format: small plain Python objects
 * (None, bool, int, float, str, bytes, tuple, list, dict) as bytes and back.
 * encode.c walks an object into bytes, decode.c builds objects from bytes;
 * neither knows of rings or endpoints (the CPython glue in py/objects.c
 * puts the bytes in a claimed record and takes them from a held one).
 *
 * A value record is the tag byte VALUE_TAG, then one encoded value. The tag
 * tells it apart from the other records send_obj writes: a pickle (protocol
 * 2 and up) starts with 0x80, a framed record with 0x00, and 0x01 is no
 * pickle opcode at all.
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
 * nesting deeper than VALUE_MAX_DEPTH containers; and a list or dict reached
 * twice (a shared or self-containing container: pickle keeps that identity,
 * this codec would not). Immutable objects reached twice are encoded twice:
 * equal values, as pickle gives, only `is` between them differs.
 *
 * Format (little-endian), after the record's tag byte VALUE_TAG (0x01):
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
 */
#ifndef SHMRING_VALUE_H
#define SHMRING_VALUE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#define VALUE_TAG 0x01
#define VALUE_MAX_DEPTH 32 /* nesting of containers; deeper goes to pickle */
/* Values up to this size are encoded once, on the stack, then copied. */
#define VALUE_STACK_BYTES 4096

/* value_encode and value_decode are called once per message from py/objects.c;
 * hidden, so those calls are direct rather than through the PLT (they were
 * one translation unit with their caller before the split). */

/* value_encode's results. VALUE_NO: not a plain value, no error set. */
enum { VALUE_OK = 0, VALUE_NO = 1, VALUE_ERR = -1 };

/* Encodes obj as a whole value record, tag included, into buf (cap bytes).
 * *size is the record's size even when that exceeds cap: bytes past cap are
 * counted, not written, so a first pass into a small buffer sizes a second
 * one. VALUE_OK, VALUE_NO, or VALUE_ERR with a Python error set. Runs no
 * Python code (exact types only: no __hash__, no __eq__). */
__attribute__((visibility("hidden"))) int value_encode(PyObject *obj, void *buf, size_t cap,
                                                       size_t *size);
/* The value in a whole record of n bytes (its first byte is VALUE_TAG), or
 * NULL with decode_error_class() set (any error becomes one, the original
 * as its cause). Never reads outside [p, p + n). */
__attribute__((visibility("hidden"))) PyObject *value_decode(const char *p, size_t n);
/* shmring.DecodeError once set_decode_error() handed it over, else
 * ValueError. A borrowed reference. */
PyObject *decode_error_class(void);

/* Module functions: encode_value(obj) -> bytes | None, decode_value(buffer),
 * set_decode_error(cls). */
PyObject *value_encode_value(PyObject *m, PyObject *obj);
PyObject *value_decode_value(PyObject *m, PyObject *buffer);
PyObject *value_set_decode_error(PyObject *m, PyObject *cls);

#endif
