/*
 * ring/produce.c - the producer side of every pattern: the gate (how far a
 * producer may write), claim, commit, abort and flush. See ring.h for the
 * patterns and layout.h for the bytes.
 */
#include <string.h>

#include "atomics.h"
#include "ring/internal.h"
#include "wait.h"


/* The lowest start of a quarantined (revoked, not yet lifted) claim, or h.
 * An entry that head has run more than a ring past is garbage, not a
 * quarantine (a live one holds every producer, so head, below pos + cap). */
static uint64_t quarantine_floor(char *base, uint64_t h, uint64_t cap) {
    uint64_t m = h;
    for (uint32_t i = 0; i < QUAR_ENTRIES; i++) {
        uint64_t e = OFF_QUAR_ENTRIES + (uint64_t)i * QUAR_ENTRY;
        /* SYNC(quar-entry), SYNC(quar-lift): acquire of an entry's length before its other words;
         * pairs with its release in ring_revoke_claim (published after position and flags). A free
         * entry (length 0) pairs with the release in ring_lift_quarantine, after its bytes were
         * zeroed. */
        if (!ld_acq(base, e + QUAR_LEN)) continue;
        uint64_t p = ld_acq(base, e + QUAR_POS);
        if (p < m && p + cap >= h) m = p;
    }
    return m;
}

static uint64_t gate(ring_t *r) {
    if (r->pattern != PATTERN_BROADCAST) {
        /* SYNC(head): Pairs with the consumer's (or sweeper's) release store of head, made after it
         * finished reading and zeroing the freed bytes. */
        uint64_t h = ld_acq(r->base, OFF_HEAD);
        /* SYNC(quar-count): pairs with the seq-cst add to the count in ring_revoke_claim. After
         * head: a head past a revoked record was stored after the consumer read that record, which
         * the revoker wrote after publishing its quarantine entry (ring_revoke_claim). */
        if (r->multi_producer && ld_acq(r->base, OFF_QUAR_COUNT))
            h = quarantine_floor(r->base, h, r->cap);
        return h + r->cap;
    }
    if (r->lossy) return UINT64_MAX;
    /* SYNC(join): Pairs with the fence in ring_consumer_join: a consumer that joined after this
     * scan read a tail at least as new as ours. */
    fence_sc();
    uint64_t m = r->tail_local;
    uint32_t used = ring_slots_used(r->base, r->slot_count); /* slots past it are free */
    for (uint32_t i = 0; i < used; i++) {
        uint64_t so = SLOTS_OFFSET + (uint64_t)i * SLOT_SIZE;
        /* SYNC(slot-state): acquire of a slot's role and state; pairs with the seq-cst stores of
         * the state in ring_consumer_join and recovery, and of role and state by _core.store32
         * (py/module.c m_store32) in shmring/_region and shmring/_channel. */
        if (ld32_acq(r->base, so + SLOT_ROLE) != ROLE_CONSUMER) continue;
        if (ld32_acq(r->base, so + SLOT_STATE) != SLOT_ACTIVE) continue;
        /* SYNC(cursor): Pairs with the consumer's release store of its cursor. */
        uint64_t c = ld_acq(r->base, so + SLOT_CURSOR);
        if (c < m) m = c;
    }
    return m + r->cap;
}

uint64_t ring_gate(ring_t *r) { return gate(r); }

int ring_has_space(ring_t *r, uint64_t reclen) {
    /* SYNC(broken), SYNC(eos): the flags' writers: see ring_claim and ring_peek. Broken or closed
     * for sending: a blocked sender wakes to say so. */
    if (ld32_acq(r->base, OFF_BROKEN) || ld32_acq(r->base, OFF_EOS)) return 1;
    /* SYNC(tail-claim): acquire of tail; pairs with the claims' compare-exchange of tail in
     * ring_claim. */
    uint64_t t = r->multi_producer ? ld_acq(r->base, OFF_TAIL) : r->tail_local;
    uint64_t idx = t & r->mask;
    uint64_t pad = idx + reclen > r->cap ? r->cap - idx : 0;
    if (t + pad + reclen <= r->limit) return 1;
    r->limit = gate(r);
    if (t + pad + reclen > r->limit && r->untether_ns)
        r->limit = ring_untether(r, t + pad + reclen, r->limit);
    return t + pad + reclen <= r->limit;
}

/* Room to wake. A full spsc or mpsc ring whose consumer woke the producers
 * at every record it freed cost that consumer a futex wake-up (a system
 * call) per record while they slept, and woke producers that found room for
 * one record and slept again: fan-in 4->1 on two cores ran at 1.9 M msgs/s
 * with the consumer spending most of its CPU in futex_wake. So a producer
 * that has to wait asks for a quarter of the ring (or its record, if
 * larger) during its first ROOM_WINDOW_NS, and the consumer wakes waiting
 * producers only when a quarter is free, at most once per eighth of the
 * ring it frees. Nothing waits on that for long: a sleeping producer looks
 * again after ROOM_NAP_NS by itself (doubling while it waits, to 32 ms:
 * wait.c) and, past the window, takes room for its own record, so a
 * consumer that stops reading with a little room free (or a wake-up it
 * skipped) costs a producer at most a nap. Other patterns
 * wake at every release, as before. */
