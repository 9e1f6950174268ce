/*
 * ring/record.h - a record in the ring, for the .c files of ring/ only: the
 * record word's fields (layout.h, RECORD), where a position's header lies,
 * and the few record operations several files need (check, pad, zero).
 *
 * All static inline: check_record, put_pad and zero_record sit on the
 * per-message path (peek, release, commit), and the word helpers on every
 * one; a call into another translation unit would not be inlined (the
 * extension is built with -fPIC, so its global functions are interposable).
 */
#ifndef SHMRING_RING_RECORD_H
#define SHMRING_RING_RECORD_H

#include <string.h>

#include "atomics.h"
#include "layout.h"
#include "ring/ring.h"

/* The record word (layout.h, RECORD): build one, read its fields. */
static inline uint64_t rec_word(int32_t length, uint32_t type, uint32_t state,
                                uint32_t owner, uint64_t lap) {
    return (uint64_t)(uint32_t)length | ((uint64_t)(type & REC_TYPE_MASK) << REC_TYPE_SHIFT) |
           ((uint64_t)(state & REC_STATE_MASK) << REC_STATE_SHIFT) |
           ((uint64_t)(owner & REC_OWNER_MASK) << REC_OWNER_SHIFT) |
           ((lap & REC_LAP_MASK) << REC_LAP_SHIFT);
}
static inline int32_t rec_len(uint64_t w) { return (int32_t)(uint32_t)(w & REC_LEN_MASK); }
static inline uint32_t rec_type(uint64_t w) {
    return (uint32_t)(w >> REC_TYPE_SHIFT) & REC_TYPE_MASK;
}
static inline uint32_t rec_state(uint64_t w) {
    return (uint32_t)(w >> REC_STATE_SHIFT) & REC_STATE_MASK;
}
static inline uint32_t rec_owner(uint64_t w) {
    return (uint32_t)(w >> REC_OWNER_SHIFT) & REC_OWNER_MASK;
}
static inline uint64_t rec_lap(uint64_t w) { return w >> REC_LAP_SHIFT; }
/* The word with its state and owner replaced (the two fields are adjacent). */
static inline uint64_t rec_with_state(uint64_t w, uint32_t state, uint32_t owner) {
    return (w & ~(((uint64_t)REC_STATE_MASK << REC_STATE_SHIFT) |
                  ((uint64_t)REC_OWNER_MASK << REC_OWNER_SHIFT))) |
           ((uint64_t)(state & REC_STATE_MASK) << REC_STATE_SHIFT) |
           ((uint64_t)(owner & REC_OWNER_MASK) << REC_OWNER_SHIFT);
}

/* Record headers are RECORD_ALIGN-aligned; a position read from a corrupt
 * counter may not be, and its header words must still lie inside the ring. */
#define HDR(r, pos) ((uint64_t)((pos) & (r)->mask & ~(uint64_t)(RECORD_ALIGN - 1)))
#define WORD_OFF(r, pos) ((uint64_t)((r)->data - (r)->base) + HDR(r, pos) + REC_WORD)
#define SEQ_OFF(r, pos) ((uint64_t)((r)->data - (r)->base) + HDR(r, pos) + REC_SEQ)
#define LAP(r, pos) (((pos) / (r)->cap) & REC_LAP_MASK)

static inline int corrupt(ring_t *r, char *why) {
    r->err = why;
    return RING_CORRUPT;
}

static inline int check_record(ring_t *r, uint64_t pos, uint64_t w, uint64_t limit) {
    int32_t len = rec_len(w);
    uint32_t type = rec_type(w);
    uint64_t idx = pos & r->mask;
    if (len < (int32_t)RECORD_HEADER) return corrupt(r, "record length below header size");
    uint64_t alen = align_up((uint64_t)len, RECORD_ALIGN);
    if (idx + alen > r->cap) return corrupt(r, "record runs past the end of the ring");
    if (limit && pos + alen > limit) return corrupt(r, "record runs past the tail");
    if (type == REC_MSG) {
        if ((uint64_t)len - RECORD_HEADER > r->max_message)
            return corrupt(r, "record longer than max_message");
    } else if (type != REC_PAD && !(type == REC_REVOKED && r->multi_producer)) {
        return corrupt(r, "unknown record type");
    }
    if (rec_lap(w) != LAP(r, pos)) return corrupt(r, "record from another lap");
    return RING_OK;
}

static inline void put_pad(ring_t *r, uint64_t pos, uint64_t len) {
    st_rlx(r->base, SEQ_OFF(r, pos), pos);
    /* SYNC(pad): Pairs with a consumer's acquire load of this word (multi-producer) or of tail
     * (single producer). */
    st_rel(r->base, WORD_OFF(r, pos), rec_word((int32_t)len, REC_PAD, 0, 0, LAP(r, pos)));
}

static inline void zero_record(ring_t *r, uint64_t pos, uint64_t alen) {
    char *p = r->data + (pos & r->mask);
    /* Payload first, header word last: a half-zeroed record still reads as
     * the record it was, never as a shorter one. */
    memset(p + REC_SEQ, 0, alen - REC_SEQ);
    /* SYNC(zero): Release: a revoker that reads this zero sees that the record's producer had
     * dropped its confirmed flag before committing it. */
    st_rel(r->base, WORD_OFF(r, pos), 0);
}

#endif
