/*
 * ring/consume.c - the consumer side of every pattern: peek (one reader per
 * pattern: tail for spsc and broadcast, the record word for mpsc, a
 * compare-exchange on it for mpmc), release, the mpmc sweep of head, lossy
 * validation, and joining a ring.
 */
#include <string.h>

#include "atomics.h"
#include "ring/internal.h"
#include "wait.h"

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

static void free_to(ring_t *r, uint64_t to);

/* An untethered lossless reader that jumped to the newest record gates the
 * producer from there (lossy readers gate nothing). */
static void publish_jump(ring_t *r) {
    if (r->lossy || !r->untether_ns) return;
    /* SYNC(cursor): pairs with the producer's acquire of our cursor in gate(). */
    st_sc(r->base, r->slot_off + SLOT_CURSOR, r->cursor);
    shm_notify(r->base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
}

/* Lossy broadcast, overrun at c: ring_peek jumps to the newest record, unless
 * we are there already; then that record is itself being overwritten (or the
 * counters are garbage) and nothing is readable until the producer commits:
 * jumping again would spin forever. */
static int lapped(ring_t *r, uint64_t c) {
    /* SYNC(latest): see ring_commit. */
    return c == ld_acq(r->base, OFF_LATEST) ? RING_AGAIN : RING_LAPPED;
}

/* spsc and broadcast: the single producer publishes with tail. */
static int peek_tail(ring_t *r, const char **payload, uint64_t *len) {
    for (;;) {
        uint64_t c = r->cursor;
        if (c == r->cached_tail) {
            /* SYNC(tail): Pairs with the producer's release store of tail in commit. */
            r->cached_tail = ld_acq(r->base, OFF_TAIL);
            if (c == r->cached_tail) return RING_AGAIN;
        }
        if (r->cached_tail < c || r->cached_tail - c > r->cap) {
            if (r->validating) return lapped(r, c);
            return corrupt(r, "tail and cursor more than a ring apart");
        }
        /* Lossy (or untethered): a record the producer is overwriting is not
         * read at all (an early look; ring_validate after the copy is the
         * seqlock). */
        if (r->validating && ld_rlx(r->base, OFF_INTENT) > c + r->cap) return lapped(r, c);
        uint64_t w = ld_rlx(r->base, WORD_OFF(r, c));
        int rc = check_record(r, c, w, r->cached_tail);
        if (rc != RING_OK) return r->validating ? lapped(r, c) : rc;
        if (r->pattern == PATTERN_SPSC && rec_type(w) == REC_MSG &&
            ld_rlx(r->base, SEQ_OFF(r, c)) != c)
            return corrupt(r, "record sequence does not match its position");
        if (rec_type(w) == REC_PAD) {
            uint64_t to = c + align_up((uint64_t)rec_len(w), RECORD_ALIGN);
            if (r->validating && ring_validate(r) != RING_OK) return RING_LAPPED;
            if (r->pattern == PATTERN_SPSC) {
                free_to(r, to);
            } else {
                r->cursor = to;
                /* SYNC(cursor): release of our cursor past padding; pairs with the producer's
                 * acquire of it in gate(). Reading ahead: the cursor gating the producer
                 * moves when the records before the padding are settled (ring/ahead.c). */
                if (r->ahead) continue;
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
        /* Reading ahead of head by a whole ring: the word there is head's record (ours, read
         * ahead and not settled), not a new one (ring/ahead.c). Head is ours. */
        if (r->ahead && c - ld_rlx(r->base, OFF_HEAD) >= r->cap) return RING_AGAIN;
        /* SYNC(commit), SYNC(pad): Pairs with the producer's release store of the committed
         * word. */
        uint64_t w = ld_acq(r->base, WORD_OFF(r, c));
        if (w == 0 || rec_len(w) < 0 || quarantined_here(r, c, w)) return RING_AGAIN;
        int rc = check_record(r, c, w, 0);
        if (rc != RING_OK) return rc;
        if (ld_rlx(r->base, SEQ_OFF(r, c)) != c)
            return corrupt(r, "record sequence does not match its position");
        if (rec_type(w) != REC_MSG) {
            uint64_t alen = align_up((uint64_t)rec_len(w), RECORD_ALIGN);
            /* A revoked claim stays as it is: its producer may still write
             * into it (see "revocation"); the supervisor zeroes it later.
             * Reading ahead, padding is zeroed when head passes it (ring/ahead.c):
             * a zero word at head would stop the next consumer. */
            if (rec_type(w) == REC_PAD && !r->ahead) zero_record(r, c, alen);
            free_to(r, c + alen);
            continue;
        }
        hold(r, c, w, payload, len);
        return RING_OK;
    }
}

/* mpmc, after a compare-exchange of the word at pos from w to mine won: true
 * if the record is pos's own (its seq word). Else it is a later lap's record
 * whose word equalled w (the lap field is 11 bits, layout.h): it is given back
 * unchanged and the caller looks again. The seq word is written before the
 * word is published, and not rewritten while the record is taken. */
static int seq_is(ring_t *r, uint64_t pos, uint64_t w, uint64_t mine) {
    if (ld_rlx(r->base, SEQ_OFF(r, pos)) == pos) return 1;
    /* SYNC(mpmc-take): the record word is handed between consumers, sweepers and recovery by
     * compare-exchange (mpmc); pairs with the other compare-exchanges of it. */
    cas_sc(r->base, WORD_OFF(r, pos), &mine, w);
    return 0;
}

/* mpmc: advance head over every done record at it, zeroing each. */
static void sweep(ring_t *r) {
    int swept = 0;
    for (;;) {
        /* SYNC(done-sweep), SYNC(head): seq-cst loads of head, then of its word; pair with
         * mark_done_and_sweep's seq-cst store of a done word before its own sweep (one of the two
         * sees the other), and with other sweepers' stores of head. */
        uint64_t h = ld_sc(r->base, OFF_HEAD);
        uint64_t w = ld_sc(r->base, WORD_OFF(r, h));
        if (rec_len(w) <= 0 || rec_state(w) != ST_DONE || rec_lap(w) != LAP(r, h)) break;
        uint64_t alen = align_up((uint64_t)rec_len(w), RECORD_ALIGN);
        if ((h & r->mask) + alen > r->cap) break; /* corrupt: leave it to readers */
        /* SYNC(mpmc-take): the record word is handed between consumers, sweepers and recovery by
         * compare-exchange (mpmc); pairs with the other compare-exchanges of it (peek_mpmc,
         * take_redelivered, sweep, ring_unhold, ring_recover_slot). */
        uint64_t swept_w = rec_with_state(w, ST_SWEEP, r->slot + 1);
        if (!cas_sc(r->base, WORD_OFF(r, h), &w, swept_w)) break;
        if (ld_rlx(r->base, SEQ_OFF(r, h)) != h) {
            /* A later lap's record with the same word (the lap field is 11 bits, layout.h):
             * head moved on while we looked. Give it back as it was, then look again (a
             * sweeper that saw our mark and stopped is covered: we read head again). */
            uint64_t mine = swept_w;
            /* SYNC(mpmc-take): as above. */
            cas_sc(r->base, WORD_OFF(r, h), &mine, w);
            /* SYNC(head): as above. Head still there: a corrupt seq, left to readers. */
            if (ld_sc(r->base, OFF_HEAD) == h) break;
            continue;
        }
        /* Sweep intent, for recovery if we die half-way through zeroing. */
        st_rlx(r->base, r->slot_off + SLOT_CLAIM_LEN, alen);
        /* SYNC(sweep-intent): release after its length; pairs with ring_recover_slot's acquire of
         * a dead consumer's claim position. */
        st_rel(r->base, r->slot_off + SLOT_CLAIM_POS, h);
        if (rec_type(w) != REC_REVOKED) zero_record(r, h, alen); /* see "revocation" */
        /* SYNC(head), SYNC(done-sweep): Pairs with the producer's acquire load of head in
         * gate(). */
        st_sc(r->base, OFF_HEAD, h + alen);
        /* SYNC(sweep-intent): the sweep is done. */
        st_rel(r->base, r->slot_off + SLOT_CLAIM_POS, CLAIM_NONE);
        swept = 1;
    }
    if (swept) shm_notify(r->base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
}

static int mark_done_and_sweep(ring_t *r, uint64_t pos, uint64_t taken) {
    uint64_t w = taken;
    /* SYNC(done-sweep), SYNC(mpmc-take): Seq-cst: pairs with the sweeper's seq-cst store of head
     * followed by its load of this word. One of us sees the other, so no done record is left
     * behind at head with nobody to sweep it. A compare-exchange from the word we took: if the
     * supervisor revoked our lease (ring/lease.c) the record is no longer ours, and whatever
     * another consumer has made of it since is left alone. */
    if (!cas_sc(r->base, WORD_OFF(r, pos), &w, rec_with_state(taken, ST_DONE, r->slot + 1)))
        return RING_LEASE;
    sweep(r);
    return RING_OK;
}

/* mpmc, records handed back by recovery: they sit below read_claim. */
static int take_redelivered(ring_t *r, const char **payload, uint64_t *len) {
    /* SYNC(head): acquire of head; pairs with the seq-cst stores of head by the consumer (free_to)
     * or a sweeper (sweep, recovery), made after the freed bytes were read and zeroed. */
    uint64_t q = ld_acq(r->base, OFF_HEAD);
    /* SYNC(read-claim): read_claim moves by compare-exchange only (peek_mpmc, ring_recover_slot);
     * this pairs with those. */
    uint64_t end = ld_acq(r->base, OFF_READ_CLAIM);
    while (q < end) {
        /* SYNC(mpmc-take): acquire of a word recovery or ring_unhold handed back by compare-
         * exchange. */
        uint64_t w = ld_acq(r->base, WORD_OFF(r, q));
        /* SYNC(head): acquire of head; pairs with the seq-cst stores of head by the consumer
         * (free_to) or a sweeper (sweep, recovery), made after the freed bytes were read and
         * zeroed. The word is of q's lap only while head has not passed q. */
        if (ld_acq(r->base, OFF_HEAD) > q) return RING_AGAIN;
        if (rec_len(w) <= 0 || check_record(r, q, w, 0) != RING_OK) return RING_AGAIN;
        uint64_t alen = align_up((uint64_t)rec_len(w), RECORD_ALIGN);
        if (rec_state(w) == ST_READY && rec_type(w) == REC_MSG) {
            uint64_t taken = rec_with_state(w, ST_TAKEN, r->slot + 1);
            /* SYNC(mpmc-take): the record word is handed between consumers, sweepers and recovery
             * by compare-exchange (mpmc); pairs with the other compare-exchanges of it (peek_mpmc,
             * take_redelivered, sweep, ring_unhold, ring_recover_slot). */
            if (cas_sc(r->base, WORD_OFF(r, q), &w, taken)) {
                if (!seq_is(r, q, w, taken)) return RING_AGAIN;
                /* SYNC(redeliver): a count of handed-back records, read relaxed as a hint by
                 * peek_mpmc and ring_has_data; pairs with its adds in ring_unhold and
                 * ring_recover_slot (the records themselves are taken by compare-exchange). */
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
        /* SYNC(read-claim): read_claim moves by compare-exchange only (peek_mpmc,
         * ring_recover_slot); this pairs with those. */
        uint64_t r0 = ld_acq(r->base, OFF_READ_CLAIM);
        /* SYNC(commit): acquire of the record word; pairs with the producer's compare-exchange in
         * ring_commit (or the padding's in ring_claim and ring_abort). */
        uint64_t w = ld_acq(r->base, WORD_OFF(r, r0));
        /* SYNC(read-claim): read_claim moves by compare-exchange only (peek_mpmc,
         * ring_recover_slot); this pairs with those. If read_claim has not moved, the word is of
         * r0's lap: recycling r0 needs head, hence read_claim, past it (ring.h). */
        if (ld_acq(r->base, OFF_READ_CLAIM) != r0) continue;
        if (w == 0 || rec_len(w) < 0) return RING_AGAIN;
        int rc = check_record(r, r0, w, 0);
        if (rc != RING_OK) {
            /* SYNC(tail-claim): Ring exactly full (tail == head + capacity): nothing is claimed at
             * r0 yet and its bytes are still the record at head, a lap older, taken and not yet
             * done. A claim at r0 is made after that record was zeroed (producer: acquire of head,
             * then the CAS of tail we acquire here), so a word read after seeing such a claim is
             * never the old record. */
            if (ld_acq(r->base, OFF_TAIL) == r0) return RING_AGAIN;
            /* SYNC(commit): the word again, as above. */
            if (ld_acq(r->base, WORD_OFF(r, r0)) != w) continue;
            return rc;
        }
        uint64_t alen = align_up((uint64_t)rec_len(w), RECORD_ALIGN);
        if (rec_state(w) != ST_READY) {
            /* SYNC(read-claim): read_claim moves by compare-exchange only (peek_mpmc,
             * ring_recover_slot); this pairs with those. */
            cas_sc(r->base, OFF_READ_CLAIM, &r0, r0 + alen); /* help */
            continue;
        }
        uint64_t taken = rec_with_state(w, ST_TAKEN, r->slot + 1);
        /* SYNC(mpmc-take): the record word is handed between consumers, sweepers and recovery by
         * compare-exchange (mpmc); pairs with the other compare-exchanges of it (peek_mpmc,
         * take_redelivered, sweep, ring_unhold, ring_recover_slot). */
        if (!cas_sc(r->base, WORD_OFF(r, r0), &w, taken)) continue;
        if (!seq_is(r, r0, w, taken)) {
            /* SYNC(read-claim): as above. Still at r0: not a later lap but a corrupt seq. */
            if (ld_acq(r->base, OFF_READ_CLAIM) == r0)
                return corrupt(r, "record sequence does not match its position");
            continue;
        }
        uint64_t e = r0;
        /* SYNC(read-claim): read_claim moves past the record we took. */
        cas_sc(r->base, OFF_READ_CLAIM, &e, r0 + alen);
        if (rec_type(taken) != REC_MSG) {
            (void)mark_done_and_sweep(r, r0, taken); /* padding: never leased */
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
    /* SYNC(read-claim): read_claim moves by compare-exchange only (peek_mpmc, ring_recover_slot);
     * this pairs with those. */
    uint64_t at = r->pattern == PATTERN_MPSC ? r->cursor : ld_acq(r->base, OFF_READ_CLAIM);
    /* SYNC(tail-claim): acquire of tail; pairs with the claims' compare-exchange of tail in
     * ring_claim. */
    return ld_acq(r->base, OFF_TAIL) > at;
}

int ring_peek(ring_t *r, const char **payload, uint64_t *len) {
    if (r->held) {
        *payload = r->data + (r->held_pos & r->mask) + RECORD_HEADER;
        *len = r->held_len;
        return RING_OK;
    }
    /* SYNC(untether): the producer stopped waiting for us (ring/untether.c); pairs with its
     * compare-exchange of our state. Gate it again before reading on. */
    if (r->untether_ns && ld32_acq(r->base, r->slot_off + SLOT_STATE) == SLOT_UNTETHERED)
        ring_retether(r);
    int rc;
    switch (r->pattern) {
    case PATTERN_MPSC: rc = peek_mpsc(r, payload, len); break;
    case PATTERN_MPMC: rc = peek_mpmc(r, payload, len); break;
    default: rc = peek_tail(r, payload, len); break;
    }
    if (rc == RING_LAPPED) {
        /* SYNC(latest): see ring_commit. Lossy broadcast overran us: jump to the newest record. */
        uint64_t latest = ld_acq(r->base, OFF_LATEST);
        r->cursor = latest;
        r->cached_tail = latest;
        publish_jump(r);
        return RING_LAPPED;
    }
    if (rc != RING_AGAIN) return rc;
    /* SYNC(broken): acquire of the broken flag; its one writer would be _core.store32 (py/module.c
     * m_store32): nothing in the package stores it today. */
    if (ld32_acq(r->base, OFF_BROKEN)) return RING_BROKEN;
    /* SYNC(eos): acquire of end-of-stream; pairs with its seq-cst store by _core.store32
     * (py/module.c m_store32) in shmring/_channel (close_send). End-of-stream only once drained:
     * look again after seeing the flag, since the last messages may have been committed just before
     * it. */
    if (ld32_sc(r->base, OFF_EOS)) {
        rc = r->pattern == PATTERN_MPSC   ? peek_mpsc(r, payload, len)
             : r->pattern == PATTERN_MPMC ? peek_mpmc(r, payload, len)
                                          : peek_tail(r, payload, len);
        if (rc == RING_AGAIN) return in_flight(r) ? RING_AGAIN : RING_EOS;
        if (rc == RING_LAPPED) return RING_LAPPED;
    }
    return rc;
}

/* Lossy broadcast (and lossless with untether_ns): after copying the held
 * record, was it overwritten? */
int ring_validate(ring_t *r) {
    if (!r->validating) return RING_OK;
    /* SYNC(intent): Seqlock reader. Pairs with the release fence after the producer's intent store:
     * if our copy saw any overwriting byte, we see its intent. */
    fence_acq();
    uint64_t intent = ld_rlx(r->base, OFF_INTENT);
    uint64_t pos = r->held ? r->held_pos : r->cursor;
    if (intent <= pos + r->cap) return RING_OK;
    /* Overrun: drop the copy and jump to the newest record. */
    r->held = 0;
    /* SYNC(latest): see ring_commit. */
    r->cursor = ld_acq(r->base, OFF_LATEST);
    r->cached_tail = r->cursor;
    publish_jump(r);
    return RING_LAPPED;
}

static void free_to(ring_t *r, uint64_t to) {
    r->cursor = to;
    if (r->ahead) return; /* head moves when what is before it is settled (ring/ahead.c) */
    if (r->batch) {
        r->pending = 1;
        return;
    }
    /* SYNC(head): Pairs with the producer's acquire load of head in gate(): our reads (and zeroing)
     * of the freed bytes happen before it reuses them. */
    st_sc(r->base, OFF_HEAD, to);
    ring_notify_room(r, to);
}

/* Room to wake (ring/produce.c): wake the producers waiting for room once a
 * quarter of the ring is free, at most once per eighth freed. */
void ring_notify_room(ring_t *r, uint64_t head) {
    if (!ring_room_to_wake(r)) {
        /* SYNC(waiters): after the seq-cst store of head: no fence needed (shm_notify_sc). */
        shm_notify_sc(r->base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
        return;
    }
    /* SYNC(waiters): after the seq-cst store of head, a seq-cst load of the count needs no fence
     * (shm_notify_sc in wait.c says why); pairs with the add and fence in shm_wait. */
    if (ld32_sc(r->base, OFF_SPACE_WAITERS) == 0) return;
    /* SYNC(tail-claim): acquire of tail; pairs with the claims' compare-exchange of tail in
     * ring_claim (and the spsc producer's store of it in ring_commit). Stale, it only makes the
     * ring look emptier: a wake-up too early, never one missed. */
    uint64_t t = ld_acq(r->base, OFF_TAIL);
    if (t >= head && r->cap - (t - head) < r->cap / 4) return; /* not a quarter free yet */
    if (r->woke_at && head - r->woke_at < r->cap / 8) return; /* woke them an eighth ago */
    r->woke_at = head;
    shm_wake(r->base, OFF_SPACE_FUTEX);
}

int ring_release(ring_t *r) {
    if (!r->held) return RING_OK;
    r->held = 0;
    if (r->pattern == PATTERN_MPMC &&
        mark_done_and_sweep(r, r->held_pos, r->held_word) != RING_OK)
        return RING_LEASE; /* not consumed by us: not counted */
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
    case PATTERN_MPMC: break; /* done above */
    default:
        if (r->validating) ring_count_missed(r);
        r->cursor = to;
        if (r->batch) {
            r->pending = 1;
            break;
        }
        /* SYNC(cursor): Pairs with the producer's acquire load of our cursor in gate(). */
        st_sc(r->base, r->slot_off + SLOT_CURSOR, to);
        /* SYNC(waiters): after the seq-cst store of the cursor (shm_notify_sc). */
        if (!r->lossy) shm_notify_sc(r->base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
        break;
    }
    return RING_OK;
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
    /* SYNC(mpmc-take): the record word is handed between consumers, sweepers and recovery by
     * compare-exchange (mpmc); pairs with the other compare-exchanges of it (peek_mpmc,
     * take_redelivered, sweep, ring_unhold, ring_recover_slot). */
    if (cas_sc(r->base, WORD_OFF(r, r->held_pos), &w, rec_with_state(w, ST_READY, 0))) {
        /* SYNC(redeliver): see take_redelivered. */
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
        /* SYNC(cursor): the batch's cursor; pairs with the producer's acquire of it in gate(). */
        st_sc(r->base, r->slot_off + SLOT_CURSOR, r->cursor);
        /* SYNC(waiters): after the seq-cst store of the cursor (shm_notify_sc). */
        if (!r->lossy) shm_notify_sc(r->base, OFF_SPACE_FUTEX, OFF_SPACE_WAITERS);
    } else {
        free_to(r, r->cursor);
    }
}

int ring_has_data(ring_t *r) {
    /* SYNC(broken): acquire of the broken flag; its one writer would be _core.store32 (py/module.c
     * m_store32): nothing in the package stores it today. */
    if (ld32_acq(r->base, OFF_BROKEN)) return 1;
    /* SYNC(eos): acquire of end-of-stream; pairs with its seq-cst store by _core.store32
     * (py/module.c m_store32) in shmring/_channel (close_send). */
    if (ld32_acq(r->base, OFF_EOS) && !in_flight(r)) return 1;
    switch (r->pattern) {
    case PATTERN_MPSC: {
        /* Read ahead by a whole ring: nothing new can come before we settle (see peek_mpsc). */
        if (r->ahead_n && r->cursor - ld_rlx(r->base, OFF_HEAD) >= r->cap) return 0;
        /* SYNC(commit): acquire of the record word; pairs with its publication in ring_commit. */
        uint64_t w = ld_acq(r->base, WORD_OFF(r, r->cursor));
        return w != 0 && rec_len(w) > 0 && !quarantined_here(r, r->cursor, w);
    }
    case PATTERN_MPMC: {
        if (ld_rlx(r->base, OFF_REDELIVER) != 0) return 1;
        /* SYNC(read-claim): read_claim moves by compare-exchange only (peek_mpmc,
         * ring_recover_slot); this pairs with those. */
        uint64_t r0 = ld_acq(r->base, OFF_READ_CLAIM);
        /* SYNC(commit): as for mpsc. */
        uint64_t w = ld_acq(r->base, WORD_OFF(r, r0));
        /* A record of an older lap is the full ring's head, not data. */
        return w != 0 && rec_len(w) > 0 && rec_lap(w) == LAP(r, r0);
    }
    /* SYNC(tail): acquire of tail; pairs with its release in ring_flush. */
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
        /* SYNC(head): acquire of head; pairs with the seq-cst stores of head by the consumer
         * (free_to) or a sweeper (sweep, recovery), made after the freed bytes were read and
         * zeroed. */
        r->cursor = ld_acq(r->base, OFF_HEAD);
        r->cached_tail = r->cursor;
        return RING_OK;
    }
    if (r->pattern != PATTERN_BROADCAST) return RING_OK;
    /* SYNC(join), SYNC(tail): broadcast: a first cursor at tail, then our state ACTIVE, a fence,
     * and tail again. Pairs with gate()'s fence before it scans states and cursors: either the
     * producer sees this slot, or the tail we read after the fence is at least as new as the one
     * it gates by. */
    uint64_t t = ld_sc(r->base, OFF_TAIL);
    st_rlx(r->base, r->slot_off + SLOT_CURSOR, t);
    /* SYNC(slot-state), SYNC(join): pairs with gate()'s acquire of our state. */
    st32_sc(r->base, r->slot_off + SLOT_STATE, SLOT_ACTIVE);
    fence_sc();
    /* SYNC(join), SYNC(tail): tail after the fence. */
    t = ld_sc(r->base, OFF_TAIL);
    /* SYNC(cursor): pairs with the producer's acquire of our cursor in gate(). */
    st_sc(r->base, r->slot_off + SLOT_CURSOR, t);
    r->cursor = t;
    r->cached_tail = t;
    r->have_baseline = 0;
    if (r->validating) {
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
            /* SYNC(tail), SYNC(msgno), SYNC(latest): tail, then the count (its release in
             * ring_commit), then latest (see ring_commit). */
            t = ld_acq(r->base, OFF_TAIL);
            uint64_t m = t ? ld_acq(r->base, OFF_MSGNO) : 0;
            if (t && ld_acq(r->base, OFF_LATEST) >= t) continue;
            r->last_msgno = m;
            r->have_baseline = 1;
            break;
        }
        r->cursor = t;
        r->cached_tail = t;
        /* SYNC(cursor): as above. */
        st_sc(r->base, r->slot_off + SLOT_CURSOR, t);
    }
    return RING_OK;
}

/* An adopted durable subscription: the slot's cursor (the oldest record its
 * dead holder had not settled) is where reading goes on; the slot still
 * gates the producer there (its state was never changed), so nothing at or
 * past it was overwritten. Counts go on from the slot's. A validating reader
 * (untethered) has no baseline message number: its first read sets it. */
int ring_consumer_resume(ring_t *r) {
    if (r->pattern != PATTERN_BROADCAST) return RING_AGAIN;
    /* SYNC(cursor): the dead holder's last store of its cursor; the adopter won the pid word by
     * compare-exchange after it. */
    uint64_t c = ld_acq(r->base, r->slot_off + SLOT_CURSOR);
    r->cursor = c;
    r->cached_tail = c;
    r->have_baseline = 0;
    r->messages = ld_rlx(r->base, r->slot_off + SLOT_MESSAGES);
    r->bytes = ld_rlx(r->base, r->slot_off + SLOT_BYTES);
    return RING_OK;
}

void ring_sweep(ring_t *r) { sweep(r); }