#define ROOM_WINDOW_NS 1000000
#define ROOM_NAP_NS 2000000

int ring_room_to_wake(const ring_t *r) {
    return r->pattern == PATTERN_SPSC || r->pattern == PATTERN_MPSC;
}

int64_t ring_space_nap_ns(const ring_t *r) { return ring_room_to_wake(r) ? ROOM_NAP_NS : 0; }

void ring_space_wait_begins(ring_t *r) {
    if (ring_room_to_wake(r)) r->room_until = mono_ns() + ROOM_WINDOW_NS;
}

void ring_space_wait_ends(ring_t *r) { r->room_until = 0; }

/* A quarter of the ring is free for this producer (wrap padding aside). */
static int quarter_free(ring_t *r) {
    /* SYNC(tail-claim): acquire of tail; pairs with the claims' compare-exchange of tail in
     * ring_claim. */
    uint64_t t = r->multi_producer ? ld_acq(r->base, OFF_TAIL) : r->tail_local;
    if (t <= r->limit && r->limit - t >= r->cap / 4) return 1;
    r->limit = gate(r);
    return t <= r->limit && r->limit - t >= r->cap / 4;
}

int ring_ready_space(void *rp) {
    ring_t *r = rp;
    if (r->cancel && *r->cancel) return 1;
    if (!ring_has_space(r, r->want)) return 0;
    /* SYNC(broken), SYNC(eos): the flags' writers: see ring_claim and ring_peek. Broken or closed
     * for sending: a blocked sender wakes at once to say so. */
    if (ld32_acq(r->base, OFF_BROKEN) || ld32_acq(r->base, OFF_EOS)) return 1;
    if (!r->room_until || r->want >= r->cap / 4) return 1;
    if (mono_ns() >= r->room_until) {
        r->room_until = 0; /* past the window: room for the record will do */
        return 1;
    }
    return quarter_free(r);
}

