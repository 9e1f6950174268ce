/* journal/record.c - writing and checking journal records in a segment mapping: the
 * payload and header first, the word last with a release store, index entries, and a
 * bounds-checked read of a record header (the format: record.h, _journal/format.py). */
#include "journal/record.h"

#include <stdatomic.h>
#include <string.h>
#include "atomics.h"
#include "journal/crc.h"

static inline void put32(char *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put64(char *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint32_t get32(const char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t get64(const char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the journal format is little-endian; this file stores words natively"
#endif

uint32_t jrec_crc(uint32_t word, uint64_t seq, uint64_t time_ns, const void *payload, size_t n) {
    unsigned char head[28];
    memcpy(head, &word, 4);
    memcpy(head + 4, &seq, 8);
    memcpy(head + 12, &time_ns, 8);
    memset(head + 20, 0, 8);
    return jcrc32(jcrc32(0, head, sizeof head), payload, n);
}

uint64_t jrec_write(char *base, uint64_t off, uint64_t seq, uint64_t time_ns,
                    const void *payload, uint32_t n) {
    char *rec = base + off;
    char *dst = rec + JREC_SIZE;
    if (payload) memmove(dst, payload, n);
    uint32_t word = (n << JREC_KIND_BITS) | JREC_KIND_DATA;
    /* The checksum over the payload where it now lies (in the page cache,
     * just written: in the CPU's cache too). */
    put32(rec + 4, jrec_crc(word, seq, time_ns, dst, n));
    put64(rec + 8, seq);
    put64(rec + 16, time_ns);
    put64(rec + 24, 0);
    /* SYNC(journal-word): the word last, a release store: a reader that sees it non-zero
     * sees the payload and header written above (jrec_head's acquire load). The writer's
     * seq-cst store of next_seq that follows (py/journal.c) orders it before the look at
     * the waiters count. */
    atomic_store_explicit(A32(rec, 0), word, memory_order_release);
    return jrec_align(off + JREC_SIZE + n);
}

void jindex_write(char *base, uint32_t i, uint64_t seq, uint64_t time_ns, uint32_t off) {
    char *e = base + JINDEX_OFF + (uint64_t)JINDEX_ENTRY * i;
    unsigned char raw[20];
    memcpy(raw, &seq, 8);
    memcpy(raw + 8, &time_ns, 8);
    memcpy(raw + 16, &off, 4);
    uint32_t crc = jcrc32(0, raw, sizeof raw);
    memcpy(e, raw, 20);
    put32(e + 20, crc);
}

int jrec_head(const char *base, uint64_t off, uint64_t end, jrec_t *r) {
    if (off > end || end - off < 4) return JREC_EMPTY;
    if (off % JREC_ALIGN) return JREC_BAD; /* records start 16-byte aligned */
    /* SYNC(journal-word): acquire: pairs with jrec_write's seq-cst store of the word (and the
     * Python writer's _core.store32). */
    uint32_t word = ld32_acq((void *)base, off);
    if (word == 0) return JREC_EMPTY;
    if (end - off < JREC_SIZE) return JREC_BAD;
    const char *rec = base + off;
    uint32_t kind = word & ((1u << JREC_KIND_BITS) - 1);
    uint32_t length = word >> JREC_KIND_BITS;
    if ((kind != JREC_KIND_DATA && kind != JREC_KIND_END) || get64(rec + 24) != 0 ||
        (kind == JREC_KIND_END && length))
        return JREC_BAD;
    uint64_t p0 = off + JREC_SIZE;
    if (length > end - p0) return JREC_BAD;
    r->kind = kind;
    r->length = length;
    r->crc = get32(rec + 4);
    r->seq = get64(rec + 8);
    r->time_ns = get64(rec + 16);
    r->payload_off = p0;
    r->next_off = jrec_align(p0 + length);
    return JREC_OK;
}
