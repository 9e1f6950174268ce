/* ring.c - record protocol of every pattern; see ring.h and layout.h. */
#include "ring.h"

#include <string.h>
#include <time.h>

#include "atomics.h"
#include "wait.h"

/* Record headers are RECORD_ALIGN-aligned; a position read from a corrupt
 * counter may not be, and its header words must still lie inside the ring. */
#define HDR(r, pos) ((uint64_t)((pos) & (r)->mask & ~(uint64_t)(RECORD_ALIGN - 1)))
#define WORD_OFF(r, pos) ((uint64_t)((r)->data - (r)->base) + HDR(r, pos))
#define SEQ_OFF(r, pos) (WORD_OFF(r, pos) + 8u)
#define LAP(r, pos) (((pos) / (r)->cap) & 0xFFFFu)

static int corrupt(ring_t *r, char *why) {
    r->err = why;
    return RING_CORRUPT;
}

static int is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

int ring_init(ring_t *r, char *base, uint64_t size, uint32_t slot, int consumer) {
    memset(r, 0, sizeof(*r));
    r->base = base;
    r->size = size;
    if (size < REGION_HEADER_SIZE) return corrupt(r, "segment smaller than its header");
    if (ld_acq(base, HDR_MAGIC) != SHMRING_MAGIC) return corrupt(r, "bad magic");
    r->pattern = *(uint32_t *)(base + HDR_PATTERN);
    r->flags = *(uint32_t *)(base + HDR_FLAGS);
    r->cap = *(uint64_t *)(base + HDR_CAPACITY);
    r->max_message = *(uint64_t *)(base + HDR_MAX_MESSAGE);
    r->slot_count = *(uint32_t *)(base + HDR_SLOT_COUNT);
    uint64_t doff = *(uint64_t *)(base + HDR_DATA_OFFSET);
    if (r->pattern < PATTERN_SPSC || r->pattern > PATTERN_BROADCAST)
        return corrupt(r, "unknown pattern");
    if (!is_pow2(r->cap) || r->cap < MIN_CAPACITY || r->cap > MAX_CAPACITY)
        return corrupt(r, "capacity is not a power of two in range");
    if (r->slot_count == 0 || r->slot_count > MAX_SLOTS) return corrupt(r, "bad slot count");
    if (doff < SLOTS_OFFSET + (uint64_t)r->slot_count * SLOT_SIZE || doff % RECORD_ALIGN)
        return corrupt(r, "data offset overlaps the attach table");
    if (doff > size || size - doff < r->cap) return corrupt(r, "ring extends past the segment");
    /* Written so that no sum can wrap (cap >= MIN_CAPACITY was checked). */
    if (r->max_message == 0 || r->max_message > r->cap / 2 - RECORD_HEADER)
        return corrupt(r, "max_message does not fit half the ring");
    if (slot >= r->slot_count) return corrupt(r, "slot out of range");
    r->data = base + doff;
    r->mask = r->cap - 1;
    r->slot = slot;
    r->slot_off = SLOTS_OFFSET + (uint64_t)slot * SLOT_SIZE;
    r->multi_producer = r->pattern == PATTERN_MPSC || r->pattern == PATTERN_MPMC;
    r->lossy = r->pattern == PATTERN_BROADCAST && (r->flags & FLAG_LOSSY);
    /* Pairs with the release stores of tail/head by the previous owner of
     * this role (or by recovery): we continue from what they published. */
    r->tail_local = ld_acq(base, OFF_TAIL);
    r->msgno = ld_acq(base, OFF_MSGNO);
    r->cursor = ld_acq(base, OFF_HEAD);
    r->cached_tail = r->cursor;
    (void)consumer;
    return RING_OK;
}

/* ------------------------------------------------------------ producer -- */

/* The lowest start of a quarantined (revoked, not yet lifted) claim, or h.
 * An entry that head has run more than a ring past is garbage, not a
 * quarantine (a live one holds every producer, so head, below pos + cap). */
static uint64_t quarantine_floor(char *base, uint64_t h, uint64_t cap) {
    uint64_t m = h;
    for (uint32_t i = 0; i < QUAR_ENTRIES; i++) {
        uint64_t e = OFF_QUAR_ENTRIES + (uint64_t)i * QUAR_ENTRY;
        if (!ld_acq(base, e + QUAR_LEN)) continue;
        uint64_t p = ld_acq(base, e + QUAR_POS);
        if (p < m && p + cap >= h) m = p;
    }
    return m;
}

static uint64_t gate(ring_t *r) {
    if (r->pattern != PATTERN_BROADCAST) {
        /* Pairs with the consumer's (or sweeper's) release store of head,
         * made after it finished reading and zeroing the freed bytes. */
        uint64_t h = ld_acq(r->base, OFF_HEAD);
        /* After head: a head past a revoked record was stored after the
         * consumer read that record, which the revoker wrote after
         * publishing its quarantine entry (ring_revoke_claim). */
        if (r->multi_producer && ld_acq(r->base, OFF_QUAR_COUNT))
            h = quarantine_floor(r->base, h, r->cap);
        return h + r->cap;
    }
    if (r->lossy) return UINT64_MAX;
    /* Pairs with the fence in ring_consumer_join: a consumer that joined
     * after this scan read a tail at least as new as ours. */
    fence_sc();
    uint64_t m = r->tail_local;
    for (uint32_t i = 0; i < r->slot_count; i++) {
        uint64_t so = SLOTS_OFFSET + (uint64_t)i * SLOT_SIZE;
        if (ld32_acq(r->base, so + SLOT_ROLE) != ROLE_CONSUMER) continue;
        if (ld32_acq(r->base, so + SLOT_STATE) != SLOT_ACTIVE) continue;
        /* Pairs with the consumer's release store of its cursor. */
        uint64_t c = ld_acq(r->base, so + SLOT_CURSOR);
        if (c < m) m = c;
    }
    return m + r->cap;
}

static void put_pad(ring_t *r, uint64_t pos, uint64_t len) {
    st_rlx(r->base, SEQ_OFF(r, pos), pos);
    /* Pairs with a consumer's acquire load of this word (multi-producer) or
     * of tail (single producer). */
    st_rel(r->base, WORD_OFF(r, pos), rec_word((int32_t)len, REC_PAD, 0, 0, LAP(r, pos)));
}