int ring_claim(ring_t *r, uint64_t len, char **payload) {
    if (len > r->max_message) return RING_TOOBIG;
    /* SYNC(broken): acquire of the broken flag; its one writer would be _core.store32 (py/module.c
     * m_store32): nothing in the package stores it today. */
    if (ld32_acq(r->base, OFF_BROKEN)) return RING_BROKEN;
    uint64_t reclen = align_up(len + RECORD_HEADER, RECORD_ALIGN);
    uint64_t t, idx, pad, end;
    r->want = reclen;
    if (!r->multi_producer) {
        t = r->tail_local;
        if (t % RECORD_ALIGN) return corrupt(r, "tail is not record-aligned");
        if (r->untether_ns) {
            /* SYNC(gate-epoch): pairs with the add in ring_retether: a consumer that gates again
             * after it was untethered is in the limit computed after we see its add (its cursor
             * and state were stored before it). The word shares the line of the broken flag,
             * read above. */
            uint64_t e = ld_acq(r->base, OFF_GATE_EPOCH);
            if (e != r->gate_epoch) {
                r->gate_epoch = e;
                r->limit = 0;
            }
        }
        idx = t & r->mask;
        pad = idx + reclen > r->cap ? r->cap - idx : 0;
        end = t + pad + reclen;
        if (end > r->limit) {
            r->limit = gate(r);
            /* Slow path only: a lossless broadcast with a slow_consumer_timeout. */
            if (end > r->limit && r->untether_ns) r->limit = ring_untether(r, end, r->limit);
            if (end > r->limit) return RING_AGAIN;
        }
        if (r->validating) {
            /* SYNC(intent): Seqlock writer: the intent is visible before any byte we overwrite.
             * Pairs with the acquire fence in ring_validate. It never moves back: an aborted claim
             * may have overwritten bytes past the end of a smaller claim made after it (we own
             * it). Lossless broadcast keeps it too once consumers can be untethered: they
             * validate their copies as lossy readers do. */
            if (end > ld_rlx(r->base, OFF_INTENT)) st_rlx(r->base, OFF_INTENT, end);
            fence_rel();
        }
        if (pad) {
            st_rlx(r->base, SEQ_OFF(r, t), t);
            st_rlx(r->base, WORD_OFF(r, t), rec_word((int32_t)pad, REC_PAD, 0, 0, LAP(r, t)));
        }
    } else {
        for (;;) {
            /* SYNC(tail-claim): acquire of tail; pairs with the compare-exchange of tail by the
             * producer that claimed before us. */
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
            /* SYNC(claim-intent): release of the position after its length; pairs with the acquire
             * loads in recover_claim, other_live_claim and ring_revoke_claim. */
            st_rel(r->base, r->slot_off + SLOT_CLAIM_POS, t);
            /* SYNC(tail-claim): the claim; pairs with the acquire loads of tail by other
             * producers, ring_has_space, in_flight, peek_mpmc, recovery and revocation. */
            if (!cas_sc(r->base, OFF_TAIL, &t, t + n)) continue;
            /* SYNC(claim-intent): The claim is ours: recovery may pad [t, t + n) without doubt.
             * Release: whoever sees the flag sees the position it belongs to. */
            st_rel(r->base, r->slot_off + SLOT_CLAIM_LEN, n | CLAIM_CONFIRMED);
            st_rlx(r->base, SEQ_OFF(r, t), t);
            uint64_t z = 0;
            if (pad) {
                st_rlx(r->base, r->slot_off + SLOT_CLAIM_LEN, n); /* as commit */
                /* SYNC(pad), SYNC(revoke): the padding's word, from zero; pairs with the
                 * consumers' acquire of the word, and fails against the revoker's compare-exchange
                 * in ring_revoke_claim. */
                if (cas_sc(r->base, WORD_OFF(r, t), &z,
                           rec_word((int32_t)pad, REC_PAD, 0, 0, LAP(r, t))))
                    /* SYNC(claim-intent): no claim in flight: pairs with the acquire loads in
                     * recovery and revocation. */
                    st_rel(r->base, r->slot_off + SLOT_CLAIM_POS, CLAIM_NONE);
                else if (claim_revoked(r, t) != RING_REVOKED) /* the revoked record pads */
                    return RING_CORRUPT;
                shm_notify(r->base, OFF_DATA_FUTEX, OFF_DATA_WAITERS);
                continue;
            }
            /* Negative length: claimed, not committed. Pairs with recovery's
             * acquire load (it learns the claim's length from here too). By
             * compare-exchange from zero: if the supervisor revoked the claim
             * while we were stopped, its word is there instead. */
            uint64_t cw = rec_word(-(int32_t)(len + RECORD_HEADER), REC_MSG, 0, 0, LAP(r, t));
            /* SYNC(claim-word), SYNC(revoke): the claimed word, from zero; pairs with the acquire
             * of it in recover_claim and ring_revoke_claim, and fails against the revoker's
             * compare-exchange. */
            if (!cas_sc(r->base, WORD_OFF(r, t), &z, cw)) return claim_revoked(r, t);
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
            /* SYNC(latest): latest is stored relaxed: the acquire loads of it (consume.c: lapped,
             * ring_peek, ring_validate, ring_consumer_join) have no release partner on it. They
             * only order the reads after them, and what those find is checked (lap, sequence, the
             * seqlock); relaxed loads would do. Not changed here. */
            st_rlx(r->base, OFF_LATEST, p);
            /* SYNC(msgno): After latest. Pairs with the acquire in ring_consumer_join. */
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
        /* SYNC(commit), SYNC(revoke): the publication (see above); pairs with the consumers'
         * acquire of the word (peek_mpsc, peek_mpmc, ring_has_data) and fails against a
         * revocation. */
        if (!cas_sc(r->base, WORD_OFF(r, p), &cw, word)) return claim_revoked(r, r->claim_start);
        /* SYNC(claim-intent): committed: no claim in flight. */
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
        /* SYNC(tail): Publication. Pairs with the consumer's acquire load of tail: the records and
         * their payloads are visible before the new tail. Seq-cst, so that the look at the waiter
         * count below needs no fence (shm_notify_sc). */
        st_sc(r->base, OFF_TAIL, r->tail_local);
    }
    /* SYNC(waiters): every publication since the last flush was a seq-cst store of tail (above) or
     * a seq-cst compare-exchange of a record word (ring_commit, multi-producer). */
    shm_notify_sc(r->base, OFF_DATA_FUTEX, OFF_DATA_WAITERS);
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
    /* SYNC(commit), SYNC(revoke): the claim becomes padding, published as a commit is (the
     * consumers' acquire of the word); fails against a revocation. */
    if (!cas_sc(r->base, WORD_OFF(r, r->claim_pos), &cw,
                rec_word((int32_t)full, REC_PAD, 0, 0, LAP(r, r->claim_pos)))) {
        (void)claim_revoked(r, r->claim_start);
        return;
    }
    /* SYNC(claim-intent): aborted: no claim in flight. */
    st_rel(r->base, r->slot_off + SLOT_CLAIM_POS, CLAIM_NONE);
    shm_notify(r->base, OFF_DATA_FUTEX, OFF_DATA_WAITERS);
}
