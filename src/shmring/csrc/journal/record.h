/*
 * journal/record.h - the journal's record format in C: write a record,
 * write a sparse-index entry, and read (check) a record.
 *
 * The format is the one drawn at the top of shmring/_journal/format.py
 * (little-endian; this file must agree with it byte for byte, and the tests
 * cross-check the two):
 *
 *   record:  0 u32 word = kind | payload length << 4 (0: nothing written yet)
 *            4 u32 CRC32 (zlib's, journal/crc.h) of the 28 bytes word, seq, time_ns, 0
 *                  (u32, u64, u64, u64), then of the payload
 *            8 u64 seq   16 u64 time_ns   24 u64 zero   32.. payload,
 *            zero padded to 16 bytes
 *   index entry i (at 64 + 24*i): u64 seq, u64 time_ns, u32 offset,
 *            u32 CRC32 of the 20 bytes before it
 *
 * The writer stores the word last (a release store), after the payload and the rest
 * of the header, so a record whose word is non-zero is whole for any
 * process. Pure C (no Python.h): the binding is py/journal.c.
 */
#ifndef SHMRING_JOURNAL_RECORD_H
#define SHMRING_JOURNAL_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define JREC_SIZE 32u
#define JREC_ALIGN 16u
#define JREC_KIND_DATA 1u
#define JREC_KIND_END 2u
#define JREC_KIND_BITS 4u
#define JREC_MAX_PAYLOAD ((1u << 28) - 1u)
#define JINDEX_OFF 64u
#define JINDEX_ENTRY 24u
/* Words of the meta page (shmring/_journal/meta.py). */
#define JMETA_WAKE 28u    /* u32 futex word */
#define JMETA_WAITERS 32u /* u64 readers asleep */
#define JMETA_NEXT 40u    /* u64 the writer's next seq */

static inline uint64_t jrec_align(uint64_t n) { return (n + JREC_ALIGN - 1) & ~(uint64_t)(JREC_ALIGN - 1); }

/* The record's checksum: CRC32 of its header fields, then its payload. */
uint32_t jrec_crc(uint32_t word, uint64_t seq, uint64_t time_ns, const void *payload, size_t n);

/* Writes a DATA record of n bytes at base+off: the payload (copied from
 * payload unless it is NULL: then it is already in place, as after a claim),
 * the header, then the word (seq-cst store). The caller checked that
 * off + JREC_SIZE + n fits in the mapping and n <= JREC_MAX_PAYLOAD.
 * Returns the offset after the record (16-byte aligned). */
uint64_t jrec_write(char *base, uint64_t off, uint64_t seq, uint64_t time_ns,
                    const void *payload, uint32_t n);

/* Writes sparse-index entry i (the caller checked i < n_index). */
void jindex_write(char *base, uint32_t i, uint64_t seq, uint64_t time_ns, uint32_t off);

enum { JREC_OK = 0, JREC_EMPTY = 1, JREC_BAD = 2 };

typedef struct {
    uint32_t kind;
    uint32_t length;
    uint32_t crc;
    uint64_t seq;
    uint64_t time_ns;
    uint64_t payload_off;
    uint64_t next_off;
} jrec_t;

/* Reads the header of the record at off in a mapping whose readable bytes
 * end at end, as format.read_record does: JREC_EMPTY if nothing is written
 * there (word 0, or not even a word fits), JREC_BAD if it does not check
 * (an off not 16-byte aligned, a bad kind, a non-zero reserved field, a
 * length past end), else JREC_OK with *r filled. Reads nothing outside [off, end). The
 * checksum is NOT checked here: the caller checks it over the bytes it
 * copied (jrec_check), so what it returns is exactly what was checked. */
int jrec_head(const char *base, uint64_t off, uint64_t end, jrec_t *r);

/* 1 if payload (r->length bytes, wherever they are now) matches r's CRC. */
static inline int jrec_check(const jrec_t *r, const void *payload) {
    uint32_t word = r->kind | (r->length << JREC_KIND_BITS);
    return jrec_crc(word, r->seq, r->time_ns, payload, r->length) == r->crc;
}

#endif