int ring_has_space(ring_t *r, uint64_t reclen) {
    /* Broken or closed for sending: a blocked sender wakes to say so. */
    if (ld32_acq(r->base, OFF_BROKEN) || ld32_acq(r->base, OFF_EOS)) return 1;
    uint64_t t = r->multi_producer ? ld_acq(r->base, OFF_TAIL) : r->tail_local;
    uint64_t idx = t & r->mask;
    uint64_t pad = idx + reclen > r->cap ? r->cap - idx : 0;
    if (t + pad + reclen <= r->limit) return 1;
    r->limit = gate(r);
    return t + pad + reclen <= r->limit;
}

int ring_ready_space(void *rp) {
    ring_t *r = rp;
    if (r->cancel && *r->cancel) return 1;
    return ring_has_space(r, r->want);
}

/* ------------------------------------------------------------ revocation --
 *
 * A producer stopped (SIGSTOP, a debugger, a deadlock) while holding a claim
 * blocks every consumer of an mpsc or mpmc ring at that claim. After a
 * timeout the supervisor revokes it (ring_revoke_claim): it writes a
 * REC_REVOKED record over the claim, which consumers skip as padding. The
 * stopped process may resume at any instruction of its claim, copy or
 * commit, so two rules keep it harmless:
 *
 * - every store it makes to the record word is a compare-exchange from the
 *   value it expects (zero, then its claimed word): against REC_REVOKED both
 *   fail, and it learns of the revocation (RING_REVOKED, raised as
 *   ClaimRevoked) instead of committing into bytes consumers have passed;
 * - the claim's bytes are quarantined: producers are gated at the claim's
 *   start plus one ring, and consumers never zero a REC_REVOKED word, until
 *   the producer is done writing (it saw the revocation and set QUAR_DONE,
 *   or it died and recovery set it) and head has passed the record. Then the
 *   supervisor zeroes the bytes and frees the entry (ring_lift_quarantine).
 *   Without the quarantine, a later lap could reuse the bytes and the
 *   resumed copy would overwrite another message, or its compare-exchange
 *   would find a zero word again and succeed.
 *
 * Consumers go on at once; producers go on for up to one more ring of data
 * while the stopped process stays stopped.
 */
static uint64_t quar_entry(char *base, uint64_t pos, uint32_t owner) {
    for (uint32_t i = 0; i < QUAR_ENTRIES; i++) {
        uint64_t e = OFF_QUAR_ENTRIES + (uint64_t)i * QUAR_ENTRY;
        if (!ld_acq(base, e + QUAR_LEN) || ld_acq(base, e + QUAR_POS) != pos) continue;
        if (((ld_acq(base, e + QUAR_FLAGS) >> 8) & 0xFFu) != owner) continue;
        return e;
    }
    return 0;
}

static void quar_set_done(char *base, uint64_t e) {
    uint64_t f = ld_acq(base, e + QUAR_FLAGS);
    while (!(f & QUAR_DONE) && !cas_sc(base, e + QUAR_FLAGS, &f, f | QUAR_DONE)) {
    }
}

/* Our claim at start lost its record word: the supervisor revoked it. We
 * write nothing more into it; saying so lets the supervisor lift it. */
static int revoked(ring_t *r, uint64_t start) {
    r->claimed = 0;
    uint64_t e = quar_entry(r->base, start, r->slot + 1);
    st_rel(r->base, r->slot_off + SLOT_CLAIM_POS, CLAIM_NONE);
    if (!e) return corrupt(r, "a claimed record word was overwritten");
    quar_set_done(r->base, e);
    return RING_REVOKED;
}

int ring_claim(ring_t *r, uint64_t len, char **payload) {
    if (len > r->max_message) return RING_TOOBIG;
    if (ld32_acq(r->base, OFF_BROKEN)) return RING_BROKEN;
    uint64_t reclen = align_up(len + RECORD_HEADER, RECORD_ALIGN);
    uint64_t t, idx, pad, end;
    r->want = reclen;
    if (!r->multi_producer) {
        t = r->tail_local;
        if (t % RECORD_ALIGN) return corrupt(r, "tail is not record-aligned");
        idx = t & r->mask;
        pad = idx + reclen > r->cap ? r->cap - idx : 0;
        end = t + pad + reclen;
        if (end > r->limit) {
            r->limit = gate(r);
            if (end > r->limit) return RING_AGAIN;
        }
        if (r->lossy) {
            /* Seqlock writer: the intent is visible before any byte we
             * overwrite. Pairs with the acquire fence in ring_validate. It
             * never moves back: an aborted claim may have overwritten bytes
             * past the end of a smaller claim made after it (we own it). */
            if (end > ld_rlx(r->base, OFF_INTENT)) st_rlx(r->base, OFF_INTENT, end);
            fence_rel();
        }
        if (pad) {
            st_rlx(r->base, SEQ_OFF(r, t), t);
            st_rlx(r->base, WORD_OFF(r, t), rec_word((int32_t)pad, REC_PAD, 0, 0, LAP(r, t)));
        }
    } else {
        for (;;) {
            t = ld_acq(r->base, OFF_TAIL);
            if (t % RECORD_ALIGN) return corrupt(r, "tail is not record-aligned");
            idx = t & r->mask;
            pad = idx + reclen > r->cap ? r->cap - idx : 0;
            end = t + pad + reclen;
            if (end > r->limit) {
                r->limit = gate(r);
                if (end > r->limit) return RING_AGAIN;
            }
            /* A record that would straddle the end of the ring: claim the
             * padding to the end alone, commit it, and claim again at the
             * start. So every claim is one record, and a revoked claim is
             * one record the revoker owns whole ("revocation"). */
            uint64_t n = pad ? pad : reclen;
            /* Intent first, so that recovery can pad a claim whose owner
             * died between the exchange below and its first header store. */
            st_rlx(r->base, r->slot_off + SLOT_CLAIM_LEN, n);
            st_rel(r->base, r->slot_off + SLOT_CLAIM_POS, t);
            if (!cas_sc(r->base, OFF_TAIL, &t, t + n)) continue;
            /* The claim is ours: recovery may pad [t, t + n) without doubt.
             * Release: whoever sees the flag sees the position it belongs to. */
            st_rel(r->base, r->slot_off + SLOT_CLAIM_LEN, n | CLAIM_CONFIRMED);
            st_rlx(r->base, SEQ_OFF(r, t), t);
            uint64_t z = 0;
            if (pad) {
                st_rlx(r->base, r->slot_off + SLOT_CLAIM_LEN, n); /* as commit */
                if (cas_sc(r->base, WORD_OFF(r, t), &z,
                           rec_word((int32_t)pad, REC_PAD, 0, 0, LAP(r, t))))
                    st_rel(r->base, r->slot_off + SLOT_CLAIM_POS, CLAIM_NONE);
                else if (revoked(r, t) != RING_REVOKED) /* the revoked record pads */
                    return RING_CORRUPT;
                shm_notify(r->base, OFF_DATA_FUTEX, OFF_DATA_WAITERS);
                continue;
            }
            /* Negative length: claimed, not committed. Pairs with recovery's
             * acquire load (it learns the claim's length from here too). By
             * compare-exchange from zero: if the supervisor revoked the claim
             * while we were stopped, its word is there instead. */
            uint64_t cw = rec_word(-(int32_t)(len + RECORD_HEADER), REC_MSG, 0, 0, LAP(r, t));
            if (!cas_sc(r->base, WORD_OFF(r, t), &z, cw)) return revoked(r, t);
            r->claim_word = cw;
            break;
        }
        pad = 0;
        end = t + reclen;
    }
    r->claimed = 1;
    r->claim_start = t;
    r->claim_pos = t + pad;
    r->claim_end = end;
    r->claim_len = len;
    *payload = r->data + ((t + pad) & r->mask) + RECORD_HEADER;
    return RING_OK;
}

