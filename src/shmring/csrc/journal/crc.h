/*
 * journal/crc.h - CRC-32 as zlib computes it (the gzip polynomial,
 * reflected, zlib's pre- and post-inversion): jcrc32(crc, p, n) returns what
 * zlib's crc32(crc, p, n) does, for every input (the tests cross-check it
 * with Python's zlib.crc32).
 *
 * On x86-64 CPUs with PCLMULQDQ, runs of 64 bytes and more are folded with
 * carry-less multiplies (the method of Gopal et al., "Fast CRC Computation
 * for Generic Polynomials Using PCLMULQDQ Instruction", Intel, 2009), about
 * an order of magnitude faster than zlib 1.2's table method; the head and
 * tail bytes and short inputs go to slice-by-8 tables, long inputs on
 * other CPUs to zlib's crc32.
 */
#ifndef SHMRING_JOURNAL_CRC_H
#define SHMRING_JOURNAL_CRC_H

#include <stddef.h>
#include <stdint.h>

/* Builds the tables; call once (module init) before jcrc32. */
void jcrc32_init(void);

uint32_t jcrc32(uint32_t crc, const void *p, size_t n);

/* 1 if jcrc32 uses the carry-less multiply path on this CPU. */
int jcrc32_accelerated(void);

#endif