/* Commits the first `used` bytes of the claim (used <= claimed length); the
 * unused tail of the record, if a whole aligned block, becomes padding. */
int ring_commit(ring_t *r, uint64_t used) {
    if (!r->claimed || used > r->claim_len) return RING_TOOBIG;
    uint64_t p = r->claim_pos;
    uint64_t full = align_up(r->claim_len + RECORD_HEADER, RECORD_ALIGN);
    uint64_t part = align_up(used + RECORD_HEADER, RECORD_ALIGN);
    uint64_t word = rec_word((int32_t)(used + RECORD_HEADER), REC_MSG, 0, 0, LAP(r, p));
    r->claimed = 0;
    if (part < full) put_pad(r, p + part, full - part);
    if (!r->multi_producer) {
        if (r->pattern == PATTERN_BROADCAST) {
            r->msgno++;
            st_rlx(r->base, SEQ_OFF(r, p), r->msgno);
            st_rlx(r->base, OFF_LATEST, p);
            /* After latest. Pairs with the acquire in ring_consumer_join. */
            st_rel(r->base, OFF_MSGNO, r->msgno);
        } else {
            st_rlx(r->base, SEQ_OFF(r, p), p);
        }
        st_rlx(r->base, WORD_OFF(r, p), word);
        r->tail_local = r->claim_end;
    } else {
        /* Publication. Pairs with the consumer's acquire load of the word.
         * Compare-exchange: a revoked claim's word is no longer ours. The
         * flag goes first: a confirmed claim's word is then never a zero
         * left by a consumer that read it (ring_revoke_claim relies on it). */
        st_rlx(r->base, r->slot_off + SLOT_CLAIM_LEN, r->claim_end - r->claim_start);
        uint64_t cw = r->claim_word;
        if (!cas_sc(r->base, WORD_OFF(r, p), &cw, word)) return revoked(r, r->claim_start);
        st_rel(r->base, r->slot_off + SLOT_CLAIM_POS, CLAIM_NONE);
    }
    r->messages++;
    r->bytes += used;
    r->pending = 1;
    if (!r->batch) ring_flush(r);
    return RING_OK;
}

void ring_flush(ring_t *r) {
    if (!r->pending) return;
    r->pending = 0;
    st_rlx(r->base, r->slot_off + SLOT_MESSAGES, r->messages);
    st_rlx(r->base, r->slot_off + SLOT_BYTES, r->bytes);
    if (!r->multi_producer) {
        /* Publication. Pairs with the consumer's acquire load of tail: the
         * records and their payloads are visible before the new tail. */
        st_rel(r->base, OFF_TAIL, r->tail_local);
    }
    shm_notify(r->base, OFF_DATA_FUTEX, OFF_DATA_WAITERS);
}

void ring_abort(ring_t *r) {
    if (!r->claimed) return;
    r->claimed = 0;
    if (!r->multi_producer) {
        /* Nothing was published: tail never moved. A lossy intent that ran
         * ahead only makes readers re-validate. */
        return;
    }
    uint64_t full = align_up(r->claim_len + RECORD_HEADER, RECORD_ALIGN);
    st_rlx(r->base, r->slot_off + SLOT_CLAIM_LEN, r->claim_end - r->claim_start); /* as commit */
    uint64_t cw = r->claim_word;
    if (!cas_sc(r->base, WORD_OFF(r, r->claim_pos), &cw,
                rec_word((int32_t)full, REC_PAD, 0, 0, LAP(r, r->claim_pos)))) {
        (void)revoked(r, r->claim_start);
        return;
    }
    st_rel(r->base, r->slot_off + SLOT_CLAIM_POS, CLAIM_NONE);
    shm_notify(r->base, OFF_DATA_FUTEX, OFF_DATA_WAITERS);
}

/* ------------------------------------------------------------ consumer -- */

static int check_record(ring_t *r, uint64_t pos, uint64_t w, uint64_t limit) {
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

static void hold(ring_t *r, uint64_t pos, uint64_t w, const char **payload, uint64_t *len) {
    r->held = 1;
    r->held_pos = pos;
    r->held_word = w;
    /* Read before the payload is copied: for lossy broadcast, the seqlock
     * check after the copy (ring_validate) then covers it too. */
    r->held_seq = ld_rlx(r->base, SEQ_OFF(r, pos));
    r->held_len = (uint64_t)rec_len(w) - RECORD_HEADER;
    r->held_alen = align_up((uint64_t)rec_len(w), RECORD_ALIGN);
    *payload = r->data + (pos & r->mask) + RECORD_HEADER;
    *len = r->held_len;
}

static void zero_record(ring_t *r, uint64_t pos, uint64_t alen) {
    char *p = r->data + (pos & r->mask);
    /* Payload first, header word last: a half-zeroed record still reads as
     * the record it was, never as a shorter one. */
    memset(p + 8, 0, alen - 8);
    /* Release: a revoker that reads this zero sees that the record's
     * producer had dropped its confirmed flag before committing it. */
    st_rel(r->base, WORD_OFF(r, pos), 0);
}

static void free_to(ring_t *r, uint64_t to);

/* Lossy broadcast, overrun at c: ring_peek jumps to the newest record, unless
 * we are there already; then that record is itself being overwritten (or the
 * counters are garbage) and nothing is readable until the producer commits:
 * jumping again would spin forever. */
static int lapped(ring_t *r, uint64_t c) {
    return c == ld_acq(r->base, OFF_LATEST) ? RING_AGAIN : RING_LAPPED;
}

/* spsc and broadcast: the single producer publishes with tail. */
static int peek_tail(ring_t *r, const char **payload, uint64_t *len) {
    for (;;) {
        uint64_t c = r->cursor;
        if (c == r->cached_tail) {
            /* Pairs with the producer's release store of tail in commit. */
            r->cached_tail = ld_acq(r->base, OFF_TAIL);
            if (c == r->cached_tail) return RING_AGAIN;
        }
        if (r->cached_tail < c || r->cached_tail - c > r->cap) {
            if (r->lossy) return lapped(r, c);
            return corrupt(r, "tail and cursor more than a ring apart");
        }
        /* Lossy: a record the producer is overwriting is not read at all
         * (an early look; ring_validate after the copy is the seqlock). */
        if (r->lossy && ld_rlx(r->base, OFF_INTENT) > c + r->cap) return lapped(r, c);
        uint64_t w = ld_rlx(r->base, WORD_OFF(r, c));
        int rc = check_record(r, c, w, r->cached_tail);
        if (rc != RING_OK) return r->lossy ? lapped(r, c) : rc;
        if (r->pattern == PATTERN_SPSC && rec_type(w) == REC_MSG &&
            ld_rlx(r->base, SEQ_OFF(r, c)) != c)
            return corrupt(r, "record sequence does not match its position");
        if (rec_type(w) == REC_PAD) {
            uint64_t to = c + align_up((uint64_t)rec_len(w), RECORD_ALIGN);
            if (r->lossy && ring_validate(r) != RING_OK) return RING_LAPPED;
            if (r->pattern == PATTERN_SPSC) {
                free_to(r, to);
            } else {
                r->cursor = to;
                if (r->batch) r->pending = 1;
                else st_rel(r->base, r->slot_off + SLOT_CURSOR, to);
            }
            continue;
        }
        hold(r, c, w, payload, len);
        return RING_OK;
    }
}

/* A revoked record a ring behind c, not yet lifted: producers are gated at
 * it, so c is the end of the data for now (not corruption). */
static int quarantined_here(ring_t *r, uint64_t c, uint64_t w) {
    return rec_type(w) == REC_REVOKED && c >= r->cap && rec_lap(w) == LAP(r, c - r->cap);
}

/* mpsc: one consumer reads at head; the commit flag is the record word. */
static int peek_mpsc(ring_t *r, const char **payload, uint64_t *len) {
    for (;;) {
        uint64_t c = r->cursor;
        /* Pairs with the producer's release store of the committed word. */
        uint64_t w = ld_acq(r->base, WORD_OFF(r, c));
        if (w == 0 || rec_len(w) < 0 || quarantined_here(r, c, w)) return RING_AGAIN;
        int rc = check_record(r, c, w, 0);
        if (rc != RING_OK) return rc;
        if (ld_rlx(r->base, SEQ_OFF(r, c)) != c)
            return corrupt(r, "record sequence does not match its position");
        if (rec_type(w) != REC_MSG) {
            uint64_t alen = align_up((uint64_t)rec_len(w), RECORD_ALIGN);
            /* A revoked claim stays as it is: its producer may still write
             * into it (see "revocation"); the supervisor zeroes it later. */
            if (rec_type(w) == REC_PAD) zero_record(r, c, alen);
            free_to(r, c + alen);
            continue;
        }
        hold(r, c, w, payload, len);
        return RING_OK;
    }
}

/* mpmc: advance head over every done record at it, zeroing each. */
static void sweep(ring_t *r) {
    int swept = 0;
    for (;;) {
        uint64_t h = ld_sc(r->base, OFF_HEAD);
        uint64_t w = ld_sc(r->base, WORD_OFF(r, h));
        if (rec_len(w) <= 0 || rec_state(w) != ST_DONE || rec_lap(w) != LAP(r, h)) break;
        uint64_t alen = align_up((uint64_t)rec_len(w), RECORD_ALIGN);
        if ((h & r->mask) + alen > r->cap) break; /* corrupt: leave it to readers */
        if (!cas_sc(r->base, WORD_OFF(r, h), &w, rec_with_state(w, ST_SWEEP, r->slot + 1)))
            break;
        /* Sweep intent, for recovery if we die half-way through zeroing. */
        st_rlx(r->base, r->slot_off + SLOT_CLAIM_LEN, alen);
        st_rel(r->base, r->slot_off + SLOT_CLAIM_POS, h);
        if (rec_type(w) != REC_REVOKED) zero_record(r, h, alen); /* see "revocation" */
        /* Pairs with the producer's acquire load of head in gate(). */
        st_sc(r->base, OFF_HEAD, h + alen);
        st_rel(r->base, r->slot_off + SLOT_CLAIM_POS, CLAIM_NONE);
        swept = 1;
    }
    if (swept) shm_notify(r->base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
}

static void mark_done_and_sweep(ring_t *r, uint64_t pos, uint64_t taken) {
    /* Seq-cst: pairs with the sweeper's seq-cst store of head followed by
     * its load of this word. One of us sees the other, so no done record is
     * left behind at head with nobody to sweep it. */
    st_sc(r->base, WORD_OFF(r, pos), rec_with_state(taken, ST_DONE, r->slot + 1));
    sweep(r);
}

/* mpmc, records handed back by recovery: they sit below read_claim. */
static int take_redelivered(ring_t *r, const char **payload, uint64_t *len) {
    uint64_t q = ld_acq(r->base, OFF_HEAD);
    uint64_t end = ld_acq(r->base, OFF_READ_CLAIM);
    while (q < end) {
        uint64_t w = ld_acq(r->base, WORD_OFF(r, q));
        /* The word is of q's lap only while head has not passed q. */
        if (ld_acq(r->base, OFF_HEAD) > q) return RING_AGAIN;
        if (rec_len(w) <= 0 || check_record(r, q, w, 0) != RING_OK) return RING_AGAIN;
        uint64_t alen = align_up((uint64_t)rec_len(w), RECORD_ALIGN);
        if (rec_state(w) == ST_READY && rec_type(w) == REC_MSG) {
            uint64_t taken = rec_with_state(w, ST_TAKEN, r->slot + 1);
            if (cas_sc(r->base, WORD_OFF(r, q), &w, taken)) {
                fadd_sc(r->base, OFF_REDELIVER, (uint64_t)-1);
                hold(r, q, taken, payload, len);
                return RING_OK;
            }
            continue;
        }
        q += alen;
    }
    return RING_AGAIN;
}

static int peek_mpmc(ring_t *r, const char **payload, uint64_t *len) {
    if (ld_rlx(r->base, OFF_REDELIVER) != 0 &&
        take_redelivered(r, payload, len) == RING_OK)
        return RING_OK;
    for (;;) {
        uint64_t r0 = ld_acq(r->base, OFF_READ_CLAIM);
        uint64_t w = ld_acq(r->base, WORD_OFF(r, r0));
        /* If read_claim has not moved, the word is of r0's lap: recycling
         * r0 needs head, hence read_claim, past it (ring.h). */
        if (ld_acq(r->base, OFF_READ_CLAIM) != r0) continue;
        if (w == 0 || rec_len(w) < 0) return RING_AGAIN;
        int rc = check_record(r, r0, w, 0);
        if (rc != RING_OK) {
            /* Ring exactly full (tail == head + capacity): nothing is claimed
             * at r0 yet and its bytes are still the record at head, a lap
             * older, taken and not yet done. A claim at r0 is made after
             * that record was zeroed (producer: acquire of head, then the
             * CAS of tail we acquire here), so a word read after seeing
             * such a claim is never the old record. */
            if (ld_acq(r->base, OFF_TAIL) == r0) return RING_AGAIN;
            if (ld_acq(r->base, WORD_OFF(r, r0)) != w) continue;
            return rc;
        }
        uint64_t alen = align_up((uint64_t)rec_len(w), RECORD_ALIGN);
        if (rec_state(w) != ST_READY) {
            cas_sc(r->base, OFF_READ_CLAIM, &r0, r0 + alen); /* help */
            continue;
        }
        uint64_t taken = rec_with_state(w, ST_TAKEN, r->slot + 1);
        if (!cas_sc(r->base, WORD_OFF(r, r0), &w, taken)) continue;
        uint64_t e = r0;
        cas_sc(r->base, OFF_READ_CLAIM, &e, r0 + alen);
        if (rec_type(taken) != REC_MSG) {
            mark_done_and_sweep(r, r0, taken);
            continue;
        }
        if (ld_rlx(r->base, SEQ_OFF(r, r0)) != r0)
            return corrupt(r, "record sequence does not match its position");
        hold(r, r0, taken, payload, len);
        return RING_OK;
    }
}

/* Multi-producer: a claim is still in flight past what we have read (it
 * will be committed, aborted, recovered or revoked). End-of-stream waits
 * for it: the records behind it were sent before the channel was closed. */
static int in_flight(ring_t *r) {
    if (!r->multi_producer) return 0;
    uint64_t at = r->pattern == PATTERN_MPSC ? r->cursor : ld_acq(r->base, OFF_READ_CLAIM);
    return ld_acq(r->base, OFF_TAIL) > at;
}

int ring_peek(ring_t *r, const char **payload, uint64_t *len) {
    if (r->held) {
        *payload = r->data + (r->held_pos & r->mask) + RECORD_HEADER;
        *len = r->held_len;
        return RING_OK;
    }
    int rc;
    switch (r->pattern) {
    case PATTERN_MPSC: rc = peek_mpsc(r, payload, len); break;
    case PATTERN_MPMC: rc = peek_mpmc(r, payload, len); break;
    default: rc = peek_tail(r, payload, len); break;
    }
    if (rc == RING_LAPPED) {
        /* Lossy broadcast overran us: jump to the newest record. */
        uint64_t latest = ld_acq(r->base, OFF_LATEST);
        r->cursor = latest;
        r->cached_tail = latest;
        return RING_LAPPED;
    }
    if (rc != RING_AGAIN) return rc;
    if (ld32_acq(r->base, OFF_BROKEN)) return RING_BROKEN;
    /* End-of-stream only once drained: look again after seeing the flag,
     * since the last messages may have been committed just before it. */
    if (ld32_sc(r->base, OFF_EOS)) {
        rc = r->pattern == PATTERN_MPSC   ? peek_mpsc(r, payload, len)
             : r->pattern == PATTERN_MPMC ? peek_mpmc(r, payload, len)
                                          : peek_tail(r, payload, len);
        if (rc == RING_AGAIN) return in_flight(r) ? RING_AGAIN : RING_EOS;
        if (rc == RING_LAPPED) return RING_LAPPED;
    }
    return rc;
}

/* Lossy broadcast: after copying the held record, was it overwritten? */
int ring_validate(ring_t *r) {
    if (!r->lossy) return RING_OK;
    /* Seqlock reader. Pairs with the release fence after the producer's
     * intent store: if our copy saw any overwriting byte, we see its intent. */
    fence_acq();
    uint64_t intent = ld_rlx(r->base, OFF_INTENT);
    uint64_t pos = r->held ? r->held_pos : r->cursor;
    if (intent <= pos + r->cap) return RING_OK;
    /* Overrun: drop the copy and jump to the newest record. */
    r->held = 0;
    r->cursor = ld_acq(r->base, OFF_LATEST);
    r->cached_tail = r->cursor;
    return RING_LAPPED;
}

static void free_to(ring_t *r, uint64_t to) {
    r->cursor = to;
    if (r->batch) {
        r->pending = 1;
        return;
    }
    /* Pairs with the producer's acquire load of head in gate(): our reads
     * (and zeroing) of the freed bytes happen before it reuses them. */
    st_sc(r->base, OFF_HEAD, to);
    shm_notify(r->base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
}

void ring_release(ring_t *r) {
    if (!r->held) return;
    r->held = 0;
    r->messages++;
    r->bytes += r->held_len;
    st_rlx(r->base, r->slot_off + SLOT_MESSAGES, r->messages);
    st_rlx(r->base, r->slot_off + SLOT_BYTES, r->bytes);
    uint64_t to = r->held_pos + r->held_alen;
    switch (r->pattern) {
    case PATTERN_SPSC: free_to(r, to); break;
    case PATTERN_MPSC:
        zero_record(r, r->held_pos, r->held_alen);
        free_to(r, to);
        break;
    case PATTERN_MPMC: mark_done_and_sweep(r, r->held_pos, r->held_word); break;
    default:
        if (r->lossy) {
            uint64_t m = r->held_seq; /* validated with the copy, unlike the ring now */
            if (r->have_baseline && m > r->last_msgno + 1)
                st_rlx(r->base, r->slot_off + SLOT_MISSED,
                       ld_rlx(r->base, r->slot_off + SLOT_MISSED) + (m - r->last_msgno - 1));
            r->last_msgno = m;
            r->have_baseline = 1;
            st_rlx(r->base, r->slot_off + SLOT_LAST_MSGNO, m);
        }
        r->cursor = to;
        if (r->batch) {
            r->pending = 1;
            break;
        }
        /* Pairs with the producer's acquire load of our cursor in gate(). */
        st_sc(r->base, r->slot_off + SLOT_CURSOR, to);
        if (!r->lossy) shm_notify(r->base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
        break;
    }
}

/* The consumer goes away holding a record it did not release: it was not
 * consumed. spsc, mpsc, broadcast: the cursor never passed it, so the next
 * consumer reads it again. mpmc: it is handed back to the queue exactly as
 * recovery hands back a dead consumer's records (ring_recover_slot). */
void ring_unhold(ring_t *r) {
    if (!r->held) return;
    r->held = 0;
    if (r->pattern != PATTERN_MPMC) return;
    uint64_t w = r->held_word;
    if (cas_sc(r->base, WORD_OFF(r, r->held_pos), &w, rec_with_state(w, ST_READY, 0))) {
        fadd_sc(r->base, OFF_REDELIVER, 1);
        shm_notify(r->base, OFF_DATA_FUTEX, OFF_DATA_WAITERS);
    }
}

/* End of a batch of releases (spsc, mpsc, broadcast): publish once. */
void ring_consumer_flush(ring_t *r) {
    r->batch = 0;
    if (!r->pending) return;
    r->pending = 0;
    if (r->pattern == PATTERN_BROADCAST) {
        st_sc(r->base, r->slot_off + SLOT_CURSOR, r->cursor);
        if (!r->lossy) shm_notify(r->base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
    } else {
        free_to(r, r->cursor);
    }
}

int ring_has_data(ring_t *r) {
    if (ld32_acq(r->base, OFF_BROKEN)) return 1;
    if (ld32_acq(r->base, OFF_EOS) && !in_flight(r)) return 1;
    switch (r->pattern) {
    case PATTERN_MPSC: {
        uint64_t w = ld_acq(r->base, WORD_OFF(r, r->cursor));
        return w != 0 && rec_len(w) > 0 && !quarantined_here(r, r->cursor, w);
    }
    case PATTERN_MPMC: {
        if (ld_rlx(r->base, OFF_REDELIVER) != 0) return 1;
        uint64_t r0 = ld_acq(r->base, OFF_READ_CLAIM);
        uint64_t w = ld_acq(r->base, WORD_OFF(r, r0));
        /* A record of an older lap is the full ring's head, not data. */
        return w != 0 && rec_len(w) > 0 && rec_lap(w) == LAP(r, r0);
    }
    default: return ld_acq(r->base, OFF_TAIL) != r->cursor;
    }
}

int ring_ready_data(void *rp) {
    ring_t *r = rp;
    if (r->cancel && *r->cancel) return 1;
    return ring_has_data(r);
}

/* Broadcast: start reading at the current tail. See gate() for the pairing. */
int ring_consumer_join(ring_t *r) {
    if (r->pattern == PATTERN_SPSC || r->pattern == PATTERN_MPSC) {
        r->cursor = ld_acq(r->base, OFF_HEAD);
        r->cached_tail = r->cursor;
        return RING_OK;
    }
    if (r->pattern != PATTERN_BROADCAST) return RING_OK;
    uint64_t t = ld_sc(r->base, OFF_TAIL);
    st_rlx(r->base, r->slot_off + SLOT_CURSOR, t);
    st32_sc(r->base, r->slot_off + SLOT_STATE, SLOT_ACTIVE);
    fence_sc();
    t = ld_sc(r->base, OFF_TAIL);
    st_sc(r->base, r->slot_off + SLOT_CURSOR, t);
    r->cursor = t;
    r->cached_tail = t;
    r->have_baseline = 0;
    if (r->lossy) {
        /* The number of the last message before our cursor: the count of
         * messages sent, read after the tail. Every message before the tail
         * is counted (their counts were stored before it, pairs with its
         * release store in ring_flush). A message at or past the tail is
         * counted only if latest shows it: commit stores the count with
         * release after latest. So a count read while latest is still
         * before the tail is exact. (Reading the newest record instead
         * fails while a claim overwrites it, and after a partial commit.)
         * If no try succeeds, the first read sets it. */
        for (int i = 0; i < 100; i++) {
            t = ld_acq(r->base, OFF_TAIL);
            uint64_t m = t ? ld_acq(r->base, OFF_MSGNO) : 0;
            if (t && ld_acq(r->base, OFF_LATEST) >= t) continue;
            r->last_msgno = m;
            r->have_baseline = 1;
            break;
        }
        r->cursor = t;
        r->cached_tail = t;
        st_sc(r->base, r->slot_off + SLOT_CURSOR, t);
    }
    return RING_OK;
}

/* ------------------------------------------------------------ recovery -- */

static int other_live_claim(char *base, uint32_t nslots, uint32_t dead, uint64_t pos) {
    for (uint32_t i = 0; i < nslots; i++) {
        if (i == dead) continue;
        uint64_t so = SLOTS_OFFSET + (uint64_t)i * SLOT_SIZE;
        if (ld_acq(base, so + SLOT_PID) == 0) continue;
        if (ld_acq(base, so + SLOT_CLAIM_POS) == pos) return 1;
    }
    return 0;
}

static void pause_ms(long ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* Pads [q, end) of a dead producer's claim: the first word by
 * compare-exchange from what we saw (so a record written meanwhile is left
 * alone), the rest plainly (inside the claim nobody else writes), cut at
 * the end of the ring. */
static int pad_rest(ring_t *r, uint64_t q, uint64_t end, uint64_t seen) {
    uint64_t room = r->cap - (q & r->mask);
    uint64_t n = end - q < room ? end - q : room;
    st_rlx(r->base, SEQ_OFF(r, q), q);
    if (!cas_sc(r->base, WORD_OFF(r, q), &seen,
                rec_word((int32_t)n, REC_PAD, 0, 0, LAP(r, q))))
        return 0;
    for (q += n; q < end; q += n) {
        room = r->cap - (q & r->mask);
        n = end - q < room ? end - q : room;
        put_pad(r, q, n);
    }
    return 1;
}

/* A dead producer's claim in flight (mpsc, mpmc). Its slot says where:
 * position and length, confirmed once its exchange of tail won. The part of
 * the claim not committed becomes padding so consumers go on.
 *
 * A zero word is ambiguous for a moment: it may be a claim nobody wrote, or
 * a record a consumer has just read and zeroed before advancing head, or
 * (unconfirmed claim) the position another producer won and is about to
 * write. Those last a few instructions; a zero that is still there after a
 * short pause, with head not past it, is the dead claim's. */
static int recover_claim(ring_t *r, uint32_t slot) {
    char *base = r->base;
    uint64_t so = r->slot_off;
    uint64_t p = ld_acq(base, so + SLOT_CLAIM_POS);
    uint64_t raw = ld_acq(base, so + SLOT_CLAIM_LEN);
    int confirmed = (raw & CLAIM_CONFIRMED) != 0;
    uint64_t L = raw & ~CLAIM_CONFIRMED, end = p + L;
    if (p == CLAIM_NONE || L < RECORD_HEADER || L > r->cap || L % RECORD_ALIGN) return 0;
    if (ld_acq(base, OFF_TAIL) < end) return 0; /* the exchange never happened */
    for (int attempt = 0; attempt < 4; attempt++) {
        uint64_t h = ld_acq(base, OFF_HEAD);
        if (h >= end) return 0; /* all of it consumed */
        uint64_t q = h > p ? h : p;
        uint64_t w = 0;
        while (q < end) { /* step over what is committed */
            w = ld_acq(base, WORD_OFF(r, q));
            if (w == 0 || rec_len(w) < 0) break;
            uint64_t a = align_up((uint64_t)rec_len(w), RECORD_ALIGN);
            if (rec_lap(w) != LAP(r, q) || q + a > end) return 0; /* not our claim */
            q += a;
        }
        if (q >= end) return 0; /* committed in full */
        if (rec_len(w) < 0) {
            /* A claimed, uncommitted record: the claimer writes it only
             * after confirming, so it is ours if we confirmed, or if we
             * dropped the flag to commit and nobody else claims it. */
            if (!confirmed && other_live_claim(base, r->slot_count, slot, p)) return 0;
            return pad_rest(r, q, end, w);
        }
        if (attempt < 3) {
            pause_ms(2);
            continue;
        }
        if (!confirmed && other_live_claim(base, r->slot_count, slot, p)) return 0;
        if (ld_acq(base, OFF_HEAD) > q) return 0;
        return pad_rest(r, q, end, 0);
    }
    return 0;
}

int ring_recover_slot(char *base, uint64_t size, uint32_t slot) {
    ring_t rr, *r = &rr;
    if (ring_init(r, base, size, slot, 0) != RING_OK) return -1;
    uint64_t so = r->slot_off;
    uint32_t role = ld32_acq(base, so + SLOT_ROLE);
    int fixed = 0;
    if (role == ROLE_PRODUCER && r->multi_producer) {
        fixed += recover_claim(r, slot);
        st_rel(base, so + SLOT_CLAIM_POS, CLAIM_NONE);
        /* Dead, it writes no more into claims revoked from it. */
        for (uint32_t i = 0; i < QUAR_ENTRIES; i++) {
            uint64_t e = OFF_QUAR_ENTRIES + (uint64_t)i * QUAR_ENTRY;
            if (ld_acq(base, e + QUAR_LEN) &&
                ((ld_acq(base, e + QUAR_FLAGS) >> 8) & 0xFFu) == slot + 1) {
                quar_set_done(base, e);
                fixed++;
            }
        }
        if (fixed) shm_notify(base, OFF_DATA_FUTEX, OFF_DATA_WAITERS);
    }
    if (role == ROLE_CONSUMER && r->pattern == PATTERN_MPMC) {
        /* Finish a sweep the dead consumer started. */
        uint64_t p = ld_acq(base, so + SLOT_CLAIM_POS);
        uint64_t L = ld_acq(base, so + SLOT_CLAIM_LEN);
        if (p != CLAIM_NONE && ld_acq(base, OFF_HEAD) == p && L >= RECORD_HEADER &&
            (p & r->mask) + L <= r->cap) {
            if (rec_type(ld_acq(base, WORD_OFF(r, p))) != REC_REVOKED) zero_record(r, p, L);
            st_sc(base, OFF_HEAD, p + L);
            fixed++;
        }
        st_rel(base, so + SLOT_CLAIM_POS, CLAIM_NONE);
        /* It may have died between taking the record at read_claim and
         * moving read_claim on: move it on for it (as any consumer's help
         * step would), so that record is below read_claim like every other
         * taken one. The lap check rejects a word of another lap. */
        uint64_t rc0 = ld_acq(base, OFF_READ_CLAIM);
        uint64_t w0 = ld_acq(base, WORD_OFF(r, rc0));
        if (rec_len(w0) > 0 && check_record(r, rc0, w0, 0) == RING_OK &&
            rec_owner(w0) == slot + 1 && rec_state(w0) == ST_TAKEN) {
            uint64_t e = rc0;
            cas_sc(base, OFF_READ_CLAIM, &e, rc0 + align_up((uint64_t)rec_len(w0), RECORD_ALIGN));
        }
        /* Hand back every record it had taken and not finished. */
        uint64_t q = ld_acq(base, OFF_HEAD), end = ld_acq(base, OFF_READ_CLAIM);
        while (q < end) {
            uint64_t w = ld_acq(base, WORD_OFF(r, q));
            if (rec_len(w) <= 0 || check_record(r, q, w, 0) != RING_OK) break;
            uint64_t a = align_up((uint64_t)rec_len(w), RECORD_ALIGN);
            uint32_t st = rec_state(w);
            if (rec_owner(w) == slot + 1 && (st == ST_TAKEN || st == ST_SWEEP)) {
                if (rec_type(w) != REC_MSG || st == ST_SWEEP) {
                    uint64_t nw = rec_with_state(w, ST_DONE, slot + 1);
                    if (cas_sc(base, WORD_OFF(r, q), &w, nw)) fixed++;
                } else {
                    uint64_t nw = rec_with_state(w, ST_READY, 0);
                    if (cas_sc(base, WORD_OFF(r, q), &w, nw)) {
                        fadd_sc(base, OFF_REDELIVER, 1);
                        fixed++;
                    }
                }
            }
            q += a;
        }
        /* Records now done at head need a sweep; do it as this slot. */
        sweep(r);
        st_rel(base, so + SLOT_CLAIM_POS, CLAIM_NONE);
        shm_notify(base, OFF_DATA_FUTEX, OFF_DATA_WAITERS);
    }
    if (role == ROLE_CONSUMER && r->pattern == PATTERN_BROADCAST) {
        /* Its cursor stops gating the producer. */
        st32_sc(base, so + SLOT_STATE, SLOT_CLOSING);
        shm_notify(base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
        fixed++;
    }
    uint64_t owner = slot + 1;
    uint64_t e = owner;
    if (cas_sc(base, OFF_PRODUCER_OWNER, &e, 0)) fixed++;
    e = owner;
    if (cas_sc(base, OFF_CONSUMER_OWNER, &e, 0)) fixed++;
    return fixed;
}

/* ------------------------------------------------------------ revocation -- */

int ring_revoke_claim(char *base, uint64_t size, uint32_t slot) {
    ring_t rr, *r = &rr;
    if (ring_init(r, base, size, slot, 0) != RING_OK) return -1;
    uint64_t so = r->slot_off;
    if (!r->multi_producer || ld32_acq(base, so + SLOT_ROLE) != ROLE_PRODUCER) return 0;
    uint64_t p = ld_acq(base, so + SLOT_CLAIM_POS);
    uint64_t raw = ld_acq(base, so + SLOT_CLAIM_LEN);
    uint64_t L = raw & ~CLAIM_CONFIRMED, end = p + L;
    /* Only a confirmed claim: its exchange of tail won, and it has not yet
     * committed (the flag is dropped first), so a zero word is one it has
     * not written, never one a consumer zeroed. A producer stopped in the
     * instruction before setting the flag or after dropping it keeps its
     * claim (documented). */
    if (!(raw & CLAIM_CONFIRMED) || p == CLAIM_NONE || p % RECORD_ALIGN ||
        L < RECORD_HEADER || L > r->cap || L % RECORD_ALIGN)
        return 0;
    if (ld_acq(base, OFF_TAIL) < end) return 0;  /* its exchange of tail never won */
    if (ld_acq(base, OFF_HEAD) >= end) return 0; /* consumed */
    if ((p & r->mask) + L > r->cap) return 0; /* claims never straddle the end */
    uint64_t prec = p;
    uint64_t w = ld_acq(base, WORD_OFF(r, prec));
    if (w != 0 && !(rec_len(w) < 0 && rec_type(w) == REC_MSG && rec_lap(w) == LAP(r, prec) &&
                    align_up((uint64_t)-rec_len(w), RECORD_ALIGN) == L))
        return 0; /* committed (or not this claim's) */
    /* Still the same confirmed claim after reading the word: the flag and
     * position are not a mix of two claims, and the word is this claim's. */
    if (ld_acq(base, so + SLOT_CLAIM_LEN) != raw || ld_acq(base, so + SLOT_CLAIM_POS) != p)
        return 0;
    uint64_t e = 0;
    for (uint32_t i = 0; i < QUAR_ENTRIES && !e; i++) {
        uint64_t c = OFF_QUAR_ENTRIES + (uint64_t)i * QUAR_ENTRY;
        if (!ld_acq(base, c + QUAR_LEN)) e = c;
    }
    if (!e) return -2;
    /* The entry is published before the record word changes (see gate). */
    st_rlx(base, e + QUAR_POS, p);
    st_rlx(base, e + QUAR_FLAGS, (uint64_t)(slot + 1) << 8);
    st_rel(base, e + QUAR_LEN, L);
    fadd_sc(base, OFF_QUAR_COUNT, 1);
    st_rlx(base, SEQ_OFF(r, prec), prec);
    uint64_t rw = rec_word((int32_t)(end - prec), REC_REVOKED, 0, 0, LAP(r, prec));
    if (!cas_sc(base, WORD_OFF(r, prec), &w, rw)) {
        /* It committed (or claimed) meanwhile: it was not stuck after all. */
        st_rlx(base, e + QUAR_FLAGS, 0);
        st_rel(base, e + QUAR_LEN, 0);
        fadd_sc(base, OFF_QUAR_COUNT, (uint64_t)-1);
        shm_notify(base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
        return 0;
    }
    shm_notify(base, OFF_DATA_FUTEX, OFF_DATA_WAITERS);
    return 1;
}

static void zero_span(ring_t *r, uint64_t pos, uint64_t len) {
    while (len) {
        uint64_t idx = pos & r->mask;
        uint64_t n = r->cap - idx < len ? r->cap - idx : len;
        memset(r->data + idx, 0, n);
        pos += n;
        len -= n;
    }
}

int ring_lift_quarantine(char *base, uint64_t size) {
    ring_t rr, *r = &rr;
    if (ring_init(r, base, size, 0, 0) != RING_OK) return -1;
    if (!r->multi_producer || !ld_acq(base, OFF_QUAR_COUNT)) return 0;
    int lifted = 0;
    for (uint32_t i = 0; i < QUAR_ENTRIES; i++) {
        uint64_t e = OFF_QUAR_ENTRIES + (uint64_t)i * QUAR_ENTRY;
        uint64_t L = ld_acq(base, e + QUAR_LEN);
        if (!L) continue;
        uint64_t p = ld_acq(base, e + QUAR_POS), end = p + L;
        int sane = L >= RECORD_HEADER && !(p % RECORD_ALIGN) && (p & r->mask) + L <= r->cap;
        uint64_t prec = p;
        uint64_t w = sane ? ld_acq(base, WORD_OFF(r, prec)) : 0;
        /* An entry without its revoked record was left by a supervisor that
         * died between publishing it and revoking (or between zeroing and
         * freeing it): nothing is quarantined, free it. */
        int live = sane && rec_type(w) == REC_REVOKED && rec_lap(w) == LAP(r, prec) &&
                   rec_len(w) > 0 && prec + (uint64_t)rec_len(w) == end;
        if (live) {
            if (!(ld_acq(base, e + QUAR_FLAGS) & QUAR_DONE)) continue; /* still writing */
            if (ld_acq(base, OFF_HEAD) <= prec) continue; /* not yet passed */
            /* Done on both sides: nobody reads or writes these bytes until
             * the entry is free (producers are gated below them). */
            zero_span(r, p, L);
            fence_rel();
        }
        st_rlx(base, e + QUAR_FLAGS, 0);
        st_rlx(base, e + QUAR_POS, 0);
        st_rel(base, e + QUAR_LEN, 0);
        fadd_sc(base, OFF_QUAR_COUNT, (uint64_t)-1);
        lifted++;
    }
    if (lifted) shm_notify(base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
    return lifted;
}
